//! A real SMTP server for the alert-email tests: Debian's `aiosmtpd` (`python3-aiosmtpd`, which
//! `scripts/ensure-packages.sh` installs) on loopback, with a small handler this harness writes
//! that stores every received message as one JSON file, parsed by Python's `email` package
//! (multipart decoded, headers unfolded). Tests can take the server down and bring it back on the
//! same port to see how senders cope with an outage, and can have it speak STARTTLS or implicit
//! TLS with a certificate from a test CA ([`SmtpServer::start_with_tls`]).

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use tokio::{io::AsyncReadExt as _, net::TcpStream};

use crate::{free_port, sim::TestCa, wait_for};

/// The aiosmtpd handler: one JSON file per message, written under a temporary name and renamed so
/// a reader never sees half a file. Numbering continues after a restart.
const RECORDER: &str = r#""""Stores each message aiosmtpd receives as JSON (written by pki-operator's e2e/src/smtp.rs)."""
import email
import email.policy
import json
import os


class Recorder:
    def __init__(self, directory):
        self.directory = directory
        self.count = len([f for f in os.listdir(directory) if f.endswith(".json")])

    @classmethod
    def from_cli(cls, parser, *args):
        return cls(*args)

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)

        def body(kind):
            part = message.get_body(preferencelist=(kind,))
            return None if part is None else part.get_content()

        record = {
            "mail_from": envelope.mail_from,
            "envelope_to": list(envelope.rcpt_tos),
            "to": str(message.get("To", "")),
            "from": str(message.get("From", "")),
            "subject": str(message.get("Subject", "")),
            "content_type": message.get_content_type(),
            "text": body("plain"),
            "html": body("html"),
            "raw": raw.decode("utf-8", "replace"),
        }
        self.count += 1
        name = os.path.join(self.directory, "%06d" % self.count)
        with open(name + ".tmp", "w") as out:
            json.dump(record, out)
        os.rename(name + ".tmp", name + ".json")
        return "250 Message accepted for delivery"
"#;

/// One message as the server received it.
#[derive(Clone, Debug, Deserialize)]
pub struct ReceivedEmail {
    /// `MAIL FROM` of the envelope.
    pub mail_from: String,
    /// `RCPT TO` addresses of the envelope.
    pub envelope_to: Vec<String>,
    /// The `To` header, decoded.
    pub to: String,
    /// The `From` header, decoded.
    pub from: String,
    /// The `Subject` header, decoded.
    pub subject: String,
    /// The top-level content type (`multipart/alternative` for an alert).
    pub content_type: String,
    /// The `text/plain` body, decoded (quoted-printable or base64 undone).
    pub text: Option<String>,
    /// The `text/html` body, decoded.
    pub html: Option<String>,
    /// The whole message as sent.
    pub raw: String,
}

/// How the server offers TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTlsMode {
    /// STARTTLS offered and required before `MAIL` (aiosmtpd's `--tlscert`/`--tlskey`).
    StartTls,
    /// TLS from the first byte, as on port 465 (`--smtpscert`/`--smtpskey`).
    Implicit,
}

/// A running aiosmtpd; killed on drop.
pub struct SmtpServer {
    dir: PathBuf,
    port: u16,
    /// Extra aiosmtpd arguments (TLS).
    tls_args: Vec<OsString>,
    /// Whether it greets in plain text (no implicit TLS), so readiness can wait for the `220`.
    greets_in_plain_text: bool,
    child: Mutex<Option<Child>>,
}

/// Debian's interpreter: aiosmtpd is installed for it, not for a python3 earlier on `PATH`.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

impl SmtpServer {
    /// Starts aiosmtpd on a free loopback port with its handler, messages and log in `dir`, and
    /// waits until it greets.
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::launch(dir, Vec::new(), true).await
    }

    /// Starts aiosmtpd offering TLS in `mode` with a certificate for `127.0.0.1` and `localhost`
    /// issued by `ca` (trust `ca.root_pem()` to connect). With STARTTLS, a client that does not
    /// upgrade is refused (`530`).
    pub async fn start_with_tls(dir: &Path, ca: &TestCa, mode: SmtpTlsMode) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let (chain, key) = ca.loopback_server_identity()?;
        let chain_pem: String = chain
            .iter()
            .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec())))
            .collect();
        let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", key.secret_der().to_vec()));
        let (cert_file, key_file) = (dir.join("smtp-tls.crt"), dir.join("smtp-tls.key"));
        fs::write(&cert_file, chain_pem)?;
        fs::write(&key_file, key_pem)?;
        let (cert_flag, key_flag) = match mode {
            SmtpTlsMode::StartTls => ("--tlscert", "--tlskey"),
            SmtpTlsMode::Implicit => ("--smtpscert", "--smtpskey"),
        };
        let args = vec![
            cert_flag.into(),
            cert_file.into_os_string(),
            key_flag.into(),
            key_file.into_os_string(),
        ];
        Self::launch(dir, args, mode == SmtpTlsMode::StartTls).await
    }

    async fn launch(dir: &Path, tls_args: Vec<OsString>, greets_in_plain_text: bool) -> Result<Self> {
        fs::create_dir_all(dir.join("messages"))?;
        fs::write(dir.join("pki_e2e_recorder.py"), RECORDER)?;
        let server = Self {
            dir: dir.to_path_buf(),
            port: free_port()?,
            tls_args,
            greets_in_plain_text,
            child: Mutex::new(None),
        };
        server.start_again().await?;
        Ok(server)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server again on the same port after [`SmtpServer::stop`]; received messages
    /// are kept. Waits until it greets.
    pub async fn start_again(&self) -> Result<()> {
        self.stop();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("aiosmtpd.log"))?;
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.tls_args)
            .args(["-c", "pki_e2e_recorder.Recorder"])
            .arg(self.dir.join("messages"))
            .env("PYTHONPATH", &self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting aiosmtpd (python3-aiosmtpd; run scripts/ensure-packages.sh)")?;
        *self.lock() = Some(child);
        let (port, plain) = (self.port, self.greets_in_plain_text);
        let greeted = wait_for("aiosmtpd to greet", Duration::from_secs(30), || async {
            if let Some(status) = self.lock().as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Some(Err(status));
            }
            greets(port, plain).await.then_some(Ok(()))
        })
        .await?;
        if let Err(status) = greeted {
            bail!(
                "aiosmtpd exited with {status}; see {}",
                self.dir.join("aiosmtpd.log").display()
            );
        }
        Ok(())
    }

    /// Kills the server (connections are refused until [`SmtpServer::start_again`]). Idempotent.
    pub fn stop(&self) {
        if let Some(mut child) = self.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every message received so far, in order.
    pub fn messages(&self) -> Result<Vec<ReceivedEmail>> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.dir.join("messages"))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| {
                let text = fs::read_to_string(path)?;
                serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
            })
            .collect()
    }

    /// Waits until at least `count` messages arrived and returns them all.
    pub async fn wait_for_messages(&self, count: usize, timeout: Duration) -> Result<Vec<ReceivedEmail>> {
        wait_for(&format!("{count} email(s)"), timeout, || async {
            self.messages().ok().filter(|all| all.len() >= count)
        })
        .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when a connection to `port` is answered with an SMTP `220` greeting, or, for implicit
/// TLS (`plain` false), accepted at all: aiosmtpd listens only once it serves.
async fn greets(port: u16, plain: bool) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        if !plain {
            return Some(true);
        }
        let mut greeting = [0_u8; 3];
        stream.read_exact(&mut greeting).await.ok()?;
        Some(&greeting == b"220")
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
