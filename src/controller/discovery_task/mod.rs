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
pub mod scm;
pub mod sources;

use std::{sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, ResourceExt as _, runtime::controller::Action};

use self::{
    plan::Due,
    sources::{Collected, SourceFailure},
};
use super::{Context, conditions, errors};
use crate::backend::Backend;
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
    let api: Api<DiscoveryTask> = Api::namespaced(ctx.client.clone(), &namespace);
    if task.metadata.deletion_timestamp.is_some() {
        return finalize(&task, &ctx, &api, &key).await;
    }
    let generation = task.metadata.generation;
    let mut old = task.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = generation;
    let now = jiff::Timestamp::now();
    let write = |old: &DiscoveryTaskStatus, status: &DiscoveryTaskStatus| {
        let (api, name, old, status) = (api.clone(), name.clone(), old.clone(), status.clone());
        async move { super::status::write_if_changed(&api, &name, &old, &status).await }
    };
    let update_error = |source| Error::UpdateStatus {
        name: key.clone(),
        source,
    };

    // The SCM source's remote task exists before anything else, and its id is in status before
    // anything else is done with it.
    let mut remote = None;
    // A remote task the spec no longer leads to (the SCM source removed, or moved to another
    // issuer, i.e. maybe another SCM account) is not touched through the new one: a Warning
    // names it for deletion in SCM, and the id is forgotten.
    let scm_issuer = task.spec.scm.as_ref().map(|source| {
        crate::controller::issuer::IssuerTarget::from_namespaced(&source.issuer_ref, &namespace).to_string()
    });
    if forget_moved_remote(&ctx, &task, scm_issuer.as_ref(), &mut status).await {
        write(&old, &status).await.map_err(update_error)?;
        old = status.clone();
    }
    if task.spec.scm.is_none()
        && let Err(e) = super::finalizer::ensure(&api, task.as_ref(), scm::FINALIZER, false).await
    {
        return Err(Error::UpdateStatus { name: key, source: e });
    }
    if let Some(source) = &task.spec.scm {
        if let Err(e) = super::finalizer::ensure(&api, task.as_ref(), scm::FINALIZER, true).await {
            return Err(Error::UpdateStatus { name: key, source: e });
        }
        match prepare_scm(&ctx, &task, &namespace, source, old.scm_task_id).await {
            Ok((backend, id)) => {
                if old.scm_task_id != Some(id) {
                    status.scm_task_id = Some(id);
                    status.scm_task_issuer.clone_from(&scm_issuer);
                    write(&old, &status).await.map_err(update_error)?;
                    old = status.clone();
                }
                remote = Some((backend, id));
            }
            Err((failure, retry)) => {
                conditions::set(
                    &mut status.conditions,
                    "Ready",
                    false,
                    failure.reason,
                    failure.message,
                    generation,
                );
                if write(&old, &status).await.map_err(update_error)? {
                    ctx.events
                        .announce_ready(task.as_ref(), &old.conditions, &status.conditions)
                        .await;
                }
                return Ok(retry.map_or_else(Action::await_change, Action::requeue));
            }
        }
    }

    // A scan in flight is followed until its results are in.
    if let (Some((backend, id)), Some(started)) = (&remote, old.scm_scan_started_time.as_ref().map(|t| t.0))
        && let Backend::Scm(scm) = backend.as_ref()
        && let Some(wait) = follow_scan(&ctx, &task, scm, *id, started, &key, &mut status).await
    {
        write(&old, &status).await.map_err(update_error)?;
        return Ok(Action::requeue(wait));
    }

    let (action, announce) =
        scheduled(&ctx, &task, remote.as_ref(), (&api, &old), &mut status, now, &key).await;
    let written = write(&old, &status).await.map_err(update_error)?;
    if written && announce {
        ctx.events
            .announce_ready(task.as_ref(), &old.conditions, &status.conditions)
            .await;
    }
    Ok(action)
}

/// Forgets a remote task the spec no longer leads to, with a Warning naming it; whether status
/// changed.
async fn forget_moved_remote(
    ctx: &Context,
    task: &DiscoveryTask,
    scm_issuer: Option<&String>,
    status: &mut DiscoveryTaskStatus,
) -> bool {
    if let Some(id) = status.scm_task_id
        && status.scm_task_issuer.is_some()
        && status.scm_task_issuer.as_ref() != scm_issuer
    {
        let note = format!(
            "SCM discovery task {id} at {} is no longer this DiscoveryTask's (spec.scm changed); delete it in SCM",
            status.scm_task_issuer.as_deref().unwrap_or_default()
        );
        remote_task_left(ctx, task, &note).await;
        status.scm_task_id = None;
        status.scm_task_issuer = None;
        status.scm_scan_started_time = None;
        return true;
    }
    false
}

/// The schedule's part of a reconcile: nothing to do yet (a check-in report perhaps), or a run
/// of every source (starting the SCM scan). Returns the next action and whether `Ready` may have
/// changed.
async fn scheduled(
    ctx: &Context,
    task: &DiscoveryTask,
    remote: Option<&(Arc<Backend>, i64)>,
    (api, old): (&Api<DiscoveryTask>, &DiscoveryTaskStatus),
    status: &mut DiscoveryTaskStatus,
    now: jiff::Timestamp,
    key: &str,
) -> (Action, bool) {
    let generation = task.metadata.generation;
    let namespace = task.namespace().unwrap_or_default();
    match plan::schedule(&task.spec.schedule) {
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
            // After a restart the in-memory findings are gone: run again rather than leave the metrics
            // and AlertConfig without them until the next scheduled run.
            let last = last.filter(|_| ctx.inventory.snapshot().contains_key(key));
            match plan::due(&schedule, last, old.run_generation, generation, now) {
                Due::At(next) => {
                    status.next_run_time = Some(time(next));
                    let wake = match &task.spec.report {
                        Some(report) => check_in(ctx, task, report, reported, now, key, status)
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
                    let mut collected = collect(ctx, task, &namespace).await;
                    let mut scanning = false;
                    if let Some((backend, id)) = &remote
                        && let Backend::Scm(scm) = backend.as_ref()
                    {
                        match scm::start(scm, *id).await {
                            Ok(()) => {
                                status.scm_scan_started_time = Some(time(now));
                                scanning = true;
                                // Kept at once: a restart follows this scan instead of starting another (a start
                                // lost before this write is found again as the running operation).
                                if let Err(e) =
                                    super::status::write_if_changed(api, &task.name_any(), old, status).await
                                {
                                    tracing::warn!(task = %key, error = %e, "cannot record the SCM scan's start yet");
                                }
                            }
                            Err(e) => collected.failures.push(scm::discovery_failure(&e)),
                        }
                    }
                    if let Some(report) = &task.spec.report {
                        match report::report(ctx, task, report, &collected.found).await {
                            Ok(host_id) => {
                                status.last_report_time = Some(time(jiff::Timestamp::now()));
                                status.cert_mgmt_host_id = Some(host_id);
                            }
                            Err(failure) => collected.failures.push(failure),
                        }
                    }
                    let finished = jiff::Timestamp::now();
                    record_run(status, task, collected, (now, finished), ctx, key);
                    status.run_generation = generation;
                    let next = schedule.next_after(now);
                    status.next_run_time = next.map(time);
                    let action = match wake_after_run(task, next, finished) {
                        _ if scanning => Action::requeue(scm::POLL),
                        Some(wake) => Action::requeue(wait_until(wake, finished).max(Duration::from_secs(1))),
                        None => Action::await_change(),
                    };
                    (action, true)
                }
            }
        }
    }
}

/// When to look again after a run: the next run, or sooner the next check-in of a reporting
/// task.
fn wake_after_run(
    task: &DiscoveryTask,
    next: Option<jiff::Timestamp>,
    finished: jiff::Timestamp,
) -> Option<jiff::Timestamp> {
    let check_in = task.spec.report.as_ref().and_then(|settings| {
        let interval = jiff::SignedDuration::try_from(report::check_in_interval(settings)).ok()?;
        finished.checked_add(interval).ok()
    });
    match (next, check_in) {
        (Some(next), Some(check_in)) => Some(next.min(check_in)),
        (next, check_in) => next.or(check_in),
    }
}

/// The SCM source's client and remote task id, or why not and when to look again (`None`:
/// only a spec change can help).
async fn prepare_scm(
    ctx: &Context,
    task: &DiscoveryTask,
    namespace: &str,
    source: &crate::crd::v1alpha1::discovery_task::ScmDiscoverySource,
    recorded: Option<i64>,
) -> Result<(Arc<Backend>, i64), (SourceFailure, Option<Duration>)> {
    let spec = scm::net_task(task, source).map_err(|f| (f, None))?;
    let backend = scm::backend(ctx, namespace, source)
        .await
        .map_err(|f| (f, Some(SCM_RETRY)))?;
    let Backend::Scm(client) = backend.as_ref() else {
        return Err((
            SourceFailure {
                reason: "Unsupported",
                message: "spec.scm.issuerRef is not an SCM issuer".into(),
            },
            None,
        ));
    };
    match scm::ensure_task(client, &spec, recorded).await {
        Ok((id, _created)) => Ok((backend.clone(), id)),
        Err(e) => {
            let retry = if e.is_transient() {
                Some(e.retry_after().unwrap_or(SCM_RETRY))
            } else {
                None
            };
            Err((scm::discovery_failure(&e), retry))
        }
    }
}

/// How soon an SCM source that cannot be set up (issuer not ready, SCM unavailable, agent not
/// connected) is tried again.
const SCM_RETRY: Duration = Duration::from_secs(60);

/// Looks at the scan in flight: `Some(wait)` while it runs; `None` once its outcome is recorded
/// (results merged into the task's inventory and summary, or the failure in `Ready`).
async fn follow_scan(
    ctx: &Context,
    task: &DiscoveryTask,
    scm: &crate::backend::scm::ScmBackend,
    id: i64,
    started: jiff::Timestamp,
    key: &str,
    status: &mut DiscoveryTaskStatus,
) -> Option<Duration> {
    let generation = task.metadata.generation;
    match scm::follow(scm, id, started).await {
        Ok(scm::Scan::Running) => Some(scm::POLL),
        Err(e) if e.is_transient() => Some(e.retry_after().unwrap_or(scm::POLL)),
        Err(e) => {
            let failure = scm::discovery_failure(&e);
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                failure.reason,
                failure.message,
                generation,
            );
            status.scm_scan_started_time = None;
            None
        }
        Ok(scm::Scan::TimedOut(operation)) => {
            status.scm_scan_started_time = None;
            status.operation_id = Some(operation.id.clone());
            let message = format!(
                "SCM scan {} was still running after {} hours and was stopped; narrow spec.scm.ranges or check the agent",
                operation.id,
                scm::MAX_SCAN.as_hours()
            );
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                "ScanTimedOut",
                message,
                generation,
            );
            None
        }
        Ok(scm::Scan::Lost) => {
            status.scm_scan_started_time = None;
            let message = format!(
                "SCM listed no operation for the scan started at {started}; the next run starts another"
            );
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                "ScanLost",
                message,
                generation,
            );
            None
        }
        Ok(scm::Scan::Failed(operation)) => {
            status.scm_scan_started_time = None;
            status.operation_id = Some(operation.id.clone());
            let message = format!(
                "SCM scan {} failed: {}",
                operation.id,
                operation.error.as_deref().unwrap_or("no error given")
            );
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                "ScanFailed",
                message,
                generation,
            );
            None
        }
        Ok(scm::Scan::Done(operation, scanned)) => {
            merge_scan(ctx, task, &operation, scanned, started, key, status).await;
            None
        }
    }
}

/// Merges a finished scan's results into the task's findings, reports them when the task
/// reports, and records the outcome.
async fn merge_scan(
    ctx: &Context,
    task: &DiscoveryTask,
    operation: &crate::backend::scm::discovery::Operation,
    mut scanned: Vec<analysis::Found>,
    started: jiff::Timestamp,
    key: &str,
    status: &mut DiscoveryTaskStatus,
) {
    let generation = task.metadata.generation;
    status.scm_scan_started_time = None;
    status.operation_id = Some(operation.id.clone());
    mark_managed(ctx, &mut scanned).await;
    let count = scanned.len();
    let mut found: Vec<analysis::Found> = ctx
        .inventory
        .snapshot()
        .get(key)
        .map(|f| {
            f.iter()
                .filter(|f| f.source != analysis::Source::Scm)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    found.extend(scanned);
    let started_at = status.last_run_time.as_ref().map_or(started, |t| t.0);
    // The run's report went out before the scan's results existed: send them now.
    let reported = match &task.spec.report {
        Some(settings) => Some(report::report(ctx, task, settings, &found).await),
        None => None,
    };
    let summary = record_found(status, found, started_at, ctx, key);
    match reported {
        Some(Ok(host_id)) => {
            status.last_report_time = Some(time(jiff::Timestamp::now()));
            status.cert_mgmt_host_id = Some(host_id);
        }
        Some(Err(failure)) => {
            conditions::set(
                &mut status.conditions,
                "Ready",
                false,
                failure.reason,
                failure.message,
                generation,
            );
        }
        None => {}
    }
    if !status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "False")
    {
        let message = format!("SCM scan {} found {count} certificates; {summary}", operation.id);
        conditions::set(
            &mut status.conditions,
            "Ready",
            true,
            "Completed",
            message,
            generation,
        );
    }
}

/// Deletion: the remote SCM task goes first (a running scan stopped), then the finalizer; the
/// task's certificates leave the inventory and the metrics. An SCM that cannot be reached
/// because the issuer is gone does not hold the deletion: a Warning names the remote task.
async fn finalize(
    task: &DiscoveryTask,
    ctx: &Context,
    api: &Api<DiscoveryTask>,
    key: &str,
) -> Result<Action, Error> {
    forget(ctx, key);
    if !task.finalizers().iter().any(|f| f == scm::FINALIZER) {
        return Ok(Action::await_change());
    }
    let namespace = task.namespace().unwrap_or_default();
    let status = task.status.clone().unwrap_or_default();
    if let Some(source) = &task.spec.scm {
        match scm::backend(ctx, &namespace, source).await {
            Ok(backend) => {
                if let Backend::Scm(client) = backend.as_ref()
                    && let Err(e) = delete_remote(client, task, source, &status).await
                {
                    if e.is_transient() {
                        tracing::warn!(task = %key, error = %errors::error_chain(&e), "cannot delete the SCM discovery task yet");
                        return Ok(Action::requeue(SCM_RETRY));
                    }
                    let note = format!(
                        "the SCM discovery task could not be deleted ({}); delete it in SCM",
                        errors::error_chain(&e)
                    );
                    remote_task_left(ctx, task, &note).await;
                }
            }
            Err(failure) => {
                let note = format!(
                    "the SCM discovery task {} was not deleted: {}; delete it in SCM",
                    status
                        .scm_task_id
                        .map_or_else(|| "(unknown id)".to_owned(), |id| id.to_string()),
                    failure.message
                );
                remote_task_left(ctx, task, &note).await;
            }
        }
    }
    super::finalizer::ensure(api, task, scm::FINALIZER, false)
        .await
        .map_err(|source| Error::UpdateStatus {
            name: key.to_owned(),
            source,
        })?;
    Ok(Action::await_change())
}

/// Says (a Warning Event) that an SCM task is left for a person to delete in SCM.
async fn remote_task_left(ctx: &Context, task: &DiscoveryTask, note: &str) {
    ctx.events
        .publish(
            task,
            kube::runtime::events::EventType::Warning,
            "RemoteTaskLeft",
            note,
        )
        .await;
}

/// Stops the scan in flight and deletes the remote task (the one in status, else the one found
/// by name — a create whose id never reached status).
async fn delete_remote(
    client: &crate::backend::scm::ScmBackend,
    task: &DiscoveryTask,
    source: &crate::crd::v1alpha1::discovery_task::ScmDiscoverySource,
    status: &DiscoveryTaskStatus,
) -> Result<(), crate::backend::scm::discovery::DiscoveryError> {
    let id = match status.scm_task_id {
        Some(id) => Some(id),
        None => match scm::net_task(task, source) {
            Ok(spec) => client.discovery_find_task(&spec.name).await?.map(|t| t.id),
            Err(_) => None,
        },
    };
    let Some(id) = id else {
        return Ok(());
    };
    // Any running scan: its start may not have reached status before a crash.
    for operation in client.discovery_operations(id).await? {
        if !operation.is_terminal() {
            client.discovery_stop_operation(id, &operation.id).await?;
        }
    }
    client.discovery_delete_task(id).await
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
            let failed_report = status.conditions.iter().any(|c| {
                c.type_ == "Ready" && c.status == "False" && c.message.starts_with(report::FAILURE_PREFIX)
            });
            if failed_report {
                conditions::set(
                    &mut status.conditions,
                    "Ready",
                    true,
                    "Completed",
                    "the last run's findings were reported to CertMgmt",
                    task.metadata.generation,
                );
            }
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
        // A namespace-scoped operator may not read namespaces it does not serve: say so instead
        // of a permission error per namespace. (Under `--namespace` the ClusterRole lets a task
        // inspect other namespaces.)
        let (namespaces, unserved): (Vec<_>, Vec<_>) = sources::namespaces(cluster, namespace)
            .into_iter()
            .partition(|ns| ctx.scope.serves_cluster_scoped() || ctx.scope.serves_namespace(ns));
        if !unserved.is_empty() {
            collected.failures.push(sources::SourceFailure {
                reason: "InvalidSpec",
                message: format!(
                    "spec.cluster.namespaces: {} not served by this operator, which watches {} only (--watch-namespaces)",
                    unserved.join(", "),
                    ctx.scope.namespaces().unwrap_or_default().join(", ")
                ),
            });
        }
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
    collected
}

/// Marks the certificates this operator delivered: by the serial each Certificate it serves
/// records in status (a Secret found in the cluster is recognised by its owner
/// already). Certificates this operator cannot read (a namespace it does not serve) are not
/// marked.
async fn mark_managed(ctx: &Context, found: &mut [analysis::Found]) {
    let mut certificates = Vec::new();
    for api in ctx.scope.apis::<Certificate>(&ctx.client) {
        let Ok(list) = api.list(&kube::api::ListParams::default()).await else {
            return;
        };
        certificates.extend(list.items);
    }
    let serials: std::collections::HashSet<String> = certificates
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

/// The unreachable targets to list, each with the run since which it has been unreachable: a
/// target listed by the last run keeps its `since`, a new one starts now. Targets listed before
/// come first so that a long outage is not pushed out of the bounded list by new ones.
fn unreachable_since(
    before: &[UnreachableTarget],
    now_unreachable: &[(String, String)],
    started: jiff::Timestamp,
) -> Vec<UnreachableTarget> {
    let earlier: std::collections::BTreeMap<&str, &Time> = before
        .iter()
        .filter_map(|t| Some((t.target.as_str(), t.since.as_ref()?)))
        .collect();
    let mut listed: Vec<UnreachableTarget> = now_unreachable
        .iter()
        .map(|(target, reason)| UnreachableTarget {
            target: target.clone(),
            reason: reason.clone(),
            since: Some(
                earlier
                    .get(target.as_str())
                    .map_or_else(|| time(started), |t| (*t).clone()),
            ),
        })
        .collect();
    listed.sort_by_key(|t| !earlier.contains_key(t.target.as_str()));
    listed.truncate(MAX_UNREACHABLE);
    listed
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
    let duration = finished.duration_since(started);
    status.last_run_time = Some(time(started));
    status.last_run_duration = Some(format!("{:.1}s", duration.as_secs_f64()));
    status.unreachable_targets = unreachable_since(&status.unreachable_targets, &unreachable, started);
    let unreachable = i64::try_from(unreachable.len()).unwrap_or(i64::MAX);
    let summary = record_found(status, found, started, ctx, key);
    if let Some(s) = status.summary.as_mut() {
        s.unreachable = unreachable;
    }
    let scanning = if status.scm_scan_started_time.is_some() {
        "; the SCM scan started, its results follow"
    } else {
        ""
    };
    let message = format!(
        "{summary}; {unreachable} targets not read; run took {}{scanning}",
        status.last_run_duration.as_deref().unwrap_or_default()
    );
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
}

/// Summarises `found` into status (counts, findings), makes it the task's part of the
/// inventory, refreshes the metrics, and returns the summary in words.
fn record_found(
    status: &mut DiscoveryTaskStatus,
    found: Vec<analysis::Found>,
    at: jiff::Timestamp,
    ctx: &Context,
    key: &str,
) -> String {
    let (mut summary, findings) = analysis::summarise(&found, at.as_second());
    summary.managed = i64::try_from(found.iter().filter(|f| f.managed).count()).unwrap_or(i64::MAX);
    summary.unreachable = status.summary.as_ref().map_or(0, |s| s.unreachable);
    let words = format!(
        "{} certificates found ({} expired, {} expiring within 30 days, {} self-signed, {} weak, {} managed by this operator)",
        summary.total,
        summary.expired,
        summary.expiring_within_30_days,
        summary.self_signed,
        summary.weak_keys,
        summary.managed
    );
    status.findings = findings;
    status.summary = Some(summary);
    ctx.inventory.replace(key, found);
    ctx.metrics.set_discovered(&ctx.inventory.snapshot());
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    #[test]
    fn an_unreachable_target_keeps_the_start_of_its_outage() {
        let first = unreachable_since(&[], &[("a:443".into(), "refused".into())], at(0));
        assert_eq!(first[0].since, Some(time(at(0))));
        let second = unreachable_since(
            &first,
            &[
                ("b:443".into(), "timed out".into()),
                ("a:443".into(), "refused".into()),
            ],
            at(60),
        );
        assert_eq!(second.len(), 2);
        assert_eq!(
            second[0].target, "a:443",
            "a long outage stays in the bounded list first"
        );
        assert_eq!(second[0].since, Some(time(at(0))));
        assert_eq!(second[1].since, Some(time(at(60))));
        let recovered = unreachable_since(&second, &[("b:443".into(), "timed out".into())], at(120));
        assert_eq!(recovered.len(), 1);
        let again = unreachable_since(&recovered, &[("a:443".into(), "refused".into())], at(180));
        assert_eq!(again[0].since, Some(time(at(180))), "a new outage starts anew");
    }
}
