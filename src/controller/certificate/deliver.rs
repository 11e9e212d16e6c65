//! Delivering: checking a certificate before it may be written, writing the Secret, recording the delivery, revoking the superseded one, and repairs.

use super::error::{DeliveryProblem, Error, kube_error};
use super::load::Observation;
use super::status::{RENEW_BEFORE_TOO_LONG, requeue_at};
use super::validate::{Renewal, ValidatedCertificate};
use super::{
    CLOCK_SKEW, ORDER_ANNOTATION, SERVED_RENEW_ANNOTATION, delivered_order, finalize, issuer_ref, now,
    publish, rfc3339, time,
};
use crate::backend::{BackendError, CaBackend, Collected, IssuedCertificate, OrderHandle};
use crate::controller::issuer::ResolvedIssuer;
use crate::controller::{Context, conditions};
use crate::crd::v1alpha1::Certificate;
use crate::crd::v1alpha1::certificate::{CertificateOrder, CertificateStatus};
use crate::pki::csr::build_csr;
use crate::pki::inspect;
use crate::pki::key::PrivateKey;
use crate::secret::SecretState;
use crate::{FIELD_MANAGER, secret};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

/// What `deliver` writes.
pub(super) struct Delivery<'a> {
    pub(super) key: &'a PrivateKey,
    pub(super) certificate: &'a IssuedCertificate,
    pub(super) renew_request: Option<&'a str>,
    /// A new certificate (revision, superseded revocation) rather than a repaired Secret.
    pub(super) new_issuance: bool,
}

/// Checks a certificate before it may be written: our key, the spec's names, a chain that
/// verifies, valid now, and — for a new issuance — not the certificate it replaces.
pub(super) fn check_delivery(
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
/// the result in status (then, for a new issuance, revokes the superseded certificate).
pub(super) async fn deliver(
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
        (issuer.target.name.clone(), issuer.target.kind.as_str())
    } else {
        delivered_order(status)
            .and_then(|o| o.issuer.as_ref())
            .map_or((issuer.target.name.clone(), issuer.target.kind.as_str()), |i| {
                (i.name.clone(), i.kind.as_str())
            })
    };
    let mut desired = secret::build(
        &name,
        &cert.uid().unwrap_or_default(),
        (&issuer_name, issuer_kind),
        (&spec.secret_name, spec.key_encoding),
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
    if delivery.new_issuance {
        let renewal = record_delivery(ctx, cert, spec, &info, status).await;
        return Ok(requeue_at(renewal.at, status));
    }
    let renewal = record_validity(spec, &info, status);
    {
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
    }
    Ok(requeue_at(renewal.at, status))
}

/// Records the validity of the certificate now in the Secret and clears the failure record.
fn record_validity(
    spec: &ValidatedCertificate,
    info: &inspect::CertificateInfo,
    status: &mut CertificateStatus,
) -> Renewal {
    let renewal = spec.renewal(info.not_before, info.not_after);
    status.not_before = time(info.not_before);
    status.not_after = time(info.not_after);
    status.renewal_time = time(renewal.at);
    status.failed_issuance_attempts = None;
    status.last_failure_time = None;
    status.last_failure_message = None;
    renewal
}

/// Records a new certificate written to the Secret from `status.order`: validity, the issuance
/// itself, and the revocation of the certificate it supersedes.
async fn record_delivery(
    ctx: &Context,
    cert: &Certificate,
    spec: &ValidatedCertificate,
    info: &inspect::CertificateInfo,
    status: &mut CertificateStatus,
) -> Renewal {
    let renewal = record_validity(spec, info, status);
    record_issuance(ctx, cert, info, renewal, status).await;
    revoke_superseded(ctx, cert, spec, &info.serial_hex, status).await;
    renewal
}

/// Records a delivery whose status write never happened: a crash, or a refused or failed write,
/// between writing the Secret and recording it. A paid order the CA issued at once is recorded
/// only by that write (it saves a write per issuance), so without this the Certificate would be
/// Ready with no order — never revoked on delete, never renewed by id, and its superseded
/// certificate never revoked. Returns whether a delivery was recorded (its next-key Secret is
/// then deleted once status is written).
///
/// The Secret's order annotation names the order; it is believed only when status records that
/// order as pending, or the CA confirms it: collecting that order at this issuer gives back the
/// very certificate in the Secret. Anyone who may edit Secrets in the namespace can write an
/// annotation, and an order id alone must never decide what the operator revokes.
pub(super) async fn adopt_unrecorded_delivery(
    cert: &Certificate,
    ctx: &Context,
    spec: &ValidatedCertificate,
    issuer: &ResolvedIssuer,
    observation: &Observation,
    status: &mut CertificateStatus,
) -> Result<bool, Error> {
    let (
        Some(secret),
        Some(key),
        SecretState::Owned {
            certificate: Some(info),
            key_matches: true,
            chain_verifies: true,
        },
    ) = (&observation.secret, &observation.key, &observation.state)
    else {
        return Ok(false);
    };
    let Some(id) = secret
        .annotations()
        .get(ORDER_ANNOTATION)
        .filter(|id| !id.is_empty())
        .cloned()
    else {
        return Ok(false);
    };
    if status.serial_number.as_deref() == Some(info.serial_hex.as_str()) {
        return Ok(false);
    }
    let recorded_pending = status
        .order
        .as_ref()
        .is_some_and(|o| o.state == "Pending" && o.id == id && issuer.placed(o));
    if !recorded_pending {
        let confirmed = confirm_at_ca(cert, spec, issuer, secret, key, &id).await?;
        if !confirmed {
            return Ok(false);
        }
        let csr = build_csr(key, &spec.subject).map_err(|e| Error::Key(e.to_string()))?;
        let adopted = CertificateOrder {
            backend: issuer.backend.kind().as_str().into(),
            id: id.clone(),
            renew_id: None,
            state: "Pending".into(),
            submitted_at: None,
            csr_sha256: crate::pki::chain::sha256_hex(&csr),
            issuer: Some(issuer.identity.clone()),
            serial_number: None,
        };
        match status.order.replace(adopted) {
            Some(old) if old.state == "Issued" && old.id != id => status.previous_order = Some(old),
            Some(old) if old.state == "Pending" => super::issue::abandon(ctx, cert, status, old).await,
            _ => {}
        }
    }
    tracing::info!(certificate = %cert.name_any(), order = %id, "recorded a delivery whose status write was lost");
    record_delivery(ctx, cert, spec, info, status).await;
    Ok(true)
}

/// Whether order `id` at `issuer` holds the certificate in `secret` (for the local `ca`, whose
/// orders are not kept anywhere: whether that CA signed the certificate).
async fn confirm_at_ca(
    cert: &Certificate,
    spec: &ValidatedCertificate,
    issuer: &ResolvedIssuer,
    secret: &Secret,
    key: &PrivateKey,
    id: &str,
) -> Result<bool, Error> {
    let Some((leaf_der, _)) = secret::certificates(secret) else {
        return Ok(false);
    };
    if let crate::backend::Backend::Ca(ca) = issuer.backend.as_ref() {
        return Ok(inspect::verify_chain(&leaf_der, &ca.chain_der()).is_ok());
    }
    let csr = build_csr(key, &spec.subject).map_err(|e| Error::Key(e.to_string()))?;
    let handle = OrderHandle {
        backend: issuer.backend.kind(),
        id: id.to_owned(),
        renew_id: None,
    };
    match issuer.backend.collect(&handle, &csr).await {
        Ok(Collected::Issued(delivered)) if delivered.leaf_der == leaf_der => Ok(true),
        Ok(other) => {
            tracing::warn!(certificate = %cert.name_any(), order = %id, answer = ?collected_kind(&other), "the Secret names an order whose certificate is not the one it holds; not recording it");
            Ok(false)
        }
        Err(BackendError::NotFound { .. }) => {
            tracing::warn!(certificate = %cert.name_any(), order = %id, "the Secret names an order the CA does not know; not recording it");
            Ok(false)
        }
        Err(source) => Err(Error::Backend {
            operation: "collect",
            source,
        }),
    }
}

/// What a collect answered, without the certificate bytes.
fn collected_kind(collected: &Collected) -> &'static str {
    match collected {
        Collected::Pending { .. } => "pending",
        Collected::Failed { .. } => "failed",
        Collected::Issued(_) => "another certificate",
    }
}

/// Records a new certificate in status: the order issued, serial, revision, conditions and the
/// lifecycle Events.
async fn record_issuance(
    ctx: &Context,
    cert: &Certificate,
    info: &inspect::CertificateInfo,
    renewal: Renewal,
    status: &mut CertificateStatus,
) {
    let generation = cert.meta().generation;
    let not_after = rfc3339(info.not_after);
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
}

/// Revokes the certificate a new one replaces (when the policy says so) through the issuer
/// that issued it, and forgets it either way.
async fn revoke_superseded(
    ctx: &Context,
    cert: &Certificate,
    spec: &ValidatedCertificate,
    new_serial: &str,
    status: &mut CertificateStatus,
) {
    // The certificate this one replaces is revoked through the issuer that issued it.
    if let Some(old) = status.previous_order.take()
        && spec.revoke_superseded
        && old.serial_number.as_deref() != Some(new_serial)
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
}

/// Rewrites a damaged Secret from the current order, without ordering again: collecting an
/// issued order is free, a new order is not. `Ok(None)` means the order can never give back a
/// certificate for the key still in the Secret (revoked, expired, another key): only then does
/// the caller issue anew. A pending, missing or unreadable answer is an error with backoff —
/// never a reason to order again.
pub(super) async fn repair(
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
            return Err(impossible(crate::controller::errors::error_chain(&source)));
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
pub(super) async fn write_secret(
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
