//! The AlertConfig controller: evaluates every certificate in scope (managed and discovered) and
//! every long-unreachable discovery target against the levels ([`evaluate`]), tells each level
//! crossing once per channel plus `repeatInterval` reminders ([`channels`], with the sent-record
//! of [`record`]), syncs the CertMgmt service when asked ([`cert_mgmt`]) and reports in status.
//!
//! It runs on any change of an AlertConfig's spec, of a Certificate or of a DiscoveryTask, and
//! wakes by itself at the next threshold crossing, reminder or channel retry: there is no fixed
//! poll.

pub mod cert_mgmt;
pub mod channels;
pub mod evaluate;
pub mod record;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, ResourceExt as _,
    core::DeserializeGuard,
    runtime::{controller::Action, reflector::Store},
};

use self::evaluate::{Evaluation, Subject};
use super::{Context, conditions};
use crate::{
    alerting::{
        AlertSubject,
        ledger::{Ledger, Observed, key_hash},
    },
    crd::v1alpha1::{
        AlertConfig, Certificate, DiscoveryTask,
        alert_config::{ActiveAlert, AlertConfigStatus, AlertCounts, Level},
    },
};

/// Active alerts listed in status at most (the CRD's limit); `counts` counts all.
const MAX_LISTED: usize = 20;

/// Default `repeatInterval`.
const DEFAULT_REPEAT: Duration = Duration::from_secs(24 * 3600);

/// How soon a pass runs again when a channel had more owed than one pass sends: at once, but
/// after other objects' reconciles queued meanwhile.
pub const NEXT_BATCH: Duration = Duration::from_millis(100);

/// Why an AlertConfig reconcile failed (what is not a reason in its status).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An apiserver call failed.
    #[error("cannot {action} for AlertConfig {name}")]
    Kube {
        /// What was being done.
        action: &'static str,
        /// The AlertConfig.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// The caches the AlertConfig controller reads, filled when the controllers start, and the
/// alert-level series it published per AlertConfig (to remove them when they go).
#[derive(Default)]
pub struct Caches {
    /// Every Certificate the operator watches: the Certificate controller's own cache.
    pub certificates: OnceLock<Store<DeserializeGuard<Certificate>>>,
    /// Every DiscoveryTask the operator watches.
    pub discovery_tasks: OnceLock<Store<DeserializeGuard<DiscoveryTask>>>,
    /// `(namespace, name)` of the Certificates each AlertConfig gave an alert-level series.
    pub(super) published: Arc<Published>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

/// The alert-level series each AlertConfig published: `(namespace, name)` per AlertConfig.
pub type Published = Mutex<BTreeMap<String, BTreeSet<(String, String)>>>;

type Snapshot = (
    Vec<Arc<DeserializeGuard<Certificate>>>,
    Vec<Arc<DeserializeGuard<DiscoveryTask>>>,
);

impl Caches {
    /// The cached Certificates and DiscoveryTasks that could be read, once both caches synced
    /// (waiting a few seconds for that).
    async fn snapshot(&self) -> Option<Snapshot> {
        let certificates = self.certificates.get()?;
        let tasks = self.discovery_tasks.get()?;
        let synced = async {
            certificates.wait_until_ready().await.ok()?;
            tasks.wait_until_ready().await.ok()
        };
        tokio::time::timeout(Duration::from_secs(5), synced)
            .await
            .ok()??;
        // The store's own objects (reference-counted), not copies.
        Some((certificates.state(), tasks.state()))
    }
}

/// Reconciles one AlertConfig.
pub async fn reconcile(config: Arc<AlertConfig>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = config.name_any();
    let api: Api<AlertConfig> = Api::all(ctx.client.clone());
    let kube_error = |action: &'static str| {
        let name = name.clone();
        move |source| Error::Kube { action, name, source }
    };
    // Not even a deletion is handled for an AlertConfig another operator serves: its CertMgmt
    // teardown is that operator's.
    if !served_here(&ctx, &config) {
        return Ok(Action::await_change());
    }
    if config.metadata.deletion_timestamp.is_some() {
        forget_levels(&ctx.metrics, &ctx.alert_caches.published, &name);
        cert_mgmt::finalize(&ctx, &config).await;
        super::finalizer::ensure(&api, config.as_ref(), cert_mgmt::FINALIZER, false)
            .await
            .map_err(kube_error("remove the finalizer"))?;
        return Ok(Action::await_change());
    }
    super::finalizer::ensure(
        &api,
        config.as_ref(),
        cert_mgmt::FINALIZER,
        cert_mgmt::pushes(&config),
    )
    .await
    .map_err(kube_error("set the finalizer"))?;
    let Some((certificates, tasks)) = ctx.alert_caches.snapshot().await else {
        return Ok(Action::requeue(Duration::from_secs(2)));
    };
    let now = Timestamp::now();
    let discovered = ctx.inventory.snapshot();
    let certificates: Vec<&Certificate> = certificates.iter().filter_map(|g| g.0.as_ref().ok()).collect();
    let tasks: Vec<&DiscoveryTask> = tasks.iter().filter_map(|g| g.0.as_ref().ok()).collect();
    let inputs = evaluate::Inputs {
        certificates: &certificates,
        discovery_tasks: &tasks,
        discovered: &discovered,
    };
    let evaluation = evaluate::evaluate(&config, &inputs, now);
    publish_levels(&ctx, &name, &evaluation);

    let mut ledger = record::load(&ctx, &config)
        .await
        .map_err(kube_error("read the sent-record"))?;
    let channels = channels::build(&ctx, &config).await;
    let over_limit = observe(&mut ledger, &evaluation, (now, channels.len()));
    let old = config.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let repeat = i64::try_from(repeat_interval(&config).as_secs()).unwrap_or(i64::MAX);
    let delivered = channels::deliver(
        &ctx,
        &config,
        &channels,
        &mut ledger,
        &evaluation.alerting,
        &mut status.channels,
        (now, repeat),
    )
    .await;
    record::save(&ctx, &config, &ledger)
        .await
        .map_err(kube_error("write the sent-record"))?;
    let synced = cert_mgmt::reconcile(&ctx, &config, &mut status, now).await;

    let next = next_wake(
        &evaluation,
        &ledger,
        &status,
        (now, repeat),
        [delivered.retry_at, synced.next_poll],
    );
    summarize(&mut status, &evaluation, &ledger, now, next);
    set_ready(
        &mut status,
        config.metadata.generation,
        over_limit,
        synced.conflict,
    );
    super::status::write(&api, &name, &status)
        .await
        .map_err(kube_error("write status"))?;
    ctx.events
        .announce_ready(config.as_ref(), &old.conditions, &status.conditions)
        .await;
    Ok(if delivered.more_pending {
        Action::requeue(NEXT_BATCH)
    } else {
        next.map_or_else(Action::await_change, |at| {
            let wait = at.duration_since(now).max(jiff::SignedDuration::from_secs(1));
            Action::requeue(Duration::try_from(wait).unwrap_or(Duration::from_secs(1)))
        })
    })
}

/// An operator serving one namespace (`--namespace`) sees only that namespace's Certificates and
/// DiscoveryTasks, so it acts on an AlertConfig only when its scope lists that namespace alone
/// (`spec.scope.namespaces: [<namespace>]`); others are left, untouched, to an operator that
/// sees what they cover.
fn served_here(ctx: &Context, config: &AlertConfig) -> bool {
    let Some(served) = ctx.scope.namespaces() else {
        return true;
    };
    config
        .spec
        .scope
        .as_ref()
        .is_some_and(|s| !s.namespaces.is_empty() && s.namespaces.iter().all(|n| served.contains(n)))
}

/// When the pass after this one is due: the next level change, the next reminder of an alert
/// evaluated now on a channel not paused (a paused channel's retry wakes us instead), and the
/// `others` (a channel retry, the CertMgmt poll) — whatever comes first after `now`.
fn next_wake(
    evaluation: &Evaluation,
    ledger: &Ledger,
    status: &AlertConfigStatus,
    (now, repeat): (Timestamp, i64),
    others: [Option<Timestamp>; 2],
) -> Option<Timestamp> {
    let keys: BTreeSet<String> = evaluation.alerting.iter().map(|s| key_hash(&s.key)).collect();
    let active: Vec<String> = status
        .channels
        .iter()
        .filter(|c| channels::retry_at(c).is_none_or(|at| at <= now))
        .map(|c| c.channel.clone())
        .collect();
    let next_repeat = ledger
        .next_repeat(&keys, &active, (now.as_second(), repeat))
        .and_then(|at| Timestamp::from_second(at).ok());
    [evaluation.next_change, next_repeat]
        .into_iter()
        .chain(others)
        .flatten()
        .filter(|at| *at > now)
        .min()
}

fn repeat_interval(config: &AlertConfig) -> Duration {
    config
        .spec
        .repeat_interval
        .as_deref()
        .and_then(|text| super::certificate::validate::parse_duration(text).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_REPEAT)
}

/// Brings the sent-record to the evaluation; returns how many alerts did not fit in it.
fn observe(ledger: &mut Ledger, evaluation: &Evaluation, (now, channels): (Timestamp, usize)) -> usize {
    let observed: Vec<Observed<'_>> = evaluation
        .alerting
        .iter()
        .map(|s| Observed {
            source: &s.source,
            key: &s.key,
            level: s.notification.level,
        })
        .collect();
    ledger.observe(
        &observed,
        |source| evaluation.is_complete(source),
        (now.as_second(), channels),
    )
}

/// Counts, the most urgent alerts and the evaluation times.
fn summarize(
    status: &mut AlertConfigStatus,
    evaluation: &Evaluation,
    ledger: &Ledger,
    now: Timestamp,
    next: Option<Timestamp>,
) {
    let mut counts = AlertCounts::default();
    for subject in &evaluation.alerting {
        let count = match (&subject.notification.subject, subject.notification.level) {
            (AlertSubject::Host { .. }, _) => &mut counts.unavailable_hosts,
            (_, Level::INFO) => &mut counts.info,
            (_, Level::WARN) => &mut counts.warn,
            (_, Level::HIGH) => &mut counts.high,
            (_, Level::ERROR) => &mut counts.error,
        };
        *count += 1;
    }
    status.counts = Some(counts);
    status.active_alerts = evaluation
        .alerting
        .iter()
        .take(MAX_LISTED)
        .map(|s| active_alert(s, ledger, now))
        .collect();
    status.evaluated = i64::try_from(evaluation.evaluated).unwrap_or(i64::MAX);
    status.last_evaluation_time = Some(Time(now));
    status.next_evaluation_time = next.map(Time);
}

fn active_alert(subject: &Subject, ledger: &Ledger, now: Timestamp) -> ActiveAlert {
    let n = &subject.notification;
    let described = match &n.subject {
        AlertSubject::Certificate { namespace, name, .. } => format!("Certificate {namespace}/{name}"),
        AlertSubject::Discovered { location, task, .. } => {
            format!("discovered {location} (DiscoveryTask {task})")
        }
        AlertSubject::Host { target, task, .. } => format!("host {target} (DiscoveryTask {task})"),
    };
    let since = ledger
        .since(&key_hash(&subject.key))
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or(now);
    ActiveAlert {
        level: n.level,
        subject: described,
        not_after: n.not_after.map(Time),
        remaining_days: n.days_left,
        since: Time(since),
    }
}

/// `Ready`: True when every channel delivers; else a CertMgmt conflict, the failing channels,
/// a failing CertMgmt sync, or alerts beyond the record's bound.
fn set_ready(
    status: &mut AlertConfigStatus,
    generation: Option<i64>,
    over_limit: usize,
    conflict: Option<String>,
) {
    status.observed_generation = generation;
    let failing: Vec<String> = status
        .channels
        .iter()
        .filter(|c| c.consecutive_failures > 0)
        .map(|c| {
            format!(
                "{}: {} ({} consecutive failures, retrying with backoff)",
                c.channel,
                c.last_error.as_deref().unwrap_or("failed"),
                c.consecutive_failures
            )
        })
        .collect();
    let sync_error = status.cert_mgmt.as_ref().and_then(|c| c.last_error.clone());
    let (ready, reason, message) = if let Some(conflict) = conflict {
        (false, cert_mgmt::CONFLICT, conflict)
    } else if !failing.is_empty() {
        (false, "DeliveryFailed", failing.join("; "))
    } else if let Some(error) = sync_error {
        (false, "CertMgmtSyncFailed", error)
    } else if over_limit > 0 {
        (
            false,
            "TooManyAlerts",
            format!(
                "{over_limit} active alerts beyond the {} one AlertConfig records were not notified; narrow spec.scope or split the AlertConfig",
                crate::alerting::ledger::MAX_ENTRIES
            ),
        )
    } else {
        (true, "Evaluated", "every alert in scope was delivered".to_owned())
    };
    conditions::set(
        &mut status.conditions,
        "Ready",
        ready,
        reason,
        message,
        generation,
    );
}

/// The alert level of each managed Certificate in scope, as the metric
/// `pki_operator_certificate_alert_level`; series of Certificates that left the scope go.
fn publish_levels(ctx: &Context, name: &str, evaluation: &Evaluation) {
    let mut published = ctx
        .alert_caches
        .published
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let current: BTreeSet<(String, String)> = evaluation.managed_levels.keys().cloned().collect();
    for (namespace, cert) in published.get(name).into_iter().flatten() {
        if !current.contains(&(namespace.clone(), cert.clone())) {
            ctx.metrics.remove_certificate_alert_level(name, namespace, cert);
        }
    }
    for ((namespace, cert), level) in &evaluation.managed_levels {
        ctx.metrics
            .set_certificate_alert_level(name, namespace, cert, level_value(*level));
    }
    published.insert(name.to_owned(), current);
}

/// Removes the alert-level series of the AlertConfig `name` (deleted). Called from its
/// finalizer, and for one without a finalizer when its deletion is watched
/// (`controller::alert_config_controller`).
pub fn forget_levels(metrics: &crate::metrics::Metrics, published: &Published, name: &str) {
    let mut published = published
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (namespace, cert) in published.remove(name).into_iter().flatten() {
        metrics.remove_certificate_alert_level(name, &namespace, &cert);
    }
}

/// The metric's value of a level: 0 none, 1 INFO, 2 WARN, 3 HIGH, 4 ERROR.
pub fn level_value(level: Option<Level>) -> u8 {
    match level {
        None => 0,
        Some(Level::INFO) => 1,
        Some(Level::WARN) => 2,
        Some(Level::HIGH) => 3,
        Some(Level::ERROR) => 4,
    }
}
