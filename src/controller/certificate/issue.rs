//! Issuing: the pending key persisted before any order, placing or resuming exactly one order, abandoned orders, and collecting.

use std::sync::atomic::Ordering;

use super::Run;
use super::deliver::{Delivery, deliver};
use super::error::{Error, backend_error, kube_error};
use super::plan::IssueReason;
use super::status::write_status;
use super::validate::ValidatedCertificate;
use super::{
    ABANDONED_FAST, ABANDONED_GIVE_UP, ABANDONED_SLOW, FINGERPRINT_ANNOTATION, MAX_ABANDONED,
    delivered_order, finalize, issuer_ref, now, plan, publish,
};
use crate::backend::OrderHandle;
use crate::backend::{BackendError, CaBackend, Collected, EnrollRequest};
use crate::controller::issuer::ResolvedIssuer;
use crate::controller::{Context, conditions};
use crate::crd::v1alpha1::Certificate;
use crate::crd::v1alpha1::certificate::{CertificateOrder, CertificateStatus};
use crate::pki::csr::build_csr;
use crate::pki::key::PrivateKey;
use crate::secret;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

pub(super) fn next_key_secret_name(certificate: &str) -> String {
    let mut name = format!("{certificate}-next-key");
    name.truncate(253);
    name
}

pub(super) fn enroll_request(spec: &ValidatedCertificate, csr_der: Vec<u8>) -> EnrollRequest {
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
pub(super) struct PendingKey {
    key: PrivateKey,
    csr_der: Vec<u8>,
    /// Made by this call: no order can exist for it yet.
    fresh: bool,
    /// When the CSR was made (its Secret's creation); no order for it can be older.
    created_at: jiff::Timestamp,
}

/// Loads the pending key and CSR, or makes and persists them.
pub(super) async fn pending_key(
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
    let key = match reusable {
        Some(key) => key,
        None => generate_key(spec).await?,
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

/// A new key of the spec's algorithm. RSA generation takes a while: off the async workers.
async fn generate_key(spec: &ValidatedCertificate) -> Result<PrivateKey, Error> {
    let algorithm = spec.key_algorithm;
    tokio::task::spawn_blocking(move || PrivateKey::generate(algorithm))
        .await
        .map_err(|e| Error::Key(e.to_string()))?
        .map_err(|e| Error::Key(e.to_string()))
}

/// The key and CSR of a local signing: reused or generated, never persisted before the Secret.
async fn local_key(spec: &ValidatedCertificate, reuse: Option<PrivateKey>) -> Result<PendingKey, Error> {
    let key = match reuse.filter(|k| spec.reuse_key && k.algorithm() == spec.key_algorithm) {
        Some(key) => key,
        None => generate_key(spec).await?,
    };
    let csr_der = build_csr(&key, &spec.subject).map_err(|e| Error::Key(e.to_string()))?;
    Ok(PendingKey {
        key,
        csr_der,
        fresh: true,
        created_at: jiff::Timestamp::now(),
    })
}

/// Discards the pending key (after its order failed), so the next attempt enrolls a new CSR.
pub(super) async fn discard_pending_key(
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
pub(super) async fn abandon(
    ctx: &Context,
    cert: &Certificate,
    status: &mut CertificateStatus,
    order: CertificateOrder,
) {
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
pub(super) async fn settle_abandoned(cert: &Certificate, ctx: &Context, status: &mut CertificateStatus) {
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

/// Obtains the certificate for the pending key: resumes the order in progress for it, or
/// places exactly one (after looking for one a crash may have left unrecorded), then collects.
pub(super) async fn issue(
    run: &Run<'_>,
    reason: IssueReason,
    existing_key: Option<PrivateKey>,
    renew_request: Option<String>,
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
    let backend = &issuer.backend;
    // Local signing has no order to lose: the key stays in memory until the Secret is written
    // (a crash only means signing again), saving the next-key Secret's create and delete.
    let local = backend.signs_locally();
    let pending = if local {
        local_key(spec, existing_key).await?
    } else {
        pending_key(cert, ctx, spec, existing_key).await?
    };
    let mut request = enroll_request(spec, pending.csr_der.clone());
    request.csr_created_at = Some(pending.created_at);
    // Orders already accounted for (delivered, failed, abandoned) are never "recovered": with
    // a reused RSA or Ed25519 key the CSR is byte-identical to the last issuance's.
    request.known_orders = plan::known_orders(status, &issuer.identity, backend.kind().as_str());
    if !local {
        status.next_private_key_secret_name = Some(next_key_secret_name(&cert.name_any()));
        run.used_next_key.store(true, Ordering::Relaxed);
    }
    // Only a pending order placed through this issuer for this very CSR is resumed; an issued
    // order is finished (resuming it would deliver the old certificate again).
    let csr_sha = request.csr_sha256_hex();
    let current = status
        .order
        .clone()
        .filter(|o| plan::resumable(o, &csr_sha, &issuer.identity, backend.kind().as_str()));
    // A backend that renews by id (SCM's renewById: the new sslId comes back at once) renews the
    // delivered order, only through the issuer that placed it; otherwise a renewal enrolls.
    let renewal = matches!(reason, IssueReason::Renewal | IssueReason::Manual);
    let renewable = status.order.clone().filter(|o| {
        renewal
            && o.state == "Issued"
            && issuer.placed(o)
            && backend.capabilities().contains(crate::backend::Capability::Renew)
    });
    let (order, placed) = match (
        plan::order_step(current.is_some(), pending.fresh, renewable.is_some()),
        current,
    ) {
        (plan::OrderStep::Resume, Some(order)) => (issuer.handle(&order), false),
        (step, _) => {
            let handle = order_at_ca(cert, issuer, step, &request, renewable.as_ref()).await?;
            file_order(cert, ctx, issuer, reason, &handle, csr_sha, status).await;
            (handle, true)
        }
    };
    let collected = backend.collect(&order, &pending.csr_der).await;
    // A paid order that has to wait (or whose collection failed) is written to status at once:
    // that write is what resumes it instead of ordering again. One the CA issued at once is
    // recorded by the delivery's status write instead, saving a write and an Event per
    // issuance; a crash before that record is the window every enrollment has between the CA's
    // answer and any write: the next-key Secret keeps the key and the order is found again by
    // its CSR (`OrderStep::Recover`), and once the output Secret is written its order
    // annotation records the delivery.
    if placed && !local && !matches!(collected, Ok(Collected::Issued(_))) {
        persist_order(cert, ctx, &order, reason, status).await?;
    }
    let collected = collected.map_err(backend_error("collect"))?;
    let delivery = (pending.key, renew_request);
    collected_order(
        cert, ctx, spec, issuer, outputs, &order, collected, &delivery, status,
    )
    .await
}

/// The order at the CA for `request` as the planner's `step` says: one a crash left
/// unrecorded (recovery), else a renewal by id of `renewable`, else a new enrollment. Never two.
async fn order_at_ca(
    cert: &Certificate,
    issuer: &ResolvedIssuer,
    step: plan::OrderStep,
    request: &EnrollRequest,
    renewable: Option<&CertificateOrder>,
) -> Result<OrderHandle, Error> {
    let backend = &issuer.backend;
    let name = cert.name_any();
    let step = if step == plan::OrderStep::Recover {
        let found = backend
            .find_existing_order(request)
            .await
            .map_err(backend_error("find an existing order"))?;
        if let Some(handle) = found {
            tracing::info!(certificate = %name, order = %handle.id, "recovered an order placed before a restart");
            return Ok(handle);
        }
        plan::after_recovery(renewable.is_some())
    } else {
        step
    };
    match (step, renewable) {
        (plan::OrderStep::RenewById, Some(previous)) => {
            match backend.renew(&issuer.handle(previous), request).await {
                // The CA answered that it will not renew this order this way — it cannot with a
                // new key (InCommon reuses the old CSR), no longer knows the order, or refuses its
                // state — so no order was placed: enroll instead. A timeout or 5xx is *not* such an
                // answer (the renewal may have been placed) and goes to the backoff; the next
                // attempt finds that order by its CSR.
                Err(
                    refused @ (BackendError::Unsupported { .. }
                    | BackendError::NotFound { .. }
                    | BackendError::InvalidRequest { .. }),
                ) => {
                    tracing::info!(certificate = %name, order = %previous.id, reason = %refused, "renewal by id refused; enrolling instead");
                    backend.enroll(request).await.map_err(backend_error("enroll"))
                }
                other => other.map_err(backend_error("renew")),
            }
        }
        _ => backend.enroll(request).await.map_err(backend_error("enroll")),
    }
}

/// Files a placed order in status (in memory): it becomes `status.order`, and the order it
/// replaces is kept as superseded, abandoned or dropped as finished.
async fn file_order(
    cert: &Certificate,
    ctx: &Context,
    issuer: &ResolvedIssuer,
    reason: IssueReason,
    handle: &OrderHandle,
    csr_sha: String,
    status: &mut CertificateStatus,
) {
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
        backend: issuer.backend.kind().as_str().into(),
        id: handle.id.clone(),
        renew_id: handle.renew_id.clone(),
        state: "Pending".into(),
        submitted_at: Some(Time(jiff::Timestamp::now())),
        csr_sha256: csr_sha,
        issuer: Some(issuer.identity.clone()),
        serial_number: None,
    });
    let message = format!("order {} placed with {}", handle.id, issuer.target);
    let generation = cert.meta().generation;
    conditions::set(
        &mut status.conditions,
        "Issuing",
        true,
        reason.as_str(),
        message,
        generation,
    );
}

/// Writes a placed order that has to wait to status at once — this write is what resumes it
/// instead of placing a second paid order — and says so in an Event.
async fn persist_order(
    cert: &Certificate,
    ctx: &Context,
    handle: &OrderHandle,
    reason: IssueReason,
    status: &CertificateStatus,
) -> Result<(), Error> {
    let certs: Api<Certificate> = Api::namespaced(ctx.client.clone(), &cert.namespace().unwrap_or_default());
    let empty = CertificateStatus::default();
    write_status(&certs, &cert.name_any(), &empty, status).await?;
    let note = format!("order {} placed ({})", handle.id, reason.as_str());
    publish(ctx, cert, EventType::Normal, "OrderPlaced", &note).await;
    Ok(())
}

/// Acts on what collecting the order answered: wait, fail the order, or deliver.
#[allow(clippy::too_many_arguments)]
async fn collected_order(
    cert: &Certificate,
    ctx: &Context,
    spec: &ValidatedCertificate,
    issuer: &ResolvedIssuer,
    outputs: &secret::Outputs<'_>,
    order: &OrderHandle,
    collected: Collected,
    (key, renew_request): &(PrivateKey, Option<String>),
    status: &mut CertificateStatus,
) -> Result<Action, Error> {
    let generation = cert.meta().generation;
    match collected {
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
                key,
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
pub(super) async fn fail_order(
    cert: &Certificate,
    ctx: &Context,
    status: &mut CertificateStatus,
) -> Result<(), Error> {
    if let Some(o) = status.order.as_mut() {
        o.state = "Failed".into();
    }
    discard_pending_key(cert, ctx, status).await
}

/// An issuance whose reason went away while its order was pending (the issuerRef or the spec
/// was changed back): the order is never delivered, so it is revoked once issued instead of
/// being forgotten.
pub(super) async fn abandon_unneeded_order(
    ctx: &Context,
    cert: &Certificate,
    status: &mut CertificateStatus,
) {
    let Some(pending) = status.order.clone().filter(|o| o.state == "Pending") else {
        return;
    };
    status.order = delivered_order(status).cloned();
    if status.previous_order == status.order {
        status.previous_order = None;
    }
    status.next_private_key_secret_name = None;
    abandon(ctx, cert, status, pending).await;
}
