//! The DomainValidation controller: proves control of a domain to SCM and keeps it proven.
//!
//! Each reconcile reads the CA's DCV state (`POST /api/dcv/v2/validation/status`, the source of
//! truth), lets the pure [`plan`] decide, and takes at most one step that changes the CA's order
//! (start, submit, clear), then requeues: a crash between steps leaves nothing the next read of
//! the status does not show. A challenge is published through `status.challenge` (which the HTTP
//! solver on every replica serves from) and checked by the operator itself before it is
//! submitted.

pub mod ingress;
pub mod plan;
pub mod self_check;
pub mod solvers;

use std::{sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, ResourceExt as _, runtime::controller::Action};

use self::{
    plan::{Facts, Step},
    solvers::Solver,
};
use super::{
    Context, conditions, errors,
    issuer::{IssuerTarget, resolve},
};
use crate::{
    backend::{
        Backend, CaBackend as _, Capability,
        scm::{
            ScmBackend,
            dcv::{self, Challenge, DcvError, DcvState, ValidationStatus},
        },
    },
    crd::v1alpha1::{
        DomainValidation,
        domain_validation::{DcvChallenge, DcvMethod as SpecMethod, DomainValidationStatus},
    },
};

/// Whether validating `domain` covers the certificate name `name` (the domain itself, any name
/// under it, and wildcards under it: sub-domains inherit their registered domain's validation,
/// `scm-dcv-domains.md` §8.4).
pub fn covers(domain: &str, name: &str) -> bool {
    let domain = domain
        .trim_end_matches('.')
        .trim_start_matches("*.")
        .to_ascii_lowercase();
    let name = name
        .trim_end_matches('.')
        .trim_start_matches("*.")
        .to_ascii_lowercase();
    name == domain || name.ends_with(&format!(".{domain}"))
}

/// The first DomainValidation for the issuer `target` that covers one of `names` and is not
/// Ready, with the name it covers: certificates for that name wait for it.
pub fn awaited<'a>(
    validations: &'a [DomainValidation],
    target: &IssuerTarget,
    names: &'a [String],
) -> Option<(&'a DomainValidation, &'a str)> {
    validations
        .iter()
        .filter(|dv| IssuerTarget::from_cluster_scoped(&dv.spec.issuer_ref) == *target)
        // Validated at the CA counts, whatever else keeps the object from Ready (a challenge
        // record that could not be removed, a revalidation that cannot publish).
        .filter(|dv| {
            !dv.status.as_ref().is_some_and(|s| {
                conditions::is_true(&s.conditions, "Ready")
                    || s.validation_status.as_deref() == Some(ValidationStatus::Validated.as_str())
            })
        })
        .find_map(|dv| {
            names
                .iter()
                .find(|name| covers(&dv.spec.domain, name))
                .map(|name| (dv, name.as_str()))
        })
}

/// Default `revalidateBefore`: 30 days.
const DEFAULT_REVALIDATE_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// How soon the next step follows a step that changed the CA's order.
const NEXT_STEP: Duration = Duration::from_secs(2);
/// The least time between two requests that the CA check a submitted order now.
const SYNC_INTERVAL: Duration = Duration::from_secs(60);
/// How soon a self-check that failed (or a publish) is tried again: each try also reads the
/// CA's status, so no faster than a followed order is polled.
const SELF_CHECK_RETRY: Duration = Duration::from_secs(30);
/// How soon an object whose issuer or domain cannot be used looks again (nothing it waits for
/// — an issuer becoming Ready, a domain created in SCM — is watched).
const BLOCKED_RETRY: Duration = Duration::from_secs(60);

/// Why a DomainValidation reconcile failed (what is not recorded in status as a reason).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A DCV call failed in a way that may pass; retried with backoff.
    #[error("DomainValidation {name}")]
    Dcv {
        /// The object.
        name: String,
        /// Cause.
        #[source]
        source: DcvError,
    },
    /// Writing status failed.
    #[error("cannot update the status of DomainValidation {name}")]
    UpdateStatus {
        /// The object.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// The backend's method for the spec's.
fn method(spec: SpecMethod) -> dcv::DcvMethod {
    match spec {
        SpecMethod::HTTP => dcv::DcvMethod::Http,
        SpecMethod::HTTPS => dcv::DcvMethod::Https,
        SpecMethod::CNAME => dcv::DcvMethod::Cname,
        SpecMethod::TXT => dcv::DcvMethod::Txt,
        SpecMethod::EMAIL => dcv::DcvMethod::Email,
    }
}

fn time(at: jiff::Timestamp) -> Time {
    Time(at)
}

/// The status's picture of `challenge`.
fn challenge_status(challenge: &Challenge, allowed_emails: Vec<String>) -> DcvChallenge {
    let mut status = DcvChallenge {
        allowed_emails,
        ..DcvChallenge::default()
    };
    match challenge {
        Challenge::File { url, content, .. } => {
            status.file_url = Some(url.clone());
            status.file_content = Some(content.clone());
        }
        Challenge::Cname { host, point } => {
            status.cname_host = Some(host.clone());
            status.cname_point = Some(point.clone());
        }
        Challenge::Txt { host, value } => {
            status.txt_host = Some(host.clone());
            status.txt_value = Some(value.clone());
        }
        Challenge::Email { email, reference } => {
            status.email.clone_from(email);
            status.email_reference.clone_from(reference);
        }
    }
    status
}

/// Records the CA's state in status (validation, order, dates).
fn record_state(status: &mut DomainValidationStatus, state: &DcvState) {
    status.validation_status = Some(state.status.as_str().to_owned());
    status.order_status = Some(state.order_status.as_str().to_owned());
    status.validated_at = state.validation_date.map(|d| time(plan::start_of(d)));
    status.expires_at = state.expiration_date.map(|d| time(plan::start_of(d)));
}

/// Reconciles one DomainValidation.
pub async fn reconcile(dv: Arc<DomainValidation>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = dv.name_any();
    let generation = dv.metadata.generation;
    let target = IssuerTarget::from_cluster_scoped(&dv.spec.issuer_ref);
    if !serves(&ctx.scope, &target) {
        // Another operator's: one watching a single namespace leaves every other issuer's
        // validations (and every ClusterIssuer's) to the operator that serves it, so two never
        // drive one domain's order.
        return Ok(Action::await_change());
    }
    let old = dv.status.clone().unwrap_or_default();
    if dv.metadata.deletion_timestamp.is_some() {
        return finalize(&dv, &ctx, &old).await;
    }
    let mut status = old.clone();
    status.observed_generation = generation;
    let outcome = step(&dv, &ctx, &mut status).await;
    let (action, error) = match outcome {
        Ok(Outcome {
            ready,
            reason,
            message,
            next,
            scheduled,
        }) => {
            conditions::set(
                &mut status.conditions,
                "Ready",
                ready,
                reason,
                message,
                generation,
            );
            status.next_check_time = scheduled.map(time);
            (Action::requeue(next), None)
        }
        Err(error) => {
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                error.reason(),
                error.to_string(),
                generation,
            );
            (Action::await_change(), Some(error))
        }
    };
    let api: Api<DomainValidation> = Api::all(ctx.client.clone());
    let written = super::status::write_if_changed(&api, &name, &old, &status)
        .await
        .map_err(|source| Error::UpdateStatus {
            name: name.clone(),
            source,
        })?;
    if written {
        ctx.events
            .announce_ready(dv.as_ref(), &old.conditions, &status.conditions)
            .await;
    }
    match error {
        Some(source) => Err(Error::Dcv { name, source }),
        None => Ok(action),
    }
}

/// Whether this operator serves DomainValidations of the issuer `target`: every issuer without
/// `--namespace`, else only Issuers in that namespace.
pub fn serves(scope: &crate::controller::WatchScope, target: &IssuerTarget) -> bool {
    match scope.namespaces() {
        None => true,
        Some(_) => {
            target.kind == crate::crd::v1alpha1::common::IssuerKind::Issuer
                && target
                    .namespace
                    .as_deref()
                    .is_some_and(|namespace| scope.serves_namespace(namespace))
        }
    }
}

/// The finalizer of a DomainValidation whose solver publishes outside the cluster (RFC 2136):
/// its record is removed before the object goes.
pub const FINALIZER: &str = "pki-operator.io/domain-validation-cleanup";

/// Deletion: the record an RFC 2136 solver published for the challenge in status is removed,
/// then the finalizer released. A record that cannot be removed (server or key gone) does not
/// hold the deletion: a Warning names it, for removal by hand. The CA's DCV order is left as it
/// is: it may be someone else's, and a validation serves every certificate of the domain.
async fn finalize(
    dv: &DomainValidation,
    ctx: &Context,
    status: &DomainValidationStatus,
) -> Result<Action, Error> {
    if !dv.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    if let Some(record) = status.challenge.as_ref().and_then(solvers::recorded) {
        let removed = match solvers::solver(ctx, dv).await {
            Ok(Solver::Rfc2136(rfc2136)) => rfc2136.remove(&record).await.map_err(|e| e.to_string()),
            // The TSIG Secret or the server went first (e.g. with the namespace).
            Err(error) => Err(error.to_string()),
            Ok(_) => Err("the solver is no longer rfc2136".to_owned()),
        };
        if let Err(why) = removed {
            let note = format!("the record {record:?} could not be removed; remove it by hand: {why}");
            ctx.events
                .publish(
                    dv,
                    kube::runtime::events::EventType::Warning,
                    "CleanupFailed",
                    &note,
                )
                .await;
        }
    }
    let api: Api<DomainValidation> = Api::all(ctx.client.clone());
    super::finalizer::ensure(&api, dv, FINALIZER, false)
        .await
        .map_err(|source| Error::UpdateStatus {
            name: dv.name_any(),
            source,
        })?;
    Ok(Action::await_change())
}

/// What a reconcile concluded, for the `Ready` condition and the requeue.
struct Outcome {
    ready: bool,
    reason: &'static str,
    message: String,
    next: Duration,
    /// The scheduled look at the CA's state shown in `status.nextCheckTime`: a submitted
    /// order's poll or the revalidation time. Retries and short steps show none, so waiting
    /// costs no status write per retry.
    scheduled: Option<jiff::Timestamp>,
}

impl Outcome {
    fn not_ready(reason: &'static str, message: impl Into<String>, next: Duration) -> Self {
        Self {
            ready: false,
            reason,
            message: message.into(),
            next,
            scheduled: None,
        }
    }
}

/// The step of one reconcile; transient CA failures are returned for the backoff.
async fn step(
    dv: &DomainValidation,
    ctx: &Context,
    status: &mut DomainValidationStatus,
) -> Result<Outcome, DcvError> {
    let domain = dv.spec.domain.as_str();
    let target = IssuerTarget::from_cluster_scoped(&dv.spec.issuer_ref);
    let issuer = match resolve(ctx, &target, None).await {
        Ok(issuer) => issuer,
        Err(unusable) => {
            return Ok(Outcome::not_ready(
                "IssuerNotReady",
                errors::error_chain(&unusable),
                BLOCKED_RETRY,
            ));
        }
    };
    let backend = &issuer.backend;
    let scm = match (
        backend
            .capabilities()
            .require(backend.kind(), Capability::DomainValidation.into()),
        backend.as_ref(),
    ) {
        (Ok(()), Backend::Scm(scm)) => scm,
        (Err(unsupported), _) => {
            return Ok(Outcome::not_ready(
                "Unsupported",
                format!("{target}: {unsupported}"),
                BLOCKED_RETRY,
            ));
        }
        (Ok(()), _) => {
            return Ok(Outcome::not_ready(
                "Unsupported",
                format!("{target}: only SCM issuers validate domains"),
                BLOCKED_RETRY,
            ));
        }
    };
    let solver = match solvers::solver(ctx, dv).await {
        Ok(solver) => solver,
        Err(error) => {
            return Ok(Outcome::not_ready(
                error.reason(),
                error.to_string(),
                BLOCKED_RETRY,
            ));
        }
    };
    // A record published outside the cluster must be removed if the object is deleted first.
    let wants_finalizer = matches!(solver, Solver::Rfc2136(_));
    let api: Api<DomainValidation> = Api::all(ctx.client.clone());
    if let Err(error) = super::finalizer::ensure(&api, dv, FINALIZER, wants_finalizer).await {
        return Ok(Outcome::not_ready(
            "KubernetesError",
            format!("cannot update finalizers: {error}"),
            SELF_CHECK_RETRY,
        ));
    }
    let state = match scm.dcv_status(domain).await {
        Ok(state) => state,
        Err(error) if error.is_transient() => return Err(error),
        Err(error) => return Ok(blocked(&error)),
    };
    record_state(status, &state);
    let revalidate_before = dv
        .spec
        .revalidate_before
        .as_deref()
        .and_then(|text| super::certificate::validate::parse_duration(text).ok())
        .unwrap_or(DEFAULT_REVALIDATE_BEFORE);
    let now = jiff::Timestamp::now();
    let method = method(dv.spec.method);
    let step = plan::plan(&Facts {
        state: &state,
        method,
        now,
        revalidate_before,
    });
    tracing::debug!(domain, ?step, "domain validation step");
    let run = Run {
        dv,
        ctx,
        scm,
        solver: &solver,
    };
    let result = act(&run, &state, step, now, status).await;
    match result {
        Err(error) if !error.is_transient() => Ok(blocked(&error)),
        other => other,
    }
}

/// `Ready=False` for a DCV error that waits for someone to act (the domain in SCM, the account).
fn blocked(error: &DcvError) -> Outcome {
    Outcome::not_ready(error.reason(), error.to_string(), BLOCKED_RETRY)
}

fn plus_secs(at: jiff::Timestamp, wait: Duration) -> jiff::Timestamp {
    at.checked_add(jiff::SignedDuration::try_from(wait).unwrap_or_default())
        .unwrap_or(jiff::Timestamp::MAX)
}

fn wait_until(at: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// What acting on a step needs besides the state and the status.
struct Run<'a> {
    dv: &'a DomainValidation,
    ctx: &'a Context,
    scm: &'a ScmBackend,
    solver: &'a Solver,
}

/// Carries out `step`: at most one call that changes the CA's order.
async fn act(
    run: &Run<'_>,
    state: &DcvState,
    step: Step,
    now: jiff::Timestamp,
    status: &mut DomainValidationStatus,
) -> Result<Outcome, DcvError> {
    let &Run { dv, scm, .. } = run;
    let domain = dv.spec.domain.as_str();
    match step {
        Step::Valid { revalidate_at } => {
            // Done: the challenge is no longer needed, so nothing serves or shows it any more.
            if let Err(why) = unpublish(run, status).await {
                return Ok(Outcome::not_ready(
                    "CleanupFailed",
                    format!("{domain} is validated, but its challenge record could not be removed: {why}"),
                    SELF_CHECK_RETRY,
                ));
            }
            status.challenge = None;
            let expires = state
                .expiration_date
                .map_or_else(|| "unknown".to_owned(), |d| d.to_string());
            Ok(Outcome {
                ready: true,
                reason: "Validated",
                message: format!(
                    "{domain} is validated at the CA until {expires}; revalidation starts at {revalidate_at}"
                ),
                // Re-read now and then, so a validation deleted or expired early at the CA is seen.
                // (`min` then `max`, not `clamp`, which panics: the interval is configurable
                // and may be shorter than a poll.)
                next: wait_until(revalidate_at, now)
                    .min(run.ctx.dcv_self_check.recheck_interval)
                    .max(NEXT_STEP),
                scheduled: Some(revalidate_at),
            })
        }
        Step::Follow { poll_at, challenge } => {
            follow(run, state, poll_at, challenge.as_ref(), now, status).await
        }
        Step::Clear => {
            scm.dcv_clear(domain).await?;
            Ok(Outcome::not_ready(
                "OrderLapsed",
                format!("the DCV order for {domain} lapsed without success; it was cleared and starts again"),
                NEXT_STEP,
            ))
        }
        Step::Start => {
            check_domain(scm, domain).await?;
            let challenge = scm.dcv_start(domain, method(dv.spec.method)).await?;
            status.challenge = Some(challenge_status(&challenge, Vec::new()));
            Ok(Outcome::not_ready(
                "ChallengeIssued",
                format!(
                    "the CA issued the {} challenge; publishing it",
                    dv.spec.method.as_str()
                ),
                NEXT_STEP,
            ))
        }
        Step::PublishAndSubmit(challenge) => publish_and_submit(run, &challenge, status).await,
        Step::SubmitTxt => {
            check_domain(scm, domain).await?;
            let submitted = scm.dcv_submit(domain, dcv::DcvMethod::Txt, None).await?;
            if let Some(challenge) = &submitted.challenge {
                status.challenge = Some(challenge_status(challenge, Vec::new()));
            }
            Ok(Outcome::not_ready(
                "Submitted",
                "TXT order submitted; its record is published next (shown in status.challenge)",
                NEXT_STEP,
            ))
        }
        Step::SubmitEmail => submit_email(dv, scm, status).await,
    }
}

/// Following a submitted order: keep our challenge published (a TXT record is published here:
/// its value exists only after submit), ask the CA to check once it answers, and say what is
/// awaited.
async fn follow(
    run: &Run<'_>,
    state: &DcvState,
    poll_at: jiff::Timestamp,
    challenge: Option<&Challenge>,
    now: jiff::Timestamp,
    status: &mut DomainValidationStatus,
) -> Result<Outcome, DcvError> {
    let dv = run.dv;
    let mut poll_at = poll_at;
    if let Solver::ScmConnector {
        connector_id,
        provider,
    } = run.solver
    {
        // SCM's agent publishes and SCM checks: what can fail on our side is the connector.
        if let Err(why) = connector_route(run.scm, connector_id.as_deref(), provider.as_deref()).await? {
            return Ok(Outcome::not_ready(
                CONNECTOR_UNAVAILABLE,
                format!("order submitted, but {why}"),
                wait_until(poll_at, now),
            ));
        }
    } else if let Some(challenge) = challenge {
        let allowed = status
            .challenge
            .as_ref()
            .map(|c| c.allowed_emails.clone())
            .unwrap_or_default();
        status.challenge = Some(challenge_status(challenge, allowed));
        if !matches!(challenge, Challenge::Email { .. }) {
            if let Err(why) = publish(run, challenge).await {
                return Ok(Outcome::not_ready("PublishFailed", why, SELF_CHECK_RETRY));
            }
            match self_check::check(run.ctx, dv, run.solver, challenge).await {
                // Our check passes and the CA's has not (yet): its next check may be hours
                // away, so ask it now — at most once a minute (the record may have appeared after
                // the CA's last look, e.g. a TXT published after its submit) — and read the
                // result at once when that check settled the order.
                Ok(())
                    if state
                        .last_check
                        .is_none_or(|last| plus_secs(last, SYNC_INTERVAL) <= now) =>
                {
                    let synced = run.scm.dcv_sync(&dv.spec.domain).await?;
                    if synced.order_status != dcv::OrderStatus::Submitted {
                        return Ok(Outcome {
                            ready: state.status == ValidationStatus::Validated,
                            reason: "Submitted",
                            message: "the CA checked the order; reading its result".into(),
                            next: NEXT_STEP,
                            scheduled: None,
                        });
                    }
                }
                // Answered, but the CA looked moments ago: come back when a request may follow.
                Ok(()) => {
                    if let Some(last) = state.last_check {
                        poll_at = poll_at.min(plus_secs(last, SYNC_INTERVAL));
                    }
                }
                Err(why) => {
                    return Ok(Outcome::not_ready(
                        "ChallengeNotReachable",
                        format!("order submitted, but its challenge is not answered yet: {why}"),
                        SELF_CHECK_RETRY,
                    ));
                }
            }
        }
    }
    let message = match (challenge, &state.next_check) {
        (Some(Challenge::Email { email, .. }), _) => format!(
            "a validation mail was sent to {}; a person must follow its link",
            email
                .as_deref()
                .or(dv.spec.email.as_deref())
                .unwrap_or("an approver address")
        ),
        (_, Some(next_check)) => format!(
            "order {} submitted; the CA checks next at {next_check}",
            state.order_backend_id.as_deref().unwrap_or("(no id)")
        ),
        _ => "a DCV order is submitted; waiting for the CA's check".to_owned(),
    };
    // A revalidation in flight: the domain is still validated until its expiry.
    let validated = state.status == ValidationStatus::Validated;
    Ok(Outcome {
        ready: validated,
        reason: if validated { "Revalidating" } else { "Submitted" },
        message,
        next: wait_until(poll_at, now),
        // The CA's own next check: stable across polls, so following an order writes nothing.
        scheduled: state.next_check,
    })
}

/// Publishes a DNS challenge with the RFC 2136 solver, or routes the HTTP solver's file through
/// an Ingress; the HTTP solver itself and manual DNS publish from status.
async fn publish(run: &Run<'_>, challenge: &Challenge) -> Result<(), String> {
    match (run.solver, solvers::record(challenge), challenge) {
        (Solver::Rfc2136(rfc2136), Some(record), _) => {
            // Checked first, so a followed order does not cost an update per poll.
            if record.is_served(rfc2136.server).await.unwrap_or(false) {
                return Ok(());
            }
            rfc2136.add(&record).await.map_err(|e| e.to_string())
        }
        (Solver::Http { ingress: Some(route) }, _, Challenge::File { url, .. }) => {
            let parsed = reqwest::Url::parse(url).map_err(|e| format!("the CA's file URL {url:?}: {e}"))?;
            let host = parsed.host_str().unwrap_or(&run.dv.spec.domain);
            let client = &run.ctx.client;
            ingress::ensure(
                client,
                &run.ctx.solver_service,
                run.dv,
                route,
                (host, parsed.path()),
            )
            .await
        }
        _ => Ok(()),
    }
}

/// Removes what [`publish`] made for the challenge shown in status: the RFC 2136 record, the
/// HTTP solver's Ingress route.
async fn unpublish(run: &Run<'_>, status: &DomainValidationStatus) -> Result<(), String> {
    match (run.solver, status.challenge.as_ref().and_then(solvers::recorded)) {
        (Solver::Rfc2136(rfc2136), Some(record)) => rfc2136.remove(&record).await.map_err(|e| e.to_string()),
        (Solver::Http { ingress: Some(route) }, _) => ingress::remove(&run.ctx.client, run.dv, route).await,
        _ => Ok(()),
    }
}

/// The challenge goes to status first (the solvers publish from there), is checked by the
/// operator itself, and only then submitted.
async fn publish_and_submit(
    run: &Run<'_>,
    challenge: &Challenge,
    status: &mut DomainValidationStatus,
) -> Result<Outcome, DcvError> {
    let &Run { dv, ctx, scm, solver } = run;
    let published = challenge_status(challenge, Vec::new());
    if status.challenge.as_ref() != Some(&published) {
        status.challenge = Some(published);
        return Ok(Outcome::not_ready(
            "ChallengeIssued",
            "publishing the challenge",
            NEXT_STEP,
        ));
    }
    if let Solver::ScmConnector {
        connector_id,
        provider,
    } = solver
    {
        // SCM's agent creates the record after the submit: nothing to publish or check first.
        let route = match connector_route(scm, connector_id.as_deref(), provider.as_deref()).await? {
            Ok(route) => route,
            Err(why) => return Ok(Outcome::not_ready(CONNECTOR_UNAVAILABLE, why, BLOCKED_RETRY)),
        };
        let submitted = scm.dcv_submit_through_connector(&dv.spec.domain, &route).await?;
        return Ok(Outcome::not_ready(
            "Submitted",
            format!(
                "order {} submitted through SCM DNS connector {}; SCM publishes the CNAME record",
                submitted.order_backend_id.as_deref().unwrap_or("(no id)"),
                route.id
            ),
            NEXT_STEP,
        ));
    }
    if let Err(why) = publish(run, challenge).await {
        return Ok(Outcome::not_ready("PublishFailed", why, SELF_CHECK_RETRY));
    }
    if let Err(why) = self_check::check(ctx, dv, solver, challenge).await {
        return Ok(Outcome::not_ready(
            "ChallengeNotReachable",
            format!("the challenge is not answered yet, so it is not submitted: {why}"),
            SELF_CHECK_RETRY,
        ));
    }
    let submitted = scm
        .dcv_submit(&dv.spec.domain, method(dv.spec.method), None)
        .await?;
    Ok(Outcome::not_ready(
        "Submitted",
        format!(
            "the challenge answers; order {} submitted",
            submitted.order_backend_id.as_deref().unwrap_or("(no id)")
        ),
        NEXT_STEP,
    ))
}

/// The reason while the SCM DNS connector cannot publish.
const CONNECTOR_UNAVAILABLE: &str = "DnsConnectorUnavailable";

/// The connector (and provider) a CNAME order is submitted through, or why none can be used: the
/// named connector (else the account's only `CONNECTED` one) must be `CONNECTED` and list the
/// provider (else, when it lists exactly one, that one is used).
async fn connector_route(
    scm: &ScmBackend,
    connector_id: Option<&str>,
    provider: Option<&str>,
) -> Result<Result<dcv::ConnectorRoute, String>, DcvError> {
    let connectors = scm.dns_connectors().await?;
    let connector = match pick_connector(&connectors, connector_id) {
        Ok(connector) => connector,
        Err(why) => return Ok(Err(why)),
    };
    if !connector.is_connected() {
        return Ok(Err(format!(
            "SCM DNS connector {} ({}) is {}, not CONNECTED: its agent must be running and reach SCM",
            connector.id, connector.name, connector.status
        )));
    }
    let providers = scm.dns_connector_providers(&connector.id).await?;
    let provider = match (provider, providers.as_slice()) {
        (Some(wanted), listed) if listed.iter().any(|p| p.eq_ignore_ascii_case(wanted)) => {
            Some(wanted.to_owned())
        }
        (Some(wanted), listed) => {
            return Ok(Err(format!(
                "SCM DNS connector {} does not serve provider {wanted:?} (spec.solver.dns.scmConnector.provider); it serves: {}",
                connector.id,
                listed.join(", ")
            )));
        }
        (None, [only]) => Some(only.clone()),
        // Optional per the API (§3.9): SCM then uses the connector's own configuration.
        (None, _) => None,
    };
    Ok(Ok(dcv::ConnectorRoute {
        id: connector.id.clone(),
        provider,
    }))
}

/// The connector `connector_id` names, else the only `CONNECTED` one; or why there is none.
fn pick_connector<'a>(
    connectors: &'a [dcv::DnsConnector],
    connector_id: Option<&str>,
) -> Result<&'a dcv::DnsConnector, String> {
    if let Some(id) = connector_id {
        return connectors
            .iter()
            .find(|c| c.id.eq_ignore_ascii_case(id))
            .ok_or_else(|| {
                format!(
                    "SCM has no DNS connector {id} (spec.solver.dns.scmConnector.connectorId); it has: {}",
                    describe_connectors(connectors)
                )
            });
    }
    let connected: Vec<&dcv::DnsConnector> = connectors.iter().filter(|c| c.is_connected()).collect();
    match connected.as_slice() {
        [only] => Ok(*only),
        [] => Err(format!(
            "SCM has no CONNECTED DNS connector ({}); start the agent or name one in spec.solver.dns.scmConnector.connectorId",
            describe_connectors(connectors)
        )),
        _ => Err(format!(
            "SCM has several CONNECTED DNS connectors ({}); name one in spec.solver.dns.scmConnector.connectorId",
            describe_connectors(connectors)
        )),
    }
}

fn describe_connectors(connectors: &[dcv::DnsConnector]) -> String {
    if connectors.is_empty() {
        return "none".into();
    }
    connectors
        .iter()
        .take(8)
        .map(|c| format!("{} {} {}", c.id, c.name, c.status))
        .collect::<Vec<_>>()
        .join(", ")
}

/// EMAIL: the allowed addresses go to status; the order is submitted only to `spec.email`, and
/// only when the CA allows it.
async fn submit_email(
    dv: &DomainValidation,
    scm: &ScmBackend,
    status: &mut DomainValidationStatus,
) -> Result<Outcome, DcvError> {
    let domain = dv.spec.domain.as_str();
    check_domain(scm, domain).await?;
    let allowed = scm.dcv_approver_emails(domain).await?.emails;
    let wanted = dv.spec.email.clone().unwrap_or_default();
    let mut shown = DcvChallenge {
        allowed_emails: allowed.iter().take(32).cloned().collect(),
        ..DcvChallenge::default()
    };
    if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&wanted)) {
        status.challenge = Some(shown);
        return Ok(Outcome::not_ready(
            "EmailNotAllowed",
            format!(
                "the CA does not send validation mail for {domain} to {wanted}; set spec.email to one of: {}",
                allowed.join(", ")
            ),
            BLOCKED_RETRY,
        ));
    }
    let submitted = scm
        .dcv_submit(domain, dcv::DcvMethod::Email, Some(&wanted))
        .await?;
    if let Some(Challenge::Email { email, reference }) = submitted.challenge {
        shown.email = email;
        shown.email_reference = reference;
    }
    status.challenge = Some(shown);
    Ok(Outcome::not_ready(
        "WaitingForEmail",
        format!("a validation mail was sent to {wanted}; a person must follow its link"),
        NEXT_STEP,
    ))
}

/// Before placing an order: the domain exists in SCM, is active, and DCV is enabled for it.
async fn check_domain(scm: &ScmBackend, domain: &str) -> Result<(), DcvError> {
    let Some(details) = scm.find_domain(domain).await? else {
        return Err(DcvError::DomainNotFound {
            domain: domain.to_owned(),
        });
    };
    if !details.is_active() {
        return Err(DcvError::DomainInactive {
            domain: domain.to_owned(),
        });
    }
    if details.validation_status.is_none() {
        // §5.3: `validationStatus` is "shown only if DCV is enabled".
        return Err(DcvError::DcvNotEnabled);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dv(name: &str, domain: &str, issuer: &str, ready: Option<bool>) -> DomainValidation {
        let mut value = serde_json::json!({
            "apiVersion": "pki-operator.io/v1alpha1", "kind": "DomainValidation",
            "metadata": {"name": name},
            "spec": {"domain": domain, "issuerRef": {"name": issuer}, "method": "EMAIL", "email": "a@b.c"},
        });
        if let Some(ready) = ready {
            value["status"] = serde_json::json!({"conditions": [{"type": "Ready",
                "status": if ready { "True" } else { "False" }, "reason": "x", "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_connector_is_the_named_one_else_the_only_connected_one() {
        let connector = |id: &str, status: &str| dcv::DnsConnector {
            id: id.into(),
            name: format!("agent {id}"),
            status: status.into(),
        };
        let one = [connector("aa", "NOT_CONNECTED"), connector("bb", "CONNECTED")];
        assert_eq!(pick_connector(&one, None).unwrap().id, "bb");
        assert_eq!(pick_connector(&one, Some("AA")).unwrap().id, "aa");
        let missing = pick_connector(&one, Some("cc")).unwrap_err();
        assert!(
            missing.contains("no DNS connector cc") && missing.contains("bb"),
            "{missing}"
        );
        let two = [connector("aa", "CONNECTED"), connector("bb", "CONNECTED")];
        assert!(pick_connector(&two, None).unwrap_err().contains("several"));
        assert!(pick_connector(&[], None).unwrap_err().contains("no CONNECTED"));
    }

    #[test]
    fn a_namespaced_operator_serves_only_its_namespaces_issuers() {
        use crate::crd::v1alpha1::common::IssuerKind;
        let target = |kind, namespace: Option<&str>| IssuerTarget {
            kind,
            namespace: namespace.map(Into::into),
            name: "scm".into(),
        };
        let team_issuer = target(IssuerKind::Issuer, Some("team"));
        let other_issuer = target(IssuerKind::Issuer, Some("other"));
        let cluster_issuer = target(IssuerKind::ClusterIssuer, None);
        let all = crate::controller::WatchScope::cluster();
        let team = crate::controller::WatchScope::namespace("team");
        assert!(serves(&all, &team_issuer) && serves(&all, &cluster_issuer));
        assert!(serves(&team, &team_issuer));
        assert!(!serves(&team, &other_issuer));
        assert!(
            !serves(&team, &cluster_issuer),
            "ClusterIssuers belong to a cluster-wide operator"
        );
    }

    #[test]
    fn a_domain_covers_itself_its_subdomains_and_wildcards_under_it() {
        assert!(covers("example.com", "example.com"));
        assert!(covers("example.com", "www.Example.com."));
        assert!(covers("example.com", "*.shop.example.com"));
        assert!(!covers("example.com", "badexample.com"));
        assert!(!covers("shop.example.com", "example.com"));
    }

    #[test]
    fn certificates_wait_only_for_unready_validations_of_their_issuer() {
        let corp = IssuerTarget::from_cluster_scoped(&crate::crd::v1alpha1::common::ClusterScopedIssuerRef {
            name: "corp".into(),
            kind: crate::crd::v1alpha1::common::IssuerKind::ClusterIssuer,
            namespace: None,
        });
        let names = vec!["www.example.com".to_owned(), "api.other.org".to_owned()];
        let validations = vec![
            dv("ready", "example.com", "corp", Some(true)),
            dv("elsewhere", "other.org", "another-issuer", Some(false)),
        ];
        assert!(awaited(&validations, &corp, &names).is_none());
        let validations = vec![
            dv("ready", "example.com", "corp", Some(true)),
            dv("pending", "other.org", "corp", None),
        ];
        let (waiting, name) = awaited(&validations, &corp, &names).unwrap();
        assert_eq!((waiting.name_any().as_str(), name), ("pending", "api.other.org"));
        // Validated at the CA but not Ready (e.g. its challenge record could not be removed):
        // Certificates do not wait.
        let mut cleanup_failed = dv("cleanup", "other.org", "corp", Some(false));
        if let Some(status) = cleanup_failed.status.as_mut() {
            status.validation_status = Some(ValidationStatus::Validated.as_str().to_owned());
        }
        let validations = vec![dv("ready", "example.com", "corp", Some(true)), cleanup_failed];
        assert!(awaited(&validations, &corp, &names).is_none());
    }
}
