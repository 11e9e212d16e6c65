//! Which issuer a Certificate may talk to. Two questions, kept apart on purpose:
//! - the issuer `spec.issuerRef` names *now*, for new orders ([`resolve_spec`]);
//! - the issuer that placed a recorded order, for collecting, renewing and revoking that order
//!   ([`resolve_recorded`]). Order ids and serials are only meaningful at the CA account that
//!   issued them, so a recorded order is never handed to another issuer — not after an
//!   `issuerRef` change, and not to a deleted and re-created issuer of the same name (new uid).

use super::super::{
    Context,
    issuer::{self, IssuerTarget, ResolveError, ResolvedIssuer},
};
use crate::{
    backend::{BackendKind, CaBackend, OrderHandle},
    crd::v1alpha1::{
        certificate::{CertificateOrder, OrderIssuer},
        common::IssuerRef,
    },
};

impl ResolvedIssuer {
    /// Whether `order` was placed through this very issuer object (same kind, namespace, name
    /// and uid) and backend. Orders without a recorded issuer never qualify.
    pub fn placed(&self, order: &CertificateOrder) -> bool {
        super::plan::placed_by(order, &self.identity, self.backend.kind().as_str())
    }

    /// The backend handle of an order placed through this issuer.
    pub fn handle(&self, order: &CertificateOrder) -> OrderHandle {
        OrderHandle {
            backend: self.backend.kind(),
            id: order.id.clone(),
            renew_id: order.renew_id.clone(),
        }
    }
}

/// Whether two issuer identities name the same issuer (kind, namespace, name), ignoring uid: a
/// re-created issuer of the same name is the same *reference*, so it does not force a new
/// issuance, but it does not inherit the orders of its predecessor either.
pub fn same_reference(a: &OrderIssuer, b: &OrderIssuer) -> bool {
    a.kind == b.kind && a.namespace == b.namespace && a.name == b.name
}

/// The issuer `spec.issuerRef` names, for new orders.
pub async fn resolve_spec(
    ctx: &Context,
    reference: &IssuerRef,
    namespace: &str,
) -> Result<ResolvedIssuer, ResolveError> {
    issuer::resolve(ctx, &IssuerTarget::from_namespaced(reference, namespace), None).await
}

/// Why a recorded order cannot be handed to any issuer.
#[derive(Debug, thiserror::Error)]
pub enum RecordedIssuerError {
    /// The order was recorded by operator 0.1.x, before orders recorded their issuer.
    #[error("order {0} was recorded without its issuer (operator version 0.1.x)")]
    Unrecorded(String),
    /// The recorded issuer cannot be used.
    #[error(transparent)]
    Issuer(#[from] ResolveError),
}

impl RecordedIssuerError {
    /// Whether the order's issuer will never be reachable again ([`ResolveError::is_gone`]);
    /// an unrecorded issuer never will.
    pub fn is_gone(&self) -> bool {
        match self {
            Self::Unrecorded(_) => true,
            Self::Issuer(error) => error.is_gone(),
        }
    }
}

/// The issuer that placed `order`, only while it is the same object with the same backend.
pub async fn resolve_recorded(
    ctx: &Context,
    order: &CertificateOrder,
) -> Result<ResolvedIssuer, RecordedIssuerError> {
    let Some(recorded) = &order.issuer else {
        return Err(RecordedIssuerError::Unrecorded(order.id.clone()));
    };
    let target = IssuerTarget::recorded(recorded);
    let resolved = issuer::resolve(ctx, &target, Some(&recorded.uid)).await?;
    let backend = resolved.backend.kind();
    if backend.as_str() != order.backend {
        return Err(ResolveError::BackendChanged {
            target,
            backend: backend.as_str().to_owned(),
            expected: order.backend.clone(),
        }
        .into());
    }
    Ok(resolved)
}

/// Whether an order was placed at the local `ca` backend, which keeps no revocation list:
/// there is nothing to revoke there.
pub fn nothing_to_revoke(order: &CertificateOrder) -> bool {
    order.backend == BackendKind::Ca.as_str()
}

/// Name of the object for log lines.
pub fn describe(order: &CertificateOrder) -> String {
    order.issuer.as_ref().map_or_else(
        || format!("order {} at an unrecorded issuer", order.id),
        |i| format!("order {} at {}", order.id, IssuerTarget::recorded(i)),
    )
}
