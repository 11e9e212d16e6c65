//! `make bench`: measures the performance and reliability targets of the guide (§6) on this
//! machine — the release operator against the real local control plane and the CA simulators —
//! and writes the results to `BENCHMARKS.md`. Targets are reported, never asserted: a benchmark
//! that misses one still writes its numbers.
//!
//! Runs, in order, on one control plane:
//! 1. memory with 300 unrelated 1 MiB Secrets in the cluster (fresh operator, no Certificates);
//! 2. `--repeats` rounds (3 by default), each in fresh namespaces: throughput to Ready with the
//!    `ca` issuer (ECDSA P-256), the same with the SCM simulator answering at once, and the
//!    control plane's ceiling — a tight client creating as many `kubernetes.io/tls` Secrets
//!    (copies of one the operator wrote) with the same concurrency. Each throughput run also
//!    yields create→Ready latencies (client-side create time to the first watch event showing
//!    Ready), the operator's CPU time (`/proc/<pid>/stat`) and its API writes (audit log).
//!    Figures are the median of the rounds with their min–max; the namespaces are deleted after;
//! 3. crash safety, once: Certificates issued from the SCM simulator while the operator is
//!    killed (SIGKILL) at random moments and restarted; orders counted, every Secret's key checked;
//! 4. memory with `--scale` Certificates and their Secrets: peak while issuing them, right after,
//!    and after a restart (the caches alone);
//! 5. when heaptrack is installed (and not `--no-heap-profile`): the same issuance once more into
//!    an emptied cluster with heaptrack's allocation recorder preloaded into the operator, and
//!    the largest consumers of heap at its peak — what bounds the peak RSS;
//! 6. DiscoveryTask endpoint sweeps: a fresh operator (`--namespace`) reads 200 live TLS servers
//!    on loopback among 1,000 ports that give no certificate (closed and filtered), with
//!    concurrency 64 and the default 32; the wall time against the sweep's budget, the counts in
//!    status, the operator's peak RSS and CPU. `--only discovery` runs just these on a control
//!    plane of their own and replaces only their section of the report;
//! 7. AlertConfig evaluation: `--scale` Certificates at known lifetimes (a quarter INFO, a
//!    quarter WARN, half not alerting), a fresh operator's RSS without an AlertConfig, then one
//!    cluster-wide AlertConfig with the Event channel only: apply → first evaluation in status,
//!    apply → every alert delivered, the reconcile pass's duration (the operator's histogram),
//!    RSS and CPU, the sent-record's size, and how soon a changed Certificate is re-evaluated.
//!    `--only alerting` runs just this on a control plane of its own and replaces only its
//!    section of the report.
//!
//! Each throughput run also reports the next-key Secrets (private keys kept while an order is
//! open) still present once everything is Ready: none should outlive its issuance.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::{Debug, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, ValueEnum};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Event, Namespace, Secret},
};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use pki_operator::{
    crd::v1alpha1::{AlertConfig, AlertConfigStatus, Certificate, DiscoveryTask, alert_config::Level},
    pki::{inspect, key::PrivateKey},
};
use pki_operator_e2e::{
    AuditedWrite, ControlPlane, Operator, repo_root,
    sim::scm::{ScmSimulator, ScmSimulatorConfig},
    tls_fleet::{ClosedPorts, FilteredPorts, LiveEndpoints},
    wait_for, work_dir,
};
use rand::Rng as _;
use serde::de::DeserializeOwned;

const OPERATOR_NAMESPACE: &str = "pki-operator";
/// Concurrent create requests of the driver (Certificates, and the ceiling's Secrets).
const CREATE_CONCURRENCY: usize = 16;
/// Label of the ceiling's Secrets. Not the operator's label: its Secret watch must not see them.
const CEILING_LABEL: &str = "bench.pki-operator.io/ceiling";

/// Measures the guide's §6 targets and writes BENCHMARKS.md.
#[derive(Debug, Parser)]
struct Args {
    /// Certificates per throughput run.
    #[arg(long, default_value_t = 500)]
    certificates: usize,
    /// Rounds of throughput and ceiling runs; figures are their median with min–max.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Certificates for the memory-at-scale run (the guide's target is stated for 10,000).
    #[arg(long, default_value_t = 10_000)]
    scale: usize,
    /// Certificates issued during the crash run.
    #[arg(long, default_value_t = 100)]
    crash_certificates: usize,
    /// How often the operator is killed during the crash run.
    #[arg(long, default_value_t = 10)]
    kills: u32,
    /// Skip the heap profile of an issuance at scale (run when heaptrack is installed).
    #[arg(long)]
    no_heap_profile: bool,
    /// Run only this part, on a control plane of its own, and replace only its section of the
    /// report (the rest of the file, measured at another time, is kept as it is).
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// Live TLS servers the discovery sweeps read.
    #[arg(long, default_value_t = 200)]
    discovery_live: usize,
    /// Closed loopback ports (refused) in the discovery sweep beside the live servers.
    #[arg(long, default_value_t = 800)]
    discovery_closed: usize,
    /// Filtered loopback ports (no answer) in the discovery sweep beside the live servers; with
    /// the closed ones, the ports that give no certificate. The worst-case sweeps make all of
    /// those filtered.
    #[arg(long, default_value_t = 200)]
    discovery_filtered: usize,
    /// Report file, relative to the repository root.
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
}

/// A part of the bench that runs on its own (`--only`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Part {
    /// The DiscoveryTask endpoint sweeps (the report's "Discovery sweep" section).
    Discovery,
    /// One AlertConfig over `--scale` Certificates (the report's "AlertConfig evaluation"
    /// section).
    Alerting,
}

/// One line of the report.
struct Row {
    name: String,
    target: String,
    measured: String,
    met: Option<bool>,
}

/// The median of repeated measurements with their range.
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut values: Vec<f64> = values.into_iter().collect();
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        let median = match values.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => values[middle],
            _ => f64::midpoint(values[middle - 1], values[middle]),
        };
        Self {
            median,
            min: values.first().copied().unwrap_or(f64::NAN),
            max: values.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// `median unit (min–max)`, or just the value when there was one run.
    fn show(&self, decimals: usize, unit: &str) -> String {
        #[allow(clippy::float_cmp)] // equal only when every run measured the very same value
        if self.min == self.max {
            format!("{:.decimals$}{unit}", self.median)
        } else {
            format!(
                "{:.decimals$}{unit} ({:.decimals$}–{:.decimals$})",
                self.median, self.min, self.max
            )
        }
    }
}

/// What one run of issuing Certificates measured.
struct Issuance {
    /// First create sent to the last Certificate seen Ready.
    elapsed: Duration,
    /// Per Certificate, create returned → first seen Ready; sorted.
    latencies: Vec<Duration>,
    /// The operator's user + system CPU time from the first create until its writes settled.
    cpu: Duration,
    /// The operator's writes in the run's namespace.
    writes: Vec<AuditedWrite>,
    /// Next-key Secrets (a private key kept while an order is open) still there once every
    /// Certificate was Ready and the writes stopped.
    next_keys_left: usize,
    /// The machine's 1-minute load average as the run started: other work shows up here.
    load: f64,
}

impl Issuance {
    #[allow(clippy::cast_precision_loss)]
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile of the create→Ready latencies, seconds.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    fn latency(&self, percentile: f64) -> f64 {
        let rank = (percentile / 100.0 * self.latencies.len() as f64).ceil() as usize;
        self.latencies
            .get(rank.saturating_sub(1))
            .map_or(f64::NAN, Duration::as_secs_f64)
    }

    #[allow(clippy::cast_precision_loss)]
    fn cpu_ms_per_certificate(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / self.latencies.len() as f64
    }
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
    match args.only {
        Some(Part::Discovery) => return run_discovery_only(args).await,
        Some(Part::Alerting) => return run_alerting_only(args).await,
        None => {}
    }
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let started = Instant::now();
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

    let (throughput_rows, writes) = throughput(&plane, &client, &operator, args).await?;
    rows.extend(throughput_rows);

    println!(
        "==> crash safety: {} Certificates, {} kills",
        args.crash_certificates, args.kills
    );
    let (operator, crash_rows) = crash_run(&plane, &client, &dir, operator, &crash_scm, args).await?;
    rows.extend(crash_rows);

    println!("==> memory with {} Certificates", args.scale);
    let (operator, scale_rows) = memory_at_scale(&plane, &client, &dir, operator, args.scale).await?;
    rows.extend(scale_rows);

    let profile = if args.no_heap_profile {
        drop(operator);
        Profile::Skipped("skipped (`--no-heap-profile`)".into())
    } else {
        println!("==> heap profile of issuing {} Certificates", args.scale);
        heap_profile(&plane, &client, &dir, operator, args.scale)
            .await
            .unwrap_or_else(|error| Profile::Skipped(format!("failed: {error:#}")))
    };

    println!("==> discovery sweeps");
    let discovery = discovery_sweeps(&plane, &client, &dir, args).await?;

    println!("==> one AlertConfig over {} Certificates", args.scale);
    let alerting = alerting(&plane, &client, &dir, args.scale).await?;

    scm.shutdown().await;
    crash_scm.shutdown().await;
    plane.stop();
    let mut report = render(&rows, &writes, &profile, args, started.elapsed())?;
    writeln!(report)?;
    report.push_str(&render_discovery(&discovery)?);
    writeln!(report)?;
    report.push_str(&render_alerting(&alerting)?);
    let path = repo_root().join(&args.output);
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("\n{report}");
    println!("written to {}", path.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The issuers of the throughput runs: ClusterIssuer and report label.
const THROUGHPUT_ISSUERS: [(&str, &str); 2] = [
    ("bench-ca", "`ca` issuer"),
    ("bench-scm", "SCM simulator, no delay"),
];

/// Writes per issuance of one issuer over all its runs: `verb resource` → writes per
/// Certificate.
struct IssuerWrites {
    label: &'static str,
    per_issuance: BTreeMap<String, f64>,
}

/// `--repeats` rounds of a throughput run per issuer and a ceiling run, each in a fresh
/// namespace; rounds interleave the three so drift (etcd growing) spreads over all of them.
async fn throughput(
    plane: &ControlPlane,
    client: &Client,
    operator: &Operator,
    args: &Args,
) -> Result<(Vec<Row>, Vec<IssuerWrites>)> {
    let count = args.certificates;
    let mut runs: Vec<Vec<Issuance>> = THROUGHPUT_ISSUERS.iter().map(|_| Vec::new()).collect();
    let mut ceilings = Vec::new();
    let mut namespaces = Vec::new();
    let mut template = None;
    for round in 1..=args.repeats {
        for ((issuer, label), runs) in THROUGHPUT_ISSUERS.iter().zip(&mut runs) {
            println!(
                "==> throughput {round}/{}: {count} Certificates, {label}",
                args.repeats
            );
            let namespace = format!("throughput-{issuer}-{round}");
            let run = issue_many(plane, client, operator, &namespace, issuer, count).await?;
            println!(
                "    {:.1} /s, p50 {:.2} s, {:.1} ms CPU per Certificate",
                run.rate(),
                run.latency(50.0),
                run.cpu_ms_per_certificate()
            );
            if template.is_none() {
                template = Some(ceiling_template(client, &namespace).await?);
            }
            namespaces.push(namespace);
            runs.push(run);
        }
        println!(
            "==> ceiling {round}/{}: {count} TLS Secrets created directly",
            args.repeats
        );
        let namespace = format!("ceiling-{round}");
        let template = template.as_ref().context("no Secret to copy for the ceiling")?;
        let elapsed = ceiling_run(client, &namespace, template, count).await?;
        #[allow(clippy::cast_precision_loss)]
        let rate = count as f64 / elapsed.as_secs_f64();
        println!("    {rate:.1} Secrets/s");
        ceilings.push(rate);
        namespaces.push(namespace);
    }
    // The later runs measure memory with `--scale` Certificates, not with these as well.
    println!("==> deleting the throughput and ceiling namespaces");
    delete_namespaces(client, &namespaces).await?;
    Ok(throughput_rows(count, &runs, &Spread::of(ceilings)))
}

/// The report's rows for the throughput rounds, and the writes per issuance of each issuer.
fn throughput_rows(count: usize, runs: &[Vec<Issuance>], ceiling: &Spread) -> (Vec<Row>, Vec<IssuerWrites>) {
    let mut rows = Vec::new();
    let mut writes = Vec::new();
    let of = |runs: &[Issuance], figure: fn(&Issuance) -> f64| Spread::of(runs.iter().map(figure));
    rows.push(Row {
        name: "Machine load (1-minute load average) as each throughput run started: other work \
               sharing the cores shows here"
            .into(),
        target: "-".into(),
        measured: Spread::of(runs.iter().flatten().map(|run| run.load)).show(1, ""),
        met: None,
    });
    rows.push(Row {
        name: format!(
            "Ceiling: `kubernetes.io/tls` Secrets created directly, {count} per run, \
             {CREATE_CONCURRENCY} at once"
        ),
        target: "-".into(),
        measured: ceiling.show(1, " /s"),
        met: None,
    });
    for ((_, label), runs) in THROUGHPUT_ISSUERS.iter().zip(runs) {
        let rate = of(runs, Issuance::rate);
        let elapsed = of(runs, |run| run.elapsed.as_secs_f64());
        rows.push(Row {
            name: format!("Throughput to Ready, ECDSA P-256, {label}, {count} Certificates"),
            target: "≥ 50 /s".into(),
            measured: format!("{} in {}", rate.show(1, " /s"), elapsed.show(1, " s")),
            met: Some(rate.median >= 50.0),
        });
        let issuance = per_issuance(runs);
        let total: f64 = issuance.values().sum();
        let operator_writes_per_second = Spread::of(runs.iter().map(|run| {
            #[allow(clippy::cast_precision_loss)]
            let writes = (run.writes.len() + run.latencies.len()) as f64;
            writes / run.elapsed.as_secs_f64()
        }));
        rows.push(Row {
            name: format!("Operator ÷ ceiling, {label}"),
            target: "-".into(),
            measured: format!(
                "{:.3} (Certificates/s ÷ Secrets/s, medians; {:.1} API writes per Certificate with \
                 its create: {} writes/s)",
                rate.median / ceiling.median,
                total + 1.0,
                operator_writes_per_second.show(0, "")
            ),
            met: None,
        });
        rows.push(Row {
            name: format!("create→Ready latency p50 / p95 / p99, {label}"),
            target: "-".into(),
            measured: [50.0, 95.0, 99.0]
                .iter()
                .map(|&p| Spread::of(runs.iter().map(|run| run.latency(p))).show(2, " s"))
                .collect::<Vec<_>>()
                .join(" / "),
            met: None,
        });
        rows.push(Row {
            name: format!("Operator CPU per issued Certificate, {label}"),
            target: "-".into(),
            measured: of(runs, Issuance::cpu_ms_per_certificate).show(1, " ms"),
            met: None,
        });
        // The guide: ≤ 3 for local signing, ≤ 5 for a paid CA.
        let bound = if label.contains("`ca`") { 3.0 } else { 5.0 };
        rows.push(Row {
            name: format!("API writes per issuance, {label} (all runs)"),
            target: format!("≤ {bound:.0}"),
            measured: describe_writes(total, &issuance),
            met: Some(total <= bound + 0.005),
        });
        let left: usize = runs.iter().map(|run| run.next_keys_left).sum();
        rows.push(Row {
            name: format!(
                "Next-key Secrets (private keys of open orders) left once all were Ready, {label} (all runs)"
            ),
            target: "0".into(),
            measured: format!("{left} of {} Certificates", count * runs.len()),
            met: Some(left == 0),
        });
        writes.push(IssuerWrites {
            label,
            per_issuance: issuance,
        });
    }
    (rows, writes)
}

/// Writes per Certificate over all `runs`, by `verb resource`.
fn per_issuance(runs: &[Issuance]) -> BTreeMap<String, f64> {
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for write in runs.iter().flat_map(|run| &run.writes) {
        *by_kind
            .entry(format!("{} {}", write.verb, write.resource))
            .or_default() += 1;
    }
    let certificates: usize = runs.iter().map(|run| run.latencies.len()).sum();
    #[allow(clippy::cast_precision_loss)]
    by_kind
        .into_iter()
        .map(|(kind, n)| (kind, n as f64 / certificates as f64))
        .collect()
}

fn describe_writes(total: f64, by_kind: &BTreeMap<String, f64>) -> String {
    let mut text = format!("{total:.2} (");
    for (index, (kind, n)) in by_kind.iter().enumerate() {
        if index > 0 {
            text.push_str(", ");
        }
        let _ = write!(text, "{kind} {n:.2}");
    }
    text.push(')');
    text
}

/// Why the operator makes each kind of write during an issuance, for the report.
fn why(kind: &str) -> &'static str {
    match kind {
        "patch secrets" => {
            "The TLS Secret itself, written by server-side apply under the operator's one field \
             manager (a removed output disappears with the next apply)."
        }
        "patch certificates/status" => {
            "The status: once for the delivery (Ready, serial, expiry, the order as delivered). A \
             paid order that has to wait adds one when it is placed (`status.order`, so an \
             operator restarted before the delivery resumes it instead of ordering again); one the \
             CA issues at once is recorded by the delivery's write."
        }
        "create events" => {
            "`Issued` on delivery (lifecycle transitions are Events, house style §7.4); a paid \
             order that has to wait adds `OrderPlaced`."
        }
        "create secrets" => {
            "The next-key Secret of a paid CA: the private key is stored before the CA is asked, so \
             a crash between order and delivery never loses the key of a paid certificate (local \
             signing skips it: a crash there only means signing again)."
        }
        "delete secrets" => {
            "The next-key Secret removed once the delivery is recorded in status (not before: a \
             crash in between finds the key in both places)."
        }
        _ => "Not expected in an issuance: see the audit log of a run.",
    }
}

/// Creates `count` Certificates in a new namespace and waits until all are Ready; measures the
/// time from the first create to the last Ready, each Certificate's create→Ready latency, the
/// operator's CPU time and its API writes.
async fn issue_many(
    plane: &ControlPlane,
    client: &Client,
    operator: &Operator,
    namespace: &str,
    issuer: &str,
    count: usize,
) -> Result<Issuance> {
    create_namespace(client, namespace).await?;
    let since = jiff::Timestamp::now();
    let api: Api<Certificate> = Api::namespaced(client.clone(), namespace);
    // The watch is established (its initial list done) before the first create, so every
    // Ready is seen as it happens.
    let ready = watch_until(api.clone(), count, is_ready).await?;
    let load = load_average()?;
    let cpu_before = cpu_time(operator.pid())?;
    let started = Instant::now();
    let created = stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("c-{i:05}");
                api.create(&PostParams::default(), &certificate(&name, issuer)?)
                    .await?;
                Ok::<_, anyhow::Error>((name, Instant::now()))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<HashMap<_, _>>()
        .await?;
    let timeout = Duration::from_secs(120 + u64::try_from(count / 5).unwrap_or(u64::MAX));
    let ready = ready
        .finish(timeout)
        .await
        .with_context(|| format!("Certificates Ready in {namespace}"))?;
    let last = ready.values().max().copied().unwrap_or(started);
    let mut latencies: Vec<Duration> = created
        .iter()
        .map(|(name, at)| {
            ready
                .get(name)
                .map_or(Duration::ZERO, |ready| ready.saturating_duration_since(*at))
        })
        .collect();
    latencies.sort();
    // Events and status writes trail the last Ready by a moment; the CPU time includes them.
    let writes = settled_writes(plane, namespace, since).await?;
    let cpu = cpu_time(operator.pid())?.saturating_sub(cpu_before);
    let next_keys_left = Api::<Secret>::namespaced(client.clone(), namespace)
        .list_metadata(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|secret| secret.name_any().ends_with("-next-key"))
        .count();
    Ok(Issuance {
        elapsed: last.duration_since(started),
        latencies,
        cpu,
        writes,
        next_keys_left,
        load,
    })
}

fn is_ready(certificate: &Certificate) -> bool {
    certificate.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// A watch counting the objects that reached a state ([`watch_until`]).
struct Observed {
    task: tokio::task::JoinHandle<Result<HashMap<String, Instant>>>,
}

impl Observed {
    /// When each object was first seen in the state, once all have been; fails after `timeout`.
    async fn finish(mut self, timeout: Duration) -> Result<HashMap<String, Instant>> {
        if let Ok(joined) = tokio::time::timeout(timeout, &mut self.task).await {
            joined?
        } else {
            self.task.abort();
            bail!("not all reached after {timeout:?}")
        }
    }
}

/// Watches `api` until `count` objects have been seen with `done` true, recording when each
/// first was. Returns once the watch's initial list is done, so nothing later is missed.
async fn watch_until<K>(api: Api<K>, count: usize, done: fn(&K) -> bool) -> Result<Observed>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let (listed, initialised) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut listed = Some(listed);
        let mut seen = HashMap::new();
        // A watch error (a dropped connection) is retried with backoff; the events still come.
        let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
        while seen.len() < count || listed.is_some() {
            let event = match events.next().await {
                Some(Ok(event)) => event,
                Some(Err(error)) => {
                    eprintln!("watch: {error}; retrying");
                    continue;
                }
                None => bail!("the watch ended"),
            };
            let at = Instant::now();
            match event {
                watcher::Event::InitDone => {
                    if let Some(listed) = listed.take() {
                        let _ = listed.send(());
                    }
                }
                watcher::Event::Apply(object) | watcher::Event::InitApply(object) if done(&object) => {
                    seen.entry(object.name_any()).or_insert(at);
                }
                _ => {}
            }
        }
        Ok(seen)
    });
    if initialised.await.is_err() {
        // The task ended before its first list: its error says why.
        task.await??;
        bail!("the watch ended before its initial list");
    }
    Ok(Observed { task })
}

/// The operator's writes in `namespace` since `since` (the driver's `create certificates` and
/// the control plane's own controllers are not counted), once they stop: no new one for 1.5 s.
async fn settled_writes(
    plane: &ControlPlane,
    namespace: &str,
    since: jiff::Timestamp,
) -> Result<Vec<AuditedWrite>> {
    let read = || -> Result<Vec<AuditedWrite>> {
        Ok(plane
            .audited_writes(namespace, since)?
            .into_iter()
            .filter(|w| {
                let driver = w.verb == "create" && w.resource == "certificates";
                !(driver || w.user_agent.starts_with("devcluster"))
            })
            .collect())
    };
    // Nothing announces the operator's last write, so quiet is the signal: the apiserver logs a
    // write before answering it, and the operator writes within milliseconds of a Ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut writes = read()?;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(1500) {
        if Instant::now() > deadline {
            bail!("writes in {namespace} still coming after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = read()?;
        if now.len() != writes.len() {
            writes = now;
            quiet_since = Instant::now();
        }
    }
    Ok(writes)
}

/// A TLS Secret the operator wrote in `namespace`, as the ceiling's template: same data, same
/// annotations; its label renamed so the operator's Secret watch ignores the copies.
async fn ceiling_template(client: &Client, namespace: &str) -> Result<Secret> {
    let written = Api::<Secret>::namespaced(client.clone(), namespace)
        .get("c-00000-tls")
        .await?;
    let labels = written.metadata.labels.unwrap_or_default().into_iter();
    Ok(Secret {
        metadata: ObjectMeta {
            labels: Some(
                labels
                    .map(|(_, value)| (CEILING_LABEL.to_owned(), value))
                    .collect(),
            ),
            annotations: written.metadata.annotations,
            ..ObjectMeta::default()
        },
        type_: written.type_,
        data: written.data,
        ..Secret::default()
    })
}

fn is_ceiling_secret(secret: &Secret) -> bool {
    secret.labels().contains_key(CEILING_LABEL)
}

/// The control plane's ceiling: `count` copies of `template` created in a new namespace with the
/// drivers' concurrency, timed like a throughput run (first create to the last seen by a watch).
async fn ceiling_run(client: &Client, namespace: &str, template: &Secret, count: usize) -> Result<Duration> {
    create_namespace(client, namespace).await?;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let seen = watch_until(api.clone(), count, is_ceiling_secret).await?;
    let started = Instant::now();
    stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            let mut secret = template.clone();
            secret.metadata.name = Some(format!("c-{i:05}-tls"));
            async move { api.create(&PostParams::default(), &secret).await.map(|_| ()) }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let seen = seen.finish(Duration::from_secs(120)).await?;
    let last = seen.values().max().copied().unwrap_or(started);
    Ok(last.duration_since(started))
}

/// Deletes `names` and waits until they are gone.
async fn delete_namespaces(client: &Client, names: &[String]) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in names {
        api.delete(name, &DeleteParams::default()).await?;
    }
    wait_for(
        "the deleted namespaces to disappear",
        Duration::from_secs(600),
        || {
            let api = api.clone();
            async move {
                let left = api.list_metadata(&ListParams::default()).await.ok()?;
                let any_left = left.items.iter().any(|ns| names.contains(&ns.name_any()));
                (!any_left).then_some(())
            }
        },
    )
    .await
}

/// Peak RSS while issuing `scale` Certificates, RSS right after, and of a restarted operator
/// holding the same caches.
async fn memory_at_scale(
    plane: &ControlPlane,
    client: &Client,
    dir: &Path,
    operator: Operator,
    scale: usize,
) -> Result<(Operator, Vec<Row>)> {
    let mut rows = Vec::new();
    let run = issue_many(plane, client, &operator, "scale", "bench-ca", scale).await?;
    // The resident size once the burst's buffers had a moment to go; the peak is the
    // high-water mark of the whole run.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (rss, peak) = memory(operator.pid())?;
    let split = resident_split(operator.pid())?;
    let total = Api::<Certificate>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    rows.push(Row {
        name: format!("Operator peak RSS (VmHWM) while issuing {scale} Certificates"),
        target: "≤ 100 MiB".into(),
        measured: format!(
            "{peak:.1} MiB (issued in {:.0} s, {:.1} /s; {:.1} ms CPU per Certificate; \
             create→Ready p50 {:.0} s)",
            run.elapsed.as_secs_f64(),
            run.rate(),
            run.cpu_ms_per_certificate(),
            run.latency(50.0)
        ),
        met: Some(peak <= 100.0),
    });
    rows.push(Row {
        name: format!("Operator RSS, {scale} Certificates Ready with their Secrets ({total} in the cluster)"),
        target: "≤ 100 MiB".into(),
        measured: format!("{rss:.1} MiB ({split})"),
        met: Some(rss <= 100.0),
    });
    // A restarted operator holds the same caches without the issuance burst behind it.
    drop(operator);
    let operator = start_operator(plane, dir, "operator-restarted").await?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (rss, peak) = memory(operator.pid())?;
    let split = resident_split(operator.pid())?;
    rows.push(Row {
        name: format!("Operator RSS after a restart with {total} Certificates Ready (caches, no issuance)"),
        target: "≤ 100 MiB".into(),
        measured: format!("{rss:.1} MiB (peak {peak:.1} MiB; {split})"),
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
    Ok((status_mib(pid, "VmRSS:")?, status_mib(pid, "VmHWM:")?))
}

/// What the resident memory of `pid` is: anonymous (heap, stacks, what malloc keeps) and
/// file-backed (the binary's and libraries' pages), MiB.
fn resident_split(pid: u32) -> Result<String> {
    Ok(format!(
        "{:.1} MiB anonymous, {:.1} MiB file-backed",
        status_mib(pid, "RssAnon:")?,
        status_mib(pid, "RssFile:")?
    ))
}

/// A `kB` field of `/proc/<pid>/status`, MiB.
fn status_mib(pid: u32, name: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
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
}

/// The 1-minute load average (`/proc/loadavg`).
fn load_average() -> Result<f64> {
    Ok(std::fs::read_to_string("/proc/loadavg")?
        .split_whitespace()
        .next()
        .context("empty /proc/loadavg")?
        .parse()?)
}

/// User + system CPU time `pid` has used so far (`utime` and `stime` of `/proc/<pid>/stat`).
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    // There, field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let (_, fields) = stat.rsplit_once(')').context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = fields.split_whitespace().collect();
    let ticks =
        |index: usize| -> Result<u64> { Ok(fields.get(index).context("short /proc/<pid>/stat")?.parse()?) };
    let ticks = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(
        f64::from(u32::try_from(ticks)?) / clock_ticks_per_second()?,
    ))
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf` (the crate forbids `unsafe`, so no libc call).
fn clock_ticks_per_second() -> Result<f64> {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    if let Some(ticks) = TICKS.get() {
        return Ok(*ticks);
    }
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    let ticks: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK")?;
    Ok(*TICKS.get_or_init(|| ticks))
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
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
    let ready = watch_until(
        Api::<Certificate>::namespaced(client.clone(), namespace),
        args.crash_certificates,
        is_ready,
    )
    .await?;
    create_certificates(client, namespace, "bench-scm-slow", args.crash_certificates).await?;
    for kill in 0..args.kills {
        let wait = rand::rng().random_range(300..2500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        operator.kill();
        operator = spawn_operator(plane, dir, &format!("operator-crash-{kill}"))?;
    }
    operator.wait_ready(Duration::from_secs(120)).await?;
    ready
        .finish(Duration::from_secs(600))
        .await
        .context("crash-run Certificates Ready")?;
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
                "Crash safety: {} SCM Certificates, operator SIGKILLed {} times at random (one run)",
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

/// The commit measured: `git rev-parse --short HEAD` of the repository.
fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(repo_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The CPUs this process may use and their model name.
fn machine() -> (usize, String) {
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
    (cpus, model)
}

fn render(
    rows: &[Row],
    writes: &[IssuerWrites],
    profile: &Profile,
    args: &Args,
    took: Duration,
) -> Result<String> {
    let commit = commit();
    let (cpus, model) = machine();
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
        "Run {} at commit `{commit}` on {cpus} CPU(s) ({model}), {:.0} minutes; {} Certificates per \
         throughput run, {} rounds, {} at scale, {} in the crash run with {} kills.",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        took.as_secs_f64() / 60.0,
        args.certificates,
        args.repeats,
        args.scale,
        args.crash_certificates,
        args.kills
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Throughput, ceiling, latency and CPU figures are the **median (min–max) of {} rounds**, \
         each in fresh namespaces. Throughput is timed from the first create to the last \
         Certificate a watch saw Ready; the ceiling is the same control plane taking \
         `kubernetes.io/tls` Secrets (copies of one the operator wrote) from a client that only \
         creates them, {CREATE_CONCURRENCY} at once like the Certificates' driver, timed to the last \
         one its watch saw. Latency is per Certificate, from its create returning to the first \
         watch event showing it Ready. CPU is the operator's user + system time \
         (`/proc/<pid>/stat`) from the first create until its writes stop, divided by the \
         Certificates issued.",
        args.repeats
    )?;
    writeln!(out)?;
    render_rows(&mut out, rows)?;
    writeln!(out)?;
    writeln!(out, "## API writes per issuance")?;
    writeln!(out)?;
    writeln!(
        out,
        "Every write the operator made in the throughput namespaces, from the control plane's \
         audit log, per Certificate over all rounds; the driver's create of the Certificate is not \
         counted. Every write is work for the apiserver and etcd on the cores the operator \
         signs on too, so each write an issuance saves is throughput."
    )?;
    writeln!(out)?;
    let kinds: std::collections::BTreeSet<&String> =
        writes.iter().flat_map(|w| w.per_issuance.keys()).collect();
    let header: Vec<&str> = writes.iter().map(|w| w.label).collect();
    writeln!(out, "| write | {} | why |", header.join(" | "))?;
    writeln!(out, "|---|{}---|", "---|".repeat(writes.len()))?;
    for kind in kinds {
        let counts: Vec<String> = writes
            .iter()
            .map(|w| format!("{:.2}", w.per_issuance.get(kind).copied().unwrap_or(0.0)))
            .collect();
        writeln!(out, "| {kind} | {} | {} |", counts.join(" | "), why(kind))?;
    }
    render_profile(&mut out, profile, args.scale)?;
    Ok(out)
}

/// The heap profile of an issuance at scale, or why there is none.
enum Profile {
    Skipped(String),
    Taken {
        /// Peak RSS of the profiled operator (heaptrack's own memory included), MiB.
        peak_rss: f64,
        /// Issuance rate under the profiler.
        rate: f64,
        /// How long the profiled issuance took.
        elapsed: Duration,
        /// `heaptrack_print`'s summary lines (peak heap, peak RSS).
        summary: Vec<String>,
        /// The largest consumers of heap at the peak.
        consumers: Vec<Consumer>,
    },
}

/// One allocation site's share of the heap at its peak, from `heaptrack_print --print-peaks`:
/// its largest backtrace.
struct Consumer {
    /// The site's total at the peak, as heaptrack prints it: `40.67M`.
    site: String,
    /// The largest backtrace's part of it, and its allocations.
    size: String,
    calls: String,
    /// The call path of its largest backtrace, innermost first, library frames left out.
    path: Vec<String>,
}

/// heaptrack's parts on this machine: the preload library, the interpreter its data goes
/// through, and `heaptrack_print`.
struct Heaptrack {
    preload: PathBuf,
    interpret: PathBuf,
    print: PathBuf,
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

fn find_heaptrack() -> Option<Heaptrack> {
    let print = on_path("heaptrack_print")?;
    // Where distributions put the library (heaptrack's own script knows it relative to itself).
    [
        "/usr/lib/heaptrack",
        "/usr/lib/x86_64-linux-gnu/heaptrack",
        "/usr/lib64/heaptrack",
        "/usr/local/lib/heaptrack",
    ]
    .iter()
    .map(|dir| Heaptrack {
        preload: Path::new(dir).join("libheaptrack_preload.so"),
        interpret: Path::new(dir).join("libexec/heaptrack_interpret"),
        print: print.clone(),
    })
    .find(|found| found.preload.is_file() && found.interpret.is_file())
}

/// Issues `scale` Certificates once more, from an empty cluster again, with the operator's
/// allocations recorded by heaptrack's preload library, and reads the heap at its peak. A
/// separate run: the profiler slows the operator and adds its own memory, so the figures above
/// come from the unprofiled run.
async fn heap_profile(
    plane: &ControlPlane,
    client: &Client,
    dir: &Path,
    operator: Operator,
    scale: usize,
) -> Result<Profile> {
    drop(operator);
    let Some(heaptrack) = find_heaptrack() else {
        return Ok(Profile::Skipped("heaptrack is not installed here".into()));
    };
    delete_namespaces(client, &["scale".to_owned()]).await?;
    // heaptrack's own script does the same: the preloaded library writes to a FIFO that the
    // interpreter reads. Started here rather than through that script so that the process the
    // bench measures and stops is the operator itself.
    let fifo = dir.join("heaptrack.fifo");
    let data = dir.join(if on_path("zstd").is_some() {
        "heaptrack.zst"
    } else {
        "heaptrack.txt"
    });
    let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    if !made.success() {
        bail!("mkfifo {} failed", fifo.display());
    }
    let pipeline = if on_path("zstd").is_some() {
        r#""$0" < "$1" | zstd -q -c > "$2""#
    } else {
        r#""$0" < "$1" > "$2""#
    };
    let mut interpreter = std::process::Command::new("sh")
        .args(["-c", pipeline])
        .arg(&heaptrack.interpret)
        .arg(&fifo)
        .arg(&data)
        .spawn()
        .context("starting heaptrack_interpret")?;
    let preload = heaptrack.preload.to_string_lossy();
    let fifo_path = fifo.to_string_lossy();
    let mut operator = Operator::start_with_env(
        plane,
        dir,
        "operator-heaptrack",
        &[
            "--cluster-resource-namespace",
            OPERATOR_NAMESPACE,
            "--log-level",
            "warn",
        ],
        &[("LD_PRELOAD", &preload), ("DUMP_HEAPTRACK_OUTPUT", &fifo_path)],
    )?;
    operator.wait_ready(Duration::from_secs(300)).await?;
    let run = issue_many(plane, client, &operator, "profile", "bench-ca", scale).await?;
    let (_, peak_rss) = memory(operator.pid())?;
    // A clean exit flushes the profiler's last records.
    pki_operator_e2e::signal(operator.pid(), "TERM");
    let _ = operator.wait_exit(Duration::from_secs(60)).await;
    drop(operator);
    tokio::task::spawn_blocking(move || interpreter.wait()).await??;
    let printed = std::process::Command::new(&heaptrack.print)
        .arg("-f")
        .arg(&data)
        .args([
            "--print-peaks",
            "1",
            "--print-allocators",
            "0",
            "--print-temporary",
            "0",
            "--print-leaks",
            "0",
            "--peak-limit",
            "6",
            "--sub-peak-limit",
            "1",
        ])
        .output()
        .context("running heaptrack_print")?;
    let text = String::from_utf8_lossy(&printed.stdout);
    let (summary, consumers) = parse_peaks(&text);
    if consumers.is_empty() {
        bail!(
            "heaptrack_print found no peak consumers: {}",
            String::from_utf8_lossy(&printed.stderr)
        );
    }
    Ok(Profile::Taken {
        peak_rss,
        rate: run.rate(),
        elapsed: run.elapsed,
        summary,
        consumers,
    })
}

/// Reads `heaptrack_print --print-peaks` output: each consumer is a line `<size> peak memory
/// consumed over <n> calls from`, its allocation site, then its largest backtrace (`<size>
/// consumed over <n> calls from:` and indented frames, each followed by `at`/`in` lines).
fn parse_peaks(text: &str) -> (Vec<String>, Vec<Consumer>) {
    let summary = text
        .lines()
        .filter(|l| l.starts_with("peak heap memory") || l.starts_with("peak RSS"))
        .map(str::to_owned)
        .collect();
    let mut consumers: Vec<Consumer> = Vec::new();
    for line in text.lines() {
        if let Some((size, rest)) = line.split_once(" peak memory consumed over ") {
            consumers.push(Consumer {
                site: size.trim().to_owned(),
                size: size.trim().to_owned(),
                calls: rest.trim_end_matches(" calls from").to_owned(),
                path: Vec::new(),
            });
        } else if let Some((size, rest)) = line.split_once(" consumed over ")
            && let Some(consumer) = consumers.last_mut()
            && consumer.path.is_empty()
        {
            size.trim().clone_into(&mut consumer.size);
            rest.trim_end_matches(" calls from:")
                .clone_into(&mut consumer.calls);
        } else if let Some(frame) = line.strip_prefix("    ")
            && !frame.starts_with(' ')
            && let Some(consumer) = consumers.last_mut()
        {
            let frame = readable_frame(frame);
            // Standard-library and stream-combinator frames say nothing about whose memory it is.
            let library = [
                "core::",
                "alloc::",
                "std::",
                "<core::",
                "<alloc::",
                "<std::",
                "_R",
                "0x",
                "<S as futures_core::",
                "<futures_util::",
                "futures_util::",
            ]
            .iter()
            .any(|prefix| frame.starts_with(prefix));
            if !library && consumer.path.len() < 4 {
                consumer.path.push(frame);
            }
        }
    }
    (summary, consumers)
}

/// A symbol as heaptrack prints Rust's legacy mangling, made readable: escapes decoded, the hash
/// dropped.
fn readable_frame(frame: &str) -> String {
    let mut text = frame
        .replace("$LT$", "<")
        .replace("$GT$", ">")
        .replace("$u20$", " ")
        .replace("$u7b$", "{")
        .replace("$u7d$", "}")
        .replace("$C$", ",")
        .replace("$RF$", "&")
        .replace("..", "::");
    if let Some(start) = text.rfind("::h")
        && text[start + 3..].chars().all(|c| c.is_ascii_hexdigit())
    {
        text.truncate(start);
    }
    text.trim_start_matches('_').to_owned()
}

fn render_profile(out: &mut String, profile: &Profile, scale: usize) -> Result<()> {
    writeln!(out)?;
    writeln!(out, "## What the peak RSS is made of")?;
    writeln!(out)?;
    let (peak_rss, rate, elapsed, summary, consumers) = match profile {
        Profile::Skipped(why) => {
            writeln!(out, "Heap profile: {why}.")?;
            return Ok(());
        }
        Profile::Taken {
            peak_rss,
            rate,
            elapsed,
            summary,
            consumers,
        } => (peak_rss, rate, elapsed, summary, consumers),
    };
    writeln!(
        out,
        "A second issuance of {scale} Certificates into an emptied cluster, the operator's \
         allocations recorded by heaptrack (preloaded; it issued {rate:.1} /s under it, peak RSS \
         {peak_rss:.1} MiB with the profiler's own memory). heaptrack: {}. The gap between the \
         peak heap and the peak RSS is the binary, thread stacks and memory glibc's malloc keeps \
         in its arenas after a burst. The largest consumers of heap at the peak, with the call \
         path of each one's largest backtrace (innermost first; standard-library and stream-combinator \
         frames left out):",
        summary.join("; ")
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| heap at peak | of its allocation site's | allocations | call path |"
    )?;
    writeln!(out, "|---|---|---|---|")?;
    for consumer in consumers {
        let path: Vec<String> = consumer.path.iter().map(|f| format!("`{f}`")).collect();
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            consumer.size,
            consumer.site,
            consumer.calls,
            path.join(" ← ")
        )?;
    }
    // The reading of the profile, where it applies: kube-runtime's event Recorder keeps every
    // Event it published for 6 minutes (to count repeats as a series), so a burst of Issued
    // Events shorter than that is held whole.
    let recorder = consumers.iter().take(2).any(|c| {
        c.path
            .iter()
            .any(|f| f.contains("::publish") || f.contains("events::Recorder"))
    });
    if recorder {
        writeln!(out)?;
        writeln!(
            out,
            "**Reading:** a top consumer is the event publisher: kube-runtime's `Recorder` keeps \
             every Event it published for 6 minutes (`CACHE_TTL`, so that a repeat becomes a \
             series) in one hash map whose entries hold the whole Event inline, and it grows by \
             doubling. Issuing {scale} Certificates took {:.0} s here, so {}. There is one `Issued` Event per issuance, so the \
             series bookkeeping buys nothing for it: publishing it through the `events.k8s.io` API \
             directly, or a Recorder whose cache is bounded, would free that memory. The watch \
             caches (the Certificates themselves: the restart row) are the floor.",
            elapsed.as_secs_f64(),
            if elapsed.as_secs() < 360 {
                "every `Issued` Event of the burst was held at once"
            } else {
                "the `Issued` Events of the last 6 minutes were held at any moment"
            }
        )?;
    }
    Ok(())
}

/// Per-connection timeout of the discovery sweeps: a filtered port holds a connection slot this
/// long, so it sets what the filtered ports cost.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(2);
/// Time budget of each discovery sweep.
const SWEEP_BUDGET: Duration = Duration::from_secs(60);
/// Ports per range: the CRD's limit on `endpoints.ranges[].ports`.
const PORTS_PER_RANGE: usize = 32;
/// Ranges per task: the CRD's limit on `endpoints.ranges`.
const MAX_RANGES: usize = 64;
/// The DiscoveryTask controller's concurrency when the spec sets none.
const DEFAULT_SWEEP_CONCURRENCY: u32 = 32;
/// The operator's memory target (the guide's sizing, the same as for issuance at scale), MiB.
const RSS_TARGET_MIB: f64 = 100.0;
/// The DiscoveryTask each sweep applies.
const SWEEP_TASK: &str = "sweep";

/// What the ports of a sweep that give no certificate are.
#[derive(Clone, Copy, Debug)]
enum Unanswered {
    /// `--discovery-closed` closed and `--discovery-filtered` filtered ports.
    Mixed,
    /// As many ports, all filtered: the slowest sweep of that many targets.
    AllFiltered,
}

/// The sweeps measured, in order: the acceptance sweep at concurrency 64 and at the default, then
/// the worst case (every port that gives no certificate filtered) at both.
const SWEEP_CASES: [(Unanswered, Option<u32>); 4] = [
    (Unanswered::Mixed, Some(64)),
    (Unanswered::Mixed, None),
    (Unanswered::AllFiltered, Some(64)),
    (Unanswered::AllFiltered, None),
];

/// What one discovery sweep measured.
struct Sweep {
    /// The targets, e.g. `200 live + 800 closed + 200 filtered`.
    label: String,
    /// The concurrency the operator used, and whether the spec set it (else the default).
    concurrency: u32,
    concurrency_set: bool,
    /// Filtered ports among the targets: each holds a connection slot for the timeout.
    filtered: usize,
    /// Certificates and unreachable targets a complete sweep reports.
    expected_total: usize,
    expected_unreachable: usize,
    /// The DiscoveryTask's create to the watch event showing its run recorded.
    wall: Duration,
    /// `status.lastRunDuration`, the operator's own timing of the run.
    run_duration: String,
    /// `status.summary.total` and `.unreachable`.
    total: i64,
    unreachable: i64,
    /// The operator's RSS once started and idle, its peak (`VmHWM`) then and after the sweep, MiB.
    rss_idle: f64,
    peak_before: f64,
    peak_after: f64,
    /// The operator's user + system CPU time during the sweep.
    cpu: Duration,
    /// The bench's own CPU time meanwhile: mostly the TLS servers' handshakes, on the same cores.
    bench_cpu: Duration,
    /// The 1-minute load average as the sweep started.
    load: f64,
}

impl Sweep {
    /// Every target read, with the counts a complete sweep gives.
    fn complete(&self) -> bool {
        i64::try_from(self.expected_total).is_ok_and(|n| n == self.total)
            && i64::try_from(self.expected_unreachable).is_ok_and(|n| n == self.unreachable)
    }

    /// The least concurrency that reads the filtered ports within the budget: filtered ×
    /// timeout ÷ budget, rounded up.
    fn concurrency_needed(&self) -> u64 {
        u64::try_from(self.filtered)
            .unwrap_or(u64::MAX)
            .saturating_mul(SWEEP_TIMEOUT.as_secs())
            .div_ceil(SWEEP_BUDGET.as_secs())
    }

    /// `status.lastRunDuration` as a duration; the wall time when it does not parse.
    fn run_time(&self) -> Duration {
        self.run_duration
            .strip_suffix('s')
            .and_then(|seconds| seconds.parse::<f64>().ok())
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            .unwrap_or(self.wall)
    }

    /// The budget stopped the sweep: every probe is bounded by the sooner of its timeout and the
    /// budget's end, so a run that lasted the whole budget ran into it, and the targets it had
    /// not read by then count as unreachable ("not reached within the time budget") whatever
    /// they are. The counts cannot tell those apart from refused and timed-out ones, this can.
    fn cut_by_budget(&self) -> bool {
        self.run_time() >= SWEEP_BUDGET
    }

    /// Roughly how many targets the budget cut short (not started, or still waiting out their
    /// timeout): the filtered ports beyond what `concurrency` slots get through in the budget
    /// (the live and closed ones take a slot only for a moment).
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    fn left_by_budget(&self) -> usize {
        let read = SWEEP_BUDGET.as_secs_f64() / SWEEP_TIMEOUT.as_secs_f64() * f64::from(self.concurrency);
        self.filtered.saturating_sub(read as usize)
    }

    /// Every target read, before the budget's end, with the counts a complete sweep gives; and
    /// the run recorded within the budget.
    fn met(&self) -> bool {
        self.complete() && !self.cut_by_budget() && self.wall <= SWEEP_BUDGET
    }

    /// The least time the filtered ports alone take: each holds one of `concurrency` slots for
    /// the timeout.
    #[allow(clippy::cast_precision_loss)]
    fn floor(&self) -> Duration {
        SWEEP_TIMEOUT.mul_f64(self.filtered as f64 / f64::from(self.concurrency))
    }
}

/// How the ports that give no certificate answered the bench itself before the sweeps.
struct PortCheck {
    closed: usize,
    closed_refused: usize,
    filtered: usize,
    filtered_silent: usize,
}

/// The discovery sweeps and where they ran.
struct Discovery {
    sweeps: Vec<Sweep>,
    ports: PortCheck,
    live: usize,
    /// Ports in each sweep that give no certificate.
    unanswered: usize,
    /// Ranges of the DiscoveryTask (each `127.0.0.1/32` with at most 32 ports).
    ranges: usize,
    commit: String,
    at: jiff::Timestamp,
}

/// `--only discovery`: the sweeps on a control plane of their own; only their section of the
/// report is replaced.
async fn run_discovery_only(args: &Args) -> Result<()> {
    let dir = work_dir("bench-discovery")?;
    println!("==> starting the local control plane");
    let plane = ControlPlane::start(&dir.join("cluster")).await?;
    let client = plane.client().await?;
    install(&plane)?;
    println!("==> discovery sweeps");
    let discovery = discovery_sweeps(&plane, &client, &dir, args).await;
    plane.stop();
    let section = render_discovery(&discovery?)?;
    write_section(args, DISCOVERY_HEADING, &section)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Replaces the section under `heading` of the report file with `section`, keeping the rest.
fn write_section(args: &Args, heading: &str, section: &str) -> Result<()> {
    let path = repo_root().join(&args.output);
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let report = replace_section(&existing, heading, section);
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("\n{section}");
    println!("written to {} (its other sections kept)", path.display());
    Ok(())
}

/// Starts the live servers, holds the closed and filtered ports, checks how they answer, and
/// measures each of [`SWEEP_CASES`].
async fn discovery_sweeps(
    plane: &ControlPlane,
    client: &Client,
    dir: &Path,
    args: &Args,
) -> Result<Discovery> {
    let unanswered = args.discovery_closed + args.discovery_filtered;
    let targets = args.discovery_live + unanswered;
    let ranges = targets.div_ceil(PORTS_PER_RANGE);
    if ranges > MAX_RANGES {
        bail!(
            "{targets} ports need {ranges} ranges of 127.0.0.1/32, more than the {MAX_RANGES} a \
             DiscoveryTask may list"
        );
    }
    println!(
        "    {} live TLS servers, {} closed ports, {unanswered} filtered ports",
        args.discovery_live, args.discovery_closed
    );
    let live = LiveEndpoints::start(args.discovery_live).await?;
    let closed = ClosedPorts::hold(args.discovery_closed)?;
    // As many filtered ports as the worst case needs; the mixed sweeps use the first ones.
    let filtered = FilteredPorts::hold(unanswered).await?;
    let ports = check_ports(&closed.ports, &filtered.ports).await;
    println!(
        "    checked: {}/{} closed refused, {}/{} filtered silent",
        ports.closed_refused, ports.closed, ports.filtered_silent, ports.filtered
    );
    let live_ports = live.addrs.iter().map(std::net::SocketAddr::port);
    let mut sweeps = Vec::new();
    for (index, (kind, concurrency)) in SWEEP_CASES.into_iter().enumerate() {
        let (label, targets, filtered_count): (String, Vec<u16>, usize) = match kind {
            Unanswered::Mixed => (
                format!(
                    "{} live + {} closed + {} filtered",
                    args.discovery_live, args.discovery_closed, args.discovery_filtered
                ),
                live_ports
                    .clone()
                    .chain(closed.ports.iter().copied())
                    .chain(filtered.ports.iter().take(args.discovery_filtered).copied())
                    .collect(),
                args.discovery_filtered,
            ),
            Unanswered::AllFiltered => (
                format!("{} live + {unanswered} filtered", args.discovery_live),
                live_ports.clone().chain(filtered.ports.iter().copied()).collect(),
                unanswered,
            ),
        };
        println!(
            "==> discovery sweep {}/{}: {label}, concurrency {}",
            index + 1,
            SWEEP_CASES.len(),
            concurrency.unwrap_or(DEFAULT_SWEEP_CONCURRENCY)
        );
        let plan = SweepPlan {
            label,
            expected_total: args.discovery_live,
            expected_unreachable: targets.len() - args.discovery_live,
            ports: targets,
            filtered: filtered_count,
            concurrency,
        };
        let sweep = sweep_run(plane, client, dir, index + 1, plan).await?;
        println!(
            "    {:.1} s (lastRunDuration {}), {} found, {} unreachable, peak RSS {:.1} MiB",
            sweep.wall.as_secs_f64(),
            sweep.run_duration,
            sweep.total,
            sweep.unreachable,
            sweep.peak_after
        );
        sweeps.push(sweep);
    }
    Ok(Discovery {
        sweeps,
        ports,
        live: args.discovery_live,
        unanswered,
        ranges,
        commit: commit(),
        at: jiff::Timestamp::now(),
    })
}

/// How a loopback port answered a connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Refused,
    Silent,
    Other,
}

/// Connects once to every closed and filtered port (all at once, 0.5 s each) and counts those
/// that answered as their kind should: a closed port refuses, a filtered one stays silent. The
/// report states it, so the sweeps' "closed" and "filtered" are what they claim.
async fn check_ports(closed: &[u16], filtered: &[u16]) -> PortCheck {
    let answer = |port: u16| async move {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
        match tokio::time::timeout(Duration::from_millis(500), connect).await {
            Err(_) => Answer::Silent,
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => Answer::Refused,
            Ok(_) => Answer::Other,
        }
    };
    let count = |ports: &[u16], expected: Answer| {
        let ports = ports.to_vec();
        async move {
            stream::iter(ports)
                .map(answer)
                .buffer_unordered(512)
                .filter(|got| std::future::ready(*got == expected))
                .count()
                .await
        }
    };
    PortCheck {
        closed: closed.len(),
        closed_refused: count(closed, Answer::Refused).await,
        filtered: filtered.len(),
        filtered_silent: count(filtered, Answer::Silent).await,
    }
}

/// What one sweep reads and how.
struct SweepPlan {
    label: String,
    /// Ports of 127.0.0.1 to read.
    ports: Vec<u16>,
    /// How many of them are filtered, and what a complete sweep counts.
    filtered: usize,
    expected_total: usize,
    expected_unreachable: usize,
    /// `spec.cluster.endpoints.concurrency`; `None` leaves the default.
    concurrency: Option<u32>,
}

/// One sweep: a fresh operator for a new namespace, one DiscoveryTask over the plan's ports of
/// 127.0.0.1, timed from its create to the watch event showing the run recorded.
async fn sweep_run(
    plane: &ControlPlane,
    client: &Client,
    dir: &Path,
    index: usize,
    plan: SweepPlan,
) -> Result<Sweep> {
    let namespace = format!("discovery-{index}");
    create_namespace(client, &namespace).await?;
    let operator = Operator::start(
        plane,
        dir,
        &format!("operator-discovery-{index}"),
        &["--namespace", &namespace, "--log-level", "warn"],
    )?;
    operator.wait_ready(Duration::from_secs(120)).await?;
    // Let the informers settle before reading memory, as for the other idle readings.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_idle, peak_before) = memory(operator.pid())?;
    let api: Api<DiscoveryTask> = Api::namespaced(client.clone(), &namespace);
    let task = sweep_task(&plan.ports, plan.concurrency)?;
    let recorded = watch_until(api.clone(), 1, has_run).await?;
    let load = load_average()?;
    let cpu_before = cpu_time(operator.pid())?;
    let bench_cpu_before = cpu_time(std::process::id())?;
    let started = Instant::now();
    api.create(&PostParams::default(), &task).await?;
    let seen = recorded
        .finish(SWEEP_BUDGET * 2 + Duration::from_secs(60))
        .await
        .with_context(|| format!("the sweep in {namespace}; operator log:\n{}", operator.log_text()))?;
    let wall = seen
        .values()
        .max()
        .map_or(Duration::ZERO, |at| at.duration_since(started));
    let cpu = cpu_time(operator.pid())?.saturating_sub(cpu_before);
    let bench_cpu = cpu_time(std::process::id())?.saturating_sub(bench_cpu_before);
    let (_, peak_after) = memory(operator.pid())?;
    let status = api.get(SWEEP_TASK).await?.status.unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    if !ready.is_some_and(|c| c.status == "True" && c.reason == "Completed") {
        bail!("the sweep in {namespace} did not complete: {ready:?}");
    }
    let summary = status.summary.context("a recorded run without a summary")?;
    Ok(Sweep {
        label: plan.label,
        concurrency: plan.concurrency.unwrap_or(DEFAULT_SWEEP_CONCURRENCY),
        concurrency_set: plan.concurrency.is_some(),
        filtered: plan.filtered,
        expected_total: plan.expected_total,
        expected_unreachable: plan.expected_unreachable,
        wall,
        run_duration: status.last_run_duration.unwrap_or_default(),
        total: summary.total,
        unreachable: summary.unreachable,
        rss_idle,
        peak_before,
        peak_after,
        cpu,
        bench_cpu,
        load,
    })
}

/// A run of the task has been recorded (its status is written once, when the run ends).
fn has_run(task: &DiscoveryTask) -> bool {
    task.status.as_ref().is_some_and(|s| s.last_run_time.is_some())
}

/// The DiscoveryTask of a sweep: `ports` of 127.0.0.1 in ranges of at most [`PORTS_PER_RANGE`]
/// ports (the CRD's limit), the bench's timeout and budget, and `concurrency` when given (the
/// default otherwise). Its schedule is daily: the one run a sweep measures is the one its
/// creation makes due at once.
fn sweep_task(ports: &[u16], concurrency: Option<u32>) -> Result<DiscoveryTask> {
    let ranges: Vec<serde_json::Value> = ports
        .chunks(PORTS_PER_RANGE)
        .map(|chunk| serde_json::json!({"cidr": "127.0.0.1/32", "ports": chunk}))
        .collect();
    let mut endpoints = serde_json::json!({
        "ranges": ranges,
        "timeout": format!("{}s", SWEEP_TIMEOUT.as_secs()),
        "budget": format!("{}s", SWEEP_BUDGET.as_secs()),
    });
    if let Some(concurrency) = concurrency {
        endpoints["concurrency"] = concurrency.into();
    }
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "pki-operator.io/v1alpha1", "kind": "DiscoveryTask",
        "metadata": {"name": SWEEP_TASK},
        "spec": {"schedule": {"interval": "24h"}, "cluster": {"endpoints": endpoints}},
    }))?)
}

/// The heading of the discovery section, which `--only discovery` replaces.
const DISCOVERY_HEADING: &str = "## Discovery sweep";

/// `report` with the section under `heading` (up to the next `## ` heading) replaced by
/// `section`, or `section` appended when there is none.
fn replace_section(report: &str, heading: &str, section: &str) -> String {
    let start = if report.starts_with(&format!("{heading}\n")) {
        Some(0)
    } else {
        report.find(&format!("\n{heading}\n")).map(|at| at + 1)
    };
    let Some(start) = start else {
        let kept = report.trim_end();
        return if kept.is_empty() {
            section.to_owned()
        } else {
            format!("{kept}\n\n{section}")
        };
    };
    let after = start + heading.len();
    match report[after..].find("\n## ") {
        Some(next) => format!("{}{section}\n{}", &report[..start], &report[after + next + 1..]),
        None => format!("{}{section}", &report[..start]),
    }
}

fn render_discovery(discovery: &Discovery) -> Result<String> {
    let (cpus, model) = machine();
    let budget = SWEEP_BUDGET.as_secs();
    let timeout = SWEEP_TIMEOUT.as_secs();
    let ports = &discovery.ports;
    let mut out = String::new();
    writeln!(out, "{DISCOVERY_HEADING}")?;
    writeln!(out)?;
    writeln!(
        out,
        "Measured {} at commit `{}` on {cpus} CPU(s) ({model}); `make bench BENCH_ARGS='--only \
         discovery'` measures this section alone, on a control plane of its own (a full `make \
         bench` measures it last).",
        discovery.at.strftime("%Y-%m-%d %H:%M UTC"),
        discovery.commit
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "A DiscoveryTask's cluster source sweeping loopback: `endpoints.ranges` of \
         `127.0.0.1/32` ({} ranges of at most {PORTS_PER_RANGE} ports, the CRD's limit per range) \
         over {} live TLS servers — one listener and one certificate (its own ECDSA P-256 key, \
         from one CA) each, served by the bench on one tokio runtime — among {} ports that give \
         no certificate; `timeout: {timeout}s`, `budget: {budget}s`. Each sweep is one run of a \
         fresh release operator started with `--namespace` (a namespace of its own). Wall time is \
         from the DiscoveryTask's create to the watch event showing the run recorded (`Ready` \
         `Completed`); `lastRunDuration` is the operator's own timing of the run. The operator's \
         RSS is read from `/proc/<pid>/status`: idle once started, then its peak (VmHWM) after \
         the run — the peak is the sweep's wherever it is above the VmHWM before the create (in \
         brackets). CPU is user + system time from the create to the run recorded, the \
         operator's and the bench's (the TLS servers' handshakes, on the same cores).",
        discovery.ranges, discovery.live, discovery.unanswered
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "**Closed and filtered ports.** A closed port is a socket bound to it that never listens: \
         the kernel answers a connect with a reset (`Connection refused`), and holding the port \
         keeps anything else from listening there during the sweeps. A filtered port — a \
         firewall dropping the SYN — needs root (iptables/nftables) on loopback, so the filtered \
         ones are made without it: a listener with a backlog of 0 whose one accept-queue slot is \
         taken by a connection the bench opens and nobody accepts; while its accept queue is \
         full, Linux drops every further SYN, so the operator's connect gets no answer and runs \
         into its timeout, as against a filtered port. Checked from the bench before the sweeps: \
         {} of {} closed ports refused, {} of {} filtered ports gave no answer within 0.5 s. A \
         filtered port holds a connection slot for the whole timeout, so the filtered ports alone \
         take at least filtered × timeout ÷ concurrency (\"floor\"); the worst-case sweeps make \
         every port that gives no certificate filtered.",
        ports.closed_refused, ports.closed, ports.filtered_silent, ports.filtered
    )?;
    writeln!(out)?;
    render_sweeps(&mut out, &discovery.sweeps)?;
    writeln!(out)?;
    writeln!(out, "**Targets.**")?;
    writeln!(out)?;
    render_targets(&mut out, &discovery.sweeps)?;
    Ok(out)
}

/// The table of the sweeps, one row each.
fn render_sweeps(out: &mut String, sweeps: &[Sweep]) -> Result<()> {
    let budget = SWEEP_BUDGET.as_secs();
    writeln!(
        out,
        "| targets | concurrency | create → Ready (budget {budget} s) | `lastRunDuration` | floor | \
         `summary.total` (expected) | `summary.unreachable` (expected) | operator RSS idle → peak \
         (VmHWM before) | operator CPU | bench CPU | load | complete within budget | peak ≤ {RSS_TARGET_MIB:.0} MiB |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    let yes_no = |met: bool| if met { "yes" } else { "**no**" };
    for sweep in sweeps {
        writeln!(
            out,
            "| {} | {}{} | {:.1} s | {} | {:.1} s | {} ({}) | {} ({}) | {:.1} → {:.1} MiB ({:.1}) | \
             {:.2} s | {:.2} s | {:.1} | {} | {} |",
            sweep.label,
            sweep.concurrency,
            if sweep.concurrency_set { "" } else { " (default)" },
            sweep.wall.as_secs_f64(),
            sweep.run_duration,
            sweep.floor().as_secs_f64(),
            sweep.total,
            sweep.expected_total,
            sweep.unreachable,
            sweep.expected_unreachable,
            sweep.rss_idle,
            sweep.peak_after,
            sweep.peak_before,
            sweep.cpu.as_secs_f64(),
            sweep.bench_cpu.as_secs_f64(),
            sweep.load,
            yes_no(sweep.met()),
            yes_no(sweep.peak_after <= RSS_TARGET_MIB),
        )?;
    }
    Ok(())
}

/// Whether each sweep met its targets, in words: the budget and the memory target.
fn render_targets(out: &mut String, sweeps: &[Sweep]) -> Result<()> {
    let budget = SWEEP_BUDGET.as_secs();
    for sweep in sweeps {
        let what = format!("{}, concurrency {}", sweep.label, sweep.concurrency);
        let wall = sweep.wall.as_secs_f64();
        if sweep.met() {
            writeln!(
                out,
                "- {what}: finished within its {budget} s budget ({wall:.1} s) with every target \
                 read."
            )?;
        } else if sweep.cut_by_budget() {
            let counts = if sweep.complete() {
                "the counts are the expected ones all the same, as those ports would have given no \
                 certificate either way; a live endpoint left that late would be missing from the \
                 total"
                    .to_owned()
            } else {
                format!(
                    "{} live endpoints were among the targets left: missing from the total",
                    sweep
                        .expected_total
                        .saturating_sub(usize::try_from(sweep.total).unwrap_or(0))
                )
            };
            writeln!(
                out,
                "- {what}: **cut by its {budget} s budget**: the run took {} ({wall:.1} s to Ready). \
                 It found {} of {} certificates and counts {} unreachable ({} expected), but about \
                 {} of the filtered ports were still waiting for their turn or their timeout when \
                 the budget ran out: they count as \"not reached within the time budget\" rather than \
                 timed out ({counts}). Its floor \
                 is {:.1} s: sweeping {} filtered ports within {budget} s with a {}s timeout needs a \
                 concurrency of at least {} (filtered × timeout ÷ budget).",
                sweep.run_duration,
                sweep.total,
                sweep.expected_total,
                sweep.unreachable,
                sweep.expected_unreachable,
                sweep.left_by_budget(),
                sweep.floor().as_secs_f64(),
                sweep.filtered,
                SWEEP_TIMEOUT.as_secs(),
                sweep.concurrency_needed(),
            )?;
        } else if sweep.complete() {
            writeln!(
                out,
                "- {what}: every target read within the budget (the run: {}), but **recorded after \
                 it**: {wall:.1} s from create to Ready.",
                sweep.run_duration
            )?;
        } else {
            writeln!(
                out,
                "- {what}: **not every target read as expected**: {} of {} certificates, {} \
                 unreachable against {} (the run: {}, {wall:.1} s to Ready).",
                sweep.total,
                sweep.expected_total,
                sweep.unreachable,
                sweep.expected_unreachable,
                sweep.run_duration,
            )?;
        }
    }
    let peak = sweeps.iter().map(|s| s.peak_after).fold(f64::NAN, f64::max);
    writeln!(
        out,
        "- Operator peak RSS over all sweeps: {peak:.1} MiB, {} the {RSS_TARGET_MIB:.0} MiB peak \
         target (the operator's sizing).",
        if peak <= RSS_TARGET_MIB {
            "within"
        } else {
            "**above**"
        }
    )?;
    Ok(())
}

/// The AlertConfig the alerting part applies: cluster-scoped, every namespace, default levels,
/// the Event channel only.
const ALERT_CONFIG: &str = "bench-alerts";
/// The namespace of the alerting part's Certificates.
const ALERT_NAMESPACE: &str = "alerting";
/// Lifetimes of the alerting part's Certificates, by index modulo 4, and the default level each
/// is at once issued: 45 days is INFO (≤ 60), 20 days WARN (≤ 30), 90 days none.
const ALERT_LIFETIMES: [(&str, Option<Level>); 4] = [
    ("1080h", Some(Level::INFO)),
    ("480h", Some(Level::WARN)),
    ("2160h", None),
    ("2160h", None),
];
/// The controller's bound on notifications per channel per pass, and its wait between passes
/// while more are owed: the controller's own constants, so the report cannot drift from them.
const SENDS_PER_PASS: usize = pki_operator::controller::alert_config::channels::MAX_SENDS_PER_PASS;
const BETWEEN_PASSES: Duration = pki_operator::controller::alert_config::NEXT_BATCH;
/// How long the bench waits for every alert to be delivered before reporting what was.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(900);
/// Changed Certificates timed for re-evaluation.
const REEVALUATIONS: usize = 5;
/// Targets: one evaluation pass over `--scale` Certificates, and what one AlertConfig may add to
/// the operator's resident memory.
const PASS_TARGET: Duration = Duration::from_secs(2);
const RSS_INCREASE_TARGET_MIB: f64 = 50.0;
/// A ConfigMap's size limit (etcd's object limit, as the apiserver enforces it).
const CONFIGMAP_LIMIT: usize = 1024 * 1024;
/// The heading of the alerting section, which `--only alerting` replaces.
const ALERTING_HEADING: &str = "## AlertConfig evaluation";

/// `pki_operator_reconcile_duration_seconds{controller="alert_config"}` as read once.
#[derive(Clone, Debug, Default)]
struct PassTimes {
    sum: f64,
    count: f64,
    /// `(le, cumulative count)`, in the exposition's order (rising `le`).
    buckets: Vec<(f64, f64)>,
    /// The whole `/metrics` exposition's size, bytes: it holds series per Certificate.
    exposition_bytes: usize,
    /// Its `pki_operator_certificate_alert_level` series.
    alert_level_series: usize,
}

impl PassTimes {
    /// Reads the histogram from the operator's `/metrics` (all zero before the first pass).
    async fn read(operator: &Operator) -> Result<Self> {
        let (status, body) = operator
            .get("/metrics")
            .await
            .context("the operator's /metrics")?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        let mut times = Self {
            exposition_bytes: body.len(),
            alert_level_series: body
                .lines()
                .filter(|l| l.starts_with("pki_operator_certificate_alert_level{"))
                .count(),
            ..Self::default()
        };
        let name = "pki_operator_reconcile_duration_seconds";
        for line in body
            .lines()
            .filter(|l| l.contains(r#"controller="alert_config""#))
        {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.trim().parse()?;
            if series.starts_with(&format!("{name}_sum{{")) {
                times.sum = value;
            } else if series.starts_with(&format!("{name}_count{{")) {
                times.count = value;
            } else if series.starts_with(&format!("{name}_bucket{{")) {
                let le = series
                    .split_once(r#"le=""#)
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(le, _)| le)
                    .context("a bucket without le")?;
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse()? };
                times.buckets.push((le, value));
            }
        }
        Ok(times)
    }

    /// The passes since `before`, once there is one: the histogram records a pass as it returns,
    /// a moment after the status it wrote.
    async fn after(operator: &Operator, before: &Self) -> Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let passes = Self::read(operator).await?.since(before);
            if passes.count > 0.0 || Instant::now() > deadline {
                return Ok(passes);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The passes since `before`.
    fn since(&self, before: &Self) -> Self {
        let earlier = |le: f64| {
            before
                .buckets
                .iter()
                .find(|(b, _)| b.total_cmp(&le).is_eq())
                .map_or(0.0, |(_, n)| *n)
        };
        Self {
            sum: self.sum - before.sum,
            count: self.count - before.count,
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| (*le, n - earlier(*le)))
                .collect(),
            exposition_bytes: self.exposition_bytes,
            alert_level_series: self.alert_level_series,
        }
    }

    fn mean(&self) -> Duration {
        if self.count > 0.0 {
            Duration::from_secs_f64(self.sum / self.count)
        } else {
            Duration::ZERO
        }
    }

    /// The least bucket bound holding every pass: the longest pass took at most this long.
    fn max_bound(&self) -> f64 {
        self.buckets
            .iter()
            .find(|(_, n)| *n >= self.count)
            .map_or(f64::INFINITY, |(le, _)| *le)
    }

    /// `mean s over n passes, each ≤ bound s`.
    fn show(&self) -> String {
        format!(
            "{:.3} s mean over {:.0} pass(es), each ≤ {} s (histogram bucket)",
            self.mean().as_secs_f64(),
            self.count,
            self.max_bound()
        )
    }
}

/// A watch of the bench's AlertConfig: each status it is seen with, and when.
struct StatusWatch {
    seen: tokio::sync::mpsc::UnboundedReceiver<(Instant, AlertConfigStatus)>,
    task: tokio::task::JoinHandle<()>,
    /// The status last seen.
    last: AlertConfigStatus,
}

impl StatusWatch {
    /// Returns once the watch's initial list is done, so nothing later is missed.
    async fn start(client: &Client) -> Result<Self> {
        let api: Api<AlertConfig> = Api::all(client.clone());
        let config = watcher::Config::default().fields(&format!("metadata.name={ALERT_CONFIG}"));
        let (sender, seen) = tokio::sync::mpsc::unbounded_channel();
        let (listed, initialised) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut listed = Some(listed);
            let mut events = watcher(api, config).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(listed) = listed.take() {
                            let _ = listed.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(config) | watcher::Event::InitApply(config)) => {
                        if sender
                            .send((Instant::now(), config.status.unwrap_or_default()))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => eprintln!("watch: {error}; retrying"),
                }
            }
        });
        initialised
            .await
            .context("the AlertConfig watch ended before its initial list")?;
        Ok(Self {
            seen,
            task,
            last: AlertConfigStatus::default(),
        })
    }

    /// When a status with `done` true was first seen; `None` if none was by `deadline`.
    async fn until(
        &mut self,
        deadline: Instant,
        done: impl Fn(&AlertConfigStatus) -> bool,
    ) -> Option<Instant> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (at, status) = tokio::time::timeout(left, self.seen.recv()).await.ok()??;
            let met = done(&status);
            self.last = status;
            if met {
                return Some(at);
            }
        }
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Event channel's `(delivered, pending)` in `status`.
fn event_channel(status: &AlertConfigStatus) -> (i64, i64) {
    status
        .channels
        .iter()
        .find(|c| c.channel == "event")
        .map_or((0, 0), |c| (c.delivered, c.pending))
}

/// `lastEvaluationTime`, whole seconds (its precision in the API).
fn evaluated_second(status: &AlertConfigStatus) -> i64 {
    status
        .last_evaluation_time
        .as_ref()
        .map_or(i64::MIN, |t| t.0.as_second())
}

/// The alerting part before its AlertConfig.
struct Baseline {
    /// Certificates expected at INFO and WARN (the rest do not alert).
    expected_info: usize,
    expected_warn: usize,
    /// First create to the last Certificate Ready.
    issued_in: Duration,
    /// The fresh operator's start to its CPU going quiet (its startup reconciles done).
    settled_in: Duration,
    /// The 1-minute load average at the apply: other work on the machine shows here.
    load: f64,
    /// The fresh operator's RSS and split with every Certificate Ready, no AlertConfig.
    rss_before: f64,
    split_before: String,
    /// Whether `VmHWM` could be reset before the apply (`/proc/<pid>/clear_refs`): the peak is
    /// then the AlertConfig's alone.
    peak_reset: bool,
}

/// What the alerting part measured.
struct Alerting {
    scale: usize,
    baseline: Baseline,
    /// The operator's `/metrics` size just before the apply, bytes (after: `delivery_passes`).
    exposition_before: usize,
    /// Apply → `status.evaluated == scale` seen, and the passes by then.
    first_visible: Option<Duration>,
    first_passes: PassTimes,
    /// Apply → every alert delivered as an Event, and all passes by then.
    delivered_in: Option<Duration>,
    delivery_passes: PassTimes,
    /// The status once delivered (or at the deadline).
    status: AlertConfigStatus,
    /// Events with reason `CertificateExpiring` in the Certificates' namespace.
    events: usize,
    /// The operator's CPU time from the apply to every alert delivered (or the deadline).
    cpu: Duration,
    rss_after: f64,
    split_after: String,
    peak: f64,
    /// The sent-record: its `sent` value and the whole ConfigMap as JSON, bytes.
    record_bytes: usize,
    configmap_bytes: usize,
    /// Label change → `lastEvaluationTime` past it, seconds; and those passes.
    reevaluations: Vec<f64>,
    reevaluation_passes: PassTimes,
    commit: String,
    at: jiff::Timestamp,
}

/// `--only alerting`: the alerting part on a control plane of its own; only its section of the
/// report is replaced.
async fn run_alerting_only(args: &Args) -> Result<()> {
    let dir = work_dir("bench-alerting")?;
    println!("==> starting the local control plane");
    let plane = ControlPlane::start(&dir.join("cluster")).await?;
    let client = plane.client().await?;
    install(&plane)?;
    println!("==> one AlertConfig over {} Certificates", args.scale);
    let alerting = alerting(&plane, &client, &dir, args.scale).await;
    plane.stop();
    let section = render_alerting(&alerting?)?;
    write_section(args, ALERTING_HEADING, &section)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The `Certificate` of the alerting part at `index`: its lifetime from [`ALERT_LIFETIMES`].
fn alerting_certificate(index: usize) -> Result<Certificate> {
    let name = format!("c-{index:05}");
    let (duration, _) = ALERT_LIFETIMES[index % ALERT_LIFETIMES.len()];
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "pki-operator.io/v1alpha1", "kind": "Certificate",
        "metadata": {"name": name},
        "spec": {
            "secretName": format!("{name}-tls"),
            "issuerRef": {"name": "bench-ca", "kind": "ClusterIssuer"},
            "dnsNames": [format!("{name}.alerts.bench.example.com")],
            "duration": duration,
            "renewBefore": "1h",
        },
    }))?)
}

/// Issues `scale` Certificates of [`alerting_certificate`] into [`ALERT_NAMESPACE`]: first create
/// to the last seen Ready.
async fn issue_alerting(client: &Client, scale: usize) -> Result<Duration> {
    create_namespace(client, ALERT_NAMESPACE).await?;
    let api: Api<Certificate> = Api::namespaced(client.clone(), ALERT_NAMESPACE);
    let ready = watch_until(api.clone(), scale, is_ready).await?;
    let started = Instant::now();
    stream::iter(0..scale)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &alerting_certificate(i)?)
                    .await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let timeout = Duration::from_secs(120 + u64::try_from(scale / 5).unwrap_or(u64::MAX));
    ready
        .finish(timeout)
        .await
        .context("alerting Certificates Ready")?;
    Ok(started.elapsed())
}

/// Namespaces holding Certificates (those of earlier parts): deleted before the alerting part, so
/// that its AlertConfig, scoped to every namespace, sees only its own.
async fn delete_certificate_namespaces(client: &Client) -> Result<()> {
    let namespaces: std::collections::BTreeSet<String> = Api::<Certificate>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|c| c.metadata.namespace.clone())
        .collect();
    if namespaces.is_empty() {
        return Ok(());
    }
    println!("    deleting {namespaces:?}");
    delete_namespaces(client, &namespaces.into_iter().collect::<Vec<_>>()).await
}

/// Waits (at most 10 minutes) until the operator's CPU goes quiet — under 0.1 s in 2 s, twice
/// running — after a 20 s start; how long after the call that was.
async fn settle(operator: &Operator) -> Result<Duration> {
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let mut quiet = 0;
    let mut cpu = cpu_time(operator.pid())?;
    while quiet < 2 && started.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = cpu_time(operator.pid())?;
        quiet = if now.saturating_sub(cpu) < Duration::from_millis(100) {
            quiet + 1
        } else {
            0
        };
        cpu = now;
    }
    Ok(started.elapsed())
}

/// The alerting part: `scale` Certificates issued, a fresh operator's RSS without an AlertConfig,
/// then one AlertConfig applied and followed until every alert is delivered; then the
/// re-evaluation of changed Certificates.
async fn alerting(plane: &ControlPlane, client: &Client, dir: &Path, scale: usize) -> Result<Alerting> {
    delete_certificate_namespaces(client).await?;
    let issuer = serde_json::json!({"apiVersion": "pki-operator.io/v1alpha1", "kind": "ClusterIssuer",
        "metadata": {"name": "bench-ca"}, "spec": {"ca": {"secretName": "bench-ca"}}});
    plane.kubectl_ok(&["apply", "-f", "-"], Some(&issuer.to_string()))?;
    let issuing = start_operator(plane, dir, "operator-alerting-issue").await?;
    let issued_in = issue_alerting(client, scale).await?;
    println!(
        "    {scale} Certificates Ready in {:.0} s",
        issued_in.as_secs_f64()
    );
    // A fresh operator: its memory is the caches of what is there, without the issuance burst.
    drop(issuing);
    let operator = start_operator(plane, dir, "operator-alerting").await?;
    // A fresh operator reconciles every Certificate once: it is measured once that is over.
    let settled_in = settle(&operator).await?;
    let (rss_before, _) = memory(operator.pid())?;
    let split_before = resident_split(operator.pid())?;
    println!(
        "    operator RSS {rss_before:.1} MiB without an AlertConfig, settled {:.0} s after its start",
        settled_in.as_secs_f64()
    );
    let level_count = |level| {
        (0..scale)
            .filter(|i| ALERT_LIFETIMES[i % ALERT_LIFETIMES.len()].1 == Some(level))
            .count()
    };
    let baseline = Baseline {
        expected_info: level_count(Level::INFO),
        expected_warn: level_count(Level::WARN),
        issued_in,
        settled_in,
        rss_before,
        split_before,
        load: load_average()?,
        // Resets VmHWM (Linux ≥ 4.0), so the peak read later is the AlertConfig's.
        peak_reset: std::fs::write(format!("/proc/{}/clear_refs", operator.pid()), "5").is_ok(),
    };
    apply_alert_config(client, &operator, scale, baseline).await
}

/// Applies the AlertConfig and measures it (see [`Alerting`]).
async fn apply_alert_config(
    client: &Client,
    operator: &Operator,
    scale: usize,
    baseline: Baseline,
) -> Result<Alerting> {
    let api: Api<AlertConfig> = Api::all(client.clone());
    let config: AlertConfig = serde_json::from_value(serde_json::json!({
        "apiVersion": "pki-operator.io/v1alpha1", "kind": "AlertConfig",
        "metadata": {"name": ALERT_CONFIG}, "spec": {},
    }))?;
    let mut watch = StatusWatch::start(client).await?;
    let before = PassTimes::read(operator).await?;
    let exposition_before = before.exposition_bytes;
    let cpu_before = cpu_time(operator.pid())?;
    let started = Instant::now();
    api.create(&PostParams::default(), &config).await?;
    let everything = i64::try_from(scale)?;
    let first_visible = watch
        .until(started + DELIVERY_DEADLINE, |s| s.evaluated == everything)
        .await
        .map(|at| at.duration_since(started));
    let first_passes = PassTimes::after(operator, &before).await?;
    println!(
        "    first evaluation visible after {first_visible:?} ({})",
        first_passes.show()
    );
    let owed = i64::try_from(baseline.expected_info + baseline.expected_warn)?;
    let delivered_in = watch
        .until(started + DELIVERY_DEADLINE, |s| {
            let (delivered, pending) = event_channel(s);
            delivered >= owed && pending == 0
        })
        .await
        .map(|at| at.duration_since(started));
    let cpu = cpu_time(operator.pid())?.saturating_sub(cpu_before);
    let status = watch.last.clone();
    // The histogram records a pass as it returns, after its status: read once they are done.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let delivery_passes = PassTimes::read(operator).await?.since(&before);
    println!(
        "    every alert delivered after {delivered_in:?} ({})",
        delivery_passes.show()
    );
    let (rss_after, peak) = memory(operator.pid())?;
    let split_after = resident_split(operator.pid())?;
    let record = Api::<ConfigMap>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .get(&format!("pki-operator-alerts-{ALERT_CONFIG}"))
        .await?;
    let record_bytes = record
        .data
        .as_ref()
        .and_then(|d| d.get("sent"))
        .map_or(0, String::len);
    let configmap_bytes = serde_json::to_vec(&record)?.len();
    let events = Api::<Event>::namespaced(client.clone(), ALERT_NAMESPACE)
        .list_metadata(&ListParams::default().fields("reason=CertificateExpiring"))
        .await?
        .items
        .len();
    let before = PassTimes::read(operator).await?;
    let reevaluations = reevaluate(client, &mut watch).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reevaluation_passes = PassTimes::read(operator).await?.since(&before);
    Ok(Alerting {
        scale,
        baseline,
        exposition_before,
        first_visible,
        first_passes,
        delivered_in,
        delivery_passes,
        status,
        events,
        cpu,
        rss_after,
        split_after,
        peak,
        record_bytes,
        configmap_bytes,
        reevaluations,
        reevaluation_passes,
        commit: commit(),
        at: jiff::Timestamp::now(),
    })
}

/// [`REEVALUATIONS`] times: a label changed on one Certificate, timed until `lastEvaluationTime`
/// moves past the last pass before the change; seconds each.
async fn reevaluate(client: &Client, watch: &mut StatusWatch) -> Result<Vec<f64>> {
    let api: Api<Certificate> = Api::namespaced(client.clone(), ALERT_NAMESPACE);
    let mut latencies = Vec::new();
    for round in 0..REEVALUATIONS {
        // `lastEvaluationTime` has whole seconds: the change is made in a later second than the
        // last pass, so any pass after it shows.
        tokio::time::sleep(Duration::from_secs(2)).await;
        while let Ok(Some((_, status))) = tokio::time::timeout(Duration::ZERO, watch.seen.recv()).await {
            watch.last = status;
        }
        let previous = evaluated_second(&watch.last);
        let name = format!("c-{:05}", round * 7);
        let patch =
            serde_json::json!({"metadata": {"labels": {"bench.pki-operator.io/touched": round.to_string()}}});
        let started = Instant::now();
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let seen = watch
            .until(started + Duration::from_secs(60), |s| {
                evaluated_second(s) > previous
            })
            .await
            .context("no re-evaluation within 60 s of a changed Certificate")?;
        let latency = seen.duration_since(started).as_secs_f64();
        println!("    re-evaluated {latency:.2} s after a change of {name}");
        latencies.push(latency);
    }
    Ok(latencies)
}

/// The report's rows of the alerting part: memory before, then the times to evaluate and deliver.
#[allow(clippy::cast_precision_loss)]
fn alerting_rows(a: &Alerting) -> Vec<Row> {
    let b = &a.baseline;
    let alerting = b.expected_info + b.expected_warn;
    let target = format!("≤ {} s", PASS_TARGET.as_secs());
    let (delivered, pending) = event_channel(&a.status);
    let passes = alerting.div_ceil(SENDS_PER_PASS);
    let floor = BETWEEN_PASSES.as_secs_f64() * passes.saturating_sub(1) as f64;
    let within = |passes: &PassTimes| passes.count > 0.0 && passes.mean() <= PASS_TARGET;
    let mut rows = vec![
        Row {
            name: format!(
                "Operator RSS, {} Certificates Ready with their Secrets, no AlertConfig (fresh operator)",
                a.scale
            ),
            target: format!("≤ {RSS_TARGET_MIB:.0} MiB"),
            measured: format!(
                "{:.1} MiB ({}; `/metrics` {} KiB; settled {:.0} s after its start)",
                b.rss_before,
                b.split_before,
                a.exposition_before / 1024,
                b.settled_in.as_secs_f64()
            ),
            met: Some(b.rss_before <= RSS_TARGET_MIB),
        },
        Row {
            name: format!(
                "Apply → first evaluation in status (`status.evaluated` = {})",
                a.scale
            ),
            target: "-".into(),
            measured: a.first_visible.map_or_else(
                || format!("not seen within {} s", DELIVERY_DEADLINE.as_secs()),
                |d| format!("{:.2} s", d.as_secs_f64()),
            ),
            met: None,
        },
        Row {
            name: format!(
                "Evaluation time: reconcile pass over {} Certificates, first pass(es) (evaluation, \
                 sent-record read and write, the first {SENDS_PER_PASS} Events, status)",
                a.scale
            ),
            target: target.clone(),
            measured: a.first_passes.show(),
            met: Some(within(&a.first_passes)),
        },
        Row {
            name: "Reconcile passes from apply until every alert was delivered (mean)".into(),
            target: target.clone(),
            measured: a.delivery_passes.show(),
            met: Some(within(&a.delivery_passes)),
        },
        Row {
            name: format!(
                "Apply → every alert delivered as an Event ({alerting} alerting, ≤ {SENDS_PER_PASS} per \
                 pass, {} ms between passes)",
                BETWEEN_PASSES.as_millis()
            ),
            target: "-".into(),
            measured: match a.delivered_in {
                Some(d) => format!(
                    "{:.1} s (the limits' floor: {passes} passes, {floor:.1} s of waits between them); \
                     operator CPU {:.1} s",
                    d.as_secs_f64(),
                    a.cpu.as_secs_f64()
                ),
                None => format!(
                    "**not done within {} s**: {delivered} delivered, {pending} pending; operator CPU {:.1} s",
                    DELIVERY_DEADLINE.as_secs(),
                    a.cpu.as_secs_f64()
                ),
            },
            met: None,
        },
    ];
    rows.extend(outcome_rows(a));
    rows
}

/// The alerting part's rows on what the AlertConfig left: counts, Events, memory, its record and
/// its re-evaluation.
#[allow(clippy::cast_precision_loss)]
fn outcome_rows(a: &Alerting) -> Vec<Row> {
    let b = &a.baseline;
    let alerting = b.expected_info + b.expected_warn;
    let (delivered, pending) = event_channel(&a.status);
    let counts = a.status.counts.clone().unwrap_or_default();
    let increase = a.rss_after - b.rss_before;
    let reevaluation = Spread::of(a.reevaluations.iter().copied());
    vec![
        Row {
            name: "`status.counts` INFO / WARN / HIGH / ERROR".into(),
            target: format!("{} / {} / 0 / 0", b.expected_info, b.expected_warn),
            measured: format!(
                "{} / {} / {} / {}",
                counts.info, counts.warn, counts.high, counts.error
            ),
            met: Some(
                usize::try_from(counts.info).is_ok_and(|n| n == b.expected_info)
                    && usize::try_from(counts.warn).is_ok_and(|n| n == b.expected_warn)
                    && counts.high == 0
                    && counts.error == 0,
            ),
        },
        Row {
            name:
                "Events: `status.channels[event].delivered` / `CertificateExpiring` Events in the namespace"
                    .into(),
            target: format!("{alerting} / {alerting} (one per alert)"),
            measured: format!("{delivered} / {} (pending {pending})", a.events),
            met: Some(usize::try_from(delivered).is_ok_and(|n| n == alerting) && a.events == alerting),
        },
        Row {
            name: "Operator RSS once every alert was delivered (increase over no AlertConfig)".into(),
            target: format!("increase ≤ {RSS_INCREASE_TARGET_MIB:.0} MiB"),
            measured: format!(
                "{:.1} MiB (+{increase:.1} MiB; {}; `/metrics` {} KiB with {} alert-level series)",
                a.rss_after,
                a.split_after,
                a.delivery_passes.exposition_bytes / 1024,
                a.delivery_passes.alert_level_series
            ),
            met: Some(increase <= RSS_INCREASE_TARGET_MIB),
        },
        Row {
            name: if b.peak_reset {
                "Operator peak RSS (VmHWM, reset at the apply) until every alert was delivered".into()
            } else {
                "Operator peak RSS (VmHWM since its start: the reset at the apply failed)".into()
            },
            target: format!("≤ {RSS_TARGET_MIB:.0} MiB"),
            measured: format!("{:.1} MiB", a.peak),
            met: Some(a.peak <= RSS_TARGET_MIB),
        },
        Row {
            name: format!("Sent-record ConfigMap `pki-operator-alerts-{ALERT_CONFIG}`"),
            target: "< 1 MiB (a ConfigMap's limit)".into(),
            measured: format!(
                "{} bytes in `sent` ({:.0} per alert), {} bytes as JSON",
                a.record_bytes,
                a.record_bytes as f64 / alerting.max(1) as f64,
                a.configmap_bytes
            ),
            met: Some(a.configmap_bytes < CONFIGMAP_LIMIT),
        },
        Row {
            name: format!(
                "Re-evaluation: a label changed on one Certificate → `lastEvaluationTime` past the change \
                 ({REEVALUATIONS} changes)"
            ),
            target: format!("≤ {} s each", PASS_TARGET.as_secs()),
            measured: format!("{}; {}", reevaluation.show(2, " s"), a.reevaluation_passes.show()),
            met: Some(reevaluation.max <= PASS_TARGET.as_secs_f64()),
        },
    ]
}

fn render_alerting(a: &Alerting) -> Result<String> {
    let (cpus, model) = machine();
    let b = &a.baseline;
    let mut out = String::new();
    writeln!(out, "{ALERTING_HEADING}")?;
    writeln!(out)?;
    writeln!(
        out,
        "Measured {} at commit `{}` on {cpus} CPU(s) ({model}); `make bench BENCH_ARGS='--only \
         alerting'` measures this section alone, on a control plane of its own (a full `make \
         bench` measures it after the discovery sweeps, once the earlier parts' Certificates are \
         deleted).",
        a.at.strftime("%Y-%m-%d %H:%M UTC"),
        a.commit
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{} Certificates in one namespace, issued by the `ca` ClusterIssuer (ECDSA P-256) in \
         {:.0} s at known lifetimes: a quarter `duration: 1080h` (45 days left: INFO), a quarter \
         `480h` (20 days: WARN), half `2160h` (90 days: no alert), all `renewBefore: 1h`. Then a \
         fresh release operator (the caches of what is there, without the issuance behind it) and, \
         once its startup reconciles are done (its CPU quiet), one cluster-scoped AlertConfig with an empty spec: every namespace, \
         the default levels (INFO 60, WARN 30, HIGH 14, ERROR 7 days), Events only. The \
         controller sends at most {SENDS_PER_PASS} notifications per channel per pass and runs the \
         next pass {} ms after one that left some owed, re-evaluating every Certificate each time. \
         Times are from the AlertConfig's create to the watch event showing its status; pass \
         durations are the operator's `pki_operator_reconcile_duration_seconds{{controller=\"alert_config\"}}` \
         (sum ÷ count over the passes in question; the longest pass is known only to its \
         histogram bucket). RSS is `/proc/<pid>/status`, 10 s after the last alert was delivered. \
         Machine load (1-minute average) at the apply: {:.1} on {cpus} CPU(s); other work sharing \
         the cores lengthens the passes.",
        a.scale,
        b.issued_in.as_secs_f64(),
        BETWEEN_PASSES.as_millis(),
        b.load
    )?;
    writeln!(out)?;
    render_rows(&mut out, &alerting_rows(a))?;
    Ok(out)
}

/// The table of `rows`.
fn render_rows(out: &mut String, rows: &[Row]) -> Result<()> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::replace_section;

    #[test]
    fn a_section_is_replaced_up_to_the_next_heading_or_appended() {
        let new = "## B\n\nnew\n";
        assert_eq!(
            replace_section("# R\n\n## A\n\na\n\n## B\n\nold\n\n## C\n\nc\n", "## B", new),
            "# R\n\n## A\n\na\n\n## B\n\nnew\n\n## C\n\nc\n"
        );
        assert_eq!(
            replace_section("# R\n\n## B\n\nold\nmore\n", "## B", new),
            "# R\n\n## B\n\nnew\n"
        );
        assert_eq!(
            replace_section("# R\n\n## Bee\n\nb\n", "## B", new),
            "# R\n\n## Bee\n\nb\n\n## B\n\nnew\n"
        );
        assert_eq!(replace_section("", "## B", new), new);
    }
}
