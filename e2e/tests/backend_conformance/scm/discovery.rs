//! The SCM discovery client (`pki_operator::backend::scm::discovery`) against the simulator,
//! which scans for real: TLS servers with known certificates run on loopback, and a task over
//! `127.0.0.1/32` and their ports must find exactly those certificates, through every login and
//! flavour and under both readings. Plus the crash between "task created" and "answer
//! received", the calls that must never be repeated, and the documented error codes.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming};
use jiff::Timestamp;
use pki_operator::backend::scm::{
    ScmBackend,
    discovery::{DiscoveryError, NetRange, NetTaskSpec, Operation, TaskStatus},
};
use pki_operator_e2e::sim::{
    DEFAULT_DISCOVERY_AGENT, DEFAULT_DISCOVERY_BUCKET, Handler, HttpResponse, LeafSpec, LeafUsage,
    SubjectName, TestCa, TlsServer, TlsServerOptions, hex_lower, random_serial,
    scm::{Faults, ScmReading, ScmSimulator, ScmSimulatorConfig},
};
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha1::{Digest as _, Sha1};
use tokio_util::sync::CancellationToken;

use super::{Mode, PASSWORD, backend_for, reading_config, sim_config};
use crate::{run, trial};

/// The trials that run once (the per-login trial is [`scans_through_the_client`]).
pub fn trials() -> Vec<libtest_mimic::Trial> {
    vec![
        trial(
            "scm::discovery_lost_create_is_adopted_not_duplicated".into(),
            || run(lost_create_is_adopted()),
        ),
        trial("scm::discovery_create_and_start_are_never_retried".into(), || {
            run(create_and_start_are_never_retried())
        }),
        trial(
            "scm::discovery_errors_map_to_reasons_a_user_can_act_on".into(),
            || run(errors_map_to_reasons()),
        ),
    ]
}

/// Answers every request; a scan only needs the handshake.
struct Hello;

impl Handler for Hello {
    async fn handle(&self, _request: Request<Incoming>) -> HttpResponse {
        Response::new(Full::new(Bytes::from_static(b"hello")))
    }
}

/// A TLS server on a free loopback port presenting `chain`.
async fn serve(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<TlsServer> {
    let options = TlsServerOptions {
        certificate_chain: chain,
        private_key: key,
        client_roots: Vec::new(),
        require_client_certificate: false,
    };
    Ok(TlsServer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        options,
        Arc::new(Hello),
        CancellationToken::new(),
    )
    .await?)
}

/// Two servers: an expired self-signed P-256 certificate, and a healthy one issued by a CA.
struct Endpoints {
    expired: TlsServer,
    expired_der: CertificateDer<'static>,
    healthy: TlsServer,
    healthy_der: CertificateDer<'static>,
}

impl Endpoints {
    async fn start() -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["expired.example".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "expired.example");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(400);
        params.not_after = now - time::Duration::days(3);
        let expired_der = params.self_signed(&key)?.der().clone();
        let expired = serve(
            vec![expired_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .await?;
        let ca = TestCa::generate("Conformance Discovery")?;
        let (healthy_der, healthy_key) = ca.issue_with_new_key(&LeafSpec {
            common_name: Some("healthy.example".into()),
            names: vec![SubjectName::Dns("healthy.example".into())],
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(60),
            serial: random_serial().to_vec(),
            usage: LeafUsage::Server,
            key_encipherment: false,
        })?;
        let healthy = serve(
            vec![healthy_der.clone(), ca.intermediate_der().clone()],
            PrivateKeyDer::Pkcs8(healthy_key),
        )
        .await?;
        Ok(Self {
            expired,
            expired_der,
            healthy,
            healthy_der,
        })
    }

    async fn shutdown(self) {
        self.expired.shutdown().await;
        self.healthy.shutdown().await;
    }
}

fn spec(name: &str, ports: &[u16]) -> NetTaskSpec {
    NetTaskSpec {
        name: name.to_owned(),
        agent: DEFAULT_DISCOVERY_AGENT.to_owned(),
        ranges: vec![NetRange {
            address: "127.0.0.1/32".to_owned(),
            ports: ports.to_vec(),
        }],
        bucket_id: DEFAULT_DISCOVERY_BUCKET.to_owned(),
    }
}

fn range(address: &str, port: u16) -> NetRange {
    NetRange {
        address: address.to_owned(),
        ports: vec![port],
    }
}

/// Polls as a controller would (§8.3): the newest operation until it is finished, then the task
/// until its status is final (past `PROCESSING_RESULT`).
async fn wait_for_scan(backend: &ScmBackend, id: i64) -> Result<Operation> {
    for _ in 0..400 {
        let operations = backend.discovery_operations(id).await?;
        if let Some(newest) = operations.last()
            && newest.is_terminal()
            && backend.discovery_get_task(id).await?.status.is_terminal()
        {
            return Ok(newest.clone());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("the scan of task {id} did not finish")
}

/// The whole life of a task through the client: adopt-or-create, read, update, start, poll,
/// results, stop, delete; every call on the version the spec's matrix names.
pub async fn scans_through_the_client(mode: Mode, reading: ScmReading) -> Result<()> {
    let sim = ScmSimulator::start(reading_config(mode, reading)).await?;
    let backend = backend_for(&sim, mode, PASSWORD)?;
    let endpoints = Endpoints::start().await?;
    let expired_port = endpoints.expired.local_addr().port();
    let healthy_port = endpoints.healthy.local_addr().port();
    let mut wanted = spec("conformance-scan", &[expired_port]);

    ensure!(
        backend.discovery_find_task(&wanted.name).await?.is_none(),
        "a task was found before any was created"
    );
    let id = backend.discovery_create_task(&wanted).await?;
    let found = backend
        .discovery_find_task(&wanted.name)
        .await?
        .context("the created task is not found by its name")?;
    ensure!(found.id == id, "found task {} instead of {id}", found.id);
    ensure!(found.matches(&wanted), "created {found:?} for {wanted:?}");
    ensure!(found.status == TaskStatus::Never, "status {:?}", found.status);
    ensure!(found.frequency.as_deref() == Some("Manual"));

    wanted.ranges[0].ports.push(healthy_port);
    backend.discovery_update_task(id, &wanted).await?;
    let task = backend.discovery_get_task(id).await?;
    ensure!(task.matches(&wanted), "updated to {task:?}, wanted {wanted:?}");
    ensure!(
        backend.discovery_operations(id).await?.is_empty(),
        "operations before the first start"
    );

    let started_at = Timestamp::now();
    backend.discovery_start_task(id).await?;
    let operation = wait_for_scan(&backend, id).await?;
    ensure!(operation.is_completed(), "operation {operation:?}");
    ensure!(
        operation
            .created
            .is_some_and(|created| created >= started_at - jiff::SignedDuration::from_secs(5)),
        "operation created {:?}, started at {started_at}",
        operation.created
    );
    ensure!(operation.bucket_id.as_deref() == Some(DEFAULT_DISCOVERY_BUCKET));
    let task = backend.discovery_get_task(id).await?;
    ensure!(task.status == TaskStatus::Successful, "status {:?}", task.status);

    check_results(&backend, id, &operation, &endpoints).await?;

    // Stopping a finished operation changes nothing; delete is idempotent.
    backend.discovery_stop_operation(id, &operation.id).await?;
    ensure!(backend.discovery_get_task(id).await?.status == TaskStatus::Successful);
    backend.discovery_delete_task(id).await?;
    backend.discovery_delete_task(id).await?;
    match backend.discovery_get_task(id).await {
        Err(DiscoveryError::TaskNotFound { task_id }) if task_id == id => {}
        other => bail!("a deleted task read as {other:?}"),
    }
    ensure!(backend.discovery_find_task(&wanted.name).await?.is_none());

    check_calls(&sim, mode, id, &operation.id)?;
    endpoints.shutdown().await;
    Ok(())
}

/// The two certificates, as the expiry, self-signed and fingerprint checks see them.
async fn check_results(
    backend: &ScmBackend,
    id: i64,
    operation: &Operation,
    endpoints: &Endpoints,
) -> Result<()> {
    let expired_port = endpoints.expired.local_addr().port();
    let healthy_port = endpoints.healthy.local_addr().port();
    let results = backend.discovery_results(id, &operation.id).await?;
    ensure!(results.len() == 2, "{} results: {results:#?}", results.len());
    let now = Timestamp::now();
    let on = |port: u16| {
        results
            .iter()
            .find(|found| found.port == port)
            .with_context(|| format!("no result on port {port}"))
    };
    let expired = on(expired_port)?;
    ensure!(expired.ip == "127.0.0.1");
    ensure!(expired.common_name.as_deref() == Some("expired.example"));
    ensure!(expired.is_expired_at(now) == Some(true), "{expired:?}");
    ensure!(expired.self_signed() == Some(true), "{expired:?}");
    ensure!(expired.key_algorithm.as_deref() == Some("EC") && expired.key_size == Some(256));
    ensure!(expired.hash == hex_lower(&Sha1::digest(&endpoints.expired_der)));
    ensure!(!expired.is_managed());
    let healthy = on(healthy_port)?;
    ensure!(healthy.is_expired_at(now) == Some(false), "{healthy:?}");
    ensure!(healthy.self_signed() == Some(false), "{healthy:?}");
    ensure!(healthy.sans == ["healthy.example"], "{:?}", healthy.sans);
    ensure!(
        healthy.issuer.get("CN").map(String::as_str) == Some("Conformance Discovery Issuing CA"),
        "{:?}",
        healthy.issuer
    );
    ensure!(healthy.hash == hex_lower(&Sha1::digest(&endpoints.healthy_der)));
    ensure!(
        healthy
            .valid_to
            .is_some_and(|to| to > now + jiff::SignedDuration::from_hours(24 * 59)),
        "{:?}",
        healthy.valid_to
    );
    ensure!(healthy.operation_id.as_deref() == Some(operation.id.as_str()));
    Ok(())
}

/// Every call went to the version the spec's matrix names (§2.1), under the login's prefix.
fn check_calls(sim: &ScmSimulator, mode: Mode, id: i64, operation_id: &str) -> Result<()> {
    let private = match mode {
        Mode::SectigoPassword | Mode::InCommonPassword => "",
        Mode::SectigoClientCertificate | Mode::InCommonClientCertificate => "/private",
    };
    let calls = sim.stats().calls;
    for wanted in [
        format!("GET {private}/api/discovery/v3/net_task"),
        format!("POST {private}/api/discovery/v4/net_task"),
        format!("GET {private}/api/discovery/v4/net_task/{id}"),
        format!("PUT {private}/api/discovery/v4/net_task/{id}"),
        format!("POST {private}/api/discovery/v3/net_task/{id}/start"),
        format!("GET {private}/api/discovery/v1/net_task/{id}/operation"),
        format!("GET {private}/api/discovery/v1/net_task/{id}/operation/{operation_id}/result"),
        format!("POST {private}/api/discovery/v1/net_task/{id}/operation/{operation_id}/stop"),
        format!("DELETE {private}/api/discovery/v3/net_task/{id}"),
    ] {
        ensure!(calls.contains(&wanted), "{wanted} was never called: {calls:#?}");
    }
    Ok(())
}

/// The crash between "task created" and "answer received": the create fails transiently, the
/// search by name adopts the task, and no second task is made. A task whose name merely
/// contains the wanted one is not adopted.
async fn lost_create_is_adopted() -> Result<()> {
    let sim = ScmSimulator::start(sim_config(Mode::SectigoPassword)).await?;
    let backend = backend_for(&sim, Mode::SectigoPassword, PASSWORD)?;
    let decoy = spec("lost-create-decoy", &[443]);
    let decoy_id = backend.discovery_create_task(&decoy).await?;
    let wanted = spec("lost-create", &[443, 8443]);
    ensure!(backend.discovery_find_task(&wanted.name).await?.is_none());
    sim.set_faults(Faults {
        drop_after_enroll: 1,
        endpoints: Some(vec!["discoveryCreateTask".into()]),
        ..Faults::default()
    });
    let error = match backend.discovery_create_task(&wanted).await {
        Ok(id) => bail!("create answered {id} although the connection was dropped"),
        Err(error) => error,
    };
    ensure!(
        error.is_transient() && error.reason() == "Unavailable",
        "a dropped create must be transient Unavailable, got {error:?}"
    );
    let adopted = backend
        .discovery_find_task(&wanted.name)
        .await?
        .context("the task created before the connection dropped is not found")?;
    ensure!(adopted.id != decoy_id && adopted.matches(&wanted), "{adopted:?}");
    let stats = sim.stats();
    ensure!(
        stats.discovery_tasks.len() == 2,
        "tasks: {:?}",
        stats.discovery_tasks
    );
    ensure!(
        stats.requests.get("discoveryCreateTask") == Some(&2),
        "{:?}",
        stats.requests
    );
    Ok(())
}

/// Create and start are sent once, whatever happens; reads are retried.
async fn create_and_start_are_never_retried() -> Result<()> {
    let sim = ScmSimulator::start(sim_config(Mode::SectigoPassword)).await?;
    let backend = backend_for(&sim, Mode::SectigoPassword, PASSWORD)?;
    let id = backend.discovery_create_task(&spec("once", &[443])).await?;
    sim.reset_stats();
    sim.set_faults(Faults {
        server_error_rate: 1.0,
        endpoints: Some(vec![
            "discoveryCreateTask".into(),
            "discoveryStartTask".into(),
            "discoveryGetTask".into(),
        ]),
        ..Faults::default()
    });
    let created = backend.discovery_create_task(&spec("twice", &[443])).await;
    ensure!(
        matches!(&created, Err(error) if error.is_transient()),
        "create against a failing server gave {created:?}"
    );
    let started = backend.discovery_start_task(id).await;
    ensure!(started.is_err(), "start succeeded against a failing server");
    ensure!(backend.discovery_get_task(id).await.is_err());
    let requests = sim.stats().requests;
    ensure!(requests.get("discoveryCreateTask") == Some(&1), "{requests:?}");
    ensure!(requests.get("discoveryStartTask") == Some(&1), "{requests:?}");
    ensure!(
        requests.get("discoveryGetTask") == Some(&6),
        "get is idempotent and retried up to the policy's 6 attempts: {requests:?}"
    );
    Ok(())
}

/// Every documented code the client can meet, from the simulator, as the reason a
/// DiscoveryTask would carry.
async fn errors_map_to_reasons() -> Result<()> {
    let sim = ScmSimulator::start(ScmSimulatorConfig {
        discovery_scan_duration: Duration::from_secs(60),
        ..sim_config(Mode::SectigoPassword)
    })
    .await?;
    let backend = backend_for(&sim, Mode::SectigoPassword, PASSWORD)?;
    refused_tasks(&sim, &backend).await?;
    running_scans_and_unknown_ids(&backend).await?;
    unauthorized(&sim).await
}

fn refused(outcome: Result<i64, DiscoveryError>) -> Result<DiscoveryError> {
    match outcome {
        Ok(id) => bail!("created {id}"),
        Err(error) => Ok(error),
    }
}

/// Tasks the client (before any call) or SCM refuses at create.
async fn refused_tasks(sim: &ScmSimulator, backend: &ScmBackend) -> Result<()> {
    // Refused before any call: nothing reaches SCM.
    let mut empty = spec("empty", &[443]);
    empty.ranges.clear();
    ensure!(refused(backend.discovery_create_task(&empty).await)?.reason() == "NoRanges");
    let mut bare = spec("bare", &[443]);
    bare.ranges[0].address = "127.0.0.1".into();
    ensure!(refused(backend.discovery_create_task(&bare).await)?.reason() == "InvalidRange");
    ensure!(
        !sim.stats().requests.contains_key("discoveryCreateTask"),
        "a task the client refuses must not be sent"
    );

    // -305: one range too wide.
    let mut wide = spec("wide", &[443]);
    wide.ranges = vec![range("10.0.0.0/8", 443)];
    let error = refused(backend.discovery_create_task(&wide).await)?;
    ensure!(
        error.reason() == "RangeTooWide" && !error.is_transient(),
        "{error:?}"
    );
    // -303: the task's public pairs over the limit, the limits in the message.
    let mut public = spec("public", &[443]);
    public.ranges = vec![range("8.8.0.0/16", 443), range("8.9.0.0/24", 443)];
    match refused(backend.discovery_create_task(&public).await)? {
        error @ DiscoveryError::RangeTooWide {
            public_limit: Some(65_536),
            private_limit: Some(1_048_576),
            ..
        } => ensure!(
            error
                .to_string()
                .contains("at most 65536 public and 1048576 private"),
            "{error}"
        ),
        other => bail!("-303 gave {other:?}"),
    }
    // -607 and -637: an agent not configured.
    let mut agent = spec("agent", &[443]);
    agent.agent = "org4Test3sivt".into();
    match refused(backend.discovery_create_task(&agent).await)? {
        error @ DiscoveryError::AgentNotConfigured { private: true, .. } => {
            ensure!(
                error.is_transient() && error.to_string().contains("private"),
                "{error}"
            );
        }
        other => bail!("-607 gave {other:?}"),
    }
    agent.ranges = vec![range("176.108.103.10/32", 3)];
    ensure!(matches!(
        refused(backend.discovery_create_task(&agent).await)?,
        DiscoveryError::AgentNotConfigured { private: false, .. }
    ));
    // An unknown bucket.
    let mut bucket = spec("bucket", &[443]);
    bucket.bucket_id = "8bba796f-4b33-495e-92c9-bad6d4bc96d2".into();
    let error = refused(backend.discovery_create_task(&bucket).await)?;
    ensure!(
        error.reason() == "InvalidTask" && error.to_string().contains("certBucketId"),
        "{error}"
    );

    Ok(())
}

/// -618 while a scan runs, stop, and ids that name nothing.
async fn running_scans_and_unknown_ids(backend: &ScmBackend) -> Result<()> {
    // -618 while a scan runs: start, update and delete.
    let running = spec("running", &[443]);
    let id = backend.discovery_create_task(&running).await?;
    backend.discovery_start_task(id).await?;
    for (what, outcome) in [
        ("start", backend.discovery_start_task(id).await),
        ("update", backend.discovery_update_task(id, &running).await),
        ("delete", backend.discovery_delete_task(id).await),
    ] {
        match outcome {
            Err(error @ DiscoveryError::ScanRunning { task_id }) if task_id == id => {
                ensure!(error.is_transient(), "{what}: {error:?}");
            }
            other => bail!("{what} during a scan gave {other:?}"),
        }
    }
    let operation = backend
        .discovery_operations(id)
        .await?
        .pop()
        .context("no operation after start")?;
    ensure!(!operation.is_terminal(), "{operation:?}");
    ensure!(backend.discovery_get_task(id).await?.status == TaskStatus::InProcess);
    backend.discovery_stop_operation(id, &operation.id).await?;
    ensure!(backend.discovery_get_task(id).await?.status == TaskStatus::Canceled);
    let stopped = backend
        .discovery_operations(id)
        .await?
        .pop()
        .context("the operation vanished")?;
    ensure!(stopped.is_terminal() && !stopped.is_completed(), "{stopped:?}");

    // Unknown ids.
    let missing = 999_999;
    for (what, outcome) in [
        ("get", backend.discovery_get_task(missing).await.map(|_| ())),
        ("start", backend.discovery_start_task(missing).await),
        (
            "operations",
            backend.discovery_operations(missing).await.map(|_| ()),
        ),
    ] {
        ensure!(
            matches!(outcome, Err(DiscoveryError::TaskNotFound { task_id }) if task_id == missing),
            "{what} of an unknown task gave {outcome:?}"
        );
    }
    backend.discovery_delete_task(missing).await?;
    match backend
        .discovery_results(id, "ffffffffffffffffffffffffffffffff")
        .await
    {
        Err(error @ DiscoveryError::OperationNotFound { .. }) => {
            ensure!(error.reason() == "OperationNotFound");
        }
        other => bail!("an unknown operation gave {other:?}"),
    }

    Ok(())
}

/// A wrong password.
async fn unauthorized(sim: &ScmSimulator) -> Result<()> {
    match backend_for(sim, Mode::SectigoPassword, "wrong-password")?
        .discovery_find_task("anything")
        .await
    {
        Err(error @ DiscoveryError::Unauthorized { .. }) => {
            ensure!(error.to_string().contains("Unknown user"), "{error}");
            ensure!(error.reason() == "Unauthorized" && !error.is_transient());
        }
        other => bail!("a wrong password gave {other:?}"),
    }
    Ok(())
}
