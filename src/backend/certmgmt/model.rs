//! Request and response bodies of the CertMgmt API (`scm-discovery-alerts.md` §6), spelled as the
//! vendor spells them (snake case, `build-no` hyphenated), and the four date formats it mixes:
//! Python `isoformat()` timestamps in responses, `YYYY-MM-DD` audit query dates, `YYYYMMDD` alert
//! query dates and `YYYYMMDDHHMMSSZ` agent certificate dates.
//!
//! Responses are read leniently (missing fields default, unknown fields are ignored, ids may be
//! numbers or strings) because 000 shows placeholders, not values; a timestamp that is present
//! but does not parse is still a malformed response.

use std::{collections::BTreeMap, fmt, str::FromStr};

use jiff::{
    Timestamp,
    civil::{Date, DateTime},
    tz::TimeZone,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::pki::credentials::SecretString;

// ---------------------------------------------------------------------------------------------
// Levels and alert types
// ---------------------------------------------------------------------------------------------

/// A certificate-expiry alert level (§6, "Levels"): a fixed set, read and written per level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlertLevel {
    /// `INFO`.
    #[serde(rename = "INFO")]
    Info,
    /// `WARN`.
    #[serde(rename = "WARN")]
    Warn,
    /// `HIGH`.
    #[serde(rename = "HIGH")]
    High,
    /// `ERROR`.
    #[serde(rename = "ERROR")]
    Error,
}

impl AlertLevel {
    /// Every level, least severe first.
    pub const ALL: [AlertLevel; 4] = [Self::Info, Self::Warn, Self::High, Self::Error];

    /// The level as the API spells it in paths, bodies and queries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::High => "HIGH",
            Self::Error => "ERROR",
        }
    }
}

impl fmt::Display for AlertLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AlertLevel {
    type Err = String;

    /// Exactly `INFO`, `WARN`, `HIGH` or `ERROR`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|level| level.as_str() == text)
            .ok_or_else(|| format!("unknown alert level {text:?}"))
    }
}

/// What a generated alert is about (§6.6, the host alerts' `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertType {
    /// `certificate`: a reported certificate reached a level's `remaining_days`.
    Certificate,
    /// `node`: a host did not check in for `max_days_checkin_delay` days.
    Node,
}

impl AlertType {
    /// The value as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Certificate => "certificate",
            Self::Node => "node",
        }
    }
}

impl fmt::Display for AlertType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// §6.1 Service
// ---------------------------------------------------------------------------------------------

/// `GET /certmgmt/status` (§6.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ServiceStatus {
    /// `url`: `certmgmt/status`.
    pub url: String,
    /// `description`: `CertMgmt Service Status Snapshot`.
    pub description: String,
    /// `version`: the Cloud-Connect version.
    pub version: String,
    /// `build-no` (hyphenated on the wire).
    #[serde(rename = "build-no")]
    pub build_no: String,
    /// `status`: `IN_SERVICE` (other values are undocumented).
    pub status: String,
    /// `status_data`: the message when the service fails.
    #[serde(deserialize_with = "string_or_null")]
    pub status_data: String,
    /// `server_time`.
    #[serde(deserialize_with = "iso_option")]
    pub server_time: Option<Timestamp>,
    /// `up_since`.
    #[serde(deserialize_with = "iso_option")]
    pub up_since: Option<Timestamp>,
    /// `up_time`: days/hours/mins/seconds, kept as sent.
    #[serde(deserialize_with = "string_or_null")]
    pub up_time: String,
    /// `db_status`: `IN_SERVICE`.
    pub db_status: String,
    /// `cluster`.
    pub cluster: Cluster,
    /// `onboard_count`: active onboarded hosts.
    pub onboard_count: Option<i64>,
    /// `managed_hosts`: only with `detail=true`.
    pub managed_hosts: Vec<ManagedHost>,
}

impl ServiceStatus {
    /// Whether both the service and its database report `IN_SERVICE`.
    pub fn in_service(&self) -> bool {
        self.status == "IN_SERVICE" && self.db_status == "IN_SERVICE"
    }
}

/// `cluster` of the status (§6.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Cluster {
    /// `nodes`.
    pub nodes: Vec<ClusterNode>,
}

/// One `cluster.nodes[]` entry (§6.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ClusterNode {
    /// `primary`.
    pub primary: bool,
    /// `host_fqdn`.
    pub host_fqdn: String,
}

/// One `managed_hosts[]` entry of the detailed status (§6.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ManagedHost {
    /// `url`: `certmgmt/host/<id>`.
    pub url: String,
    /// `host_id`.
    #[serde(deserialize_with = "id_string")]
    pub host_id: String,
    /// `hostname`.
    pub hostname: String,
    /// `last_contact_time`.
    #[serde(deserialize_with = "iso_option")]
    pub last_contact_time: Option<Timestamp>,
}

/// One metric of `GET /certmgmt/metrics` (§6.1).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Metric {
    /// `desc`.
    pub desc: String,
    /// `unit`: `ms` or `datetime`.
    pub unit: String,
    /// `value`: any JSON.
    pub value: serde_json::Value,
    /// `statistics`: `COUNT` or `VALUE`.
    pub statistics: String,
}

/// `OS` of `GET /certmgmt/modules` (§6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleOs {
    /// `win`.
    Win,
    /// `vos`.
    Vos,
}

impl ModuleOs {
    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Win => "win",
            Self::Vos => "vos",
        }
    }
}

/// `module` of `GET /certmgmt/modules` (§6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// `discovery`: needs only `OS`.
    Discovery,
    /// `certfinder`: needs `Component` and `Version` too.
    Certfinder,
    /// `upload`: needs `Component` and `Version` too.
    Upload,
}

impl ModuleKind {
    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discovery => "discovery",
            Self::Certfinder => "certfinder",
            Self::Upload => "upload",
        }
    }
}

/// Which client script `GET /certmgmt/modules` should return (§6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleRequest {
    /// `OS`.
    pub os: ModuleOs,
    /// `module`.
    pub module: ModuleKind,
    /// `Component` (certfinder and upload).
    pub component: Option<String>,
    /// `Version` (certfinder and upload).
    pub version: Option<String>,
}

impl ModuleRequest {
    /// The query parameters, spelled as 000 spells them (`OS`, `Component`, `Version`, `module`).
    pub(super) fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = vec![("OS", self.os.as_str().to_owned())];
        if let Some(component) = &self.component {
            query.push(("Component", component.clone()));
        }
        if let Some(version) = &self.version {
            query.push(("Version", version.clone()));
        }
        query.push(("module", self.module.as_str().to_owned()));
        query
    }
}

// ---------------------------------------------------------------------------------------------
// §6.2 Hosts and audit
// ---------------------------------------------------------------------------------------------

/// `POST /certmgmt/host` body (§6.2).
#[derive(Debug, Serialize)]
pub(super) struct OnboardBody<'a> {
    pub hostname: &'a str,
    pub server_type: &'a str,
}

/// The host object of onboarding and `GET /certmgmt/host/<id>` (§6.2). `Debug` shows the keys
/// as `SecretString(<redacted>)`; `Display` names the host only.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct HostRecord {
    /// `url`: `certmgmt/host/<id>`.
    #[serde(default)]
    pub url: String,
    /// `id`: the host id (a string in 000; a number is read as its decimal text).
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    /// `hostname`.
    pub hostname: String,
    /// `server_type`.
    #[serde(default, deserialize_with = "string_or_null")]
    pub server_type: String,
    /// `onboarding_time`.
    #[serde(default, deserialize_with = "iso_option")]
    pub onboarding_time: Option<Timestamp>,
    /// `secret_key`: what the agent sends as `Authorization: secret_key=<secret_key>`.
    #[serde(deserialize_with = "secret")]
    pub secret_key: SecretString,
    /// `old_secret_key`: the key before the last rotation (`null` or empty: none).
    #[serde(default, deserialize_with = "secret_option")]
    pub old_secret_key: Option<SecretString>,
    /// `secret_update_time`.
    #[serde(default, deserialize_with = "iso_option")]
    pub secret_update_time: Option<Timestamp>,
    /// `last_contact_time`: the agent's last report.
    #[serde(default, deserialize_with = "iso_option")]
    pub last_contact_time: Option<Timestamp>,
}

impl fmt::Display for HostRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host {} ({}", self.id, self.hostname)?;
        if !self.server_type.is_empty() {
            write!(f, ", {}", self.server_type)?;
        }
        f.write_str(")")
    }
}

/// `GET /certmgmt/host/<id>/auditlogs` (§6.2).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct AuditLogs {
    pub audit_data: Vec<AuditRecord>,
}

/// One `audit_data[]` entry (§6.2).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AuditRecord {
    /// `id` (a number or a string; kept as text).
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    /// `datetime`.
    #[serde(deserialize_with = "iso_option")]
    pub datetime: Option<Timestamp>,
    /// `host_id`.
    #[serde(deserialize_with = "id_string")]
    pub host_id: String,
    /// `activity`.
    #[serde(deserialize_with = "string_or_null")]
    pub activity: String,
    /// `details`: untyped in 000 (probably a string), kept as sent.
    pub details: serde_json::Value,
}

// ---------------------------------------------------------------------------------------------
// §6.3 Email lists
// ---------------------------------------------------------------------------------------------

/// An email list as the service returns it (§6.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EmailList {
    /// `url`: `certmgmt/email_list/<id>` (singular).
    pub url: String,
    /// `email_list_id`.
    #[serde(deserialize_with = "id_i64")]
    pub email_list_id: i64,
    /// `email_list_name`. 000's create response omits it; the client then fills in the name it
    /// sent.
    #[serde(deserialize_with = "string_option")]
    pub email_list_name: Option<String>,
    /// `to`.
    #[serde(deserialize_with = "strings_or_null")]
    pub to: Vec<String>,
    /// `cc`.
    #[serde(deserialize_with = "strings_or_null")]
    pub cc: Vec<String>,
}

/// The content of an email list: the `POST /certmgmt/email_lists` body, and with the id the
/// `PUT /certmgmt/email_lists/<id>` body (§6.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NewEmailList {
    /// `email_list_name`.
    pub email_list_name: String,
    /// `to`.
    pub to: Vec<String>,
    /// `cc` (may be empty).
    pub cc: Vec<String>,
}

/// `PUT /certmgmt/email_lists/<id>` body (§6.3).
// Inferred (spec §6.3): the documented update body is `{url?, email_list_id?, to, cc}`; we send
// `email_list_id` and also `email_list_name`, the create body's field, so a renamed list keeps the
// name a reconcile matches lists by. `url` is left out (it is derived from the id).
#[derive(Debug, Serialize)]
pub(super) struct UpdateEmailListBody<'a> {
    pub email_list_id: i64,
    pub email_list_name: &'a str,
    pub to: &'a [String],
    pub cc: &'a [String],
}

/// `GET /certmgmt/email_lists`: an array, or the single object 000 shows.
// Inferred (spec §6.3): 000 shows one object where a list of lists is expected; both are read.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum EmailListsBody {
    Many(Vec<EmailList>),
    One(EmailList),
}

impl EmailListsBody {
    pub(super) fn into_vec(self) -> Vec<EmailList> {
        match self {
            Self::Many(lists) => lists,
            Self::One(list) => vec![list],
        }
    }
}

/// `DELETE /certmgmt/email_lists/<id>` response (§6.3).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct DeleteEmailListBody {
    pub affected_criteria: Vec<AffectedCriterion>,
}

/// One `affected_criteria[]` entry: an alert configuration that referenced a deleted email list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct AffectedCriterion {
    /// `url`: `certmgmt/node_criteria` or `certmgmt/cert_criteria/<LEVEL>`.
    pub url: String,
}

/// The configuration an [`AffectedCriterion`] names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Criterion {
    /// `certmgmt/node_criteria`: the host-unavailability configuration (§6.5).
    Node,
    /// `certmgmt/cert_criteria/<LEVEL>`: a certificate-expiry level (§6.4).
    Level(AlertLevel),
    /// A URL this client does not know, as sent.
    Other(String),
}

impl AffectedCriterion {
    /// Which configuration the URL names.
    // Inferred (spec §6.3): the `node_criteria` and `cert_criteria/<LEVEL>` URLs are documented
    // nowhere as endpoints; we read them as `node_alert_configs` and `alert_configs/<LEVEL>`.
    pub fn criterion(&self) -> Criterion {
        let path = self.url.trim_start_matches('/');
        if path == "certmgmt/node_criteria" {
            return Criterion::Node;
        }
        path.strip_prefix("certmgmt/cert_criteria/")
            .and_then(|level| level.parse().ok())
            .map_or_else(|| Criterion::Other(self.url.clone()), Criterion::Level)
    }
}

// ---------------------------------------------------------------------------------------------
// §6.4, §6.5 Alert configuration
// ---------------------------------------------------------------------------------------------

/// The configuration of one certificate-expiry level (§6.4): body of GET and PUT
/// `/certmgmt/alert_configs/<LEVEL>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelConfig {
    /// `enabled`.
    pub enabled: bool,
    /// `email_list_ids`.
    #[serde(default)]
    pub email_list_ids: Vec<i64>,
    /// `remaining_days`: alert when a certificate has at most this many days left.
    pub remaining_days: i64,
}

/// The host-unavailability configuration (§6.5): body of GET and PUT
/// `/certmgmt/node_alert_configs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAlertConfig {
    /// `enabled`.
    pub enabled: bool,
    /// `email_list_ids`.
    #[serde(default)]
    pub email_list_ids: Vec<i64>,
    /// `max_days_checkin_delay`: days a host may go without contact before a node alert.
    pub max_days_checkin_delay: i64,
}

// ---------------------------------------------------------------------------------------------
// §6.6 Generated alerts
// ---------------------------------------------------------------------------------------------

/// `{ "alerts": [...] }` of the three alert queries (§6.6).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct AlertsBody {
    pub alerts: Vec<GeneratedAlert>,
}

/// An alert the service generated (and mailed) (§6.6).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GeneratedAlert {
    /// `datetime`: when it was generated.
    #[serde(deserialize_with = "iso_option")]
    pub datetime: Option<Timestamp>,
    /// `host_id`.
    #[serde(deserialize_with = "id_string")]
    pub host_id: String,
    /// `details`: `title` (the email subject) and open keys (`cn`, `serial_number`,
    /// `last_contact_time`, ...).
    pub details: BTreeMap<String, serde_json::Value>,
    /// `type`: sent by the host query; the level and node queries imply it and the client fills
    /// it in.
    // Inferred (spec §6.6): the level and node queries' records carry no `type`/`level`; the
    // query implies them. A `type` or `level` outside the documented values is a malformed
    // response.
    #[serde(rename = "type")]
    pub type_: Option<AlertType>,
    /// `level`: sent by the host query for certificate alerts; the level query implies it and the
    /// client fills it in.
    pub level: Option<AlertLevel>,
}

impl GeneratedAlert {
    /// `details.title`, the email subject.
    pub fn title(&self) -> Option<&str> {
        self.details.get("title").and_then(serde_json::Value::as_str)
    }

    /// A `details` entry as text (strings as they are, other values as JSON).
    pub fn detail(&self, key: &str) -> Option<String> {
        self.details.get(key).map(|value| match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// §6.7 Agent certificate report
// ---------------------------------------------------------------------------------------------

/// `cert_type` of an agent-reported certificate (§6.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AgentCertType {
    /// `Root`.
    Root,
    /// `Intermediate`.
    Intermediate,
    /// `Public`: an end-entity certificate.
    Public,
}

/// One element of the `PUT /certagent/host/<id>/certificates` array (§6.7), fields in the
/// documented order. The three dates are sent as `YYYYMMDDHHMMSSZ` (UTC, whole seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCertificate {
    /// `service_name`: the service that uses the certificate.
    pub service_name: String,
    /// `cert_sn`: serial number.
    pub cert_sn: String,
    /// `cert_type`: `Root`, `Intermediate` or `Public`.
    pub cert_type: AgentCertType,
    /// `cert_issuer`: issuer DN.
    pub cert_issuer: String,
    /// `cert_subject`: subject DN.
    pub cert_subject: String,
    /// `leaf_cert_cn`: CN of the chain's leaf.
    pub leaf_cert_cn: String,
    /// `leaf_cert_sn`: serial of the chain's leaf.
    pub leaf_cert_sn: String,
    /// `cert_cn`: CN.
    pub cert_cn: String,
    /// `cert_sans`: subject alternative names.
    pub cert_sans: Vec<String>,
    /// `cert_not_before`.
    #[serde(with = "agent_time")]
    pub cert_not_before: Timestamp,
    /// `cert_not_after`: drives the expiry alerts.
    #[serde(with = "agent_time")]
    pub cert_not_after: Timestamp,
    /// `cert_modified_date`.
    #[serde(with = "agent_time")]
    pub cert_modified_date: Timestamp,
    /// `cert_path`: path to the certificate or keystore.
    pub cert_path: String,
}

impl AgentCertificate {
    /// The report entry of a DER X.509 certificate: serial, CN, issuer, subject, SANs and
    /// validity from the certificate; the leaf fields name the certificate itself (set them to
    /// the chain's leaf for a `Root` or `Intermediate`).
    // Inferred (spec §6.7): 000 gives no format for the serial or the DNs; we send the serial as
    // upper-case hex without separators (SCM's `details.sn`, §8.4) and the DNs as RFC 4514-style
    // text, and SANs as their bare values (DNS names, IPs, emails, URIs).
    pub fn from_der(
        der: &[u8],
        cert_type: AgentCertType,
        service_name: &str,
        cert_path: &str,
        modified: Timestamp,
    ) -> Result<Self, String> {
        use x509_parser::prelude::{FromDer as _, X509Certificate};
        let info = crate::pki::inspect::inspect(der).map_err(|e| e.to_string())?;
        let (_, parsed) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        let time =
            |seconds: i64| Timestamp::from_second(seconds).map_err(|e| format!("validity out of range: {e}"));
        let serial = info.serial_hex.to_ascii_uppercase();
        let common_name = info.common_name.clone().unwrap_or_default();
        Ok(Self {
            service_name: service_name.to_owned(),
            cert_sn: serial.clone(),
            cert_type,
            cert_issuer: info.issuer.clone(),
            cert_subject: parsed.subject().to_string(),
            leaf_cert_cn: common_name.clone(),
            leaf_cert_sn: serial,
            cert_cn: common_name,
            cert_sans: info
                .dns_names
                .iter()
                .chain(&info.ip_addresses)
                .chain(&info.email_addresses)
                .chain(&info.uris)
                .cloned()
                .collect(),
            cert_not_before: time(info.not_before)?,
            cert_not_after: time(info.not_after)?,
            cert_modified_date: modified,
            cert_path: cert_path.to_owned(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Date formats
// ---------------------------------------------------------------------------------------------

/// `at` as an agent certificate date, `YYYYMMDDHHMMSSZ` in UTC (§6.7); sub-seconds are dropped.
pub fn format_agent_time(at: Timestamp) -> String {
    let utc = at.to_zoned(TimeZone::UTC).datetime();
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        utc.year(),
        utc.month(),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    )
}

/// Reads a `YYYYMMDDHHMMSSZ` date (§6.7): exactly fourteen digits and `Z`, a real UTC time.
pub fn parse_agent_time(text: &str) -> Option<Timestamp> {
    let digits = text.strip_suffix('Z')?;
    if digits.len() != 14 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| digits.get(range)?.parse::<i16>().ok();
    let datetime = DateTime::new(
        number(0..4)?,
        i8::try_from(number(4..6)?).ok()?,
        i8::try_from(number(6..8)?).ok()?,
        i8::try_from(number(8..10)?).ok()?,
        i8::try_from(number(10..12)?).ok()?,
        i8::try_from(number(12..14)?).ok()?,
        0,
    )
    .ok()?;
    datetime
        .to_zoned(TimeZone::UTC)
        .ok()
        .map(|zoned| zoned.timestamp())
}

/// Reads a Python `isoformat()` timestamp (§6, "Formats"): with an offset or `Z` as written,
/// without one as UTC.
// Inferred (spec §6): 000 shows `<datetime.isoformat()>` only; a naive datetime (no zone) is read
// as UTC because a server keeping naive times keeps them in UTC far more often than in local time.
pub fn parse_isoformat(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if let Ok(at) = text.parse::<Timestamp>() {
        return Some(at);
    }
    let datetime: DateTime = text.parse().ok()?;
    datetime
        .to_zoned(TimeZone::UTC)
        .ok()
        .map(|zoned| zoned.timestamp())
}

/// An audit query date, `YYYY-MM-DD` (§6.2).
pub(super) fn audit_date(date: Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
}

/// An alert query date, `YYYYMMDD` (§6.6).
pub(super) fn alert_date(date: Date) -> String {
    format!("{:04}{:02}{:02}", date.year(), date.month(), date.day())
}

/// Serde for `YYYYMMDDHHMMSSZ` fields.
mod agent_time {
    use super::{Deserialize as _, Deserializer, Serializer, Timestamp, de};

    pub fn serialize<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_agent_time(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_agent_time(&text)
            .ok_or_else(|| de::Error::custom(format!("{text:?} is not a YYYYMMDDHHMMSSZ date")))
    }
}

// ---------------------------------------------------------------------------------------------
// Lenient deserializers
// ---------------------------------------------------------------------------------------------

/// An isoformat timestamp; `null`, empty or absent is `None`, anything else unparsable an error.
fn iso_option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Timestamp>, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(text) if text.trim().is_empty() => Ok(None),
        Some(text) => parse_isoformat(&text)
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("{text:?} is not an isoformat timestamp"))),
    }
}

/// An id given as a string or a number, as text.
fn id_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Signed(i64),
        Unsigned(u64),
        Null(()),
    }
    Ok(match Id::deserialize(deserializer)? {
        Id::Text(text) => text,
        Id::Signed(number) => number.to_string(),
        Id::Unsigned(number) => number.to_string(),
        Id::Null(()) => String::new(),
    })
}

/// An integer id given as a number or as its decimal text.
fn id_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(i64),
        Text(String),
    }
    match Id::deserialize(deserializer)? {
        Id::Number(number) => Ok(number),
        Id::Text(text) => text
            .trim()
            .parse()
            .map_err(|_| de::Error::custom(format!("{text:?} is not an integer id"))),
    }
}

fn string_or_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

fn string_option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(deserializer)
}

fn strings_or_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

fn secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SecretString, D::Error> {
    String::deserialize(deserializer).map(SecretString::new)
}

/// `old_secret_key`: `null`, absent or empty is no key.
// Inferred (spec §6.2): before any rotation there is no previous key; 000 shows only the placeholder.
fn secret_option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SecretString>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?
        .filter(|key| !key.is_empty())
        .map(SecretString::new))
}
