//! The channels of one AlertConfig (Events always, email and webhooks as configured) and the
//! delivery of what the sent-record says is owed: most severe first, at most
//! [`MAX_SENDS_PER_PASS`] per channel per pass, a failing channel paused with backoff (its state
//! in `status.channels`) while the others go on.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};
use kube::{Api, runtime::events::EventType};

use super::evaluate::Subject;
use crate::{
    alerting::{
        AlertSubject, Notification,
        email::{EmailSender, EmailSettings},
        ledger::Ledger,
        message,
        webhook::WebhookSender,
    },
    controller::Context,
    crd::v1alpha1::{
        AlertConfig, Certificate,
        alert_config::{ChannelStatus, Level, SecretReference},
        common::NamespacedSecretKeySelector,
    },
    pki::credentials::SecretString,
};

/// Notifications sent per channel in one pass; more wait for the next pass, moments later. Bounds
/// a pass's length, the burst at a mail relay or chat service, and what a crash can resend.
pub const MAX_SENDS_PER_PASS: usize = 50;

/// The Event channel's name.
pub const EVENT: &str = "event";

/// How a channel delivers.
pub enum Sender {
    /// A Kubernetes Event on the Certificate (or on the AlertConfig for discovered certificates
    /// and hosts).
    Event,
    /// Email over SMTP.
    Email(Box<EmailSender>),
    /// A webhook.
    Webhook(Box<WebhookSender>),
    /// A channel whose configuration cannot be used (a missing Secret, a bad address): every
    /// attempt fails with this message, without contacting anyone.
    Broken(String),
}

/// One channel.
pub struct Channel {
    /// `event`, `email` or `webhook/<index>`.
    pub name: String,
    /// How it delivers.
    pub sender: Sender,
}

/// Builds the channels of `config` (reading their Secrets).
pub async fn build(ctx: &Context, config: &AlertConfig) -> Vec<Channel> {
    let mut channels = vec![Channel {
        name: EVENT.to_owned(),
        sender: Sender::Event,
    }];
    let Some(spec) = config.spec.channels.as_ref() else {
        return channels;
    };
    if let Some(email) = &spec.email {
        let sender = match email_settings(ctx, email).await {
            Ok(settings) => match EmailSender::new(settings) {
                Ok(sender) => Sender::Email(Box::new(sender)),
                Err(e) => Sender::Broken(format!("spec.channels.email: {e}")),
            },
            Err(message) => Sender::Broken(message),
        };
        channels.push(Channel {
            name: "email".to_owned(),
            sender,
        });
    }
    for (index, hook) in spec.webhooks.iter().enumerate() {
        let field = format!("spec.channels.webhooks[{index}]");
        let sender = async {
            let url = secret_value(ctx, &hook.url_secret_ref, &format!("{field}.urlSecretRef")).await?;
            let token = match &hook.bearer_token_secret_ref {
                Some(r) => Some(secret_value(ctx, r, &format!("{field}.bearerTokenSecretRef")).await?),
                None => None,
            };
            WebhookSender::new(url, hook.format, token, hook.ca_bundle.as_deref())
                .map_err(|e| format!("{field}: {e}"))
        }
        .await;
        // Named by where its URL comes from, not its position: reordering or removing webhooks
        // must not move what was sent to one onto another.
        let r = &hook.url_secret_ref;
        channels.push(Channel {
            name: format!("webhook/{}/{}/{}", r.namespace, r.name, r.key),
            sender: sender.map_or_else(Sender::Broken, |s| Sender::Webhook(Box::new(s))),
        });
    }
    channels
}

async fn email_settings(
    ctx: &Context,
    email: &crate::crd::v1alpha1::alert_config::EmailChannel,
) -> Result<EmailSettings, String> {
    let credentials = match &email.credentials_secret_ref {
        Some(r) => {
            let field = "spec.channels.email.credentialsSecretRef";
            let username = secret_key(ctx, r, "username", field).await?;
            let password = secret_key(ctx, r, "password", field).await?;
            Some((username.expose().to_owned(), password))
        }
        None => None,
    };
    let port = email
        .smtp_port
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| crate::alerting::email::default_port(email.security));
    Ok(EmailSettings {
        host: email.smtp_host.clone(),
        port,
        security: email.security,
        credentials,
        from: email.from.clone(),
        to: email.to.clone(),
        ca_bundle: email.ca_bundle.clone(),
    })
}

async fn secret_value(
    ctx: &Context,
    r: &NamespacedSecretKeySelector,
    field: &str,
) -> Result<SecretString, String> {
    let reference = SecretReference {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
    };
    secret_key(ctx, &reference, &r.key, field).await
}

/// One key of a Secret, as text. Errors name the field and the Secret, never the value.
pub(super) async fn secret_key(
    ctx: &Context,
    r: &SecretReference,
    key: &str,
    field: &str,
) -> Result<SecretString, String> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &r.namespace);
    let secret = secrets
        .get_opt(&r.name)
        .await
        .map_err(|e| format!("{field}: cannot read Secret {}/{}: {e}", r.namespace, r.name))?
        .ok_or_else(|| format!("{field}: Secret {}/{} not found", r.namespace, r.name))?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| format!("{field}: Secret {}/{} has no key {key:?}", r.namespace, r.name))?;
    let text = String::from_utf8(value.0.clone()).map_err(|_| {
        format!(
            "{field}: key {key:?} of Secret {}/{} is not UTF-8",
            r.namespace, r.name
        )
    })?;
    Ok(SecretString::new(text.trim().to_owned()))
}

/// Wait before retrying a channel after `failures` consecutive failures: 10 s doubling to 15 min.
pub fn retry_wait(failures: i64) -> jiff::SignedDuration {
    let exponent = u32::try_from(failures.saturating_sub(1).clamp(0, 10)).unwrap_or(10);
    let seconds = 10_i64.saturating_mul(1 << exponent).min(900);
    jiff::SignedDuration::from_secs(seconds)
}

/// When a channel may be tried again, if it is paused by failures.
pub fn retry_at(status: &ChannelStatus) -> Option<Timestamp> {
    if status.consecutive_failures == 0 {
        return None;
    }
    let failed = status.last_failure_time.as_ref()?.0;
    failed.checked_add(retry_wait(status.consecutive_failures)).ok()
}

/// What a delivery pass left.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Notifications still owed because a channel hit [`MAX_SENDS_PER_PASS`].
    pub more_pending: bool,
    /// The earliest time a paused channel may be tried again.
    pub retry_at: Option<Timestamp>,
}

/// Sends what `ledger` owes on each channel, marking each success in it, and brings each
/// channel's status up to date. `subjects` are the evaluation's alerting subjects.
pub async fn deliver(
    ctx: &Context,
    config: &AlertConfig,
    channels: &[Channel],
    ledger: &mut Ledger,
    subjects: &[Subject],
    statuses: &mut Vec<ChannelStatus>,
    (now, repeat): (Timestamp, i64),
) -> Outcome {
    let by_key: BTreeMap<String, &Subject> = subjects
        .iter()
        .map(|s| (crate::alerting::ledger::key_hash(&s.key), s))
        .collect();
    let names: Vec<String> = channels.iter().map(|c| c.name.clone()).collect();
    let due = ledger.due(&names, now.as_second(), repeat);
    let mut previous: BTreeMap<String, ChannelStatus> =
        statuses.drain(..).map(|s| (s.channel.clone(), s)).collect();
    let mut outcome = Outcome::default();
    for channel in channels {
        let mut status = previous.remove(&channel.name).unwrap_or_else(|| ChannelStatus {
            channel: channel.name.clone(),
            last_delivery_time: None,
            delivered: 0,
            consecutive_failures: 0,
            last_error: None,
            last_failure_time: None,
            pending: 0,
        });
        let owed: Vec<_> = due
            .iter()
            .filter(|d| d.channel == channel.name)
            .filter_map(|d| Some((d, *by_key.get(&d.key)?)))
            .collect();
        status.pending = i64::try_from(owed.len()).unwrap_or(i64::MAX);
        // Nothing owed (the alerts cleared while it failed): nothing is failing any more.
        if owed.is_empty() {
            status.consecutive_failures = 0;
        }
        let paused = retry_at(&status).filter(|at| *at > now);
        if let Some(at) = paused {
            if !owed.is_empty() {
                outcome.retry_at = Some(outcome.retry_at.map_or(at, |r| r.min(at)));
            }
            statuses.push(status);
            continue;
        }
        outcome.more_pending |= owed.len() > MAX_SENDS_PER_PASS;
        for (due, subject) in owed.into_iter().take(MAX_SENDS_PER_PASS) {
            let mut notification = subject.notification.clone();
            notification.repeat = due.repeat;
            match send(ctx, config, channel, subject, &notification).await {
                Ok(()) => {
                    ledger.mark_sent(&due.key, &channel.name, now.as_second());
                    status.delivered = status.delivered.saturating_add(1);
                    status.pending -= 1;
                    status.last_delivery_time = Some(Time(now));
                    status.consecutive_failures = 0;
                }
                Err(error) => {
                    tracing::warn!(alert_config = %config.metadata.name.as_deref().unwrap_or_default(), channel = %channel.name, %error, "alert delivery failed; retrying with backoff");
                    status.consecutive_failures = status.consecutive_failures.saturating_add(1);
                    status.last_error = Some(crate::controller::conditions::truncate(error, 512));
                    status.last_failure_time = Some(Time(now));
                    if let Some(at) = retry_at(&status) {
                        outcome.retry_at = Some(outcome.retry_at.map_or(at, |r| r.min(at)));
                    }
                    break;
                }
            }
        }
        statuses.push(status);
    }
    outcome
}

async fn send(
    ctx: &Context,
    config: &AlertConfig,
    channel: &Channel,
    subject: &Subject,
    notification: &Notification,
) -> Result<(), String> {
    match &channel.sender {
        Sender::Event => publish_event(ctx, config, subject, notification).await,
        Sender::Email(sender) => sender.send(notification).await.map_err(|e| e.to_string()),
        Sender::Webhook(sender) => sender.send(notification).await.map_err(|e| e.to_string()),
        Sender::Broken(message) => Err(message.clone()),
    }
}

/// The Event of an alert: on the Certificate it is about, else on the AlertConfig. A refused
/// Event is a failed delivery, retried like any other.
async fn publish_event(
    ctx: &Context,
    config: &AlertConfig,
    subject: &Subject,
    notification: &Notification,
) -> Result<(), String> {
    let type_ = if notification.level == Level::INFO {
        EventType::Normal
    } else {
        EventType::Warning
    };
    let reason = match &notification.subject {
        AlertSubject::Host { .. } => "HostUnavailable",
        _ if notification.days_left.is_some_and(|d| d < 0) => "CertificateExpired",
        _ => "CertificateExpiring",
    };
    let note = format!(
        "{} (AlertConfig {})",
        message::email_subject(notification),
        config.metadata.name.as_deref().unwrap_or_default()
    );
    match &subject.certificate {
        Some(certificate) => {
            let regarding = Certificate {
                metadata: kube::api::ObjectMeta {
                    namespace: Some(certificate.namespace.clone()),
                    name: Some(certificate.name.clone()),
                    uid: certificate.uid.clone(),
                    ..Default::default()
                },
                spec: crate::crd::v1alpha1::certificate::CertificateSpec::default(),
                status: None,
            };
            ctx.events
                .try_publish(&regarding, type_, reason, &note)
                .await
                .map_err(|e| format!("cannot create the Event: {e}"))
        }
        None => ctx
            .events
            .try_publish(config, type_, reason, &note)
            .await
            .map_err(|e| format!("cannot create the Event: {e}")),
    }
}
