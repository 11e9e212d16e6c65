//! Issuer and ClusterIssuer: build the backend from the spec and its Secrets, prove it works with
//! a cheap authenticated call, list the trust anchors with the CA-certificate validation codes,
//! and report `Ready`. Re-checked periodically, so a fixed Secret recovers without manual steps.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};
use kube::{Api, Resource, ResourceExt, runtime::controller::Action};

use super::{
    Context,
    certificate::policy::{self, InvalidPolicy},
    conditions,
};
use crate::{
    backend::{
        Backend, BackendError, CaBackend,
        ca::{CaIssuerBackend, LocalCa},
        nexus::{NexusBackend, NexusConfig, NexusSigner},
        scm::{ScmAuth, ScmBackend, ScmConfig, ScmFlavor},
    },
    config::LabelRequirement,
    crd::v1alpha1::{
        ClusterIssuer, Issuer,
        issuer::{
            CaIssuer, IssuerPolicy, IssuerStatus, NexusIssuer, NexusSigningMode, ScmFlavor as SpecFlavor,
            ScmIssuer, TrustAnchor,
        },
    },
    pki::credentials::SecretString,
};

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

/// The parts of Issuer and ClusterIssuer specs the backend builder needs.
pub struct IssuerParts<'a> {
    /// SCM settings.
    pub scm: Option<&'a ScmIssuer>,
    /// Nexus settings.
    pub nexus: Option<&'a NexusIssuer>,
    /// Local CA settings.
    pub ca: Option<&'a CaIssuer>,
    /// Where referenced Secrets live.
    pub secret_namespace: String,
}

/// Where an issuer's Secrets are read, and the label they must carry (`--issuer-secret-label`).
struct SecretSource<'a> {
    api: Api<Secret>,
    namespace: &'a str,
    required_label: Option<&'a LabelRequirement>,
}

impl SecretSource<'_> {
    /// Reads a Secret the issuer references; refuses it without the required label.
    async fn read(&self, name: &str) -> Result<Secret, IssuerError> {
        let secret = self
            .api
            .get_opt(name)
            .await
            .map_err(|source| IssuerError::ReadSecret {
                namespace: self.namespace.into(),
                name: name.into(),
                source,
            })?
            .ok_or_else(|| IssuerError::SecretNotFound {
                namespace: self.namespace.into(),
                name: name.into(),
            })?;
        check_secret_label(self.required_label, &secret, self.namespace)?;
        Ok(secret)
    }
}

/// The opt-in guard: with `--issuer-secret-label`, an issuer may only use Secrets carrying the
/// label, so creating an Issuer no longer grants the use of every Secret in its namespace.
fn check_secret_label(
    required: Option<&LabelRequirement>,
    secret: &Secret,
    namespace: &str,
) -> Result<(), IssuerError> {
    match required {
        Some(required) if !required.matches(secret.metadata.labels.as_ref()) => {
            Err(IssuerError::SecretNotLabelled {
                namespace: namespace.into(),
                name: secret.name_any(),
                label: required.to_string(),
                assignment: required.kubectl_argument(),
            })
        }
        _ => Ok(()),
    }
}

fn secret_text(secret: &Secret, namespace: &str, key: &str) -> Result<String, IssuerError> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
        .ok_or_else(|| IssuerError::SecretKeyMissing {
            namespace: namespace.into(),
            name: secret.name_any(),
            key: key.into(),
        })
}

/// Builds the backend an issuer describes, reading its Secrets.
pub async fn build_backend(ctx: &Context, parts: &IssuerParts<'_>) -> Result<Backend, IssuerError> {
    let ns = parts.secret_namespace.as_str();
    let secrets = SecretSource {
        api: Api::namespaced(ctx.client.clone(), ns),
        namespace: ns,
        required_label: ctx.issuer_secret_label.as_ref(),
    };
    if let Some(ca) = parts.ca {
        let secret = secrets.read(&ca.secret_name).await?;
        let local = LocalCa::from_pem(
            &secret_text(&secret, ns, "tls.crt")?,
            &secret_text(&secret, ns, "tls.key")?,
        )?;
        return Ok(Backend::Ca(CaIssuerBackend::new(local)));
    }
    if let Some(scm) = parts.scm {
        let auth = if let Some(password) = &scm.auth.password {
            let secret = secrets.read(&password.secret_name).await?;
            ScmAuth::Password {
                login: secret_text(&secret, ns, password.login_key.as_deref().unwrap_or("login"))?,
                password: SecretString::new(secret_text(
                    &secret,
                    ns,
                    password.password_key.as_deref().unwrap_or("password"),
                )?),
            }
        } else if let Some(cert) = &scm.auth.client_certificate {
            let secret = secrets.read(&cert.secret_name).await?;
            let identity = format!(
                "{}\n{}\n",
                secret_text(&secret, ns, "tls.crt")?,
                secret_text(&secret, ns, "tls.key")?
            );
            ScmAuth::ClientCertificate {
                login: cert.login.clone(),
                identity_pem: SecretString::new(identity),
            }
        } else {
            return Err(IssuerError::Unsupported(
                "scm.auth needs password or clientCertificate".into(),
            ));
        };
        let mut config = ScmConfig::new(
            scm.url.clone(),
            scm.customer_uri.clone(),
            auth,
            scm.org_id,
            scm.cert_type,
        );
        config.flavor = match scm.flavor {
            SpecFlavor::Sectigo => ScmFlavor::Sectigo,
            SpecFlavor::InCommon => ScmFlavor::InCommon,
        };
        config.term_days = scm.term.and_then(|t| u32::try_from(t).ok());
        config.external_requester.clone_from(&scm.external_requester);
        config.comments.clone_from(&scm.comments);
        config.custom_fields = scm
            .custom_fields
            .iter()
            .map(|f| (f.name.clone(), f.value.clone()))
            .collect();
        config.ca_bundle_pem.clone_from(&scm.ca_bundle);
        return Ok(Backend::Scm(ScmBackend::new(config)?));
    }
    if let Some(nexus) = parts.nexus {
        return Ok(Backend::Nexus(NexusBackend::new(
            nexus_config(&secrets, nexus).await?,
        )?));
    }
    Err(IssuerError::Unsupported(
        "exactly one of scm, nexus or ca must be set".into(),
    ))
}

/// The Nexus client configuration: the officer's TLS identity from `clientCertificateSecretName`,
/// and in `Caller` mode the signing officer from `signingSecretName` (the TLS officer when unset).
async fn nexus_config(secrets: &SecretSource<'_>, nexus: &NexusIssuer) -> Result<NexusConfig, IssuerError> {
    let ns = secrets.namespace;
    let client = secrets.read(&nexus.client_certificate_secret_name).await?;
    let client_certificate = secret_text(&client, ns, "tls.crt")?;
    let client_key = secret_text(&client, ns, "tls.key")?;
    let signer = match nexus.signing_mode {
        NexusSigningMode::Server => None,
        NexusSigningMode::Caller => Some(match &nexus.signing_secret_name {
            Some(name) => {
                let signing = secrets.read(name).await?;
                NexusSigner {
                    certificate_chain_pem: secret_text(&signing, ns, "tls.crt")?,
                    key_pem: SecretString::new(secret_text(&signing, ns, "tls.key")?),
                }
            }
            None => NexusSigner {
                certificate_chain_pem: client_certificate.clone(),
                key_pem: SecretString::new(client_key.clone()),
            },
        }),
    };
    let mut config = NexusConfig::new(
        nexus.url.clone(),
        SecretString::new(format!("{client_certificate}\n{client_key}\n")),
    );
    config.signer = signer;
    config.token_procedure.clone_from(&nexus.token_procedure);
    config.ca_bundle_pem.clone_from(&nexus.ca_bundle);
    Ok(config)
}

/// Poll interval of an issuer's pending orders.
pub fn poll_interval(scm: Option<&ScmIssuer>) -> Duration {
    scm.and_then(|s| s.poll_interval.as_deref())
        .and_then(|p| super::certificate::validate::parse_duration(p).ok())
        .unwrap_or(Duration::from_secs(30))
        .max(Duration::from_secs(1))
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

/// Checks one issuer and returns its new status.
async fn check(
    ctx: &Context,
    parts: &IssuerParts<'_>,
    policy: Option<&IssuerPolicy>,
    old: Option<&IssuerStatus>,
    generation: Option<i64>,
) -> (IssuerStatus, bool) {
    let mut status = old.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.last_check_time = Some(Time(jiff::Timestamp::now()));
    // A policy entry that can never match is the administrator's mistake to see here, before
    // Certificates start failing against it.
    let built = match policy.map_or(Ok(()), policy::validate) {
        Ok(()) => build_backend(ctx, parts).await,
        Err(invalid) => Err(IssuerError::from(invalid)),
    };
    let outcome = match built {
        Ok(backend) => backend
            .check()
            .await
            .map(|profiles| (backend, profiles))
            .map_err(IssuerError::from),
        Err(e) => Err(e),
    };
    match outcome {
        Ok((backend, profiles)) => {
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
            (status, true)
        }
        Err(error) => {
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

/// Reconciles a namespaced Issuer.
pub async fn reconcile_issuer(issuer: Arc<Issuer>, ctx: Arc<Context>) -> Result<Action, IssuerError> {
    let namespace = issuer.namespace().unwrap_or_default();
    let parts = IssuerParts {
        scm: issuer.spec.scm.as_ref(),
        nexus: issuer.spec.nexus.as_ref(),
        ca: issuer.spec.ca.as_ref(),
        secret_namespace: namespace.clone(),
    };
    let (status, ready) = check(
        &ctx,
        &parts,
        issuer.spec.policy(),
        issuer.status.as_ref(),
        issuer.meta().generation,
    )
    .await;
    if status_changed(issuer.status.as_ref(), &status) {
        let api: Api<Issuer> = Api::namespaced(ctx.client.clone(), &namespace);
        super::status::write(&api, &issuer.name_any(), &status)
            .await
            .map_err(IssuerError::UpdateStatus)?;
    }
    Ok(Action::requeue(if ready { RECHECK } else { RETRY }))
}

/// Reconciles a ClusterIssuer (Secrets in the cluster resource namespace).
pub async fn reconcile_cluster_issuer(
    issuer: Arc<ClusterIssuer>,
    ctx: Arc<Context>,
) -> Result<Action, IssuerError> {
    let parts = IssuerParts {
        scm: issuer.spec.scm.as_ref(),
        nexus: issuer.spec.nexus.as_ref(),
        ca: issuer.spec.ca.as_ref(),
        secret_namespace: ctx.cluster_resource_namespace.clone(),
    };
    let (status, ready) = check(
        &ctx,
        &parts,
        issuer.spec.policy(),
        issuer.status.as_ref(),
        issuer.meta().generation,
    )
    .await;
    if status_changed(issuer.status.as_ref(), &status) {
        let api: Api<ClusterIssuer> = Api::all(ctx.client.clone());
        super::status::write(&api, &issuer.name_any(), &status)
            .await
            .map_err(IssuerError::UpdateStatus)?;
    }
    Ok(Action::requeue(if ready { RECHECK } else { RETRY }))
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

    use super::*;

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
        assert!(check_secret_label(None, &secret(&[]), "team-a").is_ok());
    }

    #[test]
    fn with_the_flag_only_labelled_secrets_may_be_used() {
        let any_value: LabelRequirement = "pki-operator.io/issuer-secret".parse().unwrap();
        assert!(
            check_secret_label(
                Some(&any_value),
                &secret(&[("pki-operator.io/issuer-secret", "")]),
                "team-a"
            )
            .is_ok()
        );
        let error = check_secret_label(Some(&any_value), &secret(&[("other", "x")]), "team-a").unwrap_err();
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
        let error = check_secret_label(Some(&exact), &wrong_value, "ns").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("pki-operator.io/issuer-secret=approved"),
            "{error}"
        );
        let right_value = secret(&[("pki-operator.io/issuer-secret", "approved")]);
        assert!(check_secret_label(Some(&exact), &right_value, "ns").is_ok());
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
