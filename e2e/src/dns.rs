//! DNS for the tests: a real BIND9 (`named`) on loopback serving one test zone that accepts
//! TSIG-signed dynamic updates (RFC 2136), and the client calls the tests and the SCM simulator's
//! DCV checks use to read records back and to add or remove them.
//!
//! BIND9 comes from Debian's `bind9` package, which `scripts/ensure-packages.sh` installs when it
//! is missing (`make unit`/`make e2e` run it).

use std::{
    fs,
    net::{SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    str::FromStr as _,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use hickory_client::{
    client::{Client, ClientHandle as _},
    proto::{
        dnssec::{rdata::tsig::TsigAlgorithm, tsig::TSigner},
        op::ResponseCode,
        rr::{Name, RData, Record, RecordType},
        runtime::TokioRuntimeProvider,
        tcp::TcpClientStream,
        xfer::DnsResponse,
    },
};
use rand::Rng as _;

/// How long one DNS exchange may take; the servers are on loopback.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The records of `record_type` at `name` that `server` answers with, asked over UDP without
/// recursion, as an authoritative check does. An empty list when the name or the type does not
/// exist (NXDOMAIN or NODATA); an error when the server does not answer or refuses.
pub async fn lookup(server: SocketAddr, name: &str, record_type: RecordType) -> Result<Vec<RData>> {
    // The operator's own authoritative lookup: the tests read records the way its self-check does.
    Ok(pki_operator::solver::dns::lookup(server, name, record_type).await?)
}

/// The character-strings of every TXT record at `name`, one `Vec` per record, as raw bytes.
pub async fn lookup_txt(server: SocketAddr, name: &str) -> Result<Vec<Vec<Vec<u8>>>> {
    Ok(lookup(server, name, RecordType::TXT)
        .await?
        .iter()
        .filter_map(RData::as_txt)
        .map(|txt| txt.txt_data().iter().map(|part| part.to_vec()).collect())
        .collect())
}

/// The targets of the CNAME records at `name`, in presentation form with the trailing dot.
pub async fn lookup_cname(server: SocketAddr, name: &str) -> Result<Vec<String>> {
    Ok(lookup(server, name, RecordType::CNAME)
        .await?
        .iter()
        .filter_map(RData::as_cname)
        .map(|cname| cname.0.to_string())
        .collect())
}

/// A TSIG key: its name and HMAC-SHA256 secret.
#[derive(Clone)]
pub struct TsigKey {
    /// The key's name, as the server knows it (absolute, with the trailing dot).
    pub name: String,
    /// The shared secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Sends one RFC 2136 update for `zone` to `server`, TSIG-signed with `key`, over TCP.
async fn update(server: SocketAddr, key: &TsigKey, zone: &str, change: Change) -> Result<()> {
    let zone = Name::from_str(zone)?;
    let signer = TSigner::new(
        key.secret.clone(),
        TsigAlgorithm::HmacSha256,
        Name::from_str(&key.name)?,
        300,
    )
    .context("creating the TSIG signer")?;
    let (stream, sender) =
        TcpClientStream::new(server, None, Some(EXCHANGE_TIMEOUT), TokioRuntimeProvider::new());
    let (mut client, background) = Client::new(stream, sender, Some(Arc::new(signer)))
        .await
        .with_context(|| format!("connecting to DNS server {server}"))?;
    let background = tokio::spawn(background);
    let response: Result<DnsResponse, _> = match change {
        // `append` without the must-exist prerequisite adds to the RRset, creating it when
        // needed, and leaves the other values at the name alone (spec §10.3: "add yours and do
        // not replace theirs").
        Change::Add(record) => client.append(record, zone.clone(), false).await,
        Change::Remove(record) => client.delete_by_rdata(record, zone.clone()).await,
    };
    background.abort();
    let response = response.with_context(|| format!("updating {zone} at {server}"))?;
    if response.response_code() != ResponseCode::NoError {
        bail!(
            "{server} refused the update of {zone}: {}",
            response.response_code()
        );
    }
    Ok(())
}

enum Change {
    Add(Record),
    Remove(Record),
}

/// Adds `rdata` at `name` (TTL 60 s) to `zone` on `server` with a TSIG-signed update.
pub async fn add_record(
    server: SocketAddr,
    key: &TsigKey,
    zone: &str,
    name: &str,
    rdata: RData,
) -> Result<()> {
    let record = Record::from_rdata(Name::from_str(name)?, 60, rdata);
    update(server, key, zone, Change::Add(record)).await
}

/// Removes exactly `rdata` at `name` from `zone` on `server` with a TSIG-signed update.
pub async fn remove_record(
    server: SocketAddr,
    key: &TsigKey,
    zone: &str,
    name: &str,
    rdata: RData,
) -> Result<()> {
    let record = Record::from_rdata(Name::from_str(name)?, 0, rdata);
    update(server, key, zone, Change::Remove(record)).await
}

/// A running `named` on `127.0.0.1` serving [`Bind9::ZONE`], updatable with [`Bind9::key`].
/// Dropping it stops the server and removes its directory.
pub struct Bind9 {
    child: Mutex<Child>,
    addr: SocketAddr,
    dir: PathBuf,
    key: TsigKey,
}

impl std::fmt::Debug for Bind9 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bind9")
            .field("addr", &self.addr)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Where `named` is when it is not on `PATH` (Debian installs it in `/usr/sbin`, which a
/// non-root user's `PATH` often lacks).
const NAMED_FALLBACK: &str = "/usr/sbin/named";

fn named_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PKI_E2E_NAMED") {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("named"))
        .find(|candidate| candidate.is_file());
    on_path
        .or_else(|| Some(PathBuf::from(NAMED_FALLBACK)).filter(|path| path.is_file()))
        .context("BIND9's `named` is not installed; run scripts/ensure-packages.sh")
}

impl Bind9 {
    /// The test zone.
    pub const ZONE: &'static str = "pki-test.example.";

    /// Starts `named -g` on a free loopback port with a fresh zone and TSIG key in a new
    /// temporary directory, and waits until it answers for the zone's SOA.
    pub async fn start() -> Result<Self> {
        let binary = named_binary()?;
        let dir = std::env::temp_dir().join(format!(
            "pki-e2e-bind9-{}-{:08x}",
            std::process::id(),
            rand::rng().random::<u32>()
        ));
        fs::create_dir_all(&dir)?;
        let key = TsigKey {
            name: "pki-test-key.".to_owned(),
            secret: rand::rng().random::<[u8; 32]>().to_vec(),
        };
        let port = free_port()?;
        write_config(&dir, port, &key)?;
        let log = fs::File::create(dir.join("named.log"))?;
        // No `-u`: named keeps the caller's user, so it runs unprivileged as a normal user and
        // needs no root for a port above 1024. `-g` keeps it in the foreground, logging to
        // stderr, so dropping the child is enough to stop it.
        let child = Command::new(&binary)
            .arg("-g")
            .arg("-4")
            .arg("-c")
            .arg(dir.join("named.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let server = Self {
            child: Mutex::new(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            key,
        };
        server.wait_until_serving().await?;
        tracing::info!(addr = %server.addr, zone = Self::ZONE, "BIND9 started");
        Ok(server)
    }

    async fn wait_until_serving(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_wait()?
            {
                bail!("named exited with {status} during startup: {}", self.log_tail());
            }
            // named opens its TCP and UDP listeners together once the zone is loaded. A refused
            // TCP connection says "not yet" at once, where an unanswered UDP query would wait
            // for the exchange timeout.
            if tokio::net::TcpStream::connect(self.addr).await.is_ok()
                && lookup(self.addr, Self::ZONE, RecordType::SOA)
                    .await
                    .is_ok_and(|soa| !soa.is_empty())
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "named did not serve {} within 30 s: {}",
                    Self::ZONE,
                    self.log_tail()
                );
            }
            // named loads the zone within milliseconds; polling is the only readiness signal
            // it gives without a control channel.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("named.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// The server's address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TSIG key that may update the zone.
    pub fn key(&self) -> &TsigKey {
        &self.key
    }

    /// The directory holding the configuration, zone, journal and `named.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The records of `record_type` at `name`.
    pub async fn lookup(&self, name: &str, record_type: RecordType) -> Result<Vec<RData>> {
        lookup(self.addr, name, record_type).await
    }

    /// The TXT records at `name` (see [`lookup_txt`]).
    pub async fn txt(&self, name: &str) -> Result<Vec<Vec<Vec<u8>>>> {
        lookup_txt(self.addr, name).await
    }

    /// Adds `rdata` at `name` in the test zone.
    pub async fn add(&self, name: &str, rdata: RData) -> Result<()> {
        add_record(self.addr, &self.key, Self::ZONE, name, rdata).await
    }

    /// Removes exactly `rdata` at `name` from the test zone.
    pub async fn remove(&self, name: &str, rdata: RData) -> Result<()> {
        remove_record(self.addr, &self.key, Self::ZONE, name, rdata).await
    }

    /// Stops named (SIGTERM, then SIGKILL after 10 s). Idempotent.
    pub fn stop(&self) {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        crate::signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Bind9 {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A port free for both TCP and UDP on loopback (named serves both on one port). It is released
/// before named binds it; another process taking it in between makes named fail at startup with
/// a clear log line, which is rare enough on a test machine.
fn free_port() -> Result<u16> {
    for _ in 0..20 {
        let tcp = TcpListener::bind(("127.0.0.1", 0))?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no loopback port free for both TCP and UDP")
}

fn write_config(dir: &Path, port: u16, key: &TsigKey) -> Result<()> {
    let zone = Bind9::ZONE.trim_end_matches('.');
    let secret = base64::engine::general_purpose::STANDARD.encode(&key.secret);
    let dir_text = dir.display();
    // Every file named writes (pid, session key, managed keys, the zone's journal) goes into
    // `dir`, so nothing under /var or /run is needed and a non-root user can run it. Recursion
    // is off: the server only answers for its zone, as an authoritative server does.
    let config = format!(
        r#"options {{
    directory "{dir_text}";
    pid-file "{dir_text}/named.pid";
    session-keyfile "{dir_text}/session.key";
    managed-keys-directory "{dir_text}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-query {{ any; }};
}};

controls {{ }};

key "{key_name}" {{
    algorithm hmac-sha256;
    secret "{secret}";
}};

zone "{zone}" {{
    type primary;
    file "{dir_text}/{zone}.zone";
    allow-update {{ key "{key_name}"; }};
}};
"#,
        key_name = key.name,
    );
    fs::write(dir.join("named.conf"), config)?;
    let zone_file = format!(
        "$TTL 60\n\
         @ IN SOA ns.{zone}. hostmaster.{zone}. 1 60 60 600 60\n\
         @ IN NS ns.{zone}.\n\
         ns IN A 127.0.0.1\n"
    );
    fs::write(dir.join(format!("{zone}.zone")), zone_file)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use hickory_client::proto::rr::rdata::{CNAME, TXT};

    use super::*;

    #[tokio::test]
    async fn records_added_with_tsig_are_served_and_removed() {
        let bind = Bind9::start().await.unwrap();
        let name = "_pki-validation.app.pki-test.example.";
        assert!(bind.txt(name).await.unwrap().is_empty());

        // A value with the characters a DCV TXT value may carry (spec §10.1 item 10).
        let value = r#"zYWR 5J<pyt"sa%uh98\IUo>xx5T_c/!"#;
        bind.add(name, RData::TXT(TXT::new(vec![value.to_owned()])))
            .await
            .unwrap();
        bind.add(name, RData::TXT(TXT::new(vec!["other".to_owned()])))
            .await
            .unwrap();
        let mut found = bind.txt(name).await.unwrap();
        found.sort();
        assert_eq!(
            found,
            vec![vec![b"other".to_vec()], vec![value.as_bytes().to_vec()]]
        );

        bind.remove(name, RData::TXT(TXT::new(vec![value.to_owned()])))
            .await
            .unwrap();
        assert_eq!(bind.txt(name).await.unwrap(), vec![vec![b"other".to_vec()]]);
        bind.remove(name, RData::TXT(TXT::new(vec!["other".to_owned()])))
            .await
            .unwrap();
        assert!(bind.txt(name).await.unwrap().is_empty());

        let host = "_0123abcd.pki-test.example.";
        let target = Name::from_str("aaaa.bbbb.sectigo.com.").unwrap();
        bind.add(host, RData::CNAME(CNAME(target))).await.unwrap();
        assert_eq!(
            lookup_cname(bind.addr(), host).await.unwrap(),
            ["aaaa.bbbb.sectigo.com."]
        );
    }

    #[tokio::test]
    async fn updates_without_the_key_are_refused() {
        let bind = Bind9::start().await.unwrap();
        let wrong = TsigKey {
            name: bind.key().name.clone(),
            secret: vec![7; 32],
        };
        let name = "_pki-validation.x.pki-test.example.";
        let refused = add_record(
            bind.addr(),
            &wrong,
            Bind9::ZONE,
            name,
            RData::TXT(TXT::new(vec!["v".to_owned()])),
        )
        .await;
        assert!(
            refused.is_err(),
            "an update signed with the wrong secret must fail"
        );
        assert!(bind.txt(name).await.unwrap().is_empty());
        let (addr, dir) = (bind.addr(), bind.dir().to_path_buf());
        drop(bind);
        assert!(!dir.exists(), "the directory is removed on drop");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "named stops on drop"
        );
    }
}
