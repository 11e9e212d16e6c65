//! The per-Certificate series ([`crate::metrics::CertificateSeries`]): what a Certificate's
//! persisted status says, and their removal when it goes.

use kube::ResourceExt;

use crate::{
    controller::{Context, conditions},
    crd::v1alpha1::Certificate,
    metrics::CertificateSeries,
};

/// Sets the series of `cert` from its status as the apiserver has it. Called at the start of
/// every reconcile with the object just read: each status write triggers another reconcile, so
/// the series follow every write without a call on each of the reconciler's return paths, and
/// they never show a status that failed to persist.
pub(super) fn record(ctx: &Context, cert: &Certificate) {
    ctx.metrics.set_certificate(&series(cert));
}

/// Removes the series of a Certificate being deleted or gone.
pub(super) fn forget(ctx: &Context, namespace: &str, name: &str) {
    ctx.metrics.remove_certificate(namespace, name);
}

fn series(cert: &Certificate) -> CertificateSeries {
    let status = cert.status.as_ref();
    let ready = status
        .and_then(|s| conditions::get(&s.conditions, "Ready"))
        .and_then(|c| match c.status.as_str() {
            "True" => Some(true),
            "False" => Some(false),
            _ => None,
        });
    CertificateSeries {
        namespace: cert.namespace().unwrap_or_default(),
        name: cert.name_any(),
        issuer_name: cert.spec.issuer_ref.name.clone(),
        issuer_kind: cert.spec.issuer_ref.kind.as_str(),
        not_after: status.and_then(|s| s.not_after.as_ref()).map(|t| t.0.as_second()),
        renewal: status
            .and_then(|s| s.renewal_time.as_ref())
            .map(|t| t.0.as_second()),
        ready,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;
    use crate::crd::v1alpha1::{
        certificate::{CertificateSpec, CertificateStatus},
        common::{IssuerKind, IssuerRef},
    };

    fn certificate(status: Option<CertificateStatus>) -> Certificate {
        let mut cert = Certificate::new(
            "web",
            CertificateSpec {
                issuer_ref: IssuerRef {
                    name: "corp".into(),
                    kind: IssuerKind::ClusterIssuer,
                },
                ..CertificateSpec::default()
            },
        );
        cert.metadata.namespace = Some("apps".into());
        cert.status = status;
        cert
    }

    #[test]
    fn series_come_from_the_persisted_status() {
        let fresh = series(&certificate(None));
        assert_eq!(
            (fresh.not_after, fresh.renewal, fresh.ready),
            (None, None, None),
            "nothing known before the first status"
        );
        assert_eq!(
            (
                fresh.namespace.as_str(),
                fresh.issuer_name.as_str(),
                fresh.issuer_kind
            ),
            ("apps", "corp", "ClusterIssuer")
        );
        let at = |s| Some(Time(jiff::Timestamp::from_second(s).unwrap()));
        let ready = |status: &str| Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "Ready".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        };
        let issued = CertificateStatus {
            not_after: at(1_900_000_000),
            renewal_time: at(1_899_000_000),
            conditions: vec![ready("True")],
            ..CertificateStatus::default()
        };
        let s = series(&certificate(Some(issued.clone())));
        assert_eq!(
            (s.not_after, s.renewal, s.ready),
            (Some(1_900_000_000), Some(1_899_000_000), Some(true))
        );
        for (condition, expected) in [("False", Some(false)), ("Unknown", None)] {
            let status = CertificateStatus {
                conditions: vec![ready(condition)],
                ..issued.clone()
            };
            assert_eq!(series(&certificate(Some(status))).ready, expected);
        }
    }
}
