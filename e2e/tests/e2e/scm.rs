//! End-to-end tests of the `scm` backend (Sectigo Certificate Manager) against its simulator:
//! one order per issuance, crash recovery, renewal, revocation on delete, credentials, backoff
//! and repairs.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kube::Api;
use libtest_mimic::Trial;
use pki_operator::crd::v1alpha1::{Certificate, Issuer};
use pki_operator_e2e::{
    Operator, TestNamespace,
    sim::scm::{Faults, ScmSimulator, ScmSimulatorConfig},
    wait_for, work_dir,
};

use crate::support::{
    SCM_PASSWORD, ScmScene, apply, block_on, certificate_yaml, condition, event_reasons, is_ready, plane,
    scm_issuer, secret_text, total_orders, trial, verify_tls_secret, wait_certificate, wait_gone,
};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "scm_certificate_is_issued_through_one_pending_order",
            scm_certificate_issued_once,
        ),
        trial(
            "scm_crash_after_order_accepted_recovers_without_a_second_order",
            scm_crash_recovery,
        ),
        trial(
            "scm_renewal_rotates_the_key_and_revokes_the_superseded_certificate",
            scm_renewal,
        ),
        trial(
            "scm_revoke_on_delete_revokes_and_releases_the_finalizer",
            scm_revoke_on_delete,
        ),
        trial(
            "scm_skip_revoke_annotation_releases_a_certificate_whose_revocation_fails",
            scm_skip_revoke_annotation_releases_a_certificate_whose_revocation_fails,
        ),
        trial(
            "scm_invalid_credentials_are_reported_and_recover_when_fixed",
            scm_invalid_credentials,
        ),
        trial(
            "scm_tampered_secret_is_repaired_without_a_new_order",
            scm_tampered_secret_repaired,
        ),
        trial(
            "scm_backoff_recorded_in_status_survives_a_restart",
            scm_backoff_survives_a_restart,
        ),
    ]
}

/// SCM with a processing delay: while pending, status shows the order id and `Issuing=True`;
/// then Ready with a verified Secret, and the simulator counts exactly one order.
fn scm_certificate_issued_once() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start(
            "scm-once",
            ScmSimulatorConfig {
                pending_collects: 4,
                ..ScmSimulatorConfig::default()
            },
            SCM_PASSWORD,
        )
        .await?;
        apply(&ns.name, &certificate_yaml("shop", "sectigo", ""))?;
        let pending = wait_certificate(
            &client,
            &ns.name,
            "shop",
            "a pending order in status",
            Duration::from_secs(60),
            |c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.order.as_ref())
                    .is_some_and(|o| o.state == "Pending")
                    && condition(c, "Issuing").is_some_and(|(s, ..)| s == "True")
            },
        )
        .await
        .with_context(|| operator.log_text())?;
        let order = pending.status.and_then(|s| s.order).context("order")?;
        ensure!(order.backend == "scm" && !order.id.is_empty(), "order {order:?}");
        let ready = wait_certificate(
            &client,
            &ns.name,
            "shop",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        let secret = Api::<Secret>::namespaced(client.clone(), &ns.name)
            .get("shop-tls")
            .await?;
        verify_tls_secret(&secret, &sim.issuing_root_pem(), &["shop.example.com"])?;
        ensure!(
            ready
                .status
                .and_then(|s| s.order)
                .is_some_and(|o| o.id == order.id && o.state == "Issued")
        );
        let stats = sim.stats();
        ensure!(
            total_orders(&sim) == 1,
            "the simulator counted orders {:?}",
            stats.orders_per_csr
        );
        ensure!(
            stats.requests.get("enroll") == Some(&1),
            "enroll requests {:?}",
            stats.requests
        );
        Ok(())
    })
}

/// The operator is killed right after the simulator accepted the order (its response never
/// arrived); after a restart the Certificate becomes Ready and there is still exactly one order.
fn scm_crash_recovery() -> Result<()> {
    block_on(async {
        let dir = work_dir("scm-crash")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "scm-crash").await?;
        let sim = ScmSimulator::start(ScmSimulatorConfig::default()).await?;
        scm_issuer(&ns.name, "sectigo", &sim, SCM_PASSWORD)?;
        sim.set_faults(Faults {
            drop_after_enroll: 1,
            ..Faults::default()
        });
        let mut first = Operator::start(plane(), &dir, "operator-1", &["--namespace", &ns.name])?;
        first.wait_ready(Duration::from_secs(60)).await?;
        apply(&ns.name, &certificate_yaml("crashy", "sectigo", ""))?;
        wait_for(
            "the simulator to accept the order",
            Duration::from_secs(60),
            || async { (total_orders(&sim) == 1).then_some(()) },
        )
        .await
        .with_context(|| first.log_text())?;
        first.kill();
        sim.set_faults(Faults::default());
        let second = Operator::start(plane(), &dir, "operator-2", &["--namespace", &ns.name])?;
        let cert = wait_certificate(
            &client,
            &ns.name,
            "crashy",
            "Ready after restart",
            Duration::from_secs(90),
            is_ready,
        )
        .await
        .with_context(|| second.log_text())?;
        let stats = sim.stats();
        ensure!(
            total_orders(&sim) == 1,
            "expected exactly one order, the simulator counted {:?}",
            stats.orders_per_csr
        );
        ensure!(
            stats.requests.get("enroll") == Some(&1),
            "enroll requests {:?}",
            stats.requests
        );
        let only = stats.orders.first().context("no order")?;
        let order = cert.status.and_then(|s| s.order).context("no order in status")?;
        ensure!(
            order.id == only.ssl_id.to_string(),
            "status order {} is not the simulator's {}",
            order.id,
            only.ssl_id
        );
        Ok(())
    })
}

/// A 3-minute certificate renewed at two thirds of its life: new key, new serial, new Secret,
/// and the superseded serial revoked at the simulator.
fn scm_renewal() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start(
            "scm-renew",
            ScmSimulatorConfig {
                certificate_lifetime: Some(Duration::from_secs(180)),
                ..ScmSimulatorConfig::default()
            },
            SCM_PASSWORD,
        )
        .await?;
        apply(
            &ns.name,
            &certificate_yaml(
                "rotating",
                "sectigo",
                "  duration: 3m\n  revocationPolicy: {superseded: Revoke}\n",
            ),
        )?;
        let first = wait_certificate(
            &client,
            &ns.name,
            "rotating",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await?;
        let first_serial = first
            .status
            .as_ref()
            .and_then(|s| s.serial_number.clone())
            .context("serial")?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let first_key = secret_text(&secrets.get("rotating-tls").await?, "tls.key")?;
        let renewed = wait_certificate(
            &client,
            &ns.name,
            "rotating",
            "revision 2",
            Duration::from_secs(200),
            |c| c.status.as_ref().and_then(|s| s.revision) == Some(2) && is_ready(c),
        )
        .await
        .with_context(|| operator.log_text())?;
        let second_serial = renewed
            .status
            .as_ref()
            .and_then(|s| s.serial_number.clone())
            .context("serial")?;
        ensure!(second_serial != first_serial, "the serial did not change");
        let secret = secrets.get("rotating-tls").await?;
        ensure!(
            secret_text(&secret, "tls.key")? != first_key,
            "the key was not rotated"
        );
        verify_tls_secret(&secret, &sim.issuing_root_pem(), &["rotating.example.com"])?;
        let revoked = wait_for(
            "the superseded certificate to be revoked",
            Duration::from_secs(30),
            || async {
                sim.stats()
                    .orders
                    .into_iter()
                    .find(|o| {
                        o.serial_number
                            .as_deref()
                            .map(|s| s.replace(':', "").to_lowercase())
                            == Some(first_serial.clone())
                    })
                    .filter(|o| o.status == "Revoked")
            },
        )
        .await?;
        ensure!(revoked.status == "Revoked");
        Ok(())
    })
}

/// Deleting a Certificate with revoke-on-delete revokes it at the simulator, removes the
/// finalizer, and the Secret is garbage-collected.
fn scm_revoke_on_delete() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start("scm-delete", ScmSimulatorConfig::default(), SCM_PASSWORD).await?;
        apply(
            &ns.name,
            &certificate_yaml(
                "doomed",
                "sectigo",
                "  revocationPolicy: {onDelete: Revoke, onDeleteReason: CessationOfOperation}\n",
            ),
        )?;
        let cert = wait_certificate(
            &client,
            &ns.name,
            "doomed",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await?;
        ensure!(
            cert.metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f == "pki-operator.io/revoke-on-delete")),
            "no finalizer"
        );
        let order_id = cert.status.and_then(|s| s.order).context("order")?.id;
        let certs: Api<Certificate> = Api::namespaced(client.clone(), &ns.name);
        certs
            .delete("doomed", &kube::api::DeleteParams::default())
            .await?;
        wait_gone(&certs, "doomed", "the Certificate to be gone")
            .await
            .with_context(|| operator.log_text())?;
        let order = sim
            .stats()
            .orders
            .into_iter()
            .find(|o| o.ssl_id.to_string() == order_id)
            .context("order gone")?;
        ensure!(order.status == "Revoked", "order status {}", order.status);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        wait_gone(&secrets, "doomed-tls", "the Secret to be garbage-collected").await?;
        Ok(())
    })
}

/// A wrong password: the Issuer is Ready=False with an actionable message, the Certificate says
/// its issuer is not ready and why; fixing the Secret recovers both without manual steps.
fn scm_invalid_credentials() -> Result<()> {
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start("scm-creds", ScmSimulatorConfig::default(), "wrong-password").await?;
        apply(&ns.name, &certificate_yaml("blocked", "sectigo", ""))?;
        let issuers: Api<Issuer> = Api::namespaced(client.clone(), &ns.name);
        let issuer = wait_for(
            "Issuer Ready=False Unauthorized",
            Duration::from_secs(60),
            || async {
                issuers.get_opt("sectigo").await.ok().flatten().filter(|i| {
                    i.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "Unauthorized")
                    })
                })
            },
        )
        .await?;
        let message = issuer
            .status
            .map(|s| s.conditions[0].message.clone())
            .unwrap_or_default();
        ensure!(
            message.contains("credentials") && message.contains("Unknown user"),
            "issuer message {message:?}"
        );
        ensure!(
            !message.contains("wrong-password"),
            "the password leaked into status"
        );
        let cert = wait_certificate(
            &client,
            &ns.name,
            "blocked",
            "Certificate reports the issuer",
            Duration::from_secs(60),
            |c| {
                condition(c, "Ready").is_some_and(|(s, r, m)| {
                    s == "False" && r == "IssuerNotReady" && m.contains("Unknown user")
                })
            },
        )
        .await?;
        ensure!(
            cert.status.and_then(|s| s.order).is_none(),
            "an order was placed with bad credentials"
        );
        scm_issuer(&ns.name, "sectigo", &sim, SCM_PASSWORD)?;
        wait_certificate(
            &client,
            &ns.name,
            "blocked",
            "Ready after fixing the Secret",
            Duration::from_secs(90),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        ensure!(total_orders(&sim) == 1, "orders {:?}", sim.stats().orders_per_csr);
        Ok(())
    })
}

/// The CA fails every order, so failures back off (5 s, 10 s, 20 s, ...). The operator is killed
/// after the third failure and restarted while the CA recovers: the new one honours the backoff
/// recorded in status (no order before `lastFailureTime` + 80 % of the third wait) instead of
/// retrying at once, then issues with one order.
fn scm_backoff_survives_a_restart() -> Result<()> {
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            mut operator,
        } = ScmScene::start("scm-backoff", ScmSimulatorConfig::default(), SCM_PASSWORD).await?;
        sim.set_faults(Faults {
            server_error_rate: 1.0,
            endpoints: Some(vec!["enroll".into()]),
            ..Faults::default()
        });
        apply(&ns.name, &certificate_yaml("patient", "sectigo", ""))?;
        let failing = wait_certificate(
            &client,
            &ns.name,
            "patient",
            "three failed attempts",
            Duration::from_secs(90),
            |c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.failed_issuance_attempts)
                    .is_some_and(|a| a >= 3)
            },
        )
        .await
        .with_context(|| operator.log_text())?;
        operator.kill();
        let enrolls = sim.stats().requests.get("enroll").copied().unwrap_or(0);
        let status = failing.status.context("no status")?;
        let attempts = status.failed_issuance_attempts.context("no attempt count")?;
        let failed_at = status.last_failure_time.context("no failure time")?.0;
        // backoff(attempts) is 5 s doubling per attempt, capped at 10 min, with ±20 % jitter.
        let base = (5 * 2_i64.pow(u32::try_from(attempts - 1)?)).min(600);
        // lastFailureTime has whole seconds: allow one.
        let earliest = failed_at + jiff::SignedDuration::from_millis(base * 800 - 1000);
        let restarted = jiff::Timestamp::now();
        let second = Operator::start(
            plane(),
            &work_dir("scm-backoff")?,
            "operator-2",
            &["--namespace", &ns.name],
        )?;
        // The CA recovers at once, so only the recorded backoff can delay the next order.
        sim.set_faults(Faults::default());
        wait_for("the next order attempt", Duration::from_secs(120), || async {
            (sim.stats().requests.get("enroll").copied().unwrap_or(0) > enrolls).then_some(())
        })
        .await
        .with_context(|| second.log_text())?;
        let retried = jiff::Timestamp::now();
        ensure!(
            retried >= earliest,
            "attempt {} came at {retried}, before {earliest} (failure {attempts} at {failed_at}, restart at {restarted})",
            attempts + 1
        );
        wait_certificate(
            &client,
            &ns.name,
            "patient",
            "Ready once the CA recovers",
            Duration::from_secs(120),
            is_ready,
        )
        .await
        .with_context(|| second.log_text())?;
        ensure!(total_orders(&sim) == 1, "orders {:?}", sim.stats().orders_per_csr);
        Ok(())
    })
}

/// Someone overwrites `tls.crt`: the operator rewrites the Secret from the existing order with
/// the key it still holds, without placing a second order.
fn scm_tampered_secret_repaired() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start("scm-tamper", ScmSimulatorConfig::default(), SCM_PASSWORD).await?;
        apply(&ns.name, &certificate_yaml("fragile", "sectigo", ""))?;
        let cert = wait_certificate(
            &client,
            &ns.name,
            "fragile",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await?;
        let serial = cert.status.and_then(|s| s.serial_number).context("serial")?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let key_before = secret_text(&secrets.get("fragile-tls").await?, "tls.key")?;
        let patch = r#"{"stringData":{"tls.crt":"tampered"}}"#;
        let out = plane().kubectl(
            &[
                "patch",
                "secret",
                "fragile-tls",
                "-n",
                &ns.name,
                "--type=merge",
                "-p",
                patch,
            ],
            None,
        )?;
        ensure!(
            out.status.success(),
            "patch failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let repaired = wait_for("the Secret to be repaired", Duration::from_secs(60), || async {
            let secret = secrets.get_opt("fragile-tls").await.ok().flatten()?;
            secret_text(&secret, "tls.crt")
                .ok()
                .filter(|t| t.contains("BEGIN CERTIFICATE"))
                .map(|_| secret)
        })
        .await
        .with_context(|| operator.log_text())?;
        verify_tls_secret(&repaired, &sim.issuing_root_pem(), &["fragile.example.com"])?;
        ensure!(
            secret_text(&repaired, "tls.key")? == key_before,
            "the key changed: a new certificate was issued"
        );
        let after = wait_certificate(
            &client,
            &ns.name,
            "fragile",
            "Ready",
            Duration::from_secs(30),
            is_ready,
        )
        .await?;
        ensure!(
            after.status.as_ref().and_then(|s| s.serial_number.clone()) == Some(serial),
            "serial changed"
        );
        ensure!(
            after.status.and_then(|s| s.revision) == Some(1),
            "revision changed"
        );
        ensure!(
            total_orders(&sim) == 1,
            "a second order was placed: {:?}",
            sim.stats().orders_per_csr
        );
        Ok(())
    })
}

/// Revoke-on-delete against a CA that answers every revocation with a 5xx: the Certificate stays
/// (finalizer held) and a `RevokeFailed` Warning names the way out; annotated
/// `pki-operator.io/skip-revoke=true` it goes without a revocation, and the certificate is still
/// valid at the CA.
fn scm_skip_revoke_annotation_releases_a_certificate_whose_revocation_fails() -> Result<()> {
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start("scm-skip-revoke", ScmSimulatorConfig::default(), SCM_PASSWORD).await?;
        apply(
            &ns.name,
            &certificate_yaml(
                "stuck",
                "sectigo",
                "  revocationPolicy: {onDelete: Revoke, onDeleteReason: CessationOfOperation}\n",
            ),
        )?;
        let cert = wait_certificate(
            &client,
            &ns.name,
            "stuck",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        let order_id = cert.status.and_then(|s| s.order).context("order")?.id;
        sim.set_faults(Faults {
            server_error_rate: 1.0,
            endpoints: Some(vec!["revoke".into(), "revokeBySerial".into()]),
            ..Faults::default()
        });
        let revokes = || {
            let requests = sim.stats().requests;
            ["revoke", "revokeBySerial"]
                .iter()
                .map(|e| requests.get(*e).copied().unwrap_or(0))
                .sum::<u64>()
        };
        let certs: Api<Certificate> = Api::namespaced(client.clone(), &ns.name);
        certs.delete("stuck", &kube::api::DeleteParams::default()).await?;
        wait_for(
            "a RevokeFailed Warning after a refused revocation",
            Duration::from_secs(60),
            || async {
                let reasons = event_reasons(&client, &ns.name, "stuck").await.ok()?;
                (revokes() >= 1 && reasons.iter().any(|r| r == "RevokeFailed")).then_some(())
            },
        )
        .await
        .with_context(|| operator.log_text())?;
        let held = certs
            .get_opt("stuck")
            .await?
            .context("the Certificate went although its revocation failed")?;
        ensure!(
            held.metadata.deletion_timestamp.is_some()
                && held
                    .metadata
                    .finalizers
                    .as_ref()
                    .is_some_and(|f| f.iter().any(|f| f == "pki-operator.io/revoke-on-delete")),
            "the finalizer was released although the revocation failed: {:?}",
            held.metadata
        );

        // README's escape hatch, as written.
        let target = format!("stuck -n {}", ns.name);
        crate::support::run_readme_command(
            &work_dir("scm-skip-revoke-readme")?,
            "kubectl annotate certificate <name> pki-operator.io/skip-revoke=true",
            &[("<name>", &target)],
        )?;
        wait_gone(&certs, "stuck", "the annotated Certificate to be gone")
            .await
            .with_context(|| operator.log_text())?;
        let order = sim
            .stats()
            .orders
            .into_iter()
            .find(|o| o.ssl_id.to_string() == order_id)
            .context("order gone")?;
        ensure!(
            order.status != "Revoked",
            "the certificate was revoked although skip-revoke was set"
        );
        Ok(())
    })
}
