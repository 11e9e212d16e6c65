//! End-to-end checks of the simulator over real TLS: the flows and encodings clients depend on.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use rustls::{
    RootCertStore,
    client::{WebPkiServerVerifier, danger::ServerCertVerifier as _},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject as _},
};
use serde_json::{Value, json};

use super::{csr::tests::p256_csr, *};
use crate::sim::test_support::{Answer, Client};

pub(super) struct Api {
    pub(super) sim: ScmSimulator,
    pub(super) client: Client,
    pub(super) prefix: &'static str,
    pub(super) password: Option<String>,
    login: String,
    customer_uri: String,
}

impl Api {
    pub(super) async fn start(config: ScmSimulatorConfig) -> Self {
        let sim = ScmSimulator::start(config.clone()).await.unwrap();
        let client = Client::new(sim.server.local_addr(), &sim.tls_ca_pem(), None);
        Self {
            sim,
            client,
            prefix: "/api/ssl/v1",
            password: Some(config.password),
            login: config.login,
            customer_uri: config.customer_uri,
        }
    }

    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, hyper::Error> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header("host", "127.0.0.1")
            .header("login", &self.login)
            .header("customerUri", &self.customer_uri);
        if let Some(password) = &self.password {
            builder = builder.header("password", password);
        }
        let body = match body {
            Some(json) => {
                builder = builder.header("content-type", "application/json;charset=UTF-8");
                Bytes::from(serde_json::to_vec(&json).unwrap())
            }
            None => Bytes::new(),
        };
        self.client.send(builder.body(Full::new(body)).unwrap()).await
    }

    pub(super) async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.send(method, path, body).await.unwrap()
    }

    pub(super) async fn enroll(&self, csr: &str, extra: Value) -> Answer {
        let mut body = json!({
            "orgId": 8932, "csr": csr, "certType": 5153, "term": 365,
            "subjAltNames": "", "comments": "k8s-op:test", "externalRequester": "",
            "customFields": [], "numberServers": 0, "serverType": -1,
        });
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        self.call(Method::POST, "/enroll", Some(body)).await
    }

    async fn enroll_id(&self, csr: &str, extra: Value) -> i64 {
        let answer = self.enroll(csr, extra).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        answer.json()["sslId"].as_i64().unwrap()
    }
}

pub(super) fn error_of(answer: &Answer) -> (StatusCode, i64, String) {
    let body = answer.json();
    (
        answer.status,
        body["code"].as_i64().unwrap(),
        body["description"].as_str().unwrap().to_owned(),
    )
}

fn certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Checks that `leaf` chains through `intermediate` to `root_pem` and is valid for `names`.
fn verify_chain(
    root_pem: &str,
    leaf: &CertificateDer<'_>,
    intermediate: &CertificateDer<'_>,
    names: &[&str],
) {
    let mut roots = RootCertStore::empty();
    roots.add(certificates(root_pem.as_bytes()).remove(0)).unwrap();
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        rustls::crypto::ring::default_provider().into(),
    )
    .build()
    .unwrap();
    for name in names {
        verifier
            .verify_server_cert(
                leaf,
                std::slice::from_ref(intermediate),
                &ServerName::try_from(*name).unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap();
    }
}

#[tokio::test]
async fn enroll_is_pending_then_issues_a_verifiable_chain() {
    let api = Api::start(ScmSimulatorConfig::default()).await;
    let csr = p256_csr("app.example.com", &[]);
    let enrolled = api
        .enroll(
            &csr,
            json!({"subjAltNames": "app.example.com, 10.0.0.7,ops@example.com"}),
        )
        .await;
    assert_eq!(enrolled.status, StatusCode::OK);
    let body = enrolled.json();
    let ssl_id = body["sslId"].as_i64().unwrap();
    assert_eq!(ssl_id, 1000);
    let renew_id = body["renewId"].as_str().unwrap();
    assert_eq!(renew_id.len(), 20);

    // Two pending collects (the default), with the documented -1400.
    for _ in 0..2 {
        let pending = api
            .call(Method::GET, &format!("/collect/{ssl_id}?format=x509"), None)
            .await;
        assert_eq!(
            error_of(&pending),
            (
                StatusCode::BAD_REQUEST,
                -1400,
                "The request is being processed by Sectigo.".into()
            )
        );
        assert_eq!(pending.headers["content-type"], "application/json");
    }
    let details = api.call(Method::GET, &format!("/{ssl_id}"), None).await.json();
    assert_eq!(details["status"], "Issued");
    assert_eq!(details["commonName"], "app.example.com");
    assert_eq!(
        details["subjectAlternativeNames"],
        json!(["app.example.com", "10.0.0.7", "ops@example.com"])
    );
    assert_eq!(details["keyType"], "EC - P-256");
    assert!(
        details.get("externalRequester").is_none(),
        "empty fields are omitted"
    );
    let parsed = csr::ParsedCsr::parse(&csr).unwrap();
    assert_eq!(details["csrDetails"]["sha256Hash"], parsed.sha256);
    assert_eq!(details["csrDetails"]["md5Hash"], parsed.md5);
    assert!(
        details["csrDetails"]["sha256Hash"]
            .as_str()
            .unwrap()
            .chars()
            .all(|c| !c.is_ascii_lowercase())
    );
    let serial = details["serialNumber"].as_str().unwrap();
    assert_eq!(serial.len(), 16 * 3 - 1);
    assert!(
        serial
            .chars()
            .all(|c| c == ':' || c.is_ascii_digit() || c.is_ascii_uppercase())
    );
    let expires = details["expires"].as_str().unwrap();
    assert_eq!(expires.len(), 10);
    assert_eq!(&expires[2..3], "/");

    let collected = api
        .call(Method::GET, &format!("/collect/{ssl_id}/x509"), None)
        .await;
    assert_eq!(collected.status, StatusCode::OK);
    assert_eq!(
        collected.headers["content-type"],
        "application/octet-stream;charset=UTF-8"
    );
    assert!(
        collected.headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"")
    );
    let chain = certificates(&collected.body);
    assert_eq!(chain.len(), 3);
    let (leaf, intermediate) = (&chain[2], &chain[1]);
    let fingerprint = csr::sha256_lower(leaf);
    assert_eq!(details["certificateDetails"]["sha256Hash"], fingerprint);

    verify_chain(
        &api.sim.issuing_root_pem(),
        leaf,
        intermediate,
        &["app.example.com", "10.0.0.7"],
    );

    let stats = api.sim.stats();
    assert_eq!(stats.requests["enroll"], 1);
    assert_eq!(stats.requests["collect"], 3);
    assert_eq!(stats.orders_per_csr[&parsed.sha256_lower()], 1);
    assert_eq!(stats.orders[0].serial_number.as_deref(), Some(serial));
    api.sim.shutdown().await;
}

#[tokio::test]
async fn enroll_validation_uses_documented_codes() {
    let api = Api::start(ScmSimulatorConfig {
        mandatory_custom_fields: vec!["owner".into()],
        validated_domains: Some(vec!["example.com".into()]),
        ..ScmSimulatorConfig::default()
    })
    .await;
    let csr = p256_csr("app.example.com", &[]);
    let owner = json!([{"name": "owner", "value": "team-a"}]);
    let cases = [
        (
            json!({"orgId": 1, "customFields": owner}),
            -639,
            "Supplied orgid invalid..",
        ),
        (
            json!({"csr": "", "customFields": owner}),
            -7,
            "csr is required but missing.",
        ),
        (
            json!({"csr": "%%%", "customFields": owner}),
            -9,
            "The CSR is not valid Base-64 data!",
        ),
        (
            json!({"certType": 1, "customFields": owner}),
            -39,
            "The certificate profile id is invalid!",
        ),
        (
            json!({"term": 730, "customFields": owner}),
            -36,
            "The validity period (term) is invalid for this certificate profile.",
        ),
        (json!({}), -62, "Missing mandatory custom field!"),
        (
            json!({"subjAltNames": "www.other.org", "customFields": owner}),
            -107,
            "Domain Control Validation is either incomplete or expired for www.other.org. Please complete it \
             before requesting a certificate.",
        ),
    ];
    for (extra, code, message) in cases {
        let answer = api.enroll(&csr, extra.clone()).await;
        assert_eq!(
            error_of(&answer),
            (StatusCode::BAD_REQUEST, code, message.to_owned()),
            "{extra}"
        );
    }
    let too_many: Vec<String> = (0..101).map(|i| format!("h{i}.example.com")).collect();
    let answer = api
        .enroll(
            &csr,
            json!({"subjAltNames": too_many.join(","), "customFields": owner}),
        )
        .await;
    assert_eq!(error_of(&answer).1, -1601);
    assert_eq!(
        api.enroll(
            &csr,
            json!({"subjAltNames": "*.app.example.com", "customFields": owner})
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(api.sim.stats().orders.len(), 1, "failed enrolls place no order");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn authentication_failures_are_401_unknown_user() {
    let mut api = Api::start(ScmSimulatorConfig::default()).await;
    api.password = Some("wrong".into());
    let answer = api.call(Method::GET, "/types", None).await;
    assert_eq!(
        error_of(&answer),
        (StatusCode::UNAUTHORIZED, -16, "Unknown user".into())
    );
    assert_eq!(answer.headers["content-type"], "application/json");
    // Certificate login without a certificate.
    api.prefix = "/private/api/ssl/v1";
    api.password = None;
    assert_eq!(
        api.call(Method::GET, "/types", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    // With one, on the Sectigo prefix.
    let (cert, key) = api.sim.issue_client_certificate("api-admin");
    api.client = Client::new(
        api.sim.server.local_addr(),
        &api.sim.tls_ca_pem(),
        Some((&cert, &key)),
    );
    let types = api.call(Method::GET, "/types/", None).await;
    assert_eq!(types.status, StatusCode::OK);
    assert_eq!(types.json()[0]["terms"], json!([90, 365]));
    // A certificate for somebody else does not log in as api-admin.
    let (cert, key) = api.sim.issue_client_certificate("intruder");
    api.client = Client::new(
        api.sim.server.local_addr(),
        &api.sim.tls_ca_pem(),
        Some((&cert, &key)),
    );
    assert_eq!(
        api.call(Method::GET, "/types", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn incommon_certificate_login_has_no_api_segment() {
    let mut api = Api::start(ScmSimulatorConfig {
        flavor: ScmFlavor::InCommon,
        ..ScmSimulatorConfig::default()
    })
    .await;
    let (cert, key) = api.sim.issue_client_certificate("api-admin");
    api.client = Client::new(
        api.sim.server.local_addr(),
        &api.sim.tls_ca_pem(),
        Some((&cert, &key)),
    );
    api.password = None;
    api.prefix = "/private/ssl/v1";
    assert_eq!(
        api.call(Method::GET, "/customFields", None).await.status,
        StatusCode::OK
    );
    api.prefix = "/private/api/ssl/v1";
    assert_eq!(
        api.call(Method::GET, "/customFields", None).await.status,
        StatusCode::NOT_FOUND
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn list_pages_with_total_count_and_filters() {
    let api = Api::start(ScmSimulatorConfig {
        pending_collects: 0,
        ..ScmSimulatorConfig::default()
    })
    .await;
    for i in 0..5 {
        api.enroll_id(&p256_csr(&format!("h{i}.page.example.com"), &[]), json!({}))
            .await;
    }
    api.enroll_id(&p256_csr("other.example.org", &[]), json!({}))
        .await;
    let page = api
        .call(
            Method::GET,
            "?commonName=page.example.com&size=2&position=2",
            None,
        )
        .await;
    assert_eq!(page.headers["x-total-count"], "5");
    let items = page.json();
    assert_eq!(
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["sslId"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1002, 1003]
    );
    assert!(items[0]["serialNumber"].is_string());
    let count = api.call(Method::HEAD, "?status=Issued&orgId=8932", None).await;
    assert_eq!(count.headers["x-total-count"], "6");
    assert!(count.body.is_empty());
    let details = api.call(Method::GET, "/1005", None).await.json();
    let serial = details["serialNumber"]
        .as_str()
        .unwrap()
        .replace(':', "")
        .to_lowercase();
    let by_serial = api
        .call(Method::GET, &format!("?serialNumber={serial}"), None)
        .await
        .json();
    assert_eq!(
        by_serial,
        json!([{"sslId": 1005, "commonName": "other.example.org",
        "subjectAlternativeNames": ["other.example.org"], "serialNumber": details["serialNumber"]}])
    );
    let none = api.call(Method::GET, "?status=Revoked", None).await;
    assert_eq!(
        (none.headers["x-total-count"].to_str().unwrap(), none.json()),
        ("0", json!([]))
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn dcv_instructions_derive_from_the_csr_hashes() {
    let api = Api::start(ScmSimulatorConfig::default()).await;
    let csr = p256_csr("dcv.example.com", &["*.dcv.example.com"]);
    let parsed = csr::ParsedCsr::parse(&csr).unwrap();
    let ssl_id = api.enroll_id(&csr, json!({})).await;
    let dcv = api
        .call(Method::GET, &format!("/{ssl_id}/dcv"), None)
        .await
        .json();
    let instructions = dcv["instructions"].as_array().unwrap();
    assert_eq!(instructions.len(), 1, "the wildcard folds into its base domain");
    assert_eq!(instructions[0]["dcvMode"], "CNAME");
    assert_eq!(
        instructions[0]["host"],
        format!("_{}.dcv.example.com.", parsed.md5)
    );
    assert_eq!(
        instructions[0]["point"],
        format!("{}.{}.sectigo.com.", &parsed.sha256[..32], &parsed.sha256[32..])
    );
    assert_eq!(dcv["dcvLog"]["log"][0]["dcvMethod"], "CNAME_CSR_HASH");
    assert_eq!(dcv["dcvLog"]["error"], json!({"code": 0, "description": null}));
    let recheck = api
        .call(Method::POST, &format!("/{ssl_id}/dcv/recheck"), None)
        .await;
    assert_eq!(recheck.status, StatusCode::ACCEPTED);
    let missing = api.call(Method::GET, "/999999/dcv", None).await;
    assert_eq!(
        error_of(&missing),
        (
            StatusCode::BAD_REQUEST,
            -124,
            "Wrong SSL certificate id 999999.".into()
        )
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn drop_after_enroll_records_the_order_and_closes_the_connection() {
    let api = Api::start(ScmSimulatorConfig::default()).await;
    api.sim.set_faults(Faults {
        drop_after_enroll: 1,
        ..Faults::default()
    });
    let csr = p256_csr("crash.example.com", &[]);
    let dropped = api
        .send(
            Method::POST,
            "/enroll",
            Some(json!({
                "orgId": 8932, "csr": csr, "certType": 5153, "term": 90
            })),
        )
        .await;
    assert!(dropped.is_err(), "expected no response, got {dropped:?}");
    let stats = api.sim.stats();
    assert_eq!(stats.orders.len(), 1);
    assert_eq!(
        stats.orders_per_csr[&csr::ParsedCsr::parse(&csr).unwrap().sha256_lower()],
        1
    );
    let found = api.call(Method::GET, "?commonName=crash.example.com", None).await;
    assert_eq!(found.headers["x-total-count"], "1");
    // The budget is used up: the next enroll answers normally.
    assert_eq!(api.enroll(&csr, json!({})).await.status, StatusCode::OK);
    assert_eq!(api.sim.stats().orders_per_csr.values().sum::<u32>(), 2);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn faults_rate_limit_and_server_errors() {
    let api = Api::start(ScmSimulatorConfig::default()).await;
    api.sim.set_faults(Faults {
        rate_limit: Some(RateLimitFault {
            retry_after_secs: 7,
            count: 1,
        }),
        endpoints: Some(vec!["types".into()]),
        ..Faults::default()
    });
    let limited = api.call(Method::GET, "/types", None).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers["retry-after"], "7");
    assert_eq!(api.call(Method::GET, "/types", None).await.status, StatusCode::OK);
    api.sim.set_faults(Faults {
        server_error_rate: 1.0,
        ..Faults::default()
    });
    let failed = api.call(Method::GET, "/customFields", None).await;
    assert!(failed.status.is_server_error());
    assert_eq!(error_of(&failed).1, -2);
    assert_eq!(api.sim.stats().requests["types"], 2);
    api.sim.reset_stats();
    assert!(api.sim.stats().requests.is_empty());
    api.sim.shutdown().await;
}

#[tokio::test]
async fn approval_revocation_renewal_and_replacement() {
    let api = Api::start(ScmSimulatorConfig {
        require_approval: true,
        pending_collects: 0,
        pending_variant: PendingVariant::Code0,
        ..ScmSimulatorConfig::default()
    })
    .await;
    let csr = p256_csr("life.example.com", &[]);
    let ssl_id = api.enroll_id(&csr, json!({})).await;
    let details = api.call(Method::GET, &format!("/{ssl_id}"), None).await.json();
    assert_eq!(details["status"], "Requested");
    let pending = api.call(Method::GET, &format!("/collect/{ssl_id}"), None).await;
    assert_eq!(
        error_of(&pending),
        (StatusCode::BAD_REQUEST, 0, "Being processed by Sectigo".into())
    );
    let early_revoke = api
        .call(
            Method::POST,
            &format!("/revoke/{ssl_id}"),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(error_of(&early_revoke).1, -102);
    let no_message = api
        .call(Method::POST, &format!("/approve/{ssl_id}"), Some(json!({})))
        .await;
    assert_eq!(error_of(&no_message).2, "message is required but missing.");
    let approve = api
        .call(
            Method::POST,
            &format!("/approve/{ssl_id}"),
            Some(json!({"message": "ok"})),
        )
        .await;
    assert_eq!(approve.status, StatusCode::NO_CONTENT);
    let again = api
        .call(
            Method::POST,
            &format!("/approve/{ssl_id}"),
            Some(json!({"message": "ok"})),
        )
        .await;
    assert_eq!(
        error_of(&again).2,
        "Certificate can't be approved cause it has state = Issued"
    );

    // PKCS#7 is the default format.
    let p7 = api.call(Method::GET, &format!("/collect/{ssl_id}"), None).await;
    assert!(p7.text().starts_with("-----BEGIN PKCS7-----\n"));

    // renewById without a CSR reuses the original one.
    let renewed = api
        .call(Method::POST, &format!("/renewById/{ssl_id}"), None)
        .await;
    assert_eq!(renewed.status, StatusCode::OK);
    let new_id = renewed.json()["sslId"].as_i64().unwrap();
    assert_ne!(new_id, ssl_id);
    let original = api.call(Method::GET, &format!("/{ssl_id}"), None).await.json();
    assert_eq!(original["renewed"], true);
    let sha = csr::ParsedCsr::parse(&csr).unwrap().sha256_lower();
    assert_eq!(api.sim.stats().orders_per_csr[&sha], 2);

    api.sim.shutdown().await;
}

#[tokio::test]
async fn replacement_and_revocation() {
    let api = Api::start(ScmSimulatorConfig {
        pending_collects: 0,
        ..ScmSimulatorConfig::default()
    })
    .await;
    let ssl_id = api.enroll_id(&p256_csr("life.example.com", &[]), json!({})).await;
    let early_replace = api
        .call(
            Method::POST,
            "/replace/424242",
            Some(json!({"csr": "x", "reason": "x"})),
        )
        .await;
    assert_eq!(
        error_of(&early_replace).1,
        -9,
        "the body is validated before the id is looked up"
    );

    // Replace puts the same id back into processing with the new CSR.
    let replacement = p256_csr("life.example.com", &[]);
    let no_reason = api
        .call(
            Method::POST,
            &format!("/replace/{ssl_id}"),
            Some(json!({"csr": replacement})),
        )
        .await;
    assert_eq!(error_of(&no_reason).2, "reason is required but missing.");
    let replaced = api
        .call(
            Method::POST,
            &format!("/replace/{ssl_id}"),
            Some(json!({"csr": replacement, "reason": "key rotation"})),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::NO_CONTENT);
    let details = api.call(Method::GET, &format!("/{ssl_id}"), None).await.json();
    assert_eq!(
        details["csrDetails"]["sha256Hash"],
        csr::ParsedCsr::parse(&replacement).unwrap().sha256
    );
    assert_eq!(
        details["status"], "Issued",
        "no pending collects and no delay configured"
    );

    let bad_code = api
        .call(
            Method::POST,
            &format!("/revoke/{ssl_id}"),
            Some(json!({"reasonCode": 2, "reason": "x"})),
        )
        .await;
    assert_eq!(error_of(&bad_code).1, -1601);
    let serial = details["serialNumber"].as_str().unwrap().to_owned();
    let revoke = api
        .call(
            Method::POST,
            &format!("/revoke/serial/{serial}"),
            Some(json!({"reasonCode": 4, "reason": "superseded"})),
        )
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    let twice = api
        .call(
            Method::POST,
            &format!("/revoke/{ssl_id}"),
            Some(json!({"reason": "again"})),
        )
        .await;
    assert_eq!(
        error_of(&twice),
        (
            StatusCode::BAD_REQUEST,
            -159,
            "Your certificate already revoked".into()
        )
    );
    let gone = api
        .call(Method::GET, &format!("/collect/{ssl_id}?format=x509CO"), None)
        .await;
    assert_eq!(error_of(&gone).1, -110);
    let details = api
        .call(Method::GET, &format!("/{ssl_id}?dateFormat=ISO"), None)
        .await
        .json();
    assert_eq!(
        (details["status"].as_str(), details["reasonCode"].as_i64()),
        (Some("Revoked"), Some(4))
    );
    assert_eq!(&details["revoked"].as_str().unwrap()[4..5], "-");
    let bad_format = api
        .call(Method::GET, &format!("/collect/{ssl_id}/p12"), None)
        .await;
    assert_eq!(
        error_of(&bad_format).2,
        "Unknown SSL certificate file format requested: p12"
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn hang_holds_requests_until_shutdown() {
    let api = Api::start(ScmSimulatorConfig::default()).await;
    api.sim.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    let hung = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        api.send(Method::GET, "/types", None),
    )
    .await;
    assert!(hung.is_err(), "a hanging request must not be answered");
    assert_eq!(api.sim.stats().requests["types"], 1);
    tokio::time::timeout(std::time::Duration::from_secs(5), api.sim.shutdown())
        .await
        .expect("shutdown does not wait for hanging requests");
}

#[tokio::test]
async fn control_endpoints_need_no_credentials_and_are_never_faulted() {
    let api = Api::start(ScmSimulatorConfig::default()).await;
    let control = |method: Method, path: &str, body: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    };
    let faults = r#"{"server_error_rate": 1.0, "seed": 3}"#;
    let set = api
        .client
        .send(control(Method::PUT, "/__simulator/faults", faults))
        .await
        .unwrap();
    assert_eq!(set.status, StatusCode::NO_CONTENT);
    assert!(
        api.call(Method::GET, "/types", None)
            .await
            .status
            .is_server_error()
    );
    let stats = api
        .client
        .send(control(Method::GET, "/__simulator/stats", ""))
        .await
        .unwrap();
    assert_eq!(stats.status, StatusCode::OK);
    assert_eq!(stats.json()["requests"], json!({"types": 1}));
    let reset = api
        .client
        .send(control(Method::POST, "/__simulator/reset", ""))
        .await
        .unwrap();
    assert_eq!(reset.status, StatusCode::NO_CONTENT);
    assert!(api.sim.stats().requests.is_empty());
    api.sim.shutdown().await;
}

/// The strict reading (`ScmReading`): InCommon certificate login on 001's prefix, collect
/// before issuance answering -130, lists newest first, and renewals that keep the initial CSR.
#[tokio::test]
async fn strict_reading_takes_the_other_reading_of_each_ambiguous_seed() {
    let mut api = Api::start(ScmSimulatorConfig {
        flavor: ScmFlavor::InCommon,
        reading: ScmReading::Strict,
        pending_collects: 1,
        ..ScmSimulatorConfig::default()
    })
    .await;
    let first_csr = p256_csr("strict.example.com", &[]);
    let first = api.enroll_id(&first_csr, json!({})).await;
    let second = api
        .enroll_id(&p256_csr("strict.example.com", &[]), json!({}))
        .await;
    let pending = api.call(Method::GET, &format!("/collect/{first}"), None).await;
    assert_eq!(
        error_of(&pending),
        (
            StatusCode::BAD_REQUEST,
            -130,
            "SSL state is not 'ISSUED': Applied".into()
        )
    );
    let listed: Vec<i64> = api
        .call(Method::GET, "?commonName=strict.example.com", None)
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["sslId"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [second, first]);
    assert_eq!(
        api.call(Method::GET, &format!("/collect/{first}"), None)
            .await
            .status,
        StatusCode::OK
    );
    // A renewal with a new CSR is an order for the initial CSR all the same.
    let renewed = api
        .call(
            Method::POST,
            &format!("/renewById/{first}"),
            Some(json!({"csr": p256_csr("strict.example.com", &[])})),
        )
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.text());
    let sha = csr::ParsedCsr::parse(&first_csr).unwrap().sha256_lower();
    assert_eq!(api.sim.stats().orders_per_csr[&sha], 2);

    let (cert, key) = api.sim.issue_client_certificate("api-admin");
    api.client = Client::new(
        api.sim.server.local_addr(),
        &api.sim.tls_ca_pem(),
        Some((&cert, &key)),
    );
    api.password = None;
    api.prefix = "/private/api/ssl/v1";
    assert_eq!(
        api.call(Method::GET, "/customFields", None).await.status,
        StatusCode::OK
    );
    api.prefix = "/private/ssl/v1";
    assert_eq!(
        api.call(Method::GET, "/customFields", None).await.status,
        StatusCode::NOT_FOUND
    );
    api.sim.shutdown().await;
}
