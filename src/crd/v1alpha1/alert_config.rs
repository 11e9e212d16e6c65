//! `AlertConfig` (cluster-scoped): expiry alerting over managed and discovered certificates with
//! the CertMgmt level model (INFO / WARN / HIGH / ERROR, each with `remainingDays`). It is
//! cluster-scoped because alerting is owned by the platform team and its scope spans namespaces;
//! the CertMgmt service it can sync with is itself global per instance.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    ClusterScopedIssuerRef, NamespacedSecretKeySelector, conditions_schema, duration_schema,
};

/// Desired state of an AlertConfig.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "pki-operator.io",
    version = "v1alpha1",
    kind = "AlertConfig",
    status = "AlertConfigStatus",
    shortname = "alertcfg",
    category = "pki",
    doc = "An AlertConfig raises expiry alerts for certificates at INFO/WARN/HIGH/ERROR levels and delivers them by Event, email and webhook.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Warn", type_ = "integer", json_path = ".status.counts.warn"),
    printcolumn(name = "High", type_ = "integer", json_path = ".status.counts.high"),
    printcolumn(name = "Error", type_ = "integer", json_path = ".status.counts.error"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct AlertConfigSpec {
    /// Alert levels; each of INFO, WARN, HIGH and ERROR at most once. A certificate is at the most
    /// severe enabled level whose `remainingDays` it has reached.
    #[x_kube(validation = kube::core::Rule::new("self.all(l, self.exists_one(m, m.level == l.level))")
        .message("each level (INFO, WARN, HIGH, ERROR) may appear at most once"))]
    #[schemars(length(min = 1, max = 4))]
    pub levels: Vec<AlertLevel>,
    /// Which certificates are watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<AlertScope>,
    /// Where alerts go besides Kubernetes Events (always emitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<AlertChannels>,
    /// Send an alert that is still active again after this long (default `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub repeat_interval: Option<String>,
    /// Alert when a discovery target has been unreachable for too long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_unavailability: Option<HostUnavailability>,
    /// Sync levels and email lists to a CertMgmt service and read back its generated alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_mgmt: Option<CertMgmtSync>,
}

/// Severity level (the CertMgmt service's names).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[allow(clippy::upper_case_acronyms)] // CertMgmt's spelling of the levels
pub enum Level {
    /// Informational.
    #[default]
    INFO,
    /// Warning.
    WARN,
    /// High.
    HIGH,
    /// Error.
    ERROR,
}

/// One alert level.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertLevel {
    /// `INFO`, `WARN`, `HIGH` or `ERROR`.
    pub level: Level,
    /// Alert when at most this many days of validity remain (0 = expired).
    #[schemars(range(min = 0, max = 3650))]
    pub remaining_days: i32,
    /// Whether the level raises alerts (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_true() -> bool {
    true
}

/// Which certificates are evaluated.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertScope {
    /// Namespaces whose Certificates are watched; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63)))]
    pub namespaces: Vec<String>,
    /// Only Certificates with matching labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Only Certificates from these issuers; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub issuers: Vec<ClusterScopedIssuerRef>,
    /// Also evaluate certificates found by DiscoveryTasks.
    #[serde(default)]
    pub include_discovered: bool,
}

/// Delivery channels.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertChannels {
    /// Email over SMTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailChannel>,
    /// HTTP webhooks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub webhooks: Vec<WebhookChannel>,
}

/// SMTP connection security.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (default; port 587).
    #[default]
    StartTLS,
    /// Implicit TLS (port 465).
    TLS,
    /// No TLS: only for a relay on a trusted network.
    None,
}

/// Email delivery.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailChannel {
    /// SMTP server host name.
    #[schemars(length(min = 1, max = 253))]
    pub smtp_host: String,
    /// SMTP server port (default 587).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub smtp_port: Option<i32>,
    /// `StartTLS` (default), `TLS` or `None`.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// Secret with `username` and `password` keys for SMTP authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<NamespacedSecretKeySelector>,
    /// Sender address.
    #[schemars(length(min = 3, max = 320))]
    pub from: String,
    /// Recipients.
    #[schemars(length(min = 1, max = 50), inner(length(min = 3, max = 320)))]
    pub to: Vec<String>,
}

/// Webhook payload format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WebhookFormat {
    /// A JSON document of our own (default).
    #[default]
    Generic,
    /// A Slack incoming-webhook message.
    Slack,
    /// A Microsoft Teams incoming-webhook message.
    Teams,
}

/// One webhook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookChannel {
    /// Secret key holding the webhook URL (webhook URLs embed credentials).
    pub url_secret_ref: NamespacedSecretKeySelector,
    /// `Generic` (default), `Slack` or `Teams`.
    #[serde(default)]
    pub format: WebhookFormat,
}

/// Host-unavailability alerting.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostUnavailability {
    /// Whether unreachable hosts raise alerts.
    #[serde(default)]
    pub enabled: bool,
    /// Days a discovery target may stay unreachable before an alert (CertMgmt
    /// `max_days_checkin_delay`).
    #[schemars(range(min = 1, max = 365))]
    pub max_days_checkin_delay: i32,
}

/// CertMgmt service synchronisation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertMgmtSync {
    /// CertMgmt service base URL.
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('https://')").message("url must start with https://"))]
    #[schemars(length(min = 9, max = 2048))]
    pub url: String,
    /// Credentials for the service.
    pub credentials_secret_ref: NamespacedSecretKeySelector,
    /// Push the levels and the email recipients as an email list owned by this AlertConfig.
    #[serde(default)]
    pub sync_levels: bool,
    /// Read the service's generated alerts into status and Events.
    #[serde(default)]
    pub read_alerts: bool,
}

/// Observed state of an AlertConfig.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertConfigStatus {
    /// `Ready` is True when the last evaluation and delivery succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Active alerts per level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<AlertCounts>,
    /// The most severe active alerts (at most 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub active_alerts: Vec<ActiveAlert>,
    /// When certificates were last evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluation_time: Option<Time>,
    /// Failed deliveries since the last success, per channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub delivery_failures: Vec<DeliveryFailure>,
}

/// Number of active alerts per level.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertCounts {
    /// INFO alerts.
    pub info: i64,
    /// WARN alerts.
    pub warn: i64,
    /// HIGH alerts.
    pub high: i64,
    /// ERROR alerts.
    pub error: i64,
}

/// One active alert.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveAlert {
    /// Severity.
    pub level: Level,
    /// What the alert is about: `Certificate namespace/name`, a discovered endpoint or a host.
    pub subject: String,
    /// End of validity of the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// Whole days of validity left (negative when expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_days: Option<i64>,
    /// When the alert was first raised.
    pub since: Time,
}

/// Delivery failures of one channel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryFailure {
    /// `email`, `webhook/<index>` or `certMgmt`.
    pub channel: String,
    /// Consecutive failures.
    pub count: i64,
    /// The last error, without credentials.
    pub last_error: String,
    /// When it last failed.
    pub last_failure_time: Time,
}
