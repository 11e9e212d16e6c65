//! The Certificate controller: a short driver over named phases.
//!
//! `validate` (pure) → resolve the issuer → observe the Secret → `plan` (pure) → issue: persist
//! the key and CSR in the "next key" Secret *before* ordering, order, persist the order in
//! status *at once*, collect, verify, write the TLS Secret, then clean up. A crash at any point
//! resumes from what was persisted; a crash between ordering and the status write is resolved by
//! `find_existing_order`, never by a second order.

pub mod plan;
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
    plan::{IssueReason, Observed, Plan, SecretState},
    validate::{ValidatedCertificate, validate},
};
use super::{Context, conditions, issuer};
use crate::{
    FIELD_MANAGER,
    backend::credentials::SecretString,
    backend::{
        Backend, BackendError, BackendKind, CaBackend, Collected, EnrollRequest, IssuedCertificate,
        OrderHandle, RevocationReason, RevokeTarget,
    },
    crd::v1alpha1::{
        Certificate, ClusterIssuer, Issuer,
        certificate::{CertificateOrder, CertificateStatus},
        common::IssuerKind,
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
/// Longest sleep between reconciles of a healthy certificate.
const MAX_RESYNC: Duration = Duration::from_secs(8 * 3600);
/// Re-check cadence while the issuer is not ready.
const ISSUER_WAIT: Duration = Duration::from_secs(10);

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
    /// The issued certificate does not match what was asked for.
    #[error("the issued certificate was rejected: {0}")]
    Verification(String),
    /// Key or CSR handling failed.
    #[error("cannot prepare the key or CSR: {0}")]
    Key(String),
    /// The issuer cannot be used (missing, not ready, unreadable Secrets).
    #[error("the issuer cannot be used: {0}")]
    IssuerUnavailable(String),
}

impl Error {
    /// Condition reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "KubernetesError",
            Self::Backend { source, .. } => source.category(),
            Self::Verification(_) => "VerificationFailed",
            Self::Key(_) => "KeyError",
            Self::IssuerUnavailable(_) => "IssuerNotReady",
        }
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

/// Backoff after `attempts` consecutive failures: 5 s doubling to 10 min, ±20% jitter.
pub fn backoff(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.clamp(1, 10) - 1).unwrap_or(0);
    let base = Duration::from_secs(5)
        .saturating_mul(2u32.pow(exponent))
        .min(Duration::from_secs(600));
    base.mul_f64(0.8 + fastrand::f64() * 0.4)
}

/// The resolved issuer of a certificate.
struct ResolvedIssuer {
    kind: &'static str,
    name: String,
    backend: Backend,
    poll_interval: Duration,
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
        return finalize(&cert, &ctx, &certs).await;
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

    let issuer = match resolve_issuer(&cert, &ctx, &namespace).await {
        Ok(issuer) => issuer,
        Err(message) => {
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                "IssuerNotReady",
                message,
                generation,
            );
            write_status(&certs, &name, &old_status, &status).await?;
            return Ok(Action::requeue(ISSUER_WAIT));
        }
    };

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
            && old_status
                .order
                .as_ref()
                .is_some_and(|o| o.state == "Issued" && o.backend == issuer.backend.kind().as_str()),
    };
    let mut plan = plan::plan(&observed);
    if plan == Plan::Repair {
        let key = existing_key
            .as_ref()
            .ok_or_else(|| Error::Key("no key to repair with".into()))?;
        match repair(&cert, &ctx, &spec, &issuer, key, &outputs, &mut status).await {
            Ok(Some(action)) => {
                write_status(&certs, &name, &old_status, &status).await?;
                return Ok(action);
            }
            // The order cannot give the certificate back: issue a new one.
            Ok(None) => plan = Plan::Issue(IssueReason::Damaged),
            Err(error) => {
                let (message, wait) = record_failure(&mut status, &error, &secret_state, generation);
                write_status(&certs, &name, &old_status, &status).await?;
                publish(&ctx, &cert, EventType::Warning, error.category(), &message).await;
                return Ok(Action::requeue(wait));
            }
        }
    }
    match plan {
        Plan::SecretConflict => {
            mark_conflict(&mut status, &spec.secret_name, generation);
            if write_status(&certs, &name, &old_status, &status).await? {
                let note = "the output Secret belongs to someone else";
                publish(&ctx, &cert, EventType::Warning, "SecretConflict", note).await;
            }
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        Plan::UpToDate { renewal_time } => {
            mark_up_to_date(&mut status, &secret_state, renewal_time, generation);
            write_status(&certs, &name, &old_status, &status).await?;
            let wait = Duration::from_secs((renewal_time - now()).max(1).unsigned_abs()).min(MAX_RESYNC);
            Ok(Action::requeue(wait))
        }
        Plan::Issue(_) | Plan::Repair => {
            // A Repair that fell through (the order could not give the certificate back) issues anew.
            let reason = if let Plan::Issue(reason) = plan {
                reason
            } else {
                IssueReason::Damaged
            };
            let result = issue(
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
            .await;
            match result {
                Ok(action) => {
                    write_status(&certs, &name, &old_status, &status).await?;
                    Ok(action)
                }
                Err(error) => {
                    let (message, wait) = record_failure(&mut status, &error, &secret_state, generation);
                    write_status(&certs, &name, &old_status, &status).await?;
                    publish(&ctx, &cert, EventType::Warning, error.category(), &message).await;
                    Ok(Action::requeue(wait))
                }
            }
        }
    }
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
    renewal_time: i64,
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
    status.renewal_time = time(renewal_time);
    status.failed_issuance_attempts = None;
    status.last_failure_time = None;
    status.last_failure_message = None;
    conditions::set(
        &mut status.conditions,
        "Ready",
        true,
        "Ready",
        "the certificate is up to date",
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

/// Records a failed attempt in status (so the backoff survives restarts); returns the message
/// and how long to wait: the backoff, or the CA's Retry-After when longer.
fn record_failure(
    status: &mut CertificateStatus,
    error: &Error,
    secret: &SecretState,
    generation: Option<i64>,
) -> (String, Duration) {
    let attempts = status.failed_issuance_attempts.unwrap_or(0) + 1;
    let message = crate::leader::error_chain(error);
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

async fn resolve_issuer(
    cert: &Certificate,
    ctx: &Context,
    namespace: &str,
) -> Result<ResolvedIssuer, String> {
    let name = cert.spec.issuer_ref.name.clone();
    let (kind, ready, parts) = match cert.spec.issuer_ref.kind {
        IssuerKind::Issuer => {
            let api: Api<Issuer> = Api::namespaced(ctx.client.clone(), namespace);
            let issuer = api
                .get_opt(&name)
                .await
                .map_err(|e| format!("cannot read Issuer {name}: {e}"))?
                .ok_or_else(|| format!("Issuer {name} not found in namespace {namespace}"))?;
            let ready = issuer_ready(issuer.status.as_ref().map(|s| s.conditions.as_slice()));
            (
                "Issuer",
                ready,
                (
                    issuer.spec.scm.clone(),
                    issuer.spec.nexus.clone(),
                    issuer.spec.ca.clone(),
                    namespace.to_owned(),
                ),
            )
        }
        IssuerKind::ClusterIssuer => {
            let api: Api<ClusterIssuer> = Api::all(ctx.client.clone());
            let issuer = api
                .get_opt(&name)
                .await
                .map_err(|e| format!("cannot read ClusterIssuer {name}: {e}"))?
                .ok_or_else(|| format!("ClusterIssuer {name} not found"))?;
            let ready = issuer_ready(issuer.status.as_ref().map(|s| s.conditions.as_slice()));
            (
                "ClusterIssuer",
                ready,
                (
                    issuer.spec.scm.clone(),
                    issuer.spec.nexus.clone(),
                    issuer.spec.ca.clone(),
                    ctx.cluster_resource_namespace.clone(),
                ),
            )
        }
    };
    ready.map_err(|why| format!("{kind} {name} is not ready: {why}"))?;
    let (scm, nexus, ca, secret_namespace) = parts;
    let issuer_parts = issuer::IssuerParts {
        scm: scm.as_ref(),
        nexus: nexus.as_ref(),
        ca: ca.as_ref(),
        secret_namespace,
    };
    let backend = issuer::build_backend(ctx, &issuer_parts)
        .await
        .map_err(|e| format!("{kind} {name}: {}", crate::leader::error_chain(&e)))?;
    Ok(ResolvedIssuer {
        kind,
        name,
        backend,
        poll_interval: issuer::poll_interval(scm.as_ref()),
    })
}

fn issuer_ready(
    conditions: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
) -> Result<(), String> {
    match conditions.and_then(|c| conditions::get(c, "Ready")) {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => Err(format!("{} ({})", c.message, c.reason)),
        None => Err("not checked yet".into()),
    }
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

/// A fingerprint of everything that goes into the CSR; a pending key whose CSR was built for
/// another spec is discarded.
fn csr_fingerprint(spec: &ValidatedCertificate) -> String {
    crate::backend::chain::sha256_hex(format!("{:?}|{}", spec.subject, spec.key_algorithm).as_bytes())
}

/// Loads the pending key and CSR, or makes and persists them. Returns whether they were created
/// by this call (then no order can exist for them yet) and when the CSR was made (its Secret's
/// creation), before which no order for it can exist.
async fn pending_key(
    cert: &Certificate,
    ctx: &Context,
    spec: &ValidatedCertificate,
    reuse: Option<PrivateKey>,
) -> Result<(PrivateKey, Vec<u8>, bool, jiff::Timestamp), Error> {
    let namespace = cert.namespace().unwrap_or_default();
    let name = next_key_secret_name(&cert.name_any());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = cert.uid().unwrap_or_default();
    let fingerprint = csr_fingerprint(spec);
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
        let same_spec = existing.annotations().get("pki-operator.io/csr-fingerprint") == Some(&fingerprint);
        if let (true, true, Some(key), Some(csr)) = (owned, same_spec, key, csr) {
            let created = existing
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or_else(jiff::Timestamp::now, |t| t.0);
            return Ok((key, csr, false, created));
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
    let created = jiff::Timestamp::now();
    let csr = build_csr(&key, &spec.subject).map_err(|e| Error::Key(e.to_string()))?;
    let pem = key
        .to_pem(crate::pki::key::KeyEncoding::Pkcs8)
        .map_err(|e| Error::Key(e.to_string()))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            owner_references: Some(vec![secret::owner_reference(&cert.name_any(), &uid)]),
            labels: Some([(secret::CERTIFICATE_NAME_LABEL.to_owned(), cert.name_any())].into()),
            annotations: Some([("pki-operator.io/csr-fingerprint".to_owned(), fingerprint)].into()),
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
    Ok((key, csr, true, created))
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
    let (key, csr_der, fresh, csr_created_at) = pending_key(cert, ctx, spec, existing_key).await?;
    let mut request = enroll_request(spec, csr_der.clone());
    request.csr_created_at = Some(csr_created_at);
    let csr_sha = request.csr_sha256_hex();
    status.next_private_key_secret_name = Some(next_key_secret_name(&name));

    let current = status
        .order
        .clone()
        .filter(|o| o.csr_sha256 == csr_sha && o.backend == backend.kind().as_str() && o.state != "Failed");
    let order = if let Some(order) = current {
        OrderHandle {
            backend: backend.kind(),
            id: order.id.clone(),
            renew_id: order.renew_id.clone(),
        }
    } else {
        // The key existed before this reconcile: a previous run may have ordered and died
        // before recording it. Look for that order before placing one.
        let found = if fresh {
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
            // SCM renews an issued order with renewById (the new sslId comes back at once);
            // otherwise, and for other backends, a renewal is a new enrollment.
            let previous = status.order.clone().filter(|o| {
                renewal
                    && o.state == "Issued"
                    && o.backend == backend.kind().as_str()
                    && backend.kind() == BackendKind::Scm
            });
            if let Some(previous) = previous {
                let previous = OrderHandle {
                    backend: backend.kind(),
                    id: previous.id,
                    renew_id: previous.renew_id,
                };
                backend
                    .renew(&previous, &request)
                    .await
                    .map_err(backend_error("renew"))?
            } else {
                backend.enroll(&request).await.map_err(backend_error("enroll"))?
            }
        };
        status.order = Some(CertificateOrder {
            backend: backend.kind().as_str().into(),
            id: handle.id.clone(),
            renew_id: handle.renew_id.clone(),
            state: "Pending".into(),
            submitted_at: Some(Time(jiff::Timestamp::now())),
            csr_sha256: csr_sha.clone(),
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
        .collect(&order, &csr_der)
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
            if let Some(o) = status.order.as_mut() {
                o.state = "Failed".into();
            }
            Err(Error::Backend {
                operation: "collect",
                source: BackendError::InvalidRequest {
                    backend: backend.kind(),
                    code: None,
                    message: why,
                },
            })
        }
        Collected::Issued(delivered) => {
            let delivery = Delivery {
                key: &key,
                certificate: &delivered,
                renew_request: renew_request.as_deref(),
                new_issuance: true,
            };
            deliver(cert, ctx, spec, issuer, outputs, &delivery, status).await
        }
    }
}

/// What `deliver` writes.
struct Delivery<'a> {
    key: &'a PrivateKey,
    certificate: &'a IssuedCertificate,
    renew_request: Option<&'a str>,
    /// A new certificate (revision, superseded revocation) rather than a repaired Secret.
    new_issuance: bool,
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
    let info = inspect::inspect(&issued.leaf_der).map_err(|e| Error::Verification(e.to_string()))?;
    let public = delivery
        .key
        .public_key_der()
        .map_err(|e| Error::Key(e.to_string()))?;
    if info.public_key_der != public {
        return Err(Error::Verification(
            "the certificate's public key is not the requested key".into(),
        ));
    }
    if !info.names_match(&spec.subject) {
        return Err(Error::Verification(format!(
            "the certificate names (CN {:?}, DNS {:?}, IP {:?}) differ from the spec",
            info.common_name, info.dns_names, info.ip_addresses
        )));
    }
    inspect::verify_chain(&issued.leaf_der, &issued.chain_der)
        .map_err(|e| Error::Verification(e.to_string()))?;
    let previous_serial = status.serial_number.clone();
    let not_after = time(info.not_after).map(|t| t.0.to_string()).unwrap_or_default();
    let material = secret::TlsMaterial {
        leaf_der: &issued.leaf_der,
        chain_der: &issued.chain_der,
        key: delivery.key,
        info: &info,
    };
    let mut desired = secret::build(
        &name,
        &cert.uid().unwrap_or_default(),
        (&issuer.name, issuer.kind),
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
    write_secret(ctx, &namespace, cert, desired).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    match secrets
        .delete(&next_key_secret_name(&name), &DeleteParams::default())
        .await
    {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => return Err(kube_error("delete the next-key Secret")(e)),
    }
    status.next_private_key_secret_name = None;
    status.not_before = time(info.not_before);
    status.not_after = time(info.not_after);
    status.renewal_time = time(spec.renewal_time(info.not_before, info.not_after));
    status.serial_number = Some(info.serial_hex.clone());
    if delivery.new_issuance {
        status.revision = Some(status.revision.unwrap_or(0) + 1);
    }
    if let Some(o) = status.order.as_mut() {
        o.state = "Issued".into();
    }
    status.failed_issuance_attempts = None;
    status.last_failure_time = None;
    status.last_failure_message = None;
    let (reason, message) = if delivery.new_issuance {
        (
            "Issued",
            format!("certificate {} issued, valid until {not_after}", info.serial_hex),
        )
    } else {
        (
            "Repaired",
            format!(
                "Secret {} rewritten from order without a new order",
                spec.secret_name
            ),
        )
    };
    conditions::set(
        &mut status.conditions,
        "Ready",
        true,
        reason,
        message.clone(),
        generation,
    );
    conditions::set(
        &mut status.conditions,
        "Issuing",
        false,
        reason,
        "no issuance in progress",
        generation,
    );
    publish(ctx, cert, EventType::Normal, reason, &message).await;
    if delivery.new_issuance
        && spec.revoke_superseded
        && let Some(old) = previous_serial.filter(|s| s != &info.serial_hex)
    {
        let target = RevokeTarget::Serial(old.clone());
        let (type_, reason, note) = match issuer.backend.revoke(&target, RevocationReason::Superseded).await {
            Ok(()) => (
                EventType::Normal,
                "Revoked",
                format!("superseded certificate {old} revoked"),
            ),
            Err(e) => (
                EventType::Warning,
                "RevokeFailed",
                format!("could not revoke superseded certificate {old}: {e}"),
            ),
        };
        publish(ctx, cert, type_, reason, &note).await;
    }
    let renewal = spec.renewal_time(info.not_before, info.not_after);
    Ok(Action::requeue(
        Duration::from_secs((renewal - now()).max(1).unsigned_abs()).min(MAX_RESYNC),
    ))
}

/// Rewrites a damaged or incomplete Secret from the current order, without ordering again:
/// collecting an issued order is free, a new order is not. Returns `None` when the order cannot
/// give back a certificate for the key still in the Secret; the caller then issues anew.
async fn repair(
    cert: &Certificate,
    ctx: &Context,
    spec: &ValidatedCertificate,
    issuer: &ResolvedIssuer,
    key: &PrivateKey,
    outputs: &secret::Outputs<'_>,
    status: &mut CertificateStatus,
) -> Result<Option<Action>, Error> {
    let backend = &issuer.backend;
    let Some(order) = status
        .order
        .clone()
        .filter(|o| o.state == "Issued" && o.backend == backend.kind().as_str())
    else {
        return Ok(None);
    };
    // Collect picks the leaf by public key; a CSR rebuilt from the key carries the same one.
    let csr = build_csr(key, &spec.subject).map_err(|e| Error::Key(e.to_string()))?;
    let handle = OrderHandle {
        backend: backend.kind(),
        id: order.id,
        renew_id: order.renew_id,
    };
    let delivered = match backend.collect(&handle, &csr).await {
        Ok(Collected::Issued(delivered)) => delivered,
        Ok(_) | Err(BackendError::NotFound { .. } | BackendError::MalformedResponse { .. }) => {
            return Ok(None);
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
        renew_request: None,
        new_issuance: false,
    };
    match deliver(cert, ctx, spec, issuer, outputs, &delivery, status).await {
        Ok(action) => Ok(Some(action)),
        Err(Error::Verification(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the TLS Secret: created when missing (fails if someone else created it meanwhile),
/// server-side applied when we own it.
async fn write_secret(
    ctx: &Context,
    namespace: &str,
    cert: &Certificate,
    desired: Secret,
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = desired.name_any();
    match secrets
        .get_opt(&name)
        .await
        .map_err(kube_error("read the output Secret"))?
    {
        None => {
            secrets
                .create(&PostParams::default(), &desired)
                .await
                .map_err(kube_error(format!("create Secret {name}")))?;
        }
        Some(existing) if secret::is_controlled_by(&existing.metadata, &cert.uid().unwrap_or_default()) => {
            let mut body = serde_json::to_value(&desired).map_err(|e| Error::Key(e.to_string()))?;
            body["apiVersion"] = "v1".into();
            body["kind"] = "Secret".into();
            secrets
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
                .map_err(kube_error(format!("update Secret {name}")))?;
        }
        Some(_) => {
            return Err(Error::Verification(format!(
                "Secret {name} was created by someone else; not overwriting it"
            )));
        }
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

/// Deletion: revoke when the policy says so, then release the finalizer. Failures are retried
/// with backoff; the `pki-operator.io/skip-revoke` annotation releases it without revoking.
async fn finalize(cert: &Certificate, ctx: &Context, api: &Api<Certificate>) -> Result<Action, Error> {
    if !cert.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let skip = cert
        .annotations()
        .get(SKIP_REVOKE_ANNOTATION)
        .is_some_and(|v| v == "true");
    let serial = cert.status.as_ref().and_then(|s| s.serial_number.clone());
    let reason = validate(&cert.spec)
        .ok()
        .and_then(|s| s.revoke_on_delete)
        .unwrap_or(RevocationReason::CessationOfOperation);
    if let (false, Some(serial)) = (skip, serial) {
        let namespace = cert.namespace().unwrap_or_default();
        let issuer = resolve_issuer(cert, ctx, &namespace)
            .await
            .map_err(Error::IssuerUnavailable);
        let result = match issuer {
            Ok(issuer) => {
                let target = cert
                    .status
                    .as_ref()
                    .and_then(|s| s.order.clone())
                    .filter(|o| o.state == "Issued" && o.backend == issuer.backend.kind().as_str())
                    .map_or(RevokeTarget::Serial(serial.clone()), |o| {
                        RevokeTarget::Order(OrderHandle {
                            backend: issuer.backend.kind(),
                            id: o.id,
                            renew_id: o.renew_id,
                        })
                    });
                issuer
                    .backend
                    .revoke(&target, reason)
                    .await
                    .map_err(backend_error("revoke"))
            }
            Err(e) => Err(e),
        };
        if let Err(error) = result {
            let message = format!(
                "{}; deletion waits for revocation (annotate with {SKIP_REVOKE_ANNOTATION}=true to delete without revoking)",
                crate::leader::error_chain(&error)
            );
            publish(ctx, cert, EventType::Warning, "RevokeFailed", &message).await;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        publish(
            ctx,
            cert,
            EventType::Normal,
            "Revoked",
            &format!("certificate {serial} revoked ({})", reason.name()),
        )
        .await;
    }
    ensure_finalizer(cert, api, false).await?;
    Ok(Action::await_change())
}

async fn publish(ctx: &Context, cert: &Certificate, type_: EventType, reason: &str, note: &str) {
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
}
