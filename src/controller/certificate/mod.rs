//! The Certificate controller: a short driver over named phases, one file each.
//!
//! `load` admits the Certificate (`validate` — pure —, the persisted backoff, the issuer
//! `issuerRef` names and its `policy`) and observes the output Secret → [`plan`] (pure) decides
//! → `issue` persists the key and CSR in the "next key" Secret *before* ordering, places or
//! resumes exactly one order through one issuer and records it in status *at once*, and collects
//! → `deliver` verifies, writes the TLS Secret and records the delivery (only then does the
//! next-key Secret go) → `status` writes the outcome. [`finalize`] revokes on deletion through
//! the issuer that placed the order ([`issuer_ref`]). A crash at any point resumes from what was
//! persisted; a crash between ordering and the status write is resolved by
//! `find_existing_order`, never by a second order.
//! `metrics` keeps the Certificate's Prometheus series in step with the status it reads.

mod deliver;
mod error;
pub mod finalize;
mod issue;
pub mod issuer_ref;
mod load;
mod metrics;
pub mod plan;
pub mod policy;
mod status;
pub mod validate;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{controller::Action, events::EventType},
};

pub use self::error::{DeliveryProblem, Error};
use self::{
    deliver::{Delivery, deliver, repair},
    error::kube_error,
    issue::{abandon_unneeded_order, discard_pending_key, issue, settle_abandoned},
    load::{Admission, Observation, admit, observe},
    status::{mark_conflict, mark_up_to_date, record_failure, requeue_at, write_status},
};
use self::{
    plan::{IssueReason, Plan},
    validate::ValidatedCertificate,
};
use super::{Context, conditions, issuer::ResolvedIssuer};
use crate::{
    backend::IssuedCertificate,
    crd::v1alpha1::{
        Certificate,
        certificate::{CertificateOrder, CertificateStatus},
    },
    secret,
};

/// Finalizer holding deletion until the certificate is revoked (revoke-on-delete policy).
pub const FINALIZER: &str = "pki-operator.io/revoke-on-delete";
/// Annotation escape hatch: delete without revoking.
pub const SKIP_REVOKE_ANNOTATION: &str = "pki-operator.io/skip-revoke";
/// Annotation requesting a renewal now (any new value triggers one, like `cmctl renew`).
pub const RENEW_ANNOTATION: &str = "pki-operator.io/renew";
/// Annotation on the next-key Secret recording which renewal request it serves.
const SERVED_RENEW_ANNOTATION: &str = "pki-operator.io/renew-served";
/// Annotation on the TLS Secret: the order its certificate came from. A crash or a lost status
/// write between writing the Secret and recording the delivery is recognised by it, and the
/// order recorded once the CA confirms it (`deliver::adopt_unrecorded_delivery`).
const ORDER_ANNOTATION: &str = "pki-operator.io/order-id";
/// Annotation on the next-key Secret: the CSR fingerprint it was made for.
const FINGERPRINT_ANNOTATION: &str = "pki-operator.io/csr-fingerprint";
/// Longest sleep between reconciles of a healthy certificate.
const MAX_RESYNC: Duration = Duration::from_secs(8 * 3600);
/// Re-check cadence while the issuer is not ready.
const ISSUER_WAIT: Duration = Duration::from_secs(10);
/// Re-check cadence while abandoned orders wait to be revoked.
const ABANDONED_RETRY: Duration = Duration::from_secs(60);
/// Revocation attempts of abandoned orders: at most every minute while the youngest is less
/// than an hour old, then every 15 minutes (bounded CA calls for orders that never issue).
const ABANDONED_FAST: i64 = 60;
const ABANDONED_SLOW: i64 = 900;
/// Abandoned orders kept in status at most (the CRD schema says the same).
const MAX_ABANDONED: usize = 10;
/// An abandoned order not revocable within this long is reported and forgotten.
const ABANDONED_GIVE_UP: i64 = 7 * 86_400;
/// Tolerated clock difference with the CA when checking a new certificate's `notBefore`.
const CLOCK_SKEW: i64 = 300;
/// Longest `lastFailureMessage`, as for condition messages.
const MAX_FAILURE_MESSAGE: usize = 1024;

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn time(seconds: i64) -> Option<Time> {
    jiff::Timestamp::from_second(seconds).ok().map(Time)
}

fn rfc3339(seconds: i64) -> String {
    time(seconds).map(|t| t.0.to_string()).unwrap_or_default()
}

/// Longest persisted issuance backoff.
const MAX_ISSUANCE_BACKOFF: Duration = Duration::from_secs(600);

/// Backoff after `attempts` consecutive failed issuances: 5 s doubling to 10 min, ±20 % jitter
/// ([`super::backoff`]).
pub fn backoff(attempts: i32) -> Duration {
    super::backoff::exponential(attempts.max(1).unsigned_abs(), MAX_ISSUANCE_BACKOFF)
}

/// The order whose certificate is in the Secret now: the last order when it was delivered,
/// else the one before it (a newer issuance is in progress or failed).
pub fn delivered_order(status: &CertificateStatus) -> Option<&CertificateOrder> {
    status.serial_number.as_ref()?;
    status
        .order
        .as_ref()
        .filter(|o| o.state == "Issued")
        .or(status.previous_order.as_ref().filter(|o| o.state == "Issued"))
}

/// Reconciles one Certificate: read it fresh, admit it (spec, backoff, issuer, policy),
/// observe the Secret, plan, act, and record the outcome in status.
pub async fn reconcile(cached: Arc<Certificate>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let certs: Api<Certificate> = Api::namespaced(ctx.client.clone(), &namespace);
    // Read the object fresh: a reconcile triggered by our own Secret write can run before the
    // cache has seen our last status write, and a status computed from that stale copy would
    // undo it (revision, order state). One GET per reconcile is cheap; a lost order id is not.
    let Some(cert) = certs
        .get_opt(&name)
        .await
        .map_err(kube_error("read the Certificate"))?
    else {
        // Gone between the cache and this read: nothing renews it any more.
        metrics::forget(&ctx, &namespace, &name);
        return Ok(Action::await_change());
    };
    if cert.meta().deletion_timestamp.is_some() {
        // A Certificate being deleted is no longer renewed: its series go now, not after the
        // revocation the finalizer may wait for.
        metrics::forget(&ctx, &namespace, &name);
        return finalize::finalize(&cert, &ctx, &certs).await;
    }
    metrics::record(&ctx, &cert);
    let old_status = cert.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    status.observed_generation = cert.meta().generation;
    let (spec, issuer) = match admit(&cert, &ctx, &certs, &old_status, &mut status).await? {
        Admission::Proceed(admitted) => *admitted,
        Admission::Stop(action) => return Ok(action),
    };
    settle_abandoned(&cert, &ctx, &mut status).await;
    let (observation, sources) = match observe(&cert, &ctx, &spec).await? {
        Ok(observed) => observed,
        Err(missing_password) => {
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                "KeystorePasswordMissing",
                missing_password,
                cert.meta().generation,
            );
            write_status(&certs, &name, &old_status, &status).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let outputs = sources.outputs(&cert);
    let adopted =
        deliver::adopt_unrecorded_delivery(&cert, &ctx, &spec, &issuer, &observation, &mut status).await;
    let adopted = match adopted {
        Ok(adopted) => adopted,
        Err(error) => {
            let (message, retry) =
                record_failure(&mut status, &error, &observation.state, cert.meta().generation);
            write_status(&certs, &name, &old_status, &status).await?;
            publish(&ctx, &cert, EventType::Warning, error.category(), &message).await;
            return Err(Error::Recorded {
                source: Box::new(error),
                retry,
            });
        }
    };
    let plan = plan::plan(&observation.facts(&spec, &issuer, &outputs, &status));
    let secret_state = observation.state.clone();
    if matches!(plan, Plan::UpToDate { .. } | Plan::RewriteOutputs) {
        abandon_unneeded_order(&ctx, &cert, &mut status).await;
    }
    if plan == Plan::SecretConflict {
        mark_conflict(&mut status, &spec.secret_name, cert.meta().generation);
        if write_status(&certs, &name, &old_status, &status).await? {
            let note = "the output Secret belongs to someone else";
            publish(&ctx, &cert, EventType::Warning, "SecretConflict", note).await;
        }
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    let run = Run {
        cert: &cert,
        ctx: &ctx,
        spec: &spec,
        issuer: &issuer,
        outputs: &outputs,
        used_next_key: AtomicBool::new(adopted),
    };
    match act(&run, plan, observation, &mut status).await {
        Ok(action) => {
            write_status(&certs, &name, &old_status, &status).await?;
            // The delivery is recorded now; only then may its key's copy in the next-key
            // Secret go (a crash before this point finds the key in both, and the order
            // annotation on the Secret).
            let next_key_existed = old_status.next_private_key_secret_name.is_some()
                || run.used_next_key.load(Ordering::Relaxed);
            if next_key_existed && status.next_private_key_secret_name.is_none() {
                discard_pending_key(&cert, &ctx, &mut status).await?;
            }
            Ok(action)
        }
        Err(error) => {
            let (message, retry) = record_failure(&mut status, &error, &secret_state, cert.meta().generation);
            write_status(&certs, &name, &old_status, &status).await?;
            publish(&ctx, &cert, EventType::Warning, error.category(), &message).await;
            Err(Error::Recorded {
                source: Box::new(error),
                retry,
            })
        }
    }
}

/// What acting on a plan needs besides the status.
pub(super) struct Run<'a> {
    cert: &'a Certificate,
    ctx: &'a Context,
    spec: &'a ValidatedCertificate,
    issuer: &'a ResolvedIssuer,
    outputs: &'a secret::Outputs<'a>,
    /// Set when this run's issuance used the next-key Secret: once the status records the
    /// outcome without it, the Secret is deleted.
    used_next_key: AtomicBool,
}

/// Carries out the plan (other than a conflict, handled by the caller).
async fn act(
    run: &Run<'_>,
    plan: Plan,
    observation: Observation,
    status: &mut CertificateStatus,
) -> Result<Action, Error> {
    let &Run {
        cert,
        ctx,
        spec,
        issuer,
        outputs,
        ..
    } = run;
    let Observation {
        secret,
        state,
        key,
        renew_request,
        served,
    } = observation;
    match plan {
        Plan::SecretConflict => Ok(Action::requeue(Duration::from_secs(60))),
        Plan::UpToDate { renewal } => {
            mark_up_to_date(status, &state, renewal, cert.meta().generation);
            Ok(requeue_at(renewal.at, status))
        }
        Plan::RewriteOutputs => {
            let issued = secret.as_ref().and_then(secret::certificates);
            let (Some((leaf_der, chain_der)), Some(key)) = (issued, key.as_ref()) else {
                return Err(Error::Key("the Secret changed while it was read".into()));
            };
            let certificate = IssuedCertificate { leaf_der, chain_der };
            let delivery = Delivery {
                key,
                certificate: &certificate,
                renew_request: served.as_deref(),
                new_issuance: false,
            };
            deliver(cert, ctx, spec, issuer, outputs, &delivery, status).await
        }
        Plan::Repair => {
            let existing = key
                .as_ref()
                .ok_or_else(|| Error::Key("no key to repair with".into()))?;
            let repaired = repair(
                cert,
                ctx,
                spec,
                issuer,
                existing,
                (outputs, served.as_deref()),
                status,
            )
            .await?;
            if let Some(action) = repaired {
                return Ok(action);
            }
            // The order's certificate is revoked or no longer matches: issue a new one.
            issue(run, IssueReason::Damaged, key, renew_request, status).await
        }
        Plan::Issue(reason) => issue(run, reason, key, renew_request, status).await,
    }
}

async fn ensure_finalizer(cert: &Certificate, api: &Api<Certificate>, wanted: bool) -> Result<(), Error> {
    super::finalizer::ensure(api, cert, FINALIZER, wanted)
        .await
        .map_err(kube_error("update finalizers"))
}

/// An Event about `cert` ([`super::events`]).
pub(crate) async fn publish(ctx: &Context, cert: &Certificate, type_: EventType, reason: &str, note: &str) {
    ctx.events.publish(cert, type_, reason, note).await;
}

#[cfg(test)]
mod tests {
    use super::{
        deliver::{Delivery, check_delivery},
        plan::SecretState,
        status::record_failure,
        validate::validate,
        *,
    };
    use crate::{
        backend::{BackendError, BackendKind, IssuedCertificate},
        pki::key::PrivateKey,
    };

    #[test]
    fn backoff_doubles_from_five_seconds_to_ten_minutes_with_jitter() {
        for (attempts, base) in [(1, 5.0), (2, 10.0), (3, 20.0), (8, 600.0), (50, 600.0)] {
            for _ in 0..20 {
                let wait = backoff(attempts).as_secs_f64();
                assert!(
                    wait >= base * 0.8 - 1e-9 && wait <= base * 1.2 + 1e-9,
                    "attempt {attempts}: {wait}"
                );
            }
        }
    }

    #[test]
    fn failures_are_recorded_for_the_backoff_and_keep_ready_while_the_secret_is_good() {
        let mut status = CertificateStatus::default();
        let error = Error::Backend {
            operation: "enroll",
            source: BackendError::RateLimited {
                backend: BackendKind::Scm,
                retry_after: Some(Duration::from_secs(900)),
            },
        };
        let (message, wait) = record_failure(&mut status, &error, &SecretState::Missing, Some(1));
        assert_eq!(status.failed_issuance_attempts, Some(1));
        assert!(status.last_failure_time.is_some());
        assert!(message.contains("rate limiting"), "{message}");
        assert_eq!(
            wait,
            Duration::from_secs(900),
            "the CA's Retry-After wins over a shorter backoff"
        );
        assert!(!conditions::is_true(&status.conditions, "Ready"));
        let (_, wait) = record_failure(
            &mut status,
            &Error::Key("x".into()),
            &SecretState::Missing,
            Some(1),
        );
        assert_eq!(status.failed_issuance_attempts, Some(2));
        assert!(wait >= Duration::from_secs(8) && wait <= Duration::from_secs(12));
    }

    /// A leaf for `a.example.com` with `key`, valid from `not_before` to `not_after` (Unix
    /// seconds), signed by a throw-away root; returns the leaf and its chain.
    fn leaf(key: &PrivateKey, not_before: i64, not_after: i64, serial: u64) -> IssuedCertificate {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
        let mut root = CertificateParams::default();
        root.distinguished_name.push(DnType::CommonName, "root");
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let root_key = rcgen::KeyPair::generate().unwrap();
        let root = root.self_signed(&root_key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_der(root.der(), &root_key).unwrap();
        let mut params = CertificateParams::new(vec!["a.example.com".to_owned()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let leaf = params
            .signed_by(&crate::pki::csr::signer(key).unwrap(), &issuer)
            .unwrap();
        IssuedCertificate {
            leaf_der: leaf.der().to_vec(),
            chain_der: vec![root.der().to_vec()],
        }
    }

    fn spec() -> ValidatedCertificate {
        validate(&crate::crd::v1alpha1::certificate::CertificateSpec {
            secret_name: "a-tls".into(),
            issuer_ref: crate::crd::v1alpha1::common::IssuerRef {
                name: "ca".into(),
                ..Default::default()
            },
            dns_names: vec!["a.example.com".into()],
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn delivered_certificates_must_be_ours_valid_now_and_new() {
        let spec = spec();
        let key = PrivateKey::generate(crate::pki::key::KeyAlgorithm::EcdsaP256).unwrap();
        let now = 1_800_000_000;
        let good = leaf(&key, now - 60, now + 3600, 0x42);
        let delivery = |certificate| Delivery {
            key: &key,
            certificate,
            renew_request: None,
            new_issuance: true,
        };
        let info = check_delivery(&spec, &delivery(&good), Some("01"), now).unwrap();
        assert_eq!(info.serial_hex, "42");
        // Already expired: an error (with backoff), never a certificate due for renewal at once.
        let expired = leaf(&key, now - 7200, now - 60, 0x43);
        let problem = check_delivery(&spec, &delivery(&expired), None, now).unwrap_err();
        assert!(matches!(problem, DeliveryProblem::Expired(_)), "{problem}");
        assert!(problem.ends_order());
        // Not valid yet beyond the tolerated skew; a little skew is fine.
        let future = leaf(&key, now + 3600, now + 7200, 0x44);
        let problem = check_delivery(&spec, &delivery(&future), None, now).unwrap_err();
        assert!(matches!(problem, DeliveryProblem::NotYetValid(_)), "{problem}");
        assert!(!problem.ends_order(), "collect again later: it becomes valid");
        let skewed = leaf(&key, now + 30, now + 3600, 0x45);
        assert!(check_delivery(&spec, &delivery(&skewed), None, now).is_ok());
        // The certificate being renewed handed back as the renewal.
        let problem = check_delivery(&spec, &delivery(&good), Some("42"), now).unwrap_err();
        assert!(
            matches!(problem, DeliveryProblem::SameCertificate(_)),
            "{problem}"
        );
        assert!(problem.ends_order());
        // A repair rewrites the same certificate on purpose.
        let repair = Delivery {
            new_issuance: false,
            ..delivery(&good)
        };
        assert!(check_delivery(&spec, &repair, Some("42"), now).is_ok());
        // Another key (e.g. a CA that renewed with the first CSR).
        let other = PrivateKey::generate(crate::pki::key::KeyAlgorithm::EcdsaP256).unwrap();
        let foreign = leaf(&other, now - 60, now + 3600, 0x46);
        let problem = check_delivery(&spec, &delivery(&foreign), None, now).unwrap_err();
        assert!(matches!(problem, DeliveryProblem::KeyMismatch), "{problem}");
        assert!(problem.ends_order());
    }

    #[test]
    fn the_order_in_the_secret_is_the_last_delivered_one() {
        let issued = |id: &str| CertificateOrder {
            id: id.into(),
            state: "Issued".into(),
            ..CertificateOrder::default()
        };
        let mut status = CertificateStatus {
            serial_number: Some("01".into()),
            order: Some(issued("new")),
            previous_order: Some(issued("old")),
            ..CertificateStatus::default()
        };
        assert_eq!(delivered_order(&status).map(|o| o.id.as_str()), Some("new"));
        status.order.as_mut().unwrap().state = "Pending".into();
        assert_eq!(delivered_order(&status).map(|o| o.id.as_str()), Some("old"));
        status.serial_number = None;
        assert_eq!(
            delivered_order(&status),
            None,
            "no certificate, nothing to revoke"
        );
    }

    #[test]
    fn failure_messages_are_bounded_like_condition_messages() {
        let mut status = CertificateStatus::default();
        let error = Error::Key("x".repeat(10_000));
        let (message, _) = record_failure(&mut status, &error, &SecretState::Missing, Some(1));
        assert!(message.len() <= MAX_FAILURE_MESSAGE);
        assert!(status.last_failure_message.unwrap().len() <= MAX_FAILURE_MESSAGE);
    }
}
