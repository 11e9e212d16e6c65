//! The controllers, one per kind, and the loop that runs them until shutdown.
//!
//! Every kind has its reconciler: [`certificate`], [`issuer`] (Issuer and ClusterIssuer),
//! [`domain_validation`], [`discovery_task`] and [`alert_config`]. The wiring here (watch
//! scope, readiness after cache sync, graceful shutdown, error isolation with
//! `DeserializeGuard`, metadata-only Secret watches, and the error policy of [`errors`]: retry
//! with per-object backoff what can pass, wait for a change what cannot) is shared.

pub mod alert_config;
pub mod backoff;
pub mod certificate;
pub mod conditions;
pub mod discovery_task;
pub mod domain_validation;
pub mod errors;
pub mod events;
pub mod finalizer;
pub mod issuer;
pub mod scope;
pub mod status;

pub use scope::WatchScope;

use std::{fmt::Debug, sync::Arc};

use futures::{FutureExt, StreamExt, future::BoxFuture};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    core::DeserializeGuard,
    runtime::{
        Controller, WatchStreamExt as _,
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;

use crate::{admin::Readiness, crd::v1alpha1, metrics::Metrics, secret};

/// State shared by every reconcile run.
pub struct Context {
    /// Client for the apiserver.
    pub client: Client,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Event publisher.
    pub events: events::Events,
    /// Namespace of the Secrets ClusterIssuers reference.
    pub cluster_resource_namespace: String,
    /// Reconciles each controller runs at once.
    pub max_concurrent_reconciles: u16,
    /// The label a Secret must carry for an issuer to use it (`--issuer-secret-label`).
    pub issuer_secret_label: Option<crate::config::LabelRequirement>,
    /// Built backends, reused across reconciles while their issuer and Secrets are unchanged.
    pub backends: issuer::cache::BackendCache,
    /// Where domain validation self-checks connect.
    pub dcv_self_check: domain_validation::self_check::SelfCheckSettings,
    /// The HTTP solver's Service, which Ingress routes of DomainValidations point at.
    pub solver_service: domain_validation::ingress::SolverService,
    /// What DiscoveryTasks found, for the metrics and AlertConfig.
    pub inventory: crate::discovery::inventory::Inventory,
    /// The Certificate and DiscoveryTask caches AlertConfig reads.
    pub alert_caches: alert_config::Caches,
    /// The namespaces this operator serves (`--namespace`, `--watch-namespaces`). Under
    /// `--namespace`, cluster-scoped objects that belong to an issuer are handled only when that
    /// issuer is an Issuer there; under `--watch-namespaces` they are not served at all.
    pub scope: WatchScope,
}

/// Why a reconcile run failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not match the schema this operator version understands (for example a
    /// field of the wrong type written around the CRD's validation).
    #[error("{object} cannot be read by this operator version: {message}")]
    InvalidObject {
        /// `Kind namespace/name` of the object.
        object: String,
        /// The deserialisation error.
        message: String,
    },
    /// The Certificate reconciler failed.
    #[error(transparent)]
    Certificate(#[from] certificate::Error),
    /// The Issuer reconciler failed.
    #[error(transparent)]
    Issuer(#[from] issuer::IssuerError),
    /// The DomainValidation reconciler failed.
    #[error(transparent)]
    DomainValidation(#[from] domain_validation::Error),
    /// The DiscoveryTask reconciler failed.
    #[error(transparent)]
    DiscoveryTask(#[from] discovery_task::Error),
    /// The AlertConfig reconciler failed.
    #[error(transparent)]
    AlertConfig(#[from] alert_config::Error),
    /// Writing the status of an observed kind failed.
    #[error("cannot update the status of {object}")]
    UpdateStatus {
        /// `Kind name` of the object.
        object: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A bounded, PascalCase label for metrics, event reasons and condition reasons
    /// ([`errors::reconcile`]).
    pub fn category(&self) -> &'static str {
        errors::reconcile(self).reason
    }
}

/// One controller ready to run: its cache (to await sync) and its event loop.
struct Runner {
    name: &'static str,
    synced: BoxFuture<'static, ()>,
    run: BoxFuture<'static, ()>,
}

/// Runs every controller until `shutdown` is cancelled. Marks `readiness` once every cache has
/// synced. In namespace-scoped mode the kinds that are cluster-scoped (ClusterIssuer,
/// DomainValidation, AlertConfig) have no controller.
pub async fn run(ctx: Arc<Context>, readiness: Readiness, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let scope = ctx.scope.clone();
    // AlertConfig evaluates the Certificate controller's own cache (one copy of every
    // Certificate, not two) and every change that cache takes re-evaluates every AlertConfig.
    let (certificate_changed, certificate_changes) = tokio::sync::watch::channel(());
    let certificates = certificate_controller(&client, &scope, certificate_changed);
    // A second start of the controllers (a regained leadership) would keep the first cache's
    // handle here; the process exits when it loses leadership (leader.rs), so it does not.
    let _ = ctx.alert_caches.certificates.set(certificates.store());
    let mut runners = vec![
        runner_with::<v1alpha1::Certificate, _, _>(
            "certificate",
            certificates,
            &ctx,
            &shutdown,
            certificate::reconcile,
        ),
        runner_with::<v1alpha1::Issuer, _, _>(
            "issuer",
            issuer::controller(
                controller_for(|cache| scope.cached_watch(&client, &cache_config(), cache)),
                scope.trigger_watch::<PartialObjectMeta<Secret>>(&client, &watcher::Config::default()),
                ctx.cluster_resource_namespace.clone(),
            ),
            &ctx,
            &shutdown,
            issuer::reconcile::<v1alpha1::Issuer>,
        ),
        runner_with::<v1alpha1::DiscoveryTask, _, _>(
            "discovery_task",
            spec_controller_for(|cache| scope.cached_watch(&client, &cache_config(), cache)),
            &ctx,
            &shutdown,
            discovery_task::reconcile,
        ),
    ];
    if scope.serves_cluster_scoped() {
        let cluster_resource_secrets =
            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &ctx.cluster_resource_namespace);
        runners.extend([
            runner_with::<v1alpha1::ClusterIssuer, _, _>(
                "cluster_issuer",
                issuer::controller(
                    controller_for(|_| cluster_watch(&client)),
                    watcher(cluster_resource_secrets, watcher::Config::default())
                        .default_backoff()
                        .boxed(),
                    ctx.cluster_resource_namespace.clone(),
                ),
                &ctx,
                &shutdown,
                issuer::reconcile::<v1alpha1::ClusterIssuer>,
            ),
            runner_with::<v1alpha1::DomainValidation, _, _>(
                "domain_validation",
                spec_controller_for(|_| cluster_watch(&client)),
                &ctx,
                &shutdown,
                domain_validation::reconcile,
            ),
            runner_with::<v1alpha1::AlertConfig, _, _>(
                "alert_config",
                alert_config_controller(&client, &scope, &ctx, certificate_changes),
                &ctx,
                &shutdown,
                alert_config::reconcile,
            ),
        ]);
    } else {
        tracing::info!(
            namespaces = ?scope.namespaces().unwrap_or_default(),
            "namespace-scoped mode: ClusterIssuers, DomainValidations and AlertConfigs are not served"
        );
    }
    let names: Vec<_> = runners.iter().map(|r| r.name).collect();
    let (synced, loops): (Vec<_>, Vec<_>) = runners.into_iter().map(|r| (r.synced, r.run)).unzip();
    let metrics = ctx.metrics.clone();
    let mark_ready = async move {
        futures::future::join_all(synced).await;
        tracing::info!(controllers = ?names, "caches synced; ready");
        readiness.set(true);
        metrics.set_ready(true);
    };
    tokio::join!(mark_ready, futures::future::join_all(loops));
}

/// How the caches list and watch: `any_semantic` lets the initial list be served from the
/// apiserver's watch cache instead of a quorum read of etcd, which is cheaper and enough for a
/// controller that resyncs.
fn cache_config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

/// The watch events of a cluster-scoped kind, for a cache.
fn cluster_watch<K>(client: &Client) -> scope::Events<DeserializeGuard<K>>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    watcher(Api::all(client.clone()), cache_config())
        .default_backoff()
        .boxed()
}

/// The Certificate controller's watches: its kind and the metadata of the Secrets it issued,
/// plus Issuers — and, when cluster-scoped kinds are served, ClusterIssuers and
/// DomainValidations — so a Certificate waiting for its issuer or its domain moves on as soon
/// as that turns Ready. `changed` is told of every change its cache takes, after the cache took
/// it.
fn certificate_controller(
    client: &Client,
    scope: &WatchScope,
    changed: tokio::sync::watch::Sender<()>,
) -> Controller<DeserializeGuard<v1alpha1::Certificate>> {
    let (reader, writer) = kube::runtime::reflector::store();
    let events = cached_events(
        scope.cached_watch(client, &cache_config(), reader.clone()),
        writer,
    )
    .inspect(move |event| {
        if matches!(
            event,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone)
        ) {
            changed.send_replace(());
        }
    })
    .applied_objects();
    let controller = Controller::for_stream(events, reader);
    let by_issuer = certificates_referencing::<v1alpha1::Issuer>(controller.store());
    // Metadata only, and only Secrets we label: never Secret data.
    let issued_secrets = watcher::Config::default().labels(secret::CERTIFICATE_NAME_LABEL);
    let controller = controller
        .owns_stream(
            scope
                .trigger_watch::<PartialObjectMeta<Secret>>(client, &issued_secrets)
                .touched_objects(),
        )
        .watches_stream(
            scope
                .trigger_watch::<DeserializeGuard<v1alpha1::Issuer>>(client, &watcher::Config::default())
                .touched_objects(),
            by_issuer,
        );
    if !scope.serves_cluster_scoped() {
        return controller;
    }
    let by_cluster_issuer = certificates_referencing::<v1alpha1::ClusterIssuer>(controller.store());
    let by_domain = certificates_under_domain(controller.store());
    controller
        .watches(
            Api::<DeserializeGuard<v1alpha1::ClusterIssuer>>::all(client.clone()),
            watcher::Config::default(),
            by_cluster_issuer,
        )
        .watches(
            Api::<DeserializeGuard<v1alpha1::DomainValidation>>::all(client.clone()),
            watcher::Config::default(),
            by_domain,
        )
}

/// The AlertConfig controller: its kind (on spec changes: its status records every pass),
/// plus every change of a Certificate (`certificate_changes`, from the Certificate controller's
/// cache, which the reconciler reads) or a DiscoveryTask (cached here), which re-evaluates every
/// AlertConfig (there are few). Each cache is updated before its change triggers
/// ([`alert_config::Caches`]).
fn alert_config_controller(
    client: &Client,
    scope: &WatchScope,
    ctx: &Context,
    certificate_changes: tokio::sync::watch::Receiver<()>,
) -> Controller<DeserializeGuard<v1alpha1::AlertConfig>> {
    let (reader, writer) = kube::runtime::reflector::store();
    // An AlertConfig deleted without a finalizer (no CertMgmt levels to take back) is never
    // reconciled again: its alert-level series go when its deletion is watched.
    let (metrics, published) = (ctx.metrics.clone(), ctx.alert_caches.published.clone());
    let configs_stream = cached_events(cluster_watch(client), writer)
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(gone)) = event {
                alert_config::forget_levels(&metrics, &published, &gone.name_any());
            }
        })
        .applied_objects()
        .predicate_filter(
            spec_or_deletion::<v1alpha1::AlertConfig>,
            kube::runtime::PredicateConfig::default(),
        );
    let controller = Controller::for_stream(configs_stream, reader);
    let configs = controller.store();
    let every_config = move || {
        configs
            .state()
            .iter()
            .map(|c| ObjectRef::from_obj(c.as_ref()))
            .collect::<Vec<_>>()
    };
    let (tasks, task_writer) = kube::runtime::reflector::store();
    let task_events = scope.cached_watch(client, &cache_config(), tasks.clone());
    // A second start of the controllers (a regained leadership) keeps the first cache's handle
    // out of the context: the reconciler then waits on the store that is no longer fed. The
    // process exits when it loses leadership (leader.rs), so this does not happen.
    let _ = ctx.alert_caches.discovery_tasks.set(tasks);
    // A burst of Certificate changes (thousands at start-up or in a mass renewal) is one wake:
    // the watch channel keeps only that something changed since the last look.
    let certificate_changes = futures::stream::unfold(certificate_changes, |mut changes| async move {
        changes.changed().await.ok()?;
        Some(((), changes))
    });
    // Deletions too: a deleted Certificate's alert clears (the Certificate cache tells of its
    // deletions), a deleted DiscoveryTask's findings and hosts go (`touched_objects`).
    controller.reconcile_all_on(certificate_changes).watches_stream(
        cached_events(task_events, task_writer).touched_objects(),
        move |_| every_config(),
    )
}

/// Maps a DomainValidation to the cached Certificates with a name under its domain, so a
/// Certificate waiting for the domain (`DomainNotValidated`) moves on once it validates.
fn certificates_under_domain(
    certificates: Store<DeserializeGuard<v1alpha1::Certificate>>,
) -> impl Fn(
    DeserializeGuard<v1alpha1::DomainValidation>,
) -> Vec<ObjectRef<DeserializeGuard<v1alpha1::Certificate>>>
+ Send
+ Sync
+ 'static {
    move |changed| {
        let Ok(changed) = changed.0 else {
            return Vec::new();
        };
        certificates
            .state()
            .into_iter()
            .filter(|guard| {
                guard.0.as_ref().is_ok_and(|cert| {
                    cert.spec
                        .dns_names
                        .iter()
                        .any(|name| domain_validation::covers(&changed.spec.domain, name))
                })
            })
            .map(|guard| ObjectRef::from_obj(guard.as_ref()))
            .collect()
    }
}

/// Maps an issuer of kind `K` to the cached Certificates whose `issuerRef` names it.
fn certificates_referencing<K: issuer::IssuerObject>(
    certificates: Store<DeserializeGuard<v1alpha1::Certificate>>,
) -> impl Fn(DeserializeGuard<K>) -> Vec<ObjectRef<DeserializeGuard<v1alpha1::Certificate>>> + Send + Sync + 'static
{
    move |changed| {
        let Ok(changed) = changed.0 else {
            return Vec::new();
        };
        let target = issuer::IssuerTarget::of(&changed);
        certificates
            .state()
            .into_iter()
            .filter(|guard| {
                guard.0.as_ref().is_ok_and(|cert| {
                    issuer::IssuerTarget::from_namespaced(
                        &cert.spec.issuer_ref,
                        cert.metadata.namespace.as_deref().unwrap_or_default(),
                    ) == target
                })
            })
            .map(|guard| ObjectRef::from_obj(guard.as_ref()))
            .collect()
    }
}

/// A controller over a cache fed by `watch` (given the cache's reader), which tolerates objects
/// it cannot deserialize (they are reported, not fatal) and caches them without their
/// managedFields.
fn controller_for<K>(
    watch: impl FnOnce(Store<DeserializeGuard<K>>) -> scope::Events<DeserializeGuard<K>>,
) -> Controller<DeserializeGuard<K>>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = kube::runtime::reflector::store();
    let objects = cached_events(watch(reader.clone()), writer).applied_objects();
    Controller::for_stream(objects, reader)
}

/// [`controller_for`] reconciling only on spec changes (a new `metadata.generation`), deletion
/// and its own requeues, not on its status writes: for a reconciler that calls a CA on every run and writes
/// status it computed from that call, each status write would otherwise be another CA call.
fn spec_controller_for<K>(
    watch: impl FnOnce(Store<DeserializeGuard<K>>) -> scope::Events<DeserializeGuard<K>>,
) -> Controller<DeserializeGuard<K>>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = kube::runtime::reflector::store();
    let objects = cached_events(watch(reader.clone()), writer)
        .applied_objects()
        .predicate_filter(spec_or_deletion::<K>, kube::runtime::PredicateConfig::default());
    Controller::for_stream(objects, reader)
}

/// The predicate of a spec-only controller: the generation, and whether deletion started (a
/// finalizer must run even if the apiserver did not bump the generation when it set
/// `deletionTimestamp`).
#[allow(
    clippy::unnecessary_wraps,
    reason = "the shape kube-runtime's predicate_filter takes"
)]
fn spec_or_deletion<K>(object: &DeserializeGuard<K>) -> Option<u64>
where
    K: Resource<DynamicType = ()>,
{
    let meta = object.meta();
    Some(
        meta.generation.unwrap_or_default().unsigned_abs() * 2 + u64::from(meta.deletion_timestamp.is_some()),
    )
}

/// The watch `events`, cached in `writer` without their managedFields: for a consumer that must
/// also see deletions ([`WatchStreamExt::touched_objects`]).
fn cached_events<K>(
    events: scope::Events<DeserializeGuard<K>>,
    writer: kube::runtime::reflector::store::Writer<DeserializeGuard<K>>,
) -> impl futures::Stream<Item = Result<watcher::Event<DeserializeGuard<K>>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    // managedFields are the largest part of a cached object and nothing here reads them (every
    // write is a server-side apply that the apiserver merges): they never reach the cache.
    events
        .modify(|object| object.managed_fields_mut().clear())
        .reflect(writer)
}

/// A controller running a real reconciler over the typed object; objects that fail to
/// deserialize are reported instead of stalling the stream.
fn runner_with<K, F, E>(
    name: &'static str,
    controller: Controller<DeserializeGuard<K>>,
    ctx: &Arc<Context>,
    shutdown: &CancellationToken,
    reconcile: fn(Arc<K>, Arc<Context>) -> F,
) -> Runner
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    F: Future<Output = Result<Action, E>> + Send + 'static,
    E: Into<Error> + Send + 'static,
{
    let controller = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.max_concurrent_reconciles))
        .graceful_shutdown_on(shutdown.clone().cancelled_owned());
    let store: Store<DeserializeGuard<K>> = controller.store();
    let synced = async move {
        let _ = store.wait_until_ready().await;
    }
    .boxed();
    // Consecutive failures per object, for the error policy's backoff.
    let failures = Arc::new(errors::Failures::default());
    let (reconciled, failed) = (failures.clone(), failures.clone());
    let metrics = ctx.metrics.clone();
    let run = controller
        .run(
            move |obj: Arc<DeserializeGuard<K>>, ctx: Arc<Context>| {
                let failures = reconciled.clone();
                async move { reconcile_once(name, reconcile, &obj, &ctx, &failures).await }
            },
            move |obj, err, _ctx| error_policy(name, &obj, err, &failed),
            ctx.clone(),
        )
        .for_each(move |result| {
            match &result {
                // A retry found its object deleted: nothing will fail for it any more.
                Err(kube::runtime::controller::Error::ObjectNotFound(gone)) => {
                    failures.forget(&(gone.namespace.clone(), gone.name.clone()));
                    // A Certificate deleted without a finalizer (revocation policy `Retain`) is
                    // never reconciled again; a trigger after it left the cache (its Secret's
                    // garbage collection) ends here, and so do its series.
                    if name == "certificate" {
                        metrics.remove_certificate(gone.namespace.as_deref().unwrap_or_default(), &gone.name);
                    }
                }
                Err(error) => {
                    tracing::debug!(controller = name, error = %errors::error_chain(error), "reconcile loop event");
                }
                Ok(_) => {}
            }
            futures::future::ready(())
        })
        .boxed();
    Runner { name, synced, run }
}

/// The object's identity for the failure counts.
fn object_key<K: Resource>(obj: &K) -> errors::ObjectKey {
    (
        obj.meta().namespace.clone(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

/// One reconcile run as the runner makes it: objects that failed to deserialize become
/// [`Error::InvalidObject`], the run is counted and timed (failures too), and a success resets
/// the object's backoff.
async fn reconcile_once<K, F, E>(
    name: &'static str,
    reconcile: fn(Arc<K>, Arc<Context>) -> F,
    obj: &Arc<DeserializeGuard<K>>,
    ctx: &Arc<Context>,
    failures: &errors::Failures,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone,
    F: Future<Output = Result<Action, E>>,
    E: Into<Error>,
{
    let started = Instant::now();
    let result = match &obj.0 {
        Ok(object) => reconcile(Arc::new(object.clone()), ctx.clone())
            .await
            .map_err(Into::into),
        Err(invalid) => Err(Error::InvalidObject {
            object: format!(
                "{}/{}",
                invalid.metadata.namespace.as_deref().unwrap_or(""),
                invalid.metadata.name.as_deref().unwrap_or("")
            ),
            message: invalid.error.clone(),
        }),
    };
    let seconds = started.elapsed().as_secs_f64();
    match &result {
        Ok(_) => {
            failures.forget(&object_key(obj.as_ref()));
            ctx.metrics.reconciled(name, "success", seconds);
        }
        Err(error) => ctx.metrics.reconciled(name, error.category(), seconds),
    }
    result
}

/// After a failed reconcile: transient failures are retried with per-object exponential
/// backoff, permanent ones wait for a change ([`errors`] decides which is which).
fn error_policy<K>(
    name: &'static str,
    obj: &Arc<DeserializeGuard<K>>,
    error: &Error,
    failures: &errors::Failures,
) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let classification = errors::reconcile(error);
    let retry = failures.failed(object_key(obj.as_ref()), classification);
    tracing::warn!(
        controller = name,
        object = %ObjectRef::from_obj(obj.as_ref()),
        reason = classification.reason,
        ?retry,
        error = %errors::error_chain(error),
        "reconcile failed"
    );
    retry.into()
}

#[cfg(test)]
mod tests {
    use http::{Method, Request, Response};
    use kube::{client::Body, runtime::events::Reporter};

    use super::*;

    fn status_response(code: u16, reason: &str) -> Response<Body> {
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("injected {reason}"), "reason": reason, "code": code,
        });
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&status).unwrap()))
            .unwrap()
    }

    /// A context around `client` with the defaults of a single-replica operator.
    pub(crate) fn context(client: Client) -> Arc<Context> {
        Arc::new(Context {
            events: events::Events::new(
                client.clone(),
                Reporter {
                    controller: "pki-operator".into(),
                    instance: None,
                },
            ),
            client,
            metrics: Arc::new(Metrics::new()),
            cluster_resource_namespace: "default".into(),
            max_concurrent_reconciles: 1,
            issuer_secret_label: None,
            backends: issuer::cache::BackendCache::default(),
            dcv_self_check: domain_validation::self_check::SelfCheckSettings::default(),
            solver_service: domain_validation::ingress::SolverService::default(),
            inventory: crate::discovery::inventory::Inventory::default(),
            alert_caches: super::alert_config::Caches::default(),
            scope: WatchScope::cluster(),
        })
    }

    fn issuer() -> v1alpha1::Issuer {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pki-operator.io/v1alpha1", "kind": "Issuer",
            "metadata": {"name": "ca", "namespace": "team", "generation": 1},
            "spec": {"ca": {"secretName": "ca-key"}},
        }))
        .unwrap()
    }

    /// The value of the sample line starting with `series` in the metrics text.
    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {text}"))
    }

    /// An apiserver 5xx on the status write must not strand the Issuer until someone edits it:
    /// the runner counts the failure with its duration and the error policy requeues it.
    #[tokio::test]
    async fn issuer_whose_status_write_gets_a_500_is_requeued() {
        let (service, mut apiserver) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "team");
        let answers = tokio::spawn(async move {
            let (request, reply) = apiserver.next_request().await.expect("GET of the CA Secret");
            assert_eq!(request.method(), Method::GET);
            assert_eq!(request.uri().path(), "/api/v1/namespaces/team/secrets/ca-key");
            reply.send_response(status_response(404, "NotFound"));
            let (request, reply) = apiserver.next_request().await.expect("status PATCH");
            assert_eq!(request.method(), Method::PATCH);
            assert_eq!(
                request.uri().path(),
                "/apis/pki-operator.io/v1alpha1/namespaces/team/issuers/ca/status"
            );
            reply.send_response(status_response(500, "InternalError"));
        });
        let ctx = context(client);
        let failures = errors::Failures::default();
        let obj = Arc::new(DeserializeGuard(Ok(issuer())));
        let error = reconcile_once(
            "issuer",
            issuer::reconcile::<v1alpha1::Issuer>,
            &obj,
            &ctx,
            &failures,
        )
        .await
        .expect_err("the status write failed");
        answers.await.unwrap();
        assert!(
            matches!(&error, Error::Issuer(issuer::IssuerError::UpdateStatus(_))),
            "{error:?}"
        );

        let action = error_policy("issuer", &obj, &error, &failures);
        assert_ne!(action, Action::await_change(), "{action:?}");
        assert_eq!(failures.len(), 1, "the retry is backed off per object");
        let text = ctx.metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"pki_operator_reconciliations_total{controller="issuer",outcome="KubernetesError"} 1"#
            ),
            "{text}"
        );
        assert!(
            sample(
                &text,
                r#"pki_operator_reconcile_duration_seconds_sum{controller="issuer"}"#
            ) > 0.0
        );
    }

    #[allow(clippy::unused_async)]
    async fn succeed(_: Arc<v1alpha1::Issuer>, _: Arc<Context>) -> Result<Action, Error> {
        Ok(Action::await_change())
    }

    #[tokio::test]
    async fn a_success_resets_the_backoff_and_an_unreadable_object_waits_for_a_change() {
        let (service, _apiserver) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let ctx = context(Client::new(service, "team"));
        let failures = errors::Failures::default();
        let obj = Arc::new(DeserializeGuard(Ok(issuer())));
        let blip = Error::Issuer(issuer::IssuerError::UpdateStatus(kube::Error::Api(
            kube::core::Status::failure("etcd timeout", "Timeout")
                .with_code(504)
                .boxed(),
        )));
        assert_ne!(
            error_policy("issuer", &obj, &blip, &failures),
            Action::await_change()
        );
        assert_eq!(failures.len(), 1);
        reconcile_once("issuer", succeed, &obj, &ctx, &failures)
            .await
            .unwrap();
        assert!(failures.is_empty(), "a success forgets the failures");

        let invalid = Arc::new(DeserializeGuard::<v1alpha1::Issuer>(Err(
            kube::core::error_boundary::InvalidObject {
                error: "spec.ca: invalid type: string".into(),
                metadata: kube::api::ObjectMeta {
                    name: Some("broken".into()),
                    namespace: Some("team".into()),
                    ..Default::default()
                },
            },
        )));
        let error = reconcile_once("issuer", succeed, &invalid, &ctx, &failures)
            .await
            .expect_err("an unreadable object fails");
        assert_eq!(error.category(), "InvalidObject");
        assert_eq!(
            error_policy("issuer", &invalid, &error, &failures),
            Action::await_change()
        );
        assert!(failures.is_empty());
    }
}
