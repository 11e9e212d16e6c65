//! End-to-end tests of a hostile CA endpoint: whatever answers at an Issuer's URL must not take
//! the operator down (an endless body) nor lead its credentials elsewhere (a redirect). The
//! servers here are deliberately not simulators: they speak raw HTTP/1.1 over TLS so they can
//! stream a body no simulator would, and record every connection they receive.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use kube::Api;
use libtest_mimic::Trial;
use pki_operator::crd::v1alpha1::Issuer;
use pki_operator_e2e::{Operator, TestNamespace, sim::TestCa, wait_for, work_dir};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;

use crate::support::{apply, block_on, plane, trial};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "hostile_ca_endless_body_is_cut_off_and_the_operator_stays_up",
            endless_body_is_cut_off_and_the_operator_stays_up,
        ),
        trial("hostile_ca_redirect_is_not_followed", redirect_is_not_followed),
    ]
}

/// What the body of the streaming server adds up to at most: 1 GiB, far beyond any limit.
const STREAMED_BYTES: u64 = 1 << 30;
/// The operator's peak resident memory allowed while it is being fed that stream. An idle debug
/// build peaks well below 100 MiB (BENCHMARKS.md: 71 MiB with 11,100 Certificates cached);
/// buffering the stream would take it past 1 GiB.
const PEAK_RSS_LIMIT_KIB: u64 = 150 * 1024;
/// The password in the Issuer's credentials Secret, looked for at the redirect target.
const PASSWORD: &str = "hostile-test-password";

/// How a [`RawServer`] answers each request.
#[derive(Clone)]
enum Answer {
    /// `200` with a chunked body of [`STREAMED_BYTES`] (or until the client goes away).
    Endless,
    /// `302` to `location`.
    Redirect(String),
    /// `200 []`: an empty profile list, the answer SCM's `/types` would give.
    EmptyList,
}

/// What a [`RawServer`] observed.
#[derive(Default)]
struct Observed {
    /// TCP connections accepted (before any TLS).
    connections: AtomicUsize,
    /// Whether a request carried a `password` header.
    saw_password: AtomicBool,
    /// Body bytes written in total.
    body_bytes: AtomicU64,
}

/// An HTTPS/1.1 server on loopback with a certificate from `ca`, answering every request the
/// same way. Dropping it stops it.
struct RawServer {
    port: u16,
    ca_pem: String,
    observed: Arc<Observed>,
    accept_loop: JoinHandle<()>,
}

impl RawServer {
    async fn start(ca: &TestCa, answer: Answer) -> Result<Self> {
        let (chain, key) = ca.loopback_server_identity()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let observed = Arc::new(Observed::default());
        let accept_loop = tokio::spawn({
            let observed = Arc::clone(&observed);
            async move {
                // Connection tasks die with the runtime or when their client disconnects; each
                // one writes at most STREAMED_BYTES, so nothing here runs unbounded.
                while let Ok((stream, _)) = listener.accept().await {
                    observed.connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(
                        acceptor.clone(),
                        stream,
                        answer.clone(),
                        Arc::clone(&observed),
                    ));
                }
            }
        });
        Ok(Self {
            port,
            ca_pem: ca.root_pem(),
            observed,
            accept_loop,
        })
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn serve(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    answer: Answer,
    observed: Arc<Observed>,
) {
    let Ok(Ok(mut tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
        return;
    };
    loop {
        // One request head at a time (keep-alive); bodies are not expected (all GETs).
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 64 * 1024 || !matches!(tls.read(&mut byte).await, Ok(1)) {
                return;
            }
            head.push(byte[0]);
        }
        if String::from_utf8_lossy(&head)
            .to_ascii_lowercase()
            .contains("\r\npassword:")
        {
            observed.saw_password.store(true, Ordering::SeqCst);
        }
        let written = match &answer {
            Answer::Endless => {
                let header =
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if tls.write_all(header.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = [b"100000\r\n".as_slice(), &vec![b' '; 1 << 20], b"\r\n"].concat();
                let mut sent = 0;
                while sent < STREAMED_BYTES {
                    if tls.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += 1 << 20;
                    observed.body_bytes.fetch_add(1 << 20, Ordering::SeqCst);
                }
                tls.write_all(b"0\r\n\r\n").await
            }
            Answer::Redirect(location) => {
                tls.write_all(
                    format!("HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n")
                        .as_bytes(),
                )
                .await
            }
            Answer::EmptyList => {
                tls.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]",
                )
                .await
            }
        };
        if written.is_err() {
            return;
        }
    }
}

/// A password Secret and an SCM Issuer `name` pointing at `server`.
fn scm_issuer(namespace: &str, name: &str, server: &RawServer) -> Result<()> {
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{name}-credentials")},
        "stringData": {"login": "api-admin", "password": PASSWORD},
    });
    apply(namespace, &serde_json::to_string(&secret)?)?;
    let issuer = serde_json::json!({
        "apiVersion": "pki-operator.io/v1alpha1", "kind": "Issuer",
        "metadata": {"name": name},
        "spec": {"scm": {
            "url": server.url(), "customerUri": "cst-hostile",
            "auth": {"password": {"secretName": format!("{name}-credentials")}},
            "orgId": 1, "certType": 1, "caBundle": server.ca_pem,
        }},
    });
    apply(namespace, &serde_json::to_string(&issuer)?)
}

/// Waits for the Issuer `name` to be `Ready=False` with `reason`; returns its message.
async fn wait_issuer_not_ready(api: &Api<Issuer>, name: &str, reason: &str) -> Result<String> {
    let found = wait_for(
        &format!("Issuer {name} Ready=False {reason}"),
        Duration::from_secs(90),
        || async {
            api.get_opt(name).await.ok().flatten().and_then(|issuer| {
                issuer
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready" && c.status == "False" && c.reason == reason)
            })
        },
    )
    .await;
    if found.is_err() {
        let last = api.get_opt(name).await.ok().flatten().and_then(|i| i.status);
        return found
            .map(|c| c.message)
            .with_context(|| format!("last status of Issuer {name}: {last:#?}"));
    }
    found.map(|c| c.message)
}

/// `VmHWM` (peak resident set size, KiB) of a live process; `None` once it has exited.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// An Issuer pointed at a server that streams 1 GiB: the operator reads at most its response
/// limit, reports the Issuer `Ready=False` naming that limit, stays up, and its peak RSS stays
/// under [`PEAK_RSS_LIMIT_KIB`].
fn endless_body_is_cut_off_and_the_operator_stays_up() -> Result<()> {
    block_on(async {
        let dir = work_dir("hostile-body")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "hostile-body").await?;
        let server = RawServer::start(&TestCa::generate("Hostile")?, Answer::Endless).await?;
        scm_issuer(&ns.name, "endless", &server)?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        let issuers: Api<Issuer> = Api::namespaced(client.clone(), &ns.name);
        let message = wait_issuer_not_ready(&issuers, "endless", "MalformedResponse")
            .await
            .with_context(|| format!("operator log:\n{}", operator.log_text()))?;
        ensure!(
            server.observed.connections.load(Ordering::SeqCst) >= 1,
            "the operator never connected to the server"
        );
        ensure!(
            matches!(operator.get("/livez").await, Some((200, _))),
            "the operator does not answer /livez; log:\n{}",
            operator.log_text()
        );
        let peak = peak_rss_kib(operator.pid()).context("the operator process is gone")?;
        let streamed = server.observed.body_bytes.load(Ordering::SeqCst);
        eprintln!("hostile_ca: the operator peaked at {peak} KiB RSS; the server streamed {streamed} bytes");
        ensure!(
            peak < PEAK_RSS_LIMIT_KIB,
            "the operator's peak RSS was {peak} KiB, over the {PEAK_RSS_LIMIT_KIB} KiB bound"
        );
        ensure!(
            streamed < STREAMED_BYTES / 4,
            "the server streamed {streamed} bytes: the operator kept reading"
        );
        ensure!(
            message.contains("exceeds the 4 MiB limit"),
            "the Issuer's message does not name the size limit: {message:?}"
        );
        Ok(())
    })
}

/// An Issuer pointed at a server answering `302` to another port: the Issuer is `Ready=False`
/// naming the redirect, and the redirect target never receives a connection (so never the
/// `password` header either).
fn redirect_is_not_followed() -> Result<()> {
    block_on(async {
        let dir = work_dir("hostile-redirect")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "hostile-redirect").await?;
        // The target's certificate comes from the same CA, so the Issuer's caBundle trusts it, and
        // it answers like SCM: following the redirect would deliver the credentials there and
        // make the Issuer Ready.
        let ca = TestCa::generate("Hostile")?;
        let target = RawServer::start(&ca, Answer::EmptyList).await?;
        let redirector = RawServer::start(
            &ca,
            Answer::Redirect(format!("https://127.0.0.1:{}/api/ssl/v1/types", target.port)),
        )
        .await?;
        scm_issuer(&ns.name, "redirecting", &redirector)?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        let issuers: Api<Issuer> = Api::namespaced(client.clone(), &ns.name);
        let message = wait_issuer_not_ready(&issuers, "redirecting", "InvalidConfiguration")
            .await
            .with_context(|| {
                format!(
                    "the redirect target received {} connection(s), the password header: {} (the \
                     Issuer's own URL received it: {})",
                    target.observed.connections.load(Ordering::SeqCst),
                    target.observed.saw_password.load(Ordering::SeqCst),
                    redirector.observed.saw_password.load(Ordering::SeqCst),
                )
            })?;
        ensure!(
            message.contains(&format!("redirect to 127.0.0.1:{}", target.port))
                && message.contains("not followed"),
            "the Issuer's message does not name the redirect: {message:?}"
        );
        ensure!(
            redirector.observed.saw_password.load(Ordering::SeqCst),
            "the Issuer's own URL did not receive the credentials: the test proves nothing"
        );
        ensure!(
            !target.observed.saw_password.load(Ordering::SeqCst),
            "the password header was sent to the redirect target"
        );
        let connections = target.observed.connections.load(Ordering::SeqCst);
        ensure!(
            connections == 0,
            "the redirect target received {connections} connection(s)"
        );
        ensure!(!message.contains(PASSWORD), "the password leaked into status");
        Ok(())
    })
}
