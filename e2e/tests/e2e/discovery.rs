//! End-to-end tests of DiscoveryTask: the operator reads real TLS servers on loopback (expired,
//! expiring, self-signed, healthy, RSA 1024, SHA-1), TLS Secrets in the namespaces it is told to
//! look in, and the Nexus simulator's certificate database, and says what it found in status
//! and in its metrics.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use kube::{Api, Client};
use libtest_mimic::Trial;
use pki_operator::crd::v1alpha1::{
    DiscoveryTask,
    discovery_task::{DiscoveryFinding, DiscoveryTaskStatus},
};
use pki_operator_e2e::{
    Operator, TestNamespace, free_port, metric_value,
    sim::{
        Faults,
        certmgmt::{CertMgmtSimulator, CertMgmtSimulatorConfig},
        nexus::{NexusSimulator, NexusSimulatorConfig},
        scm::{DEFAULT_DISCOVERY_AGENT, DEFAULT_DISCOVERY_BUCKET, ScmSimulator, ScmSimulatorConfig},
    },
    tls_fleet::{Presented, TlsFleet},
    wait_for, work_dir,
};

use crate::support::{
    SCM_PASSWORD, ScmScene, apply, block_on, ca_issuer, certificate_yaml, is_ready, plane, scm_issuer, trial,
    wait_certificate,
};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "cluster_discovery_classifies_endpoints_and_secrets",
            cluster_discovery_classifies_endpoints_and_secrets,
        ),
        trial(
            "nexus_discovery_lists_the_certificates_of_the_database",
            nexus_discovery_lists_the_certificates_of_the_database,
        ),
        trial(
            "findings_are_reported_to_certmgmt_as_an_agent_host",
            findings_are_reported_to_certmgmt_as_an_agent_host,
        ),
        trial(
            "scm_discovery_scans_the_fleet_and_counts_what_it_found",
            scm_discovery_scans_the_fleet_and_counts_what_it_found,
        ),
        trial(
            "a_crash_after_the_remote_task_is_created_leaves_one_remote_task",
            a_crash_after_the_remote_task_is_created_leaves_one_remote_task,
        ),
        trial(
            "bad_scm_discovery_tasks_say_why_with_bounded_calls",
            bad_scm_discovery_tasks_say_why_with_bounded_calls,
        ),
        trial(
            "bad_discovery_tasks_say_why_without_a_hot_loop",
            bad_discovery_tasks_say_why_without_a_hot_loop,
        ),
    ]
}

fn status_of(task: &DiscoveryTask) -> DiscoveryTaskStatus {
    task.status.clone().unwrap_or_default()
}

/// The `Ready` condition's (status, reason, message).
fn ready(task: &DiscoveryTask) -> Option<(String, String, String)> {
    status_of(task)
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status, c.reason, c.message))
}

/// Waits until DiscoveryTask `name` passes `check`; the error shows its last status.
async fn wait_task(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&DiscoveryTask) -> bool,
) -> Result<DiscoveryTask> {
    let api: Api<DiscoveryTask> = Api::namespaced(client.clone(), namespace);
    let result = wait_for(what, Duration::from_secs(90), || async {
        api.get_opt(name).await.ok().flatten().filter(|t| check(t))
    })
    .await;
    if result.is_err() {
        let last = api.get_opt(name).await.ok().flatten().and_then(|t| t.status);
        return result.with_context(|| format!("last status of {name}: {last:#?}"));
    }
    result
}

fn finding<'a>(findings: &'a [DiscoveryFinding], location: &str) -> Option<&'a DiscoveryFinding> {
    findings.iter().find(|f| f.location == location)
}

/// The cluster source over the TLS fleet (a range of 127.0.0.1 with every server's port and a
/// closed one) and the TLS Secrets of a selected namespace: the counts and findings name each
/// problem, a Secret in a namespace not selected is not read, the Secret of a Certificate this
/// operator manages is marked managed, the closed port is listed unreachable, and the metrics
/// carry each certificate's expiry.
fn cluster_discovery_classifies_endpoints_and_secrets() -> Result<()> {
    block_on(async {
        let client = plane().client().await?;
        let home = TestNamespace::create(&client, "discovery").await?;
        let selected = TestNamespace::create(&client, "discovery-seen").await?;
        let ignored = TestNamespace::create(&client, "discovery-unseen").await?;
        let fleet = TlsFleet::start(&work_dir("discovery-fleet")?).await?;

        // A Certificate this operator manages in the selected namespace, a foreign TLS Secret
        // beside it, and one in a namespace the task does not look at.
        ca_issuer(&selected.name, "local")?;
        let issuing = Operator::start(
            plane(),
            &work_dir("discovery-issuing")?,
            "operator-issuing",
            &["--namespace", &selected.name],
        )?;
        issuing.wait_ready(Duration::from_secs(60)).await?;
        apply(&selected.name, &certificate_yaml("managed", "local", ""))?;
        wait_certificate(
            &client,
            &selected.name,
            "managed",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| issuing.log_text())?;
        for (namespace, name) in [(&selected.name, "foreign"), (&ignored.name, "hidden")] {
            let (cert, key) = pki_operator_e2e::self_signed_ca(&format!("{name} self-signed"))?;
            let secret = serde_json::json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": name},
                "stringData": {"tls.crt": cert, "tls.key": key},
            });
            apply(namespace, &serde_json::to_string(&secret)?)?;
        }

        let closed = free_port()?;
        let ports: Vec<String> = fleet
            .servers
            .iter()
            .map(|s| s.addr.port().to_string())
            .chain([closed.to_string()])
            .collect();
        let operator = Operator::start(
            plane(),
            &work_dir("discovery-operator")?,
            "operator",
            &["--namespace", &home.name],
        )?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        apply(
            &home.name,
            &format!(
                "apiVersion: pki-operator.io/v1alpha1\nkind: DiscoveryTask\nmetadata: {{name: sweep}}\nspec:\n  schedule: {{interval: 1h}}\n  cluster:\n    secrets: true\n    namespaces: [{}]\n    endpoints:\n      ranges: [{{cidr: 127.0.0.1/32, ports: [{}]}}]\n      timeout: 3s\n      concurrency: 4\n",
                selected.name,
                ports.join(", ")
            ),
        )?;
        let task = wait_task(&client, &home.name, "sweep", "a completed run", |t| {
            ready(t).is_some_and(|(status, reason, _)| status == "True" && reason == "Completed")
        })
        .await
        .with_context(|| operator.log_text())?;
        let status = status_of(&task);
        let summary = status.summary.clone().context("no summary")?;
        // Six endpoints plus three TLS Secrets of the selected namespace: the managed one, the
        // foreign one and the `ca` Issuer's own CA.
        ensure!(
            (
                summary.total,
                summary.expired,
                summary.expiring_within_30_days,
                summary.weak_keys,
                summary.managed,
                summary.unreachable
            ) == (9, 1, 1, 2, 1, 1),
            "summary {summary:?}"
        );
        // The fleet's self-signed server, the foreign Secret's and the issuer's CA.
        ensure!(summary.self_signed == 3, "self-signed {}", summary.self_signed);
        let at = |presented: Presented| format!("127.0.0.1:{}", fleet.server(presented).addr.port());
        let problems = [
            (at(Presented::Expired), "Expired"),
            (at(Presented::ExpiringIn10Days), "ExpiringSoon"),
            (at(Presented::WeakRsa1024), "WeakKey"),
            (at(Presented::Sha1Signed), "WeakKey"),
            (at(Presented::SelfSigned), "SelfSigned"),
            (format!("{}/foreign", selected.name), "SelfSigned"),
            (format!("{}/local", selected.name), "SelfSigned"),
        ];
        for (location, problem) in &problems {
            let found = finding(&status.findings, location)
                .with_context(|| format!("{location} not among the findings {:#?}", status.findings))?;
            ensure!(found.problem == *problem, "{location}: {found:?}");
        }
        ensure!(
            status.findings.first().is_some_and(|f| f.problem == "Expired"),
            "the expired certificate comes first: {:?}",
            status.findings
        );
        ensure!(
            status.findings.len() == problems.len(),
            "only problems are findings: {:#?}",
            status.findings
        );
        ensure!(
            !status
                .findings
                .iter()
                .any(|f| f.location.starts_with(&ignored.name)),
            "a Secret of a namespace not selected was read"
        );
        ensure!(
            status
                .unreachable_targets
                .iter()
                .any(|u| u.target == format!("127.0.0.1:{closed}")),
            "the closed port is not listed: {:?}",
            status.unreachable_targets
        );
        let (last, next) = (
            status.last_run_time.clone().context("lastRunTime")?.0,
            status.next_run_time.clone().context("nextRunTime")?.0,
        );
        ensure!(
            next.duration_since(last).as_secs() == 3600,
            "next run {next}, last {last}"
        );

        // The metrics: each certificate's expiry, and managed marked.
        let expired = pki_operator::discovery::analysis::examine(
            &fleet.server(Presented::Expired).leaf_der,
            pki_operator::discovery::analysis::Source::Endpoint,
            "",
        )
        .map_err(anyhow::Error::msg)?;
        let (_, metrics) = operator.get("/metrics").await.context("no /metrics")?;
        let series = format!(
            "pki_operator_discovered_certificate_expiry_timestamp_seconds{{task=\"{}/sweep\",source=\"endpoint\",location=\"{}\",serial=\"{}\",common_name=\"{}\",managed=\"false\"}}",
            home.name,
            at(Presented::Expired),
            expired.serial_hex,
            Presented::Expired.common_name()
        );
        // prometheus-client writes integer gauges as integers.
        ensure!(
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(series.as_str()))
                .is_some_and(|value| value.trim() == expired.not_after.to_string()),
            "no {series} = {} in:\n{metrics}",
            expired.not_after
        );
        ensure!(
            metrics.lines().any(
                |l| l.contains(&format!("location=\"{}/managed-tls\"", selected.name))
                    && l.contains("managed=\"true\"")
            ),
            "the managed Secret is not marked managed in the metrics"
        );
        let count = format!(
            "pki_operator_discovered_certificates{{task=\"{}/sweep\",source=\"endpoint\"}}",
            home.name
        );
        ensure!(
            metric_value(&metrics, &count) == Some(6.0),
            "{count} in:\n{metrics}"
        );
        Ok(())
    })
}

/// A range wider than a run may sweep, a cron expression the schema lets through but no clock
/// matches, and a Nexus source naming a `ca` issuer: each is `Ready=False` with a reason and a
/// message naming the field, and none is retried in a loop.
fn bad_discovery_tasks_say_why_without_a_hot_loop() -> Result<()> {
    block_on(async {
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "discovery-bad").await?;
        ca_issuer(&ns.name, "local")?;
        let operator = Operator::start(
            plane(),
            &work_dir("discovery-bad")?,
            "operator",
            &["--namespace", &ns.name],
        )?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        let cases = [
            (
                "wide",
                "  schedule: {interval: 1h}\n  cluster: {endpoints: {ranges: [{cidr: 10.0.0.0/8, ports: [443]}]}}\n",
                "TooManyTargets",
                "spec.cluster.endpoints.ranges[0].cidr",
            ),
            (
                "clock",
                "  schedule: {cron: '61 * * * *'}\n  cluster: {secrets: true}\n",
                "InvalidSchedule",
                "spec.schedule.cron: minute 61",
            ),
            (
                "not-nexus",
                "  schedule: {interval: 1h}\n  nexus: {issuerRef: {name: local}}\n",
                "Unsupported",
                "spec.nexus.issuerRef",
            ),
        ];
        for (name, spec, _, _) in &cases {
            apply(
                &ns.name,
                &format!(
                    "apiVersion: pki-operator.io/v1alpha1\nkind: DiscoveryTask\nmetadata: {{name: {name}}}\nspec:\n{spec}"
                ),
            )?;
        }
        for (name, _, reason, needle) in &cases {
            let task = wait_task(&client, &ns.name, name, reason, |t| {
                ready(t).is_some_and(|(_, found, _)| found == *reason)
            })
            .await
            .with_context(|| operator.log_text())?;
            let (status, _, message) = ready(&task).unwrap_or_default();
            ensure!(
                status == "False" && message.contains(needle),
                "{name}: {status} {message}"
            );
        }
        // No hot loop: over 10 s, the three tasks are not reconciled again and again.
        let reconciles = |metrics: &str| {
            metrics
                .lines()
                .filter(|l| l.starts_with("pki_operator_reconciliations_total{controller=\"discovery_task\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        let (_, before) = operator.get("/metrics").await.context("no /metrics")?;
        let window_end = Instant::now() + Duration::from_secs(10);
        wait_for("the 10-second window", Duration::from_secs(20), || async {
            (Instant::now() >= window_end).then_some(())
        })
        .await?;
        let (_, after) = operator.get("/metrics").await.context("no /metrics")?;
        let extra = reconciles(&after) - reconciles(&before);
        ensure!(
            extra <= 3.0,
            "{extra} DiscoveryTask reconciles in 10 s while blocked"
        );
        Ok(())
    })
}

/// The Nexus source: two certificates issued through the Nexus simulator (by this operator, for
/// two Certificates) are listed with their expiry — the count, and an expiry series per
/// certificate naming its CM `certid` — and recognised as managed by their serials.
fn nexus_discovery_lists_the_certificates_of_the_database() -> Result<()> {
    block_on(async {
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "discovery-nexus").await?;
        let sim = NexusSimulator::start(NexusSimulatorConfig::default()).await?;
        crate::nexus::identity_secret(&ns.name, "officer", sim.officer_identity())?;
        crate::nexus::nexus_issuer(&ns.name, "nexus", &sim, "officer", "Caller", None)?;
        let operator = Operator::start(
            plane(),
            &work_dir("discovery-nexus")?,
            "operator",
            &["--namespace", &ns.name],
        )?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        for name in ["first", "second"] {
            apply(&ns.name, &certificate_yaml(name, "nexus", ""))?;
        }
        for name in ["first", "second"] {
            wait_certificate(
                &client,
                &ns.name,
                name,
                "Ready",
                Duration::from_secs(60),
                is_ready,
            )
            .await
            .with_context(|| operator.log_text())?;
        }
        apply(
            &ns.name,
            "apiVersion: pki-operator.io/v1alpha1\nkind: DiscoveryTask\nmetadata: {name: database}\nspec:\n  schedule: {interval: 1h}\n  nexus: {issuerRef: {name: nexus}}\n",
        )?;
        let task = wait_task(&client, &ns.name, "database", "a completed run", |t| {
            ready(t).is_some_and(|(status, reason, _)| status == "True" && reason == "Completed")
        })
        .await
        .with_context(|| operator.log_text())?;
        let summary = status_of(&task).summary.context("no summary")?;
        ensure!(
            summary.total == 2 && summary.managed == 2 && summary.expired == 0,
            "summary {summary:?}"
        );
        let (_, metrics) = operator.get("/metrics").await.context("no /metrics")?;
        for issued in sim.stats().certificates {
            let line = metrics
                .lines()
                .find(|l| {
                    l.starts_with("pki_operator_discovered_certificate_expiry_timestamp_seconds{")
                        && l.contains("source=\"nexus\"")
                        && l.contains(&format!("location=\"nexus certid {}\"", issued.certid))
                })
                .with_context(|| format!("no expiry series for certid {} in:\n{metrics}", issued.certid))?;
            ensure!(line.contains("managed=\"true\""), "{line}");
            let expires: i64 = line.rsplit(' ').next().unwrap_or_default().parse()?;
            ensure!(
                expires > jiff::Timestamp::now().as_second() + 30 * 86_400,
                "expiry {expires} of {line}"
            );
        }
        Ok(())
    })
}

/// CertMgmt reporting: the operator onboards as a host once, keeps the host's id and key in the
/// task's Secret, and after each run the CertMgmt simulator holds the reported certificates with
/// the documented fields and date formats; the host's last contact advances on the next run. An
/// unreachable service is `Ready=False` naming it, while the findings are still recorded.
fn findings_are_reported_to_certmgmt_as_an_agent_host() -> Result<()> {
    block_on(async {
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "discovery-report").await?;
        let fleet = TlsFleet::start(&work_dir("discovery-report-fleet")?).await?;
        let service = CertMgmtSimulator::start(CertMgmtSimulatorConfig::default()).await?;
        let credentials = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "certmgmt"},
            "stringData": {"username": CertMgmtSimulatorConfig::default().username, "password": CertMgmtSimulatorConfig::default().password},
        });
        apply(&ns.name, &serde_json::to_string(&credentials)?)?;
        let operator = Operator::start(
            plane(),
            &work_dir("discovery-report")?,
            "operator",
            &["--namespace", &ns.name],
        )?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        let healthy = fleet.server(Presented::Healthy).addr.port();
        let expired = fleet.server(Presented::Expired).addr.port();
        let task = |timeout: &str, url: &str| {
            let ca = serde_json::to_string(&service.tls_ca_pem()).unwrap_or_default();
            format!(
                "apiVersion: pki-operator.io/v1alpha1\nkind: DiscoveryTask\nmetadata: {{name: {{name}}}}\nspec:\n  schedule: {{interval: 1h}}\n  cluster:\n    endpoints: {{ranges: [{{cidr: 127.0.0.1/32, ports: [{healthy}, {expired}]}}], timeout: {timeout}}}\n  report: {{url: '{url}', credentialsSecretName: certmgmt, hostname: e2e-cluster, caBundle: {ca}}}\n"
            )
        };
        apply(
            &ns.name,
            &task("3s", &service.base_url()).replace("{name}", "reported"),
        )?;
        let first = wait_task(&client, &ns.name, "reported", "a run reported", |t| {
            ready(t).is_some_and(|(status, reason, _)| status == "True" && reason == "Completed")
                && status_of(t).last_report_time.is_some()
        })
        .await
        .with_context(|| operator.log_text())?;
        let stats = service.stats();
        ensure!(stats.hosts.len() == 1, "hosts {:?}", stats.hosts);
        let host = &stats.hosts[0];
        ensure!(
            host.hostname == "e2e-cluster" && Some(&host.id) == status_of(&first).cert_mgmt_host_id.as_ref(),
            "host {host:?}, status {:?}",
            status_of(&first).cert_mgmt_host_id
        );
        ensure!(host.certificates.len() == 2, "reported {:?}", host.certificates);
        let agent_time = |text: &str| {
            text.len() == 15 && text.ends_with('Z') && text[..14].chars().all(|c| c.is_ascii_digit())
        };
        for reported in &host.certificates {
            ensure!(
                agent_time(&reported.cert_not_before)
                    && agent_time(&reported.cert_not_after)
                    && agent_time(&reported.cert_modified_date),
                "dates not YYYYMMDDHHMMSSZ: {reported:?}"
            );
            ensure!(
                reported.cert_type == "Public" && !reported.cert_issuer.is_empty(),
                "{reported:?}"
            );
        }
        let expired_leaf = pki_operator::discovery::analysis::examine(
            &fleet.server(Presented::Expired).leaf_der,
            pki_operator::discovery::analysis::Source::Endpoint,
            "",
        )
        .map_err(anyhow::Error::msg)?;
        let not_after = jiff::Timestamp::from_second(expired_leaf.not_after)?
            .strftime("%Y%m%d%H%M%SZ")
            .to_string();
        ensure!(
            host.certificates
                .iter()
                .any(|c| c.cert_cn == Presented::Expired.common_name() && c.cert_not_after == not_after),
            "the expired certificate is not reported with notAfter {not_after}: {:?}",
            host.certificates
        );
        // The host's id and key are kept in the task's Secret.
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns.name);
        let kept = secrets.get("reported-certmgmt-host").await?;
        ensure!(
            kept.data
                .as_ref()
                .is_some_and(|d| d.contains_key("host_id") && d.contains_key("secret_key")),
            "the host Secret lacks its keys"
        );

        // A spec change runs the task again: a second report, the same host, a later contact.
        let contact = host.last_contact_time.clone();
        apply(
            &ns.name,
            &task("4s", &service.base_url()).replace("{name}", "reported"),
        )?;
        wait_for("a second report", Duration::from_secs(60), || async {
            let stats = service.stats();
            (stats.hosts.len() == 1 && stats.hosts[0].reports >= 2).then_some(())
        })
        .await
        .with_context(|| operator.log_text())?;
        let later = service.stats().hosts[0].last_contact_time.clone();
        ensure!(
            later > contact,
            "last contact {later} did not advance from {contact}"
        );
        ensure!(
            service
                .stats()
                .requests
                .get("onboard")
                .copied()
                .unwrap_or_default()
                == 1,
            "onboarded more than once: {:?}",
            service.stats().requests
        );

        // Between runs (the schedule is hourly) the last findings are reported again every
        // `checkInInterval`, so the service sees the host alive.
        apply(
            &ns.name,
            &task("4s", &service.base_url())
                .replace("{name}", "reported")
                .replace(
                    "hostname: e2e-cluster,",
                    "hostname: e2e-cluster, checkInInterval: 3s,",
                ),
        )?;
        let reports = service.stats().hosts[0].reports;
        wait_for("two check-ins between runs", Duration::from_secs(60), || async {
            (service.stats().hosts[0].reports >= reports + 3).then_some(())
        })
        .await
        .with_context(|| operator.log_text())?;
        let runs = wait_task(&client, &ns.name, "reported", "its status", |_| true).await?;
        ensure!(
            status_of(&runs)
                .last_run_time
                .is_some_and(|t| t.0 < jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5)),
            "the reports came from runs, not check-ins"
        );

        // An unreachable service: Ready=False naming the report, the findings still recorded.
        let closed = format!("https://127.0.0.1:{}", free_port()?);
        apply(&ns.name, &task("3s", &closed).replace("{name}", "unreported"))?;
        let failed = wait_task(&client, &ns.name, "unreported", "a failed report", |t| {
            ready(t).is_some_and(|(status, _, message)| {
                status == "False" && message.contains("reporting to CertMgmt")
            })
        })
        .await
        .with_context(|| operator.log_text())?;
        let (_, reason, _) = ready(&failed).unwrap_or_default();
        ensure!(reason == "Unavailable", "reason {reason}");
        ensure!(
            status_of(&failed).summary.is_some_and(|s| s.total == 2),
            "the findings were not recorded"
        );
        Ok(())
    })
}

/// A DiscoveryTask `name` with an SCM source over the fleet's ports on 127.0.0.1.
fn scm_task_yaml(name: &str, fleet: &TlsFleet) -> String {
    let ports: Vec<String> = fleet.servers.iter().map(|s| s.addr.port().to_string()).collect();
    format!(
        "apiVersion: pki-operator.io/v1alpha1\nkind: DiscoveryTask\nmetadata: {{name: {name}}}\nspec:\n  schedule: {{interval: 1h}}\n  scm:\n    issuerRef: {{name: sectigo}}\n    agent: {DEFAULT_DISCOVERY_AGENT}\n    bucketId: {DEFAULT_DISCOVERY_BUCKET}\n    ranges: [{{cidr: 127.0.0.1/32, ports: [{}]}}]\n",
        ports.join(", ")
    )
}

/// The SCM source: the operator creates the remote scan task, starts it, follows the operation
/// and reads its results; the SCM simulator really scans the fleet on loopback, and the counts
/// and findings name each problem.
fn scm_discovery_scans_the_fleet_and_counts_what_it_found() -> Result<()> {
    block_on(async {
        let fleet = TlsFleet::start(&work_dir("discovery-scm-fleet")?).await?;
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start("discovery-scm", ScmSimulatorConfig::default(), SCM_PASSWORD).await?;
        apply(&ns.name, &scm_task_yaml("scan", &fleet))?;
        let task = wait_task(&client, &ns.name, "scan", "the scan's results", |t| {
            let status = status_of(t);
            status.operation_id.is_some()
                && status.scm_scan_started_time.is_none()
                && ready(t).is_some_and(|(s, reason, _)| s == "True" && reason == "Completed")
        })
        .await
        .with_context(|| operator.log_text())?;
        let status = status_of(&task);
        let summary = status.summary.clone().context("no summary")?;
        ensure!(
            (
                summary.total,
                summary.expired,
                summary.expiring_within_30_days,
                summary.weak_keys,
                summary.self_signed
            ) == (6, 1, 1, 2, 1),
            "summary {summary:?}"
        );
        let at = |presented: Presented| format!("127.0.0.1:{}", fleet.server(presented).addr.port());
        for (presented, problem) in [
            (Presented::Expired, "Expired"),
            (Presented::ExpiringIn10Days, "ExpiringSoon"),
            (Presented::WeakRsa1024, "WeakKey"),
            (Presented::Sha1Signed, "WeakKey"),
            (Presented::SelfSigned, "SelfSigned"),
        ] {
            let found = finding(&status.findings, &at(presented))
                .with_context(|| format!("{presented:?} not among {:#?}", status.findings))?;
            ensure!(found.problem == problem, "{presented:?}: {found:?}");
        }
        let stats = sim.stats();
        ensure!(
            stats.discovery_tasks.len() == 1 && Some(stats.discovery_tasks[0].id) == status.scm_task_id,
            "remote tasks {:?}, status {:?}",
            stats.discovery_tasks,
            status.scm_task_id
        );
        Ok(())
    })
}

/// The simulator creates the remote task and drops the connection before answering; the
/// operator is killed right then. The restarted operator finds the task by name instead of
/// creating a second one, scans with it, and deleting the DiscoveryTask deletes it at SCM.
fn a_crash_after_the_remote_task_is_created_leaves_one_remote_task() -> Result<()> {
    block_on(async {
        let fleet = TlsFleet::start(&work_dir("discovery-crash-fleet")?).await?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "discovery-crash").await?;
        let sim = ScmSimulator::start(ScmSimulatorConfig::default()).await?;
        scm_issuer(&ns.name, "sectigo", &sim, SCM_PASSWORD)?;
        sim.set_faults(Faults {
            drop_after_enroll: 1,
            endpoints: Some(vec!["discoveryCreateTask".into()]),
            ..Faults::default()
        });
        let dir = work_dir("discovery-crash")?;
        let mut first = Operator::start(plane(), &dir, "operator-1", &["--namespace", &ns.name])?;
        first.wait_ready(Duration::from_secs(60)).await?;
        apply(&ns.name, &scm_task_yaml("crashy", &fleet))?;
        wait_for(
            "the remote task to be created",
            Duration::from_secs(60),
            || async { (!sim.stats().discovery_tasks.is_empty()).then_some(()) },
        )
        .await
        .with_context(|| first.log_text())?;
        first.kill();
        let second = Operator::start(plane(), &dir, "operator-2", &["--namespace", &ns.name])?;
        let task = wait_task(&client, &ns.name, "crashy", "a scan after the restart", |t| {
            status_of(t).operation_id.is_some() && status_of(t).scm_scan_started_time.is_none()
        })
        .await
        .with_context(|| second.log_text())?;
        let stats = sim.stats();
        ensure!(
            stats.discovery_tasks.len() == 1
                && Some(stats.discovery_tasks[0].id) == status_of(&task).scm_task_id,
            "expected exactly one remote task, the status's: {:?} vs {:?}",
            stats.discovery_tasks,
            status_of(&task).scm_task_id
        );
        ensure!(
            stats.requests.get("discoveryCreateTask") == Some(&1),
            "creates: {:?}",
            stats.requests
        );
        ensure!(
            second
                .log_text()
                .contains("adopted an SCM discovery task found by name"),
            "the task was not adopted by name"
        );
        let api: Api<DiscoveryTask> = Api::namespaced(client.clone(), &ns.name);
        api.delete("crashy", &kube::api::DeleteParams::default()).await?;
        crate::support::wait_gone(&api, "crashy", "the DiscoveryTask to be gone")
            .await
            .with_context(|| second.log_text())?;
        ensure!(
            sim.stats().discovery_tasks.is_empty(),
            "the remote task outlived the DiscoveryTask: {:?}",
            sim.stats().discovery_tasks
        );
        Ok(())
    })
}

/// Bad SCM sources: empty ranges and a malformed CIDR are refused by the schema naming the
/// field; a range wider than SCM allows and an agent SCM does not know are `Ready=False` with
/// SCM's reason and its advice; the SCM calls they cause over 20 s stay bounded.
fn bad_scm_discovery_tasks_say_why_with_bounded_calls() -> Result<()> {
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start("discovery-scm-bad", ScmSimulatorConfig::default(), SCM_PASSWORD).await?;
        let task = |name: &str, agent: &str, ranges: &str| {
            format!(
                "apiVersion: pki-operator.io/v1alpha1\nkind: DiscoveryTask\nmetadata: {{name: {name}}}\nspec:\n  schedule: {{interval: 1h}}\n  scm:\n    issuerRef: {{name: sectigo}}\n    agent: {agent}\n    bucketId: {DEFAULT_DISCOVERY_BUCKET}\n    ranges: {ranges}\n"
            )
        };
        for (ranges, needle) in [
            ("[]", "spec.scm.ranges"),
            ("[{cidr: 10.0.0.300/24, ports: [443]}]", "cidr must be a CIDR"),
        ] {
            let refused = apply(&ns.name, &task("refused", DEFAULT_DISCOVERY_AGENT, ranges))
                .err()
                .with_context(|| format!("ranges {ranges} were accepted"))?;
            let refused = format!("{refused:#}");
            ensure!(refused.contains(needle), "{ranges}: {refused}");
        }
        let cases = [
            (
                "wide",
                DEFAULT_DISCOVERY_AGENT,
                "[{cidr: 10.0.0.0/8, ports: [443]}]",
                "RangeTooWide",
            ),
            (
                "agentless",
                "nowhere",
                "[{cidr: 10.1.0.0/30, ports: [443]}]",
                "AgentNotConfigured",
            ),
        ];
        for (name, agent, ranges, _) in &cases {
            apply(&ns.name, &task(name, agent, ranges))?;
        }
        for (name, _, _, reason) in &cases {
            let found = wait_task(&client, &ns.name, name, reason, |t| {
                ready(t).is_some_and(|(_, found, _)| found == *reason)
            })
            .await
            .with_context(|| operator.log_text())?;
            let (status, _, message) = ready(&found).unwrap_or_default();
            ensure!(
                status == "False" && message.contains("SCM network discovery"),
                "{name}: {message}"
            );
        }
        ensure!(
            sim.stats().discovery_tasks.is_empty(),
            "SCM holds a task for a refused spec: {:?}",
            sim.stats().discovery_tasks
        );
        let before: u64 = sim.stats().requests.values().sum();
        let window_end = Instant::now() + Duration::from_secs(20);
        wait_for("the 20-second window", Duration::from_secs(30), || async {
            (Instant::now() >= window_end).then_some(())
        })
        .await?;
        let calls: u64 = sim.stats().requests.values().sum::<u64>() - before;
        ensure!(
            calls <= 6,
            "{calls} SCM calls in 20 s while blocked: {:?}",
            sim.stats().requests
        );
        Ok(())
    })
}
