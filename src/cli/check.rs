//! `kubectl pki check issuer <name>`: whether an Issuer or ClusterIssuer can work: its Ready
//! condition and whether every Secret its spec references exists.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde::Serialize;

use super::{
    CliError, Context, Outcome, get_error, is_ready, ready_condition, render::Report, render::table,
};
use crate::{
    controller::issuer::IssuerObject,
    crd::v1alpha1::{ClusterIssuer, Issuer},
};

/// One Secret the issuer references.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretCheck {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Whether it exists.
    pub exists: bool,
}

/// `check issuer`'s result.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuerCheck {
    /// `Issuer` or `ClusterIssuer`.
    pub kind: String,
    /// The Issuer's namespace; none for a ClusterIssuer.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// `Ready=True`.
    pub ready: bool,
    /// The Ready condition's reason.
    pub reason: Option<String>,
    /// The Ready condition's message.
    pub message: Option<String>,
    /// The referenced Secrets.
    pub secrets: Vec<SecretCheck>,
}

impl IssuerCheck {
    /// Ready, and every referenced Secret exists.
    pub fn ok(&self) -> bool {
        self.ready && self.secrets.iter().all(|s| s.exists)
    }
}

impl Report for IssuerCheck {
    fn table(&self) -> String {
        let mut out = String::new();
        let namespace = self
            .namespace
            .as_deref()
            .map(|n| format!("{n}/"))
            .unwrap_or_default();
        let _ = writeln!(out, "{} {namespace}{}", self.kind, self.name);
        let _ = writeln!(
            out,
            "Ready: {} {}",
            self.ready,
            super::render::or_dash(self.reason.as_deref())
        );
        if let Some(message) = self.message.as_deref().filter(|m| !m.is_empty()) {
            let _ = writeln!(out, "Message: {message}");
        }
        let rows: Vec<Vec<String>> = self
            .secrets
            .iter()
            .map(|s| {
                let exists = if s.exists { "yes" } else { "MISSING" };
                vec![s.namespace.clone(), s.name.clone(), exists.to_owned()]
            })
            .collect();
        out += "\n";
        out += &table(&["secret namespace", "secret", "exists"], &rows);
        let _ = writeln!(out, "\n{}", if self.ok() { "OK" } else { "NOT OK" });
        out
    }
}

async fn check<K: IssuerObject>(ctx: &Context, name: &str) -> Result<IssuerCheck, CliError> {
    let namespace =
        (K::KIND == crate::crd::v1alpha1::common::IssuerKind::Issuer).then(|| ctx.namespace.clone());
    let issuer = K::api(ctx.client.clone(), Some(&ctx.namespace))
        .get(name)
        .await
        .map_err(|e| get_error(K::KIND.as_str(), namespace.as_deref(), name, e))?;
    let conditions = issuer
        .issuer_status()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let ready = ready_condition(conditions);
    // A ClusterIssuer's Secrets are in the operator's cluster resource namespace, which only
    // the operator knows: `-n` names it.
    let secret_namespace = issuer.secret_namespace(&ctx.namespace).to_owned();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &secret_namespace);
    let mut secrets = Vec::new();
    for secret in issuer.spec_view().referenced_secrets() {
        let exists = api
            .get_metadata_opt(&secret)
            .await
            .map_err(|source| CliError::Api {
                action: format!("get Secret {secret} in namespace {secret_namespace}"),
                source,
            })?
            .is_some();
        secrets.push(SecretCheck {
            namespace: secret_namespace.clone(),
            name: secret,
            exists,
        });
    }
    Ok(IssuerCheck {
        kind: K::KIND.as_str().to_owned(),
        namespace,
        name: name.to_owned(),
        ready: is_ready(conditions),
        reason: ready.map(|c| c.reason.clone()),
        message: ready.map(|c| c.message.clone()),
        secrets,
    })
}

/// Runs `check issuer`: exit 0 when the issuer is Ready and its Secrets exist, 1 otherwise.
pub async fn run(ctx: &Context, name: &str, cluster: bool) -> Result<Outcome<IssuerCheck>, CliError> {
    let report = if cluster {
        check::<ClusterIssuer>(ctx, name).await?
    } else {
        check::<Issuer>(ctx, name).await?
    };
    let ok = report.ok();
    Ok(Outcome { report, ok })
}
