//! End-to-end test of the Helm chart: it lints, renders, applies, and its RBAC is all the
//! operator needs.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use libtest_mimic::Trial;
use pki_operator_e2e::{Operator, TestNamespace, repo_root, work_dir};

use crate::support::{
    apply, block_on, ca_issuer, certificate_yaml, is_ready, plane, trial, wait_certificate,
};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![trial(
        "helm_chart_renders_applies_and_its_rbac_suffices",
        helm_chart_rbac_suffices,
    )]
}

/// The chart lints and renders with helm, every object it renders is accepted by the apiserver,
/// and an operator running as the chart's service account (a token, no admin certificate) with only
/// the chart's RBAC issues a Certificate.
fn helm_chart_rbac_suffices() -> Result<()> {
    block_on(async {
        let helm = std::env::var("PKI_E2E_HELM")
            .context("PKI_E2E_HELM is not set; run the e2e tests with `make e2e`")?;
        let dir = work_dir("helm")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "helm").await?;
        let chart = repo_root().join("charts/pki-operator");
        let lint = std::process::Command::new(&helm)
            .arg("lint")
            .arg(&chart)
            .output()?;
        ensure!(
            lint.status.success(),
            "helm lint failed: {}",
            String::from_utf8_lossy(&lint.stdout)
        );
        let rendered = std::process::Command::new(&helm)
            .args(["template", "pki-operator", "--namespace", &ns.name, "--skip-crds"])
            .arg(&chart)
            .output()?;
        ensure!(
            rendered.status.success(),
            "helm template failed: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        apply(&ns.name, &String::from_utf8(rendered.stdout)?)?;

        // A kubeconfig holding only the ServiceAccount's token.
        let out = plane().kubectl(&["create", "token", "pki-operator", "-n", &ns.name], None)?;
        ensure!(
            out.status.success(),
            "create token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout)?.trim().to_owned();
        let admin = std::fs::read_to_string(plane().kubeconfig())?;
        let server = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .context("server")?;
        let ca = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
            .context("ca")?;
        let kubeconfig = dir.join("sa-kubeconfig");
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": ca}}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
        });
        std::fs::write(&kubeconfig, serde_json::to_string(&config)?)?;

        ca_issuer(&ns.name, "local-ca")?;
        let args = [
            "--namespace",
            ns.name.as_str(),
            "--leader-election=true",
            "--leader-election-namespace",
            ns.name.as_str(),
            "--cluster-resource-namespace",
            ns.name.as_str(),
        ];
        let operator = Operator::start_with_kubeconfig(&kubeconfig, &dir, "operator", &args)?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        apply(&ns.name, &certificate_yaml("rbac", "local-ca", ""))?;
        wait_certificate(
            &client,
            &ns.name,
            "rbac",
            "Ready with the chart's RBAC",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        let log = operator.log_text();
        ensure!(
            !log.to_lowercase().contains("forbidden"),
            "the operator hit RBAC denials:\n{log}"
        );
        Ok(())
    })
}
