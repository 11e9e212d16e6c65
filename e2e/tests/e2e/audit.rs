//! End-to-end tests of what the operator writes, read from the apiserver's audit log: its writes
//! are seen there (the positive control), and once a Certificate is Ready it writes nothing more.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use libtest_mimic::Trial;
use pki_operator_e2e::{
    AuditedWrite, Operator, TestNamespace, metric_value,
    sim::scm::{ScmSimulator, ScmSimulatorConfig},
    wait_for, work_dir,
};

use crate::support::{
    SCM_PASSWORD, apply, audited_writes, block_on, ca_issuer, certificate_yaml, is_ready, plane, scm_issuer,
    total_orders, trial, wait_certificate,
};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "audit_log_records_the_operators_writes",
            audit_log_records_the_operators_writes,
        ),
        trial("steady_state_makes_no_writes", steady_state_makes_no_writes),
        trial("ca_issuance_takes_three_writes", ca_issuance_takes_three_writes),
        trial("paid_issuance_takes_five_writes", paid_issuance_takes_five_writes),
    ]
}

/// Once Ready, the operator writes nothing more for the Certificate for two minutes.
fn steady_state_makes_no_writes() -> Result<()> {
    block_on(async {
        let dir = work_dir("steady")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "steady").await?;
        ca_issuer(&ns.name, "local-ca")?;
        let sim = ScmSimulator::start(ScmSimulatorConfig::default()).await?;
        scm_issuer(&ns.name, "sectigo", &sim, SCM_PASSWORD)?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        apply(&ns.name, &certificate_yaml("calm", "local-ca", ""))?;
        apply(&ns.name, &certificate_yaml("quiet", "sectigo", ""))?;
        for name in ["calm", "quiet"] {
            wait_certificate(
                &client,
                &ns.name,
                name,
                "Ready",
                Duration::from_secs(60),
                is_ready,
            )
            .await?;
        }
        // Let the writes that made them Ready and their watch echoes settle, then watch a
        // 2-minute window: no API writes in the namespace, no calls to the CA.
        let settle_until = Instant::now() + Duration::from_secs(5);
        wait_for("settle", Duration::from_secs(10), || async {
            (Instant::now() >= settle_until).then_some(())
        })
        .await?;
        let since = jiff::Timestamp::now();
        let ca_requests_before: u64 = sim.stats().requests.values().sum();
        let window_end = Instant::now() + Duration::from_secs(120);
        wait_for("the 2-minute window", Duration::from_secs(130), || async {
            (Instant::now() >= window_end).then_some(())
        })
        .await?;
        let writes = audited_writes(&ns.name, since)?;
        ensure!(
            writes.is_empty(),
            "the operator wrote {} time(s) in steady state: {writes:?}",
            writes.len()
        );
        let ca_requests_after: u64 = sim.stats().requests.values().sum();
        ensure!(
            ca_requests_after == ca_requests_before,
            "the operator called the CA {} time(s) in steady state: {:?}",
            ca_requests_after - ca_requests_before,
            sim.stats().requests
        );
        let (status, metrics) = operator.get("/metrics").await.context("metrics")?;
        ensure!(
            status == 200 && metrics.contains("pki_operator_reconciliations_total"),
            "metrics unavailable"
        );
        Ok(())
    })
}

/// The positive control for [`steady_state_makes_no_writes`]: the audit log, read the one way
/// every test reads it, does show the operator's writes (the output Secret and the Certificate's
/// status) once it issues, and leaves out the test's own kubectl, which the raw log does hold.
/// Without this, "no writes" could mean that nothing is recorded or that the reading is wrong.
fn audit_log_records_the_operators_writes() -> Result<()> {
    block_on(async {
        let dir = work_dir("audited")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "audited").await?;
        ca_issuer(&ns.name, "local-ca")?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        let since = jiff::Timestamp::now();
        apply(&ns.name, &certificate_yaml("recorded", "local-ca", ""))?;
        wait_certificate(
            &client,
            &ns.name,
            "recorded",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        let writes = wait_for(
            "the operator's Secret and status writes in the audit log",
            Duration::from_secs(30),
            || async {
                let writes = audited_writes(&ns.name, since).ok()?;
                let secret = writes
                    .iter()
                    .any(|w| w.resource == "secrets" && w.name == "recorded-tls");
                let status = writes
                    .iter()
                    .any(|w| w.resource == "certificates/status" && w.name == "recorded");
                (secret && status).then_some(writes)
            },
        )
        .await
        .with_context(|| {
            let seen = plane().audited_writes(&ns.name, since);
            format!("audit log since {since}: {seen:#?}")
        })?;
        ensure!(
            writes.iter().all(|w| !w.user_agent.starts_with("kubectl")),
            "the test's kubectl was not left out: {writes:#?}"
        );
        let raw = plane().audited_writes(&ns.name, since)?;
        ensure!(
            raw.iter().any(|w| w.user_agent.starts_with("kubectl")
                && w.verb == "create"
                && w.resource == "certificates"
                && w.name == "recorded"),
            "the audit log lacks the test's own kubectl create: {raw:#?}"
        );
        Ok(())
    })
}

/// Issuance from the `ca` issuer (local, synchronous, free) takes three API writes: the Secret,
/// the status, and the `Issued` Event — no next-key Secret and no "order placed" status write,
/// which only paid CAs need — and the reconcile that follows (the Secret's watch event) writes
/// nothing.
fn ca_issuance_takes_three_writes() -> Result<()> {
    block_on(async {
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "ca-writes").await?;
        ca_issuer(&ns.name, "local-ca")?;
        let writes = writes_of_one_issuance(&client, &ns.name, "local-ca").await?;
        expect_writes(
            &writes,
            &[
                ("patch", "secrets"),
                ("patch", "certificates/status"),
                ("create", "events"),
            ],
        )
    })
}

/// Issuance from a paid CA that issues at once (the SCM simulator without pending collects)
/// takes five writes: the next-key Secret (created before the order, deleted after the
/// delivery is recorded — it is what makes a crash safe), the output Secret, one status write
/// and the `Issued` Event. The order's own status write and `OrderPlaced` Event only happen
/// when the order has to wait. Exactly one order is placed, and no next-key Secret (a private
/// key) is left behind — before this test, one was whenever the CA issued at once.
fn paid_issuance_takes_five_writes() -> Result<()> {
    block_on(async {
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "paid-writes").await?;
        let sim = ScmSimulator::start(ScmSimulatorConfig {
            pending_collects: 0,
            ..ScmSimulatorConfig::default()
        })
        .await?;
        scm_issuer(&ns.name, "sectigo", &sim, SCM_PASSWORD)?;
        let writes = writes_of_one_issuance(&client, &ns.name, "sectigo").await?;
        expect_writes(
            &writes,
            &[
                ("create", "secrets"),
                ("patch", "secrets"),
                ("patch", "certificates/status"),
                ("delete", "secrets"),
                ("create", "events"),
            ],
        )?;
        ensure!(
            total_orders(&sim) == 1,
            "orders: {:?}",
            sim.stats().orders_per_csr
        );
        // The next-key Secret holds a private key: it must not outlive the issuance.
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(client.clone(), &ns.name);
        ensure!(
            secrets.get_opt("counted-next-key").await?.is_none(),
            "the next-key Secret was left behind"
        );
        Ok(())
    })
}

/// The operator's API writes for one Certificate `counted` from `issuer` in `namespace`, up to
/// and including the reconcile its own Secret write triggers.
async fn writes_of_one_issuance(
    client: &kube::Client,
    namespace: &str,
    issuer: &str,
) -> Result<Vec<AuditedWrite>> {
    let dir = work_dir(&format!("{namespace}-operator"))?;
    let operator = Operator::start(plane(), &dir, "operator", &["--namespace", namespace])?;
    operator.wait_ready(Duration::from_secs(60)).await?;
    let successes = r#"pki_operator_reconciliations_total{controller="certificate",outcome="success"}"#;
    let since = jiff::Timestamp::now();
    apply(namespace, &certificate_yaml("counted", issuer, ""))?;
    wait_certificate(
        client,
        namespace,
        "counted",
        "Ready",
        Duration::from_secs(60),
        is_ready,
    )
    .await
    .with_context(|| operator.log_text())?;
    // The issuing reconcile and the one its Secret write triggers have both run.
    wait_for("two Certificate reconciles", Duration::from_secs(30), || async {
        let (status, body) = operator.get("/metrics").await?;
        (status == 200 && metric_value(&body, successes).is_some_and(|v| v >= 2.0)).then_some(())
    })
    .await
    .with_context(|| operator.log_text())?;
    // Every write of the issuance has been answered; a write of the test's own, once seen in
    // the audit log, proves that the log holds everything answered before it.
    audit_barrier(namespace).await?;
    Ok(audited_writes(namespace, since)?
        .into_iter()
        .filter(|w| w.name == "counted" || w.name.starts_with("counted-") || w.name.starts_with("counted."))
        .collect())
}

/// Writes a `ConfigMap` with kubectl and waits until the audit log records it: the writes the
/// operator made before are in the log by then.
async fn audit_barrier(namespace: &str) -> Result<()> {
    let since = jiff::Timestamp::now();
    apply(
        namespace,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: audit-barrier}\ndata: {at: now}\n",
    )?;
    wait_for(
        "the barrier in the audit log",
        Duration::from_secs(30),
        || async {
            plane()
                .audited_writes(namespace, since)
                .ok()?
                .iter()
                .any(|w| w.resource == "configmaps" && w.name == "audit-barrier")
                .then_some(())
        },
    )
    .await
}

/// Checks that `writes` are exactly `expected` (verb, resource), in any order.
fn expect_writes(writes: &[AuditedWrite], expected: &[(&str, &str)]) -> Result<()> {
    let describe = || {
        writes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut seen: Vec<_> = writes
        .iter()
        .map(|w| (w.verb.as_str(), w.resource.as_str()))
        .collect();
    let mut wanted = expected.to_vec();
    seen.sort_unstable();
    wanted.sort_unstable();
    ensure!(
        seen == wanted,
        "{} writes for one issuance, expected {} ({expected:?}):\n{}",
        writes.len(),
        expected.len(),
        describe()
    );
    Ok(())
}
