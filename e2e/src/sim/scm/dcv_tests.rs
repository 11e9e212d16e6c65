//! The DCV and Domain APIs over real TLS, with real checks: the simulator fetches validation
//! files from a small HTTP(S) server started here and asks a real BIND9 for CNAME and TXT
//! records.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use hickory_client::proto::rr::{
    Name, RData,
    rdata::{CNAME, TXT},
};
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{
    csr::tests::p256_csr,
    tests::{Api, error_of},
    *,
};
use crate::{
    dns::Bind9,
    sim::{Handler, HttpResponse, TestCa, TlsServer, TlsServerOptions, test_support::Answer},
};

/// What a domain's web server serves under `/.well-known/pki-validation/`, and the `Host`
/// headers it was asked with.
#[derive(Default)]
struct Solver {
    files: Mutex<HashMap<String, String>>,
    hosts: Mutex<Vec<String>>,
}

impl Solver {
    /// Serves `body` at the path of `url` (a start answer's `url`).
    fn publish(&self, url: &str, body: &str) {
        let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
        self.files.lock().unwrap().insert(path, body.to_owned());
    }

    fn hosts(&self) -> Vec<String> {
        self.hosts.lock().unwrap().clone()
    }
}

impl Handler for Solver {
    async fn handle(&self, request: Request<Incoming>) -> HttpResponse {
        let host = request
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.hosts.lock().unwrap().push(host);
        let body = self.files.lock().unwrap().get(request.uri().path()).cloned();
        let mut response = Response::new(Full::new(Bytes::from(body.clone().unwrap_or_default())));
        if body.is_none() {
            *response.status_mut() = StatusCode::NOT_FOUND;
        }
        response
    }
}

/// Serves `solver` over plain HTTP on a free loopback port.
async fn serve_http(solver: Arc<Solver>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let solver = Arc::clone(&solver);
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let solver = Arc::clone(&solver);
                    async move { Ok::<_, Infallible>(solver.handle(request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// Serves `solver` over HTTPS with a certificate for loopback only: not valid for any domain.
async fn serve_https(solver: Arc<Solver>) -> TlsServer {
    let ca = TestCa::generate("Solver TLS").unwrap();
    let (certificate_chain, private_key) = ca.loopback_server_identity().unwrap();
    let options = TlsServerOptions {
        certificate_chain,
        private_key,
        client_roots: Vec::new(),
        require_client_certificate: false,
    };
    TlsServer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        options,
        solver,
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

impl Api {
    async fn dcv(&self, path: &str, domain: &str) -> Answer {
        self.call(
            Method::POST,
            &format!("/api/dcv/v1/validation/{path}"),
            Some(json!({ "domain": domain })),
        )
        .await
    }

    async fn status(&self, domain: &str) -> Value {
        let answer = self
            .call(
                Method::POST,
                "/api/dcv/v2/validation/status",
                Some(json!({ "domain": domain })),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(answer.headers["content-type"], "application/json");
        answer.json()
    }

    async fn ok(&self, path: &str, domain: &str) -> Value {
        let answer = self.dcv(path, domain).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
        answer.json()
    }

    /// `GET /api/connector/v1/dns{path}`.
    async fn connector(&self, path: &str) -> Answer {
        self.call(Method::GET, &format!("/api/connector/v1/dns{path}"), None)
            .await
    }

    /// `submit/domain/cname`, with the connector fields that are given.
    async fn submit_cname(&self, domain: &str, agent: Option<&str>, provider: Option<&str>) -> Answer {
        let mut body = json!({ "domain": domain });
        if let Some(agent) = agent {
            body["dnsAgentUUID"] = agent.into();
        }
        if let Some(provider) = provider {
            body["dnsProviderName"] = provider.into();
        }
        self.call(
            Method::POST,
            "/api/dcv/v1/validation/submit/domain/cname",
            Some(body),
        )
        .await
    }

    /// Enrolls `name` (as CN); the error code and description when refused.
    async fn enroll_error(&self, name: &str) -> Option<(i64, String)> {
        let body = json!({
            "orgId": 8932, "csr": p256_csr(name, &[]), "certType": 5153, "term": 365,
            "subjAltNames": "", "comments": "", "externalRequester": "", "customFields": [],
        });
        let answer = self.call(Method::POST, "/api/ssl/v1/enroll", Some(body)).await;
        (answer.status != StatusCode::OK).then(|| {
            let (_, code, description) = error_of(&answer);
            (code, description)
        })
    }
}

async fn start(config: ScmSimulatorConfig) -> Api {
    let mut api = Api::start(config).await;
    api.prefix = "";
    api
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

/// The §3.2 fields of a submitted HTTP order after a failed check, sorted.
const SUBMITTED_HTTP_FIELDS: [&str; 11] = [
    "firstLine",
    "lastCheck",
    "nextCheck",
    "orderBackendId",
    "orderExpiration",
    "orderMode",
    "orderStatus",
    "secondLine",
    "status",
    "submittedDate",
    "url",
];

#[tokio::test]
async fn http_validation_runs_the_state_machine_against_a_real_web_server() {
    let solver = Arc::new(Solver::default());
    let (web, web_task) = serve_http(Arc::clone(&solver)).await;
    let api = start(ScmSimulatorConfig {
        domains: vec![SimDomain::new("dcv-http.test")],
        dcv_http_address: Some(web),
        ..ScmSimulatorConfig::default()
    })
    .await;
    let domain = "dcv-http.test";

    // T0 (spec §8.3 "New domain").
    assert_eq!(
        api.status(domain).await,
        json!({"status": "NOT_VALIDATED", "orderStatus": "NOT_INITIATED"})
    );
    assert_eq!(
        api.enroll_error("app.dcv-http.test").await,
        Some((
            -107,
            "Domain Control Validation is either incomplete or expired for app.dcv-http.test. Please \
             complete it before requesting a certificate."
                .into()
        ))
    );
    // T4 needs a start of the same mode.
    let early = api.dcv("submit/domain/http", domain).await;
    assert_eq!(
        error_of(&early),
        (
            StatusCode::BAD_REQUEST,
            -724,
            "The request for 'dcv-http.test' cannot be processed since it's domain validation status \
             is NOT_INITIATED."
                .into()
        )
    );

    // T1.
    let started = api.ok("start/domain/http", domain).await;
    assert_eq!(keys(&started), ["firstLine", "secondLine", "url"]);
    let url = started["url"].as_str().unwrap();
    assert!(
        url.starts_with("http://dcv-http.test/.well-known/pki-validation/"),
        "{url}"
    );
    assert_eq!(started["secondLine"], "sectigo.com");
    let first_line = started["firstLine"].as_str().unwrap();
    assert_eq!(first_line.len(), 64);
    let status = api.status(domain).await;
    assert_eq!(status["orderStatus"], "AWAITING_SUBMISSION");
    assert_eq!(status["orderMode"], "HTTP");
    assert_eq!(status["url"], url);
    // The pair is stable per domain: a second start answers the same material.
    assert_eq!(api.ok("start/domain/http", domain).await, started);

    // Wrong content: the check on submit fails (T8) and the order stays submitted.
    solver.publish(url, "not the hash\nsectigo.com\n");
    let submitted = api.ok("submit/domain/http", domain).await;
    assert_eq!(submitted["status"], "NOT_VALIDATED");
    assert_eq!(submitted["orderStatus"], "SUBMITTED");
    assert_eq!(submitted["message"], "Submitted successfully");
    let backend_id = submitted["orderBackendId"].as_str().unwrap().to_owned();
    assert!(
        backend_id.parse::<u64>().is_ok(),
        "a decimal string: {backend_id}"
    );
    let status = api.status(domain).await;
    assert_eq!(keys(&status), SUBMITTED_HTTP_FIELDS);
    assert_eq!(status["orderStatus"], "SUBMITTED");
    assert!(status["orderExpiration"].as_str().unwrap().ends_with('Z'));
    assert_eq!(status["submittedDate"].as_str().unwrap().len(), 10);
    let stats = api.sim.stats();
    assert_eq!(stats.dcv_http_fetches, 1);
    let check = &stats.dcv_checks[0];
    assert!(!check.passed);
    assert!(check.target.contains(&web.to_string()), "{check:?}");
    assert!(check.detail.contains("unexpected content"), "{check:?}");
    assert_eq!(
        solver.hosts(),
        ["dcv-http.test"],
        "fetched with the domain as Host"
    );
    // T1 is refused while submitted.
    assert_eq!(error_of(&api.dcv("start/domain/http", domain).await).1, -724);

    // The right file, then sync?force=true: T7.
    solver.publish(url, &format!("{first_line}\nsectigo.com"));
    let synced = api
        .call(
            Method::POST,
            "/api/dcv/v1/validation/sync?force=true",
            Some(json!({ "domain": domain })),
        )
        .await
        .json();
    assert_eq!(synced["status"], "VALIDATED");
    assert_eq!(synced["orderStatus"], "NOT_INITIATED");
    let status = api.status(domain).await;
    assert_eq!(
        keys(&status),
        ["expirationDate", "orderStatus", "status", "validationDate"],
        "validated at rest: {status}"
    );
    assert_eq!(api.sim.stats().dcv_http_fetches, 2);
    assert!(api.sim.stats().dcv_checks[1].passed);
    assert_eq!(api.enroll_error("app.dcv-http.test").await, None);
    api.sim.shutdown().await;
    web_task.abort();
}

#[tokio::test]
async fn validations_are_listed_cleared_and_deleted() {
    let api = start(ScmSimulatorConfig {
        domains: vec![SimDomain {
            validated: true,
            ..SimDomain::new("dcv-http.test")
        }],
        ..ScmSimulatorConfig::default()
    })
    .await;
    let domain = "dcv-http.test";
    let status = api.status(domain).await;
    assert_eq!(status["status"], "VALIDATED");
    // The v1 status is the same body.
    assert_eq!(api.ok("status", domain).await, status);
    assert_eq!(api.enroll_error("*.dcv-http.test").await, None);
    assert_eq!(
        api.enroll_error("elsewhere.test").await,
        Some((-1010, "Domain 'elsewhere.test' is not allowed.".into()))
    );

    let listed = api
        .call(
            Method::GET,
            "/api/dcv/v1/validation?size=10&position=0&org=&department=&domain=DCV-HTTP&expiresIn=&dcvStatus=&orderStatus=",
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    assert_eq!(listed.headers["x-total-count"], "1");
    assert_eq!(
        listed.json(),
        json!([{
            "domain": domain, "dcvStatus": "VALIDATED", "dcvMethod": "HTTP_CSR_HASH",
            "dcvOrderStatus": "NOT_INITIATED", "dcvOrderMethod": "HTTP",
            "expirationDate": status["expirationDate"],
        }])
    );

    // T11 keeps the validation; T12 drops it and enrollment is refused again.
    let cleared = api.ok("clear", domain).await;
    assert_eq!(
        cleared,
        json!({"status": "VALIDATED", "orderStatus": "NOT_INITIATED",
               "message": "DCV status: VALIDATED; DCV order status: NOT_INITIATED"})
    );
    let deleted = api.dcv("delete", domain).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert!(deleted.body.is_empty());
    assert_eq!(
        api.status(domain).await,
        json!({"status": "NOT_VALIDATED", "orderStatus": "NOT_INITIATED"})
    );
    assert_eq!(
        api.enroll_error("app.dcv-http.test").await.map(|e| e.0),
        Some(-107)
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn checks_repeat_at_next_check_and_validations_expire_on_the_dcv_clock() {
    let solver = Arc::new(Solver::default());
    let (web, web_task) = serve_http(Arc::clone(&solver)).await;
    let api = start(ScmSimulatorConfig {
        domains: vec![SimDomain::new("clock.test")],
        dcv_http_address: Some(web),
        dcv_validity: Duration::from_secs(10 * 24 * 3600),
        ..ScmSimulatorConfig::default()
    })
    .await;
    let domain = "clock.test";
    let started = api.ok("start/domain/http", domain).await;
    let url = started["url"].as_str().unwrap();
    api.ok("submit/domain/http", domain).await;
    assert_eq!(api.sim.stats().dcv_http_fetches, 1, "checked on submit");
    solver.publish(
        url,
        &format!("{}\nsectigo.com\n", started["firstLine"].as_str().unwrap()),
    );

    // Not due yet: reading the status does not check again.
    assert_eq!(api.status(domain).await["orderStatus"], "SUBMITTED");
    assert_eq!(api.sim.stats().dcv_http_fetches, 1);
    // At nextCheck (60 min later by default) the next read checks, and succeeds.
    let advanced = api
        .call(Method::POST, "/__simulator/dcv/advance?seconds=3600", None)
        .await;
    assert_eq!(advanced.status, StatusCode::NO_CONTENT);
    let status = api.status(domain).await;
    assert_eq!(status["status"], "VALIDATED", "{status}");
    assert_eq!(api.sim.stats().dcv_http_fetches, 2);

    // T10 after the configured validity.
    api.sim.advance_dcv_clock(Duration::from_secs(10 * 24 * 3600 + 1));
    let status = api.status(domain).await;
    assert_eq!(status["status"], "EXPIRED");
    assert!(status.get("expirationDate").is_some(), "dates are kept");
    assert_eq!(api.enroll_error("www.clock.test").await.map(|e| e.0), Some(-107));
    let expiring = api
        .call(
            Method::GET,
            "/api/dcv/v1/validation?expiresIn=1&dcvStatus=EXPIRED",
            None,
        )
        .await;
    assert_eq!(expiring.headers["x-total-count"], "1");

    // T9: a submitted order that nobody validates lapses after 30 days.
    solver.publish(url, "gone");
    api.ok("start/domain/http", domain).await;
    api.ok("submit/domain/http", domain).await;
    api.sim.advance_dcv_clock(Duration::from_secs(31 * 24 * 3600));
    let status = api.status(domain).await;
    assert_eq!(status["orderStatus"], "REJECTED", "{status}");
    assert_eq!(status["status"], "EXPIRED");
    // A lapsed order can be started again.
    assert_eq!(api.ok("start/domain/http", domain).await["url"], url);
    api.sim.shutdown().await;
    web_task.abort();
}

#[tokio::test]
async fn https_validation_fetches_over_tls_without_verifying_the_certificate() {
    let solver = Arc::new(Solver::default());
    let web = serve_https(Arc::clone(&solver)).await;
    let api = start(ScmSimulatorConfig {
        domains: vec![SimDomain::new("dcv-https.test")],
        dcv_https_address: Some(web.local_addr()),
        ..ScmSimulatorConfig::default()
    })
    .await;
    let domain = "dcv-https.test";
    let started = api.ok("start/domain/https", domain).await;
    let url = started["url"].as_str().unwrap();
    assert!(url.starts_with("https://dcv-https.test/.well-known/pki-validation/"));
    // An HTTP submit does not match an HTTPS start.
    assert_eq!(error_of(&api.dcv("submit/domain/http", domain).await).1, -724);
    solver.publish(
        url,
        &format!("{}\r\nsectigo.com\r\n", started["firstLine"].as_str().unwrap()),
    );
    api.ok("submit/domain/https", domain).await;
    let status = api.status(domain).await;
    assert_eq!(status["status"], "VALIDATED", "{status}");
    let stats = api.sim.stats();
    assert_eq!(stats.dcv_http_fetches, 1);
    assert_eq!(stats.dcv_checks[0].method, "HTTPS");
    assert!(stats.dcv_checks[0].target.starts_with("https://dcv-https.test/"));
    assert_eq!(solver.hosts(), ["dcv-https.test"]);
    let listed = api.call(Method::GET, "/api/dcv/v1/validation", None).await.json();
    assert_eq!(listed[0]["dcvMethod"], "HTTPS_CSR_HASH");
    api.sim.shutdown().await;
    web.shutdown().await;
}

#[tokio::test]
async fn cname_and_txt_validation_ask_a_real_bind9() {
    let bind = Bind9::start().await.unwrap();
    let domain = "pki-test.example";
    let api = start(ScmSimulatorConfig {
        domains: vec![SimDomain::new(domain)],
        dcv_dns_server: Some(bind.addr()),
        ..ScmSimulatorConfig::default()
    })
    .await;

    // CNAME: start, submit before publishing (fails), publish, sync.
    let started = api.ok("start/domain/cname", domain).await;
    assert_eq!(keys(&started), ["host", "point"]);
    let host = started["host"].as_str().unwrap();
    let point = started["point"].as_str().unwrap();
    assert!(
        host.starts_with('_') && host.ends_with(".pki-test.example."),
        "{host}"
    );
    assert!(point.ends_with(".sectigo.com."), "{point}");
    api.ok("submit/domain/cname", domain).await;
    assert_eq!(api.status(domain).await["orderStatus"], "SUBMITTED");
    bind.add(
        host,
        RData::CNAME(CNAME(Name::from_ascii(point.to_uppercase()).unwrap())),
    )
    .await
    .unwrap();
    let synced = api
        .call(
            Method::POST,
            "/api/dcv/v1/validation/sync?force=true",
            Some(json!({ "domain": domain })),
        )
        .await
        .json();
    assert_eq!(synced["status"], "VALIDATED", "{synced}");
    let stats = api.sim.stats();
    assert_eq!(stats.dcv_dns_queries, 2);
    assert!(!stats.dcv_checks[0].passed);
    assert!(stats.dcv_checks[1].passed, "{:?}", stats.dcv_checks[1]);
    assert!(
        stats.dcv_checks[1].target.contains(&bind.addr().to_string()),
        "{:?}",
        stats.dcv_checks[1]
    );

    // TXT: submit first (no start), the value comes back; only that exact value validates.
    assert_eq!(api.dcv("delete", domain).await.status, StatusCode::OK);
    let submitted = api.ok("submit/domain/txt", domain).await;
    assert_eq!(submitted["host"], "_pki-validation.pki-test.example.");
    let value = submitted["point"].as_str().unwrap().to_owned();
    assert_eq!(value.len(), 32);
    let status = api.status(domain).await;
    assert_eq!(status["orderMode"], "TXT");
    assert_eq!(status["point"], value.as_str());
    let txt_host = "_pki-validation.pki-test.example.";
    bind.add(txt_host, RData::TXT(TXT::new(vec!["someone-else".to_owned()])))
        .await
        .unwrap();
    let force = || {
        api.call(
            Method::POST,
            "/api/dcv/v1/validation/sync?force=true",
            Some(json!({ "domain": domain })),
        )
    };
    assert_eq!(force().await.json()["status"], "NOT_VALIDATED");
    bind.add(txt_host, RData::TXT(TXT::new(vec![value.clone()])))
        .await
        .unwrap();
    let synced = force().await.json();
    assert_eq!(synced["status"], "VALIDATED", "{synced}");
    let listed = api.call(Method::GET, "/api/dcv/v1/validation", None).await.json();
    assert_eq!(listed[0]["dcvMethod"], "DNSTXT_RANDOM_VALUE");
    // On submit (before the record), after "someone-else", after the value.
    assert_eq!(api.sim.stats().dcv_dns_queries, 5);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn dns_checks_without_a_server_fail_and_say_why() {
    let api = start(ScmSimulatorConfig {
        domains: vec![SimDomain::new("nodns.test")],
        ..ScmSimulatorConfig::default()
    })
    .await;
    api.ok("submit/domain/txt", "nodns.test").await;
    let stats = api.sim.stats();
    assert!(!stats.dcv_checks[0].passed);
    assert!(
        stats.dcv_checks[0].detail.contains("no DNS server"),
        "{:?}",
        stats.dcv_checks[0]
    );
    assert_eq!(api.status("nodns.test").await["orderStatus"], "SUBMITTED");
    api.sim.shutdown().await;
}

/// The approver clicks the link through the control endpoint.
async fn click(api: &Api, domain: &str) -> StatusCode {
    api.call(
        Method::POST,
        &format!("/__simulator/dcv/click?domain={domain}"),
        None,
    )
    .await
    .status
}

#[tokio::test]
async fn email_validation_completes_when_the_link_is_clicked() {
    let api = start(ScmSimulatorConfig {
        domains: vec![SimDomain::new("mail.test"), SimDomain::new("other.test")],
        ..ScmSimulatorConfig::default()
    })
    .await;
    let domain = "mail.test";
    let listed = api.ok("start/domain/email", domain).await;
    let emails: Vec<&str> = listed["emails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(emails.contains(&"hostmaster@mail.test"), "{listed}");
    assert_eq!(listed["dcvEmails"][0]["domainName"], domain);
    assert_eq!(listed["dcvEmails"][0]["adminEmails"].as_array().unwrap().len(), 5);
    // start/domain/email does not start an order.
    assert_eq!(api.status(domain).await["orderStatus"], "NOT_INITIATED");
    let bulk = api
        .call(
            Method::POST,
            "/api/dcv/v1/validation/start/domain/email",
            Some(json!({ "domains": ["mail.test", "other.test"] })),
        )
        .await
        .json();
    assert_eq!(bulk["emails"], json!([]), "no address is common to both");
    assert_eq!(bulk["dcvEmails"].as_array().unwrap().len(), 2);

    let submit = |email: &str| {
        api.call(
            Method::POST,
            "/api/dcv/v1/validation/submit/domain/email",
            Some(json!({ "domain": domain, "email": email })),
        )
    };
    assert_eq!(
        error_of(&submit("someone@elsewhere.test").await),
        (
            StatusCode::BAD_REQUEST,
            -1601,
            "Field 'email' has invalid value.".into()
        )
    );
    assert_eq!(error_of(&submit("").await).1, -7);
    let submitted = submit("hostmaster@mail.test").await;
    assert_eq!(submitted.status, StatusCode::OK, "{}", submitted.text());
    let reference = submitted.json()["emailValidationReferenceNumber"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = api.status(domain).await;
    assert_eq!(status["orderMode"], "EMAIL");
    assert_eq!(status["validationEmail"], "hostmaster@mail.test");
    assert_eq!(status["emailValidationReferenceNumber"], reference.as_str());
    assert_eq!(status["status"], "NOT_VALIDATED");
    assert_eq!(api.enroll_error("mail.test").await.map(|e| e.0), Some(-107));

    assert_eq!(
        click(&api, "other.test").await,
        StatusCode::CONFLICT,
        "no email order there"
    );
    assert_eq!(click(&api, "nowhere.test").await, StatusCode::NOT_FOUND);
    assert_eq!(click(&api, domain).await, StatusCode::NO_CONTENT);
    let status = api.status(domain).await;
    assert_eq!(status["status"], "VALIDATED", "{status}");
    assert_eq!(status["orderStatus"], "NOT_INITIATED");
    assert_eq!(api.enroll_error("mail.test").await, None);
    assert_eq!(
        api.sim.click_email_link(domain),
        Err(ClickError::NoEmailOrder(domain.into()))
    );
    let listed = api
        .call(Method::GET, "/api/dcv/v1/validation?domain=mail", None)
        .await
        .json();
    assert_eq!(listed[0]["dcvMethod"], "EMAIL");

    // Bulk submit: one order id for both domains.
    let bulk = api
        .call(
            Method::POST,
            "/api/dcv/v1/validation/submit-bulk/domain/email",
            Some(json!({ "domains": ["mail.test", "other.test"], "email": "admin@mail.test" })),
        )
        .await;
    assert_eq!(error_of(&bulk).1, -1601, "not an address of other.test");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn dcv_refusals_use_the_documented_codes() {
    let api = start(ScmSimulatorConfig {
        domains: vec![
            SimDomain::new("good.test"),
            SimDomain {
                active: false,
                ..SimDomain::new("paused.test")
            },
            SimDomain::new("www.good.test"),
        ],
        ..ScmSimulatorConfig::default()
    })
    .await;
    let cases = [
        ("", -7, "domain is required but missing."),
        ("ab", -1601, "Field 'domain' has invalid value."),
        ("bad name.test", -732, "Invalid domain name."),
        ("unknown.test", -727, "The domain 'unknown.test' does not exist."),
        ("paused.test", -715, "The domain 'paused.test' is inactive."),
        (
            "www.good.test",
            -723,
            "www.good.test is not a high-level domain. Only high-level domains can be validated.",
        ),
        (
            "api.good.test",
            -723,
            "api.good.test is not a high-level domain. Only high-level domains can be validated.",
        ),
        (
            "*.good.test",
            -723,
            "*.good.test is not a high-level domain. Only high-level domains can be validated.",
        ),
    ];
    for (domain, code, description) in cases {
        let answer = api.dcv("start/domain/http", domain).await;
        assert_eq!(
            error_of(&answer),
            (StatusCode::BAD_REQUEST, code, description.to_owned()),
            "{domain:?}"
        );
    }
    assert_eq!(
        api.enroll_error("paused.test").await,
        Some((-715, "The domain 'paused.test' is inactive.".into()))
    );
    // A registered sub-domain shows its parent's state in the list.
    let listed = api
        .call(Method::GET, "/api/dcv/v1/validation?domain=good.test", None)
        .await;
    assert_eq!(listed.headers["x-total-count"], "2");
    api.sim.shutdown().await;

    for (config, code, description) in [
        (
            ScmSimulatorConfig {
                dcv_access: DcvAccess::DisabledForCustomer,
                ..ScmSimulatorConfig::default()
            },
            -1608,
            "DCV is not enabled for this customer.",
        ),
        (
            ScmSimulatorConfig {
                dcv_access: DcvAccess::NotPrivileged,
                ..ScmSimulatorConfig::default()
            },
            -3,
            "You are not authorized to perform DCV validation.",
        ),
    ] {
        let api = start(ScmSimulatorConfig {
            domains: vec![SimDomain::new("good.test")],
            ..config
        })
        .await;
        let answer = api.call(Method::GET, "/api/dcv/v1/validation", None).await;
        assert_eq!(
            error_of(&answer),
            (StatusCode::BAD_REQUEST, code, description.to_owned())
        );
        api.sim.shutdown().await;
    }

    let mut api = start(ScmSimulatorConfig::default()).await;
    api.password = Some("wrong".into());
    let answer = api.dcv("status", "good.test").await;
    assert_eq!(
        error_of(&answer),
        (StatusCode::UNAUTHORIZED, -16, "Unknown user".into())
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn domain_api_lists_details_creates_suspends_and_deletes() {
    let api = start(ScmSimulatorConfig {
        domains: vec![
            SimDomain {
                validated: true,
                ..SimDomain::new("alpha.test")
            },
            SimDomain::new("beta.test"),
            SimDomain {
                active: false,
                ..SimDomain::new("gamma.test")
            },
        ],
        ..ScmSimulatorConfig::default()
    })
    .await;
    let listed = api
        .call(Method::GET, "/api/domain/v1?size=2&position=1", None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.headers["x-total-count"], "3");
    assert_eq!(
        listed.json(),
        json!([{"id": 2002, "name": "beta.test"}, {"id": 2003, "name": "gamma.test"}])
    );
    let inactive = api.call(Method::GET, "/api/domain/v1?state=inactive", None).await;
    assert_eq!(inactive.json(), json!([{"id": 2003, "name": "gamma.test"}]));
    let named = api
        .call(Method::GET, "/api/domain/v1?name=alpha.test", None)
        .await;
    assert_eq!(named.json(), json!([{"id": 2001, "name": "alpha.test"}]));
    let count = api.call(Method::GET, "/api/domain/v1/count", None).await;
    assert_eq!(count.json(), json!({"count": 3}));

    let details = api.call(Method::GET, "/api/domain/v1/2001", None).await.json();
    assert_eq!(details["name"], "alpha.test");
    assert_eq!(details["state"], "ACTIVE");
    assert_eq!(details["delegationStatus"], "ACTIVE");
    assert_eq!(details["validationStatus"], "VALIDATED");
    assert_eq!(details["validationMethod"], "HTTP_CSR_HASH");
    assert_eq!(details["dcvExpiration"].as_str().unwrap().len(), 10);
    assert_eq!(details["delegations"][0]["orgId"], 8932);
    assert_eq!(details["delegations"][0]["status"], "ACTIVE");
    assert_eq!(api.enroll_error("www.alpha.test").await, None);
    let beta = api.call(Method::GET, "/api/domain/v1/2002", None).await.json();
    assert_eq!(beta["validationStatus"], "NOT_VALIDATED");
    assert!(beta.get("dcvExpiration").is_none());

    let missing = api.call(Method::GET, "/api/domain/v1/9999", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&missing).1, -727);

    // Suspend → DCV and enroll say -715; activate again.
    let suspended = api.call(Method::PUT, "/api/domain/v1/2001/suspend", None).await;
    assert_eq!(suspended.status, StatusCode::OK);
    assert_eq!(
        api.call(Method::GET, "/api/domain/v1/2001", None).await.json()["state"],
        "SUSPENDED"
    );
    assert_eq!(
        error_of(&api.dcv("start/domain/http", "alpha.test").await).1,
        -715
    );
    assert_eq!(api.enroll_error("alpha.test").await.map(|e| e.0), Some(-715));
    api.call(Method::PUT, "/api/domain/v1/2001/activate", None).await;
    assert_eq!(api.enroll_error("alpha.test").await, None);

    // Create: 201 with Location and no body; the new domain is usable for DCV at once.
    let body = json!({"name": "delta.test", "description": "made by a test", "active": true,
                      "delegations": [{"orgId": 8932, "certTypes": ["SSL"],
                                       "domainCertificateRequestPrivileges": ["DOMAIN"]}]});
    let created = api.call(Method::POST, "/api/domain/v1", Some(body.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert!(created.body.is_empty());
    let location = created.headers["location"].to_str().unwrap();
    assert!(location.ends_with("/api/domain/v1/2004"), "{location}");
    assert_eq!(
        error_of(&api.call(Method::POST, "/api/domain/v1", Some(body)).await),
        (StatusCode::BAD_REQUEST, -700, "Such domain already exists".into())
    );
    let no_delegation = api
        .call(
            Method::POST,
            "/api/domain/v1",
            Some(json!({"name": "eps.test", "delegations": []})),
        )
        .await;
    assert_eq!(error_of(&no_delegation).1, -709);
    assert_eq!(api.status("delta.test").await["status"], "NOT_VALIDATED");

    let deleted = api.call(Method::DELETE, "/api/domain/v1/2004", None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(error_of(&api.dcv("status", "delta.test").await).1, -727);
    assert_eq!(
        api.call(
            Method::POST,
            "/api/domain/v1/2001/delegation",
            Some(json!({"orgId": 1}))
        )
        .await
        .status,
        StatusCode::NOT_IMPLEMENTED
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn without_registered_domains_enrollment_is_unchanged() {
    let api = start(ScmSimulatorConfig::default()).await;
    assert_eq!(api.enroll_error("anything.example.org").await, None);
    let listed = api.call(Method::GET, "/api/dcv/v1/validation", None).await;
    assert_eq!(listed.headers["x-total-count"], "0");
    api.sim.shutdown().await;
}

/// Two connectors: the first connected with two providers, the second not connected.
fn connectors() -> Vec<SimDnsConnector> {
    vec![
        SimDnsConnector {
            id: "2bf2517526b9445aaf558fcf5a368588".into(),
            name: "office agent".into(),
            status: ConnectorStatus::Connected,
            providers: vec!["ovh".into(), "cloudflare".into()],
        },
        SimDnsConnector {
            status: ConnectorStatus::NotConnected,
            ..SimDnsConnector::new("backup agent", &["route53"])
        },
    ]
}

const AGENT: &str = "2bf2517526b9445aaf558fcf5a368588";

#[tokio::test]
async fn dns_connectors_are_listed_with_details_and_providers() {
    let configured = connectors();
    let backup = configured[1].id.clone();
    assert_eq!(backup.len(), 32);
    let api = start(ScmSimulatorConfig {
        dns_connectors: configured,
        ..ScmSimulatorConfig::default()
    })
    .await;
    let listed = api.connector("").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    assert_eq!(listed.headers["content-type"], "application/json;charset=UTF-8");
    assert_eq!(listed.headers["x-total-count"], "2");
    let rows = listed.json();
    assert_eq!(
        keys(&rows[0]),
        [
            "comments",
            "delegationMode",
            "hostname",
            "id",
            "name",
            "os",
            "revision",
            "status",
            "version"
        ]
    );
    assert_eq!(rows[0]["id"], AGENT);
    assert_eq!(rows[0]["status"], "CONNECTED");
    assert_eq!(rows[1]["id"], backup.as_str());
    assert_eq!(rows[1]["status"], "NOT_CONNECTED");

    // Filters and paging; `orgIds` URL-encoded as in the spec's example.
    let count = |answer: &Answer| answer.headers["x-total-count"].to_str().unwrap().to_owned();
    let connected = api.connector("?status=CONNECTED").await;
    assert_eq!(
        (count(&connected), connected.json()[0]["id"].clone()),
        ("1".into(), json!(AGENT))
    );
    assert_eq!(count(&api.connector("?name=BACKUP&status=").await), "1");
    assert_eq!(count(&api.connector("?orgIds=1%2C8932").await), "2");
    assert_eq!(count(&api.connector("?orgIds=1").await), "0");
    let paged = api.connector("?size=1&position=1").await;
    assert_eq!(count(&paged), "2");
    assert_eq!(paged.json().as_array().unwrap().len(), 1);
    assert_eq!(
        error_of(&api.connector("?status=ONLINE").await),
        (
            StatusCode::BAD_REQUEST,
            -1601,
            "Field 'status' has invalid value.".into()
        )
    );
    assert_eq!(error_of(&api.connector("?orgIds=x").await).1, -1601);

    // Details: the list's fields plus the delegated organizations; hex in any case.
    let details = api.connector(&format!("/{}", AGENT.to_uppercase())).await;
    assert_eq!(details.status, StatusCode::OK);
    let details = details.json();
    assert_eq!(details["id"], AGENT);
    assert_eq!(details["delegatedOrganizations"][0]["id"], 8932);
    assert_eq!(
        keys(&details).len(),
        10,
        "list fields + delegatedOrganizations: {details}"
    );
    let providers = api.connector(&format!("/{AGENT}/provider")).await;
    assert_eq!(providers.status, StatusCode::OK);
    assert_eq!(providers.headers["x-total-count"], "2");
    assert_eq!(providers.json(), json!(["ovh", "cloudflare"]));

    // Unknown ids in the path are 404.
    for path in [
        "/0123456789abcdef0123456789abcdef",
        "/0123456789abcdef0123456789abcdef/provider",
        "/not-an-id",
    ] {
        assert_eq!(
            error_of(&api.connector(path).await),
            (StatusCode::NOT_FOUND, -1, "Unknown error.".into()),
            "{path}"
        );
    }

    let stats = api.sim.stats();
    assert_eq!(stats.requests["connectorList"], 8);
    assert_eq!(stats.requests["connectorProviders"], 2);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn connector_status_follows_the_control_surface() {
    let configured = connectors();
    let backup = configured[1].id.clone();
    let mut api = start(ScmSimulatorConfig {
        dns_connectors: configured,
        ..ScmSimulatorConfig::default()
    })
    .await;
    let count = |answer: &Answer| answer.headers["x-total-count"].to_str().unwrap().to_owned();
    assert_eq!(count(&api.connector("?status=connected").await), "1");
    api.sim
        .set_connector_status(&backup, ConnectorStatus::Connected)
        .unwrap();
    assert_eq!(count(&api.connector("?status=connected").await), "2");
    api.sim
        .set_connector_status(AGENT, ConnectorStatus::NotAvailable)
        .unwrap();
    assert_eq!(
        api.connector(&format!("/{AGENT}")).await.json()["status"],
        "NOT_AVAILABLE"
    );
    assert!(
        api.sim
            .set_connector_status("ffffffffffffffffffffffffffffffff", ConnectorStatus::Connected)
            .is_err()
    );

    // Same authentication as every SCM call.
    api.password = Some("wrong".into());
    assert_eq!(
        error_of(&api.connector("").await),
        (StatusCode::UNAUTHORIZED, -16, "Unknown user".into())
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn connector_ids_are_checked_at_start() {
    // Dashed UUIDs and other non-hex ids, and an id given twice in another case.
    for id in ["2bf25175-26b9-445a-af55-8fcf5a368588", "xyz"] {
        let config = ScmSimulatorConfig {
            dns_connectors: vec![SimDnsConnector {
                id: id.into(),
                ..SimDnsConnector::new("bad", &[])
            }],
            ..ScmSimulatorConfig::default()
        };
        assert!(ScmSimulator::start(config).await.is_err(), "{id}");
    }
    let twice = ScmSimulatorConfig {
        dns_connectors: vec![
            connectors().remove(0),
            SimDnsConnector {
                id: AGENT.to_uppercase(),
                ..SimDnsConnector::new("copy", &[])
            },
        ],
        ..ScmSimulatorConfig::default()
    };
    assert!(ScmSimulator::start(twice).await.is_err());
}

#[tokio::test]
async fn connector_submits_are_refused_with_documented_codes() {
    let domain = "agent.test";
    let api = start(ScmSimulatorConfig {
        domains: vec![SimDomain::new(domain)],
        dns_connectors: connectors(),
        ..ScmSimulatorConfig::default()
    })
    .await;
    let submit = |agent, provider| api.submit_cname(domain, agent, provider);

    // T6c is T4 with a connector: a CNAME start comes first.
    assert_eq!(
        error_of(&submit(Some(AGENT), Some("cloudflare")).await),
        (
            StatusCode::BAD_REQUEST,
            -724,
            "The request for 'agent.test' cannot be processed since it's domain validation status \
             is NOT_INITIATED."
                .into()
        )
    );
    api.ok("start/domain/cname", domain).await;

    let cases = [
        (Some(AGENT), None, -7, "dnsProviderName is required but missing."),
        (
            None,
            Some("cloudflare"),
            -7,
            "dnsAgentUUID is required but missing.",
        ),
        (
            Some("2bf25175-26b9-445a-af55-8fcf5a368588"),
            Some("cloudflare"),
            -1601,
            "Field 'dnsAgentUUID' has invalid value.",
        ),
        (
            Some("0123456789abcdef0123456789abcdef"),
            Some("cloudflare"),
            -1601,
            "Field 'dnsAgentUUID' has invalid value.",
        ),
        (
            Some(AGENT),
            Some("route53"),
            -1601,
            "Field 'dnsProviderName' has invalid value.",
        ),
    ];
    for (agent, provider, code, description) in cases {
        assert_eq!(
            error_of(&submit(agent, provider).await),
            (StatusCode::BAD_REQUEST, code, description.to_owned()),
            "{agent:?} {provider:?}"
        );
    }
    // A connector that is not connected cannot publish: -1603, the order is unchanged.
    api.sim
        .set_connector_status(AGENT, ConnectorStatus::NotConnected)
        .unwrap();
    assert_eq!(
        error_of(&submit(Some(AGENT), Some("cloudflare")).await),
        (
            StatusCode::BAD_REQUEST,
            -1603,
            "Error while validating the domain agent.test".into()
        )
    );
    let status = api.status(domain).await;
    assert_eq!(status["orderStatus"], "AWAITING_SUBMISSION");
    assert_eq!(status["orderMode"], "CNAME");
    assert!(api.sim.stats().dcv_checks.is_empty(), "refusals check nothing");
    // Back again, the same order can be submitted.
    api.sim
        .set_connector_status(AGENT, ConnectorStatus::Connected)
        .unwrap();
    assert_eq!(
        submit(Some(AGENT), Some("cloudflare")).await.status,
        StatusCode::OK
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn cname_submit_through_a_connector_validates_without_asking_dns() {
    let domain = "agent.test";
    let api = start(ScmSimulatorConfig {
        domains: vec![SimDomain::new(domain)],
        dns_connectors: connectors(),
        // No DNS server: a check that asked one would fail.
        dcv_dns_server: None,
        ..ScmSimulatorConfig::default()
    })
    .await;
    api.ok("start/domain/cname", domain).await;
    // Submitted as in the spec's example, then validated by the agent; hex in any case.
    let submitted = api
        .submit_cname(domain, Some(&AGENT.to_uppercase()), Some("cloudflare"))
        .await;
    assert_eq!(submitted.status, StatusCode::OK, "{}", submitted.text());
    let submitted = submitted.json();
    assert_eq!(
        keys(&submitted),
        ["message", "orderBackendId", "orderStatus", "status"]
    );
    assert_eq!(submitted["status"], "NOT_VALIDATED");
    assert_eq!(submitted["orderStatus"], "SUBMITTED");
    assert_eq!(submitted["message"], "Submitted successfully");
    let status = api.status(domain).await;
    assert_eq!(status["status"], "VALIDATED", "{status}");
    assert_eq!(status["orderStatus"], "NOT_INITIATED");
    let listed = api.call(Method::GET, "/api/dcv/v1/validation", None).await.json();
    assert_eq!(listed[0]["dcvMethod"], "CNAME_CSR_HASH");
    let stats = api.sim.stats();
    assert_eq!(stats.dcv_checks.len(), 1);
    let check = &stats.dcv_checks[0];
    assert_eq!(check.method, "CNAME");
    assert!(check.passed, "{check:?}");
    assert_eq!(check.connector.as_deref(), Some(AGENT));
    assert!(
        check.target.contains(AGENT) && check.target.contains("cloudflare"),
        "{check:?}"
    );
    assert_eq!(stats.dcv_dns_queries, 0, "the connector asks no DNS server");
    assert_eq!(api.enroll_error("www.agent.test").await, None);

    // Without the connector fields the same path is the plain CNAME: the simulator asks DNS.
    api.ok("start/domain/cname", domain).await;
    api.ok("submit/domain/cname", domain).await;
    let stats = api.sim.stats();
    assert_eq!(stats.dcv_dns_queries, 1);
    assert!(stats.dcv_checks[1].connector.is_none());
    assert!(!stats.dcv_checks[1].passed);
    assert_eq!(api.status(domain).await["orderStatus"], "SUBMITTED");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn enrollment_records_dcv_mode_and_email() {
    let api = start(ScmSimulatorConfig {
        pending_collects: 0,
        ..ScmSimulatorConfig::default()
    })
    .await;
    let enroll = |extra: Value| {
        let mut body = json!({
            "orgId": 8932, "csr": p256_csr("dcv-mode.example.com", &[]), "certType": 5153,
            "term": 365, "subjAltNames": "", "customFields": [],
        });
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        api.call(Method::POST, "/api/ssl/v1/enroll", Some(body))
    };
    let refusals = [
        (
            json!({"dcvMode": "DNS"}),
            -1601,
            "Field 'dcvMode' has invalid value.",
        ),
        (
            json!({"dcvMode": "cname"}),
            -1601,
            "Field 'dcvMode' has invalid value.",
        ),
        (
            json!({"dcvMode": "EMAIL"}),
            -7,
            "dcvEmail is required but missing.",
        ),
        (
            json!({"dcvMode": "EMAIL", "dcvEmail": "not-an-address"}),
            -1601,
            "Field 'dcvEmail' has invalid value.",
        ),
    ];
    for (extra, code, description) in refusals {
        assert_eq!(
            error_of(&enroll(extra.clone()).await),
            (StatusCode::BAD_REQUEST, code, description.to_owned()),
            "{extra}"
        );
    }
    let placed = |extra: Value| {
        let answer = enroll(extra);
        async move {
            let answer = answer.await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
            answer.json()["sslId"].as_i64().unwrap()
        }
    };
    let cname = placed(json!({"dcvMode": "CNAME"})).await;
    let email = placed(json!({"dcvMode": "EMAIL", "dcvEmail": "admin@example.com"})).await;
    let plain = placed(json!({"dcvMode": "", "dcvEmail": ""})).await;
    let order = |ssl_id: i64| {
        let stats = api.sim.stats();
        let order = stats.orders.iter().find(|o| o.ssl_id == ssl_id).unwrap();
        (order.dcv_mode.clone(), order.dcv_email.clone())
    };
    assert_eq!(order(cname), (Some("CNAME".into()), None));
    assert_eq!(
        order(email),
        (Some("EMAIL".into()), Some("admin@example.com".into()))
    );
    assert_eq!(order(plain), (None, None), "empty strings are absent");

    // renewById takes the same fields; without them the initial order's pair carries over.
    let renew = |ssl_id: i64, body: Value| {
        let path = format!("/api/ssl/v1/renewById/{ssl_id}");
        let api = &api;
        async move { api.call(Method::POST, &path, Some(body)).await }
    };
    assert_eq!(
        error_of(&renew(cname, json!({"dcvMode": "SMS"})).await),
        (
            StatusCode::BAD_REQUEST,
            -1601,
            "Field 'dcvMode' has invalid value.".into()
        )
    );
    assert_eq!(error_of(&renew(cname, json!({"dcvMode": "EMAIL"})).await).1, -7);
    let renewed = |answer: Answer| {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        answer.json()["sslId"].as_i64().unwrap()
    };
    let http = renewed(renew(cname, json!({"dcvMode": "HTTP"})).await);
    assert_eq!(order(http), (Some("HTTP".into()), None));
    let inherited = renewed(renew(email, json!({})).await);
    assert_eq!(
        order(inherited),
        (Some("EMAIL".into()), Some("admin@example.com".into()))
    );
    let switched = renewed(renew(inherited, json!({"dcvMode": "TXT"})).await);
    assert_eq!(order(switched), (Some("TXT".into()), None), "no stale address");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn seeded_validations_can_lie_in_the_past() {
    let api = start(ScmSimulatorConfig {
        domains: vec![
            SimDomain {
                validated: true,
                validated_days_ago: 340,
                ..SimDomain::new("old.test")
            },
            SimDomain {
                validated: true,
                validated_days_ago: 400,
                ..SimDomain::new("older.test")
            },
            SimDomain {
                validated: true,
                ..SimDomain::new("fresh.test")
            },
        ],
        dcv_validity: Duration::from_secs(365 * 24 * 3600),
        ..ScmSimulatorConfig::default()
    })
    .await;
    let days_from_now = |days: i64| {
        let now = time::OffsetDateTime::now_utc();
        [
            dcv::date(now + time::Duration::days(days)),
            // The date may have turned while the test ran.
            dcv::date(now + time::Duration::days(days - 1)),
        ]
    };
    let old = api.status("old.test").await;
    assert_eq!(old["status"], "VALIDATED", "{old}");
    assert!(days_from_now(-340).contains(&old["validationDate"].as_str().unwrap().to_owned()));
    assert!(days_from_now(25).contains(&old["expirationDate"].as_str().unwrap().to_owned()));
    assert_eq!(api.enroll_error("www.old.test").await, None);
    let due = api
        .call(
            Method::GET,
            "/api/dcv/v1/validation?expiresIn=30&dcvStatus=VALIDATED",
            None,
        )
        .await
        .json();
    assert_eq!(
        due,
        json!([{
            "domain": "old.test", "dcvStatus": "VALIDATED", "dcvMethod": "HTTP_CSR_HASH",
            "dcvOrderStatus": "NOT_INITIATED", "dcvOrderMethod": "HTTP",
            "expirationDate": old["expirationDate"],
        }])
    );
    let details = api.call(Method::GET, "/api/domain/v1/2001", None).await.json();
    assert_eq!(details["dcvValidation"], old["validationDate"]);

    let older = api.status("older.test").await;
    assert_eq!(older["status"], "EXPIRED", "{older}");
    assert!(days_from_now(-35).contains(&older["expirationDate"].as_str().unwrap().to_owned()));
    assert_eq!(api.enroll_error("older.test").await.map(|e| e.0), Some(-107));

    let fresh = api.status("fresh.test").await;
    assert!(days_from_now(0).contains(&fresh["validationDate"].as_str().unwrap().to_owned()));
    api.sim.shutdown().await;
}

#[tokio::test]
async fn console_orders_are_the_apis_orders() {
    let api = start(ScmSimulatorConfig {
        domains: vec![
            SimDomain::new("console.test"),
            SimDomain::new("txt.test"),
            SimDomain::new("mail.test"),
        ],
        ..ScmSimulatorConfig::default()
    })
    .await;
    api.sim
        .console_start_and_submit("console.test", "cname")
        .await
        .unwrap();
    let status = api.status("console.test").await;
    assert_eq!(status["orderStatus"], "SUBMITTED", "{status}");
    assert_eq!(status["orderMode"], "CNAME");
    assert!(status["orderBackendId"].as_str().is_some(), "{status}");
    assert!(status["host"].as_str().unwrap().ends_with(".console.test."));
    // The submit's first check ran (no DNS server: it failed) and is in the stats; the
    // console's calls are not API requests.
    let stats = api.sim.stats();
    assert_eq!(stats.dcv_checks.len(), 1);
    assert_eq!(stats.dcv_checks[0].method, "CNAME");
    assert!(!stats.dcv_checks[0].passed);
    assert!(
        !stats.requests.contains_key("dcvStartCname"),
        "{:?}",
        stats.requests
    );
    assert!(!stats.requests.contains_key("dcvSubmitCname"));
    // An API client now meets the console's order.
    assert_eq!(
        error_of(&api.dcv("start/domain/http", "console.test").await).1,
        -724
    );
    // The console is refused as the API would be.
    let again = api
        .sim
        .console_start_and_submit("console.test", "HTTP")
        .await
        .unwrap_err();
    assert!(again.starts_with("-724 "), "{again}");
    let unknown = api
        .sim
        .console_start_and_submit("nowhere.test", "TXT")
        .await
        .unwrap_err();
    assert_eq!(unknown, "-727 The domain 'nowhere.test' does not exist.");
    assert!(
        api.sim
            .console_start_and_submit("txt.test", "SMS")
            .await
            .unwrap_err()
            .contains("unknown DCV mode")
    );

    // TXT has no start; EMAIL submits to the first listed address and completes by a click.
    api.sim.console_start_and_submit("txt.test", "TXT").await.unwrap();
    let txt = api.status("txt.test").await;
    assert_eq!(
        (&txt["orderStatus"], &txt["orderMode"]),
        (&json!("SUBMITTED"), &json!("TXT"))
    );
    assert_eq!(txt["point"].as_str().unwrap().len(), 32);
    api.sim
        .console_start_and_submit("mail.test", "EMAIL")
        .await
        .unwrap();
    let mail = api.status("mail.test").await;
    assert_eq!(mail["orderStatus"], "SUBMITTED");
    assert_eq!(mail["validationEmail"], "admin@mail.test");
    api.sim.click_email_link("mail.test").unwrap();
    assert_eq!(api.status("mail.test").await["status"], "VALIDATED");
    api.sim.shutdown().await;
}
