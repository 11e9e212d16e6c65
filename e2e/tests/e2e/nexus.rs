//! End-to-end tests of the `nexus` backend: the operator against a real kube-apiserver and the
//! Nexus simulator over mutual TLS, in caller-signing and VRO mode.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use libtest_mimic::Trial;
use pki_operator::crd::v1alpha1::{Certificate, Issuer};
use pki_operator_e2e::{
    Operator, TestNamespace,
    sim::{
        Faults,
        nexus::{NexusSigningMode, NexusSimulator, NexusSimulatorConfig},
    },
    wait_for, work_dir,
};

use crate::support::{
    apply, block_on, certificate_yaml, condition, is_ready, plane, trial, verify_tls_secret,
    wait_certificate, wait_gone,
};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "nexus_certificates_are_issued_with_both_signing_modes_and_revoked_on_delete",
            certificate_is_issued_and_revoked_on_delete,
        ),
        trial(
            "nexus_wrong_signer_and_foreign_client_certificate_are_reported",
            wrong_signer_and_foreign_client_certificate_are_reported,
        ),
        trial(
            "nexus_crash_after_issuance_recovers_by_search_without_a_second_issuance",
            crash_after_issuance_recovers_by_search,
        ),
    ]
}

/// A `kubernetes.io/tls` Secret holding an officer identity (certificate chain and key).
pub fn identity_secret(namespace: &str, name: &str, (chain, key): (String, String)) -> Result<()> {
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name},
        "stringData": {"tls.crt": chain, "tls.key": key},
    });
    apply(namespace, &serde_json::to_string(&secret)?)
}

/// An Issuer `name` for `sim`: the officer's TLS identity from the Secret `client_secret`,
/// `signing` as `signingMode`, and `signing_secret` when the signer differs.
pub fn nexus_issuer(
    namespace: &str,
    name: &str,
    sim: &NexusSimulator,
    client_secret: &str,
    signing: &str,
    signing_secret: Option<&str>,
) -> Result<()> {
    let mut nexus = serde_json::json!({
        "url": sim.base_url(),
        "clientCertificateSecretName": client_secret,
        "signingMode": signing,
        "tokenProcedure": "TLS-Server",
        "caBundle": sim.tls_ca_pem(),
    });
    if let Some(secret) = signing_secret {
        nexus["signingSecretName"] = secret.into();
    }
    let issuer = serde_json::json!({
        "apiVersion": "pki-operator.io/v1alpha1", "kind": "Issuer",
        "metadata": {"name": name},
        "spec": {"nexus": nexus},
    });
    apply(namespace, &serde_json::to_string(&issuer)?)
}

/// Waits until Issuer `name` has `Ready` = `wanted`; returns its status, reason and message.
async fn wait_issuer(
    client: &Client,
    namespace: &str,
    name: &str,
    wanted: &str,
) -> Result<(String, String, String)> {
    let issuers: Api<Issuer> = Api::namespaced(client.clone(), namespace);
    let what = format!("Issuer {name} Ready={wanted}");
    let result = wait_for(&what, Duration::from_secs(60), || async {
        let issuer = issuers.get_opt(name).await.ok().flatten()?;
        let ready = issuer
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.status == wanted).then_some((ready.status, ready.reason, ready.message))
    })
    .await;
    if result.is_err() {
        let last = issuers.get_opt(name).await.ok().flatten().and_then(|i| i.status);
        return result.with_context(|| format!("last status of Issuer {name}: {last:#?}"));
    }
    result
}

fn issuances(sim: &NexusSimulator) -> u32 {
    sim.stats().issuances_per_csr.values().sum()
}

/// Caller signing and VRO: each Issuer becomes Ready by listing the token procedures, each
/// Certificate becomes Ready with a Secret that verifies to the simulator's root and the status
/// names the CM `certid`; deleting a Certificate with revoke-on-delete revokes it at the
/// simulator, and the finalizer goes.
fn certificate_is_issued_and_revoked_on_delete() -> Result<()> {
    block_on(async {
        let dir = work_dir("nexus-issue")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "nexus-issue").await?;
        let caller = NexusSimulator::start(NexusSimulatorConfig::default()).await?;
        let vro = NexusSimulator::start(NexusSimulatorConfig {
            signing_mode: NexusSigningMode::Vro,
            ..NexusSimulatorConfig::default()
        })
        .await?;
        identity_secret(&ns.name, "officer", caller.officer_identity())?;
        identity_secret(&ns.name, "vro-officer", vro.officer_identity())?;
        nexus_issuer(&ns.name, "nexus", &caller, "officer", "Caller", None)?;
        nexus_issuer(&ns.name, "nexus-vro", &vro, "vro-officer", "Server", None)?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        for issuer in ["nexus", "nexus-vro"] {
            let (_, _, message) = wait_issuer(&client, &ns.name, issuer, "True")
                .await
                .with_context(|| operator.log_text())?;
            ensure!(message.contains("TLS-Server"), "{issuer}: {message}");
        }
        let revoke = "  revocationPolicy: {onDelete: Revoke, onDeleteReason: CessationOfOperation}\n";
        apply(&ns.name, &certificate_yaml("signed", "nexus", revoke))?;
        apply(&ns.name, &certificate_yaml("gateway-signed", "nexus-vro", ""))?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        for (name, sim) in [("signed", &caller), ("gateway-signed", &vro)] {
            let cert = wait_certificate(
                &client,
                &ns.name,
                name,
                "Ready",
                Duration::from_secs(60),
                is_ready,
            )
            .await
            .with_context(|| operator.log_text())?;
            let secret = secrets.get(&format!("{name}-tls")).await?;
            verify_tls_secret(
                &secret,
                &sim.issuing_root_pem(),
                &[&format!("{name}.example.com")],
            )?;
            let order = cert.status.and_then(|s| s.order).context("no order in status")?;
            let stats = sim.stats();
            ensure!(
                stats.certificates.len() == 1 && issuances(sim) == 1,
                "{name}: the simulator issued {:?}",
                stats.certificates
            );
            ensure!(
                order.backend == "nexus" && order.id == stats.certificates[0].certid,
                "{name}: status order {order:?}, simulator certid {}",
                stats.certificates[0].certid
            );
        }
        ensure!(
            caller.stats().requests.get("issuePkcs10") == Some(&2),
            "caller signing: the challenge and the signed request, {:?}",
            caller.stats().requests
        );
        ensure!(
            vro.stats().requests.get("issuePkcs10") == Some(&1),
            "VRO: one request, {:?}",
            vro.stats().requests
        );

        let certs: Api<Certificate> = Api::namespaced(client.clone(), &ns.name);
        certs
            .delete("signed", &kube::api::DeleteParams::default())
            .await?;
        wait_gone(&certs, "signed", "the Certificate to be gone")
            .await
            .with_context(|| operator.log_text())?;
        let status = caller.stats().certificates[0].status.clone();
        ensure!(
            status == "revoked",
            "status at the simulator after delete: {status}"
        );
        wait_gone(&secrets, "signed-tls", "the Secret to be garbage-collected").await?;
        Ok(())
    })
}

/// A signing officer from another CA: the Issuer is Ready (reads need no signature) but the
/// simulator refuses the signed issuance with -17, and the Certificate says so. A client
/// certificate from another CA is refused in the TLS handshake, and that Issuer says so.
fn wrong_signer_and_foreign_client_certificate_are_reported() -> Result<()> {
    block_on(async {
        let dir = work_dir("nexus-refused")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "nexus-refused").await?;
        let sim = NexusSimulator::start(NexusSimulatorConfig::default()).await?;
        identity_secret(&ns.name, "officer", sim.officer_identity())?;
        identity_secret(&ns.name, "foreign", sim.foreign_identity())?;
        nexus_issuer(
            &ns.name,
            "wrong-signer",
            &sim,
            "officer",
            "Caller",
            Some("foreign"),
        )?;
        nexus_issuer(&ns.name, "foreign-tls", &sim, "foreign", "Caller", None)?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;

        wait_issuer(&client, &ns.name, "wrong-signer", "True")
            .await
            .with_context(|| operator.log_text())?;
        apply(&ns.name, &certificate_yaml("unsigned", "wrong-signer", ""))?;
        let cert = wait_certificate(
            &client,
            &ns.name,
            "unsigned",
            "Ready=False naming the refused signature",
            Duration::from_secs(60),
            |c| condition(c, "Ready").is_some_and(|(s, _, m)| s == "False" && m.contains("error -17")),
        )
        .await
        .with_context(|| operator.log_text())?;
        let (_, reason, message) = condition(&cert, "Ready").context("no Ready condition")?;
        ensure!(
            reason == "Unauthorized" && message.contains("signature") && message.contains("officer"),
            "reason {reason}, message {message}"
        );
        ensure!(!message.contains("PRIVATE KEY"), "key material in status");
        ensure!(
            issuances(&sim) == 0,
            "a certificate was issued: {:?}",
            sim.stats()
        );

        let (_, reason, message) = wait_issuer(&client, &ns.name, "foreign-tls", "False")
            .await
            .with_context(|| operator.log_text())?;
        ensure!(
            reason == "Unauthorized" && message.contains("refused the TLS client certificate"),
            "reason {reason}, message {message}"
        );
        Ok(())
    })
}

/// The simulator issues but the connection drops before the answer; the operator is killed
/// right then. After a restart it finds the certificate by search and the Certificate becomes
/// Ready with it: the simulator counts exactly one issuance.
fn crash_after_issuance_recovers_by_search() -> Result<()> {
    block_on(async {
        let dir = work_dir("nexus-crash")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "nexus-crash").await?;
        let sim = NexusSimulator::start(NexusSimulatorConfig::default()).await?;
        identity_secret(&ns.name, "officer", sim.officer_identity())?;
        nexus_issuer(&ns.name, "nexus", &sim, "officer", "Caller", None)?;
        sim.set_faults(Faults {
            drop_after_enroll: 1,
            endpoints: Some(vec!["issuePkcs10".into()]),
            ..Faults::default()
        });
        let mut first = Operator::start(plane(), &dir, "operator-1", &["--namespace", &ns.name])?;
        first.wait_ready(Duration::from_secs(60)).await?;
        apply(&ns.name, &certificate_yaml("crashy", "nexus", ""))?;
        wait_for("the simulator to issue", Duration::from_secs(60), || async {
            (issuances(&sim) == 1).then_some(())
        })
        .await
        .with_context(|| first.log_text())?;
        first.kill();
        let second = Operator::start(plane(), &dir, "operator-2", &["--namespace", &ns.name])?;
        let cert = wait_certificate(
            &client,
            &ns.name,
            "crashy",
            "Ready after restart",
            Duration::from_secs(90),
            is_ready,
        )
        .await
        .with_context(|| second.log_text())?;
        let stats = sim.stats();
        ensure!(
            issuances(&sim) == 1 && stats.certificates.len() == 1,
            "expected exactly one issuance, the simulator counted {:?}",
            stats.issuances_per_csr
        );
        ensure!(
            stats.requests.get("issuePkcs10") == Some(&2),
            "one challenge and one signed issuance: {:?}",
            stats.requests
        );
        let order = cert.status.and_then(|s| s.order).context("no order in status")?;
        ensure!(
            order.id == stats.certificates[0].certid,
            "status order {} is not the simulator's {}",
            order.id,
            stats.certificates[0].certid
        );
        let logs = format!("{}\n{}", first.log_text(), second.log_text());
        ensure!(
            logs.contains("recovered an order placed before a restart")
                && stats.requests.get("listCertificates").is_some_and(|n| *n >= 1),
            "the certificate was not recovered by search: {:?}\noperator logs:\n{logs}",
            stats.requests
        );
        Ok(())
    })
}
