//! End-to-end tests of AlertConfig: Certificates issued by the `ca` issuer at chosen lifetimes are
//! told at their levels through Events, a real SMTP server (aiosmtpd) and webhook receivers,
//! once per level crossing across a leader failover; renewal clears an alert silently; an SMTP
//! outage is retried with backoff and nothing is lost or doubled; discovered certificates and
//! long-unreachable discovery targets alert too; and the CertMgmt service is kept in sync.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams},
};
use libtest_mimic::Trial;
use pki_operator::crd::v1alpha1::{AlertConfig, Certificate, alert_config::Level};
use pki_operator_e2e::{
    Operator, TestNamespace, metric_value, random_suffix,
    smtp::SmtpServer,
    webhook_receiver::WebhookReceiver,
    wait_for, work_dir,
};

use crate::support::{apply, block_on, ca_issuer, is_ready, plane, trial, wait_certificate};

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
    ]
}

/// Lifetimes of the test's Certificates, by name: 45, 20, 10 and 3 days, and 60 seconds (the
/// one that expires during the test, its issuer gone so it cannot be renewed).
const CERTIFICATES: [(&str, &str, Level); 5] = [
    ("in45", "1080h", Level::INFO),
    ("in20", "480h", Level::WARN),
    ("in10", "240h", Level::HIGH),
    ("in3", "72h", Level::ERROR),
    ("expiring", "60s", Level::ERROR),
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

async fn alert_status(api: &Api<AlertConfig>, name: &str) -> Option<pki_operator::crd::v1alpha1::AlertConfigStatus> {
    api.get_opt(name).await.ok()??.status
}

/// Five Certificates at INFO, WARN, HIGH, ERROR and (expired) ERROR: status counts and lists
/// them, each gets its Event and metric series, the SMTP server receives exactly one email per
/// Certificate (recipients, subject and body checked) and each webhook one payload per
/// Certificate; the leader is killed and the standby takes over without resending; a renewal
/// clears its alert without a notification.
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
        let mut a = Operator::start(plane(), &dir, "replica-a", &operator_args(&ns.name, &lease, "replica-a"))?;
        a.wait_ready(Duration::from_secs(60)).await?;
        let mut b = Operator::start(plane(), &dir, "replica-b", &operator_args(&ns.name, &lease, "replica-b"))?;

        for (name, duration, _) in CERTIFICATES {
            let issuer = if name == "expiring" { "doomed" } else { "local" };
            apply(&ns.name, &certificate(name, issuer, duration))?;
        }
        let certificates: Api<Certificate> = Api::namespaced(client.clone(), &ns.name);
        for (name, _, _) in CERTIFICATES {
            wait_certificate(&client, &ns.name, name, "Ready", Duration::from_secs(60), is_ready)
                .await
                .with_context(|| a.log_text())?;
        }
        // The 60-second certificate cannot be renewed: it expires during the test.
        plane().kubectl_ok(&["delete", "issuer", "-n", &ns.name, "doomed"], None)?;

        let config_name = format!("{}-alerts", ns.name);
        apply(&ns.name, &alert_config(&config_name, &ns.name, smtp.port(), ""))?;
        let configs: Api<AlertConfig> = Api::all(client.clone());
        let status = wait_for("INFO 1, WARN 1, HIGH 1, ERROR 2", Duration::from_secs(60), || async {
            alert_status(&configs, &config_name).await.filter(|s| {
                s.counts
                    .as_ref()
                    .is_some_and(|c| (c.info, c.warn, c.high, c.error) == (1, 1, 1, 2))
            })
        })
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
        let emails = wait_for("5 emails", Duration::from_secs(60), || async {
            smtp.messages().ok().filter(|m| m.len() >= CERTIFICATES.len())
        })
        .await
        .with_context(|| a.log_text())?;
        ensure!(emails.len() == CERTIFICATES.len(), "{} emails: {emails:#?}", emails.len());
        for (name, _, level) in CERTIFICATES {
            let cert = certificates.get(name).await?;
            let serial = cert.status.as_ref().and_then(|s| s.serial_number.clone()).unwrap_or_default();
            let mail = emails
                .iter()
                .find(|m| m.subject.contains(&format!("{}/{name} ", ns.name)))
                .with_context(|| format!("no email about {name}: {emails:#?}"))?;
            ensure!(mail.subject.contains(&format!("{level:?}")), "{}", mail.subject);
            for recipient in ["ops@alerts.example.com", "security@alerts.example.com"] {
                ensure!(mail.recipients.iter().any(|r| r == recipient), "{name}: {:?}", mail.recipients);
            }
            for needle in [ns.name.as_str(), name, serial.as_str(), "Issuer", "kubectl"] {
                ensure!(mail.text.contains(needle), "{name}: text lacks {needle:?}: {}", mail.text);
                ensure!(mail.html.contains(needle), "{name}: html lacks {needle:?}");
            }
            let reasons = crate::support::event_reasons(&client, &ns.name, name).await?;
            ensure!(
                reasons.iter().any(|r| r == "CertificateExpiring"),
                "{name}: Events {reasons:?}"
            );
        }
        // One Slack message and one generic payload per Certificate, the token on the generic.
        let requests = wait_for("10 webhook calls", Duration::from_secs(30), || async {
            let r = hooks.requests();
            (r.len() >= 2 * CERTIFICATES.len()).then_some(r)
        })
        .await?;
        let slack: Vec<_> = requests.iter().filter(|r| r.path.starts_with("/slack/")).collect();
        let generic: Vec<_> = requests.iter().filter(|r| r.path == "/generic").collect();
        ensure!(slack.len() == CERTIFICATES.len() && generic.len() == CERTIFICATES.len(), "{requests:#?}");
        ensure!(slack.iter().all(|r| r.body["text"].is_string()), "{slack:#?}");
        for r in &generic {
            ensure!(r.authorization.as_deref() == Some("Bearer s3cret-bearer"), "{r:#?}");
            pki_operator_e2e::webhook_receiver::check_generic_payload(&r.body)?;
        }

        // The metric tells each Certificate's level.
        let metrics = wait_for("alert level metric", Duration::from_secs(30), || async {
            a.get("/metrics").await.map(|(_, body)| body).filter(|body| {
                CERTIFICATES.iter().all(|(name, _, _)| body.contains(&format!("name=\"{name}\"")))
            })
        })
        .await?;
        for (name, _, level) in CERTIFICATES {
            let sample = format!(
                "pki_operator_certificate_alert_level{{alert_config=\"{config_name}\",namespace=\"{}\",name=\"{name}\"}}",
                ns.name
            );
            let value = metric_value(&metrics, &sample);
            ensure!(
                value == Some(f64::from(pki_operator::controller::alert_config::level_value(Some(level)))),
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
                .filter(|t| t.0 > before)
        })
        .await
        .with_context(|| b.log_text())?;

        // Renewing into a 90-day certificate clears the WARN alert, without a notification.
        certificates
            .patch(
                "in20",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"duration": "2160h"}})),
            )
            .await?;
        wait_for("the WARN alert to clear", Duration::from_secs(60), || async {
            alert_status(&configs, &config_name)
                .await
                .filter(|s| s.counts.as_ref().is_some_and(|c| c.warn == 0 && c.info == 1))
        })
        .await
        .with_context(|| b.log_text())?;
        let metrics = b.get("/metrics").await.map(|(_, body)| body).unwrap_or_default();
        let sample = format!(
            "pki_operator_certificate_alert_level{{alert_config=\"{config_name}\",namespace=\"{}\",name=\"in20\"}}",
            ns.name
        );
        ensure!(metric_value(&metrics, &sample) == Some(0.0), "{sample} after renewal");

        // The 60-second certificate has expired by now (or soon): still ERROR, told once.
        wait_for("the expired certificate", Duration::from_secs(90), || async {
            alert_status(&configs, &config_name).await.filter(|s| {
                s.active_alerts.iter().any(|alert| {
                    alert.subject.ends_with("/expiring") && alert.level == Level::ERROR && alert.remaining_days < Some(0)
                })
            })
        })
        .await?;
        let emails = smtp.messages()?;
        ensure!(emails.len() == CERTIFICATES.len(), "after failover and renewal: {emails:#?}");
        let requests = hooks.requests();
        ensure!(requests.len() == 2 * CERTIFICATES.len(), "after failover and renewal: {requests:#?}");
        configs.delete(&config_name, &DeleteParams::default()).await?;
        b.kill();
        Ok(())
    })
}

/// SMTP down: the email channel's failures show in status and `Ready=False DeliveryFailed`, its
/// attempts back off (10 s, 20 s, 40 s: at most 3 failures in 35 s, asserted), Events still go
/// out; once SMTP is back the owed email is delivered exactly once.
fn an_smtp_outage_is_retried_with_backoff_and_nothing_is_doubled() -> Result<()> {
    block_on(async {
        let dir = work_dir("alerting-outage")?;
        let client = plane().client().await?;
        let ns = TestNamespace::create(&client, "alerts-outage").await?;
        let mut smtp = SmtpServer::start(&dir).await?;
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
        let operator = Operator::start(
            plane(),
            &dir,
            "operator",
            &["--namespace", &ns.name, "--cluster-resource-namespace", &ns.name],
        )?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        apply(&ns.name, &certificate("in20", "local", "480h"))?;
        wait_certificate(&client, &ns.name, "in20", "Ready", Duration::from_secs(60), is_ready)
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
            ready.as_ref().is_some_and(|c| c.status == "False" && c.reason == "DeliveryFailed" && c.message.contains("email")),
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
        ensure!((2..=4).contains(&attempts), "{attempts} failed attempts in ~35 s");

        smtp.start_again().await?;
        wait_for("the owed email", Duration::from_secs(90), || async {
            smtp.messages().ok().filter(|m| !m.is_empty())
        })
        .await
        .with_context(|| operator.log_text())?;
        let recovered = wait_for("Ready=True", Duration::from_secs(30), || async {
            alert_status(&configs, &config_name).await.filter(|s| {
                s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .await?;
        let email = recovered.channels.iter().find(|c| c.channel == "email").cloned();
        ensure!(
            email.as_ref().is_some_and(|c| c.delivered == 1 && c.pending == 0 && c.consecutive_failures == 0),
            "{email:#?}"
        );
        ensure!(smtp.messages()?.len() == 1, "{:#?}", smtp.messages()?);
        ensure!(hooks.requests().len() == 2, "{:#?}", hooks.requests());
        let reasons = crate::support::event_reasons(&client, &ns.name, "in20").await?;
        ensure!(
            reasons.iter().filter(|r| *r == "CertificateExpiring").count() == 1,
            "Events {reasons:?}"
        );
        configs.delete(&config_name, &DeleteParams::default()).await?;
        Ok(())
    })
}
