//! End-to-end tests of what the operator writes, read from the apiserver's audit log: its writes
//! are seen there (the positive control), and once a Certificate is Ready it writes nothing more.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use libtest_mimic::Trial;
use pki_operator_e2e::{
    Operator, TestNamespace,
    sim::scm::{ScmSimulator, ScmSimulatorConfig},
    wait_for, work_dir,
};

use crate::support::{
    SCM_PASSWORD, apply, audited_writes, block_on, ca_issuer, certificate_yaml, is_ready, plane, scm_issuer,
    trial, wait_certificate,
};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![trial(
        "steady_state_makes_no_writes",
        steady_state_makes_no_writes,
    )]
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
