//! The one place errors become words and decisions: the condition reason, Event reason and
//! metric label of every reconcile error (one bounded PascalCase vocabulary, so the same CA error
//! reads the same on an Issuer and on a Certificate), whether retrying without a change can
//! help, and the requeue that follows a failed reconcile.
//!
//! Transient failures (apiserver 5xx, timeouts, conflicts, throttling, an unreachable or
//! rate-limiting CA) requeue with exponential backoff and jitter per object; permanent ones (a
//! request the CA will keep refusing, an object this version cannot read) wait for a change.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use kube::runtime::controller::Action;

use super::{
    Error,
    certificate::{self, DeliveryProblem},
    issuer::IssuerError,
};
use crate::backend::BackendError;

/// What a failure means, wherever it is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    /// Condition reason, Event reason and metric label: PascalCase from a bounded set.
    pub reason: &'static str,
    /// Whether the same work can succeed later without anyone changing anything we watch.
    pub transient: bool,
    /// The least wait the other side asked for (a CA's Retry-After).
    pub retry_after: Option<Duration>,
}

impl Classification {
    const fn transient(reason: &'static str) -> Self {
        Self {
            reason,
            transient: true,
            retry_after: None,
        }
    }

    const fn permanent(reason: &'static str) -> Self {
        Self {
            reason,
            transient: false,
            retry_after: None,
        }
    }
}

/// Reason of every failed Kubernetes API call.
pub const KUBERNETES_ERROR: &str = "KubernetesError";

/// A failed Kubernetes API call. Everything the apiserver may answer differently next time is
/// transient: 5xx, 429 throttling, 409 conflicts, 408 timeouts, and transport failures. 401 and
/// 403 are transient too: credentials are refreshed and RBAC is fixed without touching the
/// object, so waiting for a change of the object would strand it. 404 is transient: objects we
/// read are fetched with `get_opt`, so a 404 that escapes is a write to an object deleted
/// meanwhile (its retry is then dropped by the runner, as the object is gone from the cache) or
/// a resource the apiserver does not serve for a moment (a CRD being re-established). Other 4xx
/// (400, 422, ...) mean the request itself is wrong and stays wrong until the object changes.
pub fn kube(error: &kube::Error) -> Classification {
    let transient = match error {
        kube::Error::Api(status) => matches!(status.code, 401 | 403 | 404 | 408 | 409 | 410 | 429 | 500..),
        // We built a request the client cannot send: the same object builds the same request.
        kube::Error::BuildRequest(_) | kube::Error::HttpError(_) => false,
        // Transport, TLS, auth refresh, and garbled answers (usually a proxy in between).
        _ => true,
    };
    Classification {
        reason: KUBERNETES_ERROR,
        transient,
        retry_after: None,
    }
}

/// A failed CA call: the backend's semantic kind is the reason (`Unauthorized`, `RateLimited`,
/// `InvalidRequest`, ...), [`BackendError::is_transient`] decides, and the CA's Retry-After is
/// honoured.
pub fn backend(error: &BackendError) -> Classification {
    Classification {
        reason: error.category(),
        transient: error.is_transient(),
        retry_after: error.retry_after(),
    }
}

/// A failed Issuer or ClusterIssuer check or status write.
pub fn issuer(error: &IssuerError) -> Classification {
    match error {
        // The Issuer controller watches the Secrets its issuers reference: creating or fixing
        // the Secret is the change that brings the next reconcile.
        IssuerError::SecretNotFound { .. } | IssuerError::SecretKeyMissing { .. } => {
            Classification::permanent("SecretNotFound")
        }
        // Labelling the Secret (watched) or editing the policy is the change awaited.
        IssuerError::SecretNotLabelled { .. } => Classification::permanent("SecretNotLabelled"),
        IssuerError::InvalidPolicy(_) => Classification::permanent("InvalidPolicy"),
        IssuerError::ReadSecret { source, .. } | IssuerError::UpdateStatus(source) => kube(source),
        IssuerError::Backend(source) => backend(source),
        IssuerError::Unsupported(_) => Classification::permanent(INVALID_SPEC),
    }
}

/// Reason of a spec the reconciler rejects.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// A failed Certificate reconcile.
pub fn certificate(error: &certificate::Error) -> Classification {
    match error {
        certificate::Error::Kube { source, .. } => kube(source),
        // What a status write records (a delivered order, a failure's backoff) must not be
        // lost, and what refuses it (an admission policy, a quota, an outage) is not something
        // this controller watches: even a refusal the apiserver calls final is retried.
        certificate::Error::StatusWrite { source } => Classification {
            transient: true,
            ..kube(source)
        },
        certificate::Error::Backend { source, .. } => backend(source),
        // A CA may hand out a good certificate on the next attempt; a bad key or CSR comes from
        // state outside the Certificate (the next-key Secret), so no edit of it is awaited.
        certificate::Error::Verification(_) => Classification::transient("VerificationFailed"),
        certificate::Error::Key(_) => Classification::transient("KeyError"),
        certificate::Error::IssuerUnavailable(_) => Classification::transient("IssuerNotReady"),
        certificate::Error::OrderFailed { .. } => Classification::transient("OrderFailed"),
        certificate::Error::Delivery { problem, .. } => Classification::transient(match problem {
            DeliveryProblem::Expired(_) => "CertificateExpired",
            DeliveryProblem::NotYetValid(_) => "CertificateNotYetValid",
            DeliveryProblem::SameCertificate(_) => "SameCertificateReturned",
            DeliveryProblem::KeyMismatch => "KeyMismatch",
            DeliveryProblem::Unreadable(_)
            | DeliveryProblem::NamesDiffer(_)
            | DeliveryProblem::ChainInvalid(_) => "VerificationFailed",
        }),
        // The order cannot give the certificate back; a person's renew annotation (a change)
        // or the CA recovering ends it.
        certificate::Error::RepairImpossible { .. } => Classification::transient("RepairFailed"),
        // Recorded in status with its backoff: retried after that, under the failure's reason.
        certificate::Error::Recorded { source, retry } => Classification {
            transient: true,
            retry_after: Some(*retry),
            ..certificate(source)
        },
    }
}

/// Any reconcile failure the runner sees.
pub fn reconcile(error: &Error) -> Classification {
    match error {
        // Only an edit makes an unreadable object readable.
        Error::InvalidObject { .. } => Classification::permanent("InvalidObject"),
        Error::Certificate(e) => certificate(e),
        Error::Issuer(e) => issuer(e),
        Error::DomainValidation(e) => domain_validation(e),
        Error::UpdateStatus { source, .. }
        | Error::DiscoveryTask(crate::controller::discovery_task::Error::UpdateStatus { source, .. })
        | Error::AlertConfig(crate::controller::alert_config::Error::Kube { source, .. }) => kube(source),
    }
}

/// A failed DomainValidation reconcile: only failures that may pass reach the runner (the rest
/// are reasons in status), so the CA's or the apiserver's verdict decides.
pub fn domain_validation(error: &crate::controller::domain_validation::Error) -> Classification {
    use crate::controller::domain_validation::Error;
    match error {
        Error::Dcv { source, .. } => Classification {
            reason: source.reason(),
            transient: source.is_transient(),
            retry_after: source.retry_after(),
        },
        Error::UpdateStatus { source, .. } => kube(source),
    }
}

/// What the runner does after a failed reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Reconcile again after this long.
    After(Duration),
    /// Wait until the object, or something its controller watches, changes.
    OnChange,
}

impl From<Retry> for Action {
    fn from(retry: Retry) -> Self {
        match retry {
            Retry::After(wait) => Action::requeue(wait),
            Retry::OnChange => Action::await_change(),
        }
    }
}

/// Longest wait between attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Wait after `failures` consecutive transient failures: 5 s doubling to 5 min, ±20 % jitter so
/// objects that failed together (an apiserver blip) do not retry together.
pub fn backoff(failures: u32) -> Duration {
    super::backoff::exponential(failures, BACKOFF_CAP)
}

/// An object's identity within one controller: namespace (if any) and name.
pub type ObjectKey = (Option<String>, String);

/// Consecutive transient failures per object of one controller, for the backoff. An entry lives
/// only while its object keeps failing: a success, a permanent failure, or the retry finding the
/// object deleted removes it, so the map is bounded by the objects currently failing.
#[derive(Debug, Default)]
pub struct Failures {
    counts: Mutex<HashMap<ObjectKey, u32>>,
}

impl Failures {
    /// Records a failure of `object` and decides when to retry.
    pub fn failed(&self, object: ObjectKey, classification: Classification) -> Retry {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if !classification.transient {
            counts.remove(&object);
            return Retry::OnChange;
        }
        let failures = counts.entry(object).or_insert(0);
        *failures = failures.saturating_add(1);
        let wait = backoff(*failures);
        Retry::After(classification.retry_after.map_or(wait, |hint| hint.max(wait)))
    }

    /// Forgets `object`'s failures (it reconciled, or it is gone).
    pub fn forget(&self, object: &ObjectKey) {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(object);
    }

    /// How many objects are failing now.
    pub fn len(&self) -> usize {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no object is failing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Renders an error with its sources, `a: b: c`, for log fields and status messages.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;
    use crate::backend::BackendKind;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Status::failure("injected", "Injected").with_code(code).boxed())
    }

    fn unauthorized() -> BackendError {
        BackendError::Unauthorized {
            backend: BackendKind::Scm,
            message: "Unknown user (code -16)".into(),
        }
    }

    /// The same CA error reads the same on an Issuer and on a Certificate, in conditions, Events
    /// and metrics alike.
    #[test]
    fn a_ca_error_has_one_reason_on_issuers_and_certificates() {
        let samples: [fn() -> BackendError; 4] = [
            unauthorized,
            || BackendError::RateLimited {
                backend: BackendKind::Nexus,
                retry_after: None,
            },
            || BackendError::Unavailable {
                backend: BackendKind::Scm,
                message: "503".into(),
            },
            || BackendError::Configuration {
                backend: BackendKind::Nexus,
                message: "bad URL".into(),
            },
        ];
        for sample in samples {
            let via_issuer = reconcile(&Error::Issuer(IssuerError::Backend(sample())));
            let via_certificate = reconcile(&Error::Certificate(certificate::Error::Backend {
                operation: "enroll",
                source: sample(),
            }));
            assert_eq!(via_issuer, via_certificate, "{}", sample());
            assert_eq!(via_issuer.reason, sample().category());
            assert_eq!(IssuerError::Backend(sample()).reason(), via_issuer.reason);
            let cert_error = certificate::Error::Backend {
                operation: "check",
                source: sample(),
            };
            assert_eq!(cert_error.category(), via_issuer.reason);
        }
        assert_eq!(
            reconcile(&Error::Issuer(IssuerError::Backend(unauthorized()))).reason,
            "Unauthorized"
        );
        // And a failed status write reads the same from both controllers.
        assert_eq!(
            issuer(&IssuerError::UpdateStatus(api(500))),
            certificate(&certificate::Error::Kube {
                action: "update status".into(),
                source: api(500)
            })
        );
    }

    #[test]
    fn apiserver_errors_that_can_pass_are_transient() {
        for code in [500, 502, 503, 504, 429, 409, 408, 404, 403, 401, 410] {
            let c = kube(&api(code));
            assert!(c.transient, "{code}");
            assert_eq!(c.reason, KUBERNETES_ERROR);
        }
        for code in [400, 405, 415, 422] {
            assert!(!kube(&api(code)).transient, "{code}");
        }
        let timeout = kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        )));
        assert!(kube(&timeout).transient);
    }

    /// A refused Certificate status write (an admission policy answers 422 or 403) is retried:
    /// it may be the only record of a delivered order.
    #[test]
    fn a_refused_certificate_status_write_is_retried() {
        for code in [400, 403, 422] {
            let refused = certificate::Error::StatusWrite { source: api(code) };
            let c = certificate(&refused);
            assert!(c.transient, "{code}");
            assert_eq!(c.reason, KUBERNETES_ERROR);
        }
    }

    #[test]
    fn ca_errors_follow_the_backends_verdict() {
        let rate_limited = BackendError::RateLimited {
            backend: BackendKind::Scm,
            retry_after: Some(Duration::from_secs(120)),
        };
        assert_eq!(
            backend(&rate_limited),
            Classification {
                reason: "RateLimited",
                transient: true,
                retry_after: Some(Duration::from_secs(120)),
            }
        );
        let invalid = BackendError::InvalidRequest {
            backend: BackendKind::Scm,
            code: Some(-11),
            message: "bad term".into(),
        };
        assert_eq!(backend(&invalid), Classification::permanent("InvalidRequest"));
        assert!(!backend(&unauthorized()).transient);
    }

    #[test]
    fn invalid_objects_and_specs_wait_for_a_change() {
        let invalid = Error::InvalidObject {
            object: "team/x".into(),
            message: "spec.dnsNames: invalid type".into(),
        };
        assert_eq!(reconcile(&invalid), Classification::permanent("InvalidObject"));
        let unsupported = IssuerError::Unsupported("exactly one of scm, nexus or ca must be set".into());
        assert_eq!(issuer(&unsupported), Classification::permanent(INVALID_SPEC));
        let failures = Failures::default();
        let key: ObjectKey = (Some("team".into()), "x".into());
        assert_eq!(failures.failed(key, reconcile(&invalid)), Retry::OnChange);
        assert!(failures.is_empty());
        assert_eq!(Action::from(Retry::OnChange), Action::await_change());
    }

    #[test]
    fn backoff_doubles_from_five_seconds_to_five_minutes_with_jitter() {
        for (failures, base) in [
            (1, 5.0),
            (2, 10.0),
            (3, 20.0),
            (6, 160.0),
            (7, 300.0),
            (1000, 300.0),
        ] {
            for _ in 0..50 {
                let wait = backoff(failures).as_secs_f64();
                assert!(
                    wait >= base * 0.8 - 1e-9 && wait <= base * 1.2 + 1e-9,
                    "failure {failures}: {wait}"
                );
            }
        }
    }

    #[test]
    fn transient_failures_back_off_per_object_and_success_resets() {
        let failures = Failures::default();
        let a: ObjectKey = (Some("team".into()), "a".into());
        let b: ObjectKey = (Some("team".into()), "b".into());
        let blip = kube(&api(503));
        let waits: Vec<Duration> = (0..3)
            .map(|_| match failures.failed(a.clone(), blip) {
                Retry::After(wait) => wait,
                Retry::OnChange => panic!("a 503 must be retried"),
            })
            .collect();
        assert!(waits[0] <= Duration::from_secs(6), "{waits:?}");
        assert!(waits[2] >= Duration::from_secs(16), "{waits:?}");
        // Another object starts from the first step.
        assert!(matches!(failures.failed(b.clone(), blip), Retry::After(w) if w <= Duration::from_secs(6)));
        assert_eq!(failures.len(), 2);
        failures.forget(&a);
        assert!(matches!(failures.failed(a.clone(), blip), Retry::After(w) if w <= Duration::from_secs(6)));
        // A CA's Retry-After is a floor.
        let slow_down = backend(&BackendError::RateLimited {
            backend: BackendKind::Scm,
            retry_after: Some(Duration::from_secs(900)),
        });
        assert_eq!(
            failures.failed(b.clone(), slow_down),
            Retry::After(Duration::from_secs(900))
        );
        // A permanent failure drops the entry: nothing is retried, nothing is kept.
        failures.failed(b, Classification::permanent("InvalidRequest"));
        failures.forget(&a);
        assert!(failures.is_empty());
    }

    #[test]
    fn error_chain_joins_sources() {
        let error = IssuerError::UpdateStatus(api(500));
        let chain = error_chain(&error);
        assert!(
            chain.starts_with("cannot update status: ApiError: injected"),
            "{chain}"
        );
    }
}
