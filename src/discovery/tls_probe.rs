//! Reading the certificate chains live TLS endpoints present: a real TLS handshake per target,
//! with a concurrency limit, a timeout per connection and a time budget for the whole sweep.
//!
//! The handshake accepts any certificate: discovery wants what is deployed, above all what does
//! not verify (expired, self-signed, another name). The chain is recorded as the server sent it,
//! before any check, so a server whose handshake fails later still yields its certificates.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt as _, stream};
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::net::TcpStream;

/// One endpoint to read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// Host name or IP address to connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Server name sent in the handshake (SNI); `None` sends none (IP addresses) or the host.
    pub server_name: Option<String>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How a sweep runs.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSettings {
    /// Connect plus handshake, per target.
    pub timeout: Duration,
    /// Targets read at once.
    pub concurrency: usize,
    /// The whole sweep; targets not read by then are reported as such.
    pub budget: Duration,
}

/// What one target gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probed {
    /// The chain the server presented (leaf first, DER).
    Chain(Vec<Vec<u8>>),
    /// Nothing read, and why (refused, timed out, not TLS, over budget).
    Unreachable(String),
}

/// Reads every target; results come back in the targets' order.
pub async fn probe_all(targets: Vec<Target>, settings: ProbeSettings) -> Vec<(Target, Probed)> {
    let config = Arc::new(client_config());
    let deadline = tokio::time::Instant::now() + settings.budget;
    let mut results: Vec<(usize, Target, Probed)> = stream::iter(targets.into_iter().enumerate())
        .map(|(index, target)| {
            let config = config.clone();
            async move {
                let probed = if tokio::time::Instant::now() >= deadline {
                    Probed::Unreachable("not reached within the time budget of the run".into())
                } else {
                    let until = deadline.min(tokio::time::Instant::now() + settings.timeout);
                    match tokio::time::timeout_at(until, probe(&target, config)).await {
                        Ok(probed) => probed,
                        Err(_) if until == deadline => {
                            Probed::Unreachable("not reached within the time budget of the run".into())
                        }
                        Err(_) => Probed::Unreachable(format!("no TLS answer within {:?}", settings.timeout)),
                    }
                };
                (index, target, probed)
            }
        })
        .buffer_unordered(settings.concurrency.max(1))
        .collect()
        .await;
    results.sort_by_key(|(index, ..)| *index);
    results
        .into_iter()
        .map(|(_, target, probed)| (target, probed))
        .collect()
}

/// One connection and handshake.
async fn probe(target: &Target, config: Arc<rustls::ClientConfig>) -> Probed {
    let address = match resolve(target).await {
        Ok(address) => address,
        Err(why) => return Probed::Unreachable(why),
    };
    let stream = match TcpStream::connect(address).await {
        Ok(stream) => stream,
        Err(e) => return Probed::Unreachable(format!("cannot connect: {e}")),
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut config = (*config).clone();
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(RecordingVerifier { seen: seen.clone() }));
    let name = target.server_name.clone().unwrap_or_else(|| target.host.clone());
    let server_name = ServerName::try_from(name)
        .or_else(|_| ServerName::try_from(address.ip().to_string()))
        .map(|n| n.to_owned());
    let Ok(server_name) = server_name else {
        return Probed::Unreachable(format!("{target} is not a valid server name"));
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let outcome = connector.connect(server_name, stream).await;
    let chain = std::mem::take(&mut *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    match (chain.is_empty(), outcome) {
        (false, _) => Probed::Chain(chain),
        (true, Ok(_)) => Probed::Unreachable("the server presented no certificate".into()),
        (true, Err(e)) => Probed::Unreachable(format!("TLS handshake failed: {e}")),
    }
}

async fn resolve(target: &Target) -> Result<SocketAddr, String> {
    if let Ok(ip) = target.host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, target.port));
    }
    tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", target.host))
}

fn client_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap_or_else(|_| rustls::ClientConfig::builder())
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RecordingVerifier::default()))
        .with_no_client_auth()
}

/// Accepts every certificate and signature, keeping the chain: discovery reports certificates,
/// it does not trust them.
#[derive(Debug, Default)]
struct RecordingVerifier {
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.push(end_entity.to_vec());
        seen.extend(intermediates.iter().map(|c| c.to_vec()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
