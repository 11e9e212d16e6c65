//! `make bench`: measures the performance and reliability targets of the guide (§6) on this
//! machine — the release operator against the real local control plane and the CA simulators —
//! and writes the results to `BENCHMARKS.md`. Targets are reported, never asserted: a benchmark
//! that misses one still writes its numbers.
//!
//! Runs, in order, on one control plane:
//! 1. memory with 300 unrelated 1 MiB Secrets in the cluster (fresh operator, no Certificates);
//! 2. throughput to Ready with the `ca` issuer (ECDSA P-256), and API writes per issuance;
//! 3. the same with the SCM simulator answering at once;
//! 4. crash safety: Certificates issued from the SCM simulator while the operator is killed
//!    (SIGKILL) at random moments and restarted; orders counted, every Secret's key checked;
//! 5. memory with `--scale` Certificates and their Secrets, right after issuing them and after a
//!    restart (the caches alone).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, PostParams},
};
use pki_operator::{
    crd::v1alpha1::Certificate,
    pki::{inspect, key::PrivateKey},
};
use pki_operator_e2e::{
    ControlPlane, Operator, repo_root,
    sim::scm::{ScmSimulator, ScmSimulatorConfig},
    work_dir,
};
use rand::Rng as _;

const OPERATOR_NAMESPACE: &str = "pki-operator";
/// Concurrent create requests of the driver.
const CREATE_CONCURRENCY: usize = 16;

/// Measures the guide's §6 targets and writes BENCHMARKS.md.
#[derive(Debug, Parser)]
struct Args {
    /// Certificates per throughput run.
    #[arg(long, default_value_t = 500)]
    certificates: usize,
    /// Certificates for the memory-at-scale run (the guide's target is stated for 10,000).
    #[arg(long, default_value_t = 10_000)]
    scale: usize,
    /// Certificates issued during the crash run.
    #[arg(long, default_value_t = 100)]
    crash_certificates: usize,
    /// How often the operator is killed during the crash run.
    #[arg(long, default_value_t = 10)]
    kills: u32,
    /// Report file, relative to the repository root.
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
}

/// One line of the report.
struct Row {
    name: String,
    target: String,
    measured: String,
    met: Option<bool>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench failed: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<()> {
    let dir = work_dir("bench")?;
    println!("==> starting the local control plane");
    let plane = ControlPlane::start(&dir.join("cluster")).await?;
    let client = plane.client().await?;
    install(&plane)?;
    let scm = ScmSimulator::start(ScmSimulatorConfig {
        pending_collects: 0,
        ..ScmSimulatorConfig::default()
    })
    .await?;
    let crash_scm = ScmSimulator::start(ScmSimulatorConfig {
        pending_collects: 1,
        ..ScmSimulatorConfig::default()
    })
    .await?;
    cluster_issuers(&plane, &scm, &crash_scm)?;
    let mut rows = Vec::new();

    println!("==> memory with 300 unrelated 1 MiB Secrets");
    unrelated_secrets(&client, 300).await?;
    let operator = start_operator(&plane, &dir, "operator-1").await?;
    // Let the informers settle before reading memory.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (rss, _) = memory(operator.pid())?;
    rows.push(Row {
        name: "Operator RSS, 300 unrelated 1 MiB Secrets, no Certificates".into(),
        target: "≤ 50 MiB".into(),
        measured: format!("{rss:.1} MiB"),
        met: Some(rss <= 50.0),
    });

    for (issuer, label) in [
        ("bench-ca", "`ca` issuer"),
        ("bench-scm", "SCM simulator, no delay"),
    ] {
        println!("==> throughput: {} Certificates, {label}", args.certificates);
        let namespace = format!("throughput-{issuer}");
        let (elapsed, writes) = issue_many(&plane, &client, &namespace, issuer, args.certificates).await?;
        #[allow(clippy::cast_precision_loss)]
        let rate = args.certificates as f64 / elapsed.as_secs_f64();
        rows.push(Row {
            name: format!(
                "Throughput to Ready, ECDSA P-256, {label}, {} Certificates",
                args.certificates
            ),
            target: "≥ 50 /s".into(),
            measured: format!("{rate:.1} /s ({:.1} s)", elapsed.as_secs_f64()),
            met: Some(rate >= 50.0),
        });
        rows.push(Row {
            name: format!("API writes per issuance, {label}"),
            target: "bounded, documented".into(),
            measured: writes,
            met: None,
        });
    }

    println!(
        "==> crash safety: {} Certificates, {} kills",
        args.crash_certificates, args.kills
    );
    let (operator, crash_rows) = crash_run(&plane, &client, &dir, operator, &crash_scm, args).await?;
    rows.extend(crash_rows);

    println!("==> memory with {} Certificates", args.scale);
    let (operator, scale_rows) = memory_at_scale(&plane, &client, &dir, operator, args.scale).await?;
    rows.extend(scale_rows);

    drop(operator);
    scm.shutdown().await;
    crash_scm.shutdown().await;
    plane.stop();
    let report = render(&rows, args)?;
    let path = repo_root().join(&args.output);
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("\n{report}");
    println!("written to {}", path.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// RSS after issuing `scale` Certificates, and of a restarted operator holding the same caches.
async fn memory_at_scale(
    plane: &ControlPlane,
    client: &Client,
    dir: &Path,
    operator: Operator,
    scale: usize,
) -> Result<(Operator, Vec<Row>)> {
    let mut rows = Vec::new();
    let namespace = "scale";
    let (elapsed, _) = issue_many(plane, client, namespace, "bench-ca", scale).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (rss, peak) = memory(operator.pid())?;
    let total = Api::<Certificate>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    rows.push(Row {
        name: format!("Operator RSS, {scale} Certificates Ready with their Secrets ({total} in the cluster)"),
        target: "≤ 100 MiB".into(),
        measured: format!(
            "{rss:.1} MiB (peak {peak:.1} MiB; issued in {:.0} s)",
            elapsed.as_secs_f64()
        ),
        met: Some(rss <= 100.0),
    });
    // A restarted operator holds the same caches without the issuance burst behind it.
    drop(operator);
    let operator = start_operator(plane, dir, "operator-restarted").await?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (rss, peak) = memory(operator.pid())?;
    rows.push(Row {
        name: format!("Operator RSS after a restart with {total} Certificates Ready (caches, no issuance)"),
        target: "≤ 100 MiB".into(),
        measured: format!("{rss:.1} MiB (peak {peak:.1} MiB)"),
        met: Some(rss <= 100.0),
    });

    Ok((operator, rows))
}

/// The CRDs and the operator's namespace with the CA key pair.
fn install(plane: &ControlPlane) -> Result<()> {
    let crds = repo_root().join("crds");
    let crds = crds.to_string_lossy();
    plane.kubectl_ok(&["apply", "-f", &crds], None)?;
    plane.kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            &crds,
        ],
        None,
    )?;
    plane.kubectl_ok(&["create", "namespace", OPERATOR_NAMESPACE], None)?;
    let (ca_certificate, ca_key) = pki_operator_e2e::self_signed_ca("pki-operator bench CA")?;
    let secrets = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "bench-ca"},
         "stringData": {"tls.crt": ca_certificate, "tls.key": ca_key}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "scm-credentials"},
         "stringData": {"login": "api-admin", "password": "sim-password-123"}},
    ]});
    plane.kubectl_ok(
        &["apply", "-n", OPERATOR_NAMESPACE, "-f", "-"],
        Some(&secrets.to_string()),
    )?;
    Ok(())
}

/// `bench-ca` (local CA), `bench-scm` (SCM simulator answering at once) and `bench-scm-slow`
/// (one pending collect, so crashes land between order and collect too).
fn cluster_issuers(plane: &ControlPlane, scm: &ScmSimulator, crash_scm: &ScmSimulator) -> Result<()> {
    let scm_issuer = |name: &str, sim: &ScmSimulator| {
        serde_json::json!({
            "apiVersion": "pki-operator.io/v1alpha1", "kind": "ClusterIssuer",
            "metadata": {"name": name},
            "spec": {"scm": {
                "url": sim.base_url(), "customerUri": "cst-sim",
                "auth": {"password": {"secretName": "scm-credentials"}},
                "orgId": 8932, "certType": 5153, "caBundle": sim.tls_ca_pem(), "pollInterval": "1s",
            }},
        })
    };
    let issuers = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "pki-operator.io/v1alpha1", "kind": "ClusterIssuer",
         "metadata": {"name": "bench-ca"}, "spec": {"ca": {"secretName": "bench-ca"}}},
        scm_issuer("bench-scm", scm),
        scm_issuer("bench-scm-slow", crash_scm),
    ]});
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&issuers.to_string()))?;
    Ok(())
}

/// Starts the operator for the ClusterIssuers, logging warnings only.
fn spawn_operator(plane: &ControlPlane, dir: &Path, name: &str) -> Result<Operator> {
    Operator::start(
        plane,
        dir,
        name,
        &[
            "--cluster-resource-namespace",
            OPERATOR_NAMESPACE,
            "--log-level",
            "warn",
        ],
    )
}

async fn start_operator(plane: &ControlPlane, dir: &Path, name: &str) -> Result<Operator> {
    let operator = spawn_operator(plane, dir, name)?;
    operator.wait_ready(Duration::from_secs(120)).await?;
    Ok(operator)
}

/// Resident and peak memory of `pid`, MiB.
fn memory(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib: f64 = line
            .split_whitespace()
            .nth(1)
            .context("malformed status line")?
            .parse()?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let namespace: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
    }))?;
    Api::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(())
}

async fn unrelated_secrets(client: &Client, count: usize) -> Result<()> {
    create_namespace(client, "noise").await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "noise");
    stream::iter(0..count)
        .map(|i| {
            let secrets = secrets.clone();
            async move {
                let mut payload = vec![0_u8; 1024 * 1024];
                rand::rng().fill(payload.as_mut_slice());
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(format!("noise-{i:04}")),
                        ..ObjectMeta::default()
                    },
                    data: Some([("blob".to_owned(), ByteString(payload))].into()),
                    ..Secret::default()
                };
                secrets.create(&PostParams::default(), &secret).await.map(|_| ())
            }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn certificate(name: &str, issuer: &str) -> Result<Certificate> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "pki-operator.io/v1alpha1", "kind": "Certificate",
        "metadata": {"name": name},
        "spec": {
            "secretName": format!("{name}-tls"),
            "issuerRef": {"name": issuer, "kind": "ClusterIssuer"},
            "dnsNames": [format!("{name}.bench.example.com")],
        },
    }))?)
}

async fn create_certificates(client: &Client, namespace: &str, issuer: &str, count: usize) -> Result<()> {
    let api: Api<Certificate> = Api::namespaced(client.clone(), namespace);
    stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let cert = certificate(&format!("c-{i:05}"), issuer)?;
                api.create(&PostParams::default(), &cert).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn ready_count(list: &[Certificate]) -> usize {
    list.iter()
        .filter(|c| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count()
}

/// Waits until `count` Certificates in `namespace` are Ready; polls every second.
async fn wait_all_ready(client: &Client, namespace: &str, count: usize, timeout: Duration) -> Result<()> {
    let api: Api<Certificate> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + timeout;
    loop {
        let ready = ready_count(&api.list(&ListParams::default()).await?.items);
        if ready >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{ready} of {count} Certificates Ready in {namespace} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Creates `count` Certificates in a new namespace and waits until all are Ready; returns the
/// time from the first create to the last Ready and the API writes per issuance.
async fn issue_many(
    plane: &ControlPlane,
    client: &Client,
    namespace: &str,
    issuer: &str,
    count: usize,
) -> Result<(Duration, String)> {
    create_namespace(client, namespace).await?;
    let since = jiff::Timestamp::now();
    let started = Instant::now();
    create_certificates(client, namespace, issuer, count).await?;
    let timeout = Duration::from_secs(120 + u64::try_from(count / 5).unwrap_or(u64::MAX));
    wait_all_ready(client, namespace, count, timeout).await?;
    let elapsed = started.elapsed();
    // Events and status writes trail the last Ready by a moment.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok((elapsed, writes_per_issuance(plane, namespace, since, count)?))
}

/// Writes in `namespace` since `since`, from the audit log, per issuance and by verb and
/// resource; the driver's own `create certificates` and the control plane's writes are not
/// counted.
fn writes_per_issuance(
    plane: &ControlPlane,
    namespace: &str,
    since: jiff::Timestamp,
    count: usize,
) -> Result<String> {
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    // The one audit-log reader the e2e tests use too; the control plane's own controllers
    // (service accounts of a new namespace) are not counted.
    for write in plane.audited_writes(namespace, since)? {
        if write.user_agent.starts_with("devcluster") {
            continue;
        }
        *by_kind
            .entry(format!("{} {}", write.verb, write.resource))
            .or_default() += 1;
    }
    if let Some(creates) = by_kind.get_mut("create certificates") {
        *creates = creates.saturating_sub(count);
    }
    by_kind.retain(|_, n| *n > 0);
    let total: usize = by_kind.values().sum();
    #[allow(clippy::cast_precision_loss)]
    let per = |n: usize| n as f64 / count as f64;
    let mut text = format!("{:.2} (", per(total));
    for (index, (kind, n)) in by_kind.iter().enumerate() {
        if index > 0 {
            text.push_str(", ");
        }
        let _ = write!(text, "{kind} {:.2}", per(*n));
    }
    text.push(')');
    Ok(text)
}

/// Issues from the slow SCM simulator while killing the operator at random moments; then
/// counts orders and checks every Secret. Returns the operator left running.
async fn crash_run(
    plane: &ControlPlane,
    client: &Client,
    dir: &Path,
    mut operator: Operator,
    sim: &ScmSimulator,
    args: &Args,
) -> Result<(Operator, Vec<Row>)> {
    let namespace = "crash";
    create_namespace(client, namespace).await?;
    create_certificates(client, namespace, "bench-scm-slow", args.crash_certificates).await?;
    for kill in 0..args.kills {
        let wait = rand::rng().random_range(300..2500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        operator.kill();
        operator = spawn_operator(plane, dir, &format!("operator-crash-{kill}"))?;
    }
    operator.wait_ready(Duration::from_secs(120)).await?;
    wait_all_ready(
        client,
        namespace,
        args.crash_certificates,
        Duration::from_secs(600),
    )
    .await?;
    let stats = sim.stats();
    let orders: u32 = stats.orders_per_csr.values().sum();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut mismatched = 0;
    for index in 0..args.crash_certificates {
        let secret = secrets.get(&format!("c-{index:05}-tls")).await?;
        if !key_matches(&secret)? {
            mismatched += 1;
        }
    }
    let rows = vec![
        Row {
            name: format!(
                "Crash safety: {} SCM Certificates, operator SIGKILLed {} times at random",
                args.crash_certificates, args.kills
            ),
            target: "one order per Certificate".into(),
            measured: format!(
                "{orders} orders for {} Certificates ({} enroll requests)",
                args.crash_certificates,
                stats.requests.get("enroll").copied().unwrap_or(0)
            ),
            met: Some(orders as usize == args.crash_certificates),
        },
        Row {
            name: "Crash safety: Secrets whose key does not match their certificate".into(),
            target: "0".into(),
            measured: mismatched.to_string(),
            met: Some(mismatched == 0),
        },
    ];
    Ok((operator, rows))
}

fn key_matches(secret: &Secret) -> Result<bool> {
    let data = secret.data.as_ref().context("Secret without data")?;
    let text = |key: &str| -> Result<String> {
        Ok(String::from_utf8(
            data.get(key).with_context(|| format!("no {key}"))?.0.clone(),
        )?)
    };
    let chain = pki_operator::pki::chain::parse_certificates(text("tls.crt")?.as_bytes())?;
    let leaf = der::Encode::to_der(chain.first().context("empty tls.crt")?)?;
    let key = PrivateKey::from_pem(&text("tls.key")?)?;
    Ok(key.public_key_der()? == inspect::inspect(&leaf)?.public_key_der)
}

fn render(rows: &[Row], args: &Args) -> Result<String> {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(repo_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_default();
    let mut out = String::new();
    writeln!(out, "# Benchmarks")?;
    writeln!(out)?;
    writeln!(
        out,
        "Written by `make bench` (`e2e/src/bin/bench.rs`): the release operator against the local \
         kube-apiserver 1.36 and the CA simulators, all on this machine. Targets from the guide (§6); \
         numbers are measurements, not assertions."
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Run {} at commit `{commit}` on {cpus} CPU(s) ({model}); {} Certificates per throughput run, \
         {} at scale, {} in the crash run with {} kills.",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        args.certificates,
        args.scale,
        args.crash_certificates,
        args.kills
    )?;
    writeln!(out)?;
    writeln!(out, "| measurement | target | measured | met |")?;
    writeln!(out, "|---|---|---|---|")?;
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        writeln!(
            out,
            "| {} | {} | {} | {met} |",
            row.name, row.target, row.measured
        )?;
    }
    Ok(out)
}
