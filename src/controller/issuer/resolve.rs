//! Resolving a reference to an issuer — a namespaced object's [`IssuerRef`] or a cluster-scoped
//! object's [`ClusterScopedIssuerRef`] — into a ready issuer with its (cached) backend, or a
//! typed reason why it cannot be used. The same path serves Issuers and ClusterIssuers.

use std::{sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Client, api::ObjectMeta};

use super::{IssuerError, IssuerObject, build};
use crate::{
    backend::Backend,
    controller::{Context, conditions},
    crd::v1alpha1::{
        ClusterIssuer, Issuer,
        certificate::OrderIssuer,
        common::{ClusterScopedIssuerRef, IssuerKind, IssuerRef},
        issuer::IssuerPolicy,
    },
};

/// Which issuer a reference points at, before it is read. Also the backend cache's key: the uid
/// is not part of it, so a re-created issuer replaces its predecessor's entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IssuerTarget {
    /// `Issuer` or `ClusterIssuer`.
    pub kind: IssuerKind,
    /// The Issuer's namespace; `None` for a ClusterIssuer.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl IssuerTarget {
    /// The issuer a namespaced object's `issuerRef` names: an `Issuer` in the object's namespace
    /// or a `ClusterIssuer`.
    pub fn from_namespaced(reference: &IssuerRef, namespace: &str) -> Self {
        Self {
            kind: reference.kind,
            namespace: (reference.kind == IssuerKind::Issuer).then(|| namespace.to_owned()),
            name: reference.name.clone(),
        }
    }

    /// The issuer a cluster-scoped object's `issuerRef` names (an `Issuer` with its namespace).
    pub fn from_cluster_scoped(reference: &ClusterScopedIssuerRef) -> Self {
        Self {
            kind: reference.kind,
            namespace: match reference.kind {
                IssuerKind::Issuer => reference.namespace.clone(),
                IssuerKind::ClusterIssuer => None,
            },
            name: reference.name.clone(),
        }
    }

    /// The issuer an order records.
    pub fn recorded(issuer: &OrderIssuer) -> Self {
        Self {
            kind: issuer.kind,
            namespace: issuer.namespace.clone(),
            name: issuer.name.clone(),
        }
    }

    /// The target naming `issuer` itself.
    pub fn of<K: IssuerObject>(issuer: &K) -> Self {
        Self {
            kind: K::KIND,
            namespace: issuer.meta().namespace.clone(),
            name: issuer.meta().name.clone().unwrap_or_default(),
        }
    }

    /// What an order placed through this issuer object (of `uid`) records.
    pub fn identity(&self, uid: String) -> OrderIssuer {
        OrderIssuer {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid,
        }
    }
}

impl std::fmt::Display for IssuerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Why an issuer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The issuer does not exist.
    #[error("{target} not found")]
    NotFound {
        /// The issuer.
        target: IssuerTarget,
    },
    /// The issuer is being deleted.
    #[error("{target} is being deleted")]
    Deleting {
        /// The issuer.
        target: IssuerTarget,
    },
    /// The issuer was deleted and re-created: the object that placed an order is gone.
    #[error("{target} was deleted and re-created (uid {uid}; the order was placed through uid {expected})")]
    Replaced {
        /// The issuer.
        target: IssuerTarget,
        /// The uid of the object there now.
        uid: String,
        /// The uid of the object that placed the order.
        expected: String,
    },
    /// The issuer now uses another backend than the one that placed an order.
    #[error("{target} now uses the {backend} backend, but the order is at {expected}")]
    BackendChanged {
        /// The issuer.
        target: IssuerTarget,
        /// Its backend now.
        backend: String,
        /// The backend of the order.
        expected: String,
    },
    /// A reference to a namespaced `Issuer` from a cluster-scoped object names no namespace
    /// (the CRD's validation rejects this; kept for objects written around it).
    #[error("{target}: namespace is required when kind is Issuer")]
    NamespaceMissing {
        /// The issuer.
        target: IssuerTarget,
    },
    /// A ClusterIssuer, asked of an operator in namespace-scoped mode (`--watch-namespaces`),
    /// which serves no cluster-scoped kind and may not read one.
    #[error(
        "{target} is not available: this operator is namespace-scoped (--watch-namespaces) and serves no ClusterIssuer"
    )]
    ClusterIssuerDisabled {
        /// The issuer.
        target: IssuerTarget,
    },
    /// The issuer's own check has not passed (its `Ready` condition).
    #[error("{target} is not ready: {message} ({reason})")]
    NotReady {
        /// The issuer.
        target: IssuerTarget,
        /// Its `Ready` condition's reason (`NotChecked` before the first check).
        reason: String,
        /// Its `Ready` condition's message.
        message: String,
    },
    /// Reading the issuer failed.
    #[error("cannot read {target}")]
    Read {
        /// The issuer.
        target: IssuerTarget,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Building its backend failed (Secrets unreadable or invalid).
    #[error("{target}")]
    Build {
        /// The issuer.
        target: IssuerTarget,
        /// Cause (boxed: the error type stays small on the success path).
        #[source]
        source: Box<IssuerError>,
    },
}

impl ResolveError {
    /// Whether the issuer that was asked for will never be reachable again: it does not exist,
    /// is being deleted, is another object than the one that placed an order, or another backend,
    /// or it is a ClusterIssuer and this operator is namespace-scoped.
    /// Everything else may pass (a check that has not run yet, an apiserver or Secret problem).
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            Self::NotFound { .. }
                | Self::Deleting { .. }
                | Self::Replaced { .. }
                | Self::BackendChanged { .. }
                | Self::NamespaceMissing { .. }
                | Self::ClusterIssuerDisabled { .. }
        )
    }

    /// The condition reason for an object that cannot use the issuer: `ClusterIssuerDisabled`
    /// for a ClusterIssuer in namespace-scoped mode, else `IssuerNotReady`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ClusterIssuerDisabled { .. } => "ClusterIssuerDisabled",
            _ => "IssuerNotReady",
        }
    }
}

/// An issuer ready to take calls.
pub struct ResolvedIssuer {
    /// Which issuer it is.
    pub target: IssuerTarget,
    /// What an order placed through it records (the target and the object's uid).
    pub identity: OrderIssuer,
    /// The CA client, shared with other reconciles through the backend cache.
    pub backend: Arc<Backend>,
    /// How often pending orders are polled.
    pub poll_interval: Duration,
    /// Which namespaces and names the issuer serves (`spec.policy`).
    pub policy: Option<IssuerPolicy>,
}

/// The issuer `target` names, Ready and with its backend. With `expected_uid`, only that very
/// object qualifies (a recorded order is never handed to a re-created issuer of the same name).
pub async fn resolve(
    ctx: &Context,
    target: &IssuerTarget,
    expected_uid: Option<&str>,
) -> Result<ResolvedIssuer, ResolveError> {
    match target.kind {
        IssuerKind::Issuer => resolve_as::<Issuer>(ctx, target, expected_uid).await,
        // Never read: the namespace-scoped operator's Roles do not allow it. Counted as gone,
        // so a deletion waiting to revoke through it releases its finalizer with a Warning
        // instead of retrying a forbidden read forever.
        IssuerKind::ClusterIssuer if !ctx.scope.serves_cluster_scoped() => {
            Err(ResolveError::ClusterIssuerDisabled {
                target: target.clone(),
            })
        }
        IssuerKind::ClusterIssuer => resolve_as::<ClusterIssuer>(ctx, target, expected_uid).await,
    }
}

async fn resolve_as<K: IssuerObject>(
    ctx: &Context,
    target: &IssuerTarget,
    expected_uid: Option<&str>,
) -> Result<ResolvedIssuer, ResolveError> {
    let issuer = match read::<K>(&ctx.client, target).await {
        Ok(issuer) => issuer,
        Err(error) => {
            if error.is_gone() {
                // The issuer is gone: so is any reason to keep its backend.
                ctx.backends.forget(target);
            }
            return Err(error);
        }
    };
    let meta: &ObjectMeta = issuer.meta();
    let uid = meta.uid.clone().unwrap_or_default();
    if let Some(expected) = expected_uid
        && expected != uid
    {
        return Err(ResolveError::Replaced {
            target: target.clone(),
            uid,
            expected: expected.to_owned(),
        });
    }
    if meta.deletion_timestamp.is_some() {
        ctx.backends.forget(target);
        return Err(ResolveError::Deleting {
            target: target.clone(),
        });
    }
    ready(target, issuer.issuer_status().map_or(&[][..], |s| &s.conditions))?;
    let spec = issuer.spec_view();
    let backend = ctx
        .backends
        .backend(
            ctx,
            target,
            meta,
            spec,
            issuer.secret_namespace(&ctx.cluster_resource_namespace),
        )
        .await
        .map_err(|source| ResolveError::Build {
            target: target.clone(),
            source: Box::new(source),
        })?;
    Ok(ResolvedIssuer {
        target: target.clone(),
        identity: target.identity(uid),
        backend,
        poll_interval: build::poll_interval(spec.scm),
        policy: spec.policy.cloned(),
    })
}

/// Reads the issuer `target` names.
async fn read<K: IssuerObject>(client: &Client, target: &IssuerTarget) -> Result<K, ResolveError> {
    if K::KIND == IssuerKind::Issuer && target.namespace.is_none() {
        return Err(ResolveError::NamespaceMissing {
            target: target.clone(),
        });
    }
    K::api(client.clone(), target.namespace.as_deref())
        .get_opt(&target.name)
        .await
        .map_err(|source| ResolveError::Read {
            target: target.clone(),
            source,
        })?
        .ok_or_else(|| ResolveError::NotFound {
            target: target.clone(),
        })
}

/// Whether the issuer's own check passed (its `Ready` condition).
fn ready(target: &IssuerTarget, conditions: &[Condition]) -> Result<(), ResolveError> {
    match conditions::get(conditions, "Ready") {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => Err(ResolveError::NotReady {
            target: target.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        }),
        None => Err(ResolveError::NotReady {
            target: target.clone(),
            reason: "NotChecked".into(),
            message: "not checked yet".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A namespace-scoped operator never reads a ClusterIssuer (its Roles forbid it): the
    /// typed error comes without an API call, says why, and counts as gone, so a deletion
    /// waiting to revoke through it is released instead of retrying a forbidden read.
    #[tokio::test]
    async fn a_namespace_scoped_operator_refuses_cluster_issuers_without_asking_the_apiserver() {
        let (service, mut apiserver) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let client = kube::Client::new(service, "team");
        let mut ctx =
            std::sync::Arc::into_inner(crate::controller::tests::context(client)).expect("sole owner");
        ctx.scope = crate::controller::WatchScope::only_namespaces(["team".to_owned()]);
        let target = IssuerTarget::from_namespaced(
            &IssuerRef {
                name: "corp".into(),
                kind: IssuerKind::ClusterIssuer,
            },
            "team",
        );
        // Nobody answers the mock apiserver: a read would wait, and time out here.
        let answered =
            tokio::time::timeout(std::time::Duration::from_secs(2), resolve(&ctx, &target, None)).await;
        let Ok(Err(error)) = answered else {
            panic!("the ClusterIssuer was asked of the apiserver, or resolved, in namespace-scoped mode");
        };
        assert!(
            matches!(error, ResolveError::ClusterIssuerDisabled { .. }),
            "{error:?}"
        );
        assert!(error.is_gone());
        assert_eq!(error.reason(), "ClusterIssuerDisabled");
        assert!(error.to_string().contains("--watch-namespaces"), "{error}");
        drop(ctx);
        assert!(
            apiserver.next_request().await.is_none(),
            "the apiserver was asked for the ClusterIssuer"
        );
    }

    #[test]
    fn references_from_namespaced_and_cluster_scoped_objects_name_the_same_targets() {
        let to_issuer = IssuerRef {
            name: "team-ca".into(),
            kind: IssuerKind::Issuer,
        };
        let to_cluster = IssuerRef {
            name: "corp".into(),
            kind: IssuerKind::ClusterIssuer,
        };
        let issuer = IssuerTarget::from_namespaced(&to_issuer, "team");
        let cluster = IssuerTarget::from_namespaced(&to_cluster, "team");
        assert_eq!(issuer.to_string(), "Issuer team/team-ca");
        assert_eq!(
            cluster.to_string(),
            "ClusterIssuer corp",
            "no namespace for a ClusterIssuer"
        );

        let scoped = |kind, namespace: Option<&str>, name: &str| ClusterScopedIssuerRef {
            name: name.into(),
            kind,
            namespace: namespace.map(Into::into),
        };
        assert_eq!(
            IssuerTarget::from_cluster_scoped(&scoped(IssuerKind::Issuer, Some("team"), "team-ca")),
            issuer
        );
        assert_eq!(
            IssuerTarget::from_cluster_scoped(&scoped(IssuerKind::ClusterIssuer, Some("ignored"), "corp")),
            cluster,
            "a ClusterIssuer's namespace is not part of its identity"
        );
        let recorded = issuer.identity("u1".into());
        assert_eq!(IssuerTarget::recorded(&recorded), issuer);
        assert_eq!(recorded.uid, "u1");
    }

    #[test]
    fn only_a_ready_condition_makes_an_issuer_usable_and_gone_is_told_apart() {
        let target = IssuerTarget {
            kind: IssuerKind::ClusterIssuer,
            namespace: None,
            name: "corp".into(),
        };
        let condition = |status: &str| Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "SecretNotFound".into(),
            message: "Secret pki/creds not found".into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        };
        assert!(ready(&target, &[condition("True")]).is_ok());
        let not_ready = ready(&target, &[condition("False")]).unwrap_err();
        assert_eq!(
            not_ready.to_string(),
            "ClusterIssuer corp is not ready: Secret pki/creds not found (SecretNotFound)"
        );
        assert!(!not_ready.is_gone(), "a failing check may pass later");
        let unchecked = ready(&target, &[]).unwrap_err();
        assert!(unchecked.to_string().contains("not checked yet"), "{unchecked}");
        assert!(
            ResolveError::NotFound {
                target: target.clone()
            }
            .is_gone()
        );
        assert!(
            ResolveError::Replaced {
                target,
                uid: "u2".into(),
                expected: "u1".into()
            }
            .is_gone()
        );
    }
}
