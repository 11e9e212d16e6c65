//! The Certificate controller: a short driver over named phases.
//!
//! `validate` (pure) → resolve the issuer → observe the Secret → `plan` (pure) → issue: persist
//! the key and CSR in the "next key" Secret *before* ordering, order, persist the order in
//! status *at once*, collect, verify, write the TLS Secret, then clean up. A crash at any point
//! resumes from what was persisted; a crash between ordering and the status write is resolved by
//! `find_existing_order`, never by a second order.

pub mod finalize;
pub mod issuer_ref;
pub mod plan;
pub mod policy;
pub mod validate;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::{Event, EventType},
    },
};

use self::{
    issuer_ref::ResolvedIssuer,
    plan::{IssueReason, Observed, Plan, SecretState},
    validate::{Renewal, ValidatedCertificate, validate},
};
use super::{Context, conditions};
use crate::{
    FIELD_MANAGER,
    backend::credentials::SecretString,
    backend::{BackendError, BackendKind, CaBackend, Collected, EnrollRequest, IssuedCertificate},
    crd::v1alpha1::{
        Certificate,
        certificate::{CertificateOrder, CertificateStatus},
    },
    pki::{csr::build_csr, inspect, key::PrivateKey},
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
/// Annotation on the TLS Secret: the order its certificate came from. A crash between writing
/// the Secret and recording the delivery in status is recognised by it.
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

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("cannot {action}")]
    Kube {
        /// What we tried.
        action: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// A CA call failed.
    #[error("{operation} at the CA failed")]
    Backend {
        /// Our operation.
        operation: &'static str,
        /// Cause.
        #[source]
        source: BackendError,
    },
    /// The CA will never issue this order (declined, rejected, issued for another key, ...).
    #[error("order {order} failed: {reason}")]
    OrderFailed {
        /// The CA's order id.
        order: String,
        /// Why, in the CA's words or ours.
        reason: String,
    },
    /// The certificate the CA delivered cannot be used.
    #[error("the certificate of order {order} was rejected: {problem}")]
    Delivery {
        /// The CA's order id (empty when rewriting outputs from the Secret).
        order: String,
        /// What is wrong with it.
        problem: DeliveryProblem,
    },
    /// The issued certificate does not match what was asked for.
    #[error("the issued certificate was rejected: {0}")]
    Verification(String),
    /// The Secret cannot be repaired from the order without a new order.
    #[error(
        "the Secret cannot be repaired from order {order}: {reason}; annotate the Certificate with {RENEW_ANNOTATION}=<any new value> to order a new certificate"
    )]
    RepairImpossible {
        /// The CA's order id.
        order: String,
        /// Why.
        reason: String,
    },
    /// Key or CSR handling failed.
    #[error("cannot prepare the key or CSR: {0}")]
    Key(String),
    /// The issuer cannot be used (missing, not ready, unreadable Secrets).
    #[error("the issuer cannot be used: {0}")]
    IssuerUnavailable(String),
    /// A failure already recorded in status, with the backoff persisted there: the runner
    /// counts it under its own reason and requeues after `retry`.
    #[error("{source}")]
    Recorded {
        /// The failure.
        source: Box<Error>,
        /// The persisted backoff (or the CA's Retry-After when longer).
        retry: Duration,
    },
}

/// What is wrong with a delivered certificate.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryProblem {
    /// It cannot be parsed.
    #[error("it cannot be read: {0}")]
    Unreadable(String),
    /// It carries another public key than ours (e.g. a CA that renewed with the first CSR).
    #[error("its public key is not the key of this order's CSR")]
    KeyMismatch,
    /// Its names differ from the spec.
    #[error("{0}")]
    NamesDiffer(String),
    /// Its chain does not verify.
    #[error("its chain does not verify: {0}")]
    ChainInvalid(String),
    /// It expired already.
    #[error("it expired at {0}")]
    Expired(String),
    /// It is not valid yet (beyond the tolerated clock skew).
    #[error("it is not valid before {0}")]
    NotYetValid(String),
    /// The CA handed back the certificate being replaced.
    #[error("the CA returned the certificate being replaced (serial {0}) instead of a new one")]
    SameCertificate(String),
}

impl DeliveryProblem {
    /// Whether collecting the order again can never help: the order is failed and the next
    /// attempt (after the backoff) starts a fresh enrollment. Names and chains are left to the
    /// backoff: a new order would most likely come back the same, and collecting is free.
    pub fn ends_order(&self) -> bool {
        matches!(
            self,
            Self::KeyMismatch | Self::Expired(_) | Self::SameCertificate(_)
        )
    }
}

impl Error {
    /// Condition reason, Event reason and metric label ([`super::errors::certificate`]).
    pub fn category(&self) -> &'static str {
        super::errors::certificate(self).reason
    }
}

fn kube_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

fn backend_error(operation: &'static str) -> impl FnOnce(BackendError) -> Error {
    move |source| Error::Backend { operation, source }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn time(seconds: i64) -> Option<Time> {
    jiff::Timestamp::from_second(seconds).ok().map(Time)
}

fn rfc3339(seconds: i64) -> String {
    time(seconds).map(|t| t.0.to_string()).unwrap_or_default()
}

/// Backoff after `attempts` consecutive failures: 5 s doubling to 10 min, ±20% jitter.
pub fn backoff(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.clamp(1, 10) - 1).unwrap_or(0);
    let base = Duration::from_secs(5)
        .saturating_mul(2u32.pow(exponent))
        .min(Duration::from_secs(600));
    base.mul_f64(0.8 + fastrand::f64() * 0.4)
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

/// Reconciles one Certificate.
// The driver reads top to bottom through the phases; each phase's work lives in its own fn.
#[allow(clippy::too_many_lines)]
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
        return Ok(Action::await_change());
    };
    let generation = cert.meta().generation;
    let old_status = cert.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    status.observed_generation = generation;

    if cert.meta().deletion_timestamp.is_some() {
        return finalize::finalize(&cert, &ctx, &certs).await;
    }

    let spec = match validate(&cert.spec) {
        Ok(spec) => spec,
        Err(message) => {
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                "InvalidSpec",
                message,
                generation,
            );
            conditions::set(
                &mut status.conditions,
                "Issuing",
                false,
                "InvalidSpec",
                "the spec is invalid",
                generation,
            );
            write_status(&certs, &name, &old_status, &status).await?;
            return Ok(Action::await_change());
        }
    };
    ensure_finalizer(&cert, &certs, spec.revoke_on_delete.is_some()).await?;

    // A spec change resets the backoff; otherwise honour the persisted one (survives restarts).
    let spec_changed = old_status.observed_generation != generation;
    if spec_changed {
        status.failed_issuance_attempts = None;
        status.last_failure_time = None;
    } else if let (Some(attempts), Some(failed_at)) =
        (old_status.failed_issuance_attempts, &old_status.last_failure_time)
    {
        let due = failed_at.0.as_second() + i64::try_from(backoff(attempts).as_secs()).unwrap_or(600);
        if attempts > 0 && now() < due {
            return Ok(Action::requeue(Duration::from_secs((due - now()).unsigned_abs())));
        }
    }

    let issuer_ref = &cert.spec.issuer_ref;
    let issuer = match issuer_ref::resolve_spec(&ctx, issuer_ref.kind, &issuer_ref.name, &namespace).await {
        Ok(issuer) => issuer,
        Err(unusable) => {
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                "IssuerNotReady",
                unusable.message(),
                generation,
            );
            write_status(&certs, &name, &old_status, &status).await?;
            return Ok(Action::requeue(ISSUER_WAIT));
        }
    };
    // The issuer's policy decides before any CA call whether it serves this namespace and
    // these names; a violation waits for a change of the Certificate or the issuer (both watched).
    if let Err(violation) = policy::check_optional(issuer.policy.as_ref(), &namespace, &spec.subject) {
        let message = violation.to_string();
        conditions::set(
            &mut status.conditions,
            "Ready",
            false,
            "PolicyViolation",
            message.clone(),
            generation,
        );
        conditions::set(
            &mut status.conditions,
            "Issuing",
            false,
            "PolicyViolation",
            "no order is placed while the issuer's policy refuses the request",
            generation,
        );
        if write_status(&certs, &name, &old_status, &status).await? {
            publish(&ctx, &cert, EventType::Warning, "PolicyViolation", &message).await;
        }
        return Ok(Action::await_change());
    }
    settle_abandoned(&cert, &ctx, &mut status).await;

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = secrets
        .get_opt(&spec.secret_name)
        .await
        .map_err(kube_error("read the output Secret"))?;
    let uid = cert.uid().unwrap_or_default();
    let (secret_state, existing_key) = secret::observe(existing.as_ref(), &uid);
    let renew_request = cert.annotations().get(RENEW_ANNOTATION).cloned();
    let served = existing
        .as_ref()
        .and_then(|s| s.annotations().get(SERVED_RENEW_ANNOTATION).cloned());
    let password = match pkcs12_password(&cert, &ctx, &namespace).await {
        Ok(password) => password,
        Err(message) => {
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                "KeystorePasswordMissing",
                message,
                generation,
            );
            write_status(&certs, &name, &old_status, &status).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let formats: Vec<_> = cert
        .spec
        .additional_output_formats
        .iter()
        .map(|f| f.format)
        .collect();
    let outputs = secret::Outputs {
        template: cert.spec.secret_template.as_ref(),
        formats: &formats,
        pkcs12_password: password.as_ref().map(SecretString::expose),
    };
    // A crash (or a failed status write) between writing the Secret and recording the delivery
    // leaves the order Pending in status: the Secret's order annotation says it was delivered.
    if let (
        Some(order),
        SecretState::Owned {
            certificate: Some(info),
            key_matches: true,
            ..
        },
    ) = (status.order.as_mut(), &secret_state)
        && order.state == "Pending"
        && existing
            .as_ref()
            .and_then(|s| s.annotations().get(ORDER_ANNOTATION))
            .is_some_and(|id| *id == order.id)
    {
        order.state = "Issued".into();
        order.serial_number = Some(info.serial_hex.clone());
        status.serial_number = Some(info.serial_hex.clone());
        status.previous_order = None;
        status.next_private_key_secret_name = None;
    }
    // The certificate in the Secret came from this order; an issuer other than the one
    // `issuerRef` names now means a new issuance (orders without a recorded issuer predate the
    // record and are left alone until their renewal).
    let delivered = delivered_order(&status).cloned();
    let issuer_changed = delivered
        .as_ref()
        .and_then(|o| o.issuer.as_ref())
        .is_some_and(|i| !issuer_ref::same_reference(i, &issuer.identity));
    let observed = Observed {
        now: now(),
        spec: &spec,
        key_algorithm_matches: existing_key
            .as_ref()
            .is_none_or(|k| k.algorithm() == spec.key_algorithm),
        manual_renewal: renew_request.is_some() && renew_request != served,
        secret: secret_state.clone(),
        outputs_complete: existing
            .as_ref()
            .is_some_and(|s| secret::has_outputs(s, &outputs)),
        repairable: existing_key.is_some()
            && status
                .order
                .as_ref()
                .is_some_and(|o| o.state == "Issued" && issuer.placed(o)),
        issuer_changed,
    };
    let plan = plan::plan(&observed);
    if matches!(plan, Plan::UpToDate { .. } | Plan::RewriteOutputs)
        && let Some(pending) = status.order.clone().filter(|o| o.state == "Pending")
    {
        // An issuance whose reason went away (the issuerRef or the spec was changed back)
        // while its order was pending: the order is never delivered, so it is revoked once
        // issued instead of being forgotten.
        status.order = delivered_order(&status).cloned();
        if status.previous_order == status.order {
            status.previous_order = None;
        }
        status.next_private_key_secret_name = None;
        abandon(&ctx, &cert, &mut status, pending).await;
    }
    let result = match plan {
        Plan::SecretConflict => {
            mark_conflict(&mut status, &spec.secret_name, generation);
            if write_status(&certs, &name, &old_status, &status).await? {
                let note = "the output Secret belongs to someone else";
                publish(&ctx, &cert, EventType::Warning, "SecretConflict", note).await;
            }
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        Plan::UpToDate { renewal } => {
            mark_up_to_date(&mut status, &secret_state, renewal, generation);
            Ok(requeue_at(renewal.at, &status))
        }
        Plan::RewriteOutputs => {
            let issued = existing.as_ref().and_then(secret::certificates);
            match (issued, existing_key.as_ref()) {
                (Some((leaf_der, chain_der)), Some(key)) => {
                    let certificate = IssuedCertificate { leaf_der, chain_der };
                    let delivery = Delivery {
                        key,
                        certificate: &certificate,
                        renew_request: served.as_deref(),
                        new_issuance: false,
                    };
                    deliver(&cert, &ctx, &spec, &issuer, &outputs, &delivery, &mut status).await
                }
                _ => Err(Error::Key("the Secret changed while it was read".into())),
            }
        }
        Plan::Repair => {
            let key = existing_key
                .as_ref()
                .ok_or_else(|| Error::Key("no key to repair with".into()))?;
            match repair(
                &cert,
                &ctx,
                &spec,
                &issuer,
                key,
                (&outputs, served.as_deref()),
                &mut status,
            )
            .await
            {
                Ok(Some(action)) => Ok(action),
                // The order's certificate is revoked or no longer matches: issue a new one.
                Ok(None) => {
                    issue(
                        &cert,
                        &ctx,
                        &spec,
                        &issuer,
                        IssueReason::Damaged,
                        existing_key,
                        renew_request,
                        &outputs,
                        &mut status,
                    )
                    .await
                }
                Err(error) => Err(error),
            }
        }
        Plan::Issue(reason) => {
            issue(
                &cert,
                &ctx,
                &spec,
                &issuer,
                reason,
                existing_key,
                renew_request,
                &outputs,
                &mut status,
            )
            .await
        }
    };
    let action = match result {
        Ok(action) => action,
        Err(error) => {
            let (message, retry) = record_failure(&mut status, &error, &secret_state, generation);
            write_status(&certs, &name, &old_status, &status).await?;
            publish(&ctx, &cert, EventType::Warning, error.category(), &message).await;
            return Err(Error::Recorded {
                source: Box::new(error),
                retry,
            });
        }
    };
    write_status(&certs, &name, &old_status, &status).await?;
    // The delivery is recorded now; only then may its key's copy in the next-key Secret go (a
    // crash before this point finds the key in both and the order annotation on the Secret).
    if old_status.next_private_key_secret_name.is_some() && status.next_private_key_secret_name.is_none() {
        discard_pending_key(&cert, &ctx, &mut status).await?;
    }
    Ok(action)
}

/// Requeue at `at` (Unix seconds), at most [`MAX_RESYNC`] from now, and within
/// [`ABANDONED_RETRY`] while abandoned orders wait to be revoked.
fn requeue_at(at: i64, status: &CertificateStatus) -> Action {
    let mut wait = Duration::from_secs((at - now()).max(1).unsigned_abs()).min(MAX_RESYNC);
    if !status.abandoned_orders.is_empty() {
        wait = wait.min(ABANDONED_RETRY);
    }
    Action::requeue(wait)
}

/// The PKCS#12 password when keystores are requested.
async fn pkcs12_password(
    cert: &Certificate,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<SecretString>, String> {
    let Some(pkcs12) = cert
        .spec
        .keystores
        .as_ref()
        .and_then(|k| k.pkcs12.as_ref())
        .filter(|p| p.create)
    else {
        return Ok(None);
    };
    let reference = &pkcs12.password_secret_ref;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = secrets
        .get_opt(&reference.name)
        .await
        .map_err(|e| format!("cannot read Secret {}: {e}", reference.name))?
        .ok_or_else(|| {
            format!(
                "keystores.pkcs12.passwordSecretRef: Secret {} not found",
                reference.name
            )
        })?;
    let value = secret
        .data
        .and_then(|d| d.get(&reference.key).cloned())
        .and_then(|v| String::from_utf8(v.0).ok())
        .ok_or_else(|| {
            format!(
                "keystores.pkcs12.passwordSecretRef: Secret {} has no key {:?}",
                reference.name, reference.key
            )
        })?;
    Ok(Some(SecretString::new(value)))
}

fn mark_conflict(status: &mut CertificateStatus, secret_name: &str, generation: Option<i64>) {
    let message = format!(
        "Secret {secret_name} exists and is not owned by this Certificate; delete or rename it, or change spec.secretName"
    );
    conditions::set(
        &mut status.conditions,
        "Ready",
        false,
        "SecretConflict",
        message,
        generation,
    );
    let waiting = "waiting for the Secret name to be free";
    conditions::set(
        &mut status.conditions,
        "Issuing",
        false,
        "SecretConflict",
        waiting,
        generation,
    );
}

fn mark_up_to_date(
    status: &mut CertificateStatus,
    secret: &SecretState,
    renewal: Renewal,
    generation: Option<i64>,
) {
    if let SecretState::Owned {
        certificate: Some(info),
        ..
    } = secret
    {
        status.not_before = time(info.not_before);
        status.not_after = time(info.not_after);
        status.serial_number = Some(info.serial_hex.clone());
    }
    status.renewal_time = time(renewal.at);
    status.failed_issuance_attempts = None;
    status.last_failure_time = None;
    status.last_failure_message = None;
    let message = if renewal.renew_before_too_long {
        RENEW_BEFORE_TOO_LONG.to_owned()
    } else {
        "the certificate is up to date".to_owned()
    };
    conditions::set(
        &mut status.conditions,
        "Ready",
        true,
        "Ready",
        message,
        generation,
    );
    conditions::set(
        &mut status.conditions,
        "Issuing",
        false,
        "UpToDate",
        "no issuance in progress",
        generation,
    );
}

/// Said in the Ready condition and a Warning event when `renewBefore` had to be overridden.
const RENEW_BEFORE_TOO_LONG: &str = "the certificate is up to date; renewBefore is not shorter than the lifetime the CA issued, so it is renewed at two thirds of that lifetime (shorten renewBefore or use renewBeforePercentage)";

/// Records a failed attempt in status (so the backoff survives restarts); returns the message
/// and how long to wait: the backoff, or the CA's Retry-After when longer.
fn record_failure(
    status: &mut CertificateStatus,
    error: &Error,
    secret: &SecretState,
    generation: Option<i64>,
) -> (String, Duration) {
    let attempts = status.failed_issuance_attempts.unwrap_or(0) + 1;
    let message = conditions::truncate(super::errors::error_chain(error), MAX_FAILURE_MESSAGE);
    status.failed_issuance_attempts = Some(attempts);
    status.last_failure_time = Some(Time(jiff::Timestamp::now()));
    status.last_failure_message = Some(message.clone());
    // Ready stays True while the current Secret is still good (e.g. a failed renewal).
    conditions::set(
        &mut status.conditions,
        "Ready",
        secret_ready(secret),
        error.category(),
        message.clone(),
        generation,
    );
    let retry_after = match error {
        Error::Backend { source, .. } => source.retry_after(),
        _ => None,
    };
    (
        message,
        retry_after.map_or(backoff(attempts), |hint| hint.max(backoff(attempts))),
    )
}

fn secret_ready(state: &SecretState) -> bool {
    matches!(
        state,
        SecretState::Owned {
            certificate: Some(_),
            key_matches: true,
            chain_verifies: true
        }
    )
}

fn next_key_secret_name(certificate: &str) -> String {
    let mut name = format!("{certificate}-next-key");
    name.truncate(253);
    name
}

fn enroll_request(spec: &ValidatedCertificate, csr_der: Vec<u8>) -> EnrollRequest {
    EnrollRequest {
        csr_der,
        common_name: spec.subject.common_name.clone(),
        dns_names: spec.subject.dns_names.clone(),
        ip_addresses: spec.subject.ip_addresses.clone(),
        email_addresses: spec.subject.email_addresses.clone(),
        uris: spec.subject.uris.clone(),
        lifetime: Some(spec.duration),
        options: spec.options.clone(),
        csr_created_at: None,
        known_orders: Vec::new(),
    }
}

/// A pending key and CSR.
struct PendingKey {
    key: PrivateKey,
    csr_der: Vec<u8>,
    /// Made by this call: no order can exist for it yet.
    fresh: bool,
    /// When the CSR was made (its Secret's creation); no order for it can be older.
    created_at: jiff::Timestamp,
}

/// Loads the pending key and CSR, or makes and persists them.
async fn pending_key(
    cert: &Certificate,
    ctx: &Context,
    spec: &ValidatedCertificate,
    reuse: Option<PrivateKey>,
) -> Result<PendingKey, Error> {
    let namespace = cert.namespace().unwrap_or_default();
    let name = next_key_secret_name(&cert.name_any());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = cert.uid().unwrap_or_default();
    let fingerprint = spec.csr_fingerprint();
    if let Some(existing) = secrets
        .get_opt(&name)
        .await
        .map_err(kube_error("read the next-key Secret"))?
    {
        let owned = secret::is_controlled_by(&existing.metadata, &uid);
        let data = existing.data.clone().unwrap_or_default();
        let key = data
            .get("tls.key")
            .and_then(|k| String::from_utf8(k.0.clone()).ok())
            .and_then(|p| PrivateKey::from_pem(&p).ok());
        let csr = data.get("csr.der").map(|c| c.0.clone());
        let recorded = existing.annotations().get(FINGERPRINT_ANNOTATION);
        let same_spec = recorded == Some(&fingerprint) || recorded == Some(&spec.legacy_csr_fingerprint());
        if let (true, true, Some(key), Some(csr_der)) = (owned, same_spec, key, csr) {
            let created_at = existing
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or_else(jiff::Timestamp::now, |t| t.0);
            return Ok(PendingKey {
                key,
                csr_der,
                fresh: false,
                created_at,
            });
        }
        if !owned {
            return Err(Error::Key(format!(
                "Secret {name} exists and is not owned by this Certificate"
            )));
        }
        secrets
            .delete(&name, &DeleteParams::default())
            .await
            .map_err(kube_error("replace the stale next-key Secret"))?;
    }
    let reusable = reuse.filter(|k| spec.reuse_key && k.algorithm() == spec.key_algorithm);
    let key = if let Some(key) = reusable {
        key
    } else {
        let algorithm = spec.key_algorithm;
        // RSA generation takes a while; keep it off the async workers.
        tokio::task::spawn_blocking(move || PrivateKey::generate(algorithm))
            .await
            .map_err(|e| Error::Key(e.to_string()))?
            .map_err(|e| Error::Key(e.to_string()))?
    };
    let created_at = jiff::Timestamp::now();
    let csr = build_csr(&key, &spec.subject).map_err(|e| Error::Key(e.to_string()))?;
    let pem = key
        .to_pem(crate::pki::key::KeyEncoding::Pkcs8)
        .map_err(|e| Error::Key(e.to_string()))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            owner_references: Some(vec![secret::owner_reference(&cert.name_any(), &uid)]),
            labels: Some([(secret::CERTIFICATE_NAME_LABEL.to_owned(), cert.name_any())].into()),
            annotations: Some([(FINGERPRINT_ANNOTATION.to_owned(), fingerprint)].into()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            [
                ("tls.key".to_owned(), ByteString(pem.expose().as_bytes().to_vec())),
                ("csr.der".to_owned(), ByteString(csr.clone())),
            ]
            .into(),
        ),
        ..Secret::default()
    };
    // Create, never apply: if a Secret of that name appeared meanwhile we must not adopt it.
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .map_err(kube_error("persist the next private key"))?;
    Ok(PendingKey {
        key,
        csr_der: csr,
        fresh: true,
        created_at,
    })
}

/// Discards the pending key (after its order failed), so the next attempt enrolls a new CSR.
async fn discard_pending_key(
    cert: &Certificate,
    ctx: &Context,
    status: &mut CertificateStatus,
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &cert.namespace().unwrap_or_default());
    match secrets
        .delete(&next_key_secret_name(&cert.name_any()), &DeleteParams::default())
        .await
    {
        Ok(_) => {
            status.next_private_key_secret_name = None;
            Ok(())
        }
        Err(kube::Error::Api(response)) if response.code == 404 => {
            status.next_private_key_secret_name = None;
            Ok(())
        }
        Err(e) => Err(kube_error("delete the next-key Secret")(e)),
    }
}

/// Records an order that can no longer be delivered (its key is gone, or the spec moved on
/// while it was pending), so it is revoked once issued instead of being forgotten.
async fn abandon(ctx: &Context, cert: &Certificate, status: &mut CertificateStatus, order: CertificateOrder) {
    let note = format!(
        "{} can no longer be delivered (its pending key was replaced or deleted); it will be revoked once issued",
        issuer_ref::describe(&order)
    );
    publish(ctx, cert, EventType::Warning, "OrderAbandoned", &note).await;
    if status.abandoned_orders.len() >= MAX_ABANDONED {
        let dropped = status.abandoned_orders.remove(0);
        let note = format!(
            "too many abandoned orders: {} is no longer tracked; revoke it at the CA if it was issued",
            issuer_ref::describe(&dropped)
        );
        publish(ctx, cert, EventType::Warning, "RevokeSkipped", &note).await;
    }
    status.abandoned_orders.push(order);
}

/// Tries to revoke each abandoned order through the issuer that placed it. Orders not issued
/// yet stay; revoked ones, and ones that can never be revoked (issuer gone, permanent error,
/// too old), leave the list with an event saying which.
async fn settle_abandoned(cert: &Certificate, ctx: &Context, status: &mut CertificateStatus) {
    if status.abandoned_orders.is_empty() {
        status.abandoned_orders_checked_at = None;
        return;
    }
    let youngest = status
        .abandoned_orders
        .iter()
        .filter_map(|o| o.submitted_at.as_ref().map(|t| now() - t.0.as_second()))
        .min()
        .unwrap_or(0);
    let interval = if youngest < 3600 {
        ABANDONED_FAST
    } else {
        ABANDONED_SLOW
    };
    if status
        .abandoned_orders_checked_at
        .as_ref()
        .is_some_and(|t| now() - t.0.as_second() < interval)
    {
        return;
    }
    status.abandoned_orders_checked_at = Some(Time(jiff::Timestamp::now()));
    let mut kept = Vec::new();
    for order in std::mem::take(&mut status.abandoned_orders) {
        let age = order.submitted_at.as_ref().map_or(0, |t| now() - t.0.as_second());
        match finalize::revoke_order(
            ctx,
            &order,
            crate::backend::RevocationReason::CessationOfOperation,
        )
        .await
        {
            finalize::Revocation::Revoked => {
                let note = format!("abandoned {} revoked", issuer_ref::describe(&order));
                publish(ctx, cert, EventType::Normal, "Revoked", &note).await;
            }
            finalize::Revocation::NothingToRevoke => {}
            finalize::Revocation::NotYet(_) | finalize::Revocation::Failed(_) if age < ABANDONED_GIVE_UP => {
                kept.push(order);
            }
            finalize::Revocation::NotYet(why)
            | finalize::Revocation::Failed(why)
            | finalize::Revocation::Impossible(why) => {
                let note = format!(
                    "abandoned {} was not revoked: {why}; revoke it at the CA if it was issued",
                    issuer_ref::describe(&order)
                );
                publish(ctx, cert, EventType::Warning, "RevokeSkipped", &note).await;
            }
        }
    }
    if kept.is_empty() {
        status.abandoned_orders_checked_at = None;
    }
    status.abandoned_orders = kept;
}

#[allow(clippy::too_many_arguments, clippy::too_many_lines)]
async fn issue(
    cert: &Certificate,
    ctx: &Context,
    spec: &ValidatedCertificate,
    issuer: &ResolvedIssuer,
    reason: IssueReason,
    existing_key: Option<PrivateKey>,
    renew_request: Option<String>,
    outputs: &secret::Outputs<'_>,
    status: &mut CertificateStatus,
) -> Result<Action, Error> {
    let generation = cert.meta().generation;
    let namespace = cert.namespace().unwrap_or_default();
    let name = cert.name_any();
    let certs: Api<Certificate> = Api::namespaced(ctx.client.clone(), &namespace);
    let backend = &issuer.backend;
    let pending = pending_key(cert, ctx, spec, existing_key).await?;
    let mut request = enroll_request(spec, pending.csr_der.clone());
    request.csr_created_at = Some(pending.created_at);
    // Orders already accounted for (delivered, failed, abandoned) are never "recovered": with
    // a reused RSA or Ed25519 key the CSR is byte-identical to the last issuance's.
    request.known_orders = plan::known_orders(status, &issuer.identity, backend.kind().as_str());
    let csr_sha = request.csr_sha256_hex();
    status.next_private_key_secret_name = Some(next_key_secret_name(&name));

    // Only a pending order placed through this issuer for this very CSR is resumed; an issued
    // order is finished (resuming it would deliver the old certificate again).
    let current = status
        .order
        .clone()
        .filter(|o| plan::resumable(o, &csr_sha, &issuer.identity, backend.kind().as_str()));
    let order = if let Some(order) = current {
        issuer.handle(&order)
    } else {
        // The key existed before this reconcile: a previous run may have ordered and died
        // before recording it. Look for that order before placing one.
        let found = if pending.fresh {
            None
        } else {
            backend
                .find_existing_order(&request)
                .await
                .map_err(backend_error("find an existing order"))?
        };
        let handle = if let Some(handle) = found {
            tracing::info!(certificate = %name, order = %handle.id, "recovered an order placed before a restart");
            handle
        } else {
            let renewal = matches!(reason, IssueReason::Renewal | IssueReason::Manual);
            // SCM renews an issued order with renewById (the new sslId comes back at once),
            // only through the issuer that placed it; otherwise a renewal is a new enrollment.
            let previous = status.order.clone().filter(|o| {
                renewal && o.state == "Issued" && issuer.placed(o) && backend.kind() == BackendKind::Scm
            });
            match previous {
                Some(previous) => match backend.renew(&issuer.handle(&previous), &request).await {
                    // The CA answered that it will not renew this order this way — it cannot
                    // with a new key (InCommon reuses the old CSR), no longer knows the order,
                    // or refuses its state — so no order was placed: enroll instead. A timeout
                    // or 5xx is *not* such an answer (the renewal may have been placed) and
                    // goes to the backoff; the next attempt finds that order by its CSR.
                    Err(
                        refused @ (BackendError::Unsupported { .. }
                        | BackendError::NotFound { .. }
                        | BackendError::InvalidRequest { .. }),
                    ) => {
                        tracing::info!(certificate = %name, order = %previous.id, reason = %refused, "renewal by id refused; enrolling instead");
                        backend.enroll(&request).await.map_err(backend_error("enroll"))?
                    }
                    other => other.map_err(backend_error("renew"))?,
                },
                None => backend.enroll(&request).await.map_err(backend_error("enroll"))?,
            }
        };
        // What becomes of the order being replaced.
        // The same order found again (same id at this issuer, or an order recorded without its
        // issuer that this issuer's search returned) is not replaced; an equal id at another
        // issuer is another order.
        let same_order = |o: &CertificateOrder| o.id == handle.id && (o.issuer.is_none() || issuer.placed(o));
        if let Some(old) = status.order.take().filter(|o| !same_order(o)) {
            match plan::replaced(&old, status.serial_number.is_some()) {
                plan::Replaced::Superseded => status.previous_order = Some(old),
                plan::Replaced::Abandoned => abandon(ctx, cert, status, old).await,
                plan::Replaced::Finished => {}
            }
        }
        status.order = Some(CertificateOrder {
            backend: backend.kind().as_str().into(),
            id: handle.id.clone(),
            renew_id: handle.renew_id.clone(),
            state: "Pending".into(),
            submitted_at: Some(Time(jiff::Timestamp::now())),
            csr_sha256: csr_sha.clone(),
            issuer: Some(issuer.identity.clone()),
            serial_number: None,
        });
        conditions::set(
            &mut status.conditions,
            "Issuing",
            true,
            reason.as_str(),
            format!("order {} placed with {} {}", handle.id, issuer.kind, issuer.name),
            generation,
        );
        // Persist the order id at once: this write is what prevents a second order.
        let empty = CertificateStatus::default();
        write_status(&certs, &name, &empty, status).await?;
        publish(
            ctx,
            cert,
            EventType::Normal,
            "OrderPlaced",
            &format!("order {} placed ({})", handle.id, reason.as_str()),
        )
        .await;
        handle
    };

    match backend
        .collect(&order, &pending.csr_der)
        .await
        .map_err(backend_error("collect"))?
    {
        Collected::Pending { detail } => {
            conditions::set(
                &mut status.conditions,
                "Issuing",
                true,
                "Pending",
                format!("order {} is pending: {detail}", order.id),
                generation,
            );
            if !conditions::is_true(&status.conditions, "Ready") {
                conditions::set(
                    &mut status.conditions,
                    "Ready",
                    false,
                    "Pending",
                    format!("waiting for order {}", order.id),
                    generation,
                );
            }
            Ok(Action::requeue(issuer.poll_interval))
        }
        Collected::Failed { reason: why } => {
            fail_order(cert, ctx, status).await?;
            Err(Error::OrderFailed {
                order: order.id.clone(),
                reason: why,
            })
        }
        Collected::Issued(delivered) => {
            let delivery = Delivery {
                key: &pending.key,
                certificate: &delivered,
                renew_request: renew_request.as_deref(),
                new_issuance: true,
            };
            match deliver(cert, ctx, spec, issuer, outputs, &delivery, status).await {
                Err(error @ Error::Delivery { .. }) => {
                    if let Error::Delivery { problem, .. } = &error
                        && problem.ends_order()
                    {
                        fail_order(cert, ctx, status).await?;
                    }
                    Err(error)
                }
                other => other,
            }
        }
    }
}

/// Marks the current order failed: it is never collected or recovered again, and its pending
/// key is discarded so the next attempt (after the backoff) is a fresh enrollment.
async fn fail_order(cert: &Certificate, ctx: &Context, status: &mut CertificateStatus) -> Result<(), Error> {
    if let Some(o) = status.order.as_mut() {
        o.state = "Failed".into();
    }
    discard_pending_key(cert, ctx, status).await
}

/// What `deliver` writes.
struct Delivery<'a> {
    key: &'a PrivateKey,
    certificate: &'a IssuedCertificate,
    renew_request: Option<&'a str>,
    /// A new certificate (revision, superseded revocation) rather than a repaired Secret.
    new_issuance: bool,
}

/// Checks a certificate before it may be written: our key, the spec's names, a chain that
/// verifies, valid now, and — for a new issuance — not the certificate it replaces.
fn check_delivery(
    spec: &ValidatedCertificate,
    delivery: &Delivery<'_>,
    current_serial: Option<&str>,
    now: i64,
) -> Result<inspect::CertificateInfo, DeliveryProblem> {
    let issued = delivery.certificate;
    let info = inspect::inspect(&issued.leaf_der).map_err(|e| DeliveryProblem::Unreadable(e.to_string()))?;
    let public = delivery
        .key
        .public_key_der()
        .map_err(|e| DeliveryProblem::Unreadable(e.to_string()))?;
    if info.public_key_der != public {
        return Err(DeliveryProblem::KeyMismatch);
    }
    if !info.names_match(&spec.subject) {
        return Err(DeliveryProblem::NamesDiffer(format!(
            "the certificate names (CN {:?}, DNS {:?}, IP {:?}) differ from the spec",
            info.common_name, info.dns_names, info.ip_addresses
        )));
    }
    inspect::verify_chain(&issued.leaf_der, &issued.chain_der)
        .map_err(|e| DeliveryProblem::ChainInvalid(e.to_string()))?;
    if info.not_after <= now {
        return Err(DeliveryProblem::Expired(rfc3339(info.not_after)));
    }
    if info.not_before > now + CLOCK_SKEW {
        return Err(DeliveryProblem::NotYetValid(rfc3339(info.not_before)));
    }
    if delivery.new_issuance && current_serial == Some(info.serial_hex.as_str()) {
        return Err(DeliveryProblem::SameCertificate(info.serial_hex));
    }
    Ok(info)
}

/// Verifies an issued certificate against the key and spec, writes the Secret, and records
/// the result in status.
// Verify → write → record → revoke-superseded reads best as one sequence.
#[allow(clippy::too_many_lines)]
async fn deliver(
    cert: &Certificate,
    ctx: &Context,
    spec: &ValidatedCertificate,
    issuer: &ResolvedIssuer,
    outputs: &secret::Outputs<'_>,
    delivery: &Delivery<'_>,
    status: &mut CertificateStatus,
) -> Result<Action, Error> {
    let generation = cert.meta().generation;
    let namespace = cert.namespace().unwrap_or_default();
    let name = cert.name_any();
    let issued = delivery.certificate;
    let order_id = status.order.as_ref().map(|o| o.id.clone()).unwrap_or_default();
    let info = check_delivery(spec, delivery, status.serial_number.as_deref(), now()).map_err(|problem| {
        Error::Delivery {
            order: order_id.clone(),
            problem,
        }
    })?;
    let not_after = rfc3339(info.not_after);
    let material = secret::TlsMaterial {
        leaf_der: &issued.leaf_der,
        chain_der: &issued.chain_der,
        key: delivery.key,
        info: &info,
    };
    // The Secret names the issuer of the certificate it holds.
    let (issuer_name, issuer_kind) = if delivery.new_issuance {
        (issuer.name.clone(), issuer.kind)
    } else {
        delivered_order(status).and_then(|o| o.issuer.as_ref()).map_or(
            (issuer.name.clone(), issuer.kind),
            |i| {
                let kind = match i.kind {
                    crate::crd::v1alpha1::common::IssuerKind::Issuer => "Issuer",
                    crate::crd::v1alpha1::common::IssuerKind::ClusterIssuer => "ClusterIssuer",
                };
                (i.name.clone(), kind)
            },
        )
    };
    let mut desired = secret::build(
        &name,
        &cert.uid().unwrap_or_default(),
        (&issuer_name, issuer_kind),
        spec,
        outputs,
        &material,
        &not_after,
    )
    .map_err(|e| Error::Key(e.to_string()))?;
    if let Some(request) = delivery.renew_request {
        desired
            .annotations_mut()
            .insert(SERVED_RENEW_ANNOTATION.to_owned(), request.to_owned());
    }
    let delivered_from = if delivery.new_issuance {
        Some(order_id.clone())
    } else {
        delivered_order(status).map(|o| o.id.clone())
    };
    if let Some(id) = delivered_from.filter(|id| !id.is_empty()) {
        desired.annotations_mut().insert(ORDER_ANNOTATION.to_owned(), id);
    }
    write_secret(ctx, &namespace, cert, desired, outputs).await?;
    let renewal = spec.renewal(info.not_before, info.not_after);
    status.not_before = time(info.not_before);
    status.not_after = time(info.not_after);
    status.renewal_time = time(renewal.at);
    status.failed_issuance_attempts = None;
    status.last_failure_time = None;
    status.last_failure_message = None;
    if !delivery.new_issuance {
        let message = format!(
            "Secret {} rewritten from the certificate it holds or its order, without a new order",
            spec.secret_name
        );
        conditions::set(
            &mut status.conditions,
            "Ready",
            true,
            "Repaired",
            message.clone(),
            generation,
        );
        publish(ctx, cert, EventType::Normal, "Repaired", &message).await;
        return Ok(requeue_at(renewal.at, status));
    }
    // The next-key Secret is deleted by the caller once this is recorded in status.
    status.next_private_key_secret_name = None;
    status.serial_number = Some(info.serial_hex.clone());
    status.revision = Some(status.revision.unwrap_or(0) + 1);
    if let Some(o) = status.order.as_mut() {
        o.state = "Issued".into();
        o.serial_number = Some(info.serial_hex.clone());
    }
    let message = format!("certificate {} issued, valid until {not_after}", info.serial_hex);
    let ready_message = if renewal.renew_before_too_long {
        format!("{message}; {RENEW_BEFORE_TOO_LONG}")
    } else {
        message.clone()
    };
    conditions::set(
        &mut status.conditions,
        "Ready",
        true,
        "Issued",
        ready_message,
        generation,
    );
    conditions::set(
        &mut status.conditions,
        "Issuing",
        false,
        "Issued",
        "no issuance in progress",
        generation,
    );
    publish(ctx, cert, EventType::Normal, "Issued", &message).await;
    if renewal.renew_before_too_long {
        let note = format!(
            "the CA issued {}s of validity, not longer than renewBefore: renewing at two thirds of it ({})",
            info.not_after - info.not_before,
            rfc3339(renewal.at)
        );
        publish(ctx, cert, EventType::Warning, "RenewBeforeTooLong", &note).await;
    }
    // The certificate this one replaces is revoked through the issuer that issued it.
    if let Some(old) = status.previous_order.take()
        && spec.revoke_superseded
        && old.serial_number.as_deref() != Some(info.serial_hex.as_str())
    {
        let (type_, reason, note) =
            match finalize::revoke_order(ctx, &old, crate::backend::RevocationReason::Superseded).await {
                finalize::Revocation::Revoked => (
                    EventType::Normal,
                    "Revoked",
                    format!("superseded {} revoked", issuer_ref::describe(&old)),
                ),
                finalize::Revocation::NothingToRevoke => (
                    EventType::Normal,
                    "Superseded",
                    format!("superseded {} needs no revocation", issuer_ref::describe(&old)),
                ),
                finalize::Revocation::NotYet(why)
                | finalize::Revocation::Failed(why)
                | finalize::Revocation::Impossible(why) => (
                    EventType::Warning,
                    "RevokeFailed",
                    format!(
                        "could not revoke superseded {}: {why}",
                        issuer_ref::describe(&old)
                    ),
                ),
            };
        publish(ctx, cert, type_, reason, &note).await;
    }
    Ok(requeue_at(renewal.at, status))
}

/// Rewrites a damaged Secret from the current order, without ordering again: collecting an
/// issued order is free, a new order is not. `Ok(None)` means the order can never give back a
/// certificate for the key still in the Secret (revoked, expired, another key): only then does
/// the caller issue anew. A pending, missing or unreadable answer is an error with backoff —
/// never a reason to order again.
async fn repair(
    cert: &Certificate,
    ctx: &Context,
    spec: &ValidatedCertificate,
    issuer: &ResolvedIssuer,
    key: &PrivateKey,
    (outputs, served): (&secret::Outputs<'_>, Option<&str>),
    status: &mut CertificateStatus,
) -> Result<Option<Action>, Error> {
    let Some(order) = status
        .order
        .clone()
        .filter(|o| o.state == "Issued" && issuer.placed(o))
    else {
        return Ok(None);
    };
    // Collect picks the leaf by public key; a CSR rebuilt from the key carries the same one.
    let csr = build_csr(key, &spec.subject).map_err(|e| Error::Key(e.to_string()))?;
    let impossible = |reason: String| Error::RepairImpossible {
        order: order.id.clone(),
        reason,
    };
    let delivered = match issuer.backend.collect(&issuer.handle(&order), &csr).await {
        Ok(Collected::Issued(delivered)) => delivered,
        Ok(Collected::Failed { .. }) => return Ok(None),
        Ok(Collected::Pending { detail }) => {
            return Err(impossible(format!("the CA says it is pending: {detail}")));
        }
        Err(source @ (BackendError::NotFound { .. } | BackendError::MalformedResponse { .. })) => {
            return Err(impossible(super::errors::error_chain(&source)));
        }
        Err(source) => {
            return Err(Error::Backend {
                operation: "collect",
                source,
            });
        }
    };
    let delivery = Delivery {
        key,
        certificate: &delivered,
        renew_request: served,
        new_issuance: false,
    };
    match deliver(cert, ctx, spec, issuer, outputs, &delivery, status).await {
        Ok(action) => Ok(Some(action)),
        Err(Error::Delivery { problem, .. }) if problem.ends_order() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the TLS Secret with server-side apply, one field manager from the first write, so a
/// dropped output (format, keystore, template label) disappears on the next write. Creating
/// applies without `force`: a Secret someone else created meanwhile conflicts on its fields
/// (or its immutable type) instead of being adopted. An owned Secret is applied with `force`.
async fn write_secret(
    ctx: &Context,
    namespace: &str,
    cert: &Certificate,
    desired: Secret,
    outputs: &secret::Outputs<'_>,
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = desired.name_any();
    let force = match secrets
        .get_opt(&name)
        .await
        .map_err(kube_error("read the output Secret"))?
    {
        None => false,
        Some(existing) if secret::is_controlled_by(&existing.metadata, &cert.uid().unwrap_or_default()) => {
            true
        }
        Some(_) => {
            return Err(Error::Verification(format!(
                "Secret {name} was created by someone else; not overwriting it"
            )));
        }
    };
    let mut body = serde_json::to_value(&desired).map_err(|e| Error::Key(e.to_string()))?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = force;
    let written = secrets
        .patch(&name, &params, &Patch::Apply(&body))
        .await
        .map_err(kube_error(format!("write Secret {name}")))?;
    // Secrets created by operator versions 0.1.x (POST) keep those keys under another
    // field manager entry, which apply does not remove: drop stale outputs explicitly.
    let stale = secret::stale_keys(&written, outputs);
    if !stale.is_empty() {
        let nulls: serde_json::Map<String, serde_json::Value> = stale
            .iter()
            .map(|k| ((*k).to_owned(), serde_json::Value::Null))
            .collect();
        let patch = serde_json::json!({"data": nulls});
        secrets
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_error(format!("remove dropped outputs from Secret {name}")))?;
    }
    Ok(())
}

/// Writes status when it changed. Returns whether a write happened.
async fn write_status(
    api: &Api<Certificate>,
    name: &str,
    old: &CertificateStatus,
    new: &CertificateStatus,
) -> Result<bool, Error> {
    if old == new {
        return Ok(false);
    }
    let body = serde_json::json!({
        "apiVersion": "pki-operator.io/v1alpha1",
        "kind": "Certificate",
        "status": new,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(kube_error("update status"))?;
    Ok(true)
}

async fn ensure_finalizer(cert: &Certificate, api: &Api<Certificate>, wanted: bool) -> Result<(), Error> {
    let finalizers = cert.finalizers();
    let has = finalizers.iter().any(|f| f == FINALIZER);
    if has == wanted {
        return Ok(());
    }
    let mut list: Vec<String> = finalizers.iter().filter(|f| *f != FINALIZER).cloned().collect();
    if wanted {
        list.push(FINALIZER.to_owned());
    }
    let patch =
        serde_json::json!({"metadata": {"finalizers": list, "resourceVersion": cert.resource_version()}});
    api.patch(&cert.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_error("update finalizers"))?;
    Ok(())
}

pub(crate) async fn publish(ctx: &Context, cert: &Certificate, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1024).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &cert.object_ref(&())).await {
        tracing::debug!(%error, "cannot publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
