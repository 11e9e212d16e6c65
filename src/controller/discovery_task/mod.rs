//! The DiscoveryTask controller: on its schedule, reads every certificate its sources can see —
//! TLS Secrets and live TLS endpoints in the cluster, the Nexus certificate database — and
//! records the result: a summary and the most urgent findings in status, the whole inventory in
//! memory ([`crate::discovery::inventory`]) for the metrics and AlertConfig.
//!
//! The controller owns the schedule: a run is due when the task never ran, its spec changed
//! since the last run, or the schedule's next time after the last run has come. Each run reads
//! its sources once; a source that cannot be used makes `Ready=False` with its reason, while what
//! the other sources found is still recorded.

pub mod plan;
pub mod report;
pub mod sources;

use std::{sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, ResourceExt as _, runtime::controller::Action};

use self::{
    plan::Due,
    sources::{Collected, SourceFailure},
};
use super::{Context, conditions};
use crate::{
    crd::v1alpha1::{
        Certificate, DiscoveryTask,
        discovery_task::{DiscoveryTaskStatus, UnreachableTarget},
    },
    discovery::analysis,
};

/// Unreachable targets listed in status at most (the CRD's limit); the summary counts all.
const MAX_UNREACHABLE: usize = 20;

/// Why a DiscoveryTask reconcile failed (everything else is a reason in status).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing status failed.
    #[error("cannot update the status of DiscoveryTask {name}")]
    UpdateStatus {
        /// `namespace/name`.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

fn time(at: jiff::Timestamp) -> Time {
    Time(at)
}

/// Reconciles one DiscoveryTask.
pub async fn reconcile(task: Arc<DiscoveryTask>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = task.namespace().unwrap_or_default();
    let name = task.name_any();
    let key = format!("{namespace}/{name}");
    if task.metadata.deletion_timestamp.is_some() {
        forget(&ctx, &key);
        return Ok(Action::await_change());
    }
    let generation = task.metadata.generation;
    let old = task.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = generation;
    let now = jiff::Timestamp::now();
    let (action, announce) = match plan::schedule(&task.spec.schedule) {
        Err(why) => {
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                "InvalidSchedule",
                why,
                generation,
            );
            status.next_run_time = None;
            (Action::await_change(), true)
        }
        Ok(_) if task.spec.suspend => {
            let message = "spec.suspend is true: no run is scheduled";
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                "Suspended",
                message,
                generation,
            );
            status.next_run_time = None;
            (Action::await_change(), true)
        }
        Ok(schedule) => {
            let last = old.last_run_time.as_ref().map(|t| t.0);
            let reported = old.last_report_time.as_ref().map(|t| t.0);
            match plan::due(&schedule, last, old.run_generation, generation, now) {
                Due::At(next) => {
                    status.next_run_time = Some(time(next));
                    let wake = match &task.spec.report {
                        Some(report) => check_in(&ctx, &task, report, reported, now, &key, &mut status)
                            .await
                            .min(next),
                        None => next,
                    };
                    (
                        Action::requeue(wait_until(wake, now).max(Duration::from_secs(1))),
                        false,
                    )
                }
                Due::Never => {
                    status.next_run_time = None;
                    (Action::await_change(), false)
                }
                Due::Now => {
                    let mut collected = collect(&ctx, &task, &namespace).await;
                    if let Some(report) = &task.spec.report {
                        match report::report(&ctx, &task, report, &collected.found).await {
                            Ok(host_id) => {
                                status.last_report_time = Some(time(jiff::Timestamp::now()));
                                status.cert_mgmt_host_id = Some(host_id);
                            }
                            Err(failure) => collected.failures.push(failure),
                        }
                    }
                    let finished = jiff::Timestamp::now();
                    record_run(&mut status, &task, collected, (now, finished), &ctx, &key);
                    status.run_generation = generation;
                    let next = schedule.next_after(now);
                    status.next_run_time = next.map(time);
                    let action = match next {
                        Some(next) => Action::requeue(wait_until(next, finished).max(Duration::from_secs(1))),
                        None => Action::await_change(),
                    };
                    (action, true)
                }
            }
        }
    };
    let api: Api<DiscoveryTask> = Api::namespaced(ctx.client.clone(), &namespace);
    let written = super::status::write_if_changed(&api, &name, &old, &status)
        .await
        .map_err(|source| Error::UpdateStatus {
            name: key.clone(),
            source,
        })?;
    if written && announce {
        ctx.events
            .announce_ready(task.as_ref(), &old.conditions, &status.conditions)
            .await;
    }
    Ok(action)
}

/// Between runs: reports the last run's inventory again when the check-in interval has passed
/// since the last report (the service raises a host-unavailability alert otherwise). Returns
/// when the next check-in is due. After a restart the inventory is empty until the next run,
/// and nothing is reported meanwhile rather than an empty inventory.
async fn check_in(
    ctx: &Context,
    task: &DiscoveryTask,
    settings: &crate::crd::v1alpha1::discovery_task::DiscoveryReport,
    reported: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
    key: &str,
    status: &mut DiscoveryTaskStatus,
) -> jiff::Timestamp {
    let interval = jiff::SignedDuration::try_from(report::check_in_interval(settings))
        .unwrap_or(jiff::SignedDuration::MAX);
    let due = reported
        .and_then(|at| at.checked_add(interval).ok())
        .unwrap_or(now);
    if due > now {
        return due;
    }
    let Some(found) = ctx.inventory.snapshot().get(key).cloned() else {
        return now.checked_add(interval).unwrap_or(now);
    };
    match report::report(ctx, task, settings, &found).await {
        Ok(host_id) => {
            status.last_report_time = Some(time(now));
            status.cert_mgmt_host_id = Some(host_id);
        }
        Err(failure) => {
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                failure.reason,
                failure.message,
                task.metadata.generation,
            );
        }
    }
    // A failed check-in is tried again in a minute, a done one after the interval.
    now.checked_add(if status.last_report_time.as_ref().is_some_and(|t| t.0 == now) {
        interval
    } else {
        jiff::SignedDuration::from_secs(60)
    })
    .unwrap_or(now)
}

fn wait_until(at: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// A deleted task's certificates leave the inventory and the metrics.
fn forget(ctx: &Context, key: &str) {
    ctx.inventory.remove(key);
    ctx.metrics.set_discovered(&ctx.inventory.snapshot());
}

/// Reads every configured source once.
async fn collect(ctx: &Context, task: &DiscoveryTask, namespace: &str) -> Collected {
    let mut collected = Collected::default();
    if let Some(cluster) = &task.spec.cluster {
        let namespaces = sources::namespaces(cluster, namespace);
        if cluster.secrets
            && let Err(failure) = sources::secrets(&ctx.client, &namespaces, &mut collected).await
        {
            collected.failures.push(failure);
        }
        match sources::endpoint_plan(&ctx.client, cluster, &namespaces).await {
            Ok(Some((targets, settings))) => sources::sweep(targets, settings, &mut collected).await,
            Ok(None) => {}
            Err(failure) => collected.failures.push(failure),
        }
    }
    if let Some(nexus) = &task.spec.nexus
        && let Err(failure) = sources::nexus(ctx, namespace, nexus, &mut collected).await
    {
        collected.failures.push(failure);
    }
    mark_managed(ctx, &mut collected.found).await;
    if task.spec.scm.is_some() {
        collected.failures.push(SourceFailure {
            reason: "NotImplemented",
            message:
                "spec.scm (SCM network discovery) is not implemented in this version; use cluster or nexus"
                    .into(),
        });
    }
    collected
}

/// Marks the certificates this operator delivered: by the serial and issuer each Certificate
/// it serves records in status (a Secret found in the cluster is recognised by its owner
/// already). Certificates this operator cannot read (another namespace under `--namespace`)
/// are not marked.
async fn mark_managed(ctx: &Context, found: &mut [analysis::Found]) {
    let certificates: Api<Certificate> = match &ctx.watch_namespace {
        Some(namespace) => Api::namespaced(ctx.client.clone(), namespace),
        None => Api::all(ctx.client.clone()),
    };
    let Ok(list) = certificates.list(&kube::api::ListParams::default()).await else {
        return;
    };
    let serials: std::collections::HashSet<String> = list
        .items
        .iter()
        .filter_map(|c| c.status.as_ref()?.serial_number.clone())
        .map(|serial| serial.trim_start_matches('0').to_ascii_lowercase())
        .collect();
    for f in found.iter_mut() {
        if serials.contains(f.serial_hex.trim_start_matches('0')) {
            f.managed = true;
        }
    }
}

/// Writes a run's outcome to status, the inventory and the metrics.
fn record_run(
    status: &mut DiscoveryTaskStatus,
    task: &DiscoveryTask,
    collected: Collected,
    (started, finished): (jiff::Timestamp, jiff::Timestamp),
    ctx: &Context,
    key: &str,
) {
    let Collected {
        found,
        unreachable,
        failures,
    } = collected;
    let (mut summary, findings) = analysis::summarise(&found, started.as_second());
    summary.unreachable = i64::try_from(unreachable.len()).unwrap_or(i64::MAX);
    summary.managed = i64::try_from(found.iter().filter(|f| f.managed).count()).unwrap_or(i64::MAX);
    let duration = finished.duration_since(started);
    status.last_run_time = Some(time(started));
    status.last_run_duration = Some(format!("{:.1}s", duration.as_secs_f64()));
    status.findings = findings;
    status.unreachable_targets = unreachable
        .into_iter()
        .take(MAX_UNREACHABLE)
        .map(|(target, reason)| UnreachableTarget { target, reason })
        .collect();
    let message = format!(
        "{} certificates found ({} expired, {} expiring within 30 days, {} self-signed, {} weak, {} managed by this operator); {} targets not read; run took {}",
        summary.total,
        summary.expired,
        summary.expiring_within_30_days,
        summary.self_signed,
        summary.weak_keys,
        summary.managed,
        summary.unreachable,
        status.last_run_duration.as_deref().unwrap_or_default()
    );
    status.summary = Some(summary);
    let generation = task.metadata.generation;
    match failures.first() {
        None => conditions::set(
            &mut status.conditions,
            "Ready",
            true,
            "Completed",
            message,
            generation,
        ),
        Some(first) => {
            let all: Vec<String> = failures.iter().map(|f| f.message.clone()).collect();
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                first.reason,
                format!("{}; {message}", all.join("; ")),
                generation,
            );
        }
    }
    ctx.inventory.replace(key, found);
    ctx.metrics.set_discovered(&ctx.inventory.snapshot());
}
