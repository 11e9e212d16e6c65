//! End-to-end test of a ClusterIssuer's `spec.policy`: a Certificate from a namespace or for a
//! name the policy does not allow is `Ready=False reason=PolicyViolation`, and the CA never
//! hears of it; within the policy the same ClusterIssuer issues.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kube::api::DeleteParams;
use libtest_mimic::Trial;
use pki_operator_e2e::{
    Operator, TestNamespace,
    sim::scm::{ScmSimulator, ScmSimulatorConfig},
    work_dir,
};

use crate::support::{
    SCM_PASSWORD, apply, block_on, condition, is_ready, plane, total_orders, trial, wait_certificate,
};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![trial(
        "cluster_issuer_policy_refuses_before_any_ca_call",
        cluster_issuer_policy_refuses_before_any_ca_call,
    )]
}

/// A ClusterIssuer for names under `allowed.example` in one namespace refuses `a.example.com`
/// and refuses a Certificate from another namespace, before any CA call; an allowed name issues.
fn cluster_issuer_policy_refuses_before_any_ca_call() -> Result<()> {
    block_on(async {
        let dir = work_dir("issuer-policy")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "issuer-policy").await?;
        let outsider = TestNamespace::create(&client, "policy-outsider").await?;
        let sim = ScmSimulator::start(ScmSimulatorConfig::default()).await?;
        let name = format!("guarded-{}", ns.name);
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "guarded-credentials"},
            "stringData": {"login": "api-admin", "password": SCM_PASSWORD},
        });
        apply(&ns.name, &serde_json::to_string(&secret)?)?;
        let issuer = serde_json::json!({
            "apiVersion": "pki-operator.io/v1alpha1", "kind": "ClusterIssuer",
            "metadata": {"name": name},
            "spec": {
                "scm": {
                    "url": sim.base_url(), "customerUri": "cst-sim",
                    "auth": {"password": {"secretName": "guarded-credentials"}},
                    "orgId": 8932, "certType": 5153, "caBundle": sim.tls_ca_pem(), "pollInterval": "1s",
                },
                "policy": {"namespaces": [ns.name], "dnsNames": ["*.allowed.example"]},
            },
        });
        apply(&ns.name, &serde_json::to_string(&issuer)?)?;
        let operator = Operator::start(
            plane(),
            &dir,
            "operator",
            &["--cluster-resource-namespace", &ns.name],
        )?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        let certificate = |cert: &str, dns: &str| {
            format!(
                "apiVersion: pki-operator.io/v1alpha1\nkind: Certificate\nmetadata: {{name: {cert}}}\nspec:\n  secretName: {cert}-tls\n  issuerRef: {{name: {name}, kind: ClusterIssuer}}\n  dnsNames: [{dns}]\n"
            )
        };
        let violation = |c: &pki_operator::crd::v1alpha1::Certificate| {
            condition(c, "Ready").is_some_and(|(s, reason, _)| s == "False" && reason == "PolicyViolation")
        };
        apply(&ns.name, &certificate("wrong-name", "a.example.com"))?;
        apply(
            &outsider.name,
            &certificate("wrong-namespace", "b.allowed.example"),
        )?;
        let refused = wait_certificate(
            &client,
            &ns.name,
            "wrong-name",
            "PolicyViolation",
            Duration::from_secs(60),
            violation,
        )
        .await
        .with_context(|| operator.log_text())?;
        let (_, _, message) = condition(&refused, "Ready").context("Ready")?;
        ensure!(
            message.contains("dnsNames") && message.contains("a.example.com"),
            "the message names the rule and the name: {message}"
        );
        let refused = wait_certificate(
            &client,
            &outsider.name,
            "wrong-namespace",
            "PolicyViolation",
            Duration::from_secs(60),
            violation,
        )
        .await
        .with_context(|| operator.log_text())?;
        let (_, _, message) = condition(&refused, "Ready").context("Ready")?;
        ensure!(
            message.contains("namespace"),
            "the message names the namespace rule: {message}"
        );
        let stats = sim.stats();
        ensure!(
            ["enroll", "collect", "list", "renewById"]
                .iter()
                .all(|e| !stats.requests.contains_key(*e)),
            "the CA was asked about a refused Certificate: {:?}",
            stats.requests
        );
        apply(&ns.name, &certificate("right-name", "c.allowed.example"))?;
        wait_certificate(
            &client,
            &ns.name,
            "right-name",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        ensure!(total_orders(&sim) == 1, "orders {:?}", sim.stats().orders_per_csr);
        let _ = kube::Api::<pki_operator::crd::v1alpha1::ClusterIssuer>::all(client.clone())
            .delete(&name, &DeleteParams::default())
            .await;
        Ok(())
    })
}
