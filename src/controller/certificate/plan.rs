//! Pure planning: from what was observed (the output Secret, the pending key, the order in
//! status, the clock) decide the one next step. Every branch is unit-tested without a cluster.

use super::validate::{Renewal, ValidatedCertificate};
use crate::crd::v1alpha1::certificate::{CertificateOrder, CertificateStatus, OrderIssuer};
pub use crate::secret::SecretState;

/// Why a new certificate is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    /// There is no usable certificate yet.
    Missing,
    /// The renewal time has come.
    Renewal,
    /// The spec asks for different names or key.
    SpecChanged,
    /// The Secret's content is broken (bad certificate, key mismatch, broken chain).
    Damaged,
    /// Someone asked for a renewal (annotation).
    Manual,
    /// `spec.issuerRef` names another issuer than the one that issued the current certificate.
    IssuerChanged,
}

impl IssueReason {
    /// PascalCase for conditions and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "DoesNotExist",
            Self::Renewal => "Renewing",
            Self::SpecChanged => "SpecChanged",
            Self::Damaged => "SecretDamaged",
            Self::Manual => "ManuallyTriggered",
            Self::IssuerChanged => "IssuerChanged",
        }
    }
}

/// The next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Someone else's Secret has our name: touch nothing.
    SecretConflict,
    /// The Secret is good; nothing to do until the renewal.
    UpToDate {
        /// When, and whether `renewBefore` had to be overridden.
        renewal: Renewal,
    },
    /// Obtain a new certificate.
    Issue(IssueReason),
    /// Rewrite the Secret from the current order with the key it still holds (no new order).
    Repair,
    /// Certificate, key and chain are intact; only the extra outputs (formats, keystores,
    /// template labels) differ from the spec: rewrite them from the Secret itself, without any
    /// CA call.
    RewriteOutputs,
}

/// Everything `plan` looks at.
// Independent observations, each a yes/no fact about the cluster; not a state machine.
#[allow(clippy::struct_excessive_bools)]
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// Now, Unix seconds.
    pub now: i64,
    /// The validated spec.
    pub spec: &'a ValidatedCertificate,
    /// The output Secret.
    pub secret: SecretState,
    /// The key algorithm of `tls.key`, if readable, matches the spec.
    pub key_algorithm_matches: bool,
    /// A renewal was requested and not served yet.
    pub manual_renewal: bool,
    /// The Secret holds every output the spec asks for (extra formats, keystores, labels).
    pub outputs_complete: bool,
    /// `tls.key` is readable and status records an issued order it can be collected from again
    /// through the issuer that placed it.
    pub repairable: bool,
    /// The current certificate was issued through another issuer than `spec.issuerRef` names.
    pub issuer_changed: bool,
}

/// Decides the next step.
pub fn plan(observed: &Observed<'_>) -> Plan {
    let damaged = || {
        if observed.repairable {
            Plan::Repair
        } else {
            Plan::Issue(IssueReason::Damaged)
        }
    };
    let (certificate, key_matches, chain_verifies) = match &observed.secret {
        SecretState::NotOwned => return Plan::SecretConflict,
        SecretState::Missing => return Plan::Issue(IssueReason::Missing),
        // A person asking for a new certificate overrides a repair that cannot succeed.
        SecretState::Owned { .. } if observed.manual_renewal => return Plan::Issue(IssueReason::Manual),
        SecretState::Owned {
            certificate: None, ..
        } => return damaged(),
        SecretState::Owned {
            certificate: Some(c),
            key_matches,
            chain_verifies,
        } => (c, *key_matches, *chain_verifies),
    };
    if !key_matches {
        // The key that belongs to the certificate is gone: only a new certificate helps.
        return Plan::Issue(IssueReason::Damaged);
    }
    if !chain_verifies {
        return damaged();
    }
    if !certificate.names_match(&observed.spec.subject) || !observed.key_algorithm_matches {
        return Plan::Issue(IssueReason::SpecChanged);
    }
    if observed.issuer_changed {
        return Plan::Issue(IssueReason::IssuerChanged);
    }
    let renewal = observed
        .spec
        .renewal(certificate.not_before, certificate.not_after);
    if observed.now >= renewal.at {
        return Plan::Issue(IssueReason::Renewal);
    }
    if !observed.outputs_complete {
        return Plan::RewriteOutputs;
    }
    Plan::UpToDate { renewal }
}

/// Whether `order` was placed through the issuer object `issuer` (kind, namespace, name and
/// uid) at `backend`. Orders without a recorded issuer never qualify: an order id means
/// something only at the CA account that issued it.
pub fn placed_by(order: &CertificateOrder, issuer: &OrderIssuer, backend: &str) -> bool {
    order.backend == backend && order.issuer.as_ref() == Some(issuer)
}

/// Whether `order` is the issuance in progress for the CSR `csr_sha256` through `issuer`, to
/// be collected again rather than ordered anew. An issued order is finished: resuming it would
/// deliver the old certificate again (a reused RSA or Ed25519 key gives a byte-identical CSR).
pub fn resumable(order: &CertificateOrder, csr_sha256: &str, issuer: &OrderIssuer, backend: &str) -> bool {
    order.state == "Pending" && order.csr_sha256 == csr_sha256 && placed_by(order, issuer, backend)
}

/// Order ids a crash-recovery search at `issuer` (on `backend`) must never return: delivered,
/// failed and abandoned orders placed through it (or recorded without an issuer) are accounted
/// for already. Ids of other issuers are left out: an equal id at another CA account is another
/// order, possibly the very one being recovered.
pub fn known_orders(status: &CertificateStatus, issuer: &OrderIssuer, backend: &str) -> Vec<String> {
    status
        .order
        .iter()
        .chain(&status.previous_order)
        .filter(|o| o.state != "Pending")
        .chain(&status.abandoned_orders)
        .filter(|o| o.issuer.is_none() || placed_by(o, issuer, backend))
        .map(|o| o.id.clone())
        .collect()
}

/// How an issuance obtains its order — the heart of "never a second order".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStep {
    /// Collect the pending order recorded for this CSR at this issuer.
    Resume,
    /// The key existed before this reconcile, so a previous run may have ordered and died
    /// before recording it: search the CA for an order of this CSR before placing one.
    Recover,
    /// Renew the delivered order by id through the issuer that placed it (SCM `renewById`).
    RenewById,
    /// Place a new order.
    Enroll,
}

/// Decides the [`OrderStep`]: `resumable` — status records a pending order for this CSR at this
/// issuer; `fresh_key` — the key was made by this reconcile (no order can exist for it);
/// `renew_by_id` — a renewal whose delivered order this issuer placed and renews by id.
/// [`OrderStep::Recover`] answers "nothing found" with the step the same inputs give with a
/// fresh key ([`after_recovery`]).
pub fn order_step(resumable: bool, fresh_key: bool, renew_by_id: bool) -> OrderStep {
    if resumable {
        OrderStep::Resume
    } else if !fresh_key {
        OrderStep::Recover
    } else {
        after_recovery(renew_by_id)
    }
}

/// The step after a recovery search found no order.
pub fn after_recovery(renew_by_id: bool) -> OrderStep {
    if renew_by_id {
        OrderStep::RenewById
    } else {
        OrderStep::Enroll
    }
}

/// What becomes of the order a new order replaces in `status.order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replaced {
    /// Its certificate is in the Secret until the new one arrives: keep it as
    /// `previousOrder` (revoked as superseded, or on delete, through its own issuer).
    Superseded,
    /// It was still pending and can no longer be delivered: revoke it once issued.
    Abandoned,
    /// Failed or revoked: nothing more to do.
    Finished,
}

/// Decides [`Replaced`] for `old`, given whether the Secret holds a certificate.
pub fn replaced(old: &CertificateOrder, has_certificate: bool) -> Replaced {
    match old.state.as_str() {
        "Issued" if has_certificate => Replaced::Superseded,
        "Pending" => Replaced::Abandoned,
        _ => Replaced::Finished,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controller::certificate::validate::validate,
        crd::v1alpha1::{certificate::CertificateSpec, common::IssuerRef},
        pki::inspect::CertificateInfo,
    };

    fn spec() -> ValidatedCertificate {
        validate(&CertificateSpec {
            secret_name: "s".into(),
            issuer_ref: IssuerRef {
                name: "ca".into(),
                ..IssuerRef::default()
            },
            dns_names: vec!["a.example.com".into()],
            duration: Some("90h".into()),
            ..CertificateSpec::default()
        })
        .unwrap()
    }

    fn cert(names: &[&str]) -> CertificateInfo {
        CertificateInfo {
            not_before: 0,
            not_after: 90 * 3600,
            serial_hex: "01".into(),
            common_name: None,
            dns_names: names.iter().map(|s| (*s).to_owned()).collect(),
            ip_addresses: vec![],
            email_addresses: vec![],
            uris: vec![],
            public_key_der: vec![],
            issuer: "CN=ca".into(),
        }
    }

    fn observed(spec: &ValidatedCertificate, secret: SecretState, now: i64) -> Observed<'_> {
        Observed {
            now,
            spec,
            secret,
            key_algorithm_matches: true,
            manual_renewal: false,
            outputs_complete: true,
            repairable: false,
            issuer_changed: false,
        }
    }

    fn good(names: &[&str]) -> SecretState {
        SecretState::Owned {
            certificate: Some(cert(names)),
            key_matches: true,
            chain_verifies: true,
        }
    }

    #[test]
    fn missing_secret_is_issued_and_foreign_secret_is_a_conflict() {
        let spec = spec();
        assert_eq!(
            plan(&observed(&spec, SecretState::Missing, 0)),
            Plan::Issue(IssueReason::Missing)
        );
        assert_eq!(
            plan(&observed(&spec, SecretState::NotOwned, 0)),
            Plan::SecretConflict
        );
    }

    #[test]
    fn good_secret_is_up_to_date_until_two_thirds_of_its_life() {
        let spec = spec();
        let renewal = 90 * 3600 - 90 * 3600 * 33 / 100;
        assert_eq!(
            plan(&observed(&spec, good(&["a.example.com"]), 10)),
            Plan::UpToDate {
                renewal: Renewal {
                    at: renewal,
                    renew_before_too_long: false
                }
            }
        );
        assert_eq!(
            plan(&observed(&spec, good(&["a.example.com"]), renewal)),
            Plan::Issue(IssueReason::Renewal)
        );
    }

    #[test]
    fn damaged_or_changed_secrets_are_reissued() {
        let spec = spec();
        let mismatched = SecretState::Owned {
            certificate: Some(cert(&["a.example.com"])),
            key_matches: false,
            chain_verifies: true,
        };
        assert_eq!(
            plan(&observed(&spec, mismatched, 0)),
            Plan::Issue(IssueReason::Damaged)
        );
        let unreadable = SecretState::Owned {
            certificate: None,
            key_matches: false,
            chain_verifies: false,
        };
        assert_eq!(
            plan(&observed(&spec, unreadable, 0)),
            Plan::Issue(IssueReason::Damaged)
        );
        assert_eq!(
            plan(&observed(&spec, good(&["b.example.com"]), 0)),
            Plan::Issue(IssueReason::SpecChanged)
        );
        let mut o = observed(&spec, good(&["a.example.com"]), 0);
        o.key_algorithm_matches = false;
        assert_eq!(plan(&o), Plan::Issue(IssueReason::SpecChanged));
        let mut o = observed(&spec, good(&["a.example.com"]), 0);
        o.manual_renewal = true;
        assert_eq!(plan(&o), Plan::Issue(IssueReason::Manual));
    }

    #[test]
    fn broken_content_with_a_known_order_is_repaired_not_reordered() {
        let spec = spec();
        let broken_chain = SecretState::Owned {
            certificate: Some(cert(&["a.example.com"])),
            key_matches: true,
            chain_verifies: false,
        };
        let mut o = observed(&spec, broken_chain, 0);
        o.repairable = true;
        assert_eq!(plan(&o), Plan::Repair);
        // Only the extra outputs differ: rewritten from the Secret, with or without an order
        // to collect from (never a new order).
        let mut o = observed(&spec, good(&["a.example.com"]), 0);
        o.outputs_complete = false;
        o.repairable = true;
        assert_eq!(plan(&o), Plan::RewriteOutputs);
        o.repairable = false;
        assert_eq!(plan(&o), Plan::RewriteOutputs);
        // A replaced key cannot be repaired.
        let wrong_key = SecretState::Owned {
            certificate: Some(cert(&["a.example.com"])),
            key_matches: false,
            chain_verifies: true,
        };
        let mut o = observed(&spec, wrong_key, 0);
        o.repairable = true;
        assert_eq!(plan(&o), Plan::Issue(IssueReason::Damaged));
    }

    #[test]
    fn an_issuer_change_is_a_new_issuance_from_the_new_issuer() {
        let spec = spec();
        let mut o = observed(&spec, good(&["a.example.com"]), 10);
        o.issuer_changed = true;
        assert_eq!(plan(&o), Plan::Issue(IssueReason::IssuerChanged));
    }

    #[test]
    fn a_manual_renewal_overrides_a_repair() {
        let spec = spec();
        let broken_chain = SecretState::Owned {
            certificate: Some(cert(&["a.example.com"])),
            key_matches: true,
            chain_verifies: false,
        };
        let mut o = observed(&spec, broken_chain, 0);
        o.repairable = true;
        o.manual_renewal = true;
        assert_eq!(plan(&o), Plan::Issue(IssueReason::Manual));
    }

    #[test]
    fn a_certificate_shorter_than_renew_before_is_up_to_date_until_two_thirds_of_it() {
        let spec = validate(&CertificateSpec {
            secret_name: "s".into(),
            issuer_ref: IssuerRef {
                name: "ca".into(),
                ..IssuerRef::default()
            },
            dns_names: vec!["a.example.com".into()],
            duration: Some("2160h".into()),
            renew_before: Some("720h".into()),
            ..CertificateSpec::default()
        })
        .unwrap();
        // The CA issued 90 h (cert() spans 0..90 h), shorter than renewBefore (30 days).
        let plan_at_start = plan(&observed(&spec, good(&["a.example.com"]), 1));
        assert_eq!(
            plan_at_start,
            Plan::UpToDate {
                renewal: Renewal {
                    at: 60 * 3600,
                    renew_before_too_long: true
                }
            }
        );
    }

    fn order(state: &str, issuer: Option<&OrderIssuer>) -> CertificateOrder {
        CertificateOrder {
            backend: "scm".into(),
            id: format!("{state}-1"),
            state: state.into(),
            csr_sha256: "aa".into(),
            issuer: issuer.cloned(),
            ..CertificateOrder::default()
        }
    }

    fn issuer(name: &str, uid: &str) -> OrderIssuer {
        OrderIssuer {
            kind: crate::crd::v1alpha1::common::IssuerKind::Issuer,
            namespace: Some("ns".into()),
            name: name.into(),
            uid: uid.into(),
        }
    }

    #[test]
    fn only_a_pending_order_of_this_csr_and_issuer_object_is_resumed() {
        let tenant = issuer("tenant", "u1");
        assert!(resumable(&order("Pending", Some(&tenant)), "aa", &tenant, "scm"));
        // An issued order is finished, even for a byte-identical CSR.
        assert!(!resumable(&order("Issued", Some(&tenant)), "aa", &tenant, "scm"));
        assert!(!resumable(&order("Failed", Some(&tenant)), "aa", &tenant, "scm"));
        assert!(!resumable(&order("Pending", Some(&tenant)), "bb", &tenant, "scm"));
        // Another issuer, a re-created one (new uid), another backend, or none recorded.
        assert!(!resumable(
            &order("Pending", Some(&tenant)),
            "aa",
            &issuer("corp", "u2"),
            "scm"
        ));
        assert!(!resumable(
            &order("Pending", Some(&tenant)),
            "aa",
            &issuer("tenant", "u3"),
            "scm"
        ));
        assert!(!resumable(
            &order("Pending", Some(&tenant)),
            "aa",
            &tenant,
            "nexus"
        ));
        assert!(!resumable(&order("Pending", None), "aa", &tenant, "scm"));
    }

    #[test]
    fn delivered_failed_and_abandoned_orders_are_never_recovered() {
        let tenant = issuer("tenant", "u1");
        let mut status = CertificateStatus {
            order: Some(order("Failed", Some(&tenant))),
            previous_order: Some(order("Issued", Some(&tenant))),
            abandoned_orders: vec![order("Pending", Some(&tenant))],
            ..CertificateStatus::default()
        };
        status.abandoned_orders[0].id = "abandoned-1".into();
        assert_eq!(
            known_orders(&status, &tenant, "scm"),
            vec!["Failed-1", "Issued-1", "abandoned-1"]
        );
        // Ids at another CA account say nothing about this one's orders.
        assert!(known_orders(&status, &issuer("corp", "u2"), "scm").is_empty());
        // The order in progress is not "known": a crash before its status write is recovered.
        status.order = Some(order("Pending", Some(&tenant)));
        assert_eq!(
            known_orders(&status, &tenant, "scm"),
            vec!["Issued-1", "abandoned-1"]
        );
    }

    #[test]
    fn a_replaced_order_is_kept_abandoned_or_finished() {
        assert_eq!(replaced(&order("Issued", None), true), Replaced::Superseded);
        assert_eq!(replaced(&order("Issued", None), false), Replaced::Finished);
        assert_eq!(replaced(&order("Pending", None), true), Replaced::Abandoned);
        assert_eq!(replaced(&order("Failed", None), true), Replaced::Finished);
    }

    #[test]
    fn a_recorded_pending_order_is_always_resumed_never_reordered() {
        for fresh in [false, true] {
            for renew in [false, true] {
                assert_eq!(order_step(true, fresh, renew), OrderStep::Resume);
            }
        }
    }

    #[test]
    fn a_key_older_than_this_reconcile_is_searched_for_before_ordering() {
        assert_eq!(order_step(false, false, false), OrderStep::Recover);
        assert_eq!(order_step(false, false, true), OrderStep::Recover);
        // Nothing found: the same choice as with a fresh key.
        assert_eq!(after_recovery(true), OrderStep::RenewById);
        assert_eq!(after_recovery(false), OrderStep::Enroll);
    }

    #[test]
    fn a_fresh_key_renews_by_id_or_enrolls() {
        assert_eq!(order_step(false, true, true), OrderStep::RenewById);
        assert_eq!(order_step(false, true, false), OrderStep::Enroll);
    }
}
