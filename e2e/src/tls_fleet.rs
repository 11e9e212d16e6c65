//! TLS servers on loopback, each presenting a chosen kind of certificate, for the discovery
//! tests: what the operator's endpoint sweep (and the SCM simulator's scan) must find and
//! classify. Real handshakes over real sockets; the weak certificates (RSA 1024, SHA-1) come from
//! the `openssl` command, as no Rust crate here signs them.
//!
//! For sweeps at scale (the bench): many healthy servers at once ([`LiveEndpoints`]), and ports
//! that give no certificate — closed ones that refuse ([`ClosedPorts`]) and filtered ones that
//! never answer ([`FilteredPorts`]) — held for as long as the sweep runs.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use anyhow::{Context as _, Result, bail};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SerialNumber};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use time::{Duration, OffsetDateTime};
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    task::JoinHandle,
};

/// What a server of the fleet presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented {
    /// Valid for a year, from the fleet's CA.
    Healthy,
    /// Ends in 10 days.
    ExpiringIn10Days,
    /// Ended yesterday.
    Expired,
    /// Issued by itself.
    SelfSigned,
    /// A 1024-bit RSA key (from an `openssl` CA).
    WeakRsa1024,
    /// A SHA-1 signature (from an `openssl` CA).
    Sha1Signed,
}

impl Presented {
    /// Every kind, one server each.
    pub const ALL: [Presented; 6] = [
        Self::Healthy,
        Self::ExpiringIn10Days,
        Self::Expired,
        Self::SelfSigned,
        Self::WeakRsa1024,
        Self::Sha1Signed,
    ];

    /// The common name of its certificate, e.g. `expired.fleet.test`.
    pub fn common_name(self) -> &'static str {
        match self {
            Self::Healthy => "healthy.fleet.test",
            Self::ExpiringIn10Days => "expiring.fleet.test",
            Self::Expired => "expired.fleet.test",
            Self::SelfSigned => "self-signed.fleet.test",
            Self::WeakRsa1024 => "weak.fleet.test",
            Self::Sha1Signed => "sha1.fleet.test",
        }
    }
}

/// One running server.
#[derive(Clone, Debug)]
pub struct FleetServer {
    /// What it presents.
    pub presented: Presented,
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    /// Its leaf, DER.
    pub leaf_der: Vec<u8>,
}

/// The running fleet; the servers stop when it is dropped.
pub struct TlsFleet {
    /// One server per [`Presented`] kind.
    pub servers: Vec<FleetServer>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for TlsFleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl TlsFleet {
    /// Starts one server per kind; `dir` holds the `openssl` files.
    pub async fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let now = OffsetDateTime::now_utc();
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "Fleet Test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.not_before = now - Duration::days(400);
        ca.not_after = now + Duration::days(3650);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let legacy = OpensslCa::create(dir)?;
        let mut servers = Vec::new();
        let mut tasks = Vec::new();
        for (index, presented) in Presented::ALL.into_iter().enumerate() {
            let serial = u8::try_from(index + 1).unwrap_or(1);
            let (leaf_der, key) = match presented {
                Presented::WeakRsa1024 => {
                    let leaf = legacy.leaf(presented, "rsa:1024", "-sha256", serial)?;
                    // ring cannot sign with a 1024-bit key: the handshake is signed with another
                    // key, which a client that reads certificates without trusting them accepts.
                    (
                        leaf,
                        PrivatePkcs8KeyDer::from(KeyPair::generate()?.serialize_der()),
                    )
                }
                Presented::Sha1Signed => legacy.leaf_with_key(presented, serial)?,
                _ => {
                    let key = KeyPair::generate()?;
                    let mut params = CertificateParams::new(vec![presented.common_name().to_owned()])?;
                    params
                        .distinguished_name
                        .push(DnType::CommonName, presented.common_name());
                    params.serial_number = Some(SerialNumber::from_slice(&[0x10, serial]));
                    let (not_before, not_after) = match presented {
                        Presented::ExpiringIn10Days => (now - Duration::days(80), now + Duration::days(10)),
                        Presented::Expired => (now - Duration::days(90), now - Duration::days(1)),
                        _ => (now - Duration::days(1), now + Duration::days(365)),
                    };
                    params.not_before = not_before;
                    params.not_after = not_after;
                    let cert = if presented == Presented::SelfSigned {
                        params.self_signed(&key)?
                    } else {
                        params.signed_by(&key, &ca)?
                    };
                    (cert.der().to_vec(), PrivatePkcs8KeyDer::from(key.serialize_der()))
                }
            };
            let (addr, task) = serve(leaf_der.clone(), key).await?;
            servers.push(FleetServer {
                presented,
                addr,
                leaf_der,
            });
            tasks.push(task);
        }
        Ok(Self { servers, tasks })
    }

    /// The server presenting `presented`.
    pub fn server(&self, presented: Presented) -> &FleetServer {
        self.servers
            .iter()
            .find(|s| s.presented == presented)
            .unwrap_or(&self.servers[0])
    }
}

/// Many healthy TLS servers on loopback, one listener and one certificate (its own P-256 key,
/// valid for a year, from one CA) each, all served by the caller's runtime: the live peers of a
/// sweep at scale, where what counts is how many handshakes there are, not what they present.
/// The servers stop when it is dropped.
pub struct LiveEndpoints {
    /// Where each server listens (127.0.0.1), in the order they were started.
    pub addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for LiveEndpoints {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl LiveEndpoints {
    /// Starts `count` servers, each on a free loopback port.
    pub async fn start(count: usize) -> Result<Self> {
        let now = OffsetDateTime::now_utc();
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "Live Endpoints Test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.not_before = now - Duration::days(1);
        ca.not_after = now + Duration::days(3650);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let mut addrs = Vec::with_capacity(count);
        let mut tasks = Vec::with_capacity(count);
        for index in 0..count {
            let name = format!("live-{index}.fleet.test");
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(vec![name.clone()])?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.not_before = now - Duration::days(1);
            params.not_after = now + Duration::days(365);
            let leaf = params.signed_by(&key, &ca)?;
            let (addr, task) =
                serve(leaf.der().to_vec(), PrivatePkcs8KeyDer::from(key.serialize_der())).await?;
            addrs.push(addr);
            tasks.push(task);
        }
        Ok(Self { addrs, tasks })
    }
}

/// The loopback address with a port the kernel picks.
fn any_loopback_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Loopback ports that refuse connections ("closed"), held while this lives: each is a socket
/// bound to the port that never listens, so the kernel answers a connection with a reset — and,
/// unlike a port merely found free, no other process can start listening there in the meantime
/// and turn it into a live endpoint mid-sweep.
pub struct ClosedPorts {
    /// The ports, in the order they were taken.
    pub ports: Vec<u16>,
    _sockets: Vec<TcpSocket>,
}

impl ClosedPorts {
    /// Takes `count` free loopback ports.
    pub fn hold(count: usize) -> Result<Self> {
        let mut ports = Vec::with_capacity(count);
        let mut sockets = Vec::with_capacity(count);
        for _ in 0..count {
            let socket = TcpSocket::new_v4()?;
            socket.bind(any_loopback_port())?;
            ports.push(socket.local_addr()?.port());
            sockets.push(socket);
        }
        Ok(Self {
            ports,
            _sockets: sockets,
        })
    }
}

/// Loopback ports that never answer ("filtered", as behind a firewall that drops packets), made
/// without root, held while this lives. Each is a listener with a backlog of 0 whose accept
/// queue is filled by one connection of ours that nobody accepts. While a listener's accept
/// queue is full, Linux drops the SYN of every further connection (`tcp_abort_on_overflow` only
/// decides what happens to a handshake that already completed), so a client sees no answer at
/// all — its connect waits, retransmitting the SYN, until its own timeout — which is what a
/// filtered port does. Linux-specific, as the local control plane is.
pub struct FilteredPorts {
    /// The ports, in the order they were made.
    pub ports: Vec<u16>,
    _listeners: Vec<TcpListener>,
    _fillers: Vec<TcpStream>,
}

impl FilteredPorts {
    /// Makes `count` filtered loopback ports.
    pub async fn hold(count: usize) -> Result<Self> {
        let mut ports = Vec::with_capacity(count);
        let mut listeners = Vec::with_capacity(count);
        let mut fillers = Vec::with_capacity(count);
        for _ in 0..count {
            let socket = TcpSocket::new_v4()?;
            socket.bind(any_loopback_port())?;
            // A backlog of 0 admits one connection to the accept queue: the filler's.
            let listener = socket.listen(0)?;
            let addr = listener.local_addr()?;
            let filler = TcpStream::connect(addr)
                .await
                .with_context(|| format!("filling the accept queue of {addr}"))?;
            ports.push(addr.port());
            listeners.push(listener);
            fillers.push(filler);
        }
        Ok(Self {
            ports,
            _listeners: listeners,
            _fillers: fillers,
        })
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Serves `leaf` (handshake signed by `key`) on a free loopback port.
async fn serve(leaf: Vec<u8>, key: PrivatePkcs8KeyDer<'static>) -> Result<(SocketAddr, JoinHandle<()>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key))
        .context("the handshake key")?;
    let certified = CertifiedKey::new(vec![CertificateDer::from(leaf)], signing);
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(Arc::new(certified))));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // The peer only reads the certificate; whether the handshake completes is its
                // business.
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    Ok((addr, task))
}

/// A CA made with the `openssl` command, for the certificates rcgen and ring do not make.
struct OpensslCa {
    dir: PathBuf,
}

impl OpensslCa {
    fn create(dir: &Path) -> Result<Self> {
        let ca = Self { dir: dir.to_owned() };
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "legacy-ca.key",
            "-out",
            "legacy-ca.pem",
            "-days",
            "3650",
            "-subj",
            "/CN=Legacy Test CA",
        ])?;
        Ok(ca)
    }

    fn openssl(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .context("running openssl (scripts/ensure-packages.sh installs it)")?;
        if !out.status.success() {
            bail!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// A leaf for a new `key` (`rsa:1024`, `ec`) signed with `digest`; DER.
    fn leaf(&self, presented: Presented, key: &str, digest: &str, serial: u8) -> Result<Vec<u8>> {
        let name = presented.common_name();
        let mut request = vec!["req", "-new", "-newkey", key];
        if key == "ec" {
            request.extend(["-pkeyopt", "ec_paramgen_curve:P-256"]);
        }
        let subject = format!("/CN={name}");
        let key_file = format!("{name}.key");
        let csr_file = format!("{name}.csr");
        let der_file = format!("{name}.der");
        request.extend([
            "-nodes", "-keyout", &key_file, "-out", &csr_file, "-subj", &subject,
        ]);
        self.openssl(&request)?;
        let serial = format!("0x20{serial:02x}");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr_file,
            "-CA",
            "legacy-ca.pem",
            "-CAkey",
            "legacy-ca.key",
            "-set_serial",
            &serial,
            "-days",
            "365",
            digest,
            "-outform",
            "DER",
            "-out",
            &der_file,
        ])?;
        Ok(std::fs::read(self.dir.join(der_file))?)
    }

    /// A SHA-1 signed leaf for a P-256 key, with that key (PKCS#8).
    fn leaf_with_key(
        &self,
        presented: Presented,
        serial: u8,
    ) -> Result<(Vec<u8>, PrivatePkcs8KeyDer<'static>)> {
        let leaf = self.leaf(presented, "ec", "-sha1", serial)?;
        let name = presented.common_name();
        let key_file = format!("{name}.key");
        let pkcs8 = format!("{name}.p8");
        self.openssl(&[
            "pkcs8", "-topk8", "-nocrypt", "-in", &key_file, "-outform", "DER", "-out", &pkcs8,
        ])?;
        Ok((
            leaf,
            PrivatePkcs8KeyDer::from(std::fs::read(self.dir.join(pkcs8))?),
        ))
    }
}
