//! `kubectl pki renew`: the manual renewal trigger. It only sets the annotation the Certificate
//! controller serves ([`RENEW_ANNOTATION`], Unix seconds), by merge patch, so the plugin needs
//! no more rights than `kubectl annotate` and the controller stays the one place that renews.

use std::fmt::Write as _;

use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use serde::Serialize;

use super::{CliError, Context, Outcome, get_error, now, render::Report};
use crate::{controller::certificate::RENEW_ANNOTATION, crd::v1alpha1::Certificate};

/// `renew`'s result.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewReport {
    /// The namespace.
    pub namespace: String,
    /// The annotation set.
    pub annotation: String,
    /// Its value, Unix seconds.
    pub value: String,
    /// The Certificates annotated.
    pub renewed: Vec<String>,
}

impl Report for RenewReport {
    fn table(&self) -> String {
        if self.renewed.is_empty() {
            return format!("no Certificates matched in namespace {}\n", self.namespace);
        }
        let mut out = String::new();
        for name in &self.renewed {
            let _ = writeln!(out, "Certificate {}/{name}: renewal requested", self.namespace);
        }
        out
    }
}

/// Runs `renew`: exit 0 once every named (or selected) Certificate is annotated.
pub async fn run(
    ctx: &Context,
    names: &[String],
    all: bool,
    selector: Option<&str>,
) -> Result<Outcome<RenewReport>, CliError> {
    let api: Api<Certificate> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let names: Vec<String> = if all {
        let params = selector.map_or_else(ListParams::default, |s| ListParams::default().labels(s));
        api.list(&params)
            .await
            .map_err(|source| CliError::Api {
                action: format!("list Certificates in namespace {}", ctx.namespace),
                source,
            })?
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect()
    } else {
        names.to_vec()
    };
    let value = now().to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {RENEW_ANNOTATION: value}}});
    for name in &names {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| get_error("Certificate", Some(&ctx.namespace), name, e))?;
    }
    let report = RenewReport {
        namespace: ctx.namespace.clone(),
        annotation: RENEW_ANNOTATION.to_owned(),
        value,
        renewed: names,
    };
    Ok(Outcome { report, ok: true })
}
