//! Wire formats of the CertMgmt client: every body's field names, the four date formats, the
//! `Authorization` forms, error classification, and that secrets never print.

use pretty_assertions::assert_eq;
use serde_json::json;

use super::{model::*, *};

fn at(text: &str) -> jiff::Timestamp {
    text.parse().unwrap()
}

fn agent_certificate() -> AgentCertificate {
    AgentCertificate {
        service_name: "nginx".into(),
        cert_sn: "0A1B2C".into(),
        cert_type: AgentCertType::Public,
        cert_issuer: "CN=Issuing CA,O=Example".into(),
        cert_subject: "CN=api.example.com".into(),
        leaf_cert_cn: "api.example.com".into(),
        leaf_cert_sn: "0A1B2C".into(),
        cert_cn: "api.example.com".into(),
        cert_sans: vec!["api.example.com".into(), "10.0.0.1".into()],
        cert_not_before: at("2025-01-02T03:04:05Z"),
        cert_not_after: at("2025-04-02T23:59:59.999Z"),
        cert_modified_date: at("2025-01-02T03:05:00Z"),
        cert_path: "/etc/nginx/tls/api.pem".into(),
    }
}

#[test]
fn request_bodies_use_the_documented_field_names() {
    let onboard = OnboardBody {
        hostname: "cluster-a",
        server_type: "kubernetes",
    };
    assert_eq!(
        serde_json::to_string(&onboard).unwrap(),
        r#"{"hostname":"cluster-a","server_type":"kubernetes"}"#
    );
    let list = NewEmailList {
        email_list_name: "ops".into(),
        to: vec!["ops@example.com".into(), "oncall@example.com".into()],
        cc: vec![],
    };
    assert_eq!(
        serde_json::to_string(&list).unwrap(),
        r#"{"email_list_name":"ops","to":["ops@example.com","oncall@example.com"],"cc":[]}"#
    );
    let update = UpdateEmailListBody {
        email_list_id: 7,
        email_list_name: &list.email_list_name,
        to: &list.to,
        cc: &list.cc,
    };
    assert_eq!(
        serde_json::to_string(&update).unwrap(),
        r#"{"email_list_id":7,"email_list_name":"ops","to":["ops@example.com","oncall@example.com"],"cc":[]}"#
    );
    let level = LevelConfig {
        enabled: true,
        email_list_ids: vec![3, 5],
        remaining_days: 30,
    };
    assert_eq!(
        serde_json::to_string(&level).unwrap(),
        r#"{"enabled":true,"email_list_ids":[3,5],"remaining_days":30}"#
    );
    let node = NodeAlertConfig {
        enabled: false,
        email_list_ids: vec![],
        max_days_checkin_delay: 2,
    };
    assert_eq!(
        serde_json::to_string(&node).unwrap(),
        r#"{"enabled":false,"email_list_ids":[],"max_days_checkin_delay":2}"#
    );
}

#[test]
fn agent_certificates_serialize_every_field_in_order_with_compact_dates() {
    let json = serde_json::to_string(&[agent_certificate()]).unwrap();
    assert_eq!(
        json,
        concat!(
            r#"[{"service_name":"nginx","cert_sn":"0A1B2C","cert_type":"Public","#,
            r#""cert_issuer":"CN=Issuing CA,O=Example","cert_subject":"CN=api.example.com","#,
            r#""leaf_cert_cn":"api.example.com","leaf_cert_sn":"0A1B2C","cert_cn":"api.example.com","#,
            r#""cert_sans":["api.example.com","10.0.0.1"],"cert_not_before":"20250102030405Z","#,
            r#""cert_not_after":"20250402235959Z","cert_modified_date":"20250102030500Z","#,
            r#""cert_path":"/etc/nginx/tls/api.pem"}]"#
        )
    );
    for (value, text) in [
        (AgentCertType::Root, "\"Root\""),
        (AgentCertType::Intermediate, "\"Intermediate\""),
        (AgentCertType::Public, "\"Public\""),
    ] {
        assert_eq!(serde_json::to_string(&value).unwrap(), text);
    }
    // And back, truncated to the second.
    let back: Vec<AgentCertificate> = serde_json::from_str(&json).unwrap();
    assert_eq!(back[0].cert_not_after, at("2025-04-02T23:59:59Z"));
    let bad = json.replace("20250402235959Z", "2025-04-02T23:59:59Z");
    let error = serde_json::from_str::<Vec<AgentCertificate>>(&bad).unwrap_err();
    assert!(error.to_string().contains("YYYYMMDDHHMMSSZ"), "{error}");
}

#[test]
fn agent_dates_are_fourteen_utc_digits_and_z() {
    assert_eq!(format_agent_time(at("1999-12-31T23:59:59.5Z")), "19991231235959Z");
    assert_eq!(
        format_agent_time(at("2025-06-01T00:30:00+02:00")),
        "20250531223000Z"
    );
    assert_eq!(
        parse_agent_time("20250531223000Z"),
        Some(at("2025-05-31T22:30:00Z"))
    );
    for bad in [
        "20250531223000",
        "2025053122300Z",
        "202505312230000Z",
        "20251331223000Z",
        "20250230000000Z",
        "2025-05-31T22:3Z",
        "20250531223000z",
        "+2025053122300Z",
        "",
    ] {
        assert_eq!(parse_agent_time(bad), None, "{bad:?}");
    }
}

#[test]
fn query_dates_differ_between_audit_and_alerts() {
    let date = jiff::civil::date(2025, 3, 7);
    assert_eq!(audit_date(date), "2025-03-07");
    assert_eq!(alert_date(date), "20250307");
    assert_eq!(
        alert_query(date, jiff::civil::date(2025, 12, 31)),
        [
            ("from_dt", "20250307".to_owned()),
            ("to_dt", "20251231".to_owned())
        ]
    );
    let module = ModuleRequest {
        os: ModuleOs::Win,
        module: ModuleKind::Certfinder,
        component: Some("iis".into()),
        version: Some("10".into()),
    };
    assert_eq!(
        module.query(),
        [
            ("OS", "win".to_owned()),
            ("Component", "iis".to_owned()),
            ("Version", "10".to_owned()),
            ("module", "certfinder".to_owned())
        ]
    );
}

#[test]
fn isoformat_timestamps_are_read_with_and_without_a_zone() {
    assert_eq!(
        parse_isoformat("2024-05-01T10:00:00.123456"),
        Some(at("2024-05-01T10:00:00.123456Z"))
    );
    assert_eq!(
        parse_isoformat("2024-05-01T10:00:00"),
        Some(at("2024-05-01T10:00:00Z"))
    );
    assert_eq!(
        parse_isoformat("2024-05-01T10:00:00.5+02:00"),
        Some(at("2024-05-01T08:00:00.5Z"))
    );
    assert_eq!(
        parse_isoformat("2024-05-01T10:00:00Z"),
        Some(at("2024-05-01T10:00:00Z"))
    );
    assert_eq!(parse_isoformat("yesterday"), None);
}

#[test]
fn the_status_is_read_with_its_hyphenated_build_number() {
    let body = json!({
        "url": "certmgmt/status",
        "description": "CertMgmt Service Status Snapshot",
        "version": "2.4.1",
        "build-no": "1187",
        "status": "IN_SERVICE",
        "status_data": "",
        "server_time": "2025-03-01T06:00:00.000123",
        "up_since": "2025-02-27T06:00:00",
        "up_time": "2 days, 0:00:00",
        "db_status": "IN_SERVICE",
        "cluster": {"nodes": [
            {"primary": true, "host_fqdn": "cconnectsub106.stooges.icm"},
            {"primary": false, "host_fqdn": "cconnectpub106.stooges.icm"}
        ]},
        "onboard_count": 1,
        "managed_hosts": [{
            "url": "certmgmt/host/42", "host_id": 42, "hostname": "cluster-a",
            "last_contact_time": "2025-03-01T05:00:00"
        }]
    });
    let status: ServiceStatus = serde_json::from_value(body).unwrap();
    assert_eq!(status.build_no, "1187");
    assert_eq!(status.version, "2.4.1");
    assert!(status.in_service());
    assert_eq!(status.server_time, Some(at("2025-03-01T06:00:00.000123Z")));
    assert_eq!(status.up_time, "2 days, 0:00:00");
    assert_eq!(status.cluster.nodes.len(), 2);
    assert!(status.cluster.nodes[0].primary);
    assert_eq!(status.onboard_count, Some(1));
    assert_eq!(status.managed_hosts[0].host_id, "42");
    assert_eq!(
        status.managed_hosts[0].last_contact_time,
        Some(at("2025-03-01T05:00:00Z"))
    );
    // Without `detail` there are no managed hosts; a null status_data is empty.
    let brief: ServiceStatus =
        serde_json::from_value(json!({"status": "IN_SERVICE", "status_data": null, "db_status": "DOWN"}))
            .unwrap();
    assert!(brief.managed_hosts.is_empty() && brief.status_data.is_empty());
    assert!(!brief.in_service());
    // A timestamp that does not parse is an error, not a silent None.
    assert!(serde_json::from_value::<ServiceStatus>(json!({"server_time": "soon"})).is_err());
}

const SECRET: &str = "k3y-5ecret-value-0123456789";
const OLD_SECRET: &str = "old-k3y-5ecret-value";

fn host_json() -> serde_json::Value {
    json!({
        "url": "certmgmt/host/7f3c2a",
        "id": "7f3c2a",
        "hostname": "cluster-a",
        "server_type": "kubernetes",
        "onboarding_time": "2025-03-01T06:00:00.123456",
        "secret_key": SECRET,
        "old_secret_key": OLD_SECRET,
        "secret_update_time": "2025-03-02T06:00:00",
        "last_contact_time": "2025-03-03T06:00:00"
    })
}

#[test]
fn host_records_are_read_and_never_print_their_keys() {
    let host: HostRecord = serde_json::from_value(host_json()).unwrap();
    assert_eq!(host.id, "7f3c2a");
    assert_eq!(host.url, "certmgmt/host/7f3c2a");
    assert_eq!(host.server_type, "kubernetes");
    assert_eq!(host.onboarding_time, Some(at("2025-03-01T06:00:00.123456Z")));
    assert_eq!(host.secret_key.expose(), SECRET);
    assert_eq!(
        host.old_secret_key.as_ref().map(SecretString::expose),
        Some(OLD_SECRET)
    );
    assert_eq!(host.last_contact_time, Some(at("2025-03-03T06:00:00Z")));
    for printed in [format!("{host:?}"), format!("{host:#?}"), host.to_string()] {
        assert!(
            !printed.contains(SECRET) && !printed.contains(OLD_SECRET),
            "{printed}"
        );
    }
    assert_eq!(host.to_string(), "host 7f3c2a (cluster-a, kubernetes)");
    // No rotation yet: null or empty old key; a numeric id.
    let mut fresh = host_json();
    fresh["old_secret_key"] = json!(null);
    fresh["id"] = json!(12);
    let fresh: HostRecord = serde_json::from_value(fresh).unwrap();
    assert_eq!(fresh.id, "12");
    assert!(fresh.old_secret_key.is_none());
    let mut empty = host_json();
    empty["old_secret_key"] = json!("");
    assert!(
        serde_json::from_value::<HostRecord>(empty)
            .unwrap()
            .old_secret_key
            .is_none()
    );
    // The key is required.
    let mut keyless = host_json();
    keyless.as_object_mut().unwrap().remove("secret_key");
    assert!(serde_json::from_value::<HostRecord>(keyless).is_err());
}

#[test]
fn audit_records_are_read() {
    let body = json!({"url": "certmgmt/host/7/auditlogs", "audit_data": [
        {"id": 1, "datetime": "2025-03-01T06:00:00", "host_id": 7, "activity": "onboard", "details": "onboarded"}
    ]});
    let logs: AuditLogs = serde_json::from_value(body).unwrap();
    assert_eq!(logs.audit_data[0].id, "1");
    assert_eq!(logs.audit_data[0].host_id, "7");
    assert_eq!(logs.audit_data[0].activity, "onboard");
    assert_eq!(logs.audit_data[0].details, json!("onboarded"));
    assert_eq!(logs.audit_data[0].datetime, Some(at("2025-03-01T06:00:00Z")));
}

#[test]
fn email_lists_are_read_as_arrays_or_the_documented_single_object() {
    let one = json!({"url": "certmgmt/email_list/3", "email_list_id": 3, "to": ["a@example.com"], "cc": []});
    let lists = serde_json::from_value::<EmailListsBody>(one.clone())
        .unwrap()
        .into_vec();
    assert_eq!(lists.len(), 1);
    assert_eq!(lists[0].email_list_id, 3);
    assert_eq!(lists[0].email_list_name, None);
    assert_eq!(lists[0].url, "certmgmt/email_list/3");
    let many =
        json!([one, {"email_list_id": "4", "email_list_name": "ops", "to": ["b@example.com"], "cc": null}]);
    let lists = serde_json::from_value::<EmailListsBody>(many).unwrap().into_vec();
    assert_eq!(lists[1].email_list_id, 4);
    assert_eq!(lists[1].email_list_name.as_deref(), Some("ops"));
    assert!(lists[1].cc.is_empty());
}

#[test]
fn affected_criteria_name_the_node_config_and_levels() {
    let body: DeleteEmailListBody = serde_json::from_value(json!({"affected_criteria": [
        {"url": "certmgmt/node_criteria"},
        {"url": "certmgmt/cert_criteria/INFO"},
        {"url": "certmgmt/cert_criteria/WARN"},
        {"url": "certmgmt/elsewhere"}
    ]}))
    .unwrap();
    let criteria: Vec<Criterion> = body
        .affected_criteria
        .iter()
        .map(AffectedCriterion::criterion)
        .collect();
    assert_eq!(
        criteria,
        [
            Criterion::Node,
            Criterion::Level(AlertLevel::Info),
            Criterion::Level(AlertLevel::Warn),
            Criterion::Other("certmgmt/elsewhere".into())
        ]
    );
}

#[test]
fn levels_and_alerts_are_read() {
    assert_eq!(
        AlertLevel::ALL.map(AlertLevel::as_str),
        ["INFO", "WARN", "HIGH", "ERROR"]
    );
    assert_eq!("HIGH".parse::<AlertLevel>(), Ok(AlertLevel::High));
    assert!("high".parse::<AlertLevel>().is_err());
    let configs: BTreeMap<AlertLevel, LevelConfig> = serde_json::from_value(json!({
        "INFO": {"enabled": true, "email_list_ids": [1], "remaining_days": 90},
        "ERROR": {"enabled": false, "email_list_ids": [], "remaining_days": 7}
    }))
    .unwrap();
    assert_eq!(configs[&AlertLevel::Info].remaining_days, 90);
    assert!(!configs[&AlertLevel::Error].enabled);
    let body: AlertsBody = serde_json::from_value(json!({"alerts": [
        {"type": "certificate", "level": "WARN", "host_id": "7f3c", "datetime": "2025-03-01T06:00:00",
         "details": {"title": "Certificate expiring in 30 days", "cn": "api.example.com", "serial_number": "0A1B"}},
        {"type": "node", "level": null, "host_id": 9, "datetime": "2025-03-02T06:00:00",
         "details": {"title": "Host unavailable", "last_contact_time": "2025-02-27T06:00:00", "days": 3}}
    ]}))
    .unwrap();
    let [certificate, node] = &body.alerts[..] else {
        panic!("two alerts expected");
    };
    assert_eq!(certificate.type_, Some(AlertType::Certificate));
    assert_eq!(certificate.level, Some(AlertLevel::Warn));
    assert_eq!(certificate.title(), Some("Certificate expiring in 30 days"));
    assert_eq!(certificate.detail("cn").as_deref(), Some("api.example.com"));
    assert_eq!(certificate.datetime, Some(at("2025-03-01T06:00:00Z")));
    assert_eq!(node.type_, Some(AlertType::Node));
    assert_eq!(node.level, None);
    assert_eq!(node.host_id, "9");
    assert_eq!(node.detail("days").as_deref(), Some("3"));
}

#[test]
fn authorization_headers_have_the_documented_forms_and_are_sensitive() {
    let basic = basic_authorization("cc-admin", &SecretString::new("pa55:word")).unwrap();
    assert!(basic.is_sensitive());
    // base64("cc-admin:pa55:word")
    assert_eq!(basic.to_str().unwrap(), "Basic Y2MtYWRtaW46cGE1NTp3b3Jk");
    assert!(!format!("{basic:?}").contains("Y2MtYWRtaW46"));
    assert_eq!(
        basic_authorization("a:b", &SecretString::new("x"))
            .unwrap_err()
            .reason(),
        "InvalidConfiguration"
    );
    let agent = agent_authorization(&SecretString::new(SECRET)).unwrap();
    assert!(agent.is_sensitive());
    assert_eq!(agent.to_str().unwrap(), format!("secret_key={SECRET}"));
    let error = agent_authorization(&SecretString::new("bad\nkey")).unwrap_err();
    assert_eq!(error.reason(), "InvalidRequest");
    assert!(!error.to_string().contains("bad"), "{error}");
}

#[test]
fn errors_are_classified_with_reasons() {
    let unauthorized = classify(
        "host",
        StatusCode::UNAUTHORIZED,
        br#"{"message":"Bad credentials"}"#,
    );
    assert_eq!(unauthorized.reason(), "Unauthorized");
    assert!(!unauthorized.is_transient());
    assert!(
        unauthorized.to_string().contains("Bad credentials"),
        "{unauthorized}"
    );
    assert_eq!(
        classify("host", StatusCode::FORBIDDEN, b"").reason(),
        "Unauthorized"
    );
    let missing = classify("host", StatusCode::NOT_FOUND, b"<html/>").naming(|| "host \"7\"".into());
    assert_eq!(missing.reason(), "NotFound");
    assert_eq!(missing.to_string(), "CertMgmt has no host \"7\"");
    let invalid = classify(
        "report certificates",
        StatusCode::BAD_REQUEST,
        format!(r#"{{"message":"{}"}}"#, "x".repeat(1000)).as_bytes(),
    );
    assert_eq!(invalid.reason(), "InvalidRequest");
    assert!(invalid.to_string().len() < 400, "{invalid}");
    let plain = classify("onboard", StatusCode::CONFLICT, b"not json");
    assert_eq!(
        plain.to_string(),
        "CertMgmt rejected the request: onboard: HTTP 409"
    );
    for (error, reason, transient) in [
        (
            CertMgmtError::Unavailable { message: "x".into() },
            "Unavailable",
            true,
        ),
        (
            CertMgmtError::RateLimited {
                retry_after: Some(Duration::from_secs(3)),
            },
            "RateLimited",
            true,
        ),
        (
            CertMgmtError::MalformedResponse {
                operation: "status",
                message: "x".into(),
            },
            "MalformedResponse",
            true,
        ),
        (
            CertMgmtError::Configuration { message: "x".into() },
            "InvalidConfiguration",
            false,
        ),
    ] {
        assert_eq!(error.reason(), reason);
        assert_eq!(error.is_transient(), transient, "{reason}");
    }
}

#[test]
fn ids_are_escaped_into_one_path_segment() {
    assert_eq!(segment("host id", "7f3c-2a").unwrap(), "7f3c-2a");
    assert_eq!(segment("host id", "../x?y#z").unwrap(), "..%2Fx%3Fy%23z");
    for dots in ["", ".", ".."] {
        assert_eq!(segment("host id", dots).unwrap_err().reason(), "InvalidRequest");
    }
}

#[test]
fn the_client_refuses_bad_configuration_and_hides_its_credentials() {
    let password = || SecretString::new("hunter2-password");
    let error = CertMgmtClient::new("http://cc.example:8445", "admin", password(), None).unwrap_err();
    assert_eq!(error.reason(), "InvalidConfiguration");
    let error = CertMgmtClient::new(
        "https://cc.example:8445",
        "admin",
        password(),
        Some("not a bundle"),
    )
    .unwrap_err();
    assert_eq!(error.reason(), "InvalidConfiguration");
    let client = CertMgmtClient::new("https://cc.example:8445/", "admin", password(), None).unwrap();
    assert_eq!(client.base_url(), "https://cc.example:8445");
    let printed = format!("{client:?}");
    assert!(
        !printed.contains("hunter2") && !printed.contains("Basic"),
        "{printed}"
    );
}

#[tokio::test]
async fn an_unreachable_service_is_unavailable_and_transient() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = ClientOptions {
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        ..ClientOptions::default()
    };
    let client = CertMgmtClient::with_options(
        &format!("https://127.0.0.1:{port}"),
        "admin",
        &SecretString::new("pw"),
        None,
        options,
    )
    .unwrap();
    let error = client.status(false).await.unwrap_err();
    assert_eq!(error.reason(), "Unavailable", "{error}");
    assert!(error.is_transient());
    let error = client
        .report_certificates("7", &SecretString::new(SECRET), &[agent_certificate()])
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "Unavailable");
    assert!(!error.to_string().contains(SECRET));
}

#[test]
fn a_der_certificate_becomes_a_report_entry() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["api.example.com".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "api.example.com");
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0x1b, 0x2c]));
    params.not_before = time::OffsetDateTime::from_unix_timestamp(1_735_786_800).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(1_743_638_399).unwrap();
    let certificate = params.self_signed(&key).unwrap();
    let modified = at("2025-01-02T03:05:00Z");
    let entry = AgentCertificate::from_der(
        certificate.der(),
        AgentCertType::Public,
        "nginx",
        "/etc/tls/api.pem",
        modified,
    )
    .unwrap();
    assert_eq!(entry.cert_sn, "0A1B2C");
    assert_eq!(entry.leaf_cert_sn, "0A1B2C");
    assert_eq!(entry.cert_cn, "api.example.com");
    assert_eq!(entry.leaf_cert_cn, "api.example.com");
    assert_eq!(entry.cert_subject, "CN=api.example.com");
    assert_eq!(entry.cert_issuer, "CN=api.example.com");
    assert_eq!(entry.cert_sans, ["api.example.com"]);
    assert_eq!(format_agent_time(entry.cert_not_before), "20250102030000Z");
    assert_eq!(format_agent_time(entry.cert_not_after), "20250402235959Z");
    assert_eq!(entry.cert_modified_date, modified);
    assert!(AgentCertificate::from_der(b"nope", AgentCertType::Root, "", "", modified).is_err());
}
