//! `kubectl pki renew`: the manual renewal trigger. It only sets the annotation the Certificate
//! controller serves ([`RENEW_ANNOTATION`], Unix seconds), by merge patch, so the plugin needs
//! no more rights than `kubectl annotate` and the controller stays the one place that renews.

use std::fmt::Write as _;

use kube::{
    Api, ResourceExt as _,
    api::{ListParams, Patch, PatchParams},
};
use serde::Serialize;

use super::{CliError, Context, Outcome, get_error, now, render::Report};
use crate::{controller::certificate::RENEW_ANNOTATION, crd::v1alpha1::Certificate};

/// One Certificate annotated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Renewed {
    /// Its name.
    pub name: String,
    /// The annotation's new value, Unix seconds.
    pub value: String,
}

/// `renew`'s result.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewReport {
    /// The namespace.
    pub namespace: String,
    /// The annotation set.
    pub annotation: String,
    /// The Certificates annotated.
    pub renewed: Vec<Renewed>,
}

impl Report for RenewReport {
    fn table(&self) -> String {
        if self.renewed.is_empty() {
            return format!("no Certificates matched in namespace {}\n", self.namespace);
        }
        let mut out = String::new();
        for renewed in &self.renewed {
            let _ = writeln!(
                out,
                "Certificate {}/{}: renewal requested ({}={})",
                self.namespace, renewed.name, self.annotation, renewed.value
            );
        }
        out
    }
}

/// The annotation value that asks for a renewal now. The controller serves each distinct value
/// once, so a second request within the same second as the last (a script renewing twice) must
/// still differ from it: one past the previous value then.
pub fn next_value(previous: Option<&str>, now: i64) -> i64 {
    previous
        .and_then(|p| p.parse::<i64>().ok())
        .map_or(now, |p| now.max(p.saturating_add(1)))
}

/// The Certificates `renew` is about: the named ones, or with `--all` those `selector` matches.
async fn targets(
    api: &Api<Certificate>,
    ctx: &Context,
    names: &[String],
    all: bool,
    selector: Option<&str>,
) -> Result<Vec<Certificate>, CliError> {
    if all {
        let params = selector.map_or_else(ListParams::default, |s| ListParams::default().labels(s));
        return Ok(api
            .list(&params)
            .await
            .map_err(|source| CliError::Api {
                action: format!("list Certificates in namespace {}", ctx.namespace),
                source,
            })?
            .items);
    }
    let mut certificates = Vec::new();
    for name in names {
        certificates.push(
            api.get(name)
                .await
                .map_err(|e| get_error("Certificate", Some(&ctx.namespace), name, e))?,
        );
    }
    Ok(certificates)
}

/// Runs `renew`: exit 0 once every named (or selected) Certificate is annotated.
pub async fn run(
    ctx: &Context,
    names: &[String],
    all: bool,
    selector: Option<&str>,
) -> Result<Outcome<RenewReport>, CliError> {
    let api: Api<Certificate> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let mut renewed = Vec::new();
    for cert in targets(&api, ctx, names, all, selector).await? {
        let name = cert.name_any();
        let value = next_value(
            cert.annotations().get(RENEW_ANNOTATION).map(String::as_str),
            now(),
        )
        .to_string();
        let patch = serde_json::json!({"metadata": {"annotations": {RENEW_ANNOTATION: value}}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| get_error("Certificate", Some(&ctx.namespace), &name, e))?;
        renewed.push(Renewed { name, value });
    }
    let report = RenewReport {
        namespace: ctx.namespace.clone(),
        annotation: RENEW_ANNOTATION.to_owned(),
        renewed,
    };
    Ok(Outcome { report, ok: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_value_always_differs_from_the_last() {
        assert_eq!(next_value(None, 100), 100);
        assert_eq!(next_value(Some("50"), 100), 100);
        assert_eq!(next_value(Some("100"), 100), 101);
        assert_eq!(next_value(Some("101"), 100), 102);
        assert_eq!(next_value(Some("yesterday"), 100), 100);
    }

    #[test]
    fn the_table_names_each_certificate() {
        let report = RenewReport {
            namespace: "a".to_owned(),
            annotation: RENEW_ANNOTATION.to_owned(),
            renewed: vec![Renewed {
                name: "web".to_owned(),
                value: "7".to_owned(),
            }],
        };
        assert_eq!(
            report.table(),
            "Certificate a/web: renewal requested (pki-operator.io/renew=7)\n"
        );
    }
}
