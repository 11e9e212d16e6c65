//! A simulator of the Certificate Manager Service ("CertMgmt", Cloud-Connect), written from
//! `shared/spec/scm-discovery-alerts.md` §6 and §8.5: service status and client scripts, hosts
//! (onboarding with 201/208 and a generated `secret_key`, offboarding, details, audit logs),
//! email lists, the four fixed certificate-expiry levels, the host-unavailability configuration,
//! the agent certificate report, and alert generation on a clock tests control, with the
//! generated alerts queryable by level, by node and by host. Every response carries §6's
//! security headers.
//!
//! Alerts are generated when [`CertMgmtSimulator::evaluate_alerts`] (or
//! `POST /__simulator/alerts/evaluate`) runs, and every `evaluation_interval` when one is
//! configured. Emails are not sent: each alert that has recipients is recorded in
//! [`CertMgmtStats::emails`] with the resolved `to` and `cc` instead.
//!
//! Tests start it in-process with [`CertMgmtSimulator::start`]; demos run the
//! `certmgmt-simulator` binary. Besides the API it serves unauthenticated control endpoints:
//! `GET /__simulator/stats`, `PUT /__simulator/faults`, `POST /__simulator/reset`,
//! `POST /__simulator/clock/advance?seconds=<n>`, `POST /__simulator/alerts/evaluate` and
//! `POST /__simulator/hosts/<id>/rotate-secret`.

mod api;
mod store;

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode,
    body::Incoming,
    header::{
        CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderName, HeaderValue,
        PRAGMA, REFERRER_POLICY, RETRY_AFTER, STRICT_TRANSPORT_SECURITY, WWW_AUTHENTICATE,
        X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    FaultInjector, Faults, Handler, HttpResponse, InjectedFault, RequestCounters, TestCa, TlsServer,
    TlsServerOptions,
};
use api::{ApiError, Auth, Call, NoRoute, Reply};
pub use store::{
    AlertKind, AuditEntry, EmailListEntry, Level, LevelSettings, NodeSettings, OutgoingEmail,
    ReportedCertificate, SimAlert,
};
use store::{Store, isoformat};

/// How the simulated service behaves.
#[derive(Clone)]
pub struct CertMgmtSimulatorConfig {
    /// The Basic username expected.
    pub username: String,
    /// The Basic password expected.
    pub password: String,
    /// `version` of the status (the Cloud-Connect version).
    pub version: String,
    /// `build-no` of the status.
    pub build_no: String,
    /// `status` of the status.
    pub service_status: String,
    /// `status_data` of the status.
    pub status_data: String,
    /// `db_status` of the status.
    pub db_status: String,
    /// `cluster.nodes[].host_fqdn`, the first one `primary`.
    pub cluster_nodes: Vec<String>,
    /// The four levels at start.
    pub levels: BTreeMap<Level, LevelSettings>,
    /// The node configuration at start.
    pub node: NodeSettings,
    /// `GET /certmgmt/modules` answers 200 with an empty zip instead of the documented 204.
    pub modules_body: bool,
    /// Evaluate alerts on this period too (besides the control hook).
    pub evaluation_interval: Option<Duration>,
}

impl Default for CertMgmtSimulatorConfig {
    fn default() -> Self {
        // Inferred (spec §8.4): 000 gives no defaults; the levels start disabled with §8.4's
        // example days (90/30/14/7), the node configuration disabled with 2 days.
        let level = |remaining_days| LevelSettings {
            enabled: false,
            email_list_ids: Vec::new(),
            remaining_days,
        };
        Self {
            username: "cconnect-admin".to_owned(),
            password: "sim-cconnect-password".to_owned(),
            version: "2.5.0".to_owned(),
            build_no: "sim-1".to_owned(),
            service_status: "IN_SERVICE".to_owned(),
            status_data: String::new(),
            db_status: "IN_SERVICE".to_owned(),
            cluster_nodes: vec![
                "cconnect-primary.sim.local".to_owned(),
                "cconnect-secondary.sim.local".to_owned(),
            ],
            levels: BTreeMap::from([
                (Level::Info, level(90)),
                (Level::Warn, level(30)),
                (Level::High, level(14)),
                (Level::Error, level(7)),
            ]),
            node: NodeSettings {
                enabled: false,
                email_list_ids: Vec::new(),
                max_days_checkin_delay: 2,
            },
            modules_body: false,
            evaluation_interval: None,
        }
    }
}

impl fmt::Debug for CertMgmtSimulatorConfig {
    // Hand-written so the password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertMgmtSimulatorConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("version", &self.version)
            .field("build_no", &self.build_no)
            .field("service_status", &self.service_status)
            .field("db_status", &self.db_status)
            .field("cluster_nodes", &self.cluster_nodes)
            .field("levels", &self.levels)
            .field("node", &self.node)
            .field("modules_body", &self.modules_body)
            .field("evaluation_interval", &self.evaluation_interval)
            .finish_non_exhaustive()
    }
}

/// What the simulator holds and saw.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CertMgmtStats {
    /// Endpoint name → requests received (faulted and refused ones included).
    pub requests: BTreeMap<String, u64>,
    /// The simulated present, isoformat.
    pub clock: String,
    /// Onboarded hosts.
    pub hosts: Vec<HostSummary>,
    /// Email lists.
    pub email_lists: Vec<EmailListEntry>,
    /// The four level configurations.
    pub levels: BTreeMap<Level, LevelSettings>,
    /// The node configuration.
    pub node_config: NodeSettings,
    /// Every generated alert, in generation order.
    pub alerts: Vec<SimAlert>,
    /// The emails the alerts would have sent.
    pub emails: Vec<OutgoingEmail>,
    /// The audit log of every host.
    pub audit: Vec<AuditEntry>,
    /// When alerts were last evaluated, isoformat.
    pub last_evaluation: Option<String>,
}

/// One host as [`CertMgmtStats`] reports it (without its keys).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostSummary {
    /// `id`.
    pub id: String,
    /// `hostname`.
    pub hostname: String,
    /// `server_type`.
    pub server_type: String,
    /// `onboarding_time`, isoformat.
    pub onboarding_time: String,
    /// `last_contact_time`, isoformat.
    pub last_contact_time: String,
    /// Agent reports received.
    pub reports: u64,
    /// The inventory of the last report.
    pub certificates: Vec<ReportedCertificate>,
}

/// A running CertMgmt simulator. Dropping it without [`CertMgmtSimulator::shutdown`] leaves the
/// server tasks running until the runtime ends.
pub struct CertMgmtSimulator {
    server: TlsServer,
    shared: Arc<Shared>,
    tls_ca_pem: String,
    evaluator: Option<JoinHandle<()>>,
}

impl fmt::Debug for CertMgmtSimulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertMgmtSimulator")
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

impl CertMgmtSimulator {
    /// Starts on `127.0.0.1` with a free port.
    pub async fn start(config: CertMgmtSimulatorConfig) -> anyhow::Result<CertMgmtSimulator> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts on `addr` with a fresh TLS CA.
    pub async fn start_on(
        addr: SocketAddr,
        config: CertMgmtSimulatorConfig,
    ) -> anyhow::Result<CertMgmtSimulator> {
        let tls_ca = TestCa::generate("CertMgmt Simulator TLS")?;
        let (certificate_chain, private_key) = tls_ca.loopback_server_identity()?;
        let shutdown = CancellationToken::new();
        let interval = config.evaluation_interval;
        let store = Store::new(config.levels.clone(), config.node.clone());
        let shared = Arc::new(Shared {
            config,
            store: Mutex::new(store),
            counters: RequestCounters::default(),
            faults: FaultInjector::default(),
            shutdown: shutdown.clone(),
        });
        let options = TlsServerOptions {
            certificate_chain,
            private_key,
            client_roots: Vec::new(),
            require_client_certificate: false,
        };
        let server = TlsServer::start(addr, options, Arc::clone(&shared), shutdown.clone()).await?;
        let evaluator = interval.filter(|period| !period.is_zero()).map(|period| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(period) => {}
                    }
                    shared.store().evaluate();
                }
            })
        });
        tracing::info!(address = %server.local_addr(), "CertMgmt simulator started");
        Ok(Self {
            server,
            shared,
            tls_ca_pem: tls_ca.root_pem(),
            evaluator,
        })
    }

    /// `https://127.0.0.1:<port>`, no trailing slash (the paths start with `/certmgmt` and
    /// `/certagent`).
    pub fn base_url(&self) -> String {
        self.server.https_origin()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The CA that signed the server's TLS certificate (PEM).
    pub fn tls_ca_pem(&self) -> String {
        self.tls_ca_pem.clone()
    }

    /// Replaces the faults in force (API endpoints only).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.set(faults);
    }

    /// A snapshot of the state and counters.
    pub fn stats(&self) -> CertMgmtStats {
        self.shared.stats()
    }

    /// Forgets the request counters (the state stays).
    pub fn reset_stats(&self) {
        self.shared.counters.reset();
    }

    /// The simulated present.
    pub fn now(&self) -> jiff::Timestamp {
        self.shared.store().now()
    }

    /// Moves the simulated clock forward: certificate expiry and check-in delays are measured
    /// against it, and new timestamps (reports, alerts, audit entries) carry it.
    pub fn advance_clock(&self, by: Duration) {
        self.shared.store().advance_clock(by);
    }

    /// Evaluates every host against the alert configuration now; returns the alerts generated
    /// (each certificate alerts once per level, each host once per unavailability period).
    pub fn evaluate_alerts(&self) -> Vec<SimAlert> {
        self.shared.store().evaluate()
    }

    /// Rotates a host's `secret_key` (the old one becomes `old_secret_key` and stops working for
    /// agent reports). `false`: no such host.
    pub fn rotate_secret_key(&self, host_id: &str) -> bool {
        self.shared.rotate_secret_key(host_id)
    }

    /// Stops the server, the periodic evaluation and open connections.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
        if let Some(evaluator) = self.evaluator {
            let _ = evaluator.await;
        }
    }
}

/// Largest request body read (an agent's inventory of a few thousand certificates).
const MAX_BODY_BYTES: usize = 4 << 20;

/// State shared by every connection.
struct Shared {
    config: CertMgmtSimulatorConfig,
    store: Mutex<Store>,
    counters: RequestCounters,
    faults: FaultInjector,
    shutdown: CancellationToken,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        // Every change is complete before the lock is released, so a poisoned lock holds usable
        // data.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> CertMgmtStats {
        let store = self.store();
        CertMgmtStats {
            requests: self.counters.snapshot(),
            clock: isoformat(store.now()),
            hosts: store
                .hosts
                .values()
                .map(|host| HostSummary {
                    id: host.id.clone(),
                    hostname: host.hostname.clone(),
                    server_type: host.server_type.clone(),
                    onboarding_time: isoformat(host.onboarding_time),
                    last_contact_time: isoformat(host.last_contact_time),
                    reports: host.reports,
                    certificates: host
                        .certificates
                        .iter()
                        .map(|entry| entry.certificate.clone())
                        .collect(),
                })
                .collect(),
            email_lists: store.email_lists.values().cloned().collect(),
            levels: store.levels.clone(),
            node_config: store.node.clone(),
            alerts: store.alerts.clone(),
            emails: store.outbox.clone(),
            audit: store.audit.clone(),
            last_evaluation: store.last_evaluation.map(isoformat),
        }
    }

    fn rotate_secret_key(&self, host_id: &str) -> bool {
        let mut store = self.store();
        let now = store.now();
        let Some(host) = store.hosts.get_mut(host_id) else {
            return false;
        };
        let old = std::mem::replace(&mut host.secret_key, api::new_secret_key());
        host.old_secret_key = Some(old);
        host.secret_update_time = now;
        store.record_audit(
            host_id,
            "SECRET_KEY_ROTATED",
            "The secret key was rotated".to_owned(),
        );
        true
    }

    async fn serve_api(&self, request: Request<Incoming>) -> HttpResponse {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let endpoint = match api::route(&method, &path) {
            Ok(endpoint) => endpoint,
            Err(no_route) => {
                self.counters.count("unknown");
                tracing::debug!(%method, %path, ?no_route, "no CertMgmt route");
                return error_response(&match no_route {
                    NoRoute::NotFound => {
                        ApiError::NotFound("The requested URL was not found on the server.".to_owned())
                    }
                    NoRoute::MethodNotAllowed => ApiError::MethodNotAllowed,
                });
            }
        };
        let name = endpoint.name();
        self.counters.count(name);
        if let Some(fault) = self.faults.inject(name, &self.shutdown).await {
            tracing::info!(endpoint = name, ?fault, "injected fault");
            return fault_response(fault);
        }
        if endpoint.auth() == Auth::Basic
            && let Err(error) =
                api::check_basic(request.headers(), &self.config.username, &self.config.password)
        {
            tracing::debug!(endpoint = name, "authentication failed");
            return error_response(&error);
        }
        let headers = request.headers().clone();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let body = match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return error_response(&ApiError::PayloadTooLarge),
        };
        let call = Call {
            headers: &headers,
            query: &query,
            body: &body,
        };
        let outcome = api::dispatch(self, &endpoint, &call);
        tracing::debug!(
            endpoint = name,
            %method,
            %path,
            outcome = ?outcome.as_ref().map(|_| "ok").map_err(ApiError::status),
            "CertMgmt request"
        );
        match outcome {
            Ok(Reply::Json(status, value)) => json_response(status, &value),
            Ok(Reply::Empty(status)) => response(status, HeaderMap::new(), Vec::new()),
            Ok(Reply::Module) => self.module_response(),
            Err(error) => error_response(&error),
        }
    }

    /// The `script.zip` download (§6.1).
    // Inferred (spec §6.1): 000 documents 204 with a zip attachment; a 204 has no body, so by
    // default the answer is 204 with the documented headers and nothing else; `modules_body`
    // answers 200 with an empty zip archive instead.
    fn module_response(&self) -> HttpResponse {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"script.zip\""),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        if self.config.modules_body {
            response(StatusCode::OK, headers, EMPTY_ZIP.to_vec())
        } else {
            response(StatusCode::NO_CONTENT, headers, Vec::new())
        }
    }

    async fn serve_control(&self, request: Request<Incoming>) -> HttpResponse {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        match (method, path.as_str()) {
            (Method::GET, "/__simulator/stats") => json_response(StatusCode::OK, &self.stats()),
            (Method::PUT, "/__simulator/faults") => {
                let body = match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => return text_response(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
                };
                match serde_json::from_slice::<Faults>(&body) {
                    Ok(faults) => {
                        tracing::info!(?faults, "faults set");
                        self.faults.set(faults);
                        response(StatusCode::NO_CONTENT, HeaderMap::new(), Vec::new())
                    }
                    Err(error) => text_response(StatusCode::BAD_REQUEST, &format!("invalid faults: {error}")),
                }
            }
            (Method::POST, "/__simulator/reset") => {
                self.counters.reset();
                response(StatusCode::NO_CONTENT, HeaderMap::new(), Vec::new())
            }
            (Method::POST, "/__simulator/clock/advance") => {
                let seconds = request.uri().query().and_then(|query| {
                    form_urlencoded::parse(query.as_bytes())
                        .find(|(key, _)| key == "seconds")
                        .and_then(|(_, value)| value.parse::<u64>().ok())
                });
                match seconds {
                    Some(seconds) => {
                        self.store().advance_clock(Duration::from_secs(seconds));
                        response(StatusCode::NO_CONTENT, HeaderMap::new(), Vec::new())
                    }
                    None => text_response(
                        StatusCode::BAD_REQUEST,
                        "seconds query parameter missing or invalid",
                    ),
                }
            }
            (Method::POST, "/__simulator/alerts/evaluate") => {
                let generated: Vec<Value> = self
                    .store()
                    .evaluate()
                    .iter()
                    .map(SimAlert::to_host_json)
                    .collect();
                json_response(StatusCode::OK, &json!({"alerts": generated}))
            }
            (Method::POST, path) => match path
                .strip_prefix("/__simulator/hosts/")
                .and_then(|rest| rest.strip_suffix("/rotate-secret"))
            {
                Some(id) if self.rotate_secret_key(id) => {
                    response(StatusCode::NO_CONTENT, HeaderMap::new(), Vec::new())
                }
                Some(_) => text_response(StatusCode::NOT_FOUND, "no such host"),
                None => text_response(StatusCode::NOT_FOUND, "unknown control endpoint"),
            },
            _ => text_response(StatusCode::NOT_FOUND, "unknown control endpoint"),
        }
    }
}

impl Handler for Shared {
    async fn handle(&self, request: Request<Incoming>) -> HttpResponse {
        let mut response = if request.uri().path().starts_with("/__simulator/") {
            self.serve_control(request).await
        } else {
            self.serve_api(request).await
        };
        add_security_headers(response.headers_mut());
        response
    }
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// The headers §6 ("Response headers on every response") lists, verbatim.
pub const SECURITY_HEADERS: [(&str, &str); 7] = [
    ("X-Frame-Options", "deny"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer-when-downgrade"),
    ("Cache-Control", "no-store, max-age=0"),
    ("Pragma", "no-cache"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self'; style-src 'self'; \
         frame-ancestors 'self'; form-action 'self';",
    ),
    (
        "Strict-Transport-Security",
        "max-age=31536000 ; includeSubDomains",
    ),
];

fn add_security_headers(headers: &mut HeaderMap) {
    let names: [HeaderName; 7] = [
        X_FRAME_OPTIONS,
        X_CONTENT_TYPE_OPTIONS,
        REFERRER_POLICY,
        CACHE_CONTROL,
        PRAGMA,
        CONTENT_SECURITY_POLICY,
        STRICT_TRANSPORT_SECURITY,
    ];
    for (name, (_, value)) in names.into_iter().zip(SECURITY_HEADERS) {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// An empty zip archive: only the end-of-central-directory record.
const EMPTY_ZIP: [u8; 22] = [
    0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn response(status: StatusCode, headers: HeaderMap, body: Vec<u8>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn text_response(status: StatusCode, text: &str) -> HttpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response(status, headers, text.as_bytes().to_vec())
}

fn json_response(status: StatusCode, value: &impl Serialize) -> HttpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response(status, headers, serde_json::to_vec(value).unwrap_or_default())
}

fn error_response(error: &ApiError) -> HttpResponse {
    let mut response = json_response(error.status(), &json!({"message": error.message()}));
    if matches!(error, ApiError::Unauthorized { basic: true, .. }) {
        // Inferred (spec §6): the challenge a Basic-protected endpoint sends with 401.
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"CertMgmt\""),
        );
    }
    response
}

fn fault_response(fault: InjectedFault) -> HttpResponse {
    let error = |status: StatusCode| {
        json_response(
            status,
            &json!({"message": status.canonical_reason().unwrap_or("Error")}),
        )
    };
    match fault {
        InjectedFault::ServerError(status) => error(status),
        InjectedFault::Hung => error(StatusCode::SERVICE_UNAVAILABLE),
        InjectedFault::RateLimited { retry_after_secs } => {
            // Inferred (spec §6): 000 documents no rate limiting; a gateway's 429 with
            // `Retry-After` is what a client would meet.
            let mut response = error(StatusCode::TOO_MANY_REQUESTS);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
    }
}

#[cfg(test)]
mod tests;
