//! End-to-end tests of the operator process: readiness, metrics and logs, leader election and
//! takeover, graceful shutdown, the exit when the CRDs are missing, and running as the container
//! image does (nonroot, read-only working directory).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use libtest_mimic::Trial;
use pki_operator_e2e::{
    ControlPlane, Operator, TestNamespace, metric_value, random_suffix, repo_root, wait_for, work_dir,
};

use crate::support::{
    apply, block_on, ca_issuer, certificate_yaml, is_ready, plane, trial, wait_certificate,
};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "operator_becomes_ready_serves_metrics_and_watches_every_kind",
            operator_becomes_ready,
        ),
        trial(
            "standby_takes_over_when_the_leader_is_killed",
            standby_takes_over_when_the_leader_is_killed,
        ),
        trial(
            "operator_without_crds_exits_naming_the_missing_crd",
            operator_without_crds_exits,
        ),
        trial(
            "operator_runs_as_nonroot_with_a_read_only_working_directory_and_writes_no_files",
            operator_runs_confined,
        ),
    ]
}

/// The operator starts, `/readyz` turns 200 after the caches synced, `/metrics` serves, logs are
/// JSON when asked, and every controller reconciles objects of its kind.
fn operator_becomes_ready() -> Result<()> {
    block_on(async {
        let dir = work_dir("ready")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "ready").await?;
        let operator = Operator::start(
            plane(),
            &dir,
            "operator",
            &["--log-format", "json", "--namespace", &ns.name],
        )?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        let (status, body) = operator.get("/livez").await.context("/livez does not answer")?;
        ensure!(status == 200 && body == "ok", "/livez answered {status} {body:?}");

        // Objects of every kind, created after startup, reach their controller.
        let examples = repo_root().join("examples");
        for file in [
            "certificate-minimal.yaml",
            "issuer-ca.yaml",
            "clusterissuer-incommon.yaml",
            "domainvalidation-email.yaml",
            "discoverytask-minimal.yaml",
            "alertconfig-minimal.yaml",
        ] {
            let text = std::fs::read_to_string(examples.join(file))?;
            let suffix = random_suffix();
            // Unique names for the cluster-scoped ones, so parallel tests do not collide.
            let text = text
                .replace("name: incommon\n", &format!("name: incommon-{suffix}\n"))
                .replace("name: shop-example-com\n", &format!("name: shop-{suffix}\n"))
                .replace("name: default\n", &format!("name: default-{suffix}\n"));
            let out = plane().kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(&text))?;
            ensure!(
                out.status.success(),
                "applying {file}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let controllers = [
            "certificate",
            "issuer",
            "cluster_issuer",
            "domain_validation",
            "discovery_task",
            "alert_config",
        ];
        let metrics = wait_for(
            "every controller to reconcile its kind",
            Duration::from_secs(30),
            || async {
                let (status, body) = operator.get("/metrics").await?;
                let all = status == 200
                    && controllers.iter().all(|c| {
                        let sample = format!(
                            r#"pki_operator_reconciliations_total{{controller="{c}",outcome="success"}}"#
                        );
                        metric_value(&body, &sample).is_some_and(|v| v >= 1.0)
                    });
                all.then_some(body)
            },
        )
        .await
        .with_context(|| format!("operator log:\n{}", operator.log_text()))?;
        ensure!(
            metric_value(&metrics, "pki_operator_ready").is_some_and(|v| (v - 1.0).abs() < f64::EPSILON),
            "ready gauge not 1:\n{metrics}"
        );
        ensure!(
            metrics.contains("# TYPE pki_operator_reconcile_duration_seconds histogram"),
            "no histogram:\n{metrics}"
        );

        let log = operator.log_text();
        let first = log.lines().next().context("operator logged nothing")?;
        let line: serde_json::Value =
            serde_json::from_str(first).with_context(|| format!("log line is not JSON: {first}"))?;
        ensure!(
            line.get("level").is_some() && line.get("message").is_some() || line.get("fields").is_some(),
            "unexpected JSON log shape: {first}"
        );
        Ok(())
    })
}

/// Two replicas with leader election: exactly one is ready; SIGKILL the leader and the standby
/// takes the Lease and becomes ready; SIGTERM the new leader and it exits 0, releasing the Lease
/// to a third replica at once.
fn standby_takes_over_when_the_leader_is_killed() -> Result<()> {
    block_on(async {
        let dir = work_dir("leader")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "leader").await?;
        let lease_name = format!("pki-operator-e2e-{}", random_suffix());
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
        let start = |id: &str| {
            Operator::start(
                plane(),
                &dir,
                id,
                &[
                    "--namespace",
                    &ns.name,
                    "--leader-election=true",
                    "--leader-election-namespace",
                    &ns.name,
                    "--leader-election-lease",
                    &lease_name,
                    "--lease-duration",
                    "10",
                    "--identity",
                    id,
                ],
            )
        };
        let holder = |leases: Api<Lease>, lease_name: String| async move {
            leases
                .get_opt(&lease_name)
                .await
                .ok()
                .flatten()?
                .spec?
                .holder_identity
        };

        let mut a = start("replica-a")?;
        a.wait_ready(Duration::from_secs(60)).await?;
        let mut b = start("replica-b")?;
        let first = wait_for("replica-a to hold the Lease", Duration::from_secs(20), || {
            holder(leases.clone(), lease_name.clone())
        })
        .await?;
        ensure!(first == "replica-a", "Lease held by {first}, expected replica-a");
        // The standby is alive but not ready while the leader holds the Lease.
        wait_for("replica-b admin server", Duration::from_secs(30), || async {
            b.get("/livez").await.map(|_| ())
        })
        .await?;
        let (status, _) = b.get("/readyz").await.context("standby /readyz")?;
        ensure!(status == 503, "standby answered /readyz {status}, expected 503");

        let killed = Instant::now();
        a.kill();
        let second = wait_for("replica-b to take the Lease", Duration::from_secs(30), || {
            let get = holder(leases.clone(), lease_name.clone());
            async move { get.await.filter(|h| h == "replica-b") }
        })
        .await?;
        b.wait_ready(Duration::from_secs(30)).await?;
        let takeover = killed.elapsed();
        eprintln!("takeover after SIGKILL: {takeover:?} (lease duration 10s)");
        ensure!(second == "replica-b");
        ensure!(takeover < Duration::from_secs(20), "takeover took {takeover:?}");
        let lease = leases.get(&lease_name).await?;
        ensure!(
            lease.spec.and_then(|s| s.lease_transitions) >= Some(1),
            "leaseTransitions not incremented"
        );

        // Graceful shutdown: SIGTERM releases the Lease; a new standby takes it without waiting
        // for expiry.
        let c = start("replica-c")?;
        wait_for("replica-c admin server", Duration::from_secs(30), || async {
            c.get("/livez").await.map(|_| ())
        })
        .await?;
        let terminated = Instant::now();
        pki_operator_e2e::signal(b.pid(), "TERM");
        let status = b.wait_exit(Duration::from_secs(20)).await?;
        ensure!(
            status.success(),
            "replica-b exited with {status} after SIGTERM:\n{}",
            b.log_text()
        );
        ensure!(
            b.log_text().contains("released leadership"),
            "replica-b did not release the Lease:\n{}",
            b.log_text()
        );
        wait_for(
            "replica-c to take the released Lease",
            Duration::from_secs(20),
            || {
                let get = holder(leases.clone(), lease_name.clone());
                async move { get.await.filter(|h| h == "replica-c") }
            },
        )
        .await?;
        c.wait_ready(Duration::from_secs(30)).await?;
        eprintln!("takeover after SIGTERM: {:?}", terminated.elapsed());
        Ok(())
    })
}

/// Against a control plane without our CRDs the operator exits non-zero naming the CRD.
fn operator_without_crds_exits() -> Result<()> {
    block_on(async {
        let dir = work_dir("no-crds")?;
        let bare = ControlPlane::start(&dir.join("cluster")).await?;
        let mut operator = Operator::start(&bare, &dir, "operator", &[])?;
        let status = operator.wait_exit(Duration::from_secs(60)).await?;
        let log = operator.log_text();
        ensure!(
            !status.success(),
            "operator exited successfully without CRDs:\n{log}"
        );
        ensure!(
            log.contains("certificates.pki-operator.io"),
            "exit message does not name the CRD:\n{log}"
        );
        ensure!(
            log.contains("kubectl apply -f crds/"),
            "exit message does not say how to install:\n{log}"
        );
        Ok(())
    })
}

/// What the container image can be checked for without a container engine: the operator, run
/// as the image's nonroot uid 65532 (when the tests run as root; else as the tests' own uid) with
/// its working directory, `HOME` and `TMPDIR` a read-only directory, becomes ready and issues a
/// Certificate, and leaves that directory as it found it (no file written), so the image's
/// read-only root filesystem holds.
fn operator_runs_confined() -> Result<()> {
    block_on(async {
        let dir = work_dir("confined")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "confined").await?;
        ca_issuer(&ns.name, "confined-ca")?;
        let root = dir.join("readonly");
        let operator =
            Operator::start_confined(plane(), &dir, "operator", &["--namespace", &ns.name], &root)?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        let uid = Operator::confined_uid().context("the tests' uid is unknown")?;
        let (status, body) = operator
            .get("/metrics")
            .await
            .context("/metrics does not answer")?;
        ensure!(status == 200, "/metrics answered {status}: {body}");
        let process_uid = std::fs::read_to_string(format!("/proc/{}/status", operator.pid()))?
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next().map(str::to_owned))
            .context("no Uid line")?;
        ensure!(
            process_uid == uid.to_string(),
            "the operator runs as uid {process_uid}, not {uid}"
        );
        apply(&ns.name, &certificate_yaml("confined", "confined-ca", ""))?;
        wait_certificate(
            &client,
            &ns.name,
            "confined",
            "Ready from a confined operator",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        let mut left: Vec<_> = std::fs::read_dir(&root)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        left.sort();
        ensure!(
            left == ["kubeconfig"],
            "the operator wrote files into its working directory: {left:?}"
        );
        let log = operator.log_text();
        ensure!(
            !log.contains("Permission denied") && !log.contains("Read-only file system"),
            "the operator tried to write a file:\n{log}"
        );
        Ok(())
    })
}
