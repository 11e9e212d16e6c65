//! End-to-end tests of AlertConfig: Certificates issued by the `ca` issuer at chosen lifetimes are
//! told at their levels through Events, a real SMTP server (aiosmtpd) and webhook receivers,
//! once per level crossing across a leader failover; renewal clears an alert silently; an SMTP
//! outage is retried with backoff and nothing is lost or doubled; discovered certificates and
//! long-unreachable discovery targets alert too; and the CertMgmt service is kept in sync.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use libtest_mimic::Trial;
use pki_operator::crd::v1alpha1::{AlertConfig, Certificate, alert_config::Level};
use pki_operator_e2e::{
    Operator, TestNamespace, metric_value, random_suffix, smtp::SmtpServer, wait_for,
    webhook_receiver::WebhookReceiver, work_dir,
};

use crate::support::{apply, block_on, ca_issuer, events_of, is_ready, plane, trial, wait_certificate};

/// This area's trials: a test function not listed here is dead code, which fails the build.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "alert_levels_are_told_once_per_crossing_across_failover",
            alert_levels_are_told_once_per_crossing_across_failover,
        ),
        trial(
            "an_smtp_outage_is_retried_with_backoff_and_nothing_is_doubled",
            an_smtp_outage_is_retried_with_backoff_and_nothing_is_doubled,
        ),
        trial(
            "discovered_certificates_and_unreachable_targets_alert",
            discovered_certificates_and_unreachable_targets_alert,
        ),
        trial(
            "certmgmt_levels_lists_and_generated_alerts_are_kept_in_sync",
            certmgmt_levels_lists_and_generated_alerts_are_kept_in_sync,
        ),
    ]
}

/// Lifetimes of the test's Certificates, by name, with their level when issued: 45, 20, 10 and 3
/// days; 60 seconds (the one that expires during the test, its issuer gone so it cannot be
/// renewed); and 7 days and 90 seconds, which crosses from HIGH to ERROR during the test.
const CERTIFICATES: [(&str, &str, Level); 6] = [
    ("in45", "1080h", Level::INFO),
    ("in20", "480h", Level::WARN),
    ("in10", "240h", Level::HIGH),
    ("in3", "72h", Level::ERROR),
    ("expiring", "60s", Level::ERROR),
    ("crossing", "168h1m30s", Level::HIGH),
];

fn certificate(name: &str, issuer: &str, duration: &str) -> String {
    format!(
        "apiVersion: pki-operator.io/v1alpha1\nkind: Certificate\nmetadata: {{name: {name}}}\nspec:\n  secretName: {name}-tls\n  issuerRef: {{name: {issuer}}}\n  dnsNames: [{name}.alerts.example.com]\n  duration: {duration}\n  renewBefore: 30s\n"
    )
}

/// A Secret with string data.
fn secret(namespace: &str, name: &str, data: &serde_json::Value) -> Result<()> {
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data,
    });
    apply(namespace, &serde_json::to_string(&secret)?)
}

/// The AlertConfig of a test: default levels, Events, email to two recipients, Slack and generic
/// webhooks (the generic one with a bearer token).
fn alert_config(name: &str, namespace: &str, smtp_port: u16, extra: &str) -> String {
    format!(
        "apiVersion: pki-operator.io/v1alpha1\nkind: AlertConfig\nmetadata: {{name: {name}}}\nspec:\n  scope: {{namespaces: [{namespace}]}}\n  repeatInterval: 24h\n  channels:\n    email:\n      smtpHost: 127.0.0.1\n      smtpPort: {smtp_port}\n      security: None\n      from: pki-operator@alerts.example.com\n      to: [ops@alerts.example.com, security@alerts.example.com]\n    webhooks:\n    - format: Slack\n      urlSecretRef: {{name: hooks, namespace: {namespace}, key: slack}}\n    - format: Generic\n      urlSecretRef: {{name: hooks, namespace: {namespace}, key: generic}}\n      bearerTokenSecretRef: {{name: hooks, namespace: {namespace}, key: token}}\n{extra}"
    )
}

/// The generic payload the operator sends for `cert` at the level and time the received `body`
/// names: [`generic_payload`](pki_operator::alerting::message::generic_payload) of the
/// notification built from the Certificate as the controller builds it.
fn expected_generic(config: &str, cert: &Certificate, body: &serde_json::Value) -> Result<serde_json::Value> {
    use pki_operator::alerting::{AlertSubject, Notification, message::generic_payload};
    let status = cert.status.clone().unwrap_or_default();
    let namespace = cert.metadata.namespace.clone().unwrap_or_default();
    let level = serde_json::from_value::<Level>(body["level"].clone())?;
    let notification = Notification {
        alert_config: config.to_owned(),
        level,
        subject: AlertSubject::Certificate {
            namespace: namespace.clone(),
            name: cert.metadata.name.clone().unwrap_or_default(),
            issuer: format!("Issuer {namespace}/{}", cert.spec.issuer_ref.name),
            secret_name: cert.spec.secret_name.clone(),
        },
        common_name: cert.spec.common_name.clone(),
        dns_names: cert.spec.dns_names.clone(),
        serial: status.serial_number.clone(),
        not_after: status.not_after.map(|t| t.0),
        // Days left depend on when it was sent; the received value is checked against notAfter.
        days_left: body["daysLeft"].as_i64(),
        repeat: false,
    };
    let sent_days = body["daysLeft"].as_i64().context("daysLeft")?;
    let not_after = notification.not_after.context("notAfter")?;
    let left_now = pki_operator::alerting::levels::days_left(not_after, jiff::Timestamp::now());
    ensure!(
        (left_now..=left_now + 1).contains(&sent_days),
        "daysLeft {sent_days}, {left_now} now"
    );
    Ok(generic_payload(&notification))
}

/// An operator serving `namespace` (and keeping its alert records there), started and ready.
async fn serving_operator(dir: &std::path::Path, name: &str, namespace: &str) -> Result<Operator> {
    let operator = Operator::start(
        plane(),
        dir,
        name,
        &[
            "--namespace",
            namespace,
            "--cluster-resource-namespace",
            namespace,
        ],
    )?;
    operator.wait_ready(Duration::from_secs(60)).await?;
    Ok(operator)
}

fn operator_args<'a>(namespace: &'a str, lease: &'a str, id: &'a str) -> Vec<&'a str> {
    vec![
        "--namespace",
        namespace,
        "--cluster-resource-namespace",
        namespace,
        "--leader-election=true",
        "--leader-election-namespace",
        namespace,
        "--leader-election-lease",
        lease,
        "--lease-duration",
        "10",
        "--identity",
        id,
    ]
}

async fn alert_status(
    api: &Api<AlertConfig>,
    name: &str,
) -> Option<pki_operator::crd::v1alpha1::AlertConfigStatus> {
    api.get_opt(name).await.ok()??.status
}

/// Certificates at INFO, WARN, HIGH, ERROR and (expired) ERROR, and one crossing from HIGH to
/// ERROR during the test: status counts and lists them, each gets one Event per crossing and its
/// metric series, the SMTP server receives exactly one email per Certificate and crossing
/// (recipients, subject and body checked) and each webhook one payload; the leader is killed and
/// the standby takes over without resending; a renewal clears its alert without a
/// notification; the crossing is told when it happens.
#[allow(clippy::too_many_lines, reason = "one scenario, told in order")]
fn alert_levels_are_told_once_per_crossing_across_failover() -> Result<()> {
    block_on(async {
        let dir = work_dir("alerting")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "alerts").await?;
        let smtp = SmtpServer::start(&dir).await?;
        let hooks = WebhookReceiver::start().await?;
        secret(
            &ns.name,
            "hooks",
            &serde_json::json!({
                "slack": format!("{}/slack/T000/B000/XXXX", hooks.url()),
                "generic": format!("{}/generic", hooks.url()),
                "token": "s3cret-bearer",
            }),
        )?;
        ca_issuer(&ns.name, "local")?;
        ca_issuer(&ns.name, "doomed")?;
        let lease = format!("alerts-{}", random_suffix());
        let mut a = Operator::start(
            plane(),
            &dir,
            "replica-a",
            &operator_args(&ns.name, &lease, "replica-a"),
        )?;
        a.wait_ready(Duration::from_secs(60)).await?;
        let mut b = Operator::start(
            plane(),
            &dir,
            "replica-b",
            &operator_args(&ns.name, &lease, "replica-b"),
        )?;

        for (name, duration, _) in CERTIFICATES {
            let issuer = if name == "expiring" { "doomed" } else { "local" };
            apply(&ns.name, &certificate(name, issuer, duration))?;
        }
        let certificates: Api<Certificate> = Api::namespaced(client.clone(), &ns.name);
        for (name, _, _) in CERTIFICATES {
            wait_certificate(
                &client,
                &ns.name,
                name,
                "Ready",
                Duration::from_secs(60),
                is_ready,
            )
            .await
            .with_context(|| a.log_text())?;
        }
        // The 60-second certificate cannot be renewed: it expires during the test.
        plane().kubectl_ok(&["delete", "issuer", "-n", &ns.name, "doomed"], None)?;

        let config_name = format!("{}-alerts", ns.name);
        apply(&ns.name, &alert_config(&config_name, &ns.name, smtp.port(), ""))?;
        let configs: Api<AlertConfig> = Api::all(client.clone());
        let status = wait_for(
            "INFO 1, WARN 1, HIGH 2, ERROR 2",
            Duration::from_secs(60),
            || async {
                alert_status(&configs, &config_name).await.filter(|s| {
                    s.counts
                        .as_ref()
                        .is_some_and(|c| (c.info, c.warn, c.high, c.error) == (1, 1, 2, 2))
                })
            },
        )
        .await
        .with_context(|| a.log_text())?;
        for (name, _, level) in CERTIFICATES {
            let subject = format!("Certificate {}/{name}", ns.name);
            let listed = status.active_alerts.iter().find(|alert| alert.subject == subject);
            ensure!(
                listed.is_some_and(|alert| alert.level == level),
                "{subject} is not listed at {level:?}: {:#?}",
                status.active_alerts
            );
        }

        // Exactly one email per Certificate, to both recipients, saying what and what to do.
        let emails = smtp
            .wait_for_messages(CERTIFICATES.len(), Duration::from_secs(60))
            .await
            .with_context(|| a.log_text())?;
        ensure!(
            emails.len() == CERTIFICATES.len(),
            "{} emails: {emails:#?}",
            emails.len()
        );
        for (name, _, level) in CERTIFICATES {
            let cert = certificates.get(name).await?;
            let serial = cert
                .status
                .as_ref()
                .and_then(|s| s.serial_number.clone())
                .unwrap_or_default();
            let mail = emails
                .iter()
                .find(|m| m.subject.contains(&format!("{}/{name} ", ns.name)))
                .with_context(|| format!("no email about {name}: {emails:#?}"))?;
            ensure!(mail.subject.contains(&format!("{level:?}")), "{}", mail.subject);
            for recipient in ["ops@alerts.example.com", "security@alerts.example.com"] {
                ensure!(
                    mail.envelope_to.iter().any(|r| r == recipient),
                    "{name}: {:?}",
                    mail.envelope_to
                );
                ensure!(mail.to.contains(recipient), "{name}: To: {}", mail.to);
            }
            let not_after = cert
                .status
                .as_ref()
                .and_then(|s| s.not_after.as_ref())
                .context("notAfter")?
                .0;
            let (text, html) = (
                mail.text.clone().unwrap_or_default(),
                mail.html.clone().unwrap_or_default(),
            );
            let date = not_after.strftime("%Y-%m-%d").to_string();
            for needle in [
                ns.name.as_str(),
                name,
                serial.as_str(),
                "Issuer",
                "kubectl",
                date.as_str(),
            ] {
                ensure!(text.contains(needle), "{name}: text lacks {needle:?}: {text}");
                ensure!(html.contains(needle), "{name}: html lacks {needle:?}");
            }
            // One Event per crossing: Normal at INFO, Warning from WARN up.
            let events = events_of(&client, &ns.name, name).await?;
            let told: Vec<_> = events
                .iter()
                .filter(|(reason, _)| reason == "CertificateExpiring")
                .collect();
            let type_ = if level == Level::INFO { "Normal" } else { "Warning" };
            ensure!(told.len() == 1 && told[0].1 == type_, "{name}: Events {events:?}");
        }
        // One Slack message and one generic payload per Certificate, the token on the generic
        // one; the generic payload is exactly the documented rendering of the alert (whose
        // conformance to docs/alert-webhook.schema.json the unit tests check).
        let requests = hooks
            .wait_for_requests(2 * CERTIFICATES.len(), Duration::from_secs(30))
            .await?;
        let slack: Vec<_> = requests.iter().filter(|r| r.path.contains("/slack/")).collect();
        let generic: Vec<_> = requests.iter().filter(|r| r.path.ends_with("/generic")).collect();
        ensure!(
            slack.len() == CERTIFICATES.len() && generic.len() == CERTIFICATES.len(),
            "{requests:#?}"
        );
        for r in &slack {
            let text = r.json()["text"].as_str().unwrap_or_default().to_owned();
            ensure!(
                text.contains(&ns.name) && text.contains("expire"),
                "Slack text {text:?}"
            );
        }
        for r in &generic {
            ensure!(
                r.header("authorization") == Some("Bearer s3cret-bearer"),
                "{r:#?}"
            );
            let body = r.json();
            let name = body["subject"]["name"].as_str().unwrap_or_default().to_owned();
            let cert = certificates.get(&name).await?;
            let expected = expected_generic(&config_name, &cert, &body)?;
            ensure!(
                body == expected,
                "generic payload {body:#} differs from {expected:#}"
            );
        }

        // The metric tells each Certificate's level.
        let metrics = wait_for("alert level metric", Duration::from_secs(30), || async {
            a.get("/metrics").await.map(|(_, body)| body).filter(|body| {
                CERTIFICATES
                    .iter()
                    .all(|(name, _, _)| body.contains(&format!("name=\"{name}\"")))
            })
        })
        .await?;
        for (name, _, level) in CERTIFICATES {
            let sample = format!(
                "pki_operator_certificate_alert_level{{alert_config=\"{config_name}\",name=\"{name}\",namespace=\"{}\"}}",
                ns.name
            );
            let value = metric_value(&metrics, &sample);
            ensure!(
                value
                    == Some(f64::from(pki_operator::controller::alert_config::level_value(
                        Some(level)
                    ))),
                "{sample} = {value:?}"
            );
        }

        // The leader dies; the standby takes over, evaluates again and sends nothing twice.
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
        let before = jiff::Timestamp::now();
        a.kill();
        wait_for("replica-b to lead", Duration::from_secs(40), || async {
            leases
                .get_opt(&lease)
                .await
                .ok()
                .flatten()?
                .spec?
                .holder_identity
                .filter(|h| h == "replica-b")
        })
        .await?;
        b.wait_ready(Duration::from_secs(30)).await?;
        wait_for("an evaluation by replica-b", Duration::from_secs(30), || async {
            alert_status(&configs, &config_name)
                .await
                .and_then(|s| s.last_evaluation_time)
                // Status times are whole seconds.
                .filter(|t| t.0.as_second() >= before.as_second())
        })
        .await
        .with_context(|| b.log_text())?;

        // Renewing (the manual renew annotation) into a 90-day certificate clears the WARN
        // alert, without a notification.
        certificates
            .patch(
                "in20",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({
                    "metadata": {"annotations": {"pki-operator.io/renew": jiff::Timestamp::now().as_second().to_string()}},
                    "spec": {"duration": "2160h"},
                })),
            )
            .await?;
        wait_certificate(
            &client,
            &ns.name,
            "in20",
            "revision 2",
            Duration::from_secs(60),
            |c| is_ready(c) && c.status.as_ref().and_then(|s| s.revision) == Some(2),
        )
        .await
        .with_context(|| b.log_text())?;
        wait_for("the WARN alert to clear", Duration::from_secs(60), || async {
            alert_status(&configs, &config_name)
                .await
                .filter(|s| s.counts.as_ref().is_some_and(|c| c.warn == 0 && c.info == 1))
        })
        .await
        .with_context(|| b.log_text())?;
        let metrics = b.get("/metrics").await.map(|(_, body)| body).unwrap_or_default();
        let sample = format!(
            "pki_operator_certificate_alert_level{{alert_config=\"{config_name}\",name=\"in20\",namespace=\"{}\"}}",
            ns.name
        );
        ensure!(
            metric_value(&metrics, &sample) == Some(0.0),
            "{sample} after renewal"
        );

        // The 60-second certificate has expired by now (or soon): still ERROR, told once.
        let expired = wait_for("the expired certificate", Duration::from_secs(90), || async {
            alert_status(&configs, &config_name).await.filter(|s| {
                s.active_alerts.iter().any(|alert| {
                    alert.subject.ends_with("/expiring")
                        && alert.level == Level::ERROR
                        && alert.remaining_days < Some(0)
                })
            })
        })
        .await;
        if expired.is_err() {
            let last = alert_status(&configs, &config_name).await;
            let cert = certificates.get("expiring").await?.status;
            expired.with_context(|| format!("{last:#?}\n{cert:#?}\n{}", b.log_text()))?;
        }
        // The crossing Certificate reaches ERROR 7 days before its end: the controller wakes at
        // that moment (no poll), and tells it once more, at ERROR.
        let crossing = certificates.get("crossing").await?;
        let threshold = crossing
            .status
            .as_ref()
            .and_then(|s| s.not_after.as_ref())
            .context("notAfter")?
            .0
            .checked_sub(jiff::SignedDuration::from_hours(7 * 24))?;
        let crossed = wait_for("the HIGH to ERROR crossing", Duration::from_secs(120), || async {
            alert_status(&configs, &config_name).await.and_then(|s| {
                s.active_alerts
                    .into_iter()
                    .find(|a| a.subject.ends_with("/crossing") && a.level == Level::ERROR)
            })
        })
        .await
        .with_context(|| b.log_text())?;
        let late = crossed.since.0.duration_since(threshold);
        ensure!(
            late >= jiff::SignedDuration::ZERO && late < jiff::SignedDuration::from_secs(5),
            "told {late:?} after the threshold"
        );
        let emails = smtp
            .wait_for_messages(CERTIFICATES.len() + 1, Duration::from_secs(30))
            .await?;
        let about_crossing: Vec<_> = emails
            .iter()
            .filter(|m| m.subject.contains("/crossing "))
            .collect();
        ensure!(
            about_crossing.len() == 2 && about_crossing.iter().any(|m| m.subject.contains("ERROR")),
            "{about_crossing:#?}"
        );
        // Nothing else was sent twice: not by the failover, the renewal or the expiry.
        ensure!(
            emails.len() == CERTIFICATES.len() + 1,
            "after failover, renewal, expiry and crossing: {emails:#?}"
        );
        let requests = hooks
            .wait_for_requests(2 * (CERTIFICATES.len() + 1), Duration::from_secs(30))
            .await?;
        ensure!(
            requests.len() == 2 * (CERTIFICATES.len() + 1),
            "after failover, renewal, expiry and crossing: {requests:#?}"
        );
        let events = events_of(&client, &ns.name, "crossing").await?;
        ensure!(
            events
                .iter()
                .filter(|(reason, _)| reason == "CertificateExpiring")
                .count()
                == 2,
            "crossing: Events {events:?}"
        );
        configs.delete(&config_name, &DeleteParams::default()).await?;
        b.kill();
        Ok(())
    })
}

/// SMTP down: the email channel's failures show in status and `Ready=False DeliveryFailed`, its
/// attempts back off (10 s, 20 s, 40 s: at most 3 failures in 35 s, asserted), Events still go
/// out; once SMTP is back the owed email is delivered exactly once, and a restarted operator
/// sends nothing again.
fn an_smtp_outage_is_retried_with_backoff_and_nothing_is_doubled() -> Result<()> {
    block_on(async {
        let dir = work_dir("alerting-outage")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "alerts-outage").await?;
        let smtp = SmtpServer::start(&dir).await?;
        smtp.stop();
        let hooks = WebhookReceiver::start().await?;
        secret(
            &ns.name,
            "hooks",
            &serde_json::json!({
                "slack": format!("{}/slack/T/B/X", hooks.url()),
                "generic": format!("{}/generic", hooks.url()),
                "token": "t",
            }),
        )?;
        ca_issuer(&ns.name, "local")?;
        let operator = serving_operator(&dir, "operator", &ns.name).await?;
        apply(&ns.name, &certificate("in20", "local", "480h"))?;
        wait_certificate(
            &client,
            &ns.name,
            "in20",
            "Ready",
            Duration::from_secs(60),
            is_ready,
        )
        .await
        .with_context(|| operator.log_text())?;
        let config_name = format!("{}-alerts", ns.name);
        apply(&ns.name, &alert_config(&config_name, &ns.name, smtp.port(), ""))?;
        let configs: Api<AlertConfig> = Api::all(client.clone());
        let failing = wait_for("email delivery to fail", Duration::from_secs(60), || async {
            alert_status(&configs, &config_name).await.filter(|s| {
                s.channels
                    .iter()
                    .any(|c| c.channel == "email" && c.consecutive_failures >= 1 && c.pending == 1)
            })
        })
        .await
        .with_context(|| operator.log_text())?;
        let ready = failing.conditions.iter().find(|c| c.type_ == "Ready").cloned();
        ensure!(
            ready.as_ref().is_some_and(|c| c.status == "False"
                && c.reason == "DeliveryFailed"
                && c.message.contains("email")),
            "{ready:#?}"
        );
        let started = std::time::Instant::now();
        // The other channels were not held back by the failing one.
        ensure!(hooks.requests().len() == 2, "{:#?}", hooks.requests());
        // Backoff: 10 s, then 20 s, then 40 s between attempts. The window is the measurement
        // (attempts per time), so it is waited out rather than awaited as a condition.
        tokio::time::sleep(Duration::from_secs(35).saturating_sub(started.elapsed())).await;
        let attempts = alert_status(&configs, &config_name)
            .await
            .and_then(|s| s.channels.into_iter().find(|c| c.channel == "email"))
            .map(|c| c.consecutive_failures)
            .unwrap_or_default();
        // A fixed 10 s retry would have made 4 attempts by now.
        ensure!((2..=3).contains(&attempts), "{attempts} failed attempts in ~35 s");

        smtp.start_again().await?;
        smtp.wait_for_messages(1, Duration::from_secs(90))
            .await
            .with_context(|| operator.log_text())?;
        let recovered = wait_for("Ready=True", Duration::from_secs(30), || async {
            alert_status(&configs, &config_name).await.filter(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .await?;
        let email = recovered.channels.iter().find(|c| c.channel == "email").cloned();
        ensure!(
            email
                .as_ref()
                .is_some_and(|c| c.delivered == 1 && c.pending == 0 && c.consecutive_failures == 0),
            "{email:#?}"
        );
        ensure!(smtp.messages()?.len() == 1, "{:#?}", smtp.messages()?);
        ensure!(hooks.requests().len() == 2, "{:#?}", hooks.requests());
        // A restarted operator (a new process, nothing in memory) reads the record and sends
        // nothing again.
        let mut operator = operator;
        operator.kill();
        let restarted_at = jiff::Timestamp::now();
        let operator = serving_operator(&dir, "operator-restarted", &ns.name).await?;
        wait_for(
            "an evaluation after the restart",
            Duration::from_secs(30),
            || async {
                alert_status(&configs, &config_name)
                    .await
                    .and_then(|s| s.last_evaluation_time)
                    // Status times are whole seconds.
                    .filter(|t| t.0.as_second() >= restarted_at.as_second())
            },
        )
        .await
        .with_context(|| operator.log_text())?;
        ensure!(
            smtp.messages()?.len() == 1,
            "after the restart: {:#?}",
            smtp.messages()?
        );
        ensure!(
            hooks.requests().len() == 2,
            "after the restart: {:#?}",
            hooks.requests()
        );
        let reasons = crate::support::event_reasons(&client, &ns.name, "in20").await?;
        ensure!(
            reasons.iter().filter(|r| *r == "CertificateExpiring").count() == 1,
            "Events {reasons:?}"
        );
        configs.delete(&config_name, &DeleteParams::default()).await?;
        Ok(())
    })
}

/// With `spec.certMgmt` the simulator holds the AlertConfig's four levels and its email list
/// (the levels referencing it); a level changed at the service is put back; the alerts the
/// service generates for a reported certificate appear in status (counted once) and as Events;
/// a second AlertConfig for the same service is `Conflict` and changes nothing; deleting the
/// first disables the levels and removes the list.
#[allow(clippy::too_many_lines, reason = "one scenario, told in order")]
fn certmgmt_levels_lists_and_generated_alerts_are_kept_in_sync() -> Result<()> {
    use pki_operator::backend::certmgmt::{AgentCertType, AgentCertificate, CertMgmtClient};
    use pki_operator_e2e::sim::certmgmt::{CertMgmtSimulator, CertMgmtSimulatorConfig};
    block_on(async {
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "alerts-certmgmt").await?;
        let service = CertMgmtSimulator::start(CertMgmtSimulatorConfig::default()).await?;
        let defaults = CertMgmtSimulatorConfig::default();
        secret(
            &ns.name,
            "certmgmt",
            &serde_json::json!({"username": defaults.username, "password": defaults.password}),
        )?;
        let operator = serving_operator(&work_dir("alerting-certmgmt")?, "operator", &ns.name).await?;
        let ca = serde_json::to_string(&service.tls_ca_pem())?;
        let sync = |name: &str| {
            format!(
                "apiVersion: pki-operator.io/v1alpha1\nkind: AlertConfig\nmetadata: {{name: {name}}}\nspec:\n  scope: {{namespaces: [{ns}]}}\n  levels:\n  - {{level: INFO, remainingDays: 90}}\n  - {{level: WARN, remainingDays: 30}}\n  - {{level: HIGH, remainingDays: 14}}\n  - {{level: ERROR, remainingDays: 7}}\n  hostUnavailability: {{enabled: true, maxDaysCheckinDelay: 2}}\n  channels:\n    email: {{smtpHost: 127.0.0.1, smtpPort: 2525, security: None, from: pki@example.com, to: [ops@example.com]}}\n  certMgmt:\n    url: '{url}'\n    credentialsSecretRef: {{name: certmgmt, namespace: {ns}}}\n    caBundle: {ca}\n    pollInterval: 10s\n",
                ns = ns.name,
                url = service.base_url(),
            )
        };
        let first = format!("{}-first", ns.name);
        apply(&ns.name, &sync(&first))?;
        let configs: Api<AlertConfig> = Api::all(client.clone());
        let synced = wait_for(
            "levels and list at the service",
            Duration::from_secs(60),
            || async {
                let stats = service.stats();
                let list = stats
                    .email_lists
                    .iter()
                    .find(|l| l.email_list_name == format!("pki-operator-{first}"))?;
                let levels_ok = stats
                    .levels
                    .values()
                    .all(|l| l.enabled && l.email_list_ids == vec![list.email_list_id]);
                (levels_ok && stats.node_config.enabled && stats.node_config.max_days_checkin_delay == 2)
                    .then(|| (stats.clone(), list.clone()))
            },
        )
        .await
        .with_context(|| operator.log_text())?;
        let (stats, list) = synced;
        ensure!(list.to == vec!["ops@example.com".to_owned()], "{list:?}");
        let days: Vec<i64> = stats.levels.values().map(|l| l.remaining_days).collect();
        ensure!(
            days.contains(&90) && days.contains(&30) && days.contains(&14) && days.contains(&7),
            "{days:?}"
        );

        // A certificate ending in 20 days, reported by an agent host: the service alerts on it.
        let reporter = CertMgmtClient::new(
            &service.base_url(),
            &defaults.username,
            pki_operator::pki::credentials::SecretString::new(defaults.password.clone()),
            Some(&service.tls_ca_pem()),
        )?;
        let (host, _) = reporter.onboard_host("agent-1", "kubernetes").await?;
        let now = service.now();
        let certificate = AgentCertificate {
            service_name: "web".into(),
            cert_sn: "0A1B".into(),
            cert_type: AgentCertType::Public,
            cert_issuer: "CN=Some CA".into(),
            cert_subject: "CN=shop.example.com".into(),
            leaf_cert_cn: "shop.example.com".into(),
            leaf_cert_sn: "0A1B".into(),
            cert_cn: "shop.example.com".into(),
            cert_sans: vec!["shop.example.com".into()],
            cert_not_before: now,
            cert_not_after: now.checked_add(jiff::SignedDuration::from_hours(24 * 20))?,
            cert_modified_date: now,
            cert_path: "10.0.0.7:443".into(),
        };
        reporter
            .report_certificates(&host.id, &host.secret_key, &[certificate])
            .await?;
        let generated = service.evaluate_alerts();
        ensure!(!generated.is_empty(), "the simulator generated no alert");
        let status = wait_for("generated alerts in status", Duration::from_secs(60), || async {
            let status = alert_status(&configs, &first).await?;
            status.cert_mgmt.as_ref().filter(|c| {
                c.recent_alerts
                    .iter()
                    .any(|a| a.cn.as_deref() == Some("shop.example.com"))
            })?;
            Some(status)
        })
        .await
        .with_context(|| operator.log_text())?;
        let counted = status
            .cert_mgmt
            .as_ref()
            .and_then(|c| c.alert_counts.clone())
            .unwrap_or_default();
        let total = counted.info + counted.warn + counted.high + counted.error + counted.unavailable_hosts;
        ensure!(
            usize::try_from(total)? == generated.len(),
            "{total} counted, {} generated: {status:#?}",
            generated.len()
        );
        let reasons = crate::support::event_reasons(&client, "default", &first).await?;
        ensure!(reasons.iter().any(|r| r == "CertMgmtAlert"), "Events {reasons:?}");
        // Polled again: nothing counted twice.
        let polled = status.cert_mgmt.as_ref().and_then(|c| c.last_alert_poll.clone());
        wait_for("another poll", Duration::from_secs(40), || async {
            alert_status(&configs, &first)
                .await?
                .cert_mgmt?
                .last_sync_time
                .filter(|t| Some(t) > polled.as_ref())
        })
        .await?;
        let again = alert_status(&configs, &first)
            .await
            .and_then(|s| s.cert_mgmt)
            .and_then(|c| c.alert_counts);
        ensure!(
            again == Some(counted),
            "counts changed on a poll without new alerts: {again:?}"
        );

        // Someone edits WARN at the service: the next poll puts it back and says so.
        reporter
            .put_alert_config(
                pki_operator::backend::certmgmt::AlertLevel::Warn,
                &pki_operator::backend::certmgmt::LevelConfig {
                    enabled: false,
                    email_list_ids: Vec::new(),
                    remaining_days: 45,
                },
            )
            .await?;
        wait_for("WARN put back", Duration::from_secs(40), || async {
            let stats = service.stats();
            stats
                .levels
                .values()
                .any(|l| l.remaining_days == 30 && l.enabled && l.email_list_ids == vec![list.email_list_id])
                .then_some(())
        })
        .await
        .with_context(|| operator.log_text())?;
        let reasons = crate::support::event_reasons(&client, "default", &first).await?;
        ensure!(
            reasons.iter().any(|r| r == "CertMgmtDriftCorrected"),
            "Events {reasons:?}"
        );

        // A second AlertConfig for the same service conflicts and changes nothing there.
        let second = format!("{}-second", ns.name);
        let before = service.stats().requests.get("put_alert_config").copied();
        apply(
            &ns.name,
            &sync(&second).replace("ops@example.com", "other@example.com"),
        )?;
        let conflict = wait_for("Conflict", Duration::from_secs(60), || async {
            alert_status(&configs, &second)
                .await?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.reason == "Conflict")
        })
        .await?;
        ensure!(conflict.message.contains(&first), "{}", conflict.message);
        ensure!(
            !service
                .stats()
                .email_lists
                .iter()
                .any(|l| l.to.contains(&"other@example.com".to_owned())),
            "the conflicting AlertConfig wrote a list"
        );
        configs.delete(&second, &DeleteParams::default()).await?;
        crate::support::wait_gone(&configs, &second, "second AlertConfig").await?;
        let after = service.stats().requests.get("put_alert_config").copied();
        ensure!(before <= after, "request counts went backwards");

        // Deleting the owner disables the levels and removes its list.
        configs.delete(&first, &DeleteParams::default()).await?;
        crate::support::wait_gone(&configs, &first, "first AlertConfig")
            .await
            .with_context(|| operator.log_text())?;
        let stats = service.stats();
        ensure!(stats.levels.values().all(|l| !l.enabled), "{:#?}", stats.levels);
        ensure!(!stats.node_config.enabled, "{:#?}", stats.node_config);
        ensure!(stats.email_lists.is_empty(), "{:#?}", stats.email_lists);
        service.shutdown().await;
        Ok(())
    })
}

/// A DiscoveryTask reads the TLS fleet (one server expiring in 10 days, one expired) and a
/// closed port: with `includeDiscovered` they are HIGH and ERROR alerts; the closed port, once
/// it has been unreachable for longer than `maxDaysCheckinDelay` (its recorded `since` moved two
/// days back, as if the runs of two days had failed), raises a host alert — each told by one
/// Event on the AlertConfig.
fn discovered_certificates_and_unreachable_targets_alert() -> Result<()> {
    use pki_operator::crd::v1alpha1::DiscoveryTask;
    use pki_operator_e2e::tls_fleet::{Presented, TlsFleet};
    block_on(async {
        let dir = work_dir("alerting-discovered")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "alerts-found").await?;
        let fleet = TlsFleet::start(&dir).await?;
        let closed = pki_operator_e2e::free_port()?;
        let operator = serving_operator(&dir, "operator", &ns.name).await?;
        let ports = [
            fleet.server(Presented::ExpiringIn10Days).addr.port(),
            fleet.server(Presented::Expired).addr.port(),
            closed,
        ];
        apply(
            &ns.name,
            &format!(
                "apiVersion: pki-operator.io/v1alpha1\nkind: DiscoveryTask\nmetadata: {{name: sweep}}\nspec:\n  schedule: {{interval: 1h}}\n  cluster:\n    endpoints: {{ranges: [{{cidr: 127.0.0.1/32, ports: [{}, {}, {}]}}], timeout: 3s}}\n",
                ports[0], ports[1], ports[2]
            ),
        )?;
        let tasks: Api<DiscoveryTask> = Api::namespaced(client.clone(), &ns.name);
        let target = format!("127.0.0.1:{closed}");
        wait_for(
            "the closed port listed as unreachable",
            Duration::from_secs(60),
            || async {
                tasks
                    .get_opt("sweep")
                    .await
                    .ok()??
                    .status?
                    .unreachable_targets
                    .into_iter()
                    .find(|t| t.target == target && t.since.is_some())
            },
        )
        .await
        .with_context(|| operator.log_text())?;
        let config_name = format!("{}-found", ns.name);
        apply(
            &ns.name,
            &format!(
                "apiVersion: pki-operator.io/v1alpha1\nkind: AlertConfig\nmetadata: {{name: {config_name}}}\nspec:\n  scope: {{namespaces: [{}], includeDiscovered: true}}\n  hostUnavailability: {{enabled: true, maxDaysCheckinDelay: 1}}\n",
                ns.name
            ),
        )?;
        let configs: Api<AlertConfig> = Api::all(client.clone());
        let status = wait_for("discovered HIGH and ERROR", Duration::from_secs(60), || async {
            alert_status(&configs, &config_name)
                .await
                .filter(|s| s.counts.as_ref().is_some_and(|c| c.high == 1 && c.error == 1))
        })
        .await
        .with_context(|| operator.log_text())?;
        ensure!(
            status.counts.as_ref().is_some_and(|c| c.unavailable_hosts == 0),
            "a target down for minutes is not yet unavailable: {status:#?}"
        );
        let expired = format!("discovered 127.0.0.1:{}", ports[1]);
        ensure!(
            status
                .active_alerts
                .iter()
                .any(|a| a.subject.starts_with(&expired)
                    && a.level == Level::ERROR
                    && a.remaining_days < Some(0)),
            "{:#?}",
            status.active_alerts
        );

        // Two days of failed runs, as the task would have recorded them.
        let mut recorded = tasks.get("sweep").await?.status.unwrap_or_default();
        for t in &mut recorded.unreachable_targets {
            if t.target == target {
                let since = t.since.as_ref().map(|s| s.0).context("since")?;
                t.since = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    since.checked_sub(jiff::SignedDuration::from_hours(48))?,
                ));
            }
        }
        tasks
            .patch_status(
                "sweep",
                &PatchParams::default(),
                &Patch::Merge(
                    serde_json::json!({"status": {"unreachableTargets": recorded.unreachable_targets}}),
                ),
            )
            .await?;
        let status = wait_for("a host alert", Duration::from_secs(60), || async {
            alert_status(&configs, &config_name)
                .await
                .filter(|s| s.counts.as_ref().is_some_and(|c| c.unavailable_hosts == 1))
        })
        .await
        .with_context(|| operator.log_text())?;
        ensure!(
            status
                .active_alerts
                .iter()
                .any(|a| a.subject.starts_with(&format!("host {target}"))),
            "{:#?}",
            status.active_alerts
        );
        let reasons = crate::support::event_reasons(&client, "default", &config_name).await?;
        let count = |reason: &str| reasons.iter().filter(|r| *r == reason).count();
        ensure!(count("HostUnavailable") == 1, "Events {reasons:?}");
        ensure!(
            count("CertificateExpiring") + count("CertificateExpired") == 2,
            "Events {reasons:?}"
        );
        configs.delete(&config_name, &DeleteParams::default()).await?;
        Ok(())
    })
}
