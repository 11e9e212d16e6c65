//! README's instructions as data: its `sh` blocks and the commands quoted in its prose, so the
//! tests run them as written and check that every one of them is run somewhere.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// One instruction README gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where it starts.
    pub line: usize,
    /// A whole `sh` block, or one command quoted inline (whitespace collapsed).
    pub text: String,
    /// Whether it is a `sh` block.
    pub block: bool,
}

/// The tools an inline command starts with, and how many words it needs to be a command rather
/// than a mention of the tool (`helm install`, `kubectl apply` name a step; `helm uninstall
/// pki-operator -n pki-operator` is one).
const TOOLS: [(&str, usize); 5] = [
    ("kubectl", 3),
    ("helm", 3),
    ("make", 2),
    ("cargo", 2),
    ("docker", 2),
];

/// README's text.
pub fn readme() -> Result<String> {
    let path = crate::repo_root().join("README.md");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Every instruction in `readme`, in order: each `sh` block whole, and each inline code span
/// that is a command of one of [`TOOLS`].
pub fn instructions(readme: &str) -> Vec<Instruction> {
    let mut found = Vec::new();
    let mut block: Option<(usize, String, bool)> = None;
    let mut prose = Vec::new();
    for (index, line) in readme.lines().enumerate() {
        let number = index + 1;
        if let Some(fence) = line.strip_prefix("```") {
            match block.take() {
                Some((start, text, true)) => found.push(Instruction {
                    line: start,
                    text,
                    block: true,
                }),
                Some(_) => {}
                None => block = Some((number + 1, String::new(), fence.trim() == "sh")),
            }
            continue;
        }
        match &mut block {
            Some((_, text, _)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => prose.push((number, line)),
        }
    }
    found.extend(inline_commands(&prose));
    found.sort_by_key(|i| i.line);
    found
}

/// The inline commands of the prose lines: code spans, which may wrap within a paragraph.
fn inline_commands(prose: &[(usize, &str)]) -> Vec<Instruction> {
    let mut found = Vec::new();
    for paragraph in prose.split(|(_, line)| line.trim().is_empty()) {
        let Some((first, _)) = paragraph.first() else {
            continue;
        };
        let text = paragraph.iter().map(|(_, l)| *l).collect::<Vec<_>>().join("\n");
        // Between the 1st and 2nd backtick, the 3rd and 4th, ...: the code spans.
        let mut offset = 0;
        for (index, piece) in text.split('`').enumerate() {
            if index % 2 == 1 && offset + piece.len() < text.len() {
                let line = first + text[..offset].matches('\n').count();
                push_command(&mut found, line, piece);
            }
            offset += piece.len() + 1;
        }
    }
    found
}

fn push_command(found: &mut Vec<Instruction>, line: usize, span: &str) {
    let text = span.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut words = text.split(' ');
    let tool = words.next().unwrap_or_default();
    let is_command = TOOLS
        .iter()
        .any(|(name, min_words)| *name == tool && text.split(' ').count() >= *min_words);
    if is_command && !found.iter().any(|i: &Instruction| i.text == text) {
        found.push(Instruction {
            line,
            text,
            block: false,
        });
    }
}

/// The `sh` block of `readme` containing `needle`.
pub fn block_containing(readme: &str, needle: &str) -> Result<String> {
    instructions(readme)
        .into_iter()
        .find(|i| i.block && i.text.contains(needle))
        .map(|i| i.text)
        .with_context(|| format!("README has no sh block containing {needle:?}"))
}

/// The inline command of `readme` starting with `prefix`.
pub fn inline_command(readme: &str, prefix: &str) -> Result<String> {
    instructions(readme)
        .into_iter()
        .find(|i| !i.block && i.text.starts_with(prefix))
        .map(|i| i.text)
        .with_context(|| format!("README quotes no command starting with {prefix:?}"))
}

/// A bash that runs README's instructions as a reader would: in the repository root, with
/// kubectl (the control plane's version) and helm first on `PATH`, `KUBECONFIG` set, helm's
/// state in a directory of its own, and a clean environment otherwise — nothing of the `cargo
/// test` or `make` running the tests (whose variables would make a nested `cargo` see its build
/// as changed and compile it again).
pub struct Shell {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Shell {
    /// A shell whose tools and logs live in `dir`, talking to the cluster of `kubeconfig`.
    pub fn new(dir: &Path, kubeconfig: &Path) -> Result<Self> {
        let tools = dir.join("tools");
        std::fs::create_dir_all(&tools)?;
        let link = |target: PathBuf, name: &str| -> Result<()> {
            let path = tools.join(name);
            if !path.exists() {
                std::os::unix::fs::symlink(&target, &path)
                    .with_context(|| format!("linking {} to {}", path.display(), target.display()))?;
            }
            Ok(())
        };
        // The control plane's binary acts as kubectl when called by that name.
        link(crate::devcluster_binary(), "kubectl")?;
        if let Ok(helm) = std::env::var("PKI_E2E_HELM") {
            link(PathBuf::from(helm), "helm")?;
        }
        let path = format!(
            "{}:{}",
            tools.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let home = dir.join("helm-home");
        // What a login shell has (and rustup's and cargo's homes when they are not the default).
        let kept = [
            "HOME",
            "USER",
            "LOGNAME",
            "LANG",
            "LC_ALL",
            "TMPDIR",
            "RUSTUP_HOME",
            "CARGO_HOME",
            "GOPATH",
            "GOCACHE",
            "GOMODCACHE",
            "GOFLAGS",
            "GOPROXY",
        ];
        let mut env: Vec<(String, String)> = kept
            .iter()
            .filter_map(|name| Some(((*name).to_owned(), std::env::var(name).ok()?)))
            .collect();
        env.extend([
            ("PATH".to_owned(), path),
            ("KUBECONFIG".to_owned(), kubeconfig.display().to_string()),
            (
                "HELM_CACHE_HOME".to_owned(),
                home.join("cache").display().to_string(),
            ),
            (
                "HELM_CONFIG_HOME".to_owned(),
                home.join("config").display().to_string(),
            ),
            (
                "HELM_DATA_HOME".to_owned(),
                home.join("data").display().to_string(),
            ),
        ]);
        Ok(Self {
            dir: dir.to_path_buf(),
            env,
        })
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Runs `script` with `bash -euo pipefail` within `timeout`, then stops whatever it left
    /// running (its whole process group); returns its output, or fails with it.
    pub fn run(&self, script: &str, timeout: Duration) -> Result<String> {
        use std::os::unix::process::CommandExt as _;
        let log = self.dir.join(format!("shell-{}.log", crate::random_suffix()));
        let file = std::fs::File::create(&log)?;
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(crate::repo_root())
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0);
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let mut child = command.spawn().context("starting bash")?;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if started.elapsed() > timeout {
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // Background jobs (`make run &`) end with the script.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", child.id())])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = child.kill();
        let _ = child.wait();
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        match status {
            Some(status) if status.success() => Ok(output),
            Some(status) => bail!("`{script}` exited with {status}:\n{output}"),
            None => bail!("`{script}` did not finish within {timeout:?}:\n{output}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_inline_commands_are_found_and_mentions_are_not() {
        let text = "Run `make test` or `helm install`, then\n`kubectl delete crd -l\napp=x` to clean.\n\n```sh\nmake cluster\nkubectl get pki\n```\n```yaml\nkind: X\n```\n`cargo` alone, `docker build .`\n";
        let found = instructions(text);
        let texts: Vec<(&str, bool)> = found.iter().map(|i| (i.text.as_str(), i.block)).collect();
        assert_eq!(
            texts,
            [
                ("make test", false),
                ("kubectl delete crd -l app=x", false),
                ("make cluster\nkubectl get pki\n", true),
                ("docker build .", false),
            ]
        );
        assert_eq!(found[1].line, 2);
        assert_eq!(found[2].line, 6);
        assert!(block_containing(text, "kubectl get pki").is_ok());
        assert_eq!(
            inline_command(text, "kubectl delete").unwrap(),
            "kubectl delete crd -l app=x"
        );
    }

    #[test]
    fn the_readme_has_instructions() {
        let found = instructions(&readme().unwrap());
        assert!(found.iter().filter(|i| i.block).count() >= 5, "{found:#?}");
        assert!(found.iter().any(|i| i.text == "make test"));
    }
}
