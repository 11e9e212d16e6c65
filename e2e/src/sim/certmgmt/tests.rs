//! The simulator over real TLS, driven by the operator's CertMgmt client (and by raw requests
//! where the exact status, headers or a malformed body matter).

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use jiff::{SignedDuration, Timestamp, civil::Date, tz::TimeZone};
use pki_operator::{
    backend::{
        certmgmt::{
            AffectedCriterion, AgentCertType, AgentCertificate, AlertLevel, AlertType, CertMgmtClient,
            ClientOptions, Criterion, HostRecord, LevelConfig, ModuleKind, ModuleOs, ModuleRequest,
            NewEmailList, NodeAlertConfig,
        },
        retry::RetryPolicy,
    },
    pki::credentials::SecretString,
};
use serde_json::{Value, json};

use super::*;
use crate::sim::{
    RateLimitFault,
    test_support::{Answer, Client},
};

const DAY: SignedDuration = SignedDuration::from_hours(24);

struct Fixture {
    sim: CertMgmtSimulator,
    client: CertMgmtClient,
    raw: Client,
    basic: String,
}

fn options() -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            max_retry_after: Duration::from_secs(1),
        },
        ..ClientOptions::default()
    }
}

impl Fixture {
    async fn start(config: CertMgmtSimulatorConfig) -> Self {
        let sim = CertMgmtSimulator::start(config.clone()).await.unwrap();
        let client = Self::client_for(&sim, &config.username, &config.password);
        let raw = Client::new(sim.local_addr(), &sim.tls_ca_pem(), None);
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", config.username, config.password))
        );
        Self {
            sim,
            client,
            raw,
            basic,
        }
    }

    fn client_for(sim: &CertMgmtSimulator, username: &str, password: &str) -> CertMgmtClient {
        CertMgmtClient::with_options(
            &sim.base_url(),
            username,
            &SecretString::new(password),
            Some(&sim.tls_ca_pem()),
            options(),
        )
        .unwrap()
    }

    /// One raw request; `authorization` is the whole header value.
    async fn send(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("accept", "application/json")
            .header("content-type", "application/json");
        if let Some(authorization) = authorization {
            builder = builder.header("authorization", authorization);
        }
        let body = body.map_or_else(Bytes::new, |json| Bytes::from(serde_json::to_vec(&json).unwrap()));
        self.raw
            .send(builder.body(Full::new(body)).unwrap())
            .await
            .unwrap()
    }

    async fn basic(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.send(method, path, Some(&self.basic.clone()), body).await
    }

    fn today(&self) -> Date {
        self.sim.now().to_zoned(TimeZone::UTC).date()
    }
}

fn certificate(cn: &str, serial: &str, not_after: Timestamp) -> AgentCertificate {
    AgentCertificate {
        service_name: "nginx".into(),
        cert_sn: serial.into(),
        cert_type: AgentCertType::Public,
        cert_issuer: "CN=Simulated Issuing CA,O=Example".into(),
        cert_subject: format!("CN={cn}"),
        leaf_cert_cn: cn.into(),
        leaf_cert_sn: serial.into(),
        cert_cn: cn.into(),
        cert_sans: vec![cn.into()],
        cert_not_before: not_after - DAY * 365,
        cert_not_after: not_after,
        cert_modified_date: not_after - DAY * 365,
        cert_path: format!("/etc/tls/{cn}.pem"),
    }
}

fn new_list(name: &str) -> NewEmailList {
    NewEmailList {
        email_list_name: name.into(),
        to: vec![format!("{name}@example.com")],
        cc: vec![],
    }
}

fn assert_security_headers(answer: &Answer) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(
            answer.headers.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name} on HTTP {}",
            answer.status
        );
    }
}

fn agent_json(not_after: &str) -> Value {
    json!([{
        "service_name": "nginx", "cert_sn": "01", "cert_type": "Public",
        "cert_issuer": "CN=CA", "cert_subject": "CN=a.example", "leaf_cert_cn": "a.example",
        "leaf_cert_sn": "01", "cert_cn": "a.example", "cert_sans": ["a.example"],
        "cert_not_before": "20250101000000Z", "cert_not_after": not_after,
        "cert_modified_date": "20250101000000Z", "cert_path": "/etc/tls/a.pem"
    }])
}

#[tokio::test]
async fn the_status_needs_no_credentials_and_is_read_by_the_client() {
    let f = Fixture::start(CertMgmtSimulatorConfig::default()).await;
    let status = f.send(Method::GET, "/certmgmt/status", None, None).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_security_headers(&status);
    let body = status.json();
    assert_eq!(body["url"], "certmgmt/status");
    assert_eq!(body["description"], "CertMgmt Service Status Snapshot");
    assert_eq!(body["build-no"], "sim-1");
    assert_eq!(body["status"], "IN_SERVICE");
    assert_eq!(body["db_status"], "IN_SERVICE");
    assert_eq!(body["onboard_count"], 0);
    assert_eq!(body["cluster"]["nodes"][0]["primary"], true);
    assert_eq!(body["cluster"]["nodes"][1]["primary"], false);
    assert!(body.get("managed_hosts").is_none());
    assert!(Date::strptime("%Y-%m-%d", &body["server_time"].as_str().unwrap()[..10]).is_ok());

    // The client reads it all; detail lists the managed hosts.
    let (host, _) = f.client.onboard_host("cluster-a", "kubernetes").await.unwrap();
    let status = f.client.status(false).await.unwrap();
    assert!(status.in_service());
    assert_eq!(status.build_no, "sim-1");
    assert_eq!(status.version, "2.5.0");
    assert_eq!(status.onboard_count, Some(1));
    assert!(status.managed_hosts.is_empty());
    assert!(status.server_time.is_some() && status.up_since.is_some());
    let detailed = f.client.status(true).await.unwrap();
    assert_eq!(detailed.managed_hosts.len(), 1);
    assert_eq!(detailed.managed_hosts[0].host_id, host.id);
    assert_eq!(
        detailed.managed_hosts[0].url,
        format!("certmgmt/host/{}", host.id)
    );
    assert_eq!(
        detailed.managed_hosts[0].last_contact_time,
        host.last_contact_time
    );
    let metrics = f.client.metrics().await.unwrap();
    assert_eq!(metrics["service_start"].unit, "datetime");
    assert_eq!(metrics["agent_reports"].statistics, "COUNT");
    f.sim.shutdown().await;
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let f = Fixture::start(CertMgmtSimulatorConfig::default()).await;
    let unauthorized = f.send(Method::GET, "/certmgmt/email_lists", None, None).await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        unauthorized.headers.get("www-authenticate").unwrap(),
        "Basic realm=\"CertMgmt\""
    );
    assert_security_headers(&unauthorized);
    let missing = f.basic(Method::GET, "/certmgmt/nothing", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_security_headers(&missing);
    let wrong_method = f.send(Method::PUT, "/certmgmt/status", None, None).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    let control = f.send(Method::GET, "/__simulator/stats", None, None).await;
    assert_security_headers(&control);

    f.sim.shutdown().await;
}

#[tokio::test]
async fn modules_answer_the_documented_download() {
    let f = Fixture::start(CertMgmtSimulatorConfig::default()).await;
    let module = f
        .send(
            Method::GET,
            "/certmgmt/modules?OS=win&module=discovery",
            None,
            None,
        )
        .await;
    assert_eq!(module.status, StatusCode::NO_CONTENT);
    assert_eq!(
        module.headers.get("content-disposition").unwrap(),
        "attachment; filename=\"script.zip\""
    );
    assert_eq!(
        module.headers.get("content-type").unwrap(),
        "application/octet-stream"
    );
    assert_security_headers(&module);
    for bad in [
        "/certmgmt/modules?module=discovery",
        "/certmgmt/modules?OS=linux&module=discovery",
        "/certmgmt/modules?OS=vos&module=certfinder&Version=1",
        "/certmgmt/modules?OS=vos&module=other",
    ] {
        assert_eq!(
            f.send(Method::GET, bad, None, None).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let zip = f
        .client
        .download_module(&ModuleRequest {
            os: ModuleOs::Vos,
            module: ModuleKind::Upload,
            component: Some("tomcat".into()),
            version: Some("9".into()),
        })
        .await
        .unwrap();
    assert!(zip.is_empty());

    f.sim.shutdown().await;

    let f = Fixture::start(CertMgmtSimulatorConfig {
        modules_body: true,
        ..CertMgmtSimulatorConfig::default()
    })
    .await;
    let module = f
        .send(
            Method::GET,
            "/certmgmt/modules?OS=win&module=discovery",
            None,
            None,
        )
        .await;
    assert_eq!(module.status, StatusCode::OK);
    assert_eq!(&module.body[..4], b"PK\x05\x06");
    f.sim.shutdown().await;
}

#[tokio::test]
async fn basic_credentials_are_checked() {
    let config = CertMgmtSimulatorConfig::default();
    let f = Fixture::start(config.clone()).await;
    let intruder = Fixture::client_for(&f.sim, &config.username, "wrong");
    let error = intruder.email_lists().await.unwrap_err();
    assert_eq!(error.reason(), "Unauthorized", "{error}");
    assert!(!error.is_transient());
    // Status needs no credentials at all.
    intruder.status(false).await.unwrap();
    let other_user = Fixture::client_for(&f.sim, "someone", &config.password);
    assert_eq!(other_user.metrics().await.unwrap_err().reason(), "Unauthorized");
    let bearer = f
        .send(Method::GET, "/certmgmt/alert_configs", Some("Bearer x"), None)
        .await;
    assert_eq!(bearer.status, StatusCode::UNAUTHORIZED);
    assert!(f.client.email_lists().await.unwrap().is_empty());
    f.sim.shutdown().await;
}

#[tokio::test]
async fn hosts_onboard_once_by_hostname_and_keep_an_audit_log() {
    let f = Fixture::start(CertMgmtSimulatorConfig::default()).await;
    let onboard = json!({"hostname": "cluster-a", "server_type": "kubernetes"});
    let first = f
        .basic(Method::POST, "/certmgmt/host", Some(onboard.clone()))
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_security_headers(&first);
    let body = first.json();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["url"], format!("certmgmt/host/{id}"));
    assert_eq!(body["hostname"], "cluster-a");
    assert_eq!(body["server_type"], "kubernetes");
    assert_eq!(body["old_secret_key"], Value::Null);
    for field in ["onboarding_time", "secret_update_time", "last_contact_time"] {
        let text = body[field].as_str().unwrap();
        assert!(
            text.len() >= 19 && &text[10..11] == "T" && !text.ends_with('Z'),
            "{field}: {text}"
        );
    }
    let key = body["secret_key"].as_str().unwrap().to_owned();
    let second = f.basic(Method::POST, "/certmgmt/host", Some(onboard)).await;
    assert_eq!(second.status, StatusCode::ALREADY_REPORTED);
    assert_eq!(second.json()["id"], id.as_str());
    assert_eq!(second.json()["secret_key"], key.as_str());

    let (host, created) = f.client.onboard_host("cluster-a", "kubernetes").await.unwrap();
    assert!(!created);
    assert_eq!(host.id, id);
    assert_eq!(host.secret_key.expose(), key);
    assert!(!format!("{host:?}").contains(&key) && !host.to_string().contains(&key));
    let (other, created) = f.client.onboard_host("cluster-b", "kubernetes").await.unwrap();
    assert!(created);
    assert_ne!(other.id, id);
    assert_ne!(other.secret_key, host.secret_key);
    let fetched = f.client.host(&id).await.unwrap();
    assert_eq!(fetched, host);

    assert_eq!(
        f.client.host("no-such-host").await.unwrap_err().reason(),
        "NotFound"
    );

    for bad in [
        json!({"hostname": "x"}),
        json!({"server_type": "x"}),
        json!({"hostname": "", "server_type": "x"}),
        json!({"hostname": 5, "server_type": "x"}),
        json!(["x"]),
    ] {
        let answer = f.basic(Method::POST, "/certmgmt/host", Some(bad.clone())).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(f.sim.stats().requests["onboard"], 9);
    f.sim.shutdown().await;
}

#[tokio::test]
async fn reports_and_audit_logs_follow_a_host_until_offboarding() {
    let f = Fixture::start(CertMgmtSimulatorConfig::default()).await;
    let (host, _) = f.client.onboard_host("cluster-a", "kubernetes").await.unwrap();
    let id = host.id.clone();
    // A report moves last_contact_time to the simulated present.
    f.sim.advance_clock(Duration::from_secs(3600));
    let expiry = f.sim.now() + DAY * 100;
    f.client
        .report_certificates(&id, &host.secret_key, &[certificate("a.example", "0A", expiry)])
        .await
        .unwrap();
    let after = f.client.host(&id).await.unwrap();
    assert!(after.last_contact_time > host.last_contact_time);
    let stats = f.sim.stats();
    let summary = stats.hosts.iter().find(|h| h.id == id).unwrap();
    assert_eq!(summary.reports, 1);
    assert_eq!(summary.certificates[0].cert_cn, "a.example");
    assert_eq!(summary.certificates[0].cert_not_after.len(), 15);

    let today = f.today();
    let logs = f.client.audit_logs(&id, today, today).await.unwrap();
    let activities: Vec<&str> = logs.iter().map(|entry| entry.activity.as_str()).collect();
    assert_eq!(activities, ["HOST_ONBOARDED", "CERTIFICATES_REPORTED"]);
    assert!(
        logs.iter()
            .all(|entry| entry.host_id == id && entry.datetime.is_some())
    );
    let yesterday = today.yesterday().unwrap();
    assert!(
        f.client
            .audit_logs(&id, yesterday, yesterday)
            .await
            .unwrap()
            .is_empty()
    );
    let raw = f
        .basic(
            Method::GET,
            &format!("/certmgmt/host/{id}/auditlogs?from=20250101"),
            None,
        )
        .await;
    assert_eq!(raw.status, StatusCode::BAD_REQUEST);
    assert!(raw.json()["message"].as_str().unwrap().contains("YYYY-MM-DD"));
    let raw = f
        .basic(Method::GET, &format!("/certmgmt/host/{id}/auditlogs"), None)
        .await;
    assert_eq!(raw.json()["url"], format!("certmgmt/host/{id}/auditlogs"));
    assert_eq!(raw.json()["audit_data"].as_array().unwrap().len(), 2);

    f.client.offboard_host(&id).await.unwrap();
    assert_eq!(f.client.host(&id).await.unwrap_err().reason(), "NotFound");
    assert_eq!(
        f.client.offboard_host(&id).await.unwrap_err().reason(),
        "NotFound"
    );
    let logs = f.client.audit_logs(&id, today, today).await.unwrap();
    assert_eq!(logs.last().unwrap().activity, "HOST_OFFBOARDED");
    let (again, created) = f.client.onboard_host("cluster-a", "kubernetes").await.unwrap();
    assert!(created);
    assert_ne!(again.id, id);
    f.sim.shutdown().await;
}

#[tokio::test]
async fn agent_reports_need_the_hosts_key_and_a_well_formed_inventory() {
    let f = Fixture::start(CertMgmtSimulatorConfig::default()).await;
    let (host, _) = f.client.onboard_host("cluster-a", "kubernetes").await.unwrap();
    let path = format!("/certagent/host/{}/certificates", host.id);
    let auth = format!("secret_key={}", host.secret_key.expose());
    let good = f
        .send(
            Method::PUT,
            &path,
            Some(&auth),
            Some(agent_json("20300101000000Z")),
        )
        .await;
    assert_eq!(good.status, StatusCode::NO_CONTENT);
    assert!(good.body.is_empty());
    assert_security_headers(&good);

    let wrong = f
        .client
        .report_certificates(&host.id, &SecretString::new("not-the-key"), &[])
        .await
        .unwrap_err();
    assert_eq!(wrong.reason(), "Unauthorized");
    let unknown = f
        .client
        .report_certificates("no-such-host", &host.secret_key, &[])
        .await
        .unwrap_err();
    assert_eq!(unknown.reason(), "NotFound");
    // Basic credentials are not an agent's key; the key is not Basic credentials.
    let basic = f
        .basic(Method::PUT, &path, Some(agent_json("20300101000000Z")))
        .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
    assert!(basic.headers.get("www-authenticate").is_none());
    let as_basic = f
        .send(Method::GET, "/certmgmt/email_lists", Some(&auth), None)
        .await;
    assert_eq!(as_basic.status, StatusCode::UNAUTHORIZED);

    let mut missing_sans = agent_json("20300101000000Z");
    missing_sans[0].as_object_mut().unwrap().remove("cert_sans");
    let mut bad_type = agent_json("20300101000000Z");
    bad_type[0]["cert_type"] = json!("Leaf");
    for (body, expected) in [
        (
            agent_json("2030-01-01T00:00:00Z"),
            "certificates[0].cert_not_after",
        ),
        (agent_json("20301301000000Z"), "certificates[0].cert_not_after"),
        (agent_json("20300101000000"), "YYYYMMDDHHMMSSZ"),
        (json!({"certificates": []}), "JSON array"),
        (missing_sans, "certificates[0].cert_sans is required"),
        (bad_type, "Root, Intermediate or Public"),
        (json!([1]), "certificates[0] must be an object"),
    ] {
        let answer = f.send(Method::PUT, &path, Some(&auth), Some(body)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        let message = answer.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(expected), "{message} lacks {expected}");
    }
    // A refused report changes nothing.
    let stats = f.sim.stats();
    assert_eq!(stats.hosts[0].reports, 1);
    assert_eq!(stats.hosts[0].certificates[0].cert_not_after, "20300101000000Z");

    // The client's typed entries pass; an empty report empties the inventory.
    let entry = certificate("b.example", "0B", f.sim.now() + DAY * 30);
    f.client
        .report_certificates(&host.id, &host.secret_key, std::slice::from_ref(&entry))
        .await
        .unwrap();
    assert_eq!(f.sim.stats().hosts[0].certificates[0].cert_cn, "b.example");
    f.client
        .report_certificates(&host.id, &host.secret_key, &[])
        .await
        .unwrap();
    assert!(f.sim.stats().hosts[0].certificates.is_empty());

    // After a rotation only the new key works; the host record shows both.
    assert!(f.sim.rotate_secret_key(&host.id));
    let error = f
        .client
        .report_certificates(&host.id, &host.secret_key, std::slice::from_ref(&entry))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "Unauthorized");
    let rotated = f.client.host(&host.id).await.unwrap();
    assert_ne!(rotated.secret_key, host.secret_key);
    assert_eq!(rotated.old_secret_key.as_ref(), Some(&host.secret_key));
    assert!(rotated.secret_update_time >= host.secret_update_time);
    f.client
        .report_certificates(&host.id, &rotated.secret_key, &[entry])
        .await
        .unwrap();
    assert_eq!(f.sim.stats().requests["agent_report"], 15);
    f.sim.shutdown().await;
}

#[tokio::test]
async fn email_lists_round_trip() {
    let f = Fixture::start(CertMgmtSimulatorConfig::default()).await;
    let created = f
        .basic(
            Method::POST,
            "/certmgmt/email_lists",
            Some(json!({"email_list_name": "ops", "to": ["ops@example.com"], "cc": ["lead@example.com"]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let body = created.json();
    assert_eq!(body["url"], "certmgmt/email_list/1");
    assert_eq!(body["email_list_id"], 1);
    assert_eq!(body["to"], json!(["ops@example.com"]));
    assert_eq!(body["cc"], json!(["lead@example.com"]));

    let security = f
        .client
        .create_email_list(&NewEmailList {
            email_list_name: "security".into(),
            to: vec!["sec@example.com".into()],
            cc: vec![],
        })
        .await
        .unwrap();
    assert_eq!(security.email_list_id, 2);
    assert_eq!(security.email_list_name.as_deref(), Some("security"));
    let lists = f.client.email_lists().await.unwrap();
    assert_eq!(
        lists
            .iter()
            .map(|l| (l.email_list_id, l.email_list_name.clone().unwrap()))
            .collect::<Vec<_>>(),
        [(1, "ops".to_owned()), (2, "security".to_owned())]
    );

    let update = NewEmailList {
        email_list_name: "operations".into(),
        to: vec!["ops@example.com".into(), "oncall@example.com".into()],
        cc: vec![],
    };
    f.client.update_email_list(1, &update).await.unwrap();
    let ops = f.client.email_list(1).await.unwrap();
    assert_eq!(ops.email_list_name.as_deref(), Some("operations"));
    assert_eq!(ops.to, update.to);
    assert!(ops.cc.is_empty());
    let raw = f
        .basic(
            Method::PUT,
            "/certmgmt/email_lists/1",
            Some(json!({"url": "certmgmt/email_list/1", "email_list_id": 1, "to": ["x@example.com"], "cc": []})),
        )
        .await;
    assert_eq!(raw.status, StatusCode::NO_CONTENT);
    assert!(raw.body.is_empty());
    for bad in [
        json!({"email_list_id": 2, "to": ["x@example.com"], "cc": []}),
        json!({"to": [], "cc": []}),
        json!({"to": ["x@example.com"]}),
        json!({"to": ["not-an-address"], "cc": []}),
    ] {
        let answer = f
            .basic(Method::PUT, "/certmgmt/email_lists/1", Some(bad.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let invalid = f
        .client
        .create_email_list(&NewEmailList {
            email_list_name: "bad".into(),
            to: vec!["nobody".into()],
            cc: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.reason(), "InvalidRequest");
    assert!(invalid.to_string().contains("not an email address"), "{invalid}");
    assert_eq!(
        f.client
            .update_email_list(99, &update)
            .await
            .unwrap_err()
            .reason(),
        "NotFound"
    );

    f.sim.shutdown().await;
}

#[tokio::test]
async fn deleting_an_email_list_strips_it_from_the_configs() {
    let f = Fixture::start(CertMgmtSimulatorConfig::default()).await;
    for name in ["ops", "security"] {
        f.client.create_email_list(&new_list(name)).await.unwrap();
    }
    // Referenced by the node config and two levels; the other list by HIGH only.
    let config = |ids: Vec<i64>| LevelConfig {
        enabled: true,
        email_list_ids: ids,
        remaining_days: 30,
    };
    f.client
        .put_alert_config(AlertLevel::Info, &config(vec![1, 2]))
        .await
        .unwrap();
    f.client
        .put_alert_config(AlertLevel::Warn, &config(vec![1]))
        .await
        .unwrap();
    f.client
        .put_alert_config(AlertLevel::High, &config(vec![2]))
        .await
        .unwrap();
    f.client
        .put_node_alert_config(&NodeAlertConfig {
            enabled: true,
            email_list_ids: vec![1],
            max_days_checkin_delay: 3,
        })
        .await
        .unwrap();
    let raw = f.basic(Method::DELETE, "/certmgmt/email_lists/1", None).await;
    assert_eq!(raw.status, StatusCode::OK);
    assert_eq!(
        raw.json(),
        json!({"affected_criteria": [
            {"url": "certmgmt/node_criteria"},
            {"url": "certmgmt/cert_criteria/INFO"},
            {"url": "certmgmt/cert_criteria/WARN"}
        ]})
    );
    let levels = f.client.alert_configs().await.unwrap();
    assert_eq!(levels[&AlertLevel::Info].email_list_ids, [2]);
    assert!(levels[&AlertLevel::Warn].email_list_ids.is_empty());
    assert!(
        f.client
            .node_alert_config()
            .await
            .unwrap()
            .email_list_ids
            .is_empty()
    );
    let affected = f.client.delete_email_list(2).await.unwrap();
    assert_eq!(
        affected
            .iter()
            .map(AffectedCriterion::criterion)
            .collect::<Vec<_>>(),
        [
            Criterion::Level(AlertLevel::Info),
            Criterion::Level(AlertLevel::High)
        ]
    );
    assert_eq!(
        f.client.delete_email_list(2).await.unwrap_err().reason(),
        "NotFound"
    );
    assert_eq!(f.client.email_list(1).await.unwrap_err().reason(), "NotFound");
    assert!(f.client.email_lists().await.unwrap().is_empty());
    f.sim.shutdown().await;
}

#[tokio::test]
async fn levels_are_fixed_and_written_with_put() {
    let f = Fixture::start(CertMgmtSimulatorConfig::default()).await;
    let levels = f.client.alert_configs().await.unwrap();
    assert_eq!(levels.keys().copied().collect::<Vec<_>>(), AlertLevel::ALL);
    assert_eq!(
        levels.values().map(|c| c.remaining_days).collect::<Vec<_>>(),
        [90, 30, 14, 7]
    );
    assert!(levels.values().all(|c| !c.enabled && c.email_list_ids.is_empty()));
    let raw = f.basic(Method::GET, "/certmgmt/alert_configs", None).await;
    assert_eq!(
        raw.json()["WARN"],
        json!({"enabled": false, "email_list_ids": [], "remaining_days": 30})
    );

    let list = f
        .client
        .create_email_list(&NewEmailList {
            email_list_name: "ops".into(),
            to: vec!["ops@example.com".into()],
            cc: vec![],
        })
        .await
        .unwrap();
    let high = LevelConfig {
        enabled: true,
        email_list_ids: vec![list.email_list_id],
        remaining_days: 10,
    };
    f.client.put_alert_config(AlertLevel::High, &high).await.unwrap();
    assert_eq!(f.client.alert_config(AlertLevel::High).await.unwrap(), high);
    let raw = f
        .basic(
            Method::PUT,
            "/certmgmt/alert_configs/WARN",
            Some(json!({"enabled": true, "email_list_ids": [], "remaining_days": 21})),
        )
        .await;
    assert_eq!(raw.status, StatusCode::NO_CONTENT);
    assert!(raw.body.is_empty());
    assert_security_headers(&raw);
    assert_eq!(
        f.client
            .alert_config(AlertLevel::Warn)
            .await
            .unwrap()
            .remaining_days,
        21
    );

    f.sim.shutdown().await;
}

#[tokio::test]
async fn level_writes_are_validated() {
    let f = Fixture::start(CertMgmtSimulatorConfig::default()).await;
    let list = f.client.create_email_list(&new_list("ops")).await.unwrap();
    let high = LevelConfig {
        enabled: true,
        email_list_ids: vec![list.email_list_id],
        remaining_days: 10,
    };
    let unknown_list = LevelConfig {
        email_list_ids: vec![42],
        ..high.clone()
    };
    let error = f
        .client
        .put_alert_config(AlertLevel::Info, &unknown_list)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "InvalidRequest");
    let negative = LevelConfig {
        remaining_days: -1,
        ..high.clone()
    };
    assert_eq!(
        f.client
            .put_alert_config(AlertLevel::Info, &negative)
            .await
            .unwrap_err()
            .reason(),
        "InvalidRequest"
    );
    for (method, path, body) in [
        (Method::GET, "/certmgmt/alert_configs/warn", None),
        (Method::GET, "/certmgmt/alert_configs/CRITICAL", None),
        (
            Method::PUT,
            "/certmgmt/alert_configs/CRITICAL",
            Some(json!({"enabled": true, "email_list_ids": [], "remaining_days": 1})),
        ),
    ] {
        assert_eq!(
            f.basic(method, path, body).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for bad in [
        json!({"email_list_ids": [], "remaining_days": 1}),
        json!({"enabled": true, "remaining_days": 1}),
        json!({"enabled": true, "email_list_ids": []}),
        json!({"enabled": "yes", "email_list_ids": [], "remaining_days": 1}),
        json!({"enabled": true, "email_list_ids": ["1"], "remaining_days": 1}),
        json!({"enabled": true, "email_list_ids": [], "remaining_days": 1.5}),
    ] {
        let answer = f
            .basic(Method::PUT, "/certmgmt/alert_configs/INFO", Some(bad.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Nothing of the refused writes stuck.
    assert_eq!(
        f.client
            .alert_config(AlertLevel::Info)
            .await
            .unwrap()
            .remaining_days,
        90
    );

    f.sim.shutdown().await;
}

#[tokio::test]
async fn the_node_configuration_is_read_and_written() {
    let f = Fixture::start(CertMgmtSimulatorConfig::default()).await;
    let list = f.client.create_email_list(&new_list("ops")).await.unwrap();
    let node = f.client.node_alert_config().await.unwrap();
    assert_eq!(
        node,
        NodeAlertConfig {
            enabled: false,
            email_list_ids: vec![],
            max_days_checkin_delay: 2
        }
    );
    let wanted = NodeAlertConfig {
        enabled: true,
        email_list_ids: vec![list.email_list_id],
        max_days_checkin_delay: 5,
    };
    f.client.put_node_alert_config(&wanted).await.unwrap();
    assert_eq!(f.client.node_alert_config().await.unwrap(), wanted);
    let zero = NodeAlertConfig {
        max_days_checkin_delay: 0,
        ..wanted.clone()
    };
    assert_eq!(
        f.client.put_node_alert_config(&zero).await.unwrap_err().reason(),
        "InvalidRequest"
    );
    let raw = f.basic(Method::GET, "/certmgmt/node_alert_configs", None).await;
    assert_eq!(
        raw.json(),
        json!({"enabled": true, "email_list_ids": [1], "max_days_checkin_delay": 5})
    );
    f.sim.shutdown().await;
}

/// An alerting set-up: list `ops` (to `ops@`, cc `lead@`) on INFO; INFO 90, WARN 30 and HIGH 14
/// days enabled, ERROR disabled; one host that reported `soon` (expiring in 10 days and an hour),
/// `later` (60 days and an hour) and a third certificate 200 days from expiry.
struct Alerting {
    f: Fixture,
    host: HostRecord,
    ops: i64,
    soon: AgentCertificate,
    later: AgentCertificate,
}

async fn put_level(f: &Fixture, level: AlertLevel, enabled: bool, ids: Vec<i64>, remaining_days: i64) {
    let config = LevelConfig {
        enabled,
        email_list_ids: ids,
        remaining_days,
    };
    f.client.put_alert_config(level, &config).await.unwrap();
}

async fn alerting() -> Alerting {
    let f = Fixture::start(CertMgmtSimulatorConfig::default()).await;
    let list = NewEmailList {
        cc: vec!["lead@example.com".into()],
        ..new_list("ops")
    };
    let ops = f.client.create_email_list(&list).await.unwrap().email_list_id;
    put_level(&f, AlertLevel::Info, true, vec![ops], 90).await;
    put_level(&f, AlertLevel::Warn, true, vec![], 30).await;
    put_level(&f, AlertLevel::High, true, vec![], 14).await;
    put_level(&f, AlertLevel::Error, false, vec![], 7).await;
    let (host, _) = f.client.onboard_host("cluster-a", "kubernetes").await.unwrap();
    let now = f.sim.now();
    let hour = SignedDuration::from_hours(1);
    let soon = certificate("soon.example", "01", now + DAY * 10 + hour);
    let later = certificate("later.example", "02", now + DAY * 60 + hour);
    let far = certificate("far.example", "03", now + DAY * 200);
    let inventory = [soon.clone(), later.clone(), far];
    f.client
        .report_certificates(&host.id, &host.secret_key, &inventory)
        .await
        .unwrap();
    Alerting {
        f,
        host,
        ops,
        soon,
        later,
    }
}

#[tokio::test]
async fn certificate_alerts_fire_once_per_level_and_mail_the_levels_lists() {
    let Alerting { f, .. } = alerting().await;
    let mut fired: Vec<(String, Level)> = f
        .sim
        .evaluate_alerts()
        .iter()
        .map(|alert| {
            (
                alert.details["cn"].as_str().unwrap().to_owned(),
                alert.level.unwrap(),
            )
        })
        .collect();
    fired.sort();
    assert_eq!(
        fired,
        [
            ("later.example".to_owned(), Level::Info),
            ("soon.example".to_owned(), Level::Info),
            ("soon.example".to_owned(), Level::Warn),
            ("soon.example".to_owned(), Level::High),
        ]
    );
    assert!(
        f.sim.evaluate_alerts().is_empty(),
        "alerts are generated once per level"
    );
    // Only INFO names an email list: two emails, to and cc resolved.
    let emails = f.sim.stats().emails;
    assert_eq!(emails.len(), 2);
    assert!(emails.iter().all(|email| email.level == Some(Level::Info)
        && email.kind == AlertKind::Certificate
        && email.to == ["ops@example.com"]
        && email.cc == ["lead@example.com"]));
    // Enabling ERROR later alerts what is due for it, once.
    put_level(&f, AlertLevel::Error, true, vec![], 7).await;
    f.sim.advance_clock(Duration::from_secs(25 * 86_400));
    let generated = f.sim.evaluate_alerts();
    assert_eq!(generated.len(), 1, "{generated:?}");
    assert_eq!(generated[0].level, Some(Level::Error));
    assert_eq!(generated[0].title(), "Certificate expired 14 days ago");
    assert!(f.sim.evaluate_alerts().is_empty());
    f.sim.shutdown().await;
}

#[tokio::test]
async fn alert_queries_filter_by_date_type_and_level() {
    let Alerting { f, host, .. } = alerting().await;
    f.sim.evaluate_alerts();
    let today = f.today();
    let warn = f
        .client
        .level_alerts(AlertLevel::Warn, today, today)
        .await
        .unwrap();
    assert_eq!(warn.len(), 1);
    assert_eq!(warn[0].host_id, host.id);
    assert_eq!(warn[0].level, Some(AlertLevel::Warn));
    assert_eq!(warn[0].type_, Some(AlertType::Certificate));
    assert_eq!(warn[0].title(), Some("Certificate expiring in 10 days"));
    assert_eq!(warn[0].detail("serial_number").as_deref(), Some("01"));
    assert_eq!(warn[0].detail("cn").as_deref(), Some("soon.example"));
    assert!(warn[0].datetime.is_some());
    let compact = today.strftime("%Y%m%d").to_string();
    let path = format!("/certmgmt/alert_configs/WARN/alerts?from_dt={compact}&to_dt={compact}");
    let raw = f.basic(Method::GET, &path, None).await;
    let mut keys: Vec<String> = raw.json()["alerts"][0]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(keys, ["datetime", "details", "host_id"]);
    let yesterday = today.yesterday().unwrap();
    let info = |from: Date, to: Date| f.client.level_alerts(AlertLevel::Info, from, to);
    assert!(info(yesterday, yesterday).await.unwrap().is_empty());
    assert_eq!(info(yesterday, today.tomorrow().unwrap()).await.unwrap().len(), 2);
    let unfiltered = f
        .basic(Method::GET, "/certmgmt/alert_configs/INFO/alerts", None)
        .await;
    assert_eq!(unfiltered.json()["alerts"].as_array().unwrap().len(), 2);

    let high = f
        .client
        .host_alerts(
            &host.id,
            today,
            today,
            Some(AlertType::Certificate),
            Some(AlertLevel::High),
        )
        .await
        .unwrap();
    assert_eq!(high.len(), 1);
    assert_eq!(
        (high[0].type_, high[0].level),
        (Some(AlertType::Certificate), Some(AlertLevel::High))
    );
    let all = f
        .client
        .host_alerts(&host.id, today, today, None, None)
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    let nodes = f
        .client
        .host_alerts(&host.id, today, today, Some(AlertType::Node), None)
        .await;
    assert!(nodes.unwrap().is_empty());
    let missing = f
        .client
        .host_alerts("no-such-host", today, today, None, None)
        .await;
    assert_eq!(missing.unwrap_err().reason(), "NotFound");
    for bad in [
        "/certmgmt/node_alert_configs/alerts?from_dt=2025-01-01".to_owned(),
        "/certmgmt/alert_configs/INFO/alerts?to_dt=20251301".to_owned(),
        format!("/certmgmt/host/{}/alerts?type=disk", host.id),
        format!("/certmgmt/host/{}/alerts?level=warn", host.id),
    ] {
        assert_eq!(
            f.basic(Method::GET, &bad, None).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    f.sim.shutdown().await;
}

#[tokio::test]
async fn node_alerts_fire_once_per_unavailability_period() {
    let Alerting {
        f,
        host,
        ops,
        soon,
        later,
    } = alerting().await;
    f.sim.evaluate_alerts();
    let node = NodeAlertConfig {
        enabled: true,
        email_list_ids: vec![ops],
        max_days_checkin_delay: 2,
    };
    f.client.put_node_alert_config(&node).await.unwrap();
    f.sim.advance_clock(Duration::from_secs(2 * 86_400 - 60));
    assert!(
        f.sim.evaluate_alerts().is_empty(),
        "not silent for more than 2 days yet"
    );
    f.sim.advance_clock(Duration::from_secs(120));
    let generated = f.sim.evaluate_alerts();
    assert_eq!(generated.len(), 1);
    assert_eq!((generated[0].kind, generated[0].level), (AlertKind::Node, None));
    let reported = f.sim.stats().hosts[0].last_contact_time.clone();
    assert_eq!(generated[0].details["last_contact_time"], reported.as_str());
    let first_day = f.today();
    f.sim.advance_clock(Duration::from_secs(86_400));
    assert!(
        f.sim.evaluate_alerts().is_empty(),
        "one node alert per unavailability period"
    );

    // The host reports again (a new period starts), then is silent for three more days.
    f.client
        .report_certificates(&host.id, &host.secret_key, &[soon, later])
        .await
        .unwrap();
    assert!(f.sim.evaluate_alerts().is_empty());
    f.sim.advance_clock(Duration::from_secs(3 * 86_400));
    assert_eq!(f.sim.evaluate_alerts().len(), 1);
    let last_day = f.today();
    let nodes = f.client.node_alerts(first_day, last_day).await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(
        nodes
            .iter()
            .all(|a| a.type_ == Some(AlertType::Node) && a.level.is_none())
    );
    assert!(
        nodes[1]
            .title()
            .unwrap()
            .contains("has not checked in for 3 days")
    );
    assert!(nodes[1].detail("last_contact_time").is_some());
    assert_eq!(f.client.node_alerts(last_day, last_day).await.unwrap().len(), 1);
    let per_host = f
        .client
        .host_alerts(&host.id, first_day, last_day, Some(AlertType::Node), None)
        .await
        .unwrap();
    assert_eq!(per_host.len(), 2);
    assert!(per_host.iter().all(|a| a.type_ == Some(AlertType::Node)));
    // Node alerts mail the node configuration's lists.
    let emails = f.sim.stats().emails;
    assert_eq!(emails.iter().filter(|e| e.kind == AlertKind::Node).count(), 2);
    f.sim.shutdown().await;
}

#[tokio::test]
async fn the_control_endpoints_evaluate_advance_the_clock_and_report() {
    let Alerting { f, .. } = alerting().await;
    let evaluate = f
        .send(Method::POST, "/__simulator/alerts/evaluate", None, None)
        .await;
    let generated = evaluate.json()["alerts"].as_array().unwrap().clone();
    assert_eq!(generated.len(), 4);
    assert!(
        generated
            .iter()
            .all(|a| a["type"] == "certificate" && a["level"].is_string())
    );
    let again = f
        .send(Method::POST, "/__simulator/alerts/evaluate", None, None)
        .await;
    assert_eq!(again.json(), json!({"alerts": []}));
    let before = f.sim.now();
    let advance = f
        .send(
            Method::POST,
            "/__simulator/clock/advance?seconds=86400",
            None,
            None,
        )
        .await;
    assert_eq!(advance.status, StatusCode::NO_CONTENT);
    assert!(f.sim.now() >= before + DAY);
    let bad = f
        .send(Method::POST, "/__simulator/clock/advance", None, None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let body = f.send(Method::GET, "/__simulator/stats", None, None).await.body;
    let stats: CertMgmtStats = serde_json::from_slice(&body).unwrap();
    assert_eq!(stats.alerts.len(), 4);
    assert_eq!(stats.hosts[0].certificates.len(), 3);
    assert_eq!(stats.levels[&Level::Info].email_list_ids, [1]);
    assert!(!stats.node_config.enabled);
    assert!(stats.last_evaluation.is_some());
    assert!(stats.requests["agent_report"] >= 1);
    let serialized = String::from_utf8(body.to_vec()).unwrap();
    assert!(!serialized.contains("secret"), "stats never show keys");
    f.sim.shutdown().await;
}

#[tokio::test]
async fn faults_are_retried_only_for_idempotent_calls() {
    let f = Fixture::start(CertMgmtSimulatorConfig::default()).await;
    f.sim.set_faults(Faults {
        rate_limit: Some(RateLimitFault {
            retry_after_secs: 0,
            count: 1,
        }),
        ..Faults::default()
    });
    f.client.email_lists().await.unwrap();
    assert_eq!(f.sim.stats().requests["email_lists"], 2);
    f.sim.set_faults(Faults {
        rate_limit: Some(RateLimitFault {
            retry_after_secs: 0,
            count: 1,
        }),
        endpoints: Some(vec!["create_email_list".into()]),
        ..Faults::default()
    });
    let list = NewEmailList {
        email_list_name: "ops".into(),
        to: vec!["ops@example.com".into()],
        cc: vec![],
    };
    let error = f.client.create_email_list(&list).await.unwrap_err();
    assert_eq!(error.reason(), "RateLimited");
    assert!(error.is_transient());
    assert_eq!(f.sim.stats().requests["create_email_list"], 1);
    assert!(f.sim.stats().email_lists.is_empty());
    // Onboarding is retried: it is idempotent by hostname.
    f.sim.set_faults(Faults {
        rate_limit: Some(RateLimitFault {
            retry_after_secs: 0,
            count: 1,
        }),
        endpoints: Some(vec!["onboard".into()]),
        ..Faults::default()
    });
    let (_, created) = f.client.onboard_host("cluster-a", "kubernetes").await.unwrap();
    assert!(created);
    assert_eq!(f.sim.stats().requests["onboard"], 2);
    f.sim.set_faults(Faults {
        server_error_rate: 1.0,
        endpoints: Some(vec!["status".into()]),
        ..Faults::default()
    });
    let error = f.client.status(false).await.unwrap_err();
    assert_eq!(error.reason(), "Unavailable");
    assert_eq!(f.sim.stats().requests["status"], 3);
    f.sim.shutdown().await;
}

#[tokio::test]
async fn alerts_are_also_evaluated_periodically() {
    let mut config = CertMgmtSimulatorConfig {
        evaluation_interval: Some(Duration::from_millis(50)),
        ..CertMgmtSimulatorConfig::default()
    };
    config.levels.insert(
        Level::Error,
        LevelSettings {
            enabled: true,
            email_list_ids: vec![],
            remaining_days: 7,
        },
    );
    let f = Fixture::start(config).await;
    let (host, _) = f.client.onboard_host("cluster-a", "kubernetes").await.unwrap();
    let entry = certificate("soon.example", "01", f.sim.now() + DAY);
    f.client
        .report_certificates(&host.id, &host.secret_key, &[entry])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while f.sim.stats().alerts.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no periodic evaluation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let alerts = f.sim.stats().alerts;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].level, Some(Level::Error));
    f.sim.shutdown().await;
}

#[test]
fn isoformat_and_timedelta_follow_python() {
    let at: Timestamp = "2024-05-01T10:00:00Z".parse().unwrap();
    assert_eq!(isoformat(at), "2024-05-01T10:00:00");
    let at: Timestamp = "2024-05-01T10:00:00.1234567Z".parse().unwrap();
    assert_eq!(isoformat(at), "2024-05-01T10:00:00.123456");
    assert_eq!(store::python_timedelta(SignedDuration::from_secs(300)), "0:05:00");
    assert_eq!(
        store::python_timedelta(SignedDuration::from_secs(86_400 + 3 * 3600 + 4 * 60 + 5)),
        "1 day, 3:04:05"
    );
    assert_eq!(store::python_timedelta(DAY * 2), "2 days, 0:00:00");
    assert_eq!(
        api::agent_time("20250531223000Z"),
        Some("2025-05-31T22:30:00Z".parse().unwrap())
    );
    assert_eq!(api::agent_time("20250231223000Z"), None);
}
