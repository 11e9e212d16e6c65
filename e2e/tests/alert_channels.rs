//! The alert delivery channels against real peers: `EmailSender` against aiosmtpd (a real SMTP
//! server, `python3-aiosmtpd`) and `WebhookSender` against an HTTP receiver on loopback. No
//! control plane is needed; `make e2e` runs these with the rest of the e2e crate's tests.

// Test code: a failed expectation is a panic.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use pki_operator::{
    alerting::{
        AlertSubject, Notification,
        email::{ChannelError, EmailSender, EmailSettings},
        message,
        webhook::WebhookSender,
    },
    crd::v1alpha1::alert_config::{Level, SmtpSecurity, WebhookFormat},
    pki::credentials::SecretString,
};
use pki_operator_e2e::{
    sim::TestCa,
    smtp::{SmtpServer, SmtpTlsMode},
    webhook_receiver::{SECRET_PATH, WebhookReceiver},
    work_dir,
};

const WAIT: Duration = Duration::from_secs(20);
const PASSWORD: &str = "e2e-smtp-password-never-shown";
const TOKEN: &str = "e2e-bearer-token-never-shown";

fn notification() -> Notification {
    Notification {
        alert_config: "default".into(),
        level: Level::HIGH,
        subject: AlertSubject::Certificate {
            namespace: "payments".into(),
            name: "api".into(),
            issuer: "ClusterIssuer/sectigo".into(),
            secret_name: "api-tls".into(),
        },
        // A certificate's names are whatever its requester wrote: markup must arrive escaped.
        common_name: Some("<script>alert(1)</script>".into()),
        dns_names: vec!["api.example.com".into(), "www.example.com".into()],
        serial: Some("7f3a9c".into()),
        not_after: Some("2026-12-19T10:00:00Z".parse().unwrap()),
        days_left: Some(12),
        repeat: false,
    }
}

fn settings(port: u16, security: SmtpSecurity) -> EmailSettings {
    EmailSettings {
        host: "127.0.0.1".into(),
        port,
        security,
        credentials: None,
        from: "PKI alerts <alerts@example.com>".into(),
        to: vec!["ops@example.com".into(), "Security <sec@example.com>".into()],
        ca_bundle: None,
    }
}

#[tokio::test]
async fn an_alert_email_reaches_every_recipient_with_both_bodies() {
    let smtp = SmtpServer::start(&work_dir("alert-smtp-delivery").unwrap())
        .await
        .unwrap();
    let sender = EmailSender::new(settings(smtp.port(), SmtpSecurity::None)).unwrap();
    let n = notification();
    sender.send(&n).await.unwrap();

    let received = smtp.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(received.len(), 1);
    let email = &received[0];
    assert_eq!(email.mail_from, "alerts@example.com");
    assert_eq!(email.envelope_to, ["ops@example.com", "sec@example.com"]);
    assert!(
        email.to.contains("ops@example.com") && email.to.contains("sec@example.com"),
        "{}",
        email.to
    );
    assert!(email.from.contains("PKI alerts"), "{}", email.from);
    assert_eq!(email.subject, message::email_subject(&n));
    assert_eq!(
        email.subject,
        "[pki-operator HIGH] Certificate payments/api expires in 12 days (2026-12-19)"
    );
    assert_eq!(email.content_type, "multipart/alternative");
    assert!(email.raw.contains("\r\nMessage-ID: <"), "{}", email.raw);
    let text = email.text.as_deref().expect("a text/plain part");
    assert_eq!(text.replace("\r\n", "\n"), message::email_text(&n));
    for expected in [
        "payments",
        "api-tls",
        "7f3a9c",
        "2026-12-19T10:00:00Z",
        "kubectl describe certificate -n payments api",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in\n{text}");
    }
    let html = email.html.as_deref().expect("a text/html part");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("<td>7f3a9c</td>"), "{html}");
}

#[tokio::test]
async fn smtp_down_is_a_transient_error_and_delivery_resumes_when_it_is_back() {
    let smtp = SmtpServer::start(&work_dir("alert-smtp-outage").unwrap())
        .await
        .unwrap();
    let sender = EmailSender::new(EmailSettings {
        credentials: Some(("alerts".into(), SecretString::new(PASSWORD))),
        ..settings(smtp.port(), SmtpSecurity::None)
    })
    .unwrap();
    let plain = EmailSender::new(settings(smtp.port(), SmtpSecurity::None)).unwrap();
    smtp.stop();

    let error = sender.send(&notification()).await.unwrap_err();
    assert!(matches!(error, ChannelError::Transport { .. }), "{error:?}");
    assert!(!error.is_permanent(), "{error}");
    let text = error.to_string();
    assert!(text.contains(&format!("127.0.0.1:{}", smtp.port())), "{text}");
    assert!(
        !text.contains(PASSWORD) && !format!("{error:?} {sender:?}").contains(PASSWORD),
        "{text}"
    );

    smtp.start_again().await.unwrap();
    plain.send(&notification()).await.unwrap();
    assert_eq!(smtp.wait_for_messages(1, WAIT).await.unwrap().len(), 1);
}

#[tokio::test]
async fn required_starttls_never_falls_back_to_plain_text() {
    // aiosmtpd without a certificate offers no STARTTLS: the sender must refuse to go on.
    let smtp = SmtpServer::start(&work_dir("alert-smtp-starttls").unwrap())
        .await
        .unwrap();
    let sender = EmailSender::new(settings(smtp.port(), SmtpSecurity::StartTLS)).unwrap();
    let error = sender.send(&notification()).await.unwrap_err();
    assert!(
        smtp.messages().unwrap().is_empty(),
        "sent in plain text despite StartTLS: {error}"
    );
    let implicit = EmailSender::new(settings(smtp.port(), SmtpSecurity::TLS)).unwrap();
    implicit.send(&notification()).await.unwrap_err();
    assert!(smtp.messages().unwrap().is_empty());
}

#[tokio::test]
async fn tls_email_is_delivered_when_the_ca_bundle_trusts_the_server() {
    let ca = TestCa::generate("SMTP e2e").unwrap();
    for (mode, security) in [
        (SmtpTlsMode::StartTls, SmtpSecurity::StartTLS),
        (SmtpTlsMode::Implicit, SmtpSecurity::TLS),
    ] {
        // `work_dir` empties a directory of the same name, so each test and mode has its own.
        let dir = work_dir(&format!("alert-smtp-tls-trust-{mode:?}").to_lowercase()).unwrap();
        let smtp = SmtpServer::start_with_tls(&dir, &ca, mode).await.unwrap();
        // Without the bundle the test CA is unknown: nothing may be sent.
        let untrusted = EmailSender::new(settings(smtp.port(), security)).unwrap();
        let error = untrusted.send(&notification()).await.unwrap_err();
        assert!(
            matches!(error, ChannelError::Transport { .. }),
            "{mode:?}: {error:?}"
        );
        assert!(smtp.messages().unwrap().is_empty(), "{mode:?}");

        let trusted = EmailSender::new(EmailSettings {
            ca_bundle: Some(ca.root_pem()),
            ..settings(smtp.port(), security)
        })
        .unwrap();
        trusted
            .send(&notification())
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let received = smtp.wait_for_messages(1, WAIT).await.unwrap();
        assert_eq!(
            received[0].subject,
            message::email_subject(&notification()),
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn a_plain_client_is_refused_by_a_server_that_requires_starttls() {
    let ca = TestCa::generate("SMTP e2e").unwrap();
    let dir = work_dir("alert-smtp-plain-refused").unwrap();
    let smtp = SmtpServer::start_with_tls(&dir, &ca, SmtpTlsMode::StartTls)
        .await
        .unwrap();
    let plain = EmailSender::new(settings(smtp.port(), SmtpSecurity::None)).unwrap();
    let error = plain.send(&notification()).await.unwrap_err();
    // aiosmtpd answers MAIL with `530 Must issue a STARTTLS command first`.
    assert!(
        matches!(error, ChannelError::Rejected { code: 530, .. }),
        "{error:?}"
    );
    assert!(error.is_permanent(), "{error}");
}

fn webhook(receiver: &WebhookReceiver, format: WebhookFormat) -> WebhookSender {
    WebhookSender::new(
        SecretString::new(receiver.url()),
        format,
        Some(SecretString::new(TOKEN)),
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn every_webhook_format_arrives_with_the_bearer_token() {
    let receiver = WebhookReceiver::start().await.unwrap();
    let n = notification();
    for format in [WebhookFormat::Slack, WebhookFormat::Teams, WebhookFormat::Generic] {
        webhook(&receiver, format).send(&n).await.unwrap();
    }
    let requests = receiver.wait_for_requests(3, WAIT).await.unwrap();
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, SECRET_PATH);
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
    }
    let [slack, teams, generic] = [0, 1, 2].map(|i| requests[i].json());
    assert_eq!(slack, message::slack_payload(&n));
    assert_eq!(slack["text"], message::email_subject(&n));
    assert_eq!(teams, message::teams_payload(&n));
    assert_eq!(teams["attachments"][0]["content"]["type"], "AdaptiveCard");
    assert_eq!(generic, message::generic_payload(&n));
    assert_eq!(generic["subject"]["namespace"], "payments");
    assert_eq!(generic["daysLeft"], 12);
}

#[tokio::test]
async fn webhook_errors_are_classified_and_never_show_the_url_or_token() {
    let receiver = WebhookReceiver::start().await.unwrap();
    let sender = webhook(&receiver, WebhookFormat::Generic);
    let n = notification();

    receiver.fail_next(1, 500);
    let error = sender.send(&n).await.unwrap_err();
    assert!(
        matches!(error, ChannelError::Http { status: 500, .. }),
        "{error:?}"
    );
    assert!(!error.is_permanent());
    let shown = format!("{error} {error:?} {sender:?}");
    assert!(shown.contains(&format!("http://{}", receiver.addr())), "{shown}");
    assert!(!shown.contains(SECRET_PATH) && !shown.contains(TOKEN), "{shown}");

    receiver.fail_next(1, 404);
    let error = sender.send(&n).await.unwrap_err();
    assert!(error.is_permanent(), "{error}");
    receiver.fail_next(1, 429);
    assert!(!sender.send(&n).await.unwrap_err().is_permanent());

    sender.send(&n).await.unwrap();
    let answered: Vec<u16> = receiver.requests().iter().map(|r| r.answered).collect();
    assert_eq!(answered, [500, 404, 429, 200]);
}
