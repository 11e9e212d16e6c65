//! Building a backend from an issuer's spec and the Secrets it references: reading the Secrets
//! (refusing unlabelled ones under `--issuer-secret-label`), parsing the credentials, and making
//! the CA client. Records the version of every Secret read, so the backend cache can tell when a
//! build is outdated.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::{IssuerError, IssuerSpecView, cache::SecretVersion};
use crate::{
    backend::{
        Backend,
        ca::{CaIssuerBackend, LocalCa},
        nexus::{NexusBackend, NexusConfig, NexusSigner},
        scm::{ScmAuth, ScmBackend, ScmConfig, ScmFlavor},
    },
    config::LabelRequirement,
    controller::Context,
    crd::v1alpha1::issuer::{NexusIssuer, NexusSigningMode, ScmFlavor as SpecFlavor, ScmIssuer},
    pki::credentials::SecretString,
};

/// Where an issuer's Secrets are read, the label they must carry (`--issuer-secret-label`), and
/// the version of each one read.
struct SecretSource<'a> {
    api: Api<Secret>,
    namespace: &'a str,
    required_label: Option<&'a LabelRequirement>,
    read: Mutex<Vec<SecretVersion>>,
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
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(SecretVersion::of(&secret));
        Ok(secret)
    }
}

/// The opt-in guard: with `--issuer-secret-label`, an issuer may only use Secrets carrying the
/// label, so creating an Issuer no longer grants the use of every Secret in its namespace.
pub(super) fn check_secret_label(
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

/// Builds the backend `spec` describes, reading its Secrets in `secret_namespace`; returns it
/// with the version of each Secret it was built from.
pub async fn build_backend(
    ctx: &Context,
    spec: IssuerSpecView<'_>,
    secret_namespace: &str,
) -> Result<(Backend, Vec<SecretVersion>), IssuerError> {
    let secrets = SecretSource {
        api: Api::namespaced(ctx.client.clone(), secret_namespace),
        namespace: secret_namespace,
        required_label: ctx.issuer_secret_label.as_ref(),
        read: Mutex::default(),
    };
    let backend = build_from(&secrets, spec).await?;
    let read = secrets.read.into_inner().unwrap_or_else(PoisonError::into_inner);
    Ok((backend, read))
}

async fn build_from(secrets: &SecretSource<'_>, spec: IssuerSpecView<'_>) -> Result<Backend, IssuerError> {
    let ns = secrets.namespace;
    if let Some(ca) = spec.ca {
        let secret = secrets.read(&ca.secret_name).await?;
        let local = LocalCa::from_pem(
            &secret_text(&secret, ns, "tls.crt")?,
            &secret_text(&secret, ns, "tls.key")?,
        )?;
        return Ok(Backend::Ca(CaIssuerBackend::new(local)));
    }
    if let Some(scm) = spec.scm {
        return Ok(Backend::Scm(ScmBackend::new(scm_config(secrets, scm).await?)?));
    }
    if let Some(nexus) = spec.nexus {
        return Ok(Backend::Nexus(NexusBackend::new(
            nexus_config(secrets, nexus).await?,
        )?));
    }
    Err(IssuerError::Unsupported(
        "exactly one of scm, nexus or ca must be set".into(),
    ))
}

/// The SCM client configuration: password or client-certificate login from the referenced
/// Secret, and the enrollment defaults of the spec.
async fn scm_config(secrets: &SecretSource<'_>, scm: &ScmIssuer) -> Result<ScmConfig, IssuerError> {
    let ns = secrets.namespace;
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
    config.dcv = scm.dcv.as_ref().map(Into::into);
    config.ca_bundle_pem.clone_from(&scm.ca_bundle);
    Ok(config)
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
        .and_then(|p| crate::controller::certificate::validate::parse_duration(p).ok())
        .unwrap_or(Duration::from_secs(30))
        .max(Duration::from_secs(1))
}
