//! README's instructions, run as written: the local walkthrough, the Helm install, upgrade,
//! uninstall and full removal (on a control plane of their own, since they install and delete
//! the CRDs), namespace-scoped mode, the install without a Helm release, the plugin install and
//! the reference commands. A ledger names, for every instruction README gives, the trial or
//! `make test` target that runs it, and fails when README gains one that nothing runs.

use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::{Context as _, Result, ensure};
use libtest_mimic::Trial;
use pki_operator_e2e::{
    ControlPlane,
    readme::{self, Instruction, Shell},
    repo_root, work_dir,
};

use crate::support::{block_on, plane, trial};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![
        trial("readme_walkthrough_runs_as_written", walkthrough),
        trial(
            "readme_helm_install_upgrade_uninstall_and_removal_run_as_written",
            helm_lifecycle,
        ),
        trial("readme_reference_commands_run_as_written", reference_commands),
        trial("readme_kubectl_pki_block_runs_as_written", plugin_block),
        trial(
            "every_readme_instruction_is_run_by_a_test",
            every_instruction_is_run,
        ),
    ]
}

/// What runs a README instruction.
enum RunBy {
    /// A trial of this binary, by name.
    Trial(&'static str),
    /// A `make` target that `make test` (what CI runs) runs.
    Make(&'static str),
    /// Nothing in CI, and why.
    NotRun(&'static str),
}

/// Every README instruction (matched by its start) and what runs it. A placeholder such as
/// `<name>` is filled in by the trial.
const LEDGER: &[(&str, RunBy)] = &[
    ("make test", RunBy::Make("test")),
    ("cargo fmt --check", RunBy::Make("fmt-check")),
    ("make demo", RunBy::Make("demo")),
    (
        "kubectl get pki",
        RunBy::Trial("readme_walkthrough_runs_as_written"),
    ),
    (
        "make help",
        RunBy::Trial("readme_reference_commands_run_as_written"),
    ),
    (
        "make cluster-down",
        RunBy::Trial("readme_walkthrough_runs_as_written"),
    ),
    ("make cluster", RunBy::Trial("readme_walkthrough_runs_as_written")),
    ("make run", RunBy::Trial("readme_walkthrough_runs_as_written")),
    // The same generator, in its --check mode: CI must not rewrite the checkout it tests.
    ("make generate", RunBy::Make("crds-check")),
    ("make e2e", RunBy::Make("e2e")),
    ("make unit", RunBy::Make("unit")),
    ("make clippy", RunBy::Make("clippy")),
    (
        "make bench",
        RunBy::NotRun(
            "about 15 minutes of release-build measurements; run by hand and recorded in \
             BENCHMARKS.md with the commit measured",
        ),
    ),
    (
        "cargo run -p pki-operator-e2e --bin scm-simulator",
        RunBy::Trial("readme_reference_commands_run_as_written"),
    ),
    ("make packages", RunBy::Make("packages")),
    (
        "helm install pki-operator charts/pki-operator --namespace pki-operator --create-namespace \\\n  --set image",
        RunBy::Trial("readme_helm_install_upgrade_uninstall_and_removal_run_as_written"),
    ),
    ("make crds-check", RunBy::Make("crds-check")),
    (
        "kubectl apply -f crds/",
        RunBy::Trial("readme_helm_install_upgrade_uninstall_and_removal_run_as_written"),
    ),
    (
        "helm uninstall pki-operator -n pki-operator",
        RunBy::Trial("readme_helm_install_upgrade_uninstall_and_removal_run_as_written"),
    ),
    (
        "kubectl delete crd -l app.kubernetes.io/name=pki-operator",
        RunBy::Trial("readme_helm_install_upgrade_uninstall_and_removal_run_as_written"),
    ),
    (
        "docker build",
        RunBy::NotRun(
            "this machine has no container engine (README says so); what the image relies on \
             is checked by operator_runs_as_nonroot_with_a_read_only_working_directory_and_writes_no_files",
        ),
    ),
    (
        "kubectl apply --dry-run=server",
        RunBy::Trial("helm_chart_manifests_pass_a_server_side_dry_run"),
    ),
    (
        "for crd in $(kubectl get crd -o name | grep pki-operator.io)",
        RunBy::Trial("readme_helm_install_upgrade_uninstall_and_removal_run_as_written"),
    ),
    (
        "helm upgrade pki-operator charts/pki-operator -n pki-operator",
        RunBy::Trial("readme_helm_install_upgrade_uninstall_and_removal_run_as_written"),
    ),
    (
        "kubectl create namespace team-a",
        RunBy::Trial("readme_helm_install_upgrade_uninstall_and_removal_run_as_written"),
    ),
    (
        "kubectl create namespace pki-operator",
        RunBy::Trial("readme_helm_install_upgrade_uninstall_and_removal_run_as_written"),
    ),
    (
        "kubectl pki renew",
        RunBy::Trial("kubectl_plugin_status_renew_inspect_list_check_a_ready_certificate"),
    ),
    (
        "kubectl explain",
        RunBy::Trial("readme_reference_commands_run_as_written"),
    ),
    (
        "kubectl annotate certificate <name> pki-operator.io/renew=",
        RunBy::Trial("failed_repair_backs_off_instead_of_ordering_again"),
    ),
    (
        "kubectl annotate certificate <name> pki-operator.io/skip-revoke=true",
        RunBy::Trial("scm_skip_revoke_annotation_releases_a_certificate_whose_revocation_fails"),
    ),
    (
        "kubectl get alertcfg",
        RunBy::Trial("readme_reference_commands_run_as_written"),
    ),
    (
        "helm upgrade --install pki-operator charts/pki-operator --namespace pki-operator \\\n  --set grafanaDashboard",
        RunBy::Trial("readme_helm_install_upgrade_uninstall_and_removal_run_as_written"),
    ),
    (
        "cargo install --locked --path . --bin kubectl-pki",
        RunBy::Trial("readme_reference_commands_run_as_written"),
    ),
    (
        "kubectl pki status web -n demo",
        RunBy::Trial("readme_kubectl_pki_block_runs_as_written"),
    ),
    (
        "kubectl label secret -n <ns> <name> pki-operator.io/issuer-secret=true",
        RunBy::Trial("issuer_secret_label_guard_refuses_unlabelled_secrets_until_labelled"),
    ),
    (
        "kubectl get lease -n <ns> pki-operator-leader -o yaml",
        RunBy::Trial("namespace_scoped_install_serves_its_namespaces_and_may_read_nothing_else"),
    ),
];

/// The ledger entry for `instruction`: the longest matching start, so `make cluster-down` is
/// not taken for `make cluster`.
fn entry_for(instruction: &Instruction) -> Option<&'static (&'static str, RunBy)> {
    LEDGER
        .iter()
        .filter(|(start, _)| instruction.text.starts_with(start))
        .max_by_key(|(start, _)| start.len())
}

/// Every README instruction has a ledger entry; every entry matches an instruction (no stale
/// ones); every trial named exists; every `make` target named is run by `make test`.
fn every_instruction_is_run() -> Result<()> {
    let text = readme::readme()?;
    let instructions = readme::instructions(&text);
    ensure!(instructions.len() > 20, "README instructions: {instructions:#?}");
    let mut unrun = Vec::new();
    for instruction in &instructions {
        match entry_for(instruction) {
            Some(_) => {}
            None => unrun.push(format!("README line {}: {}", instruction.line, instruction.text)),
        }
    }
    ensure!(
        unrun.is_empty(),
        "README instructions no test runs (add a test and a LEDGER entry):\n{}",
        unrun.join("\n")
    );
    let names = crate::trial_names();
    let made = targets_make_test_runs()?;
    for (start, run_by) in LEDGER {
        ensure!(
            instructions
                .iter()
                .any(|i| entry_for(i).is_some_and(|(s, _)| s == start)),
            "LEDGER entry {start:?} matches no README instruction"
        );
        match run_by {
            RunBy::Trial(name) => ensure!(names.iter().any(|n| n == name), "no trial named {name}"),
            RunBy::Make(target) => ensure!(
                made.iter().any(|t| t == target),
                "`make test` does not run `make {target}` (it runs {made:?})"
            ),
            RunBy::NotRun(why) => ensure!(!why.is_empty()),
        }
    }
    Ok(())
}

/// `test` and every target it depends on, transitively, from the Makefile's rules.
fn targets_make_test_runs() -> Result<Vec<String>> {
    let makefile = std::fs::read_to_string(repo_root().join("Makefile"))?;
    let rule = |target: &str| -> Vec<String> {
        makefile
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{target}:")))
            .map(|rest| {
                rest.split("##")
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter(|p| !p.starts_with('$'))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut made = vec!["test".to_owned()];
    let mut index = 0;
    while let Some(target) = made.get(index).cloned() {
        for prerequisite in rule(&target) {
            if !made.contains(&prerequisite) {
                made.push(prerequisite);
            }
        }
        index += 1;
    }
    Ok(made)
}

/// README's "Try it on a local control plane", run as written with two substitutions: the
/// control plane's directory is the trial's own (`CLUSTER_DIR`, which the Makefile honours, so
/// a developer's `make cluster` is left alone), and `make run`, which README runs "in another
/// terminal" and waits for until it logs that it is ready, runs in the background and is waited
/// for the same way. It ends with the `ca` Certificate Ready (`kubectl wait`)
/// and `kubectl get pki` listing it.
fn walkthrough() -> Result<()> {
    let dir = work_dir("readme-walkthrough")?;
    let cluster = dir.join("cluster");
    let text = readme::readme()?;
    let block = readme::block_containing(&text, "make demo-ca NAMESPACE=demo")?;
    let mut script = String::from("shopt -s expand_aliases\n");
    let mut backgrounded = false;
    for line in block.lines() {
        if line.starts_with("make run ")
            && line.contains("# in another terminal")
            && line.contains("go on once it logs \"caches synced; ready\"")
        {
            // The other terminal, and the reader watching it (the first `make run` may compile).
            let log = dir.join("operator.log").display().to_string();
            writeln!(
                script,
                "make run > {log} 2>&1 &\nfor i in $(seq 1 3000); do grep -q 'caches synced; ready' {log} && break; sleep 0.2; done"
            )?;
            backgrounded = true;
        } else {
            script.push_str(&line.replace("$PWD/target/cluster", &cluster.display().to_string()));
            script.push('\n');
        }
    }
    ensure!(
        backgrounded,
        "the walkthrough no longer runs `make run` in another terminal:\n{block}"
    );
    let shell = Shell::new(&dir, &cluster.join("kubeconfig"))?
        .with_env("CLUSTER_DIR", &cluster.display().to_string());
    let out = shell
        .run(&script, Duration::from_secs(600))
        .with_context(|| std::fs::read_to_string(dir.join("operator.log")).unwrap_or_default())?;
    ensure!(
        out.contains("certificate.pki-operator.io/web condition met"),
        "kubectl wait did not see the Certificate Ready:\n{out}"
    );
    let listed = out
        .lines()
        .find(|l| l.starts_with("certificate.pki-operator.io/web ") && l.contains("web-tls"))
        .with_context(|| format!("kubectl get pki did not list the Certificate:\n{out}"))?;
    ensure!(listed.contains("True"), "listed not Ready: {listed}\n{out}");
    ensure!(
        out.contains("stopped"),
        "make cluster-down did not stop the control plane:\n{out}"
    );
    Ok(())
}

/// A PrometheusRule CRD for the private control plane: the chart's optional PrometheusRule needs
/// the Prometheus Operator's CRD, which is not ours to ship. Only its group, kind and scope
/// matter here; the schema takes any rule.
const PROMETHEUS_RULE_CRD: &str = r"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: prometheusrules.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  names: {kind: PrometheusRule, listKind: PrometheusRuleList, plural: prometheusrules, singular: prometheusrule}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

/// The Helm section on a control plane of its own (it installs and deletes the CRDs the other
/// trials share), each step README's text run as written (image placeholders filled in):
/// CRDs applied the way charts up to 0.2 did, then marked as the release's by README's loop;
/// `helm install`; `helm upgrade`; the dashboard and PrometheusRule upgrade; `helm uninstall`
/// keeping the CRDs and a Certificate; namespace-scoped mode (Roles only) taking the kept CRDs
/// over; the install without a Helm release; and last the full removal deleting the CRDs and the
/// Certificate with them.
fn helm_lifecycle() -> Result<()> {
    block_on(async {
        let dir = work_dir("readme-helm")?;
        let private = ControlPlane::start(&dir.join("plane")).await?;
        let result = helm_lifecycle_on(&private, &dir);
        private.stop();
        result
    })
}

fn helm_lifecycle_on(private: &ControlPlane, dir: &Path) -> Result<()> {
    let text = readme::readme()?;
    let shell = Shell::new(dir, private.kubeconfig())?;
    let run = |script: &str| shell.run(script, Duration::from_secs(180));
    let kubectl = |args: &[&str]| private.kubectl_ok(args, None);

    run(&readme::inline_command(&text, "kubectl apply -f crds/")?)?;
    run(&readme::block_containing(&text, "for crd in")?)?;
    let install = readme::block_containing(&text, "--set image.repository=")?
        .replace("<your registry>", "registry.example")
        .replace("<your tag>", "0.0.0-readme");
    ensure!(!install.contains('<'), "an unfilled placeholder: {install}");
    run(&install)?;
    let image = kubectl(&[
        "get",
        "deployment",
        "pki-operator",
        "-n",
        "pki-operator",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ])?;
    ensure!(
        image == "registry.example/pki-operator:0.0.0-readme",
        "image {image}"
    );
    let owner = kubectl(&[
        "get",
        "crd",
        "certificates.pki-operator.io",
        "-o",
        "jsonpath={.metadata.annotations.meta\\.helm\\.sh/release-name}",
    ])?;
    ensure!(
        owner == "pki-operator",
        "the CRD was not adopted by the release: {owner:?}"
    );

    let upgraded = run(&readme::inline_command(
        &text,
        "helm upgrade pki-operator charts/pki-operator",
    )?)?;
    ensure!(upgraded.contains("has been upgraded"), "{upgraded}");
    private.kubectl_ok(&["apply", "-f", "-"], Some(PROMETHEUS_RULE_CRD))?;
    wait_established(private, "prometheusrules.monitoring.coreos.com")?;
    run(&readme::block_containing(
        &text,
        "--set grafanaDashboard.enabled=true",
    )?)?;
    let dashboards = kubectl(&[
        "get",
        "configmap",
        "-n",
        "pki-operator",
        "-l",
        "grafana_dashboard=1",
        "-o",
        "name",
    ])?;
    ensure!(!dashboards.trim().is_empty(), "no dashboard ConfigMap");
    let rules = kubectl(&[
        "get",
        "prometheusrule",
        "-n",
        "pki-operator",
        "-l",
        "release=kube-prometheus-stack",
        "-o",
        "name",
    ])?;
    ensure!(
        !rules.trim().is_empty(),
        "no PrometheusRule with the release label"
    );

    kubectl(&["create", "namespace", "apps"])?;
    private.kubectl_ok(
        &["apply", "-n", "apps", "-f", "-"],
        Some(&crate::support::certificate_yaml("kept", "nobody", "")),
    )?;
    let uninstalled = run(&readme::inline_command(
        &text,
        "helm uninstall pki-operator -n pki-operator",
    )?)?;
    ensure!(
        uninstalled.contains("kept due to the resource policy"),
        "{uninstalled}"
    );
    ensure!(
        private
            .kubectl(&["get", "deployment", "pki-operator", "-n", "pki-operator"], None)?
            .status
            .code()
            != Some(0),
        "the Deployment outlived the uninstall"
    );
    kubectl(&["get", "certificate", "kept", "-n", "apps"])?;

    // Namespace-scoped mode: the kept CRDs are taken over by the new release of the same name.
    run(&readme::block_containing(
        &text,
        "watchNamespaces={team-a,team-b}",
    )?)?;
    for namespace in ["team-a", "team-b"] {
        let roles = kubectl(&["get", "role,rolebinding", "-n", namespace, "-o", "name"])?;
        ensure!(
            roles.contains("role.rbac.authorization.k8s.io/pki-operator")
                && roles.contains("rolebinding.rbac.authorization.k8s.io/pki-operator"),
            "no Role and RoleBinding in {namespace}: {roles}"
        );
    }
    let cluster_roles = kubectl(&[
        "get",
        "clusterrole,clusterrolebinding",
        "-l",
        "app.kubernetes.io/instance=pki-operator",
        "-o",
        "name",
    ])?;
    ensure!(
        cluster_roles.trim().is_empty(),
        "namespace-scoped mode made {cluster_roles}"
    );

    run(&readme::inline_command(
        &text,
        "helm uninstall pki-operator -n pki-operator",
    )?)?;
    kubectl(&[
        "delete",
        "namespace",
        "pki-operator",
        "--wait=true",
        "--timeout=120s",
    ])?;
    let applied = run(&readme::block_containing(&text, "| kubectl apply --server-side")?)?;
    ensure!(
        applied.contains("deployment.apps/pki-operator serverside-applied")
            && applied.contains("clusterrole.rbac.authorization.k8s.io/pki-operator serverside-applied"),
        "the plain install did not apply the operator and its ClusterRole:\n{applied}"
    );

    // The full removal, last: the CRDs go, and every resource with them.
    let removal = readme::inline_command(&text, "kubectl delete crd -l app.kubernetes.io/name=pki-operator")?;
    shell.run(&removal, Duration::from_secs(300)).with_context(|| {
        let state = private
            .kubectl(&["get", "crd", "-o", "yaml"], None)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        format!("the CRDs as the apiserver left them: {state:?}")
    })?;
    let left = kubectl(&["get", "crd", "-o", "name"])?;
    ensure!(
        !left.contains("pki-operator.io"),
        "CRDs left after the full removal: {left}"
    );
    ensure!(
        private
            .kubectl(&["get", "certificate", "kept", "-n", "apps"], None)?
            .status
            .code()
            != Some(0),
        "the Certificate outlived its CRD"
    );
    Ok(())
}

/// README's `kubectl pki` block, every line as written, on a control plane of its own holding
/// exactly what the block names: namespace `demo` with the `ca` Issuer `local-ca` and the
/// Certificate `web` (label `team=payments`, Secret `web-tls`), and the ClusterIssuer `corp-ca`
/// whose Secret is in `pki-operator`, served by an operator reading ClusterIssuer Secrets there.
/// Each line must exit 0 (the block runs under `set -e`); the output shows the decoded leaf,
/// both renewals, the chain, both listings, both checks and the reason's explanation, and the
/// renewals are carried out.
fn plugin_block() -> Result<()> {
    block_on(async {
        let dir = work_dir("readme-plugin")?;
        let private = ControlPlane::start(&dir.join("plane")).await?;
        let result = plugin_block_on(&private, &dir).await;
        private.stop();
        result
    })
}

async fn plugin_block_on(private: &ControlPlane, dir: &Path) -> Result<()> {
    use pki_operator::crd::v1alpha1::Certificate;
    crate::support::install_crds(private)?;
    let apply =
        |namespace: &str, yaml: &str| private.kubectl_ok(&["apply", "-n", namespace, "-f", "-"], Some(yaml));
    for namespace in ["demo", "pki-operator"] {
        private.kubectl_ok(&["create", "namespace", namespace], None)?;
    }
    for (namespace, name) in [("demo", "local-ca"), ("pki-operator", "corp-ca")] {
        apply(namespace, &crate::support::ca_secret(name)?.0)?;
    }
    apply(
        "demo",
        "apiVersion: pki-operator.io/v1alpha1\nkind: Issuer\nmetadata: {name: local-ca}\nspec: {ca: {secretName: local-ca}}\n---\napiVersion: pki-operator.io/v1alpha1\nkind: Certificate\nmetadata: {name: web, labels: {team: payments}}\nspec:\n  secretName: web-tls\n  issuerRef: {name: local-ca}\n  dnsNames: [web.example.com]\n",
    )?;
    apply(
        "pki-operator",
        "apiVersion: pki-operator.io/v1alpha1\nkind: ClusterIssuer\nmetadata: {name: corp-ca}\nspec: {ca: {secretName: corp-ca}}\n",
    )?;
    let operator = pki_operator_e2e::Operator::start(
        private,
        dir,
        "operator",
        &["--cluster-resource-namespace", "pki-operator"],
    )?;
    operator.wait_ready(Duration::from_secs(60)).await?;
    let certificates: kube::Api<Certificate> = kube::Api::namespaced(private.client().await?, "demo");
    let revision = |cert: &Certificate| cert.status.as_ref().and_then(|s| s.revision).unwrap_or_default();
    let ready = |cert: &Certificate| crate::support::is_ready(cert);
    pki_operator_e2e::wait_for("web Ready", Duration::from_secs(60), || async {
        certificates
            .get_opt("web")
            .await
            .ok()
            .flatten()
            .filter(|c| ready(c))
    })
    .await
    .with_context(|| operator.log_text())?;

    let block = readme::block_containing(&readme::readme()?, "kubectl pki status web -n demo")?;
    let plugin = dir.join("plugin");
    std::fs::create_dir_all(&plugin)?;
    let link = plugin.join("kubectl-pki");
    if !link.exists() {
        std::os::unix::fs::symlink(pki_operator_e2e::plugin_binary(), &link)?;
    }
    let out = Shell::new(dir, private.kubeconfig())?
        .run(
            &format!("export PATH={}:$PATH\n{block}", plugin.display()),
            Duration::from_secs(120),
        )
        .with_context(|| operator.log_text())?;
    for expected in [
        "web.example.com",         // status: the Secret decoded
        "\"daysLeft\"",            // status -o json
        "local-ca test CA",        // inspect: the chain's issuer
        "corp-ca",                 // check issuer --cluster
        "Fix the issuer's Secret", // explain-reason
    ] {
        ensure!(
            out.contains(expected),
            "the block's output lacks {expected:?}:\n{out}"
        );
    }
    // Two renewals asked for (by name, then by label): the Certificate moves past revision 1.
    pki_operator_e2e::wait_for("web renewed", Duration::from_secs(60), || async {
        certificates
            .get_opt("web")
            .await
            .ok()
            .flatten()
            .filter(|c| ready(c) && revision(c) >= 2)
    })
    .await
    .with_context(|| operator.log_text())?;
    Ok(())
}

/// Waits until the CRD `name` is established.
fn wait_established(plane: &ControlPlane, name: &str) -> Result<()> {
    let crd = format!("crd/{name}");
    plane.kubectl_ok(
        &["wait", "--for=condition=Established", &crd, "--timeout=60s"],
        None,
    )?;
    Ok(())
}

/// The commands README quotes for reference, run as written against the shared control plane:
/// `make help` lists the targets README names; `kubectl explain` documents the spec and one
/// field; `kubectl get alertcfg` resolves the short name; the SCM simulator starts with
/// `--state-dir`, prints its URL and writes its TLS CA there; the plugin installs with
/// `cargo install` (into a directory of the trial's; `--debug --offline` to reuse the test build
/// and the crates it fetched) and
/// `kubectl plugin list` finds it.
fn reference_commands() -> Result<()> {
    block_on(async {
        let dir = work_dir("readme-reference")?;
        let text = readme::readme()?;
        let shell = Shell::new(&dir, plane().kubeconfig())?;
        let run = |script: &str| shell.run(script, Duration::from_secs(300));

        let help = run(&readme::inline_command(&text, "make help")?)?;
        for target in [
            "test",
            "demo",
            "cluster",
            "cluster-down",
            "run",
            "generate",
            "e2e",
            "unit",
            "clippy",
            "bench",
            "packages",
            "crds-check",
            "demo-ca",
        ] {
            ensure!(
                help.lines()
                    .any(|l| l.trim_start().starts_with(&format!("make {target} "))),
                "make help does not list {target}:\n{help}"
            );
        }
        let explained =
            run(&readme::inline_command(&text, "kubectl explain <kind>.spec")?
                .replace("<kind>", "certificate"))?;
        ensure!(
            explained.contains("issuerRef") && explained.contains("dnsNames"),
            "{explained}"
        );
        let field = run(
            &readme::inline_command(&text, "kubectl explain certificate.spec.<field>")?
                .replace("<field>", "renewBefore"),
        )?;
        ensure!(field.contains("FIELD: renewBefore"), "{field}");
        run(&readme::inline_command(&text, "kubectl get alertcfg")?)?;

        // The simulator as README starts it, from the binary `cargo run` builds (the e2e build
        // has it already), its state directory the trial's.
        let simulator = readme::inline_command(&text, "cargo run -p pki-operator-e2e --bin scm-simulator")?;
        let state = dir.join("scm");
        let started = simulator
            .replace(
                "cargo run -p pki-operator-e2e --bin scm-simulator --",
                env!("CARGO_BIN_EXE_scm-simulator"),
            )
            .replace("/tmp/scm", &state.display().to_string());
        ensure!(
            started != simulator,
            "README's simulator command changed: {simulator}"
        );
        // Started in the background; the shell stops it with the rest of its process group.
        let printed = run(&format!(
            "({started} > {dir}/scm.out 2>&1 &)\nfor i in $(seq 1 100); do grep -q https:// {dir}/scm.out && break; sleep 0.1; done\ncat {dir}/scm.out",
            dir = dir.display()
        ))?;
        ensure!(
            printed.contains("https://127.0.0.1:"),
            "the simulator printed no URL: {printed}"
        );
        ensure!(
            state.join("tls-ca.pem").exists(),
            "no tls-ca.pem in the state directory"
        );

        let install = readme::block_containing(&text, "cargo install --locked --path . --bin kubectl-pki")?;
        let root = dir.join("cargo-root");
        let script = install.replace(
            "--bin kubectl-pki",
            &format!("--bin kubectl-pki --debug --offline --root {}", root.display()),
        );
        let listed = shell.run(
            &format!("export PATH={}/bin:$PATH\n{script}", root.display()),
            Duration::from_secs(600),
        )?;
        ensure!(
            listed.contains(&format!("{}/bin/kubectl-pki", root.display())),
            "kubectl plugin list does not show the installed plugin:\n{listed}"
        );
        Ok(())
    })
}
