//! End-to-end tests of the kubectl plugin `kubectl-pki` against the local control plane: every
//! command README shows, its `-o json` parsed and its exit code asserted (0 Ready, 1 not
//! Ready, 2 error).

use std::{path::PathBuf, process::Output, time::Duration};

use anyhow::{Context as _, Result, ensure};
use kube::Api;
use libtest_mimic::Trial;
use pki_operator::crd::v1alpha1::{Certificate, ClusterIssuer};
use pki_operator_e2e::{Operator, TestNamespace, plugin_binary, repo_root, wait_for, work_dir};
use serde_json::Value;

use crate::support::{
    apply, block_on, ca_issuer, certificate_yaml, is_ready, plane, trial, wait_certificate,
};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "kubectl_plugin_status_renew_inspect_list_check_a_ready_certificate",
            ready_certificate,
        ),
        trial(
            "kubectl_plugin_exits_1_when_not_ready_and_2_on_errors",
            not_ready_and_errors,
        ),
        trial("kubectl_plugin_explains_readme_reasons", explain_reason),
    ]
}

/// Runs `kubectl-pki --kubeconfig <plane> args...` (no `KUBECONFIG` from the test's
/// environment, so only the flag can point it at the plane).
fn pki(args: &[&str]) -> Result<Output> {
    let binary = plugin_binary();
    ensure!(
        binary.exists(),
        "{} not found; build it with `cargo build --bin kubectl-pki`",
        binary.display()
    );
    Ok(std::process::Command::new(binary)
        .arg("--kubeconfig")
        .arg(plane().kubeconfig())
        .args(args)
        .env_remove("KUBECONFIG")
        .output()?)
}

/// Runs `kubectl pki args...` as a user would: kubectl (the plane's) finds `kubectl-pki` on
/// `PATH`, and the plugin reads the cluster from `KUBECONFIG` (kubectl passes no flags on).
fn kubectl_pki(args: &[&str]) -> Result<Output> {
    kubectl_with_plugin(&[&["pki"], args].concat())
}

/// Runs the plane's `kubectl args...` with the plugin's directory first on `PATH`.
fn kubectl_with_plugin(args: &[&str]) -> Result<Output> {
    let plugin_dir = plugin_binary()
        .parent()
        .context("the plugin's directory")?
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(plugin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    let devcluster = std::env::var_os("PKI_E2E_DEVCLUSTER")
        .map_or_else(|| repo_root().join("target/devcluster/devcluster"), PathBuf::from);
    Ok(std::process::Command::new(devcluster)
        .arg("kubectl")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", plane().kubeconfig())
        .output()?)
}

/// Runs the plugin and checks its exit code; returns stdout.
fn pki_exit(args: &[&str], code: i32) -> Result<String> {
    let out = pki(args)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.code() == Some(code),
        "kubectl pki {}: exit {:?}, wanted {code}\nstdout: {stdout}\nstderr: {}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// Runs the plugin with `-o json`, checks its exit code, parses stdout.
fn pki_json(args: &[&str], code: i32) -> Result<Value> {
    let all: Vec<&str> = args.iter().copied().chain(["-o", "json"]).collect();
    let stdout = pki_exit(&all, code)?;
    serde_json::from_str(&stdout)
        .with_context(|| format!("kubectl pki {}: not JSON: {stdout}", args.join(" ")))
}

/// A `ca` Certificate that is Ready, seen through every command: `status` (table and JSON:
/// serial equals `status.serialNumber`, days left sane), `inspect secret` (key matches), `list`
/// (JSON and sorted table), `check issuer` (Ready, Secret present; and a ClusterIssuer's
/// Secret found with `--cluster`), `renew` by name and by selector (revision 2, then 3).
fn ready_certificate() -> Result<()> {
    block_on(async {
        let dir = work_dir("kubectl-plugin-ready")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "plugin-ready").await?;
        ca_issuer(&ns.name, "local-ca")?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        apply(
            &ns.name,
            &certificate_yaml("web", "local-ca", "").replace(
                "metadata: {name: web}",
                "metadata: {name: web, labels: {team: payments}}",
            ),
        )?;
        let ready = |c: &Certificate| is_ready(c) && c.status.as_ref().and_then(|s| s.revision) == Some(1);
        let cert = wait_certificate(
            &client,
            &ns.name,
            "web",
            "web Ready",
            Duration::from_secs(60),
            ready,
        )
        .await?;
        let status = cert.status.clone().unwrap_or_default();
        let n = ns.name.as_str();

        let out = kubectl_pki(&["status", "web", "-n", n])?;
        ensure!(out.status.success(), "kubectl pki status: {out:?}");
        let table = String::from_utf8_lossy(&out.stdout);
        // Kept with the run's logs: what a user sees, for reading a failure.
        std::fs::write(dir.join("status.txt"), table.as_bytes())?;
        for wanted in [
            "Ready:    true",
            "Issuer:   Issuer/local-ca",
            "CN=local-ca test CA",
            "web.example.com",
        ] {
            ensure!(table.contains(wanted), "status table lacks {wanted:?}:\n{table}");
        }
        let json = pki_json(&["status", "web", "-n", n], 0)?;
        let leaf = &json["secret"]["certificates"][0];
        ensure!(
            leaf["serial"].as_str() == status.serial_number.as_deref(),
            "serial {} vs status {:?}",
            leaf["serial"],
            status.serial_number
        );
        let days = leaf["daysLeft"].as_i64().context("daysLeft")?;
        ensure!((1..=366).contains(&days), "daysLeft {days}");
        ensure!(
            json["ready"] == true && json["backend"]["name"] == "local-ca",
            "{json:#}"
        );
        ensure!(
            json["order"]["state"].is_string() && json["order"]["id"].is_string(),
            "{json:#}"
        );
        ensure!(json["secret"]["keyMatches"] == true, "{json:#}");

        let table = pki_exit(&["inspect", "secret", "web-tls", "-n", n], 0)?;
        ensure!(table.contains("tls.key matches the leaf"), "{table}");
        std::fs::write(dir.join("inspect.txt"), &table)?;
        let json = pki_json(&["inspect", "secret", "web-tls", "-n", n], 0)?;
        ensure!(json["keyMatches"] == true, "{json:#}");
        ensure!(
            json["certificates"][0]["sans"][0] == "web.example.com",
            "{json:#}"
        );

        let json = pki_json(&["list", "-n", n], 0)?;
        let items = json["items"].as_array().context("items")?;
        ensure!(
            items.iter().any(|i| i["kind"] == "Certificate"
                && i["name"] == "web"
                && i["ready"] == true
                // A second may pass between the two calls, crossing a whole day.
                && i["daysLeft"].as_i64().is_some_and(|d| (days - 1..=days).contains(&d))),
            "{json:#}"
        );
        ensure!(
            items
                .iter()
                .any(|i| i["kind"] == "Issuer" && i["name"] == "local-ca"),
            "{json:#}"
        );
        // A namespace's list is that namespace's: other tests' cluster-scoped objects (in any
        // state) would otherwise decide its exit code.
        ensure!(items.iter().all(|i| i["namespace"] == n), "{json:#}");
        let yaml: Value = serde_yaml::from_str(&pki_exit(&["list", "-n", n, "-o", "yaml"], 0)?)?;
        ensure!(yaml == json, "YAML {yaml:#} differs from JSON {json:#}");
        // Every namespace: other tests' objects may be anything, so only the shape is checked.
        let all = pki(&["list", "-A", "--sort", "expiry"])?;
        let text = String::from_utf8_lossy(&all.stdout);
        ensure!(matches!(all.status.code(), Some(0 | 1)), "list -A: {all:?}");
        ensure!(text.starts_with("KIND") && text.contains(n), "{text}");
        std::fs::write(dir.join("list.txt"), text.as_bytes())?;

        let json = pki_json(&["check", "issuer", "local-ca", "-n", n], 0)?;
        ensure!(
            json["ready"] == true && json["secrets"][0]["exists"] == true,
            "{json:#}"
        );
        check_cluster_issuer(n).await?;

        pki_exit(&["renew", "web", "-n", n], 0)?;
        let revision =
            |r| move |c: &Certificate| is_ready(c) && c.status.as_ref().and_then(|s| s.revision) == Some(r);
        wait_certificate(
            &client,
            n,
            "web",
            "revision 2",
            Duration::from_secs(60),
            revision(2),
        )
        .await?;
        let json = pki_json(&["renew", "--all", "-l", "team=payments", "-n", n], 0)?;
        ensure!(json["renewed"][0]["name"] == "web", "{json:#}");
        wait_certificate(
            &client,
            n,
            "web",
            "revision 3",
            Duration::from_secs(60),
            revision(3),
        )
        .await?;
        Ok(())
    })
}

/// `check issuer --cluster` finds a ClusterIssuer's Secret in `-n`. Nothing here waits for a
/// Ready condition: every operator in the run reconciles cluster-scoped kinds with its own
/// cluster resource namespace, so the Secret check is what is asserted.
async fn check_cluster_issuer(namespace: &str) -> Result<()> {
    let name = format!("{namespace}-corp");
    apply(
        namespace,
        &format!(
            "apiVersion: pki-operator.io/v1alpha1\nkind: ClusterIssuer\nmetadata: {{name: {name}}}\nspec: {{ca: {{secretName: local-ca}}}}\n"
        ),
    )?;
    let out = pki(&[
        "check",
        "issuer",
        &name,
        "--cluster",
        "-n",
        namespace,
        "-o",
        "json",
    ])?;
    let api: Api<ClusterIssuer> = Api::all(plane().client().await?);
    let _ = api.delete(&name, &kube::api::DeleteParams::default()).await;
    ensure!(
        matches!(out.status.code(), Some(0 | 1)),
        "check issuer --cluster: {out:?}"
    );
    let json: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        json["kind"] == "ClusterIssuer"
            && json["secrets"][0]["namespace"] == namespace
            && json["secrets"][0]["exists"] == true,
        "{json:#}"
    );
    Ok(())
}

/// A Certificate whose issuer does not exist: `status` exits 1 and shows the reason; an Issuer
/// whose Secret is missing: `check issuer` exits 1 naming the Secret; anything that does not
/// exist: exit 2.
fn not_ready_and_errors() -> Result<()> {
    block_on(async {
        let dir = work_dir("kubectl-plugin-not-ready")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "plugin-not-ready").await?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        let n = ns.name.as_str();
        apply(n, &certificate_yaml("orphan", "missing", ""))?;
        apply(
            n,
            "apiVersion: pki-operator.io/v1alpha1\nkind: Issuer\nmetadata: {name: no-secret}\nspec: {ca: {secretName: absent}}\n",
        )?;
        let has_reason = |c: &Certificate| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "False")
            })
        };
        wait_certificate(
            &client,
            n,
            "orphan",
            "orphan not Ready",
            Duration::from_secs(60),
            has_reason,
        )
        .await?;
        let json = pki_json(&["status", "orphan", "-n", n], 1)?;
        let conditions = json["conditions"].as_array().context("conditions")?;
        ensure!(
            json["ready"] == false
                && conditions
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["reason"] == "IssuerNotReady"),
            "{json:#}"
        );
        ensure!(json["secretError"] == "not found", "{json:#}");

        // The issuer's own condition comes from the operator; the Secret check from the plugin.
        wait_for("no-secret checked", Duration::from_secs(60), || async {
            let out = pki(&["check", "issuer", "no-secret", "-n", n, "-o", "json"]).ok()?;
            let json: Value = serde_json::from_slice(&out.stdout).ok()?;
            (out.status.code() == Some(1) && json["reason"] == "SecretNotFound").then_some(json)
        })
        .await
        .and_then(|json| {
            ensure!(
                json["secrets"][0]["name"] == "absent" && json["secrets"][0]["exists"] == false,
                "{json:#}"
            );
            Ok(())
        })?;
        let table = pki_exit(&["check", "issuer", "no-secret", "-n", n], 1)?;
        ensure!(table.contains("MISSING") && table.contains("NOT OK"), "{table}");

        for args in [
            &["status", "nope", "-n", n][..],
            &["inspect", "secret", "nope", "-n", n],
            &["check", "issuer", "nope", "-n", n],
            &["renew", "nope", "-n", n],
            &["list", "--sort", "nonsense"],
        ] {
            pki_exit(args, 2)?;
        }
        Ok(())
    })
}

/// `explain-reason` prints README's text for a known reason (exit 0) and refuses others (2).
fn explain_reason() -> Result<()> {
    let text = pki_exit(&["explain-reason", "IssuerNotReady"], 0)?;
    ensure!(
        text.starts_with("IssuerNotReady\n") && text.contains("issuer"),
        "{text}"
    );
    let json = pki_json(&["explain-reason", "IssuerNotReady"], 0)?;
    ensure!(json["reason"] == "IssuerNotReady", "{json:#}");
    let out = kubectl_pki(&["explain-reason", "IssuerNotReady"])?;
    ensure!(
        out.status.success() && out.stdout.starts_with(b"IssuerNotReady\n"),
        "{out:?}"
    );
    // `kubectl plugin list` also warns about cargo's `kubectl-pki.d` next to the debug binary
    // (not executable), so only its listing is checked, not its exit code.
    let out = kubectl_with_plugin(&["plugin", "list"])?;
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("/kubectl-pki\n"),
        "{out:?}"
    );
    let out = pki(&["explain-reason", "Nope"])?;
    ensure!(out.status.code() == Some(2), "{out:?}");
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("unknown reason"),
        "{out:?}"
    );
    Ok(())
}
