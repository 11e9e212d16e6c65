//! Loading what a reconcile needs: admission (a valid spec, the persisted backoff, a usable
//! issuer whose policy allows the request) and the observation of the output Secret.

use super::error::{Error, kube_error};
use super::plan::{Observed, SecretState};
use super::status::write_status;
use super::validate::{ValidatedCertificate, validate};
use super::{
    ISSUER_WAIT, MAX_ISSUANCE_BACKOFF, RENEW_ANNOTATION, SERVED_RENEW_ANNOTATION, delivered_order,
    ensure_finalizer, issuer_ref, now, policy, publish,
};
use crate::backend::CaBackend as _;
use crate::controller::issuer::ResolvedIssuer;
use crate::controller::{Context, conditions};
use crate::crd::v1alpha1::Certificate;
use crate::crd::v1alpha1::certificate::CertificateStatus;
use crate::crd::v1alpha1::common::IssuerKind;
use crate::pki::credentials::SecretString;
use crate::pki::key::PrivateKey;
use crate::secret;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use std::time::Duration;

/// The PKCS#12 password when keystores are requested.
pub(super) async fn pkcs12_password(
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

/// Whether a reconcile goes on to the CA.
pub(super) enum Admission {
    /// The spec is valid and the issuer usable and willing (boxed: a built backend is large).
    Proceed(Box<(ValidatedCertificate, ResolvedIssuer)>),
    /// Stop here (status written when it changed); look again as the action says.
    Stop(Action),
}

/// Validates the spec, keeps the finalizer, honours the persisted backoff, resolves the issuer
/// `issuerRef` names and applies its policy — all before any CA call.
pub(super) async fn admit(
    cert: &Certificate,
    ctx: &Context,
    certs: &Api<Certificate>,
    old_status: &CertificateStatus,
    status: &mut CertificateStatus,
) -> Result<Admission, Error> {
    let generation = cert.meta().generation;
    let name = cert.name_any();
    let namespace = cert.namespace().unwrap_or_default();
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
            let note = "the spec is invalid";
            conditions::set(
                &mut status.conditions,
                "Issuing",
                false,
                "InvalidSpec",
                note,
                generation,
            );
            write_status(certs, &name, old_status, status).await?;
            return Ok(Admission::Stop(Action::await_change()));
        }
    };
    ensure_finalizer(cert, certs, spec.revoke_on_delete.is_some()).await?;
    // A spec change resets the backoff; otherwise honour the persisted one (survives restarts).
    let spec_changed = old_status.observed_generation != generation;
    if spec_changed {
        status.failed_issuance_attempts = None;
        status.last_failure_time = None;
    }
    // Before the backoff: a failure count left from a cluster-wide run must not hide the reason.
    if cert.spec.issuer_ref.kind == IssuerKind::ClusterIssuer && !ctx.scope.serves_cluster_scoped() {
        let refusal = ("ClusterIssuerDisabled", cluster_issuer_disabled(cert, ctx));
        let issuing = "no order is placed: the issuer is not available";
        return refuse(cert, ctx, certs, (old_status, status), refusal, issuing).await;
    }
    if let Some(wait) = persisted_backoff(old_status).filter(|_| !spec_changed) {
        return Ok(Admission::Stop(Action::requeue(wait)));
    }
    let issuer = match issuer_ref::resolve_spec(ctx, &cert.spec.issuer_ref, &namespace).await {
        Ok(issuer) => issuer,
        Err(unusable) => {
            let message = crate::controller::errors::error_chain(&unusable);
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                "IssuerNotReady",
                message,
                generation,
            );
            write_status(certs, &name, old_status, status).await?;
            return Ok(Admission::Stop(Action::requeue(ISSUER_WAIT)));
        }
    };
    let refusal = match refused_by_issuer(&issuer, &namespace, &spec) {
        Some(refusal) => Some(refusal),
        None => awaiting_domain_validation(ctx, &issuer, &spec).await?,
    };
    if let Some(refusal) = refusal {
        let issuing = if refusal.0 == "DomainNotValidated" {
            "no order is placed until the domain is validated"
        } else {
            "no order is placed while the issuer refuses the request"
        };
        return refuse(cert, ctx, certs, (old_status, status), refusal, issuing).await;
    }
    Ok(Admission::Proceed(Box::new((spec, issuer))))
}

/// How long the failure backoff recorded in status still holds, if it does.
fn persisted_backoff(old_status: &CertificateStatus) -> Option<Duration> {
    let (attempts, failed_at) = (
        old_status.failed_issuance_attempts?,
        old_status.last_failure_time.as_ref()?,
    );
    let due = crate::controller::backoff::persisted_until(
        attempts.max(1).unsigned_abs(),
        failed_at.0.as_second(),
        MAX_ISSUANCE_BACKOFF,
    );
    (attempts > 0 && now() < due).then(|| Duration::from_secs((due - now()).unsigned_abs()))
}

/// `Ready=False` and `Issuing=False` with `reason`, a Warning when that is news, and no order:
/// the Certificate waits for a change of itself, its issuer or a DomainValidation (all watched;
/// the operator's mode changes only with a restart).
async fn refuse(
    cert: &Certificate,
    ctx: &Context,
    certs: &Api<Certificate>,
    (old_status, status): (&CertificateStatus, &mut CertificateStatus),
    (reason, message): (&'static str, String),
    issuing: &'static str,
) -> Result<Admission, Error> {
    let generation = cert.meta().generation;
    conditions::set(
        &mut status.conditions,
        "Ready",
        false,
        reason,
        message.clone(),
        generation,
    );
    conditions::set(
        &mut status.conditions,
        "Issuing",
        false,
        reason,
        issuing,
        generation,
    );
    if write_status(certs, &cert.name_any(), old_status, status).await? {
        publish(ctx, cert, EventType::Warning, reason, &message).await;
    }
    Ok(Admission::Stop(Action::await_change()))
}

/// Why a Certificate cannot use its ClusterIssuer: a namespace-scoped operator
/// (`--watch-namespaces`) serves no cluster-scoped kind and may not read ClusterIssuers.
fn cluster_issuer_disabled(cert: &Certificate, ctx: &Context) -> String {
    format!(
        "ClusterIssuer {} is not available: this operator is namespace-scoped (--watch-namespaces {}) and serves no cluster-scoped kind; use an Issuer in namespace {}",
        cert.spec.issuer_ref.name,
        ctx.scope.namespaces().unwrap_or_default().join(","),
        cert.namespace().unwrap_or_default()
    )
}

/// Why the issuer refuses this request before any CA call, as (reason, message): its policy
/// does not serve this namespace or these names (`PolicyViolation`), or its backend cannot
/// issue (`Unsupported`). Revocation policies are not required to be backed: the `ca` backend
/// keeps no revocation list, so there is nothing to revoke there.
fn refused_by_issuer(
    issuer: &ResolvedIssuer,
    namespace: &str,
    spec: &ValidatedCertificate,
) -> Option<(&'static str, String)> {
    if let Err(violation) = policy::check_optional(issuer.policy.as_ref(), namespace, &spec.subject) {
        return Some(("PolicyViolation", violation.to_string()));
    }
    let needed = crate::backend::Capabilities::from(crate::backend::Capability::Issue);
    let backend = &issuer.backend;
    backend
        .capabilities()
        .require(backend.kind(), needed)
        .err()
        .map(|unsupported| ("Unsupported", format!("{}: {unsupported}", issuer.target)))
}

/// `DomainNotValidated` when a DomainValidation for this issuer covers one of the Certificate's
/// names and is not Ready: the CA would refuse the order (SCM -107), so none is placed. Only for
/// backends that validate domains; the list is served from the apiserver's watch cache.
async fn awaiting_domain_validation(
    ctx: &Context,
    issuer: &ResolvedIssuer,
    spec: &ValidatedCertificate,
) -> Result<Option<(&'static str, String)>, Error> {
    let backend = &issuer.backend;
    // Namespace-scoped: DomainValidations (cluster-scoped) are not served and cannot be read;
    // the CA's own refusal (SCM -107) then says a domain is not validated.
    if !backend
        .capabilities()
        .contains(crate::backend::Capability::DomainValidation)
        || !ctx.scope.serves_cluster_scoped()
    {
        return Ok(None);
    }
    let validations = Api::<crate::crd::v1alpha1::DomainValidation>::all(ctx.client.clone())
        .list(&kube::api::ListParams::default().match_any())
        .await
        .map_err(kube_error("list DomainValidations"))?
        .items;
    Ok(crate::controller::domain_validation::awaited(
        &validations,
        &issuer.target,
        &spec.subject.dns_names,
    )
    .map(|(dv, name)| {
        let why = dv
            .status
            .as_ref()
            .and_then(|s| conditions::get(&s.conditions, "Ready"))
            .map_or_else(|| "not checked yet".to_owned(), |c| format!("{}: {}", c.reason, c.message));
        (
            "DomainNotValidated",
            format!(
                "{name} is under {}, which is not validated yet at the CA (DomainValidation {}: {why})",
                dv.spec.domain,
                dv.name_any()
            ),
        )
    }))
}

/// The output Secret as observed, and what the Certificate asks of it.
pub(super) struct Observation {
    /// The Secret named `secretName`, if any.
    pub(super) secret: Option<Secret>,
    /// Ownership and health of that Secret.
    pub(super) state: SecretState,
    /// Its `tls.key`, when readable.
    pub(super) key: Option<PrivateKey>,
    /// The `pki-operator.io/renew` annotation of the Certificate.
    pub(super) renew_request: Option<String>,
    /// The renewal request the Secret's certificate served.
    pub(super) served: Option<String>,
}

/// What the extra outputs are made from (kept apart so the observation can be moved).
pub(super) struct OutputSources {
    password: Option<SecretString>,
    formats: Vec<crate::crd::v1alpha1::certificate::OutputFormatType>,
}

impl OutputSources {
    /// The outputs the Secret must hold.
    pub(super) fn outputs<'a>(&'a self, cert: &'a Certificate) -> secret::Outputs<'a> {
        secret::Outputs {
            template: cert.spec.secret_template.as_ref(),
            formats: &self.formats,
            pkcs12_password: self.password.as_ref().map(SecretString::expose),
        }
    }
}

/// Reads the output Secret and the keystore password. `Ok(Err(message))`: the password Secret
/// is missing, as the message says.
pub(super) async fn observe(
    cert: &Certificate,
    ctx: &Context,
    spec: &ValidatedCertificate,
) -> Result<Result<(Observation, OutputSources), String>, Error> {
    let namespace = cert.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret = secrets
        .get_opt(&spec.secret_name)
        .await
        .map_err(kube_error("read the output Secret"))?;
    let (state, key) = secret::observe(secret.as_ref(), &cert.uid().unwrap_or_default());
    let served = secret
        .as_ref()
        .and_then(|s| s.annotations().get(SERVED_RENEW_ANNOTATION).cloned());
    let password = match pkcs12_password(cert, ctx, &namespace).await {
        Ok(password) => password,
        Err(message) => return Ok(Err(message)),
    };
    let formats = cert
        .spec
        .additional_output_formats
        .iter()
        .map(|f| f.format)
        .collect();
    let observation = Observation {
        secret,
        state,
        key,
        renew_request: cert.annotations().get(RENEW_ANNOTATION).cloned(),
        served,
    };
    Ok(Ok((observation, OutputSources { password, formats })))
}

impl Observation {
    /// The facts the planner decides on.
    pub(super) fn facts<'a>(
        &self,
        spec: &'a ValidatedCertificate,
        issuer: &ResolvedIssuer,
        outputs: &secret::Outputs<'_>,
        status: &CertificateStatus,
    ) -> Observed<'a> {
        // The certificate in the Secret came from this order; an issuer other than the one
        // `issuerRef` names now means a new issuance (orders without a recorded issuer predate
        // the record and are left alone until their renewal).
        let issuer_changed = delivered_order(status)
            .and_then(|o| o.issuer.as_ref())
            .is_some_and(|i| !issuer_ref::same_reference(i, &issuer.identity));
        Observed {
            now: now(),
            spec,
            key_algorithm_matches: self
                .key
                .as_ref()
                .is_none_or(|k| k.algorithm() == spec.key_algorithm),
            manual_renewal: self.renew_request.is_some() && self.renew_request != self.served,
            secret: self.state.clone(),
            outputs_complete: self
                .secret
                .as_ref()
                .is_some_and(|s| secret::has_outputs(s, outputs)),
            repairable: self.key.is_some()
                && status
                    .order
                    .as_ref()
                    .is_some_and(|o| o.state == "Issued" && issuer.placed(o)),
            issuer_changed,
        }
    }
}
