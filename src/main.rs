//! The `pki-operator` binary: parse configuration, start logging, the admin server, leader
//! election and the controllers, and shut down cleanly on SIGTERM. All logic lives in the library.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client, config::KubeConfigOptions, runtime::events::Reporter};
use pki_operator::{
    admin::{self, Readiness},
    config::Config,
    controller::{self, Context, WatchScope},
    leader::{LeaderElector, LeaseSettings},
    metrics::Metrics,
    solver, startup, telemetry,
};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(error) = telemetry::init(config.log_format, &config.log_level) {
        eprintln!("pki-operator: {:#}", anyhow::Error::from(error));
        return ExitCode::FAILURE;
    }
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line with the whole cause chain; no backtrace, nothing but the message.
            tracing::error!(error = format!("{error:#}"), "pki-operator stopped");
            eprintln!("pki-operator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let client = kube_client(&config).await?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::default();
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let admin = admin::serve(
        config.admin_address,
        readiness.clone(),
        metrics.clone(),
        shutdown.clone().cancelled_owned(),
    )
    .await?;
    let admin = tokio::spawn(admin);
    let scope = config.watch_scope();
    // Every replica answers HTTP challenges: the route to the operator may reach any pod. A
    // namespace-scoped operator serves no DomainValidation (cluster-scoped), so no solver.
    let solver = if scope.serves_cluster_scoped() {
        let solver = solver::http::serve(
            config.solver_address,
            client.clone(),
            shutdown.clone().cancelled_owned(),
        )
        .await?;
        Some(tokio::spawn(solver))
    } else {
        None
    };

    startup::check_crds_installed(&client).await?;

    let mut elector = None;
    if config.leader_election {
        let settings = LeaseSettings::new(
            config.leader_election_lease.clone(),
            config.lease_identity(),
            config.lease_duration,
        );
        tracing::info!(lease = %settings.name, identity = %settings.identity, "waiting for leadership");
        let mut e = LeaderElector::new(
            Api::<Lease>::namespaced(client.clone(), &config.lease_namespace()),
            settings,
        );
        if !e.acquire(&shutdown).await {
            tracing::info!("shut down while standing by");
            return Ok(());
        }
        elector = Some(e);
    }
    metrics.set_leader(true);

    let ctx = context(&config, client, metrics.clone(), scope);
    let controllers = controller::run(ctx, readiness.clone(), shutdown.clone());

    let result = if let Some(elector) = elector.as_mut() {
        // The controllers stop before the Lease can expire for a standby; after a loss the
        // process exits instead of continuing as a possible second leader.
        let held = elector.lead(&shutdown, controllers).await;
        if held.is_err() {
            readiness.set(false);
        }
        held.map_err(anyhow::Error::from)
    } else {
        controllers.await;
        Ok(())
    };
    readiness.set(false);
    metrics.set_leader(false);
    shutdown.cancel();
    admin
        .await
        .context("admin server task")?
        .context("admin server")?;
    if let Some(solver) = solver {
        solver.await.context("HTTP solver task")?.context("HTTP solver")?;
    }
    tracing::info!("shut down");
    result
}

/// The state every reconcile shares, from the configuration.
fn context(config: &Config, client: Client, metrics: Arc<Metrics>, scope: WatchScope) -> Arc<Context> {
    let events = controller::events::Events::new(
        client.clone(),
        Reporter {
            controller: "pki-operator".into(),
            instance: Some(config.lease_identity()),
        },
    );
    let cluster_resource_namespace = config
        .cluster_resource_namespace
        .clone()
        .or_else(|| config.pod_namespace.clone())
        .unwrap_or_else(|| "default".into());
    Arc::new(Context {
        client,
        metrics,
        events,
        cluster_resource_namespace,
        max_concurrent_reconciles: config.max_concurrent_reconciles,
        issuer_secret_label: config.issuer_secret_label.clone(),
        backends: controller::issuer::cache::BackendCache::default(),
        dcv_self_check: controller::domain_validation::self_check::SelfCheckSettings {
            http_address: config.dcv_http_self_check_address,
            dns_server: config.dcv_dns_self_check_server,
            recheck_interval: config.dcv_recheck_interval,
        },
        inventory: pki_operator::discovery::inventory::Inventory::default(),
        alert_caches: pki_operator::controller::alert_config::Caches::default(),
        solver_service: controller::domain_validation::ingress::SolverService {
            name: config.solver_service.clone(),
            namespace: config.pod_namespace.clone(),
        },
        scope,
    })
}

async fn kube_client(config: &Config) -> anyhow::Result<Client> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not running in a cluster")?,
    };
    Ok(Client::try_from(kube_config)?)
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
    shutdown.cancel();
}
