//! Issuer and ClusterIssuer behind one abstraction ([`IssuerObject`]): one reconcile, one watch
//! wiring, one backend builder ([`build`]), one backend cache ([`cache`]) and one resolver
//! ([`resolve`](mod@resolve)) serve both kinds — they differ only in scope and in where their
//! Secrets live.
//!
//! The reconcile builds the backend from the spec and its Secrets, proves it works with a cheap
//! authenticated call, lists the trust anchors with the CA-certificate validation codes, and
//! reports `Ready`. Re-checked periodically, so a fixed Secret recovers without manual steps.

pub mod build;
pub mod cache;
pub mod resolve;

use std::{fmt::Debug, sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::{DeserializeGuard, PartialObjectMeta},
    runtime::{Controller, WatchStreamExt as _, controller::Action, reflector::ObjectRef},
};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    Context,
    certificate::policy::{self, InvalidPolicy},
    conditions,
};
use crate::{
    backend::{Backend, BackendError, CaBackend},
    crd::v1alpha1::{
        ClusterIssuer, Issuer,
        common::IssuerKind,
        issuer::{CaIssuer, IssuerPolicy, IssuerStatus, NexusIssuer, ScmIssuer, TrustAnchor},
    },
};
pub use resolve::{IssuerTarget, ResolveError, ResolvedIssuer, resolve};

/// How often a Ready issuer is re-checked.
const RECHECK: Duration = Duration::from_secs(300);
/// How soon a failing issuer is re-checked.
const RETRY: Duration = Duration::from_secs(15);

/// Why an issuer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// A referenced Secret does not exist.
    #[error("Secret {namespace}/{name} not found")]
    SecretNotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A referenced Secret lacks a key.
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    SecretKeyMissing {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Key.
        key: String,
    },
    /// The operator runs with `--issuer-secret-label` and a referenced Secret lacks the label.
    #[error(
        "Secret {namespace}/{name} lacks the label {label} that --issuer-secret-label requires of \
         Secrets used by issuers; whoever may vouch for this Secret can add it: \
         kubectl label secret -n {namespace} {name} {assignment}"
    )]
    SecretNotLabelled {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The required label, as the operator was configured.
        label: String,
        /// A `key=value` that satisfies it.
        assignment: String,
    },
    /// The issuer's `spec.policy` has an entry that can never match.
    #[error(transparent)]
    InvalidPolicy(#[from] InvalidPolicy),
    /// Reading a Secret failed.
    #[error("cannot read Secret {namespace}/{name}")]
    ReadSecret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The backend rejected the configuration or the check call failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The spec names no backend this version implements.
    #[error("{0}")]
    Unsupported(String),
    /// Writing status failed.
    #[error("cannot update status")]
    UpdateStatus(#[source] kube::Error),
}

impl IssuerError {
    /// Condition reason, Event reason and metric label ([`super::errors::issuer`]).
    pub fn reason(&self) -> &'static str {
        super::errors::issuer(self).reason
    }
}

/// What the operator reads of an issuer's spec. Issuer and ClusterIssuer specs carry the same
/// backends and policy; this view lets every code path take either.
#[derive(Clone, Copy, Debug)]
pub struct IssuerSpecView<'a> {
    /// SCM settings.
    pub scm: Option<&'a ScmIssuer>,
    /// Nexus settings.
    pub nexus: Option<&'a NexusIssuer>,
    /// Local CA settings.
    pub ca: Option<&'a CaIssuer>,
    /// Which namespaces and names the issuer serves.
    pub policy: Option<&'a IssuerPolicy>,
}

impl IssuerSpecView<'_> {
    /// Names of the Secrets the spec references (in the issuer's Secret namespace).
    pub fn referenced_secrets(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(scm) = self.scm {
            names.extend(scm.auth.password.as_ref().map(|p| p.secret_name.clone()));
            names.extend(
                scm.auth
                    .client_certificate
                    .as_ref()
                    .map(|c| c.secret_name.clone()),
            );
        }
        if let Some(nexus) = self.nexus {
            names.push(nexus.client_certificate_secret_name.clone());
            names.extend(nexus.signing_secret_name.clone());
        }
        names.extend(self.ca.map(|c| c.secret_name.clone()));
        names
    }
}

/// An Issuer or a ClusterIssuer: everything the operator does with issuers is written once
/// against this trait.
pub trait IssuerObject:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
    /// Which kind this is.
    const KIND: IssuerKind;

    /// The backends and policy of the spec.
    fn spec_view(&self) -> IssuerSpecView<'_>;

    /// The status the operator last wrote.
    fn issuer_status(&self) -> Option<&IssuerStatus>;

    /// The namespace its Secret references resolve in: an Issuer's own namespace, for a
    /// ClusterIssuer the operator's cluster resource namespace.
    fn secret_namespace<'a>(&'a self, cluster_resource_namespace: &'a str) -> &'a str;

    /// The API of this kind: in `namespace` for an Issuer (required), cluster-wide for a
    /// ClusterIssuer (`namespace` ignored).
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
}

/// The view of either spec type: both have the same backend and policy fields.
macro_rules! spec_view {
    ($spec:expr) => {
        IssuerSpecView {
            scm: $spec.scm.as_ref(),
            nexus: $spec.nexus.as_ref(),
            ca: $spec.ca.as_ref(),
            policy: $spec.policy.as_ref(),
        }
    };
}

impl IssuerObject for Issuer {
    const KIND: IssuerKind = IssuerKind::Issuer;

    fn spec_view(&self) -> IssuerSpecView<'_> {
        spec_view!(self.spec)
    }

    fn issuer_status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }

    fn secret_namespace<'a>(&'a self, _cluster_resource_namespace: &'a str) -> &'a str {
        self.metadata.namespace.as_deref().unwrap_or_default()
    }

    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        Api::namespaced(client, namespace.unwrap_or_default())
    }
}

impl IssuerObject for ClusterIssuer {
    const KIND: IssuerKind = IssuerKind::ClusterIssuer;

    fn spec_view(&self) -> IssuerSpecView<'_> {
        spec_view!(self.spec)
    }

    fn issuer_status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }

    fn secret_namespace<'a>(&'a self, cluster_resource_namespace: &'a str) -> &'a str {
        cluster_resource_namespace
    }

    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}

/// The issuer controller's watches besides its kind: the watch events of the Secrets' metadata
/// in the namespaces its issuers take Secrets from, so fixing a credentials Secret re-checks
/// the issuers that reference it at once.
pub fn controller<K: IssuerObject>(
    controller: Controller<DeserializeGuard<K>>,
    secrets: crate::controller::scope::Events<PartialObjectMeta<Secret>>,
    cluster_resource_namespace: String,
) -> Controller<DeserializeGuard<K>> {
    let store = controller.store();
    controller.watches_stream(secrets.touched_objects(), move |secret| {
        let (name, namespace) = (
            secret.metadata.name.clone().unwrap_or_default(),
            secret.metadata.namespace.clone().unwrap_or_default(),
        );
        store
            .state()
            .into_iter()
            .filter(|guard| {
                guard.0.as_ref().is_ok_and(|issuer| {
                    issuer.secret_namespace(&cluster_resource_namespace) == namespace
                        && issuer.spec_view().referenced_secrets().contains(&name)
                })
            })
            .map(|guard| ObjectRef::from_obj(guard.as_ref()))
            .collect::<Vec<_>>()
    })
}

/// The trust anchors of a CA chain as Issuer status lists them, with the validation codes of
/// [`crate::pki::trust_anchor`].
pub fn trust_anchors(chain_der: &[Vec<u8>]) -> Vec<TrustAnchor> {
    crate::pki::trust_anchor::check_chain(chain_der, jiff::Timestamp::now().as_second())
        .into_iter()
        .map(|anchor| TrustAnchor {
            subject: anchor.subject,
            subject_key_id: anchor.subject_key_id,
            not_after: anchor
                .not_after
                .and_then(|s| jiff::Timestamp::from_second(s).ok())
                .map(Time),
            validation: anchor.code,
            validation_message: anchor.message.into(),
        })
        .collect()
}

/// Checks one issuer and returns its new status. The backend it built and checked replaces the
/// issuer's entry in the backend cache (so each check also renews what the backend learned
/// once, such as SCM profiles); a failed check drops the entry.
async fn check<K: IssuerObject>(ctx: &Context, issuer: &K) -> (IssuerStatus, bool) {
    let target = IssuerTarget::of(issuer);
    let meta = issuer.meta();
    let spec = issuer.spec_view();
    let generation = meta.generation;
    let mut status = issuer.issuer_status().cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.last_check_time = Some(Time(jiff::Timestamp::now()));
    // A policy entry that can never match is the administrator's mistake to see here, before
    // Certificates start failing against it.
    let built = match spec.policy.map_or(Ok(()), policy::validate) {
        Ok(()) => {
            build::build_backend(
                ctx,
                spec,
                issuer.secret_namespace(&ctx.cluster_resource_namespace),
            )
            .await
        }
        Err(invalid) => Err(IssuerError::from(invalid)),
    };
    let outcome = match built {
        Ok((backend, secrets)) => backend
            .check()
            .await
            .map(|profiles| (backend, secrets, profiles))
            .map_err(IssuerError::from),
        Err(e) => Err(e),
    };
    match outcome {
        Ok((backend, secrets, profiles)) => {
            let message = match &backend {
                Backend::Ca(ca) => {
                    status.trust_anchors = trust_anchors(&ca.chain_der());
                    "the CA key pair is valid".to_owned()
                }
                Backend::Scm(_) => {
                    status.trust_anchors = Vec::new();
                    format!(
                        "authenticated; {} certificate profile(s) available",
                        profiles.len()
                    )
                }
                Backend::Nexus(_) => {
                    status.trust_anchors = Vec::new();
                    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
                    format!(
                        "authenticated as a CM officer; token procedure(s) available: {}",
                        names.join(", ")
                    )
                }
            };
            conditions::set(
                &mut status.conditions,
                "Ready",
                true,
                "Checked",
                message,
                generation,
            );
            ctx.backends.remember(&target, meta, secrets, Arc::new(backend));
            (status, true)
        }
        Err(error) => {
            ctx.backends.forget(&target);
            let message = super::errors::error_chain(&error);
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                error.reason(),
                message,
                generation,
            );
            (status, false)
        }
    }
}

fn status_changed(old: Option<&IssuerStatus>, new: &IssuerStatus) -> bool {
    // lastCheckTime alone does not justify a write; everything else does.
    let strip = |s: &IssuerStatus| IssuerStatus {
        last_check_time: None,
        ..s.clone()
    };
    old.is_none_or(|old| strip(old) != strip(new))
}

/// Reconciles an Issuer or a ClusterIssuer: checks it and writes its status when it changed.
pub async fn reconcile<K: IssuerObject>(issuer: Arc<K>, ctx: Arc<Context>) -> Result<Action, IssuerError> {
    let (status, ready) = check(&ctx, issuer.as_ref()).await;
    if status_changed(issuer.issuer_status(), &status) {
        let api = K::api(ctx.client.clone(), issuer.meta().namespace.as_deref());
        super::status::write(&api, &issuer.name_any(), &status)
            .await
            .map_err(IssuerError::UpdateStatus)?;
        let before = issuer.issuer_status().map_or(&[][..], |s| &s.conditions);
        ctx.events
            .announce_ready(issuer.as_ref(), before, &status.conditions)
            .await;
    }
    Ok(Action::requeue(if ready { RECHECK } else { RETRY }))
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

    use super::*;
    use crate::config::LabelRequirement;

    fn ca(
        name: &str,
        is_ca: bool,
        not_after: time::OffsetDateTime,
        issuer: Option<(&rcgen::Certificate, &KeyPair)>,
    ) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        params.not_after = not_after;
        if is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        }
        let cert = match issuer {
            Some((issuer_cert, issuer_key)) => {
                let issuer = rcgen::Issuer::from_ca_cert_der(issuer_cert.der(), issuer_key).unwrap();
                params.signed_by(&key, &issuer).unwrap()
            }
            None => params.self_signed(&key).unwrap(),
        };
        (cert, key)
    }

    fn secret(labels: &[(&str, &str)]) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.name = Some("scm-credentials".into());
        if !labels.is_empty() {
            secret.metadata.labels = Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            );
        }
        secret
    }

    #[test]
    fn without_the_flag_any_secret_may_be_used() {
        assert!(build::check_secret_label(None, &secret(&[]), "team-a").is_ok());
    }

    #[test]
    fn with_the_flag_only_labelled_secrets_may_be_used() {
        let any_value: LabelRequirement = "pki-operator.io/issuer-secret".parse().unwrap();
        assert!(
            build::check_secret_label(
                Some(&any_value),
                &secret(&[("pki-operator.io/issuer-secret", "")]),
                "team-a"
            )
            .is_ok()
        );
        let error =
            build::check_secret_label(Some(&any_value), &secret(&[("other", "x")]), "team-a").unwrap_err();
        assert_eq!(error.reason(), "SecretNotLabelled");
        let message = error.to_string();
        for needle in [
            "Secret team-a/scm-credentials",
            "pki-operator.io/issuer-secret (any value)",
            "--issuer-secret-label",
            "kubectl label secret -n team-a scm-credentials pki-operator.io/issuer-secret=true",
        ] {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }

        let exact: LabelRequirement = "pki-operator.io/issuer-secret=approved".parse().unwrap();
        let wrong_value = secret(&[("pki-operator.io/issuer-secret", "yes")]);
        let error = build::check_secret_label(Some(&exact), &wrong_value, "ns").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("pki-operator.io/issuer-secret=approved"),
            "{error}"
        );
        let right_value = secret(&[("pki-operator.io/issuer-secret", "approved")]);
        assert!(build::check_secret_label(Some(&exact), &right_value, "ns").is_ok());
    }

    #[test]
    fn an_unusable_policy_entry_is_reported_as_invalid_policy() {
        let policy = IssuerPolicy {
            ip_addresses: Some(vec!["10.0.0.0/99".into()]),
            ..IssuerPolicy::default()
        };
        let error = IssuerError::from(policy::validate(&policy).unwrap_err());
        assert_eq!(error.reason(), "InvalidPolicy");
        assert!(error.to_string().contains("policy.ipAddresses"), "{error}");
        assert!(error.to_string().contains("10.0.0.0/99"), "{error}");
    }

    #[test]
    fn validation_codes_follow_the_ca_certificate_taxonomy() {
        let later = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        let earlier = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        let (root, root_key) = ca("root", true, later, None);
        let (intermediate, _) = ca("intermediate", true, later, Some((&root, &root_key)));
        let anchors = trust_anchors(&[intermediate.der().to_vec(), root.der().to_vec()]);
        assert_eq!(anchors.iter().map(|a| a.validation).collect::<Vec<_>>(), [0, 0]);
        assert!(anchors[0].subject.contains("intermediate"));

        let (expired, _) = ca("expired", true, earlier, None);
        assert_eq!(trust_anchors(&[expired.der().to_vec()])[0].validation, 2003);
        let (leaf_like, _) = ca("not a ca", false, later, None);
        assert_eq!(trust_anchors(&[leaf_like.der().to_vec()])[0].validation, 2012);
        let (other_root, _) = ca("other root", true, later, None);
        assert_eq!(
            trust_anchors(&[intermediate.der().to_vec(), other_root.der().to_vec()])[0].validation,
            2013
        );
        assert_eq!(trust_anchors(&[b"garbage".to_vec()])[0].validation, 2001);
    }
}
