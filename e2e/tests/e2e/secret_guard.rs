//! End-to-end test of the opt-in issuer Secret guard (`--issuer-secret-label`): an Issuer may
//! only use Secrets carrying the label, and recovers as soon as someone adds it.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use libtest_mimic::Trial;
use pki_operator::crd::v1alpha1::Issuer;
use pki_operator_e2e::{Operator, TestNamespace, wait_for, work_dir};

use crate::support::{
    apply, block_on, ca_issuer, certificate_yaml, condition, is_ready, plane, trial, wait_certificate,
};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![trial(
        "issuer_secret_label_guard_refuses_unlabelled_secrets_until_labelled",
        unlabelled_secret_is_refused_until_labelled,
    )]
}

const LABEL: &str = "pki-operator.io/issuer-secret";

/// The Issuer's `Ready` condition as (status, reason, message).
async fn issuer_ready(client: &Client, namespace: &str, name: &str) -> Option<(String, String, String)> {
    let api: Api<Issuer> = Api::namespaced(client.clone(), namespace);
    let issuer = api.get_opt(name).await.ok().flatten()?;
    issuer
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status, c.reason, c.message))
}

/// With `--issuer-secret-label`, a `ca` Issuer whose Secret lacks the label is
/// `Ready=False reason=SecretNotLabelled` with the `kubectl label` command in its message, its
/// Certificate gets no Secret; once the Secret is labelled the Issuer and the Certificate become
/// Ready without any other change.
fn unlabelled_secret_is_refused_until_labelled() -> Result<()> {
    block_on(async {
        let dir = work_dir("secret-guard")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "secret-guard").await?;
        ca_issuer(&ns.name, "guarded-ca")?;
        let operator = Operator::start(
            plane(),
            &dir,
            "operator",
            &[
                "--namespace",
                &ns.name,
                "--issuer-secret-label",
                &format!("{LABEL}=approved"),
            ],
        )?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        apply(&ns.name, &certificate_yaml("web", "guarded-ca", ""))?;

        let (_, _, message) = wait_for("Issuer SecretNotLabelled", Duration::from_secs(60), || async {
            issuer_ready(&client, &ns.name, "guarded-ca")
                .await
                .filter(|(status, reason, _)| status == "False" && reason == "SecretNotLabelled")
        })
        .await
        .with_context(|| operator.log_text())?;
        let command = format!("kubectl label secret -n {} guarded-ca {LABEL}=approved", ns.name);
        ensure!(
            message.contains(&command),
            "message {message:?} lacks {command:?}"
        );

        let cert = wait_certificate(
            &client,
            &ns.name,
            "web",
            "Certificate reports the unusable issuer",
            Duration::from_secs(60),
            |c| condition(c, "Ready").is_some_and(|(status, ..)| status == "False"),
        )
        .await?;
        ensure!(!is_ready(&cert), "Certificate Ready with an unusable issuer");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        ensure!(
            secrets.get_opt("web-tls").await?.is_none(),
            "a TLS Secret was written through an issuer whose Secret is not labelled"
        );

        plane().kubectl_ok(
            &[
                "label",
                "secret",
                "-n",
                &ns.name,
                "guarded-ca",
                &format!("{LABEL}=approved"),
            ],
            None,
        )?;
        wait_for("Issuer Ready once labelled", Duration::from_secs(60), || async {
            issuer_ready(&client, &ns.name, "guarded-ca")
                .await
                .filter(|(status, ..)| status == "True")
        })
        .await
        .with_context(|| operator.log_text())?;
        wait_certificate(
            &client,
            &ns.name,
            "web",
            "Certificate Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        Ok(())
    })
}
