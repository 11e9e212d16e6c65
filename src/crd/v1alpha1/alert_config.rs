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
    /// Alert levels; each of INFO, WARN, HIGH and ERROR at most once, a more severe level never
    /// with more `remainingDays` than a milder one. A certificate is at the most severe enabled
    /// level whose `remainingDays` it has reached; an expired certificate is always ERROR.
    /// Empty or absent: INFO 60, WARN 30, HIGH 14 and ERROR 7 days ([`DEFAULT_LEVELS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = kube::core::Rule::new("self.all(l, self.exists_one(m, m.level == l.level))")
        .message("each level (INFO, WARN, HIGH, ERROR) may appear at most once"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(a, self.all(b, !({'INFO': 0, 'WARN': 1, 'HIGH': 2, 'ERROR': 3}[a.level] < {'INFO': 0, 'WARN': 1, 'HIGH': 2, 'ERROR': 3}[b.level]) || a.remainingDays >= b.remainingDays))")
        .message("remainingDays must not grow with severity: INFO >= WARN >= HIGH >= ERROR"))]
    #[schemars(length(max = 4))]
    pub levels: Vec<AlertLevel>,
    /// Which certificates are watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<AlertScope>,
    /// Where alerts go besides Kubernetes Events (always emitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<AlertChannels>,
    /// Send an alert that is still active again after this long (default `24h`, at least
    /// `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('1m')").message("repeatInterval must be at least 1m"))]
    pub repeat_interval: Option<String>,
    /// Alert when a discovery target has been unreachable for too long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_unavailability: Option<HostUnavailability>,
    /// Sync levels and email lists to a CertMgmt service and read back its generated alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_mgmt: Option<CertMgmtSync>,
}

/// The levels used when `spec.levels` is empty: `(level, remainingDays)`.
pub const DEFAULT_LEVELS: [(Level, i32); 4] = [
    (Level::INFO, 60),
    (Level::WARN, 30),
    (Level::HIGH, 14),
    (Level::ERROR, 7),
];

/// Severity level (the CertMgmt service's names), in rising severity.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
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
    /// SMTP server port (default 587 for `StartTLS`, 465 for `TLS`, 25 for `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub smtp_port: Option<i32>,
    /// `StartTLS` (default), `TLS` or `None`.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// Secret with `username` and `password` keys for SMTP authentication (none: no AUTH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
    /// Sender address.
    #[schemars(length(min = 3, max = 320))]
    pub from: String,
    /// Recipients.
    #[schemars(length(min = 1, max = 50), inner(length(min = 3, max = 320)))]
    pub to: Vec<String>,
    /// PEM bundle of CAs trusted for the SMTP server's certificate, in addition to the system
    /// roots (a relay with a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,
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
    /// Secret key holding a token sent as `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<NamespacedSecretKeySelector>,
    /// PEM bundle of CAs trusted for the webhook's certificate, in addition to the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,
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

/// CertMgmt service synchronisation (`scm-discovery-alerts.md` §8.4). The service's alert state
/// is global, so at most one AlertConfig may sync with one URL; a second is `Ready=False
/// reason=Conflict`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertMgmtSync {
    /// CertMgmt service base URL, e.g. `https://cc.example.com:8445`.
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('https://')").message("url must start with https://"))]
    #[schemars(length(min = 9, max = 2048))]
    pub url: String,
    /// A Secret with the service's Basic credentials under the keys `username` and `password`.
    pub credentials_secret_ref: SecretReference,
    /// PEM bundle of CAs trusted for the service, in addition to the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,
    /// Push the levels, the host-unavailability setting and `channels.email.to` (as the email
    /// list `emailListName`, owned by this AlertConfig) to the service (default true).
    #[serde(default = "default_true")]
    pub sync_levels: bool,
    /// Name of the email list this AlertConfig owns at the service (default
    /// `pki-operator-<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub email_list_name: Option<String>,
    /// Read the service's generated alerts into status and Events (default true).
    #[serde(default = "default_true")]
    pub read_alerts: bool,
    /// How often generated alerts are read and drift is checked (default `15m`, at least
    /// `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('10s')").message("pollInterval must be at least 10s"))]
    pub poll_interval: Option<String>,
}

/// A Secret by name and namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
}

/// Observed state of an AlertConfig.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertConfigStatus {
    /// `Ready` is True when the last evaluation and every delivery succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Certificates in scope at the last evaluation (managed and discovered).
    #[serde(default)]
    pub evaluated: i64,
    /// Active alerts per level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<AlertCounts>,
    /// The most urgent active alerts (at most 20; `counts` counts all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub active_alerts: Vec<ActiveAlert>,
    /// When certificates were last evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluation_time: Option<Time>,
    /// When the next threshold crossing or repeat is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_evaluation_time: Option<Time>,
    /// Delivery state per channel (`event`, `email`, `webhook/<index>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub channels: Vec<ChannelStatus>,
    /// What the CertMgmt service holds and reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_mgmt: Option<CertMgmtStatus>,
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
    /// ERROR alerts (expiring within the ERROR threshold, or expired).
    pub error: i64,
    /// Discovery targets unreachable for longer than `hostUnavailability.maxDaysCheckinDelay`.
    #[serde(default)]
    pub unavailable_hosts: i64,
}

/// One active alert.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveAlert {
    /// Severity.
    pub level: Level,
    /// What the alert is about: `Certificate namespace/name`, `discovered <location>` or
    /// `host <target>`.
    pub subject: String,
    /// End of validity of the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// Whole days of validity left (negative when expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_days: Option<i64>,
    /// When the alert was first raised at this level.
    pub since: Time,
}

/// Delivery state of one channel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelStatus {
    /// `event`, `email` or `webhook/<index>`.
    pub channel: String,
    /// When a notification last went out on this channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_time: Option<Time>,
    /// Notifications sent on this channel since the AlertConfig was created.
    #[serde(default)]
    pub delivered: i64,
    /// Consecutive failed attempts since the last success (retried with backoff).
    #[serde(default)]
    pub consecutive_failures: i64,
    /// The last error, without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// Notifications waiting for this channel to work again.
    #[serde(default)]
    pub pending: i64,
}

/// The CertMgmt side of an AlertConfig.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertMgmtStatus {
    /// The service URL this status describes.
    pub url: String,
    /// Id of the email list this AlertConfig owns at the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_list_id: Option<i64>,
    /// When levels and lists were last pushed and read back unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Generated alerts were read up to this time (the high-water mark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_alert_poll: Option<Time>,
    /// Generated alerts read since the AlertConfig was created, per level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_counts: Option<AlertCounts>,
    /// The last sync or poll error, without credentials (cleared by the next success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The latest generated alerts (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub recent_alerts: Vec<GeneratedAlertSummary>,
}

/// One alert the CertMgmt service generated.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedAlertSummary {
    /// `INFO`, `WARN`, `HIGH`, `ERROR`, or `NODE` for host unavailability.
    pub level: String,
    /// The service's time of the alert (as it wrote it).
    pub datetime: String,
    /// The host the alert is about.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_id: String,
    /// The alert's title (its email subject).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// Common name of the certificate, for certificate alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cn: Option<String>,
    /// Serial number of the certificate, for certificate alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
}
