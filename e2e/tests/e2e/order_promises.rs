//! End-to-end tests of the Certificate path's promises: orders and revocations stay with the
//! issuer that placed them, no paid-order loops (short terms, reused keys), no silently
//! orphaned orders, repairs that never turn into new orders, dropped outputs removed, and
//! namespace deletion that never hangs on revoke-on-delete.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, Patch, PatchParams},
};
use libtest_mimic::Trial;
use pki_operator::crd::v1alpha1::Certificate;
use pki_operator_e2e::{
    Operator, TestNamespace,
    sim::scm::{ScmSimulator, ScmSimulatorConfig},
    wait_for, work_dir,
};

use crate::support::{
    SCM_PASSWORD, ScmScene, apply, block_on, ca_issuer, certificate_yaml, condition, event_reasons, is_ready,
    plane, scm_issuer, secret_text, total_orders, trial, wait_certificate, wait_gone,
};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "orders_and_revocations_stay_with_the_issuer_that_placed_them",
            orders_and_revocations_stay_with_the_issuer_that_placed_them,
        ),
        trial(
            "term_shorter_than_renew_before_renews_at_two_thirds_once_per_cycle",
            term_shorter_than_renew_before_renews_at_two_thirds_once_per_cycle,
        ),
        trial(
            "reused_rsa_key_renews_into_a_new_certificate",
            reused_rsa_key_renews_into_a_new_certificate,
        ),
        trial(
            "deleted_pending_key_abandons_the_order_and_revokes_it_once_issued",
            deleted_pending_key_abandons_the_order_and_revokes_it_once_issued,
        ),
        trial(
            "failed_repair_backs_off_instead_of_ordering_again",
            failed_repair_backs_off_instead_of_ordering_again,
        ),
        trial(
            "dropped_output_format_leaves_the_secret",
            dropped_output_format_leaves_the_secret,
        ),
        trial(
            "namespace_deletion_never_hangs_on_revoke_on_delete",
            namespace_deletion_never_hangs_on_revoke_on_delete,
        ),
        trial(
            "a_delivery_whose_status_write_was_lost_is_recorded_from_the_secret",
            a_delivery_whose_status_write_was_lost_is_recorded_from_the_secret,
        ),
    ]
}

fn status_of(cert: &Certificate) -> pki_operator::crd::v1alpha1::certificate::CertificateStatus {
    cert.status.clone().unwrap_or_default()
}

/// The `sslId`s and serials (colon-free, lower case) a simulator issued itself.
fn own_ids_and_serials(sim: &ScmSimulator) -> (Vec<String>, Vec<String>) {
    let stats = sim.stats();
    let ids = stats.orders.iter().map(|o| o.ssl_id.to_string()).collect();
    let serials = stats
        .orders
        .iter()
        .filter_map(|o| o.serial_number.as_deref())
        .map(normalize_serial)
        .collect();
    (ids, serials)
}

fn normalize_serial(serial: &str) -> String {
    serial.replace(':', "").trim_start_matches('0').to_lowercase()
}

/// Calls to `sim` that name an order id or serial the simulator did not issue itself.
fn foreign_references(sim: &ScmSimulator) -> Vec<String> {
    let (ids, serials) = own_ids_and_serials(sim);
    sim.stats()
        .calls
        .into_iter()
        .filter(|call| {
            let Some((_, rest)) = call.split_once("/ssl/v1/") else {
                return false;
            };
            let segments: Vec<&str> = rest.split('/').collect();
            match segments.as_slice() {
                ["revoke", "serial", serial, ..] => !serials.contains(&normalize_serial(serial)),
                [op, id, ..] if ["collect", "renewById", "revoke", "replace"].contains(op) => {
                    !ids.iter().any(|own| own == id)
                }
                [id] if id.chars().all(|c| c.is_ascii_digit()) => !ids.iter().any(|own| own == id),
                _ => false,
            }
        })
        .collect()
}

/// Item 1: a tenant issues from its own Issuer (CA account "tenant"), switches `issuerRef` to
/// the corporate ClusterIssuer (account "corp") and deletes the Certificate with
/// `onDelete: Revoke`. The switch is a new issuance at corp; the superseded certificate is
/// revoked at tenant; corp never hears of an order id or serial it did not issue.
fn orders_and_revocations_stay_with_the_issuer_that_placed_them() -> Result<()> {
    block_on(async {
        let dir = work_dir("tenancy")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "tenancy").await?;
        let tenant = ScmSimulator::start(ScmSimulatorConfig::default()).await?;
        let corp = ScmSimulator::start(ScmSimulatorConfig {
            first_ssl_id: 700_000,
            ..ScmSimulatorConfig::default()
        })
        .await?;
        scm_issuer(&ns.name, "tenant", &tenant, SCM_PASSWORD)?;
        let corp_name = format!("corp-{}", ns.name);
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "corp-credentials"},
            "stringData": {"login": "api-admin", "password": SCM_PASSWORD},
        });
        apply(&ns.name, &serde_json::to_string(&secret)?)?;
        let cluster_issuer = serde_json::json!({
            "apiVersion": "pki-operator.io/v1alpha1", "kind": "ClusterIssuer",
            "metadata": {"name": corp_name},
            "spec": {"scm": {
                "url": corp.base_url(), "customerUri": "cst-sim",
                "auth": {"password": {"secretName": "corp-credentials"}},
                "orgId": 8932, "certType": 5153, "caBundle": corp.tls_ca_pem(), "pollInterval": "1s",
            }},
        });
        apply(&ns.name, &serde_json::to_string(&cluster_issuer)?)?;
        let operator = Operator::start(
            plane(),
            &dir,
            "operator",
            &["--namespace", &ns.name, "--cluster-resource-namespace", &ns.name],
        )?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        let policy = "  revocationPolicy: {onDelete: Revoke, superseded: Revoke}\n";
        apply(&ns.name, &certificate_yaml("victim", "tenant", policy))?;
        let first = wait_certificate(
            &client,
            &ns.name,
            "victim",
            "Ready from tenant",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        let first_order = status_of(&first).order.context("no order")?;
        let recorded = first_order
            .issuer
            .clone()
            .context("the order does not record its issuer")?;
        ensure!(
            recorded.name == "tenant"
                && recorded.namespace.as_deref() == Some(ns.name.as_str())
                && !recorded.uid.is_empty(),
            "recorded issuer {recorded:?}"
        );

        // Switch to the corporate ClusterIssuer: a new issuance there, not a takeover.
        let switched = certificate_yaml("victim", &corp_name, policy).replace(
            &format!("{{name: {corp_name}}}"),
            &format!("{{name: {corp_name}, kind: ClusterIssuer}}"),
        );
        apply(&ns.name, &switched)?;
        let second = wait_certificate(
            &client,
            &ns.name,
            "victim",
            "revision 2 issued by corp",
            Duration::from_secs(90),
            |c| {
                let s = status_of(c);
                s.revision == Some(2)
                    && is_ready(c)
                    && s.order
                        .as_ref()
                        .and_then(|o| o.issuer.as_ref())
                        .is_some_and(|i| i.name == corp_name)
            },
        )
        .await
        .with_context(|| operator.log_text())?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let secret = secrets.get("victim-tls").await?;
        ensure!(
            secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("pki-operator.io/issuer-name"))
                == Some(&corp_name),
            "the Secret does not name the corp issuer"
        );
        ensure!(second.status.and_then(|s| s.serial_number).is_some());
        // The tenant's certificate was superseded and revoked at the tenant's CA.
        wait_for(
            "the superseded tenant certificate to be revoked at tenant",
            Duration::from_secs(30),
            || async {
                tenant
                    .stats()
                    .orders
                    .into_iter()
                    .find(|o| o.ssl_id.to_string() == first_order.id)
                    .filter(|o| o.status == "Revoked")
            },
        )
        .await
        .with_context(|| operator.log_text())?;

        let certs: Api<Certificate> = Api::namespaced(client.clone(), &ns.name);
        certs.delete("victim", &DeleteParams::default()).await?;
        wait_gone(&certs, "victim", "the Certificate to be deleted")
            .await
            .with_context(|| operator.log_text())?;
        let foreign = foreign_references(&corp);
        ensure!(
            foreign.is_empty(),
            "corp received calls for ids/serials it did not issue: {foreign:?}"
        );
        let corp_stats = corp.stats();
        ensure!(
            corp_stats.orders.len() == 1 && corp_stats.orders[0].status == "Revoked",
            "corp's own certificate is revoked on delete, nothing else: {:?}",
            corp_stats.orders
        );
        let foreign = foreign_references(&tenant);
        ensure!(
            foreign.is_empty(),
            "tenant received calls for ids it did not issue: {foreign:?}"
        );
        let _ = Api::<pki_operator::crd::v1alpha1::ClusterIssuer>::all(client.clone())
            .delete(&corp_name, &DeleteParams::default())
            .await;
        Ok(())
    })
}

/// Item 2: SCM issues 90 s although the spec asks for 90 days and `renewBefore: 720h`. The
/// renewal falls at two thirds of the issued 90 s (not at `notBefore`), a Warning says why,
/// and each renewal is exactly one order.
fn term_shorter_than_renew_before_renews_at_two_thirds_once_per_cycle() -> Result<()> {
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start(
            "short-term",
            ScmSimulatorConfig {
                certificate_lifetime: Some(Duration::from_secs(90)),
                ..ScmSimulatorConfig::default()
            },
            SCM_PASSWORD,
        )
        .await?;
        apply(
            &ns.name,
            &certificate_yaml("brief", "sectigo", "  duration: 2160h\n  renewBefore: 720h\n"),
        )?;
        let first = wait_certificate(
            &client,
            &ns.name,
            "brief",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        let check_renewal = |cert: &Certificate| -> Result<()> {
            let s = status_of(cert);
            let not_before = s.not_before.context("notBefore")?.0.as_second();
            let renewal = s.renewal_time.context("renewalTime")?.0.as_second();
            ensure!(
                (55..=65).contains(&(renewal - not_before)),
                "renewal {}s after notBefore, expected two thirds of 90 s",
                renewal - not_before
            );
            Ok(())
        };
        check_renewal(&first)?;
        let (_, _, message) = condition(&first, "Ready").context("Ready")?;
        ensure!(
            message.contains("renewBefore"),
            "Ready does not explain the override: {message}"
        );
        let reasons = event_reasons(&client, &ns.name, "brief").await?;
        ensure!(
            reasons.iter().any(|r| r == "RenewBeforeTooLong"),
            "no RenewBeforeTooLong Warning: {reasons:?}"
        );
        ensure!(
            total_orders(&sim) == 1,
            "orders before the renewal: {:?}",
            sim.stats().orders_per_csr
        );
        let second = wait_certificate(
            &client,
            &ns.name,
            "brief",
            "revision 2",
            Duration::from_secs(120),
            |c| status_of(c).revision == Some(2) && is_ready(c),
        )
        .await
        .with_context(|| operator.log_text())?;
        check_renewal(&second)?;
        ensure!(
            status_of(&second).serial_number != status_of(&first).serial_number,
            "the serial did not change"
        );
        let stats = sim.stats();
        ensure!(
            total_orders(&sim) == 2,
            "one order per renewal, got {:?}",
            stats.orders_per_csr
        );
        let collects = stats.requests.get("collect").copied().unwrap_or(0);
        ensure!(collects <= 10, "{collects} collect calls for two orders");
        Ok(())
    })
}

/// Item 2: RSA with `rotationPolicy: Never` makes a byte-identical CSR at every renewal. The
/// renewal must still be a new order with a new certificate (never the old order resumed and
/// the old certificate delivered again, every second).
fn reused_rsa_key_renews_into_a_new_certificate() -> Result<()> {
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start(
            "reused-key",
            ScmSimulatorConfig {
                certificate_lifetime: Some(Duration::from_secs(60)),
                ..ScmSimulatorConfig::default()
            },
            SCM_PASSWORD,
        )
        .await?;
        apply(
            &ns.name,
            &certificate_yaml(
                "steady",
                "sectigo",
                "  privateKey: {algorithm: RSA, rotationPolicy: Never}\n",
            ),
        )?;
        let first = wait_certificate(
            &client,
            &ns.name,
            "steady",
            "Ready",
            Duration::from_secs(90),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let first_key = secret_text(&secrets.get("steady-tls").await?, "tls.key")?;
        let second = wait_certificate(
            &client,
            &ns.name,
            "steady",
            "revision 2",
            Duration::from_secs(120),
            |c| status_of(c).revision == Some(2) && is_ready(c),
        )
        .await
        .with_context(|| operator.log_text())?;
        ensure!(
            status_of(&second).serial_number != status_of(&first).serial_number,
            "the renewal delivered the old certificate again"
        );
        ensure!(
            secret_text(&secrets.get("steady-tls").await?, "tls.key")? == first_key,
            "rotationPolicy Never must keep the key"
        );
        let stats = sim.stats();
        ensure!(
            total_orders(&sim) == 2,
            "one order per renewal, got {:?}",
            stats.orders_per_csr
        );
        let collects = stats.requests.get("collect").copied().unwrap_or(0);
        ensure!(collects <= 10, "{collects} collect calls for two orders");
        Ok(())
    })
}

/// Item 3: the user deletes the next-key Secret while the order is pending. The order cannot be
/// delivered any more; it is recorded as abandoned, and revoked once the CA issues it.
fn deleted_pending_key_abandons_the_order_and_revokes_it_once_issued() -> Result<()> {
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start(
            "abandoned",
            ScmSimulatorConfig {
                processing_delay: Duration::from_secs(15),
                ..ScmSimulatorConfig::default()
            },
            SCM_PASSWORD,
        )
        .await?;
        apply(&ns.name, &certificate_yaml("orphan", "sectigo", ""))?;
        let pending = wait_certificate(
            &client,
            &ns.name,
            "orphan",
            "a pending order",
            Duration::from_secs(60),
            |c| status_of(c).order.is_some_and(|o| o.state == "Pending"),
        )
        .await
        .with_context(|| operator.log_text())?;
        let first = status_of(&pending).order.context("order")?.id;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        secrets
            .delete("orphan-next-key", &DeleteParams::default())
            .await?;
        let abandoned = wait_certificate(
            &client,
            &ns.name,
            "orphan",
            "the order abandoned",
            Duration::from_secs(60),
            |c| status_of(c).abandoned_orders.iter().any(|o| o.id == first),
        )
        .await
        .with_context(|| operator.log_text())?;
        ensure!(
            status_of(&abandoned).order.is_some_and(|o| o.id != first),
            "a new order should carry the new key"
        );
        // Revocation is tried at once (not issued yet), then once a minute.
        wait_for(
            "the abandoned order to be revoked at the CA",
            Duration::from_secs(180),
            || async {
                sim.stats()
                    .orders
                    .into_iter()
                    .find(|o| o.ssl_id.to_string() == first)
                    .filter(|o| o.status == "Revoked")
            },
        )
        .await
        .with_context(|| operator.log_text())?;
        let done = wait_certificate(
            &client,
            &ns.name,
            "orphan",
            "Ready with no abandoned order left",
            Duration::from_secs(60),
            |c| is_ready(c) && status_of(c).abandoned_orders.is_empty(),
        )
        .await?;
        ensure!(status_of(&done).revision == Some(1));
        let reasons = event_reasons(&client, &ns.name, "orphan").await?;
        ensure!(
            reasons.iter().any(|r| r == "OrderAbandoned"),
            "no OrderAbandoned Warning: {reasons:?}"
        );
        ensure!(total_orders(&sim) == 2, "orders {:?}", sim.stats().orders_per_csr);
        Ok(())
    })
}

/// Item 3: a damaged Secret whose order the CA cannot find is not "repaired" with a new order:
/// the Certificate backs off and says how to order anew; the renew annotation then does.
fn failed_repair_backs_off_instead_of_ordering_again() -> Result<()> {
    block_on(async {
        let ScmScene {
            client,
            ns,
            sim,
            operator,
        } = ScmScene::start("repair-no-order", ScmSimulatorConfig::default(), SCM_PASSWORD).await?;
        apply(&ns.name, &certificate_yaml("fragile", "sectigo", ""))?;
        wait_certificate(
            &client,
            &ns.name,
            "fragile",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        let certs: Api<Certificate> = Api::namespaced(client.clone(), &ns.name);
        // The CA lost the order: its id is now unknown there.
        certs
            .patch_status(
                "fragile",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": {"order": {"id": "999999"}}})),
            )
            .await?;
        let out = plane().kubectl(
            &[
                "patch",
                "secret",
                "fragile-tls",
                "-n",
                &ns.name,
                "--type=merge",
                "-p",
                r#"{"stringData":{"tls.crt":"tampered"}}"#,
            ],
            None,
        )?;
        ensure!(
            out.status.success(),
            "patch failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let failed = wait_certificate(
            &client,
            &ns.name,
            "fragile",
            "RepairFailed",
            Duration::from_secs(60),
            |c| condition(c, "Ready").is_some_and(|(s, reason, _)| s == "False" && reason == "RepairFailed"),
        )
        .await
        .with_context(|| operator.log_text())?;
        ensure!(
            status_of(&failed).failed_issuance_attempts.is_some(),
            "no backoff recorded"
        );
        let (_, _, message) = condition(&failed, "Ready").context("Ready")?;
        ensure!(
            message.contains("pki-operator.io/renew"),
            "message does not say how to order anew: {message}"
        );
        ensure!(
            total_orders(&sim) == 1,
            "a repair placed an order: {:?}",
            sim.stats().orders_per_csr
        );
        // A person asks for a new certificate, with README's command: that is an order.
        let target = format!("fragile -n {}", ns.name);
        crate::support::run_readme_command(
            &work_dir("failed-repair-readme")?,
            "kubectl annotate certificate <name> pki-operator.io/renew=",
            &[("<name>", &target)],
        )?;
        wait_certificate(
            &client,
            &ns.name,
            "fragile",
            "Ready after manual renewal",
            Duration::from_secs(120),
            |c| is_ready(c) && status_of(c).revision == Some(2),
        )
        .await
        .with_context(|| operator.log_text())?;
        ensure!(total_orders(&sim) == 2, "orders {:?}", sim.stats().orders_per_csr);
        Ok(())
    })
}

/// Item 3: removing an output format removes its key from the Secret, without a new
/// certificate.
fn dropped_output_format_leaves_the_secret() -> Result<()> {
    block_on(async {
        let dir = work_dir("dropped-format")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "dropped-format").await?;
        ca_issuer(&ns.name, "local-ca")?;
        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        apply(
            &ns.name,
            &certificate_yaml(
                "formats",
                "local-ca",
                "  additionalOutputFormats: [{type: CombinedPEM}, {type: DER}]\n",
            ),
        )?;
        wait_certificate(
            &client,
            &ns.name,
            "formats",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        // A served manual renewal stays served across output rewrites (else the rewrite would
        // drop the record and the next reconcile would order again).
        Api::<Certificate>::namespaced(client.clone(), &ns.name)
            .patch(
                "formats",
                &PatchParams::default(),
                &Patch::Merge(
                    serde_json::json!({"metadata": {"annotations": {"pki-operator.io/renew": "1"}}}),
                ),
            )
            .await?;
        let ready = wait_certificate(
            &client,
            &ns.name,
            "formats",
            "revision 2 after the manual renewal",
            Duration::from_secs(60),
            |c| is_ready(c) && status_of(c).revision == Some(2),
        )
        .await
        .with_context(|| operator.log_text())?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let secret = secrets.get("formats-tls").await?;
        let has = |s: &Secret, k: &str| s.data.as_ref().is_some_and(|d| d.contains_key(k));
        ensure!(has(&secret, "tls-combined.pem") && has(&secret, "key.der"));
        apply(
            &ns.name,
            &certificate_yaml(
                "formats",
                "local-ca",
                "  additionalOutputFormats: [{type: DER}]\n",
            ),
        )?;
        let after = wait_for(
            "tls-combined.pem to leave the Secret",
            Duration::from_secs(60),
            || async {
                secrets
                    .get_opt("formats-tls")
                    .await
                    .ok()
                    .flatten()
                    .filter(|s| !has(s, "tls-combined.pem"))
            },
        )
        .await
        .with_context(|| operator.log_text())?;
        ensure!(
            has(&after, "key.der") && has(&after, "tls.crt"),
            "other outputs must stay"
        );
        ensure!(
            after
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("pki-operator.io/renew-served"))
                .map(String::as_str)
                == Some("1"),
            "the rewrite dropped the record of the served renewal"
        );
        let cert = Api::<Certificate>::namespaced(client.clone(), &ns.name)
            .get("formats")
            .await?;
        ensure!(
            status_of(&cert).serial_number == status_of(&ready).serial_number
                && status_of(&cert).revision == Some(2),
            "removing a format must not issue a new certificate"
        );
        Ok(())
    })
}

/// Item 7: a namespace holding an Issuer and a Certificate with `onDelete: Revoke` is deleted
/// while the operator is down; the Issuer goes first. When the operator comes back, the
/// finalizer is released (the issuer that could revoke is gone) and the namespace disappears.
fn namespace_deletion_never_hangs_on_revoke_on_delete() -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    block_on(async {
        let dir = work_dir("ns-delete")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "ns-delete").await?;
        ca_issuer(&ns.name, "local-ca")?;
        let mut operator = Operator::start(plane(), &dir, "operator-1", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        apply(
            &ns.name,
            &certificate_yaml("leaving", "local-ca", "  revocationPolicy: {onDelete: Revoke}\n"),
        )?;
        wait_certificate(
            &client,
            &ns.name,
            "leaving",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        operator.kill();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces.delete(&ns.name, &DeleteParams::default()).await?;
        let issuers: Api<pki_operator::crd::v1alpha1::Issuer> = Api::namespaced(client.clone(), &ns.name);
        wait_gone(
            &issuers,
            "local-ca",
            "the namespace controller to delete the Issuer",
        )
        .await?;
        let certs: Api<Certificate> = Api::namespaced(client.clone(), &ns.name);
        ensure!(
            certs.get_opt("leaving").await?.is_some(),
            "the Certificate must still be held by its finalizer"
        );
        let second = Operator::start(plane(), &dir, "operator-2", &["--namespace", &ns.name])?;
        wait_for("the namespace to be gone", Duration::from_secs(90), || async {
            namespaces
                .get_opt(&ns.name)
                .await
                .ok()
                .and_then(|found| found.is_none().then_some(()))
        })
        .await
        .with_context(|| second.log_text())?;
        Ok(())
    })
}

/// The apiserver refuses the Certificate's status writes (a `ValidatingAdmissionPolicy`, as a
/// crash or an outage would lose them) while a paid order the CA issues at once is delivered: the
/// Secret is written, the status write that records the order fails. Once writes go through
/// again, the order is recorded from the Secret (confirmed with the CA): the Certificate names
/// it, so it can be revoked and renewed by id; there was one order, and the next-key Secret is
/// gone.
fn a_delivery_whose_status_write_was_lost_is_recorded_from_the_secret() -> Result<()> {
    block_on(async {
        let dir = work_dir("lost-status")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "lost-status").await?;
        let sim = ScmSimulator::start(ScmSimulatorConfig {
            pending_collects: 0,
            ..ScmSimulatorConfig::default()
        })
        .await?;
        scm_issuer(&ns.name, "sectigo", &sim, SCM_PASSWORD)?;
        apply(&ns.name, &certificate_yaml("window", "sectigo", ""))?;
        let refusal = RefusedStatusWrites::create(&ns.name, "window")?;
        // The policy is in force once the test's own status write is refused.
        let certs: Api<Certificate> = Api::namespaced(client.clone(), &ns.name);
        let probe = serde_json::json!({"status": {"observedGeneration": 0}});
        wait_for(
            "the status-write refusal to take effect",
            Duration::from_secs(60),
            || async {
                certs
                    .patch_status("window", &PatchParams::default(), &Patch::Merge(&probe))
                    .await
                    .is_err()
                    .then_some(())
            },
        )
        .await?;

        let operator = Operator::start(plane(), &dir, "operator", &["--namespace", &ns.name])?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let delivered = wait_for("the Secret to be written", Duration::from_secs(60), || async {
            secrets.get_opt("window-tls").await.ok().flatten()
        })
        .await
        .with_context(|| operator.log_text())?;
        ensure!(
            status_of(&certs.get("window").await?).order.is_none(),
            "the status write was meant to be refused"
        );
        drop(refusal);

        let cert = wait_certificate(
            &client,
            &ns.name,
            "window",
            "Ready with its order recorded",
            Duration::from_secs(120),
            |c| is_ready(c) && status_of(c).order.is_some(),
        )
        .await
        .with_context(|| operator.log_text())?;
        let status = status_of(&cert);
        let order = status.order.clone().context("order")?;
        let (ids, serials) = own_ids_and_serials(&sim);
        ensure!(
            ids == [order.id.clone()] && order.state == "Issued" && order.issuer.is_some(),
            "status order {order:?}, the simulator's orders {ids:?}"
        );
        let secret = secrets.get("window-tls").await?;
        let serial = secret
            .annotations()
            .get("pki-operator.io/serial-number")
            .cloned()
            .context("serial annotation")?;
        ensure!(
            status.serial_number.as_deref().map(normalize_serial) == Some(normalize_serial(&serial))
                && serials.iter().any(|s| *s == normalize_serial(&serial)),
            "status serial {:?}, Secret serial {serial}, simulator serials {serials:?}",
            status.serial_number
        );
        ensure!(
            secret_text(&secret, "tls.crt")? == secret_text(&delivered, "tls.crt")?,
            "the Secret was rewritten with another certificate"
        );
        ensure!(status.revision == Some(1), "revision {:?}", status.revision);
        ensure!(total_orders(&sim) == 1, "orders {:?}", sim.stats().orders_per_csr);
        wait_gone(&secrets, "window-next-key", "the next-key Secret to be deleted")
            .await
            .with_context(|| operator.log_text())?;
        ensure!(
            operator
                .log_text()
                .contains("recorded a delivery whose status write was lost"),
            "no log line for the recorded delivery"
        );
        Ok(())
    })
}

/// A `ValidatingAdmissionPolicy` and its binding refusing every status write of one Certificate;
/// deleted when dropped.
struct RefusedStatusWrites {
    name: String,
}

impl RefusedStatusWrites {
    fn create(namespace: &str, certificate: &str) -> Result<Self> {
        let name = format!("refuse-status-{namespace}");
        let policy = serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["pki-operator.io"], "apiVersions": ["*"],
                    "operations": ["UPDATE"], "resources": ["certificates/status"],
                }]},
                "validations": [{"expression": "false", "message": "the test refuses this status write"}],
            },
        });
        let binding = serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                    "resourceRules": [{
                        "apiGroups": ["pki-operator.io"], "apiVersions": ["*"],
                        "operations": ["UPDATE"], "resources": ["certificates/status"],
                        "resourceNames": [certificate],
                    }],
                },
            },
        });
        apply(namespace, &serde_json::to_string(&policy)?)?;
        apply(namespace, &serde_json::to_string(&binding)?)?;
        Ok(Self { name })
    }
}

impl Drop for RefusedStatusWrites {
    fn drop(&mut self) {
        for kind in ["validatingadmissionpolicybinding", "validatingadmissionpolicy"] {
            let _ = plane().kubectl(&["delete", kind, &self.name, "--ignore-not-found"], None);
        }
    }
}
