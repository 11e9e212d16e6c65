//! What an alert says: the subject line, plain-text and HTML email bodies, and the Slack, Teams
//! and generic webhook payloads of a [`Notification`]. Pure functions: no I/O, no clock (every
//! date shown is one the notification carries), so the same notification always renders the same.
//!
//! The generic webhook payload is a documented contract: `docs/alert-webhook.schema.json` is its
//! JSON Schema, and a test checks every subject kind against it.

use std::fmt::Write as _;

use jiff::{Timestamp, tz::TimeZone};
use serde_json::{Value, json};

use super::{AlertSubject, Notification};
use crate::crd::v1alpha1::alert_config::Level;

/// Version of the generic webhook payload (`version` field); bumped on an incompatible change.
pub const GENERIC_PAYLOAD_VERSION: &str = "v1";

/// The Certificate annotation that orders a renewal now. Spelled out here rather than imported
/// so alerting stays independent of the controllers; a test keeps it equal to the controller's
/// `RENEW_ANNOTATION`.
const RENEW_ANNOTATION: &str = "pki-operator.io/renew";

/// At most this many DNS names are listed; a certificate with hundreds would drown the message.
const MAX_DNS_NAMES_SHOWN: usize = 10;

/// The one-line summary: the email subject, the Slack fallback text, the Teams title and the
/// generic payload's `summary`, e.g. `[pki-operator WARN] Certificate payments/api expires in 20
/// days (2026-12-19)`.
pub fn email_subject(n: &Notification) -> String {
    let mut subject = format!("[pki-operator {}] {}", level_name(n.level), headline(n));
    if n.repeat {
        subject.push_str(" (reminder)");
    }
    // A common name or location is anyone's text; a line break in it must not start a new
    // header line or break a one-line summary.
    subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The plain-text email body: the headline, the facts, and what to do.
pub fn email_text(n: &Notification) -> String {
    let mut text = format!("{}: {}.\n\n", level_name(n.level), headline(n));
    let facts = facts(n);
    let width = facts.iter().map(|(label, _)| label.len()).max().unwrap_or(0) + 1;
    for (label, value) in &facts {
        let _ = writeln!(text, "{:<width$} {value}", format!("{label}:"));
    }
    text.push_str("\nWhat to do:\n");
    for line in advice(n) {
        let _ = writeln!(text, "  {line}");
    }
    let _ = write!(text, "\n-- \n{}\n", footer(n));
    text
}

/// The HTML email body: the same content as [`email_text`], every value HTML-escaped (names and
/// locations come from cluster objects and certificates anyone may have written).
pub fn email_html(n: &Notification) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\
         <body style=\"font-family: sans-serif\">\n",
    );
    let _ = writeln!(
        html,
        "<h2 style=\"color: {}\">{}: {}</h2>",
        level_colour(n.level),
        level_name(n.level),
        escape_html(&headline(n))
    );
    html.push_str("<table cellpadding=\"4\">\n");
    for (label, value) in facts(n) {
        let _ = writeln!(
            html,
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            escape_html(label),
            escape_html(&value)
        );
    }
    html.push_str("</table>\n<h3>What to do</h3>\n");
    for line in advice(n) {
        let _ = writeln!(html, "<p>{}</p>", escape_html(&line));
    }
    let _ = writeln!(
        html,
        "<hr><p style=\"color: #666666\">{}</p>\n</body></html>",
        escape_html(&footer(n))
    );
    html
}

/// A Slack incoming-webhook message: `text` (the summary, also the notification fallback) and
/// one attachment coloured by level whose blocks hold the facts and the advice.
pub fn slack_payload(n: &Notification) -> Value {
    let facts: Vec<Value> = facts(n)
        .into_iter()
        .map(|(label, value)| {
            json!({"type": "mrkdwn", "text": format!("*{}*\n{}", label, escape_slack(&value))})
        })
        .collect();
    // A section holds at most 10 fields (Slack's limit); the rest go into further sections.
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": format!("*{}*", escape_slack(&email_subject(n)))}
    })];
    blocks.extend(
        facts
            .chunks(10)
            .map(|chunk| json!({"type": "section", "fields": chunk})),
    );
    blocks.push(json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": format!("*What to do*\n{}", escape_slack(&advice(n).join("\n")))}
    }));
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": escape_slack(&footer(n))}]
    }));
    json!({
        "text": email_subject(n),
        "attachments": [{"color": level_colour(n.level), "blocks": blocks}]
    })
}

/// A Microsoft Teams message carrying an Adaptive Card (version 1.4), the format both the
/// Workflows "post to a channel when a webhook request is received" trigger and the older Office
/// 365 connector incoming webhooks accept (the legacy `MessageCard` is connector-only).
pub fn teams_payload(n: &Notification) -> Value {
    let facts: Vec<Value> = facts(n)
        .into_iter()
        .map(|(label, value)| json!({"title": label, "value": value}))
        .collect();
    let card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": [
            {
                "type": "TextBlock",
                "text": email_subject(n),
                "weight": "Bolder",
                "size": "Medium",
                "wrap": true,
                "color": teams_colour(n.level)
            },
            {"type": "FactSet", "facts": facts},
            {"type": "TextBlock", "text": "What to do", "weight": "Bolder", "wrap": true},
            {"type": "TextBlock", "text": advice(n).join("\n\n"), "wrap": true},
            {"type": "TextBlock", "text": footer(n), "isSubtle": true, "size": "Small", "wrap": true}
        ]
    });
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card
        }]
    })
}

/// The generic webhook payload, version [`GENERIC_PAYLOAD_VERSION`], described by
/// `docs/alert-webhook.schema.json`. Absent facts are `null`, so every key is always present.
pub fn generic_payload(n: &Notification) -> Value {
    let subject = match &n.subject {
        AlertSubject::Certificate {
            namespace,
            name,
            issuer,
            secret_name,
        } => json!({
            "kind": "Certificate",
            "namespace": namespace,
            "name": name,
            "issuer": issuer,
            "secretName": secret_name,
        }),
        AlertSubject::Discovered {
            location,
            task,
            issuer,
        } => json!({"kind": "Discovered", "location": location, "task": task, "issuer": issuer}),
        AlertSubject::Host {
            target,
            task,
            reason,
            unreachable_since,
        } => json!({
            "kind": "Host",
            "target": target,
            "task": task,
            "reason": reason,
            "unreachableSince": unreachable_since.to_string(),
        }),
    };
    json!({
        "version": GENERIC_PAYLOAD_VERSION,
        "alertConfig": n.alert_config,
        "level": level_name(n.level),
        "repeat": n.repeat,
        "subject": subject,
        "commonName": n.common_name,
        "dnsNames": n.dns_names,
        "serialNumber": n.serial,
        "notAfter": n.not_after.map(|t| t.to_string()),
        "daysLeft": n.days_left,
        "summary": email_subject(n),
    })
}

/// `INFO`, `WARN`, `HIGH` or `ERROR`, as the CRD spells them.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::HIGH => "HIGH",
        Level::ERROR => "ERROR",
    }
}

/// The colour of a level in HTML and Slack: blue, amber, orange, red.
fn level_colour(level: Level) -> &'static str {
    match level {
        Level::INFO => "#2E86C1",
        Level::WARN => "#F1C40F",
        Level::HIGH => "#E67E22",
        Level::ERROR => "#C0392B",
    }
}

/// Adaptive Cards take named colours only.
fn teams_colour(level: Level) -> &'static str {
    match level {
        Level::INFO => "Accent",
        Level::WARN => "Warning",
        Level::HIGH | Level::ERROR => "Attention",
    }
}

/// What happened, without the level: `Certificate payments/api expires in 20 days (2026-12-19)`.
fn headline(n: &Notification) -> String {
    match &n.subject {
        AlertSubject::Certificate { namespace, name, .. } => {
            format!("Certificate {namespace}/{name} {}", expiry(n))
        }
        AlertSubject::Discovered { location, .. } => {
            let cn = n
                .common_name
                .as_deref()
                .map(|cn| format!(" (CN={cn})"))
                .unwrap_or_default();
            format!("Discovered certificate at {location}{cn} {}", expiry(n))
        }
        AlertSubject::Host {
            target,
            unreachable_since,
            ..
        } => format!(
            "Discovery target {target} unreachable since {}",
            minute(*unreachable_since)
        ),
    }
}

/// `expires in 20 days (2026-12-19)`, `expires within 24 hours (...)`, `expired 2 days ago
/// (...)`.
fn expiry(n: &Notification) -> String {
    let date = n.not_after.map(|t| format!(" ({})", day(t))).unwrap_or_default();
    match n.days_left {
        Some(days) if days < 0 => format!("expired {} ago{date}", plural_days(-days)),
        Some(0) => format!("expires within 24 hours{date}"),
        Some(days) => format!("expires in {}{date}", plural_days(days)),
        None => match n.not_after {
            Some(t) => format!("expires on {}", day(t)),
            None => "is about to expire".to_owned(),
        },
    }
}

fn plural_days(days: i64) -> String {
    if days == 1 {
        "1 day".to_owned()
    } else {
        format!("{days} days")
    }
}

/// `2026-12-19`, in UTC.
fn day(t: Timestamp) -> String {
    t.to_zoned(TimeZone::UTC).date().to_string()
}

/// `2026-11-20 14:05 UTC`.
fn minute(t: Timestamp) -> String {
    t.to_zoned(TimeZone::UTC)
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string()
}

/// The labelled facts every format shows, in order; absent ones are left out.
fn facts(n: &Notification) -> Vec<(&'static str, String)> {
    let mut facts: Vec<(&'static str, String)> = match &n.subject {
        AlertSubject::Certificate {
            namespace,
            name,
            issuer,
            secret_name,
        } => vec![
            ("Certificate", name.clone()),
            ("Namespace", namespace.clone()),
            ("Issuer", issuer.clone()),
            ("Secret", secret_name.clone()),
        ],
        AlertSubject::Discovered {
            location,
            task,
            issuer,
        } => vec![
            ("Location", location.clone()),
            ("Issuer", issuer.clone()),
            ("DiscoveryTask", task.clone()),
        ],
        AlertSubject::Host {
            target,
            task,
            reason,
            unreachable_since,
        } => vec![
            ("Target", target.clone()),
            ("DiscoveryTask", task.clone()),
            ("Unreachable since", unreachable_since.to_string()),
            ("Last error", reason.clone()),
        ],
    };
    if let Some(cn) = &n.common_name {
        facts.push(("Common name", cn.clone()));
    }
    if !n.dns_names.is_empty() {
        facts.push(("DNS names", dns_names(&n.dns_names)));
    }
    if let Some(serial) = &n.serial {
        facts.push(("Serial", serial.clone()));
    }
    if let Some(not_after) = n.not_after {
        facts.push(("Not after", not_after.to_string()));
    }
    if let Some(days) = n.days_left {
        facts.push(("Days left", days.to_string()));
    }
    facts.push(("Level", level_name(n.level).to_owned()));
    facts
}

/// `a.example.com, b.example.com (+3 more)`.
fn dns_names(names: &[String]) -> String {
    let shown = names
        .iter()
        .take(MAX_DNS_NAMES_SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    match names.len().saturating_sub(MAX_DNS_NAMES_SHOWN) {
        0 => shown,
        more => format!("{shown} (+{more} more)"),
    }
}

/// What the reader should do, one paragraph per entry.
fn advice(n: &Notification) -> Vec<String> {
    match &n.subject {
        AlertSubject::Certificate { namespace, name, .. } => vec![
            format!(
                "pki-operator renews this certificate by itself; if it has not, its conditions and \
                 Events say why: kubectl describe certificate -n {namespace} {name}"
            ),
            format!(
                "To order a new certificate now: kubectl annotate certificate -n {namespace} {name} \
                 {RENEW_ANNOTATION}=\"$(date +%s)\" --overwrite"
            ),
        ],
        AlertSubject::Discovered { location, task, .. } => vec![
            format!(
                "pki-operator does not manage this certificate: replace the certificate at \
                 {location} before it expires (or issue it with a Certificate resource)."
            ),
            format!("It was found by DiscoveryTask {task}: {}", describe_task(task)),
        ],
        AlertSubject::Host { target, task, .. } => vec![
            format!("Check that {target} is up and reachable from the operator."),
            format!(
                "If it was retired, remove it from DiscoveryTask {task}: {}",
                describe_task(task)
            ),
        ],
    }
}

/// `kubectl describe discoverytask -n NS NAME` for a `namespace/name` task.
fn describe_task(task: &str) -> String {
    match task.split_once('/') {
        Some((namespace, name)) => format!("kubectl describe discoverytask -n {namespace} {name}"),
        None => format!("kubectl describe discoverytask {task}"),
    }
}

fn footer(n: &Notification) -> String {
    let reminder = if n.repeat {
        " This is a reminder: the alert is still active."
    } else {
        ""
    };
    format!(
        "Sent by pki-operator for AlertConfig {}.{reminder}",
        n.alert_config
    )
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Escapes the three characters Slack's mrkdwn treats as control characters (`<@U123>` would
/// mention someone, `<!channel>` notify everyone).
fn escape_slack(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn certificate(days_left: i64) -> Notification {
        Notification {
            alert_config: "default".into(),
            level: Level::WARN,
            subject: AlertSubject::Certificate {
                namespace: "payments".into(),
                name: "api".into(),
                issuer: "ClusterIssuer/sectigo".into(),
                secret_name: "api-tls".into(),
            },
            common_name: Some("api.example.com".into()),
            dns_names: vec!["api.example.com".into(), "www.example.com".into()],
            serial: Some("0a1b2c3d".into()),
            not_after: Some(at("2026-12-19T10:00:00Z")),
            days_left: Some(days_left),
            repeat: false,
        }
    }

    fn discovered() -> Notification {
        Notification {
            level: Level::HIGH,
            subject: AlertSubject::Discovered {
                location: "10.0.0.5:443".into(),
                task: "infra/datacenter".into(),
                issuer: "CN=Corp CA".into(),
            },
            ..certificate(10)
        }
    }

    fn host() -> Notification {
        Notification {
            level: Level::ERROR,
            subject: AlertSubject::Host {
                target: "10.0.0.5:443".into(),
                task: "infra/datacenter".into(),
                reason: "connection refused".into(),
                unreachable_since: at("2026-11-20T14:05:33Z"),
            },
            common_name: None,
            dns_names: vec![],
            serial: None,
            not_after: None,
            days_left: None,
            ..certificate(0)
        }
    }

    /// A Certificate whose every name tries to inject markup.
    fn hostile() -> Notification {
        Notification {
            subject: AlertSubject::Certificate {
                namespace: "ns".into(),
                name: "<script>alert(1)</script>".into(),
                issuer: "Issuer/ns/\"x\" & 'y'".into(),
                secret_name: "s".into(),
            },
            common_name: Some("<b>cn</b>".into()),
            ..certificate(3)
        }
    }

    #[test]
    fn subjects_say_what_expires_when() {
        assert_eq!(
            email_subject(&certificate(20)),
            "[pki-operator WARN] Certificate payments/api expires in 20 days (2026-12-19)"
        );
        assert_eq!(
            email_subject(&certificate(1)),
            "[pki-operator WARN] Certificate payments/api expires in 1 day (2026-12-19)"
        );
        assert_eq!(
            email_subject(&certificate(0)),
            "[pki-operator WARN] Certificate payments/api expires within 24 hours (2026-12-19)"
        );
        assert_eq!(
            email_subject(&certificate(-1)),
            "[pki-operator WARN] Certificate payments/api expired 1 day ago (2026-12-19)"
        );
        assert_eq!(
            email_subject(&certificate(-2)),
            "[pki-operator WARN] Certificate payments/api expired 2 days ago (2026-12-19)"
        );
        assert_eq!(
            email_subject(&discovered()),
            "[pki-operator HIGH] Discovered certificate at 10.0.0.5:443 (CN=api.example.com) expires \
             in 10 days (2026-12-19)"
        );
        assert_eq!(
            email_subject(&host()),
            "[pki-operator ERROR] Discovery target 10.0.0.5:443 unreachable since 2026-11-20 14:05 UTC"
        );
        let reminder = Notification {
            repeat: true,
            ..certificate(20)
        };
        assert!(email_subject(&reminder).ends_with("(2026-12-19) (reminder)"));
        let undated = Notification {
            days_left: None,
            ..certificate(0)
        };
        assert!(email_subject(&undated).ends_with("expires on 2026-12-19"));
    }

    #[test]
    fn the_subject_is_one_line_whatever_the_names_hold() {
        let n = Notification {
            subject: AlertSubject::Discovered {
                location: "host:443\r\nBcc: victim@example.com".into(),
                task: "ns/t".into(),
                issuer: "CN=x".into(),
            },
            common_name: Some("a\nb\tc".into()),
            ..certificate(5)
        };
        let subject = email_subject(&n);
        assert!(!subject.contains(['\r', '\n', '\t']), "{subject:?}");
        assert!(
            subject.contains("host:443  Bcc: victim@example.com (CN=a b c)"),
            "{subject:?}"
        );
    }

    #[test]
    fn the_text_body_names_the_certificate_and_what_to_do() {
        let text = email_text(&certificate(20));
        for expected in [
            "WARN: Certificate payments/api expires in 20 days (2026-12-19).",
            "\nCertificate: api\n",
            "\nNamespace:   payments\n",
            "\nIssuer:      ClusterIssuer/sectigo\n",
            "\nSecret:      api-tls\n",
            "\nSerial:      0a1b2c3d\n",
            "\nNot after:   2026-12-19T10:00:00Z\n",
            "\nDays left:   20\n",
            "\nDNS names:   api.example.com, www.example.com\n",
            "kubectl describe certificate -n payments api",
            "kubectl annotate certificate -n payments api pki-operator.io/renew=",
            "AlertConfig default",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
        }
        let discovered = email_text(&discovered());
        assert!(
            discovered.contains("replace the certificate at 10.0.0.5:443"),
            "{discovered}"
        );
        assert!(discovered.contains("kubectl describe discoverytask -n infra datacenter"));
        let host = email_text(&host());
        assert!(host.contains("Check that 10.0.0.5:443 is up"), "{host}");
        assert!(host.contains("remove it from DiscoveryTask infra/datacenter"));
        assert!(host.contains("Last error:        connection refused"), "{host}");
        assert!(!host.contains("Serial"), "a host alert has no certificate facts");
    }

    #[test]
    fn the_renewal_advice_uses_the_operators_annotation() {
        assert_eq!(RENEW_ANNOTATION, crate::controller::certificate::RENEW_ANNOTATION);
        assert!(email_html(&certificate(5)).contains(RENEW_ANNOTATION));
    }

    #[test]
    fn many_dns_names_are_cut_short() {
        let names: Vec<String> = (0..13).map(|i| format!("n{i}.example.com")).collect();
        let text = email_text(&Notification {
            dns_names: names,
            ..certificate(5)
        });
        assert!(text.contains("n9.example.com (+3 more)"), "{text}");
        assert!(!text.contains("n10.example.com"));
    }

    #[test]
    fn html_escapes_every_value() {
        let html = email_html(&hostile());
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>cn"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("Issuer/ns/&quot;x&quot; &amp; &#39;y&#39;"));
        let html = email_html(&certificate(20));
        assert!(html.contains("<td>payments</td>") && html.contains("<td>0a1b2c3d</td>"));
        assert!(html.contains("color: #F1C40F"), "WARN is amber");
        assert!(email_html(&host()).contains("color: #C0392B"), "ERROR is red");
    }

    #[test]
    fn slack_messages_are_coloured_by_level_and_escaped() {
        let payload = slack_payload(&certificate(20));
        assert_eq!(
            payload["text"],
            "[pki-operator WARN] Certificate payments/api expires in 20 days (2026-12-19)"
        );
        assert_eq!(payload["attachments"][0]["color"], "#F1C40F");
        assert_eq!(slack_payload(&host())["attachments"][0]["color"], "#C0392B");
        assert_eq!(slack_payload(&discovered())["attachments"][0]["color"], "#E67E22");
        let text = payload.to_string();
        assert!(
            text.contains("*Namespace*\\npayments") && text.contains("0a1b2c3d"),
            "{text}"
        );
        let hostile = slack_payload(&hostile());
        let blocks = hostile["attachments"][0]["blocks"].to_string();
        assert!(
            !blocks.contains("<script>") && blocks.contains("&lt;script&gt;"),
            "{blocks}"
        );
    }

    #[test]
    fn teams_messages_carry_an_adaptive_card() {
        let payload = teams_payload(&certificate(20));
        assert_eq!(payload["type"], "message");
        let attachment = &payload["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachment["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["body"][0]["color"], "Warning");
        assert_eq!(
            teams_payload(&host())["attachments"][0]["content"]["body"][0]["color"],
            "Attention"
        );
        let facts = card["body"][1]["facts"].as_array().unwrap();
        assert!(facts.contains(&json!({"title": "Namespace", "value": "payments"})));
        assert!(facts.contains(&json!({"title": "Serial", "value": "0a1b2c3d"})));
    }

    #[test]
    fn the_generic_payload_has_every_fact() {
        let payload = generic_payload(&certificate(-2));
        assert_eq!(
            payload,
            json!({
                "version": "v1",
                "alertConfig": "default",
                "level": "WARN",
                "repeat": false,
                "subject": {
                    "kind": "Certificate",
                    "namespace": "payments",
                    "name": "api",
                    "issuer": "ClusterIssuer/sectigo",
                    "secretName": "api-tls"
                },
                "commonName": "api.example.com",
                "dnsNames": ["api.example.com", "www.example.com"],
                "serialNumber": "0a1b2c3d",
                "notAfter": "2026-12-19T10:00:00Z",
                "daysLeft": -2,
                "summary": "[pki-operator WARN] Certificate payments/api expired 2 days ago (2026-12-19)"
            })
        );
        let host = generic_payload(&host());
        assert_eq!(host["subject"]["unreachableSince"], "2026-11-20T14:05:33Z");
        assert_eq!(host["notAfter"], Value::Null);
    }

    const SCHEMA: &str = include_str!("../../docs/alert-webhook.schema.json");

    #[test]
    fn the_generic_payload_matches_its_published_schema() {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
        for n in [certificate(20), certificate(-3), discovered(), host(), hostile()] {
            let payload = generic_payload(&n);
            if let Err(error) = validate(&schema, &schema, &payload, "$") {
                panic!("{payload:#} does not match the schema: {error}");
            }
        }
    }

    #[test]
    fn the_schema_check_rejects_what_the_schema_forbids() {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let good = generic_payload(&discovered());
        let broken = |edit: &dyn Fn(&mut Value)| {
            let mut payload = good.clone();
            edit(&mut payload);
            validate(&schema, &schema, &payload, "$")
        };
        assert!(broken(&|p| p["level"] = json!("CRITICAL")).is_err());
        assert!(broken(&|p| p["extra"] = json!(1)).is_err());
        assert!(broken(&|p| p["daysLeft"] = json!("3")).is_err());
        assert!(broken(&|p| p["subject"]["kind"] = json!("Host")).is_err());
        assert!(broken(&|p| p["subject"]["name"] = json!("x")).is_err());
        assert!(broken(&|p| p["notAfter"] = json!("next week")).is_err());
        assert!(broken(&|p| drop(p.as_object_mut().unwrap().remove("summary"))).is_err());
    }

    /// A JSON Schema (2020-12) check of the subset `docs/alert-webhook.schema.json` uses: `type`
    /// (one or a list), `enum`, `required`, `properties`, `additionalProperties: false`, `items`,
    /// `oneOf`, local `$ref`, and `format: date-time` (checked as RFC 3339). Any other keyword
    /// fails the check, so the schema cannot grow beyond what is verified here unnoticed.
    fn validate(root: &Value, schema: &Value, value: &Value, path: &str) -> Result<(), String> {
        let schema = schema
            .as_object()
            .ok_or(format!("{path}: schema is not an object"))?;
        for (keyword, rule) in schema {
            match keyword.as_str() {
                "$schema" | "$id" | "$defs" | "title" | "description" | "properties" => {}
                "type" => {
                    let allowed: Vec<&str> = match rule {
                        Value::String(one) => vec![one.as_str()],
                        _ => rule
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|t| t.as_str().unwrap())
                            .collect(),
                    };
                    if !allowed.iter().any(|t| has_type(value, t)) {
                        return Err(format!("{path}: {value} is not of type {allowed:?}"));
                    }
                }
                "enum" => {
                    if !rule.as_array().unwrap().contains(value) {
                        return Err(format!("{path}: {value} not in {rule}"));
                    }
                }
                "format" => {
                    assert_eq!(rule, "date-time");
                    if let Some(text) = value.as_str() {
                        text.parse::<Timestamp>()
                            .map_err(|e| format!("{path}: {text:?} is no date-time: {e}"))?;
                    }
                }
                "required" => {
                    for key in rule.as_array().unwrap() {
                        if value.get(key.as_str().unwrap()).is_none() {
                            return Err(format!("{path}: {key} is missing"));
                        }
                    }
                }
                "additionalProperties" => {
                    assert_eq!(rule, &Value::Bool(false));
                    let known = schema["properties"].as_object().unwrap();
                    for key in value.as_object().into_iter().flat_map(|o| o.keys()) {
                        if !known.contains_key(key) {
                            return Err(format!("{path}: unexpected key {key:?}"));
                        }
                    }
                }
                "items" => {
                    for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                        validate(root, rule, item, &format!("{path}[{i}]"))?;
                    }
                }
                "oneOf" => {
                    let matching = rule
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|s| validate(root, s, value, path).is_ok())
                        .count();
                    if matching != 1 {
                        return Err(format!("{path}: matches {matching} of oneOf, not one"));
                    }
                }
                "$ref" => {
                    let name = rule.as_str().unwrap().strip_prefix("#/$defs/").unwrap();
                    validate(root, &root["$defs"][name], value, path)?;
                }
                other => panic!("the schema uses {other:?}, which this check does not implement"),
            }
        }
        if let (Some(properties), Some(object)) = (schema.get("properties"), value.as_object()) {
            for (key, property) in properties.as_object().unwrap() {
                if let Some(item) = object.get(key) {
                    validate(root, property, item, &format!("{path}.{key}"))?;
                }
            }
        }
        Ok(())
    }

    fn has_type(value: &Value, name: &str) -> bool {
        match name {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            other => panic!("unknown type {other}"),
        }
    }
}
