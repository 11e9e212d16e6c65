//! Which issuer a Certificate may talk to. Two questions, kept apart on purpose:
//! - the issuer `spec.issuerRef` names *now*, for new orders ([`resolve_spec`]);
//! - the issuer that placed a recorded order, for collecting, renewing and revoking that order
//!   ([`resolve_recorded`]). Order ids and serials are only meaningful at the CA account that
//!   issued them, so a recorded order is never handed to another issuer — not after an
//!   `issuerRef` change, and not to a deleted and re-created issuer of the same name (new uid).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, Resource};

use super::super::{Context, conditions, issuer};
use crate::{
    backend::{Backend, BackendKind, CaBackend, OrderHandle},
    crd::v1alpha1::{
        ClusterIssuer, Issuer,
        certificate::{CertificateOrder, OrderIssuer},
        common::IssuerKind,
        issuer::IssuerPolicy,
    },
};

/// An issuer ready to take calls.
pub struct ResolvedIssuer {
    /// `Issuer` or `ClusterIssuer`, for messages.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// What an order placed through it records.
    pub identity: OrderIssuer,
    /// The CA client.
    pub backend: Backend,
    /// How often pending orders are polled.
    pub poll_interval: Duration,
    /// Which namespaces and names the issuer serves (`spec.policy`).
    pub policy: Option<IssuerPolicy>,
}

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

/// Why an issuer cannot be used.
#[derive(Debug)]
pub enum Unusable {
    /// It does not exist (any more), is being deleted, or is another object than the one that
    /// placed the order (different uid). Nothing will ever reach the CA through it again.
    Gone(String),
    /// It exists but cannot be used now (not Ready, Secrets unreadable, API errors).
    NotReady(String),
}

impl Unusable {
    /// The message for conditions and events.
    pub fn message(&self) -> &str {
        match self {
            Self::Gone(m) | Self::NotReady(m) => m,
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
    kind: IssuerKind,
    name: &str,
    namespace: &str,
) -> Result<ResolvedIssuer, Unusable> {
    resolve(ctx, kind, name, namespace, None).await
}

/// The issuer that placed `order`, only while it is the same object. Orders recorded before
/// issuers were recorded have no issuer and are [`Unusable::Gone`] for this purpose.
pub async fn resolve_recorded(ctx: &Context, order: &CertificateOrder) -> Result<ResolvedIssuer, Unusable> {
    let Some(recorded) = &order.issuer else {
        return Err(Unusable::Gone(format!(
            "order {} was recorded without its issuer (operator version 0.1.x)",
            order.id
        )));
    };
    let namespace = recorded.namespace.clone().unwrap_or_default();
    let resolved = resolve(
        ctx,
        recorded.kind,
        &recorded.name,
        &namespace,
        Some(&recorded.uid),
    )
    .await?;
    if resolved.backend.kind().as_str() != order.backend {
        return Err(Unusable::Gone(format!(
            "{} {} now uses the {} backend, but order {} is at {}",
            resolved.kind,
            resolved.name,
            resolved.backend.kind(),
            order.id,
            order.backend
        )));
    }
    Ok(resolved)
}

async fn resolve(
    ctx: &Context,
    kind: IssuerKind,
    name: &str,
    namespace: &str,
    expected_uid: Option<&str>,
) -> Result<ResolvedIssuer, Unusable> {
    let not_ready =
        |e: kube::Error, what: &str| Unusable::NotReady(format!("cannot read {what} {name}: {e}"));
    let (kind_name, meta, conditions, parts) = match kind {
        IssuerKind::Issuer => {
            let api: Api<Issuer> = Api::namespaced(ctx.client.clone(), namespace);
            let found = api
                .get_opt(name)
                .await
                .map_err(|e| not_ready(e, "Issuer"))?
                .ok_or_else(|| Unusable::Gone(format!("Issuer {name} not found in namespace {namespace}")))?;
            let conditions = found
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            let spec = found.spec.clone();
            (
                "Issuer",
                found.meta().clone(),
                conditions,
                (spec.scm, spec.nexus, spec.ca, namespace.to_owned(), spec.policy),
            )
        }
        IssuerKind::ClusterIssuer => {
            let api: Api<ClusterIssuer> = Api::all(ctx.client.clone());
            let found = api
                .get_opt(name)
                .await
                .map_err(|e| not_ready(e, "ClusterIssuer"))?
                .ok_or_else(|| Unusable::Gone(format!("ClusterIssuer {name} not found")))?;
            let conditions = found
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            let spec = found.spec.clone();
            (
                "ClusterIssuer",
                found.meta().clone(),
                conditions,
                (
                    spec.scm,
                    spec.nexus,
                    spec.ca,
                    ctx.cluster_resource_namespace.clone(),
                    spec.policy,
                ),
            )
        }
    };
    let uid = meta.uid.clone().unwrap_or_default();
    if let Some(expected) = expected_uid
        && expected != uid
    {
        return Err(Unusable::Gone(format!(
            "{kind_name} {name} was deleted and re-created (uid {uid}, the order was placed through {expected})"
        )));
    }
    if meta.deletion_timestamp.is_some() {
        return Err(Unusable::Gone(format!("{kind_name} {name} is being deleted")));
    }
    ready(kind_name, name, &conditions)?;
    let (scm, nexus, ca, secret_namespace, policy) = parts;
    let issuer_parts = issuer::IssuerParts {
        scm: scm.as_ref(),
        nexus: nexus.as_ref(),
        ca: ca.as_ref(),
        secret_namespace,
    };
    let backend = issuer::build_backend(ctx, &issuer_parts).await.map_err(|e| {
        Unusable::NotReady(format!(
            "{kind_name} {name}: {}",
            super::super::errors::error_chain(&e)
        ))
    })?;
    Ok(ResolvedIssuer {
        kind: kind_name,
        name: name.to_owned(),
        identity: OrderIssuer {
            kind,
            namespace: (kind == IssuerKind::Issuer).then(|| namespace.to_owned()),
            name: name.to_owned(),
            uid,
        },
        backend,
        poll_interval: issuer::poll_interval(scm.as_ref()),
        policy,
    })
}

/// Whether the issuer's own check passed (its `Ready` condition).
fn ready(kind_name: &str, name: &str, conditions: &[Condition]) -> Result<(), Unusable> {
    match conditions::get(conditions, "Ready") {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => Err(Unusable::NotReady(format!(
            "{kind_name} {name} is not ready: {} ({})",
            c.message, c.reason
        ))),
        None => Err(Unusable::NotReady(format!(
            "{kind_name} {name} is not ready: not checked yet"
        ))),
    }
}

/// The identity a Certificate's `spec.issuerRef` names, without reading the issuer (uid unknown).
pub fn spec_reference(kind: IssuerKind, name: &str, namespace: &str) -> OrderIssuer {
    OrderIssuer {
        kind,
        namespace: (kind == IssuerKind::Issuer).then(|| namespace.to_owned()),
        name: name.to_owned(),
        uid: String::new(),
    }
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
        |i| {
            format!(
                "order {} at {:?} {}{}",
                order.id,
                i.kind,
                i.namespace
                    .as_deref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default(),
                i.name
            )
        },
    )
}
