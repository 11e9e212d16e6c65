//! Shared plumbing of the CA API simulators: a TLS HTTP/1.1 server (optional client certificates,
//! connections a handler can drop without answering), a throw-away test CA, request counters and
//! fault injection.
//!
//! The vendor-specific APIs live in submodules ([`scm`], [`nexus`], [`certmgmt`]); everything here is
//! reusable by any simulator that speaks HTTPS and issues certificates.

pub mod certmgmt;
pub mod nexus;
pub mod process;
pub mod scm;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    fmt,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber, string::PrintableString,
};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use scm::{
    ClickError, ConnectorStatus, DEFAULT_ASSIGNMENT_RULE, DEFAULT_DISCOVERY_AGENT, DEFAULT_DISCOVERY_BUCKET,
    DcvAccess, DcvCheck, DiscoveryOperationSummary, DiscoveryTaskSummary, OrderSummary, PendingVariant,
    ScmFlavor, ScmProfile, ScmSimulator, ScmSimulatorConfig, SimBucket, SimDnsConnector, SimDomain, Stats,
    TxtAlphabet,
};

/// A response as every simulator handler builds it: the whole body in memory.
pub type HttpResponse = Response<Full<Bytes>>;

/// Why the simulator plumbing could not start or issue.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// rcgen refused to build or sign a certificate.
    #[error("issuing the {what} certificate: {source}")]
    IssueCertificate {
        /// Which certificate.
        what: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// A subject alternative name is not encodable (for example a non-ASCII DNS name).
    #[error("subject alternative name {name:?} is not encodable: {source}")]
    EncodeName {
        /// The offending name.
        name: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// rustls rejected the server configuration.
    #[error("configuring TLS: {0}")]
    ConfigureTls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the client CA certificates.
    #[error("building the client certificate verifier: {0}")]
    BuildClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// The listening socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
}

// ---------------------------------------------------------------------------------------------
// Test CA
// ---------------------------------------------------------------------------------------------

/// A name to put in a certificate's subject alternative name extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectName {
    /// `dNSName`.
    Dns(String),
    /// `iPAddress`.
    Ip(IpAddr),
    /// `rfc822Name`.
    Email(String),
    /// `uniformResourceIdentifier`.
    Uri(String),
}

impl SubjectName {
    /// Classifies a textual name the way CA order forms do: an IP literal, an address with `@`,
    /// a URI with `://`, otherwise a DNS name.
    pub fn parse(text: &str) -> Self {
        if let Ok(ip) = text.parse::<IpAddr>() {
            Self::Ip(ip)
        } else if text.contains("://") {
            Self::Uri(text.to_owned())
        } else if text.contains('@') {
            Self::Email(text.to_owned())
        } else {
            Self::Dns(text.to_owned())
        }
    }

    fn to_san(&self) -> Result<SanType, SimError> {
        let encode = |name: &str, source| SimError::EncodeName {
            name: name.to_owned(),
            source,
        };
        Ok(match self {
            Self::Dns(name) => SanType::DnsName(name.clone().try_into().map_err(|e| encode(name, e))?),
            Self::Ip(ip) => SanType::IpAddress(*ip),
            Self::Email(name) => SanType::Rfc822Name(name.clone().try_into().map_err(|e| encode(name, e))?),
            Self::Uri(name) => SanType::URI(name.clone().try_into().map_err(|e| encode(name, e))?),
        })
    }
}

impl fmt::Display for SubjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) | Self::Email(name) | Self::Uri(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// What an end-entity certificate is for; decides its extended key usages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafUsage {
    /// TLS server (and client, as public SSL certificates carry both).
    Server,
    /// TLS client only (API login certificates).
    Client,
}

/// The variable parts of an end-entity certificate.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// Subject common name; the subject is empty without one.
    pub common_name: Option<String>,
    /// Subject alternative names, in order.
    pub names: Vec<SubjectName>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Serial number bytes (big-endian, positive).
    pub serial: Vec<u8>,
    /// Extended key usages to grant.
    pub usage: LeafUsage,
    /// Whether to grant `keyEncipherment` (RSA keys) besides `digitalSignature`.
    pub key_encipherment: bool,
}

/// A throw-away two-level CA: a self-signed root and an intermediate that signs end entities.
///
/// Keys are ECDSA P-256: generated in microseconds, so every simulator start gets fresh ones and
/// nothing secret is ever stored in the repository.
pub struct TestCa {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
    root_subject: String,
    intermediate_subject: String,
}

impl fmt::Debug for TestCa {
    // Hand-written so the signing keys can never end up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa")
            .field("root", &self.root_subject)
            .field("intermediate", &self.intermediate_subject)
            .finish_non_exhaustive()
    }
}

const ORGANIZATION: &str = "PKI Operator Simulator";

impl TestCa {
    /// Generates a root `<name> Root CA` and an intermediate `<name> Issuing CA`, both valid from
    /// a day ago for ten years.
    pub fn generate(name: &str) -> Result<Self, SimError> {
        let now = OffsetDateTime::now_utc();
        let ca_params = |common_name: &str, path_len: Option<u8>| {
            let mut params = CertificateParams::default();
            params.distinguished_name = distinguished_name(common_name);
            params.is_ca =
                IsCa::Ca(path_len.map_or(BasicConstraints::Unconstrained, BasicConstraints::Constrained));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(3650);
            params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
            params.use_authority_key_identifier_extension = true;
            params
        };
        let issue_error = |what: &str| {
            let what = what.to_owned();
            move |source| SimError::IssueCertificate { what, source }
        };
        let root_name = format!("{name} Root CA");
        let intermediate_name = format!("{name} Issuing CA");
        let root_key = KeyPair::generate().map_err(issue_error(&root_name))?;
        let root = CertifiedIssuer::self_signed(ca_params(&root_name, None), root_key)
            .map_err(issue_error(&root_name))?;
        let intermediate_key = KeyPair::generate().map_err(issue_error(&intermediate_name))?;
        let intermediate =
            CertifiedIssuer::signed_by(ca_params(&intermediate_name, Some(0)), intermediate_key, &root)
                .map_err(issue_error(&intermediate_name))?;
        Ok(Self {
            root,
            intermediate,
            root_subject: subject_string(&root_name),
            intermediate_subject: subject_string(&intermediate_name),
        })
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> &CertificateDer<'static> {
        self.root.der()
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// The intermediate certificate, DER.
    pub fn intermediate_der(&self) -> &CertificateDer<'static> {
        self.intermediate.der()
    }

    /// The intermediate certificate, PEM.
    pub fn intermediate_pem(&self) -> String {
        self.intermediate.pem()
    }

    /// The root's subject DN, `CN=…,O=…,C=US`.
    pub fn root_subject(&self) -> &str {
        &self.root_subject
    }

    /// The intermediate's subject DN (the issuer DN of every end entity).
    pub fn intermediate_subject(&self) -> &str {
        &self.intermediate_subject
    }

    /// Signs an end-entity certificate for the public key `spki_der` (a DER
    /// `SubjectPublicKeyInfo`, e.g. taken from a CSR) with the intermediate.
    pub fn issue(&self, spki_der: &[u8], spec: &LeafSpec) -> Result<CertificateDer<'static>, SimError> {
        let what = spec
            .common_name
            .clone()
            .unwrap_or_else(|| "end-entity".to_owned());
        let public_key =
            rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(|source| SimError::IssueCertificate {
                what: what.clone(),
                source,
            })?;
        let params = leaf_params(spec)?;
        let certificate = params
            .signed_by(&public_key, &self.intermediate)
            .map_err(|source| SimError::IssueCertificate { what, source })?;
        Ok(certificate.der().clone())
    }

    /// Generates a P-256 key and signs a certificate for it: for the simulators' own TLS server
    /// and for API login certificates. Returns the certificate and the key (PKCS#8).
    pub fn issue_with_new_key(
        &self,
        spec: &LeafSpec,
    ) -> Result<(CertificateDer<'static>, PrivatePkcs8KeyDer<'static>), SimError> {
        let what = spec
            .common_name
            .clone()
            .unwrap_or_else(|| "end-entity".to_owned());
        let key = KeyPair::generate().map_err(|source| SimError::IssueCertificate {
            what: what.clone(),
            source,
        })?;
        let params = leaf_params(spec)?;
        let certificate = params
            .signed_by(&key, &self.intermediate)
            .map_err(|source| SimError::IssueCertificate { what, source })?;
        Ok((
            certificate.der().clone(),
            PrivatePkcs8KeyDer::from(key.serialize_der()),
        ))
    }

    /// A TLS server certificate for `127.0.0.1`, `::1` and `localhost`, valid for a year, with
    /// its chain (leaf, intermediate) and key, ready for [`TlsServerOptions`].
    pub fn loopback_server_identity(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), SimError> {
        let now = OffsetDateTime::now_utc();
        let spec = LeafSpec {
            common_name: Some("localhost".to_owned()),
            names: vec![
                SubjectName::Dns("localhost".to_owned()),
                SubjectName::Ip(IpAddr::from([127, 0, 0, 1])),
                SubjectName::Ip(IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1])),
            ],
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(365),
            serial: random_serial().to_vec(),
            usage: LeafUsage::Server,
            key_encipherment: false,
        };
        let (leaf, key) = self.issue_with_new_key(&spec)?;
        Ok((
            vec![leaf, self.intermediate_der().clone()],
            PrivateKeyDer::Pkcs8(key),
        ))
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    // RFC 5280 wants countryName as PrintableString; rcgen would otherwise pick UTF8String.
    if let Ok(country) = PrintableString::try_from("US") {
        name.push(DnType::CountryName, DnValue::PrintableString(country));
    }
    name.push(DnType::OrganizationName, ORGANIZATION);
    name.push(DnType::CommonName, common_name);
    name
}

/// The DN in the Java `X500Principal` style SCM shows (most specific first, no spaces).
fn subject_string(common_name: &str) -> String {
    format!("CN={common_name},O={ORGANIZATION},C=US")
}

fn leaf_params(spec: &LeafSpec) -> Result<CertificateParams, SimError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    if let Some(common_name) = &spec.common_name {
        name.push(DnType::CommonName, common_name.as_str());
    }
    params.distinguished_name = name;
    params.subject_alt_names = spec
        .names
        .iter()
        .map(SubjectName::to_san)
        .collect::<Result<_, _>>()?;
    params.not_before = spec.not_before;
    params.not_after = spec.not_after;
    params.serial_number = Some(SerialNumber::from_slice(&spec.serial));
    // CA:FALSE spelled out, as public CAs do, so chain builders never mistake the leaf for a CA.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if spec.key_encipherment {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    params.extended_key_usages = match spec.usage {
        LeafUsage::Server => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        LeafUsage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// 16 random bytes usable as a positive, non-zero-led DER serial number.
pub fn random_serial() -> [u8; 16] {
    let mut serial: [u8; 16] = rand::rng().random();
    // Clear the sign bit (DER INTEGERs are signed) and keep the first byte non-zero so the
    // encoding is exactly 16 bytes and the hex rendering never starts with `00`.
    serial[0] = (serial[0] & 0x7f).max(1);
    serial
}

// ---------------------------------------------------------------------------------------------
// TLS HTTP server
// ---------------------------------------------------------------------------------------------

/// The client's certificate chain (leaf first), present in a request's extensions when the client
/// authenticated with a certificate that chains to the server's client CA.
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// Present in every request's extensions: lets a handler close the TCP connection without writing
/// any HTTP response (a crash between "order recorded" and "response sent").
#[derive(Clone, Debug)]
pub struct ConnectionControl {
    abort: Arc<Notify>,
}

impl ConnectionControl {
    /// Asks the connection task to drop the connection and waits for it to happen; the returned
    /// future never completes (the connection task drops it together with the connection).
    pub async fn close_without_response(&self) -> Infallible {
        // `notify_one` keeps a permit when the connection task is not waiting yet, so the
        // request cannot be lost between here and its `select!`.
        self.abort.notify_one();
        std::future::pending().await
    }
}

/// Serves the requests of a simulator. Each request carries [`ConnectionControl`] and, with a
/// verified client certificate, [`PeerCertificates`] in its extensions.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, request: Request<Incoming>) -> impl Future<Output = HttpResponse> + Send;
}

/// Certificates and key of a [`TlsServer`].
pub struct TlsServerOptions {
    /// Server certificate chain, leaf first.
    pub certificate_chain: Vec<CertificateDer<'static>>,
    /// The server's private key.
    pub private_key: PrivateKeyDer<'static>,
    /// Trust anchors for client certificates. Empty: no client certificate is requested.
    pub client_roots: Vec<CertificateDer<'static>>,
    /// With `client_roots`: refuse a handshake without a client certificate (Nexus' Tomcat
    /// `clientAuth`), instead of letting password clients connect without one (SCM).
    pub require_client_certificate: bool,
}

impl fmt::Debug for TlsServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerOptions")
            .field("certificate_chain", &self.certificate_chain.len())
            .field("client_roots", &self.client_roots.len())
            .finish_non_exhaustive()
    }
}

/// Longest a client may take for the TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running HTTPS/1.1 server on its own tasks. [`TlsServer::shutdown`] stops it.
#[derive(Debug)]
pub struct TlsServer {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    connections: TaskTracker,
    accept_loop: JoinHandle<()>,
}

impl TlsServer {
    /// Binds `addr` and serves `handler` until [`TlsServer::shutdown`].
    pub async fn start<H: Handler>(
        addr: SocketAddr,
        options: TlsServerOptions,
        handler: Arc<H>,
        shutdown: CancellationToken,
    ) -> Result<Self, SimError> {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(options)?));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        let connections = TaskTracker::new();
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            acceptor,
            handler,
            shutdown.clone(),
            connections.clone(),
        ));
        Ok(Self {
            local_addr,
            shutdown,
            connections,
            accept_loop,
        })
    }

    /// The bound address (with the real port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https://<address>`: a server bound to every interface is named by loopback, which its
    /// TLS certificate covers.
    pub fn https_origin(&self) -> String {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::IpAddr::from([127, 0, 0, 1]));
        }
        format!("https://{addr}")
    }

    /// Stops accepting, drops every open connection and waits for their tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.accept_loop.await;
        self.connections.close();
        self.connections.wait().await;
    }
}

fn server_config(options: TlsServerOptions) -> Result<ServerConfig, SimError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        ServerConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
    let builder = if options.client_roots.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for root in options.client_roots {
            roots.add(root)?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if options.require_client_certificate {
            verifier.build()?
        } else {
            verifier.allow_unauthenticated().build()?
        };
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_single_cert(options.certificate_chain, options.private_key)?;
    // Only HTTP/1.1 is served; advertising it lets ALPN-capable clients settle on it at once.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handler: Arc<H>,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically EMFILE; back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let handler = Arc::clone(&handler);
        let shutdown = shutdown.clone();
        // Shutdown ends every phase of a connection at once, the TLS handshake included, and
        // dropping the connection future closes the socket without a response.
        connections.spawn(async move {
            tokio::select! {
                () = serve_connection(stream, peer, acceptor, handler) => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

async fn serve_connection<H: Handler>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    handler: Arc<H>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let peer_certificates = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|chain| PeerCertificates(Arc::new(chain.iter().map(|c| c.clone().into_owned()).collect())));
    let control = ConnectionControl {
        abort: Arc::new(Notify::new()),
    };
    let abort = Arc::clone(&control.abort);
    let service = service_fn(move |mut request: Request<Incoming>| {
        if let Some(certificates) = &peer_certificates {
            request.extensions_mut().insert(certificates.clone());
        }
        request.extensions_mut().insert(control.clone());
        let handler = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(handler.handle(request).await) }
    });
    let connection = http1::Builder::new().serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        }
        // Dropping the connection future closes the socket without a response (and without a
        // TLS close_notify), which is what a crashed server looks like to the client.
        () = abort.notified() => tracing::info!(%peer, "dropped the connection without a response"),
    }
}

// ---------------------------------------------------------------------------------------------
// Counters and faults
// ---------------------------------------------------------------------------------------------

/// Requests received per endpoint name.
#[derive(Debug, Default)]
pub struct RequestCounters(Mutex<BTreeMap<String, u64>>);

impl RequestCounters {
    /// Counts one request to `endpoint`.
    pub fn count(&self, endpoint: &str) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *counts.entry(endpoint.to_owned()).or_default() += 1;
    }

    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Forgets every count.
    pub fn reset(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

/// Faults a simulator injects into API requests (never into its `/__simulator` control
/// endpoints). Set with `set_faults` or `PUT /__simulator/faults`; missing JSON fields default.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Probability (0..=1) that an API request gets a 500, 502 or 503 instead of being processed.
    pub server_error_rate: f64,
    /// Seed of the random generator behind `server_error_rate`, so error sequences repeat.
    pub seed: u64,
    /// The next `count` requests get 429 with `Retry-After: <secs>`.
    pub rate_limit: Option<RateLimitFault>,
    /// Milliseconds to sleep before answering.
    pub delay_ms: u64,
    /// Never answer (until the simulator shuts down).
    pub hang: bool,
    /// The next N orders (enroll) are recorded and then the connection is closed without a
    /// response. The SCM simulator treats a discovery task create (`discoveryCreateTask`) the
    /// same way when `endpoints` names it: the task is created and its id never reaches the
    /// client.
    pub drop_after_enroll: u32,
    /// Restrict every fault above to these endpoint names; `None` means all API endpoints.
    pub endpoints: Option<Vec<String>>,
}

/// Rate limiting as a fault: the next `count` requests are refused with 429.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RateLimitFault {
    /// Value of the `Retry-After` header, seconds.
    pub retry_after_secs: u64,
    /// How many requests to refuse.
    pub count: u32,
}

/// A fault chosen for one request; the simulator renders it in its API's error format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFault {
    /// The request was held until shutdown (or [`HANG_LIMIT`]); answer 503 if still connected.
    Hung,
    /// Answer 429 with `Retry-After`.
    RateLimited {
        /// Seconds for `Retry-After`.
        retry_after_secs: u64,
    },
    /// Answer with this 5xx status.
    ServerError(StatusCode),
}

/// How long a hanging request is held at most. Clients time out long before; the limit only
/// keeps abandoned tasks from living forever, because HTTP/1.1 servers do not notice a client
/// that went away while its request is in flight.
pub const HANG_LIMIT: Duration = Duration::from_secs(600);

/// Decides, request by request, which fault (if any) to inject.
#[derive(Debug)]
pub struct FaultInjector(Mutex<FaultState>);

#[derive(Debug)]
struct FaultState {
    faults: Faults,
    rng: StdRng,
    rate_limited_left: u32,
    drops_left: u32,
}

impl Default for FaultInjector {
    fn default() -> Self {
        Self(Mutex::new(FaultState::new(Faults::default())))
    }
}

impl FaultState {
    fn new(faults: Faults) -> Self {
        Self {
            rng: StdRng::seed_from_u64(faults.seed),
            rate_limited_left: faults.rate_limit.as_ref().map_or(0, |limit| limit.count),
            drops_left: faults.drop_after_enroll,
            faults,
        }
    }

    fn applies_to(&self, endpoint: &str) -> bool {
        self.faults
            .endpoints
            .as_ref()
            .is_none_or(|names| names.iter().any(|name| name == endpoint))
    }
}

impl FaultInjector {
    /// Replaces the faults; restarts the random sequence from `seed` and the 429 and drop budgets.
    pub fn set(&self, faults: Faults) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = FaultState::new(faults);
    }

    /// The faults in force (with the budgets as originally set).
    pub fn current(&self) -> Faults {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .faults
            .clone()
    }

    /// Applies the faults for one request to `endpoint`: sleeps for the delay, holds the request
    /// for `hang`, and returns the fault to answer with, or `None` to process the request.
    pub async fn inject(&self, endpoint: &str, shutdown: &CancellationToken) -> Option<InjectedFault> {
        let (delay, hang, fault) = self.decide(endpoint);
        if hang {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(HANG_LIMIT) => {}
            }
            return Some(InjectedFault::Hung);
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        fault
    }

    fn decide(&self, endpoint: &str) -> (Duration, bool, Option<InjectedFault>) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.applies_to(endpoint) {
            return (Duration::ZERO, false, None);
        }
        let delay = Duration::from_millis(state.faults.delay_ms);
        if state.faults.hang {
            return (delay, true, None);
        }
        if state.rate_limited_left > 0 {
            state.rate_limited_left -= 1;
            let retry_after_secs = state
                .faults
                .rate_limit
                .as_ref()
                .map_or(1, |limit| limit.retry_after_secs);
            return (
                delay,
                false,
                Some(InjectedFault::RateLimited { retry_after_secs }),
            );
        }
        let rate = state.faults.server_error_rate;
        if rate > 0.0 && state.rng.random::<f64>() < rate {
            let status = match state.rng.random_range(0..3) {
                0 => StatusCode::INTERNAL_SERVER_ERROR,
                1 => StatusCode::BAD_GATEWAY,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            return (delay, false, Some(InjectedFault::ServerError(status)));
        }
        (delay, false, None)
    }

    /// Whether `endpoint` is named in `endpoints` (not merely covered by `None`).
    pub fn names(&self, endpoint: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .faults
            .endpoints
            .as_ref()
            .is_some_and(|names| names.iter().any(|name| name == endpoint))
    }

    /// Whether the order just recorded at `endpoint` must be followed by a dropped connection;
    /// consumes one from the `drop_after_enroll` budget when so.
    pub fn take_drop_after_order(&self, endpoint: &str) -> bool {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if state.drops_left > 0 && state.applies_to(endpoint) {
            state.drops_left -= 1;
            true
        } else {
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small shared helpers
// ---------------------------------------------------------------------------------------------

/// Lower-case hex.
pub fn hex_lower(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// Upper-case hex.
pub fn hex_upper(bytes: &[u8]) -> String {
    hex_lower(bytes).to_ascii_uppercase()
}

#[cfg(test)]
pub(crate) mod test_support {
    //! A minimal HTTPS client for the simulator tests: one request per connection, so a test can
    //! tell a dropped connection from an HTTP answer.

    use std::net::SocketAddr;

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper::{Request, StatusCode, header::HeaderMap};
    use hyper_util::rt::TokioIo;
    use rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
    };
    use tokio_rustls::TlsConnector;

    /// An answered request.
    #[derive(Debug)]
    pub struct Answer {
        pub status: StatusCode,
        pub headers: HeaderMap,
        pub body: Bytes,
    }

    impl Answer {
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
        }
        pub fn text(&self) -> String {
            String::from_utf8(self.body.to_vec()).expect("UTF-8 body")
        }
    }

    pub struct Client {
        addr: SocketAddr,
        connector: TlsConnector,
    }

    impl Client {
        pub fn new(addr: SocketAddr, ca_pem: &str, identity: Option<(&str, &str)>) -> Self {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let builder =
                ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots);
            let config = match identity {
                Some((cert_pem, key_pem)) => {
                    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap();
                    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
                    builder.with_client_auth_cert(chain, key).unwrap()
                }
                None => builder.with_no_client_auth(),
            };
            Self {
                addr,
                connector: TlsConnector::from(std::sync::Arc::new(config)),
            }
        }

        /// Sends one request; `Err` when the connection closed without an answer.
        pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Answer, hyper::Error> {
            let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
            let tls = self
                .connector
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .unwrap();
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(connection);
            let response = sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_sequence_repeats_with_the_same_seed() {
        let faults = Faults {
            server_error_rate: 0.5,
            seed: 7,
            ..Faults::default()
        };
        let run = || {
            let injector = FaultInjector::default();
            injector.set(faults.clone());
            (0..32).map(|_| injector.decide("enroll").2).collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        assert!(first.iter().any(Option::is_some) && first.iter().any(Option::is_none));
    }

    #[test]
    fn faults_respect_the_endpoint_filter_and_budgets() {
        let injector = FaultInjector::default();
        injector.set(Faults {
            rate_limit: Some(RateLimitFault {
                retry_after_secs: 3,
                count: 1,
            }),
            drop_after_enroll: 1,
            endpoints: Some(vec!["enroll".to_owned()]),
            ..Faults::default()
        });
        assert_eq!(injector.decide("collect").2, None);
        assert_eq!(
            injector.decide("enroll").2,
            Some(InjectedFault::RateLimited { retry_after_secs: 3 })
        );
        assert_eq!(injector.decide("enroll").2, None);
        assert!(!injector.take_drop_after_order("collect"));
        assert!(injector.take_drop_after_order("enroll"));
        assert!(!injector.take_drop_after_order("enroll"));
    }

    #[test]
    fn subject_names_are_classified() {
        assert_eq!(
            SubjectName::parse("10.0.0.1"),
            SubjectName::Ip(IpAddr::from([10, 0, 0, 1]))
        );
        assert_eq!(
            SubjectName::parse("a@b.example"),
            SubjectName::Email("a@b.example".into())
        );
        assert_eq!(
            SubjectName::parse("spiffe://x/y"),
            SubjectName::Uri("spiffe://x/y".into())
        );
        assert_eq!(
            SubjectName::parse("*.example.com"),
            SubjectName::Dns("*.example.com".into())
        );
    }
}
