//! A simulator of the Nexus Certificate Manager REST API behind the Protocol Gateway, written from
//! `shared/spec/nexus-cm.md`: mutual TLS with officer certificates, VRO or caller signing (the
//! `-19` challenge and CMS-signed re-sends), issuance from PKCS#10, search, details, download,
//! revoke, reinstate and procedures, with the documented JSON error envelope.
//!
//! Tests start it in-process with [`NexusSimulator::start`]; demos run the `nexus-simulator`
//! binary. Every connection needs a client certificate chaining to the officer CA (spec §2,
//! Tomcat `clientAuth`): a missing or foreign one fails the TLS handshake. The control endpoints
//! `GET /__simulator/stats` and `PUT /__simulator/faults` need the officer certificate too.

mod api;
mod multipart;
mod signing;
mod store;

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode,
    body::Incoming,
    header::{CONTENT_TYPE, HeaderValue},
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{
    ConnectionControl, FaultInjector, Faults, Handler, HttpResponse, InjectedFault, LeafSpec, LeafUsage,
    PeerCertificates, RequestCounters, TestCa, TlsServer, TlsServerOptions, random_serial,
};
use api::ApiError;
use store::Store;

/// Who signs write requests (spec §3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NexusSigningMode {
    /// The gateway signs as a Virtual Registration Officer: one round trip.
    Vro,
    /// The caller signs the `dataToSign` the server hands out with `-19` (Nexus' default).
    #[default]
    Caller,
}

/// How the simulator reads the places where the seeds can be read two ways. The clients were
/// written against [`NexusReading::Common`]; the conformance suite runs against both.
///
/// 1. **How CM spells serial numbers.** Seed 003 (the `OpenAPI` document) types
///    `certificateserialnumber` as "Certificate serial number in hex format" and the
///    `certificateSerialNumber` filter as "Serial number of the certificate"; its only example,
///    `31e96265e40b809cffa3862b073ae98b`, is lower case and its first byte has the high bit
///    clear, so it cannot tell whether CM keeps the DER integer's leading `00` or prints
///    upper case. Common: lower-case hex without leading zeros (Java's
///    `BigInteger.toString(16)`, spec §4 "inferred"), and the filter compares numbers. Strict:
///    the DER integer's bytes in upper-case hex, leading `00` kept, and the filter compares that
///    text ignoring case only; every serial then has its high bit set, so the `00` is always
///    there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NexusReading {
    /// The readings the clients were first written against.
    #[default]
    Common,
    /// Where a seed is ambiguous, the other reading.
    Strict,
}

/// How the simulated Certificate Manager is configured.
#[derive(Clone, Debug)]
pub struct NexusSimulatorConfig {
    /// VRO or caller signing.
    pub signing_mode: NexusSigningMode,
    /// Token procedure names `GET /procedures` lists and `procname` may name.
    pub procedures: Vec<String>,
    /// The procedure used when `procname` is omitted (`handler.(n).tokenprocedure`).
    pub default_procedure: String,
    /// Token procedure "store all": issuance responses carry the chain, not only the leaf.
    pub store_chain: bool,
    /// `certsearch.maxhits`: the most certificates one search returns.
    pub max_search_hits: u32,
    /// How many searches miss a freshly issued certificate (CM's index lagging behind).
    pub index_lag_searches: u32,
    /// Render response date-times as RFC 3339 strings (the schema) instead of epoch
    /// milliseconds (every example); clients must read both (spec §4).
    pub rfc3339_dates: bool,
    /// How ambiguous seeds are read (see [`NexusReading`]).
    pub reading: NexusReading,
}

impl Default for NexusSimulatorConfig {
    fn default() -> Self {
        Self {
            signing_mode: NexusSigningMode::Caller,
            procedures: vec!["TLS-Server".to_owned()],
            default_procedure: "TLS-Server".to_owned(),
            store_chain: true,
            max_search_hits: 100,
            index_lag_searches: 0,
            rfc3339_dates: false,
            reading: NexusReading::Common,
        }
    }
}

/// What the simulator saw: requests per endpoint, issuances per CSR, and every certificate.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NexusStats {
    /// Endpoint name → requests received (faulted ones included).
    pub requests: BTreeMap<String, u64>,
    /// Lower-case hex SHA-256 of the DER PKCS#10 → certificates issued for it.
    pub issuances_per_csr: BTreeMap<String, u32>,
    /// Every certificate issued, in issuance order.
    pub certificates: Vec<NexusCertificateSummary>,
}

/// One certificate as [`NexusStats`] reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NexusCertificateSummary {
    /// CM's `certid`.
    pub certid: String,
    /// X.509 serial, lower-case hex.
    pub serial_number: String,
    /// `active` or `revoked`, as details shows it.
    pub status: String,
    /// Subject as the API renders it (values only).
    pub subject: String,
    /// Token procedure that issued it.
    pub procedure: String,
}

/// A running Nexus simulator. Dropping it without [`NexusSimulator::shutdown`] leaves the server
/// tasks running until the runtime ends.
pub struct NexusSimulator {
    server: TlsServer,
    shared: Arc<Shared>,
    tls_ca_pem: String,
    officer: (String, String),
    foreign: (String, String),
}

impl fmt::Debug for NexusSimulator {
    // Hand-written so the officer keys never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NexusSimulator")
            .field("base_url", &self.base_url())
            .field("signing_mode", &self.shared.config.signing_mode)
            .finish_non_exhaustive()
    }
}

impl NexusSimulator {
    /// Starts on `127.0.0.1` with a free port.
    pub async fn start(config: NexusSimulatorConfig) -> anyhow::Result<NexusSimulator> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts on `addr` with fresh TLS, officer and issuing CAs.
    pub async fn start_on(addr: SocketAddr, config: NexusSimulatorConfig) -> anyhow::Result<NexusSimulator> {
        let tls_ca = TestCa::generate("Nexus Simulator TLS")?;
        let officer_ca = TestCa::generate("Nexus Simulator Officer")?;
        let foreign_ca = TestCa::generate("Nexus Simulator Foreign")?;
        let issuing = TestCa::generate("Nexus Simulator")?;
        let officer = client_identity(&officer_ca, "Super Officer 1")?;
        let foreign = client_identity(&foreign_ca, "Foreign Officer")?;
        let (certificate_chain, private_key) = tls_ca.loopback_server_identity()?;
        // The intermediate is a trust anchor too, so a client presenting only its leaf connects.
        let client_roots = vec![
            officer_ca.root_der().clone(),
            officer_ca.intermediate_der().clone(),
        ];
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            config,
            issuing,
            officer_ca,
            store: Mutex::new(Store::default()),
            counters: RequestCounters::default(),
            faults: FaultInjector::default(),
            shutdown: shutdown.clone(),
        });
        let options = TlsServerOptions {
            certificate_chain,
            private_key,
            client_roots,
            require_client_certificate: true,
        };
        let server = TlsServer::start(addr, options, Arc::clone(&shared), shutdown).await?;
        tracing::info!(address = %server.local_addr(), mode = ?shared.config.signing_mode, "Nexus simulator started");
        Ok(Self {
            server,
            shared,
            tls_ca_pem: tls_ca.root_pem(),
            officer,
            foreign,
        })
    }

    /// `https://127.0.0.1:<port>/pgwy/api`, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("{}{BASE_PATH}", self.server.https_origin())
    }

    /// The CA that signed the server's TLS certificate (PEM).
    pub fn tls_ca_pem(&self) -> String {
        self.tls_ca_pem.clone()
    }

    /// The root issued certificates chain to (PEM).
    pub fn issuing_root_pem(&self) -> String {
        self.shared.issuing.root_pem()
    }

    /// A CM officer: certificate chain PEM (leaf, intermediate) and PKCS#8 key PEM, accepted for
    /// TLS client authentication and for signing requests.
    pub fn officer_identity(&self) -> (String, String) {
        self.officer.clone()
    }

    /// A client certificate from another CA, with its key: refused in the TLS handshake.
    pub fn foreign_identity(&self) -> (String, String) {
        self.foreign.clone()
    }

    /// Replaces the faults in force.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.set(faults);
    }

    /// A snapshot of the counters and certificates.
    pub fn stats(&self) -> NexusStats {
        self.shared.stats()
    }

    /// Forgets the request counters and issuances-per-CSR counts (certificates stay).
    pub fn reset_stats(&self) {
        self.shared.counters.reset();
        self.shared.store().issuances_per_csr.clear();
    }

    /// Stops the server and drops open connections.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Where the API lives on the server (spec §1 default `basePath`).
const BASE_PATH: &str = "/pgwy/api";

/// Largest request body read.
const MAX_BODY_BYTES: usize = 1 << 20;

fn client_identity(ca: &TestCa, common_name: &str) -> anyhow::Result<(String, String)> {
    let now = time::OffsetDateTime::now_utc();
    let spec = LeafSpec {
        common_name: Some(common_name.to_owned()),
        names: Vec::new(),
        not_before: now - time::Duration::hours(1),
        not_after: now + time::Duration::days(365),
        serial: random_serial().to_vec(),
        usage: LeafUsage::Client,
        key_encipherment: false,
    };
    let (certificate, key) = ca.issue_with_new_key(&spec)?;
    let chain = format!(
        "{}\n{}\n",
        pem_string("CERTIFICATE", &certificate),
        pem_string("CERTIFICATE", ca.intermediate_der())
    );
    let key_pem = format!("{}\n", pem_string("PRIVATE KEY", key.secret_pkcs8_der()));
    Ok((chain, key_pem))
}

/// PEM with LF line ends and no trailing newline.
fn pem_string(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der.to_vec()), config)
        .trim_end()
        .to_owned()
}

/// State shared by every connection.
struct Shared {
    config: NexusSimulatorConfig,
    issuing: TestCa,
    officer_ca: TestCa,
    store: Mutex<Store>,
    counters: RequestCounters,
    faults: FaultInjector,
    shutdown: CancellationToken,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        // Every mutation is a single push or field update, so a poisoned lock holds usable data.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> NexusStats {
        let store = self.store();
        NexusStats {
            requests: self.counters.snapshot(),
            issuances_per_csr: store.issuances_per_csr.clone(),
            certificates: store
                .certificates
                .iter()
                .map(|certificate| NexusCertificateSummary {
                    certid: certificate.certid.clone(),
                    serial_number: certificate.serial_hex.clone(),
                    status: certificate.status_name().to_owned(),
                    subject: certificate.subject.clone(),
                    procedure: certificate.procedure.clone(),
                })
                .collect(),
        }
    }

    async fn serve_api(&self, request: Request<Incoming>) -> HttpResponse {
        let control = request.extensions().get::<ConnectionControl>().cloned();
        // The handshake requires a certificate, so this only guards against a TLS layer change.
        let Some(peer) = request.extensions().get::<PeerCertificates>().cloned() else {
            return text_response(StatusCode::FORBIDDEN, "client certificate required");
        };
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let Some(endpoint) = api::route(&method, &path) else {
            self.counters.count("unknown");
            return text_response(StatusCode::NOT_FOUND, "Not Found");
        };
        let name = endpoint.name();
        self.counters.count(name);
        if let Some(fault) = self.faults.inject(name, &self.shutdown).await {
            tracing::info!(endpoint = name, ?fault, "injected fault");
            return fault_response(fault);
        }
        let headers = request.headers().clone();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let body = match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return text_response(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
        };
        let call = api::Call {
            headers: &headers,
            query: &query,
            body: &body,
            officer_leaf: peer.0.first().map(AsRef::as_ref).unwrap_or_default(),
        };
        let outcome = api::dispatch(self, &endpoint, &call);
        tracing::debug!(
            endpoint = name,
            %method,
            %path,
            outcome = ?outcome.as_ref().map(|_| "ok").map_err(ApiError::code),
            "Nexus request"
        );
        if matches!(&outcome, Ok(api::Reply::Issued(_)))
            && self.faults.take_drop_after_order(name)
            && let Some(control) = control
        {
            tracing::info!("certificate issued; dropping the connection without a response");
            match control.close_without_response().await {}
        }
        match outcome {
            Ok(reply) => reply.into_response(),
            Err(error) => error.into_response(),
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
            _ => text_response(StatusCode::NOT_FOUND, "unknown control endpoint"),
        }
    }
}

impl Handler for Shared {
    async fn handle(&self, request: Request<Incoming>) -> HttpResponse {
        if request.uri().path().starts_with("/__simulator/") {
            self.serve_control(request).await
        } else {
            self.serve_api(request).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

fn response(status: StatusCode, headers: HeaderMap, body: Vec<u8>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn typed_response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> HttpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response(status, headers, body)
}

fn text_response(status: StatusCode, text: &str) -> HttpResponse {
    typed_response(status, "text/plain; charset=utf-8", text.as_bytes().to_vec())
}

fn json_response(status: StatusCode, value: &impl Serialize) -> HttpResponse {
    typed_response(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

/// A Tomcat-style HTML error page: what a client sees when the gateway itself fails.
fn tomcat_page(status: StatusCode) -> HttpResponse {
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("Error");
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><title>HTTP Status {code} – {reason}</title></head>\
         <body><h1>HTTP Status {code} – {reason}</h1></body></html>"
    );
    typed_response(status, "text/html;charset=utf-8", page.into_bytes())
}

fn fault_response(fault: InjectedFault) -> HttpResponse {
    match fault {
        // Inferred (spec §12): we chose HTTP 500 with -18 "Connection error" for a plain 500
        // because that is how PGWY reports losing CM; 502/503 come from a proxy or a stopped
        // Tomcat, so they carry an HTML page instead of the JSON envelope.
        InjectedFault::ServerError(StatusCode::INTERNAL_SERVER_ERROR) => {
            ApiError::ConnectionError.into_response()
        }
        InjectedFault::ServerError(status) => tomcat_page(status),
        InjectedFault::Hung => tomcat_page(StatusCode::SERVICE_UNAVAILABLE),
        // Inferred (spec §5.1, §12): -40 has no documented status or Retry-After; we chose
        // HTTP 500 like every other documented error, and no header.
        InjectedFault::RateLimited { .. } => ApiError::TooManyRequests.into_response(),
    }
}

#[cfg(test)]
mod tests;
