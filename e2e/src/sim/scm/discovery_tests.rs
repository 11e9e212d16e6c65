//! Network discovery over real TLS, scanning for real: TLS servers with known certificates are
//! started on loopback, a task over `127.0.0.1/32` and their ports is created and started, and
//! the results must hold exactly those certificates. Every documented error path is exercised.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject as _};
use serde_json::{Value, json};
use sha1::{Digest as _, Sha1};
use tokio_util::sync::CancellationToken;

use super::{
    csr::tests::csr_pem,
    tests::{Api, error_of},
    *,
};
use crate::sim::{
    Handler, HttpResponse, LeafSpec, LeafUsage, SubjectName, TestCa, TlsServer, TlsServerOptions, hex_lower,
    random_serial, test_support::Answer,
};

/// Answers every request; the scan only needs the handshake.
struct Hello;

impl Handler for Hello {
    async fn handle(&self, _request: Request<Incoming>) -> HttpResponse {
        Response::new(Full::new(Bytes::from_static(b"hello")))
    }
}

/// A TLS server on a free loopback port presenting `chain`.
async fn serve(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> TlsServer {
    let options = TlsServerOptions {
        certificate_chain: chain,
        private_key: key,
        client_roots: Vec::new(),
        require_client_certificate: false,
    };
    TlsServer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        options,
        Arc::new(Hello),
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

/// A self-signed certificate for `cn` valid from `days_from` to `days_to` days from now.
fn self_signed(
    cn: &str,
    alg: &'static rcgen::SignatureAlgorithm,
    days_from: i64,
    days_to: i64,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::new(vec![cn.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.distinguished_name.push(DnType::OrganizationName, "Acme");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(days_from);
    params.not_after = now + time::Duration::days(days_to);
    let certificate = params.self_signed(&key).unwrap();
    (
        certificate.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn discovery(config: ScmSimulatorConfig) -> Api {
    let mut api = Api::start(config).await;
    api.prefix = "/api/discovery";
    api
}

fn task_body(name: &str, ranges: &Value) -> Value {
    json!({
        "ranges": ranges, "agent": "Cloud", "name": name, "certBucketId": DEFAULT_DISCOVERY_BUCKET,
        "frequency": "Manual", "timeZone": "UTC+00:00 - GMT, UCT, UTC, WET, EGST",
        "time": {"hours": 0, "minutes": 0}, "month": 1, "dayOfMonth": 1, "dayOfWeek": 1
    })
}

fn loopback(ports: &[u16]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|port| json!({"address": "127.0.0.1/32", "ports": port.to_string()}))
            .collect(),
    )
}

impl Api {
    async fn create_task(&self, body: Value) -> i64 {
        let answer = self.call(Method::POST, "/v4/net_task", Some(body)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
        assert!(answer.body.is_empty(), "create answers no body");
        let location = answer.headers["location"].to_str().unwrap();
        assert!(
            location.starts_with("https://127.0.0.1/api/discovery/v4/net_task/"),
            "{location}"
        );
        location.rsplit('/').next().unwrap().parse().unwrap()
    }

    async fn task(&self, id: i64) -> Value {
        let answer = self.call(Method::GET, &format!("/v4/net_task/{id}"), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(answer.headers["content-type"], "application/json");
        answer.json()
    }

    async fn start_task(&self, id: i64) -> Answer {
        self.call(Method::POST, &format!("/v3/net_task/{id}/start"), None)
            .await
    }

    async fn operations(&self, id: i64) -> (Value, Answer) {
        let answer = self
            .call(Method::GET, &format!("/v1/net_task/{id}/operation"), None)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        (answer.json(), answer)
    }

    /// Polls the task until its status is `wanted`; the statuses seen on the way.
    async fn wait_for_status(&self, id: i64, wanted: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let status = self.task(id).await["status"].clone();
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            if status == wanted {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} never reached {wanted}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn results(&self, id: i64, operation: &str, query: &str) -> Answer {
        let answer = self
            .call(
                Method::GET,
                &format!("/v1/net_task/{id}/operation/{operation}/result{query}"),
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        answer
    }
}

fn record_on(data: &[Value], port: u16) -> &Value {
    data.iter()
        .find(|record| record["location"]["details"]["port"] == port)
        .unwrap_or_else(|| panic!("no result for port {port}: {data:#?}"))
}

fn sha1_hex(der: &[u8]) -> String {
    hex_lower(&Sha1::digest(der))
}

fn timestamp(value: &Value) -> jiff::Timestamp {
    value.as_str().unwrap().parse().unwrap()
}

/// Three TLS servers: an expired self-signed P-256 certificate, a healthy one a CA issued (sent
/// with its intermediate), and a self-signed P-384 one; with their leaves.
async fn three_servers() -> (Vec<TlsServer>, [CertificateDer<'static>; 3]) {
    let (expired, expired_key) = self_signed("expired.example", &PKCS_ECDSA_P256_SHA256, -400, -30);
    let (p384, p384_key) = self_signed("p384.example", &PKCS_ECDSA_P384_SHA384, -1, 365);
    let ca = TestCa::generate("Discovery Test").unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (healthy, healthy_key) = ca
        .issue_with_new_key(&LeafSpec {
            common_name: Some("healthy.example".into()),
            names: vec![
                SubjectName::Dns("healthy.example".into()),
                SubjectName::Ip([127, 0, 0, 1].into()),
            ],
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(90),
            serial: random_serial().to_vec(),
            usage: LeafUsage::Server,
            key_encipherment: false,
        })
        .unwrap();
    let servers = vec![
        serve(vec![expired.clone()], expired_key).await,
        serve(
            vec![healthy.clone(), ca.intermediate_der().clone()],
            PrivateKeyDer::Pkcs8(healthy_key),
        )
        .await,
        serve(vec![p384.clone()], p384_key).await,
    ];
    (servers, [expired, healthy, p384])
}

/// The expired self-signed certificate's record, field by field.
fn check_expired(record: &Value, der: &[u8], operation_id: &str) {
    let details = &record["certificate"]["details"];
    assert_eq!(details["cn"], "expired.example");
    let valid_to = timestamp(&details["validTo"]);
    assert!(valid_to < jiff::Timestamp::now(), "expired: {valid_to}");
    assert_eq!(details["issuer"], details["subject"], "self-signed");
    assert_eq!(details["subject"], json!({"CN": "expired.example", "O": "Acme"}));
    assert_eq!(details["keyAlgorithm"], "EC");
    assert_eq!(details["keySize"], 256);
    assert_eq!(details["signatureAlgorithm"], "SHA256withECDSA");
    assert_eq!(details["san"], json!(["expired.example"]));
    assert_eq!(record["certificate"]["hash"], sha1_hex(der));
    assert_eq!(details["sha1Hash"], sha1_hex(der));
    assert_eq!(record["certificate"]["metadata"]["managedId"], Value::Null);
    assert_eq!(record["certificate"]["metadata"]["hidden"], false);
    assert_eq!(record["location"]["type"], "NETWORK_HOST", "{record:#}");
    assert_eq!(record["location"]["details"]["ip"], "127.0.0.1");
    assert_eq!(record["location"]["details"]["upn"], Value::Null);
    assert_eq!(record["status"]["tlsVersion"], 13);
    assert_eq!(record["operation"]["id"], operation_id);
}

/// The healthy CA-issued certificate's record: the leaf, not the chain.
fn check_healthy(record: &Value, der: &[u8]) {
    let details = &record["certificate"]["details"];
    assert_eq!(details["cn"], "healthy.example");
    let now = jiff::Timestamp::now();
    assert!(timestamp(&details["validTo"]) > now + jiff::SignedDuration::from_hours(24 * 89));
    assert!(timestamp(&details["validFrom"]) < now);
    assert_eq!(details["issuer"]["CN"], "Discovery Test Issuing CA");
    assert_ne!(details["issuer"], details["subject"]);
    assert_eq!(details["san"], json!(["healthy.example", "127.0.0.1"]));
    assert_eq!(details["eku"], json!(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]));
    assert_eq!(details["ku"], json!(["digitalSignature"]));
    assert_eq!(details["precert"], false);
    assert_eq!(
        record["certificate"]["hash"],
        sha1_hex(der),
        "the leaf, not the chain"
    );
    let (_, parsed) = x509_parser::parse_x509_certificate(der).unwrap();
    assert_eq!(
        details["sn"],
        orders::normalise_serial(&hex_lower(parsed.raw_serial()))
    );
}

/// A new task has never run: `status` null, the bucket's name filled in, as sent otherwise;
/// it is listed by a part of its name.
async fn check_new_task(api: &Api, id: i64, first_port: u16) {
    let task = api.task(id).await;
    assert_eq!(task["status"], Value::Null);
    assert_eq!(task["name"], "loopback");
    assert_eq!(task["agent"], "Cloud");
    assert_eq!(
        task["certificateBucket"],
        json!({"id": DEFAULT_DISCOVERY_BUCKET, "name": "bucket1"})
    );
    assert_eq!(
        task["ranges"][0],
        json!({"address": "127.0.0.1/32", "ports": first_port.to_string()})
    );
    assert_eq!(task["frequency"], "Manual");
    assert_eq!(task["month"], 1);
    assert!(task.get("year").is_none(), "unset fields are left out");
    assert!(task.get("taskId").is_none() && task.get("id").is_none());
    let listed = api
        .call(Method::GET, "/v3/net_task?name=loop&size=10&position=0", None)
        .await;
    assert_eq!(listed.headers["x-total-count"], "1");
    assert_eq!(
        listed.json(),
        json!([{"taskId": id, "name": "loopback", "status": null}])
    );
}

/// The task's one operation, completed, in the documented shape; its id.
async fn completed_operation(api: &Api, id: i64) -> String {
    let (operations, answer) = api.operations(id).await;
    assert_eq!(answer.headers["x-total-count"], "1");
    assert_eq!(operations["total"], 1);
    let operation = &operations["data"][0];
    assert_eq!(operation["status"], "completed");
    assert_eq!(operation["bucketId"], DEFAULT_DISCOVERY_BUCKET);
    assert!(operation.get("error").is_none());
    let operation_id = operation["id"].as_str().unwrap();
    assert_eq!(operation_id.len(), 32);
    assert!(operation_id.chars().all(|c| c.is_ascii_hexdigit()));
    let created = operation["created"].as_str().unwrap();
    assert!(
        created.ends_with('Z') && created.len() == "2023-01-10T14:15:51.260Z".len(),
        "{created}"
    );
    operation_id.to_owned()
}

/// The bucket holds each certificate once, with the documented shape and no header.
async fn check_bucket(api: &Api, hashes: &[String]) {
    let bucket = api
        .call(
            Method::GET,
            &format!("/v1/bucket/{DEFAULT_DISCOVERY_BUCKET}/certificates?position=0&size=10"),
            None,
        )
        .await;
    assert_eq!(bucket.status, StatusCode::OK);
    assert!(bucket.headers.get("x-total-count").is_none());
    let bucket = bucket.json();
    assert_eq!(bucket["total"], hashes.len());
    for hash in hashes {
        assert!(
            bucket["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| &c["hash"] == hash),
            "{hash} not in the bucket"
        );
    }
}

#[tokio::test]
async fn a_scan_finds_the_certificates_loopback_servers_present() {
    let (servers, [expired, healthy, p384]) = three_servers().await;
    let ports: Vec<u16> = servers.iter().map(|s| s.local_addr().port()).collect();
    let api = discovery(ScmSimulatorConfig::default()).await;
    let mut all_ports = ports.clone();
    all_ports.push(closed_port());
    let id = api
        .create_task(task_body("loopback", &loopback(&all_ports)))
        .await;
    check_new_task(&api, id, ports[0]).await;

    let started = api.start_task(id).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text());
    assert!(
        started.body.is_empty(),
        "start answers no body and no operation id"
    );
    let seen = api.wait_for_status(id, "Scan completed (Successful)").await;
    let path = [
        json!("Scan in process"),
        json!("Scan completed (Processing Result)"),
        json!("Scan completed (Successful)"),
    ];
    assert!(seen.iter().all(|status| path.contains(status)), "{seen:?}");
    let operation_id = completed_operation(&api, id).await;

    let answer = api.results(id, &operation_id, "?position=0&size=50").await;
    assert_eq!(answer.headers["x-total-count"], "3");
    let body = answer.json();
    assert_eq!(body["total"], 3);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "the closed port has no result");
    check_expired(record_on(data, ports[0]), &expired, &operation_id);
    check_healthy(record_on(data, ports[1]), &healthy);
    let p384_details = &record_on(data, ports[2])["certificate"]["details"];
    assert_eq!(p384_details["keySize"], 384);
    assert_eq!(p384_details["signatureAlgorithm"], "SHA384withECDSA");

    // Paging.
    let page = api.results(id, &operation_id, "?position=1&size=1").await;
    assert_eq!(page.headers["x-total-count"], "3");
    assert_eq!(page.json()["data"].as_array().unwrap().len(), 1);
    check_bucket(&api, &[sha1_hex(&expired), sha1_hex(&healthy), sha1_hex(&p384)]).await;

    let stats = api.sim.stats();
    assert_eq!(
        stats.discovery_tasks,
        [DiscoveryTaskSummary {
            id,
            name: "loopback".into(),
            agent: "Cloud".into(),
            ranges: all_ports
                .iter()
                .map(|port| ("127.0.0.1/32".to_owned(), port.to_string()))
                .collect(),
            bucket_id: DEFAULT_DISCOVERY_BUCKET.into(),
            status: Some("Scan completed (Successful)".into()),
        }]
    );
    assert_eq!(stats.discovery_operations.len(), 1);
    assert_eq!(stats.discovery_operations[0].endpoints_scanned, 4);
    assert_eq!(stats.discovery_operations[0].certificates, 3);
    assert_eq!(stats.requests["discoveryStartTask"], 1);
    assert_eq!(stats.requests["discoveryCreateTask"], 1);
    for server in servers {
        server.shutdown().await;
    }
}

/// The results appear only once processed; the operation is `completed` before that.
#[tokio::test]
async fn results_are_empty_while_the_task_processes_them() {
    let (cert, key) = self_signed("one.example", &PKCS_ECDSA_P256_SHA256, -1, 30);
    let server = serve(vec![cert], key).await;
    let api = discovery(ScmSimulatorConfig {
        discovery_processing_time: Duration::from_millis(1500),
        ..ScmSimulatorConfig::default()
    })
    .await;
    let id = api
        .create_task(task_body("processing", &loopback(&[server.local_addr().port()])))
        .await;
    assert_eq!(api.start_task(id).await.status, StatusCode::OK);
    api.wait_for_status(id, "Scan completed (Processing Result)")
        .await;
    let (operations, _) = api.operations(id).await;
    let operation = operations["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(operations["data"][0]["status"], "completed");
    let pending = api.results(id, &operation, "").await;
    assert_eq!(pending.headers["x-total-count"], "0");
    assert_eq!(pending.json(), json!({"total": 0, "data": []}));
    // Still running: a second start is refused.
    assert_eq!(error_of(&api.start_task(id).await).1, -618);
    api.wait_for_status(id, "Scan completed (Successful)").await;
    assert_eq!(api.results(id, &operation, "").await.json()["total"], 1);
    server.shutdown().await;
}

/// -618 on a second start, update and delete while a scan runs; stop cancels it.
#[tokio::test]
async fn a_running_scan_refuses_a_second_start_and_stops_on_request() {
    let api = discovery(ScmSimulatorConfig {
        discovery_scan_duration: Duration::from_secs(30),
        ..ScmSimulatorConfig::default()
    })
    .await;
    let body = task_body("slow", &loopback(&[closed_port()]));
    let id = api.create_task(body.clone()).await;
    assert_eq!(api.start_task(id).await.status, StatusCode::OK);
    assert_eq!(api.task(id).await["status"], "Scan in process");
    let running = (
        StatusCode::BAD_REQUEST,
        -618,
        "Discovery is currently running. Please try again later.".to_owned(),
    );
    assert_eq!(error_of(&api.start_task(id).await), running);
    assert_eq!(
        error_of(
            &api.call(Method::PUT, &format!("/v4/net_task/{id}"), Some(body.clone()))
                .await
        ),
        running
    );
    assert_eq!(
        error_of(
            &api.call(Method::DELETE, &format!("/v3/net_task/{id}"), None)
                .await
        ),
        running
    );
    let (operations, _) = api.operations(id).await;
    assert_eq!(operations["data"][0]["status"], "in_progress");
    let operation = operations["data"][0]["id"].as_str().unwrap().to_owned();
    // Status filter by enum name.
    let listed = api
        .call(Method::GET, "/v3/net_task?status=in_process", None)
        .await;
    assert_eq!(listed.json()[0]["taskId"], id);

    let stop = format!("/v1/net_task/{id}/operation/{operation}/stop");
    let stopped = api.call(Method::POST, &stop, None).await;
    assert_eq!(stopped.status, StatusCode::OK);
    assert!(stopped.body.is_empty());
    assert_eq!(api.task(id).await["status"], "Scan CANCELED by user");
    assert_eq!(api.operations(id).await.0["data"][0]["status"], "canceled");
    // Stopping again changes nothing.
    assert_eq!(api.call(Method::POST, &stop, None).await.status, StatusCode::OK);
    // A new scan may start, and the task may change between scans.
    assert_eq!(api.start_task(id).await.status, StatusCode::OK);
    let (operations, _) = api.operations(id).await;
    assert_eq!(operations["total"], 2);
    let second = operations["data"][1]["id"].as_str().unwrap().to_owned();
    assert_ne!(second, operation);
    api.call(
        Method::POST,
        &format!("/v1/net_task/{id}/operation/{second}/stop"),
        None,
    )
    .await;
    let updated = api
        .call(
            Method::PUT,
            &format!("/v4/net_task/{id}"),
            Some(task_body("renamed", &loopback(&[443]))),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text());
    assert!(updated.body.is_empty());
    let task = api.task(id).await;
    assert_eq!(task["name"], "renamed");
    assert_eq!(
        task["status"], "Scan CANCELED by user",
        "an update keeps the status"
    );
    let deleted = api
        .call(Method::DELETE, &format!("/v3/net_task/{id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = api.call(Method::GET, &format!("/v4/net_task/{id}"), None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.call(Method::GET, &format!("/v1/net_task/{id}/operation"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_failed_scan_reports_its_error() {
    let api = discovery(ScmSimulatorConfig {
        discovery_scan_failure: Some("Agent disconnected".into()),
        ..ScmSimulatorConfig::default()
    })
    .await;
    let id = api
        .create_task(task_body("failing", &loopback(&[closed_port()])))
        .await;
    assert_eq!(api.start_task(id).await.status, StatusCode::OK);
    api.wait_for_status(id, "Scan FAILED").await;
    let (operations, _) = api.operations(id).await;
    assert_eq!(operations["data"][0]["status"], "failed");
    assert_eq!(operations["data"][0]["error"], "Agent disconnected");
}

/// Only loopback is scanned unless configured otherwise, and at most the configured number of
/// addresses: either cut makes the scan partial.
#[tokio::test]
async fn scans_are_bounded_and_partial_when_cut() {
    let (cert, key) = self_signed("bounded.example", &PKCS_ECDSA_P256_SHA256, -1, 30);
    let server = serve(vec![cert], key).await;
    let port = server.local_addr().port();
    let api = discovery(ScmSimulatorConfig {
        discovery_max_scanned_addresses: 2,
        ..ScmSimulatorConfig::default()
    })
    .await;
    let id = api
        .create_task(task_body(
            "cut",
            &json!([{"address": "127.0.0.1/30", "ports": port.to_string()},
                    {"address": "192.0.2.0/24", "ports": "443"}]),
        ))
        .await;
    assert_eq!(api.start_task(id).await.status, StatusCode::OK);
    api.wait_for_status(id, "Scan completed (Partial SUCCESSFUL)")
        .await;
    let stats = api.sim.stats();
    // 127.0.0.0 and 127.0.0.1 only: the cap, and 192.0.2.x is never connected to.
    assert_eq!(stats.discovery_operations[0].endpoints_scanned, 2);
    assert_eq!(stats.discovery_operations[0].certificates, 1);
    server.shutdown().await;
}

/// A certificate this simulator issued is reported with its `managedId`.
#[tokio::test]
async fn a_certificate_issued_by_the_simulator_is_managed() {
    let mut api = Api::start(ScmSimulatorConfig {
        pending_collects: 0,
        ..ScmSimulatorConfig::default()
    })
    .await;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let enrolled = api
        .enroll(&csr_pem("managed.example", &["managed.example"], &key), json!({}))
        .await;
    let ssl_id = enrolled.json()["sslId"].as_i64().unwrap();
    let collected = api
        .call(Method::GET, &format!("/collect/{ssl_id}/x509R"), None)
        .await;
    assert_eq!(collected.status, StatusCode::OK, "{}", collected.text());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&collected.body)
        .collect::<Result<_, _>>()
        .unwrap();
    let server = serve(
        chain,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .await;
    api.prefix = "/api/discovery";
    let id = api
        .create_task(task_body("managed", &loopback(&[server.local_addr().port()])))
        .await;
    assert_eq!(api.start_task(id).await.status, StatusCode::OK);
    api.wait_for_status(id, "Scan completed (Successful)").await;
    let operation = api.operations(id).await.0["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let results = api.results(id, &operation, "").await.json();
    assert_eq!(
        results["data"][0]["certificate"]["metadata"]["managedId"],
        format!("ssl:{ssl_id}")
    );
    server.shutdown().await;
}

/// A valid task body with `change` applied.
fn valid_with(change: &dyn Fn(&mut Value)) -> Value {
    let mut body = task_body("t", &json!([{"address": "10.0.0.0/24", "ports": "443"}]));
    change(&mut body);
    body
}

/// Bodies the simulator must refuse, with the code and message (spec §1.1, §2.10 item 4).
fn invalid_bodies() -> Vec<(Value, i64, &'static str)> {
    let mut bodies = invalid_range_bodies();
    bodies.extend(invalid_field_bodies());
    bodies
}

/// Bodies with a missing or invalid field (-7, -1601).
fn invalid_field_bodies() -> Vec<(Value, i64, &'static str)> {
    let with = valid_with;
    vec![
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("name");
            }),
            -7,
            "name is required but missing.",
        ),
        (
            with(&|b| b["name"] = json!("x".repeat(257))),
            -1601,
            "Field 'name' has invalid value.",
        ),
        (
            with(&|b| b["agent"] = json!("")),
            -7,
            "agent is required but missing.",
        ),
        (
            with(&|b| b["certBucketId"] = json!("8bba796f-4b33-495e-92c9-bad6d4bc96d2")),
            -1601,
            "Field 'certBucketId' has invalid value.",
        ),
        (
            with(&|b| b["frequency"] = json!("Hourly")),
            -1601,
            "Field 'frequency' has invalid value.",
        ),
        (
            with(&|b| b["month"] = json!(0)),
            -1601,
            "Field 'month' has invalid value.",
        ),
        (
            with(&|b| b["dayOfWeek"] = json!(8)),
            -1601,
            "Field 'dayOfWeek' has invalid value.",
        ),
    ]
}

/// Bodies with ranges or an agent SCM refuses (-615, -304, -3301, -305, -303, -607, -637).
fn invalid_range_bodies() -> Vec<(Value, i64, &'static str)> {
    let with = valid_with;
    vec![
        (
            with(&|b| b["ranges"] = json!([])),
            -615,
            "To scan, you must first enter at least one range parameter.",
        ),
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("ranges");
            }),
            -615,
            "To scan, you must first enter at least one range parameter.",
        ),
        (
            with(&|b| b["ranges"][0]["address"] = json!("10.0.0.0")),
            -304,
            "Incorrect format CIDR.",
        ),
        (
            with(&|b| b["ranges"][0]["address"] = json!("10.0.0.300/24")),
            -304,
            "Incorrect format CIDR.",
        ),
        (
            with(&|b| b["ranges"][0]["address"] = json!("10.0.0.0/33")),
            -304,
            "Incorrect format CIDR.",
        ),
        (
            with(&|b| b["ranges"][0]["ports"] = json!("https")),
            -3301,
            "Invalid scan range: 10.0.0.0/24:https",
        ),
        (
            with(&|b| b["ranges"][0]["ports"] = json!("0")),
            -3301,
            "Invalid scan range: 10.0.0.0/24:0",
        ),
        (
            with(&|b| b["ranges"] = json!([{"address": "10.0.0.0/8", "ports": "443"}])),
            -305,
            "The range of ip-port pairs is too wide.",
        ),
        (
            with(&|b| {
                b["ranges"] = json!([{"address": "8.8.0.0/16", "ports": "443"},
                                     {"address": "8.9.0.0/24", "ports": "443"}]);
            }),
            -303,
            "The range is too wide. Maximum of 65536 public ip-port pairs and 1048576 private ip-port \
             pairs per scan are allowed.",
        ),
        (
            with(&|b| b["agent"] = json!("org4Test3sivt")),
            -607,
            "Available Agent(s) are not configured to scan the specified private range(s).",
        ),
        (
            with(&|b| {
                b["agent"] = json!("org4Test3sivt");
                b["ranges"] = json!([{"address": "176.108.103.10/32", "ports": "3"}]);
            }),
            -637,
            "Available Agent(s) are not configured to scan the specified public range(s).",
        ),
    ]
}

/// Every validation code of spec §1.1 and §2.10 item 4, with the documented messages.
#[tokio::test]
async fn invalid_tasks_get_the_documented_codes() {
    let api = discovery(ScmSimulatorConfig::default()).await;
    let with = valid_with;
    for (body, code, description) in invalid_bodies() {
        let answer = api.call(Method::POST, "/v4/net_task", Some(body.clone())).await;
        assert_eq!(
            error_of(&answer),
            (StatusCode::BAD_REQUEST, code, description.to_owned()),
            "{body}"
        );
    }
    // The same rules on update.
    let id = api.create_task(with(&|_| {})).await;
    let answer = api
        .call(
            Method::PUT,
            &format!("/v4/net_task/{id}"),
            Some(with(&|b| b["ranges"] = json!([]))),
        )
        .await;
    assert_eq!(error_of(&answer).1, -615);
    // Lists and spans of ports are accepted; the address is kept as sent.
    let id = api
        .create_task(with(&|b| b["ranges"][0]["ports"] = json!("443, 8000-8002")))
        .await;
    assert_eq!(api.task(id).await["ranges"][0]["ports"], "443, 8000-8002");
    assert!(
        api.sim.stats().discovery_tasks.len() == 2,
        "refused tasks are not created"
    );
}

#[tokio::test]
async fn unknown_ids_and_unsimulated_paths() {
    let api = discovery(ScmSimulatorConfig::default()).await;
    for (method, path) in [
        (Method::GET, "/v4/net_task/999"),
        (Method::GET, "/v4/net_task/abc"),
        (Method::DELETE, "/v3/net_task/999"),
        (Method::POST, "/v3/net_task/999/start"),
        (Method::GET, "/v1/net_task/999/operation"),
        (
            Method::GET,
            "/v1/bucket/00000000-0000-0000-0000-000000000000/certificates",
        ),
        (Method::DELETE, "/v1/assignmentrule/1"),
    ] {
        let answer = api.call(method.clone(), path, None).await;
        assert_eq!(
            error_of(&answer),
            (StatusCode::NOT_FOUND, -1, "Unknown error.".into()),
            "{method} {path}"
        );
    }
    let id = api.create_task(task_body("x", &loopback(&[443]))).await;
    let answer = api
        .call(
            Method::GET,
            &format!("/v1/net_task/{id}/operation/2c978087859623120185a07545370006/result"),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let answer = api.call(Method::GET, "/v3/net_task?status=RUNNING", None).await;
    assert_eq!(error_of(&answer).1, -1601);
    // No v4 list; the deprecated v3 create is documented but not simulated.
    assert_eq!(
        api.call(Method::GET, "/v4/net_task", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(
            Method::POST,
            "/v3/net_task",
            Some(task_body("y", &loopback(&[443])))
        )
        .await
        .status,
        StatusCode::NOT_IMPLEMENTED
    );
}

/// -5001 and -5002 on rule create, -5003 on deleting a rule a task's bucket carries.
#[tokio::test]
async fn assignment_rules_carry_the_5000_codes() {
    let api = discovery(ScmSimulatorConfig::default()).await;
    let rule = |org: i64, filters: Value| json!({"name": "org rule", "orgId": org, "certType": "SSL", "filters": filters});
    let filters = json!([{"filterType": "ORGANIZATION", "matchType": "MATCHES", "value": "org4Test"}]);
    let answer = api
        .call(
            Method::POST,
            "/v1/assignmentrule",
            Some(rule(11441, filters.clone())),
        )
        .await;
    assert_eq!(
        error_of(&answer),
        (
            StatusCode::BAD_REQUEST,
            -5001,
            "You don' t have access to Organization assigned to the Rule".into()
        )
    );
    let answer = api
        .call(Method::POST, "/v1/assignmentrule", Some(rule(8932, json!([]))))
        .await;
    assert_eq!(
        error_of(&answer),
        (
            StatusCode::BAD_REQUEST,
            -5002,
            "Assignment rules cannot be empty.".into()
        )
    );
    let created = api
        .call(Method::POST, "/v1/assignmentrule", Some(rule(8932, filters)))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let location = created.headers["location"].to_str().unwrap().to_owned();
    assert!(
        location.contains("/api/discovery/v1/assignmentrule/"),
        "{location}"
    );
    let rule_id = location.rsplit('/').next().unwrap();

    api.create_task(task_body("web", &loopback(&[443]))).await;
    let answer = api
        .call(
            Method::DELETE,
            &format!("/v1/assignmentrule/{DEFAULT_ASSIGNMENT_RULE}"),
            None,
        )
        .await;
    assert_eq!(
        error_of(&answer),
        (
            StatusCode::BAD_REQUEST,
            -5003,
            "Cannot delete. An assignment rule has been assigned to the Net Discovery Tasks web".into()
        )
    );
    let deleted = api
        .call(Method::DELETE, &format!("/v1/assignmentrule/{rule_id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let again = api
        .call(Method::DELETE, &format!("/v1/assignmentrule/{rule_id}"), None)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

/// The crash fault: the task is created, the connection dropped without an answer.
#[tokio::test]
async fn a_create_can_be_dropped_after_the_task_is_recorded() {
    let api = discovery(ScmSimulatorConfig::default()).await;
    // Without naming the endpoint, `drop_after_enroll` keeps meaning enroll.
    api.sim.set_faults(Faults {
        drop_after_enroll: 1,
        ..Faults::default()
    });
    api.create_task(task_body("kept", &loopback(&[443]))).await;
    api.sim.set_faults(Faults {
        drop_after_enroll: 1,
        endpoints: Some(vec!["discoveryCreateTask".into()]),
        ..Faults::default()
    });
    let lost = api
        .send(
            Method::POST,
            "/v4/net_task",
            Some(task_body("lost", &loopback(&[443]))),
        )
        .await;
    assert!(lost.is_err(), "the connection closes without an answer: {lost:?}");
    let names: Vec<String> = api
        .sim
        .stats()
        .discovery_tasks
        .into_iter()
        .map(|task| task.name)
        .collect();
    assert_eq!(names, ["kept", "lost"]);
    // The budget is spent: the next create is answered.
    api.create_task(task_body("third", &loopback(&[443]))).await;
}

/// Strict reading: the operations list's `X-Total-Count` is 0, as in the seed's example.
#[tokio::test]
async fn the_strict_reading_sends_the_examples_zero_total() {
    let api = discovery(ScmSimulatorConfig {
        reading: ScmReading::Strict,
        ..ScmSimulatorConfig::default()
    })
    .await;
    let id = api
        .create_task(task_body("strict", &loopback(&[closed_port()])))
        .await;
    assert_eq!(api.start_task(id).await.status, StatusCode::OK);
    let (operations, answer) = api.operations(id).await;
    assert_eq!(answer.headers["x-total-count"], "0");
    assert_eq!(operations["total"], 1);
}
