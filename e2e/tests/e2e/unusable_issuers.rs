//! End-to-end tests of a cluster-scoped object naming an issuer that cannot serve it: a
//! DomainValidation's cluster-scoped issuer reference goes through the shared resolver and the
//! backend capability check before anything else, and status says which issuer and why.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, GroupVersionKind},
    discovery::ApiResource,
};
use libtest_mimic::Trial;
use pki_operator_e2e::{Operator, TestNamespace, wait_for, work_dir};

use crate::support::{apply, block_on, ca_issuer, plane, trial};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![trial(
        "domain_validations_say_why_their_issuer_cannot_serve_them",
        domain_validations_say_why_their_issuer_cannot_serve_them,
    )]
}

/// The `Ready` condition's (status, reason, message) of `kind` `name`, once it has one.
async fn ready_condition(api: &Api<DynamicObject>, name: &str) -> Option<(String, String, String)> {
    let object = api.get_opt(name).await.ok()??;
    let conditions = object.data["status"]["conditions"].as_array()?.clone();
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    let text = |key: &str| ready[key].as_str().unwrap_or_default().to_owned();
    Some((text("status"), text("reason"), text("message")))
}

fn api(client: &Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("pki-operator.io", "v1alpha1", kind));
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// A DomainValidation naming a `ca` Issuer is `Unsupported` (the local CA has no domain
/// validation) and one naming a missing Issuer is `IssuerNotReady`, both naming the
/// issuer. Neither is Ready.
fn domain_validations_say_why_their_issuer_cannot_serve_them() -> Result<()> {
    block_on(async {
        let dir = work_dir("observed")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "observed").await?;
        ca_issuer(&ns.name, "local-ca")?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        // Cluster-scoped names carry the namespace: tests run in parallel on one cluster.
        let (local, missing) = (format!("{}-local", ns.name), format!("{}-missing", ns.name));
        apply(
            &ns.name,
            &format!(
                "apiVersion: pki-operator.io/v1alpha1\nkind: DomainValidation\nmetadata: {{name: {local}}}\nspec:\n  domain: local.example.com\n  issuerRef: {{kind: Issuer, namespace: {ns}, name: local-ca}}\n  method: EMAIL\n  email: hostmaster@local.example.com\n---\napiVersion: pki-operator.io/v1alpha1\nkind: DomainValidation\nmetadata: {{name: {missing}}}\nspec:\n  domain: missing.example.com\n  issuerRef: {{kind: Issuer, namespace: {ns}, name: missing}}\n  method: EMAIL\n  email: hostmaster@missing.example.com\n",
                ns = ns.name
            ),
        )?;
        let expectations = [
            (
                api(&client, "DomainValidation", None),
                local.clone(),
                "Unsupported",
                vec![
                    format!("Issuer {}/local-ca", ns.name),
                    "domain control validation".to_owned(),
                ],
            ),
            (
                api(&client, "DomainValidation", None),
                missing.clone(),
                "IssuerNotReady",
                vec![format!("Issuer {}/missing not found", ns.name)],
            ),
        ];
        for (api, name, reason, needles) in &expectations {
            let (status, _, message) = wait_for(
                &format!("{name} Ready=False {reason}"),
                Duration::from_secs(60),
                || async {
                    ready_condition(api, name)
                        .await
                        .filter(|(_, found, _)| found == reason)
                },
            )
            .await
            .with_context(|| operator.log_text())?;
            ensure!(status == "False", "{name}: Ready={status}");
            for needle in needles {
                ensure!(
                    message.contains(needle.as_str()),
                    "{name}: {message:?} lacks {needle:?}"
                );
            }
        }
        for (api, name) in [
            (api(&client, "DomainValidation", None), local),
            (api(&client, "DomainValidation", None), missing),
        ] {
            api.delete(&name, &DeleteParams::default()).await?;
        }
        Ok(())
    })
}
