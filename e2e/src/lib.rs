//! The end-to-end test harness: a real local control plane (`devcluster`, built from the Go
//! modules in `e2e/controlplane`), the operator binary as a child process, kubectl, temporary
//! namespaces and condition waits. Tests never sleep for a fixed time: they poll for the state
//! they expect, with a deadline.

pub mod conformance;
pub mod dns;
pub mod readme;
pub mod sim;
pub mod smtp;
pub mod tls_fleet;
pub mod webhook_receiver;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use kube::{Client, config::KubeConfigOptions};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The repository root (the e2e crate lives in `<root>/e2e`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

pub(crate) fn devcluster_binary() -> PathBuf {
    std::env::var_os("PKI_E2E_DEVCLUSTER")
        .map_or_else(|| repo_root().join("target/devcluster/devcluster"), PathBuf::from)
}

fn operator_binary() -> PathBuf {
    std::env::var_os("PKI_E2E_OPERATOR")
        .map_or_else(|| repo_root().join("target/debug/pki-operator"), PathBuf::from)
}

/// The `kubectl-pki` plugin binary, like the operator's: `PKI_E2E_PLUGIN`, else the debug build
/// (`make e2e` builds it).
pub fn plugin_binary() -> PathBuf {
    std::env::var_os("PKI_E2E_PLUGIN")
        .map_or_else(|| repo_root().join("target/debug/kubectl-pki"), PathBuf::from)
}

/// A self-signed ECDSA P-256 CA named `common_name` for a `ca` issuer: certificate and PKCS#8 key
/// PEM.
pub fn self_signed_ca(common_name: &str) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    Ok((params.self_signed(&key)?.pem(), key.serialize_pem()))
}

/// A directory under `target/e2e/` for one run's state and logs; kept after the run so failures
/// can be investigated.
pub fn work_dir(name: &str) -> Result<PathBuf> {
    let dir = repo_root()
        .join("target/e2e")
        .join(format!("{name}-{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A running local control plane. Dropping it stops it (SIGTERM, then SIGKILL).
pub struct ControlPlane {
    child: std::sync::Mutex<Child>,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

/// One write recorded in the control plane's audit log ([`ControlPlane::audited_writes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditedWrite {
    /// `create`, `update`, `patch`, `delete` or `deletecollection`.
    pub verb: String,
    /// The resource, with its subresource when there is one: `secrets`, `certificates/status`.
    pub resource: String,
    /// The object's name (empty for a collection).
    pub name: String,
    /// The client's `User-Agent`: `kubectl/...` for the tests' kubectl.
    pub user_agent: String,
}

impl std::fmt::Display for AuditedWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} ({})",
            self.verb, self.resource, self.name, self.user_agent
        )
    }
}

impl ControlPlane {
    /// Starts a fresh control plane with its state in `dir` and waits until `/readyz` is 200.
    pub async fn start(dir: &Path) -> Result<Self> {
        let binary = devcluster_binary();
        if !binary.exists() {
            bail!("{} not found; build it with `make devcluster`", binary.display());
        }
        fs::create_dir_all(dir)?;
        let log = fs::File::create(dir.join("devcluster.log"))?;
        let child = Command::new(&binary)
            .args(["up", "--exit-with-parent", "--dir"])
            .arg(dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let plane = Self {
            child: std::sync::Mutex::new(child),
            dir: dir.to_path_buf(),
            kubeconfig: dir.join("kubeconfig"),
        };
        let ready_file = dir.join("ready");
        let started = Instant::now();
        while !ready_file.exists() {
            if let Some(status) = plane.try_wait() {
                bail!(
                    "devcluster exited with {status} during startup; see {}/devcluster.log",
                    dir.display()
                );
            }
            if started.elapsed() > Duration::from_secs(180) {
                bail!(
                    "devcluster not ready after 180s; see {}/devcluster.log",
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let client = plane.client().await?;
        wait_for("apiserver /readyz", Duration::from_secs(60), || {
            let client = client.clone();
            async move {
                let request = http::Request::get("/readyz").body(Vec::new()).ok()?;
                client
                    .request_text(request)
                    .await
                    .ok()
                    .filter(|body| body.trim() == "ok")
            }
        })
        .await?;
        eprintln!(
            "control plane ready in {:?} ({})",
            started.elapsed(),
            dir.display()
        );
        Ok(plane)
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The writes in `namespace` the apiserver's audit log recorded at or after `since`. The
    /// control plane's audit policy records every write (and only writes) at Metadata level, so
    /// this is what anyone changed there, without request bodies.
    pub fn audited_writes(&self, namespace: &str, since: jiff::Timestamp) -> Result<Vec<AuditedWrite>> {
        let log = fs::read_to_string(self.dir.join("audit.log"))?;
        let mut writes = Vec::new();
        for line in log.lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let reference = &event["objectRef"];
            let received = event["requestReceivedTimestamp"]
                .as_str()
                .and_then(|at| at.parse::<jiff::Timestamp>().ok());
            if reference["namespace"].as_str() != Some(namespace) || received.is_none_or(|at| at < since) {
                continue;
            }
            let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
            let resource = match reference["subresource"].as_str() {
                Some(sub) => format!("{}/{sub}", text(&reference["resource"])),
                None => text(&reference["resource"]),
            };
            writes.push(AuditedWrite {
                verb: text(&event["verb"]),
                resource,
                name: text(&reference["name"]),
                user_agent: text(&event["userAgent"]),
            });
        }
        Ok(writes)
    }

    /// A new admin client.
    pub async fn client(&self) -> Result<Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// Runs kubectl (the same Kubernetes version as the control plane) as the admin user.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let kubeconfig = self.kubeconfig.to_string_lossy();
        let mut all = vec!["--kubeconfig", &kubeconfig];
        all.extend_from_slice(args);
        run_kubectl(&all, stdin)
    }

    /// Runs kubectl as the admin user and returns its output; fails with kubectl's error text.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let out = self.kubectl(args, stdin)?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl authenticated only by a bearer `token` (no client certificate).
    pub fn kubectl_with_token(&self, token: &str, args: &[&str]) -> Result<Output> {
        let server = fs::read_to_string(&self.kubeconfig)?
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_owned))
            .context("no server in kubeconfig")?;
        let ca = self.dir.join("pki/ca.crt").to_string_lossy().into_owned();
        let mut all = vec![
            "--kubeconfig",
            "/dev/null",
            "--server",
            &server,
            "--certificate-authority",
            &ca,
        ];
        all.extend(["--token", token]);
        all.extend_from_slice(args);
        run_kubectl(&all, None)
    }

    fn try_wait(&self) -> Option<ExitStatus> {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        child.try_wait().ok().flatten()
    }

    /// Stops the control plane: SIGTERM, then SIGKILL after 30 s. Idempotent.
    pub fn stop(&self) {
        if self.try_wait().is_some() {
            return;
        }
        let pid = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .id();
        signal(pid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.try_wait().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_kubectl(args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let mut command = Command::new(devcluster_binary());
    command.arg("kubectl").args(args);
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().context("starting kubectl")?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write as _;
        pipe.write_all(input.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

/// Sends a signal with the system `kill` command (the crate forbids `unsafe`, so no libc).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// Creates a uniquely named namespace for one test and deletes it on drop (best effort; the
/// namespace controller finishes the deletion in the background).
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates `<prefix>-<random>`.
    pub async fn create(client: &Client, prefix: &str) -> Result<Self> {
        use k8s_openapi::api::core::v1::Namespace;
        let name = format!("{prefix}-{}", random_suffix());
        let api: kube::Api<Namespace> = kube::Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        api.create(&kube::api::PostParams::default(), &ns).await?;
        Ok(Self {
            name,
            client: client.clone(),
        })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        use k8s_openapi::api::core::v1::Namespace;
        let api: kube::Api<Namespace> = kube::Api::all(self.client.clone());
        let name = self.name.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = api.delete(&name, &kube::api::DeleteParams::default()).await;
            });
        }
    }
}

/// A short random lower-case suffix for names.
pub fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    format!("{:08x}", hasher.finish() & 0xffff_ffff)
}

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The uid and gid of distroless' `nonroot` user, which the container image runs as.
pub const NONROOT_UID: u32 = 65532;

/// The tests' effective uid: `/proc/self` belongs to it.
fn effective_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Where and as whom [`Operator::start_confined`] runs the operator.
struct Confinement<'a> {
    cwd: &'a Path,
    /// `None`: the tests' own uid.
    uid: Option<u32>,
}

/// The operator running as a child process.
pub struct Operator {
    child: Child,
    /// Admin server address (`127.0.0.1:<port>`).
    pub admin: String,
    /// `host:port` of the HTTP domain validation solver.
    pub solver: String,
    /// Combined stdout/stderr log file.
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator against `plane` with extra `args`; logs go to `<dir>/<name>.log`.
    pub fn start(plane: &ControlPlane, dir: &Path, name: &str, args: &[&str]) -> Result<Self> {
        Self::start_with_kubeconfig(plane.kubeconfig(), dir, name, args)
    }

    /// Starts the operator with its own kubeconfig (e.g. a service-account token).
    pub fn start_with_kubeconfig(kubeconfig: &Path, dir: &Path, name: &str, args: &[&str]) -> Result<Self> {
        Self::spawn(kubeconfig, dir, name, args, &[])
    }

    /// Starts the operator against `plane` with extra environment variables (e.g. a profiler's
    /// `LD_PRELOAD`): the process is still the operator itself, so its pid, memory and signals
    /// are the operator's.
    pub fn start_with_env(
        plane: &ControlPlane,
        dir: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::spawn(plane.kubeconfig(), dir, name, args, env)
    }

    /// Starts the operator against `plane` the way the container image runs it: working
    /// directory, `HOME` and `TMPDIR` are `root`, made read-only (0555) with a copy of the
    /// kubeconfig in it, and when the tests run as root the process runs as uid/gid 65532 (the
    /// image's `nonroot` user), so the mode binds (root bypasses it). `Operator::confined_uid`
    /// says which uid the process got.
    pub fn start_confined(
        plane: &ControlPlane,
        dir: &Path,
        name: &str,
        args: &[&str],
        root: &Path,
    ) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        fs::create_dir_all(root)?;
        let kubeconfig = root.join("kubeconfig");
        fs::copy(plane.kubeconfig(), &kubeconfig)?;
        fs::set_permissions(&kubeconfig, fs::Permissions::from_mode(0o444))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o555))?;
        let home = root.to_string_lossy();
        let env = [("HOME", &*home), ("TMPDIR", &*home)];
        let confined = Confinement {
            cwd: root,
            uid: (effective_uid() == Some(0)).then_some(NONROOT_UID),
        };
        Self::spawn_confined(&kubeconfig, dir, name, args, &env, Some(confined))
    }

    /// The uid [`Operator::start_confined`] runs the operator as: the image's nonroot 65532 when
    /// the tests run as root, else the tests' own uid (which cannot switch).
    pub fn confined_uid() -> Option<u32> {
        effective_uid().map(|uid| if uid == 0 { NONROOT_UID } else { uid })
    }

    fn spawn(kubeconfig: &Path, dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        Self::spawn_confined(kubeconfig, dir, name, args, env, None)
    }

    fn spawn_confined(
        kubeconfig: &Path,
        dir: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        confined: Option<Confinement<'_>>,
    ) -> Result<Self> {
        let binary = operator_binary();
        if !binary.exists() {
            bail!(
                "{} not found; build it with `cargo build --bin pki-operator`",
                binary.display()
            );
        }
        let admin = format!("127.0.0.1:{}", free_port()?);
        // A test that must know the solver's address before the operator starts (a CA
        // simulator fetching from it) passes `--solver-address` itself.
        let given = args
            .iter()
            .position(|a| *a == "--solver-address")
            .and_then(|i| args.get(i + 1));
        let solver = match given {
            Some(address) => (*address).to_owned(),
            None => format!("127.0.0.1:{}", free_port()?),
        };
        let solver_args: &[&str] = if given.is_some() {
            &[]
        } else {
            &["--solver-address", &solver]
        };
        let log = dir.join(format!("{name}.log"));
        let file = fs::File::create(&log)?;
        let mut command = Command::new(binary);
        if let Some(confined) = confined {
            use std::os::unix::process::CommandExt as _;
            command.current_dir(confined.cwd);
            if let Some(uid) = confined.uid {
                command.uid(uid).gid(uid);
            }
        }
        let child = command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "--admin-address",
                &admin,
                "--log-level",
                "info,pki_operator=debug",
            ])
            .args(solver_args)
            .args(args)
            .env_remove("KUBECONFIG")
            .envs(env.iter().copied())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        Ok(Self {
            child,
            admin,
            solver,
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GETs `path` on the admin server: `(status, body)`, or `None` if it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.admin, path).await.ok()
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        wait_for("operator /readyz = 200", timeout, || async {
            self.get("/readyz")
                .await
                .filter(|(status, _)| *status == 200)
                .map(|_| ())
        })
        .await
        .with_context(|| format!("operator log:\n{}", self.log_text()))
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = &mut self.child;
        wait_for("operator to exit", timeout, || {
            let status = child.try_wait().ok().flatten();
            async move { status }
        })
        .await
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the operator logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.0 GET, enough for the operator's admin endpoints.
pub async fn http_get(address: &str, path: &str) -> Result<(u16, String)> {
    http_get_with_host(address, path, address).await
}

/// [`http_get`] with another `Host` header, as a virtual host is asked (the HTTP solver serves
/// each domain's files by `Host`).
pub async fn http_get_with_host(address: &str, path: &str, host: &str) -> Result<(u16, String)> {
    let mut stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address)).await??;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await??;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of an unlabelled or exactly-labelled sample in a Prometheus text exposition.
pub fn metric_value(exposition: &str, sample: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
}
