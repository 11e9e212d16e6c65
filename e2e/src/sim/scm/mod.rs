//! A simulator of the Sectigo Certificate Manager SSL REST API and its InCommon flavour, written
//! from `shared/spec/scm-ssl.md`: same paths, headers, field spellings, status codes, error codes
//! and asynchronous issuance, signing real certificates with a throw-away CA. It also serves the
//! DCV, Domain and DNS connector APIs of `shared/spec/scm-dcv-domains.md`, validating domains for
//! real: it fetches HTTP(S) files from a configured address and asks a configured DNS server (or,
//! for a CNAME order placed through a DNS connector, trusts the connector's agent to publish).
//! And it serves network discovery (`shared/spec/scm-discovery-alerts.md` §2), scanning for real:
//! a started task's operation connects to the task's addresses and ports (loopback only unless
//! configured otherwise) and records the certificates the TLS servers there present.
//!
//! Tests start it in-process with [`ScmSimulator::start`]; demos run the `scm-simulator` binary.
//! Besides the API it serves unauthenticated control endpoints on the same server:
//! `GET /__simulator/stats`, `PUT /__simulator/faults`, `POST /__simulator/reset`,
//! `POST /__simulator/dcv/click?domain=<d>` (the approver clicks the DCV email's link) and
//! `POST /__simulator/dcv/advance?seconds=<n>` (the DCV clock moves forward). In-process tests
//! also have [`ScmSimulator::set_connector_status`] and [`ScmSimulator::console_start_and_submit`].

mod api;
mod collect;
mod connectors;
mod csr;
mod dcv;
mod discovery;
mod domains;
mod error;
mod orders;
mod probe;
mod routes;
mod scan;

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
    header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER},
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::{
    ConnectionControl, FaultInjector, Handler, HttpResponse, InjectedFault, LeafSpec, LeafUsage,
    PeerCertificates, RequestCounters, TestCa, TlsServer, TlsServerOptions, random_serial,
};
pub use super::{Faults, RateLimitFault};
use dcv::DcvBook;
pub use dcv::{ClickError, DcvCheck, TxtAlphabet};
use discovery::DiscoveryBook;
pub use discovery::{
    DEFAULT_ASSIGNMENT_RULE, DEFAULT_DISCOVERY_AGENT, DEFAULT_DISCOVERY_BUCKET, DiscoveryOperationSummary,
    DiscoveryTaskSummary, SimBucket,
};
use error::ScmError;
use orders::OrderBook;
use routes::{Endpoint, Login, NoRoute};

/// Which product is simulated; decides the certificate-login path prefix and the vendor name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScmFlavor {
    /// Sectigo Certificate Manager: certificate login under `/private/api/ssl/v1`.
    #[default]
    Sectigo,
    /// InCommon Certificate Manager: certificate login under `/private/ssl/v1` (004's base).
    InCommon,
}

/// How the simulator reads the places where the seeds can be read two ways. The clients were
/// written against [`ScmReading::Common`]; the conformance suite runs against both, so a client
/// that only works under one reading fails.
///
/// 1. **InCommon certificate-login prefix.** Seed 004 (InCommon's document): "Client Auth URI
///    endpoint – `https://cert-manager.com/private/ssl/v1{path}`". Seed 001: "the requests must
///    have 'private' suffix in the URL, i.e. `https://cert-manager.com/private/api/ssl/v1/types`".
///    Common: InCommon serves 004's `/private/ssl/v1`. Strict: InCommon serves 001's
///    `/private/api/ssl/v1`. (Sectigo serves 001's in both.)
/// 2. **Which CSR a renewal uses.** Seed 004 renews "using the same CSR and parameters of the
///    existing certificate" and documents no `csr` field; seed 001 §3.20 says "using the CSR and
///    parameters of the initial SSL certificate" yet lists an optional `csr`. Common: a posted
///    `csr` replaces the key. Strict: every renewal reuses the initial certificate's CSR,
///    whatever is posted.
/// 3. **Collect before issuance.** Seed 001 does not say; its code table groups -1400, -183,
///    -109, -103 under "Collect" and -130 "SSL state is not 'ISSUED': {0}" under "State".
///    Common: the configured [`PendingVariant`]. Strict: -130 with the order's status.
/// 4. **List order.** Seed 001 §3.4 does not state the order of `GET /api/ssl/v1`. Common:
///    ascending `sslId`. Strict: descending (newest first).
/// 5. **Discovery operations total.** The seed's operations list example sends
///    `X-Total-Count: 0` next to a body `"total":4` (`scm-discovery-alerts.md` §2.9). Common: the
///    header carries the count. Strict: the header is `0`, as in the example.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScmReading {
    /// The readings the clients were first written against.
    #[default]
    Common,
    /// Where a seed is ambiguous, the other reading.
    Strict,
}

/// Which "not yet issued" error collect answers (spec §3.11).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingVariant {
    /// `-1400 The request is being processed by Sectigo.` (the spec's recommendation).
    #[default]
    Code1400,
    /// `0 Being processed by Sectigo`, as production clients observe it.
    Code0,
    /// `-183 Certificate is not collectable.`, as python-cert_manager treats it.
    Code183,
    /// `-103 Certificate has not been collected yet.`, from the table's "Collect" group.
    Code103,
    /// `-130 SSL state is not 'ISSUED': {status}`, from the table's "State" group.
    Code130,
}

/// A certificate profile (`certType`) offered by the simulated account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScmProfile {
    /// Profile id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Allowed terms, days.
    pub terms: Vec<u32>,
}

/// A domain registered in the simulated account at start (spec §5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimDomain {
    /// The domain name.
    pub name: String,
    /// `ACTIVE` (true) or `SUSPENDED`.
    pub active: bool,
    /// Starts validated (by HTTP, valid for `dcv_validity` from the validation date), so
    /// enrollment under it works without a DCV run.
    pub validated: bool,
    /// With `validated`: how many days before the start the validation was made (0: at the
    /// start). It expires `dcv_validity` after that date, so a domain validated elsewhere long
    /// ago can be due for revalidation, or already `EXPIRED`, when the simulator starts.
    #[serde(default)]
    pub validated_days_ago: u32,
}

impl SimDomain {
    /// An active, not yet validated domain.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            active: true,
            validated: false,
            validated_days_ago: 0,
        }
    }
}

/// A DNS connector's `status` (spec §2, §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectorStatus {
    /// `NOT_AVAILABLE`.
    NotAvailable,
    /// `NOT_CONNECTED`: the agent is installed but does not talk to SCM now.
    NotConnected,
    /// `CONNECTED`: the agent publishes records.
    Connected,
}

impl ConnectorStatus {
    /// The JSON value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAvailable => "NOT_AVAILABLE",
            Self::NotConnected => "NOT_CONNECTED",
            Self::Connected => "CONNECTED",
        }
    }
}

/// A DNS connector (an on-premises agent SCM publishes DNS records through) of the simulated
/// account (spec §6), usable by `submit/domain/cname` (spec §3.9).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimDnsConnector {
    /// `id`, the `dnsAgentUUID`: 32 hex characters without dashes (checked at start).
    pub id: String,
    /// `name`.
    pub name: String,
    /// `status` at start; [`ScmSimulator::set_connector_status`] changes it.
    pub status: ConnectorStatus,
    /// The DNS provider names `/provider` lists (e.g. `cloudflare`), one of which a connector
    /// submit must name as `dnsProviderName`.
    pub providers: Vec<String>,
}

impl SimDnsConnector {
    /// A `CONNECTED` connector with a fresh random id.
    pub fn new(name: &str, providers: &[&str]) -> Self {
        Self {
            id: crate::sim::hex_lower(&rand::random::<[u8; 16]>()),
            name: name.to_owned(),
            status: ConnectorStatus::Connected,
            providers: providers.iter().map(|&provider| provider.to_owned()).collect(),
        }
    }
}

/// Whether the account and admin may use the DCV API (spec §1.4, §9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DcvAccess {
    /// DCV is enabled for the customer and the admin has `allowDCV`.
    #[default]
    Allowed,
    /// The customer has DCV switched off: every DCV call fails with -1608, and domain details
    /// omit the validation fields.
    DisabledForCustomer,
    /// The admin lacks the `allowDCV` privilege: every DCV call fails with -3.
    NotPrivileged,
}

/// How the simulated SCM account behaves.
#[derive(Clone)]
pub struct ScmSimulatorConfig {
    /// Product flavour.
    pub flavor: ScmFlavor,
    /// The `customerUri` header value expected.
    pub customer_uri: String,
    /// The `login` header value expected.
    pub login: String,
    /// The `password` header value expected (password login).
    pub password: String,
    /// The only valid `orgId`.
    pub org_id: i64,
    /// Profiles listed by `/types` and accepted as `certType`.
    pub profiles: Vec<ScmProfile>,
    /// Custom fields every enroll must carry (listed by `/customFields` as mandatory).
    pub mandatory_custom_fields: Vec<String>,
    /// Collect answers "pending" this many times per order before the order is issued.
    pub pending_collects: u32,
    /// And the order is issued no earlier than this long after it was placed.
    pub processing_delay: Duration,
    /// Not in SCM: issue certificates valid for this long instead of `term` days, so tests can
    /// watch renewals happen in minutes (SCM terms are whole days).
    pub certificate_lifetime: Option<Duration>,
    /// Which pending error collect answers.
    pub pending_variant: PendingVariant,
    /// Orders wait in `Requested` until approved.
    pub require_approval: bool,
    /// Without registered domains (`domains` empty and none created): `None`, every domain is
    /// validated; `Some(list)`, names not equal to or under one of these fail enroll with -107.
    pub validated_domains: Option<Vec<String>>,
    /// Domains registered at start. Once any domain is registered, enrollment follows DCV state:
    /// a name must be under a validated, active registered domain.
    pub domains: Vec<SimDomain>,
    /// Whether the DCV API may be used at all.
    pub dcv_access: DcvAccess,
    /// How long a validation lasts (spec §8.4: 365 days in the examples, shrinking under SC-081;
    /// tests set seconds to watch expiry).
    pub dcv_validity: Duration,
    /// Time from a failed check to the next (`nextCheck`; spec §9 default 60 min).
    pub dcv_check_interval: Duration,
    /// A submitted order lapses this long after submit (`orderExpiration`, spec §8.4: 30 days).
    pub dcv_order_lifetime: Duration,
    /// Where HTTP checks connect (with the domain as `Host`); `None`: the domain on port 80 via
    /// the system resolver.
    pub dcv_http_address: Option<SocketAddr>,
    /// Where HTTPS checks connect (the certificate is not verified); `None`: the domain on
    /// port 443.
    pub dcv_https_address: Option<SocketAddr>,
    /// The DNS server CNAME and TXT checks ask; `None`: they fail (no public DNS in tests).
    pub dcv_dns_server: Option<SocketAddr>,
    /// Characters of the TXT value.
    pub dcv_txt_alphabet: TxtAlphabet,
    /// DNS connectors of the account (spec §6), listed in this order; none by default.
    pub dns_connectors: Vec<SimDnsConnector>,
    /// Accept client-certificate login on the `/private` prefix.
    pub client_certificate_login: bool,
    /// Not in SCM: the `sslId` of the first order, so tests running two simulators (two CA
    /// accounts) get ids that cannot be mistaken for each other's.
    pub first_ssl_id: i64,
    /// How ambiguous seeds are read (see [`ScmReading`]).
    pub reading: ScmReading,
    /// Network agent names a net task may name (discovery §2.4, §5); another name is -607 (private
    /// ranges) or -637 (public ranges). Default `["Cloud"]`.
    pub discovery_agents: Vec<String>,
    /// Certificate buckets a net task may name as `certBucketId` (discovery §2.8). Default one,
    /// [`DEFAULT_DISCOVERY_BUCKET`].
    pub discovery_buckets: Vec<SimBucket>,
    /// -303: the most public address × port pairs one task may scan. Inferred (spec §2.10 item
    /// 4): undocumented and configurable; default 65,536 (a /16 on one port).
    pub discovery_max_public_pairs: u64,
    /// -303: the most private address × port pairs one task may scan. Inferred, as above;
    /// default 1,048,576 (a /12 on one port).
    pub discovery_max_private_pairs: u64,
    /// -305: the most address × port pairs of a single `ranges[]` entry. Inferred, as above;
    /// default 1,048,576.
    pub discovery_max_range_pairs: u64,
    /// Not in SCM: the most distinct addresses one scan connects to (in range order); the rest
    /// are skipped and the scan ends "Partial SUCCESSFUL". Default 256.
    pub discovery_max_scanned_addresses: usize,
    /// Not in SCM: connect to addresses other than loopback. Off by default, so a test can never
    /// make the simulator probe a network it does not own; skipped addresses make the scan
    /// "Partial SUCCESSFUL".
    pub discovery_scan_any_address: bool,
    /// Not in SCM: how long the TCP connect and the TLS handshake to one endpoint may each take.
    pub discovery_connect_timeout: Duration,
    /// Not in SCM: a scan stays `in_progress` at least this long, so tests can stop it or start
    /// it twice (-618). Default zero.
    pub discovery_scan_duration: Duration,
    /// How long a finished scan's task shows "Scan completed (Processing Result)" before its
    /// results appear (discovery §2.3). Inferred (spec §8.3): SCM documents the state but not its
    /// length; default 200 ms.
    pub discovery_processing_time: Duration,
    /// Not in SCM: every scan fails with this `error` ("Scan FAILED"), as when an agent is lost
    /// mid-scan.
    pub discovery_scan_failure: Option<String>,
}

impl Default for ScmSimulatorConfig {
    fn default() -> Self {
        Self {
            flavor: ScmFlavor::Sectigo,
            customer_uri: "cst-sim".to_owned(),
            login: "api-admin".to_owned(),
            password: "sim-password-123".to_owned(),
            org_id: 8932,
            profiles: vec![ScmProfile {
                id: 5153,
                name: "InstantSSL Pro".to_owned(),
                terms: vec![90, 365],
            }],
            mandatory_custom_fields: Vec::new(),
            pending_collects: 2,
            processing_delay: Duration::ZERO,
            certificate_lifetime: None,
            pending_variant: PendingVariant::Code1400,
            require_approval: false,
            validated_domains: None,
            domains: Vec::new(),
            dcv_access: DcvAccess::Allowed,
            dcv_validity: Duration::from_secs(365 * 24 * 3600),
            dcv_check_interval: Duration::from_secs(3600),
            dcv_order_lifetime: Duration::from_secs(30 * 24 * 3600),
            dcv_http_address: None,
            dcv_https_address: None,
            dcv_dns_server: None,
            dcv_txt_alphabet: TxtAlphabet::Hostile,
            dns_connectors: Vec::new(),
            client_certificate_login: true,
            first_ssl_id: 1000,
            reading: ScmReading::Common,
            discovery_agents: vec![DEFAULT_DISCOVERY_AGENT.to_owned()],
            discovery_buckets: vec![SimBucket::default_bucket()],
            discovery_max_public_pairs: 65_536,
            discovery_max_private_pairs: 1 << 20,
            discovery_max_range_pairs: 1 << 20,
            discovery_max_scanned_addresses: 256,
            discovery_scan_any_address: false,
            discovery_connect_timeout: Duration::from_secs(2),
            discovery_scan_duration: Duration::ZERO,
            discovery_processing_time: Duration::from_millis(200),
            discovery_scan_failure: None,
        }
    }
}

impl fmt::Debug for ScmSimulatorConfig {
    // Hand-written so the password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScmSimulatorConfig")
            .field("flavor", &self.flavor)
            .field("customer_uri", &self.customer_uri)
            .field("login", &self.login)
            .field("password", &"<redacted>")
            .field("org_id", &self.org_id)
            .field("profiles", &self.profiles)
            .field("mandatory_custom_fields", &self.mandatory_custom_fields)
            .field("pending_collects", &self.pending_collects)
            .field("processing_delay", &self.processing_delay)
            .field("certificate_lifetime", &self.certificate_lifetime)
            .field("pending_variant", &self.pending_variant)
            .field("require_approval", &self.require_approval)
            .field("validated_domains", &self.validated_domains)
            .field("domains", &self.domains)
            .field("dcv_access", &self.dcv_access)
            .field("dcv_validity", &self.dcv_validity)
            .field("dcv_check_interval", &self.dcv_check_interval)
            .field("dcv_order_lifetime", &self.dcv_order_lifetime)
            .field("dcv_http_address", &self.dcv_http_address)
            .field("dcv_https_address", &self.dcv_https_address)
            .field("dcv_dns_server", &self.dcv_dns_server)
            .field("dcv_txt_alphabet", &self.dcv_txt_alphabet)
            .field("dns_connectors", &self.dns_connectors)
            .field("client_certificate_login", &self.client_certificate_login)
            .field("first_ssl_id", &self.first_ssl_id)
            .field("reading", &self.reading)
            .field("discovery_agents", &self.discovery_agents)
            .field("discovery_buckets", &self.discovery_buckets)
            .field("discovery_max_public_pairs", &self.discovery_max_public_pairs)
            .field("discovery_max_private_pairs", &self.discovery_max_private_pairs)
            .field("discovery_max_range_pairs", &self.discovery_max_range_pairs)
            .field(
                "discovery_max_scanned_addresses",
                &self.discovery_max_scanned_addresses,
            )
            .field("discovery_scan_any_address", &self.discovery_scan_any_address)
            .field("discovery_connect_timeout", &self.discovery_connect_timeout)
            .field("discovery_scan_duration", &self.discovery_scan_duration)
            .field("discovery_processing_time", &self.discovery_processing_time)
            .field("discovery_scan_failure", &self.discovery_scan_failure)
            .finish()
    }
}

/// What the simulator saw: requests per endpoint, orders per CSR, every order, and the discovery
/// tasks and operations.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Endpoint name → requests received (faulted ones included).
    pub requests: BTreeMap<String, u64>,
    /// Lower-case hex SHA-256 of the DER CSR → orders created with it (enroll, renew,
    /// renewById, replace).
    pub orders_per_csr: BTreeMap<String, u32>,
    /// Every order, by `sslId`.
    pub orders: Vec<OrderSummary>,
    /// `METHOD path` of every API request routed to an endpoint, in arrival order (the first
    /// [`MAX_CALL_LOG`] only), so tests can check which ids and serials reached this CA.
    pub calls: Vec<String>,
    /// Every DCV check the simulator made (file fetches, DNS questions, link clicks), in order.
    #[serde(default)]
    pub dcv_checks: Vec<DcvCheck>,
    /// HTTP(S) files fetched by DCV checks.
    #[serde(default)]
    pub dcv_http_fetches: u64,
    /// DNS questions asked by DCV checks (a check of a CNAME published through a DNS connector
    /// asks none).
    #[serde(default)]
    pub dcv_dns_queries: u64,
    /// Every net task the simulator holds, by id.
    #[serde(default)]
    pub discovery_tasks: Vec<DiscoveryTaskSummary>,
    /// Every discovery operation (scan run), in start order.
    #[serde(default)]
    pub discovery_operations: Vec<DiscoveryOperationSummary>,
}

/// Longest call log kept by a simulator.
pub const MAX_CALL_LOG: usize = 10_000;

/// One order as [`Stats`] reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderSummary {
    /// `sslId`.
    pub ssl_id: i64,
    /// Status, as details shows it.
    pub status: String,
    /// Lower-case hex SHA-256 of the DER CSR in force.
    pub csr_sha256: String,
    /// `serialNumber` once issued.
    pub serial_number: Option<String>,
    /// Subject common name.
    pub common_name: Option<String>,
    /// `dcvMode` of the order (spec §4) as the enroll or renewal that placed it sent it (or
    /// the last replace that sent one); a renewal that sent none carries its initial order's.
    #[serde(default)]
    pub dcv_mode: Option<String>,
    /// `dcvEmail` of the order, sent along with `dcv_mode` (the same rules).
    #[serde(default)]
    pub dcv_email: Option<String>,
}

/// A running SCM simulator. Dropping it without [`ScmSimulator::shutdown`] leaves the server
/// tasks running until the runtime ends.
pub struct ScmSimulator {
    server: TlsServer,
    shared: Arc<Shared>,
    tls_ca_pem: String,
}

impl fmt::Debug for ScmSimulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScmSimulator")
            .field("base_url", &self.base_url())
            .field("flavor", &self.shared.config.flavor)
            .finish_non_exhaustive()
    }
}

impl ScmSimulator {
    /// Starts on `127.0.0.1` with a free port.
    pub async fn start(config: ScmSimulatorConfig) -> anyhow::Result<ScmSimulator> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts on `addr`, with fresh TLS and issuing CAs.
    ///
    /// # Errors
    ///
    /// A DNS connector id that is not 32 hex characters or is given twice; the TLS server not
    /// starting.
    pub async fn start_on(addr: SocketAddr, config: ScmSimulatorConfig) -> anyhow::Result<ScmSimulator> {
        connectors::check_config(&config.dns_connectors)?;
        let tls_ca = TestCa::generate("PKI Operator Simulator TLS")?;
        let issuing = TestCa::generate(match config.flavor {
            ScmFlavor::Sectigo => "Sectigo Simulator",
            ScmFlavor::InCommon => "InCommon Simulator",
        })?;
        let (certificate_chain, private_key) = tls_ca.loopback_server_identity()?;
        // Inferred (spec §1.2): we chose the issuing hierarchy as the client CA because 004 says
        // login certificates are "issued through InCommon CM". The intermediate is a trust anchor
        // too, so a client that presents only its leaf is still accepted.
        let client_roots = if config.client_certificate_login {
            vec![issuing.root_der().clone(), issuing.intermediate_der().clone()]
        } else {
            Vec::new()
        };
        let shutdown = CancellationToken::new();
        discovery::check_config(&config)?;
        let book = Mutex::new(OrderBook::starting_at(config.first_ssl_id));
        let dcv = Mutex::new(DcvBook::seeded(&config));
        let discovery = Arc::new(Mutex::new(DiscoveryBook::seeded(&config)));
        let shared = Arc::new(Shared {
            config,
            issuing,
            book,
            dcv,
            discovery,
            counters: RequestCounters::default(),
            calls: Mutex::new(Vec::new()),
            faults: FaultInjector::default(),
            shutdown: shutdown.clone(),
        });
        let options = TlsServerOptions {
            certificate_chain,
            private_key,
            client_roots,
            require_client_certificate: false,
        };
        let server = TlsServer::start(addr, options, Arc::clone(&shared), shutdown).await?;
        tracing::info!(address = %server.local_addr(), flavor = ?shared.config.flavor, "SCM simulator started");
        Ok(Self {
            server,
            shared,
            tls_ca_pem: tls_ca.root_pem(),
        })
    }

    /// `https://127.0.0.1:<port>`: no trailing slash, no `/api`.
    pub fn base_url(&self) -> String {
        self.server.https_origin()
    }

    /// The CA that signed the server's TLS certificate (PEM).
    pub fn tls_ca_pem(&self) -> String {
        self.tls_ca_pem.clone()
    }

    /// The root that issued certificates chain to (PEM).
    pub fn issuing_root_pem(&self) -> String {
        self.shared.issuing.root_pem()
    }

    /// A client certificate for `/private` login as `login`: the certificate chain PEM (leaf,
    /// then intermediate) and its PKCS#8 key PEM.
    ///
    /// # Panics
    ///
    /// Only if the system's random number generator fails.
    #[allow(
        clippy::expect_used,
        reason = "the signature is fixed by the tests' API; rcgen fails only when the RNG does, and a \
                  test cannot go on without the certificate it asked for"
    )]
    pub fn issue_client_certificate(&self, login: &str) -> (String, String) {
        let now = time::OffsetDateTime::now_utc();
        let spec = LeafSpec {
            common_name: Some(login.to_owned()),
            names: Vec::new(),
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(365),
            serial: random_serial().to_vec(),
            usage: LeafUsage::Client,
            key_encipherment: false,
        };
        let (certificate, key) = self
            .shared
            .issuing
            .issue_with_new_key(&spec)
            .expect("issuing a client certificate with a fresh P-256 key");
        let chain = format!(
            "{}\n{}\n",
            csr::pem_string("CERTIFICATE", &certificate),
            csr::pem_string("CERTIFICATE", self.shared.issuing.intermediate_der())
        );
        let key_pem = format!("{}\n", csr::pem_string("PRIVATE KEY", key.secret_pkcs8_der()));
        (chain, key_pem)
    }

    /// Replaces the faults in force.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.set(faults);
    }

    /// A snapshot of the counters and orders.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Forgets the request counters, orders-per-CSR counts and DCV checks (orders and domains
    /// themselves stay).
    pub fn reset_stats(&self) {
        self.shared.reset_stats();
    }

    /// The approver clicks the link of `domain`'s submitted EMAIL order, which validates it.
    pub fn click_email_link(&self, domain: &str) -> Result<(), ClickError> {
        dcv::click(&self.shared, domain)
    }

    /// Moves the DCV clock forward (validity expiry, order lapse and `nextCheck` follow it).
    pub fn advance_dcv_clock(&self, by: Duration) {
        self.shared.dcv().advance_clock(by);
    }

    /// Changes the `status` of the DNS connector `id` (spec §6), as its agent going away or
    /// coming back would. Connector submits and the checks of orders placed through it follow.
    ///
    /// # Errors
    ///
    /// No connector has this id.
    pub fn set_connector_status(&self, id: &str, status: ConnectorStatus) -> Result<(), String> {
        self.shared.dcv().set_connector_status(id, status)
    }

    /// A person in the SCM console validates `domain` by `mode` (`HTTP`, `HTTPS`, `CNAME`, `TXT`
    /// or `EMAIL`, any case): the DCV API's start for the mode (none for TXT) and then its
    /// submit run exactly as an API client's calls would, with the same refusals, state changes
    /// and first check, but without counting as API requests. EMAIL submits to the first
    /// address start lists. A test uses it to put an order in progress that the operator did
    /// not place.
    ///
    /// # Errors
    ///
    /// An unknown mode, or the SCM error (`code description`) the start or submit answered.
    pub async fn console_start_and_submit(&self, domain: &str, mode: &str) -> Result<(), String> {
        let mode = dcv::Mode::parse(mode).ok_or_else(|| format!("unknown DCV mode {mode:?}"))?;
        dcv::console(&self.shared, domain, mode)
            .await
            .map_err(|error| format!("{} {error}", error.code()))
    }

    /// Stops the server and drops open connections.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Largest request body read (a CSR is at most 32 767 characters).
const MAX_BODY_BYTES: usize = 1 << 20;

/// State shared by every connection.
struct Shared {
    config: ScmSimulatorConfig,
    issuing: TestCa,
    book: Mutex<OrderBook>,
    dcv: Mutex<DcvBook>,
    /// Shared with the background scans.
    discovery: Arc<Mutex<DiscoveryBook>>,
    counters: RequestCounters,
    calls: Mutex<Vec<String>>,
    faults: FaultInjector,
    shutdown: CancellationToken,
}

impl Shared {
    fn book(&self) -> MutexGuard<'_, OrderBook> {
        // A panic while holding the lock cannot leave an order half-written in a way later
        // requests could not cope with, so a poisoned lock is used as is.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn dcv(&self) -> MutexGuard<'_, DcvBook> {
        // As for the order book: every change is complete before the lock is released.
        self.dcv.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn discovery(&self) -> MutexGuard<'_, DiscoveryBook> {
        // As for the order book: every change is complete before the lock is released.
        self.discovery.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> Stats {
        let dcv_checks = self.dcv().checks.clone();
        // Only the checks the simulator made itself: a connector's CNAME asks no DNS server.
        let count = |methods: [&str; 2]| {
            let checks = dcv_checks
                .iter()
                .filter(|check| check.connector.is_none() && methods.contains(&check.method.as_str()))
                .count();
            u64::try_from(checks).unwrap_or(u64::MAX)
        };
        let (dcv_http_fetches, dcv_dns_queries) = (count(["HTTP", "HTTPS"]), count(["CNAME", "TXT"]));
        let (discovery_tasks, discovery_operations) = {
            let discovery = self.discovery();
            (discovery.task_summaries(), discovery.operation_summaries())
        };
        let mut book = self.book();
        for order in book.orders.values_mut() {
            order.advance(&self.issuing);
        }
        Stats {
            requests: self.counters.snapshot(),
            calls: self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            orders_per_csr: book.orders_per_csr.clone(),
            orders: book
                .orders
                .values()
                .map(|order| OrderSummary {
                    ssl_id: order.ssl_id,
                    status: order.status.as_str().to_owned(),
                    csr_sha256: order.csr.sha256_lower(),
                    serial_number: order.serial().map(str::to_owned),
                    common_name: order.common_name.clone(),
                    dcv_mode: order.dcv_mode.clone(),
                    dcv_email: order.dcv_email.clone(),
                })
                .collect(),
            dcv_checks,
            dcv_http_fetches,
            dcv_dns_queries,
            discovery_tasks,
            discovery_operations,
        }
    }

    fn reset_stats(&self) {
        self.counters.reset();
        self.dcv().checks.clear();
        self.book().orders_per_csr.clear();
    }

    fn authenticate(&self, login: Login, request: &Request<Incoming>) -> Result<(), ScmError> {
        let headers = request.headers();
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let config = &self.config;
        if header("login") != Some(config.login.as_str())
            || header("customerUri") != Some(config.customer_uri.as_str())
        {
            return Err(ScmError::UnknownUser);
        }
        match login {
            Login::Password if header("password") == Some(config.password.as_str()) => Ok(()),
            Login::Password => Err(ScmError::UnknownUser),
            Login::Certificate => {
                if !config.client_certificate_login {
                    return Err(ScmError::UnknownUser);
                }
                // rustls already verified the chain against the client CA; what is left is
                // binding the certificate to the admin named in `login`.
                // Inferred (spec §1.2): we chose "subject CN equals the login" as that binding
                // because the docs tie the certificate to an admin without saying how.
                let peer = request
                    .extensions()
                    .get::<PeerCertificates>()
                    .ok_or(ScmError::UnknownUser)?;
                let leaf = peer.0.first().ok_or(ScmError::UnknownUser)?;
                let (_, certificate) = X509Certificate::from_der(leaf).map_err(|_| ScmError::UnknownUser)?;
                let common_name = certificate
                    .subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok());
                if common_name == Some(config.login.as_str()) {
                    Ok(())
                } else {
                    Err(ScmError::UnknownUser)
                }
            }
        }
    }

    async fn serve_api(&self, request: Request<Incoming>) -> HttpResponse {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let (login, endpoint) = match routes::route(self.config.flavor, self.config.reading, &method, &path) {
            Ok(found) => found,
            Err(no_route) => {
                self.counters.count("unknown");
                tracing::debug!(%method, %path, ?no_route, "no SCM route");
                let status = match no_route {
                    NoRoute::NotFound => StatusCode::NOT_FOUND,
                    NoRoute::NotImplemented => StatusCode::NOT_IMPLEMENTED,
                    NoRoute::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
                };
                return error_response(&ScmError::Unknown(status));
            }
        };
        let name = endpoint.name();
        self.counters.count(name);
        {
            let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
            if calls.len() < MAX_CALL_LOG {
                calls.push(format!("{method} {path}"));
            }
        }
        if let Some(fault) = self.faults.inject(name, &self.shutdown).await {
            tracing::info!(endpoint = name, ?fault, "injected fault");
            return fault_response(fault);
        }
        if let Err(error) = self.authenticate(login, &request) {
            tracing::debug!(endpoint = name, "authentication failed");
            return error_response(&error);
        }
        let control = request.extensions().get::<ConnectionControl>().cloned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let host = request
            .headers()
            .get(hyper::header::HOST)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return error_response(&ScmError::Unknown(StatusCode::PAYLOAD_TOO_LARGE)),
        };
        let call = api::Call::new(&query, body).with_host(host);
        let outcome = if endpoint.is_domain() {
            domains::dispatch(self, &endpoint, &call)
        } else if endpoint.is_connector() {
            connectors::dispatch(self, &endpoint, &call)
        } else if endpoint.is_discovery() {
            discovery::dispatch(self, &endpoint, &call)
        } else if endpoint.is_dcv() {
            dcv::dispatch(self, &endpoint, &call).await
        } else {
            api::dispatch(self, &endpoint, &call)
        };
        tracing::debug!(
            endpoint = name,
            %method,
            %path,
            outcome = ?outcome.as_ref().map(|_| "ok").map_err(ScmError::code),
            "SCM request"
        );
        // A discovery task create counts as an order only when the faults name it, so that
        // `drop_after_enroll` without `endpoints` keeps meaning enroll.
        let drops = endpoint == Endpoint::Enroll
            || (endpoint == Endpoint::DiscoveryCreateTask && self.faults.names(name));
        if outcome.is_ok()
            && drops
            && self.faults.take_drop_after_order(name)
            && let Some(control) = control
        {
            tracing::info!("order recorded; dropping the connection without a response");
            match control.close_without_response().await {}
        }
        match outcome {
            Ok(reply) => reply.into_response(),
            Err(error) => error_response(&error),
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
                        empty_response(StatusCode::NO_CONTENT)
                    }
                    Err(error) => text_response(StatusCode::BAD_REQUEST, &format!("invalid faults: {error}")),
                }
            }
            (Method::POST, "/__simulator/reset") => {
                self.reset_stats();
                empty_response(StatusCode::NO_CONTENT)
            }
            (Method::POST, "/__simulator/dcv/click") => {
                let Some(domain) = query_param(&request, "domain") else {
                    return text_response(StatusCode::BAD_REQUEST, "domain query parameter missing");
                };
                match dcv::click(self, &domain) {
                    Ok(()) => empty_response(StatusCode::NO_CONTENT),
                    Err(error @ ClickError::UnknownDomain(_)) => {
                        text_response(StatusCode::NOT_FOUND, &error.to_string())
                    }
                    Err(error @ ClickError::NoEmailOrder(_)) => {
                        text_response(StatusCode::CONFLICT, &error.to_string())
                    }
                }
            }
            (Method::POST, "/__simulator/dcv/advance") => {
                match query_param(&request, "seconds").and_then(|s| s.parse::<u64>().ok()) {
                    Some(seconds) => {
                        self.dcv().advance_clock(Duration::from_secs(seconds));
                        empty_response(StatusCode::NO_CONTENT)
                    }
                    None => text_response(
                        StatusCode::BAD_REQUEST,
                        "seconds query parameter missing or invalid",
                    ),
                }
            }
            _ => text_response(StatusCode::NOT_FOUND, "unknown control endpoint"),
        }
    }
}

/// A control endpoint's query parameter.
fn query_param(request: &Request<Incoming>, name: &str) -> Option<String> {
    let query = request.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
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

/// The content type of JSON success bodies in the docs' examples.
const JSON_UTF8: &str = "application/json;charset=UTF-8";

fn response(status: StatusCode, headers: HeaderMap, body: Vec<u8>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn empty_response(status: StatusCode) -> HttpResponse {
    response(status, HeaderMap::new(), Vec::new())
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
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    response(status, headers, serde_json::to_vec(value).unwrap_or_default())
}

/// Errors carry `application/json` without charset, as in the docs' 401 example (spec §1.4).
fn error_response(error: &ScmError) -> HttpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response(
        error.status(),
        headers,
        serde_json::to_vec(&error.body()).unwrap_or_default(),
    )
}

fn fault_response(fault: InjectedFault) -> HttpResponse {
    match fault {
        InjectedFault::ServerError(status) => error_response(&ScmError::Internal(status)),
        InjectedFault::Hung => error_response(&ScmError::Internal(StatusCode::SERVICE_UNAVAILABLE)),
        InjectedFault::RateLimited { retry_after_secs } => {
            // Inferred (spec §1.3): we chose 429 with `Retry-After` and the generic -1 body
            // because SCM documents no 429 at all: this is an operational fault (a gateway
            // throttling the API), not an API answer with a code of its own.
            let mut response = error_response(&ScmError::Unknown(StatusCode::TOO_MANY_REQUESTS));
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
    }
}

#[cfg(test)]
mod dcv_tests;
#[cfg(test)]
mod discovery_tests;
#[cfg(test)]
mod tests;
