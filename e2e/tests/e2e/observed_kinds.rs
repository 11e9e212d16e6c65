//! End-to-end tests of the kinds whose controllers have not landed yet (DomainValidation,
//! AlertConfig): they are answered in status on the shared machinery, and a
//! DomainValidation's cluster-scoped issuer reference goes through the shared resolver and the
//! backend capability check before anything else.

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
        "observed_kinds_say_why_nothing_is_done",
        observed_kinds_say_why_nothing_is_done,
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
/// issuer; an AlertConfig says `NotImplemented`. None of them is Ready.
fn observed_kinds_say_why_nothing_is_done() -> Result<()> {
    block_on(async {
        let dir = work_dir("observed")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "observed").await?;
        ca_issuer(&ns.name, "local-ca")?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        // Cluster-scoped names carry the namespace: tests run in parallel on one cluster.
        let (local, missing, alerts) = (
            format!("{}-local", ns.name),
            format!("{}-missing", ns.name),
            format!("{}-alerts", ns.name),
        );
        apply(
            &ns.name,
            &format!(
                "apiVersion: pki-operator.io/v1alpha1\nkind: DomainValidation\nmetadata: {{name: {local}}}\nspec:\n  domain: local.example.com\n  issuerRef: {{kind: Issuer, namespace: {ns}, name: local-ca}}\n  method: EMAIL\n  email: hostmaster@local.example.com\n---\napiVersion: pki-operator.io/v1alpha1\nkind: DomainValidation\nmetadata: {{name: {missing}}}\nspec:\n  domain: missing.example.com\n  issuerRef: {{kind: Issuer, namespace: {ns}, name: missing}}\n  method: EMAIL\n  email: hostmaster@missing.example.com\n---\napiVersion: pki-operator.io/v1alpha1\nkind: AlertConfig\nmetadata: {{name: {alerts}}}\nspec:\n  levels:\n  - {{level: ERROR, remainingDays: 7}}\n",
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
            (
                api(&client, "AlertConfig", None),
                alerts.clone(),
                "NotImplemented",
                vec!["does not act on them yet".to_owned()],
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
            (api(&client, "AlertConfig", None), alerts),
        ] {
            api.delete(&name, &DeleteParams::default()).await?;
        }
        Ok(())
    })
}
