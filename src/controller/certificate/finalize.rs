//! Deletion and revocation. A certificate is revoked only through the issuer that placed its
//! order (same object, by uid): never through whatever `spec.issuerRef` names at deletion time,
//! and never by serial at an issuer that did not issue it. When that issuer is gone — deleted,
//! re-created, or taken away with its namespace — nothing can revoke the certificate any more,
//! so deletion proceeds with a Warning naming the order and serial instead of hanging forever.

use std::time::Duration;

use kube::{
    Api, ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::{
    Error, FINALIZER, SKIP_REVOKE_ANNOTATION, delivered_order, ensure_finalizer, issuer_ref, publish,
    validate::validate,
};
use crate::{
    backend::{BackendError, CaBackend, RevocationReason, RevokeTarget},
    controller::Context,
    crd::v1alpha1::{Certificate, certificate::CertificateOrder},
};

/// How soon a failed revocation on delete is retried.
const REVOKE_RETRY: Duration = Duration::from_secs(30);

/// The outcome of revoking one order.
#[derive(Debug)]
pub enum Revocation {
    /// Revoked (or already revoked).
    Revoked,
    /// The order is at the local `ca` backend, which keeps no revocation list.
    NothingToRevoke,
    /// The CA cannot revoke it yet (not issued yet).
    NotYet(String),
    /// Revocation failed; trying again may help.
    Failed(String),
    /// It can never be revoked through us: the issuer that placed it is gone, or the order
    /// predates recording issuers, or the CA refuses for good.
    Impossible(String),
}

/// Revokes `order` through the issuer that placed it.
pub async fn revoke_order(ctx: &Context, order: &CertificateOrder, reason: RevocationReason) -> Revocation {
    if issuer_ref::nothing_to_revoke(order) {
        return Revocation::NothingToRevoke;
    }
    let issuer = match issuer_ref::resolve_recorded(ctx, order).await {
        Ok(issuer) => issuer,
        Err(unusable) if unusable.is_gone() => {
            return Revocation::Impossible(crate::controller::errors::error_chain(&unusable));
        }
        Err(unusable) => return Revocation::Failed(crate::controller::errors::error_chain(&unusable)),
    };
    match issuer
        .backend
        .revoke(&RevokeTarget::Order(issuer.handle(order)), reason)
        .await
    {
        Ok(()) => Revocation::Revoked,
        Err(e @ BackendError::Pending { .. }) => Revocation::NotYet(e.to_string()),
        Err(e) if e.is_transient() => Revocation::Failed(e.to_string()),
        // A recorded order the CA does not know, or refuses to revoke, stays that way.
        Err(e) => Revocation::Impossible(e.to_string()),
    }
}

/// Deletion: revoke when the policy says so, then release the finalizer. Failures are retried;
/// the `pki-operator.io/skip-revoke` annotation releases it without revoking.
pub async fn finalize(cert: &Certificate, ctx: &Context, api: &Api<Certificate>) -> Result<Action, Error> {
    if !cert.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let skip = cert
        .annotations()
        .get(SKIP_REVOKE_ANNOTATION)
        .is_some_and(|v| v == "true");
    let status = cert.status.clone().unwrap_or_default();
    let reason = validate(&cert.spec)
        .ok()
        .and_then(|s| s.revoke_on_delete)
        .unwrap_or(RevocationReason::CessationOfOperation);
    if let (false, Some(order)) = (skip, delivered_order(&status)) {
        let serial = status.serial_number.clone().unwrap_or_default();
        match revoke_order(ctx, order, reason).await {
            Revocation::Revoked => {
                let note = format!("certificate {serial} revoked ({})", reason.name());
                publish(ctx, cert, EventType::Normal, "Revoked", &note).await;
            }
            Revocation::NothingToRevoke => {}
            Revocation::Impossible(why) => {
                let note = format!(
                    "certificate {serial} ({}) was not revoked: {why}; revoke it at the CA if needed",
                    issuer_ref::describe(order)
                );
                tracing::warn!(certificate = %cert.name_any(), order = %order.id, %serial, %why, "releasing the finalizer without revoking");
                publish(ctx, cert, EventType::Warning, "RevokeSkipped", &note).await;
            }
            Revocation::NotYet(why) | Revocation::Failed(why) => {
                let message = format!(
                    "cannot revoke certificate {serial}: {why}; deletion waits for revocation (annotate with {SKIP_REVOKE_ANNOTATION}=true to delete without revoking)"
                );
                publish(ctx, cert, EventType::Warning, "RevokeFailed", &message).await;
                return Ok(Action::requeue(REVOKE_RETRY));
            }
        }
    }
    // An order still pending (a renewal or re-issue in progress) and the abandoned ones are
    // never delivered now: one best-effort revocation each, and a Warning naming what is left.
    let pending = status.order.iter().filter(|o| o.state == "Pending");
    for order in pending.chain(&status.abandoned_orders) {
        // Best effort, once: deletion does not wait for orders nobody can use.
        if let Revocation::NotYet(why) | Revocation::Failed(why) | Revocation::Impossible(why) =
            revoke_order(ctx, order, reason).await
        {
            let note = format!(
                "undelivered {} was not revoked: {why}; revoke it at the CA if it is issued",
                issuer_ref::describe(order)
            );
            tracing::warn!(certificate = %cert.name_any(), order = %order.id, %why, "deleting with an undelivered order not revoked");
            publish(ctx, cert, EventType::Warning, "RevokeSkipped", &note).await;
        }
    }
    ensure_finalizer(cert, api, false).await?;
    Ok(Action::await_change())
}
