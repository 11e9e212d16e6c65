//! Pure planning: from what was observed (the output Secret, the pending key, the order in
//! status, the clock) decide the one next step. Every branch is unit-tested without a cluster.

use super::validate::{Renewal, ValidatedCertificate};
use crate::pki::inspect::CertificateInfo;

/// The output Secret as observed.
// One value exists per reconcile; boxing the certificate would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretState {
    /// No Secret with that name.
    Missing,
    /// A Secret exists that this Certificate does not own.
    NotOwned,
    /// Our Secret; `certificate` is its parsed `tls.crt` leaf when readable.
    Owned {
        /// The leaf, if `tls.crt` parses.
        certificate: Option<CertificateInfo>,
        /// `tls.key` parses and matches the leaf.
        key_matches: bool,
        /// The chain in `tls.crt` verifies.
        chain_verifies: bool,
    },
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controller::certificate::validate::validate,
        crd::v1alpha1::{certificate::CertificateSpec, common::IssuerRef},
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
}
