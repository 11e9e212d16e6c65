//! The simulated CertMgmt database: hosts with their keys and reported certificates, the audit
//! log, email lists, the four level configurations, the node configuration, and the alerts the
//! evaluation generated (with the emails it would send), all on a clock tests can move.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    time::Duration,
};

use jiff::{SignedDuration, Timestamp, civil::Date, tz::TimeZone};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One day.
const DAY: SignedDuration = SignedDuration::from_hours(24);

/// A certificate-expiry level (§6, "Levels").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
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

impl Level {
    /// Every level, least severe first.
    pub const ALL: [Level; 4] = [Self::Info, Self::Warn, Self::High, Self::Error];

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::High => "HIGH",
            Self::Error => "ERROR",
        }
    }

    /// Exactly `INFO`, `WARN`, `HIGH` or `ERROR`.
    // Inferred (spec §6.4): paths and queries name levels in upper case only; `warn` is unknown.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|level| level.as_str() == text)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level's configuration (§6.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelSettings {
    /// `enabled`.
    pub enabled: bool,
    /// `email_list_ids`.
    pub email_list_ids: Vec<i64>,
    /// `remaining_days`.
    pub remaining_days: i64,
}

/// The host-unavailability configuration (§6.5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSettings {
    /// `enabled`.
    pub enabled: bool,
    /// `email_list_ids`.
    pub email_list_ids: Vec<i64>,
    /// `max_days_checkin_delay`.
    pub max_days_checkin_delay: i64,
}

/// What a generated alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    /// A certificate reached a level's `remaining_days`.
    Certificate,
    /// A host did not check in for `max_days_checkin_delay` days.
    Node,
}

impl AlertKind {
    /// The API spelling (`type` of the host alerts).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Certificate => "certificate",
            Self::Node => "node",
        }
    }
}

/// One certificate as an agent reported it: the wire values, dates already checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedCertificate {
    /// `service_name`.
    pub service_name: String,
    /// `cert_sn`.
    pub cert_sn: String,
    /// `cert_type`: `Root`, `Intermediate` or `Public`.
    pub cert_type: String,
    /// `cert_issuer`.
    pub cert_issuer: String,
    /// `cert_subject`.
    pub cert_subject: String,
    /// `leaf_cert_cn`.
    pub leaf_cert_cn: String,
    /// `leaf_cert_sn`.
    pub leaf_cert_sn: String,
    /// `cert_cn`.
    pub cert_cn: String,
    /// `cert_sans`.
    pub cert_sans: Vec<String>,
    /// `cert_not_before`, `YYYYMMDDHHMMSSZ`.
    pub cert_not_before: String,
    /// `cert_not_after`, `YYYYMMDDHHMMSSZ`.
    pub cert_not_after: String,
    /// `cert_modified_date`, `YYYYMMDDHHMMSSZ`.
    pub cert_modified_date: String,
    /// `cert_path`.
    pub cert_path: String,
}

/// A reported certificate with its parsed expiry.
#[derive(Clone, Debug)]
pub struct Inventoried {
    pub certificate: ReportedCertificate,
    pub not_after: Timestamp,
}

/// An onboarded host.
#[derive(Clone)]
pub struct Host {
    pub id: String,
    pub hostname: String,
    pub server_type: String,
    pub onboarding_time: Timestamp,
    pub secret_key: String,
    pub old_secret_key: Option<String>,
    pub secret_update_time: Timestamp,
    pub last_contact_time: Timestamp,
    pub certificates: Vec<Inventoried>,
    /// Agent reports received.
    pub reports: u64,
}

impl fmt::Debug for Host {
    // Hand-written so the keys never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("id", &self.id)
            .field("hostname", &self.hostname)
            .field("certificates", &self.certificates.len())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// The host object of onboarding and `GET /certmgmt/host/<id>` (§6.2).
    pub fn to_json(&self) -> Value {
        json!({
            "url": format!("certmgmt/host/{}", self.id),
            "id": self.id,
            "hostname": self.hostname,
            "server_type": self.server_type,
            "onboarding_time": isoformat(self.onboarding_time),
            "secret_key": self.secret_key,
            // Inferred (spec §6.2): before any rotation there is no previous key; we send null.
            "old_secret_key": self.old_secret_key,
            "secret_update_time": isoformat(self.secret_update_time),
            "last_contact_time": isoformat(self.last_contact_time),
        })
    }
}

/// One audit log entry (§6.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// `id`.
    pub id: i64,
    /// `datetime`, isoformat.
    pub datetime: String,
    /// `host_id`.
    pub host_id: String,
    /// `activity`.
    pub activity: String,
    /// `details`.
    pub details: String,
    /// When, as a timestamp (not serialized; `None` after a round trip through JSON).
    #[serde(skip)]
    pub at: Option<Timestamp>,
}

/// An email list (§6.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailListEntry {
    /// `email_list_id`.
    pub email_list_id: i64,
    /// `email_list_name`.
    pub email_list_name: String,
    /// `to`.
    pub to: Vec<String>,
    /// `cc`.
    pub cc: Vec<String>,
}

impl EmailListEntry {
    /// The response object (§6.3), `url` singular.
    pub fn to_json(&self) -> Value {
        json!({
            "url": format!("certmgmt/email_list/{}", self.email_list_id),
            "email_list_id": self.email_list_id,
            // Inferred (spec §6.3): 000's responses omit the name; we include it so a client can
            // match lists by name.
            "email_list_name": self.email_list_name,
            "to": self.to,
            "cc": self.cc,
        })
    }
}

/// A generated alert (§6.6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimAlert {
    /// `type`.
    #[serde(rename = "type")]
    pub kind: AlertKind,
    /// `level`: certificate alerts only.
    pub level: Option<Level>,
    /// `host_id`.
    pub host_id: String,
    /// `datetime`, isoformat.
    pub datetime: String,
    /// `details`: `title` and open keys.
    pub details: Map<String, Value>,
    /// When, as a timestamp (not serialized; `None` after a round trip through JSON).
    #[serde(skip)]
    pub at: Option<Timestamp>,
}

impl SimAlert {
    /// The record of the level and node queries (no `type` or `level`, §6.6).
    pub fn to_json(&self) -> Value {
        json!({"datetime": self.datetime, "host_id": self.host_id, "details": self.details})
    }

    /// The record of the host query: plus `type` and `level` (§6.6).
    pub fn to_host_json(&self) -> Value {
        json!({
            "type": self.kind.as_str(),
            // Inferred (spec §6.6): node alerts have no level (§6.5 configures none); null.
            "level": self.level.map(Level::as_str),
            "host_id": self.host_id,
            "datetime": self.datetime,
            "details": self.details,
        })
    }

    /// `details.title`.
    pub fn title(&self) -> &str {
        self.details
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The UTC date the alert was generated on, for the `from_dt`/`to_dt` filters.
    pub fn date(&self) -> Option<Date> {
        self.at.map(|at| at.to_zoned(TimeZone::UTC).date())
    }
}

/// An email the service would have sent for an alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingEmail {
    /// The alert's `details.title`.
    pub subject: String,
    /// `to` of every list the configuration names, deduplicated, in list order.
    pub to: Vec<String>,
    /// `cc` likewise.
    pub cc: Vec<String>,
    /// The configuration's `email_list_ids` at generation time.
    pub email_list_ids: Vec<i64>,
    /// The alert's host.
    pub host_id: String,
    /// `certificate` or `node`.
    #[serde(rename = "type")]
    pub kind: AlertKind,
    /// The alert's level (certificate alerts).
    pub level: Option<Level>,
}

/// The whole simulated state.
#[derive(Debug)]
pub struct Store {
    /// Added to the wall clock: the simulated present.
    offset: SignedDuration,
    pub started: Timestamp,
    pub hosts: BTreeMap<String, Host>,
    /// Every host id ever onboarded (audit logs and alerts outlive offboarding).
    pub known_hosts: BTreeSet<String>,
    pub audit: Vec<AuditEntry>,
    next_audit_id: i64,
    pub email_lists: BTreeMap<i64, EmailListEntry>,
    next_email_list_id: i64,
    pub levels: BTreeMap<Level, LevelSettings>,
    pub node: NodeSettings,
    pub alerts: Vec<SimAlert>,
    pub outbox: Vec<OutgoingEmail>,
    /// (host id, level, serial, issuer) of every certificate alert generated.
    alerted_certificates: BTreeSet<(String, Level, String, String)>,
    /// (host id, last contact) of every node alert: one per unavailability period.
    alerted_nodes: BTreeSet<(String, Timestamp)>,
    pub last_evaluation: Option<Timestamp>,
    pub agent_reports: u64,
    pub last_agent_report: Option<Timestamp>,
}

impl Store {
    pub fn new(levels: BTreeMap<Level, LevelSettings>, node: NodeSettings) -> Self {
        Self {
            offset: SignedDuration::ZERO,
            started: Timestamp::now(),
            hosts: BTreeMap::new(),
            known_hosts: BTreeSet::new(),
            audit: Vec::new(),
            next_audit_id: 1,
            email_lists: BTreeMap::new(),
            next_email_list_id: 1,
            levels,
            node,
            alerts: Vec::new(),
            outbox: Vec::new(),
            alerted_certificates: BTreeSet::new(),
            alerted_nodes: BTreeSet::new(),
            last_evaluation: None,
            agent_reports: 0,
            last_agent_report: None,
        }
    }

    /// The simulated present.
    pub fn now(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(self.offset)
            .unwrap_or_else(|_| Timestamp::now())
    }

    /// Moves the simulated clock forward.
    pub fn advance_clock(&mut self, by: Duration) {
        let by = SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX);
        self.offset = self.offset.saturating_add(by);
        tracing::info!(?by, offset = ?self.offset, "CertMgmt clock advanced");
    }

    /// Appends an audit entry at the simulated present.
    // Inferred (spec §6.2): 000 leaves the audit fields untyped; `id` is an integer counting from 1,
    // `details` a sentence, and the activities are ours: HOST_ONBOARDED, CERTIFICATES_REPORTED,
    // HOST_OFFBOARDED, SECRET_KEY_ROTATED.
    pub fn record_audit(&mut self, host_id: &str, activity: &str, details: String) {
        let at = self.now();
        self.audit.push(AuditEntry {
            id: self.next_audit_id,
            datetime: isoformat(at),
            host_id: host_id.to_owned(),
            activity: activity.to_owned(),
            details,
            at: Some(at),
        });
        self.next_audit_id += 1;
    }

    /// Creates a list with the next id.
    // Inferred (spec §6.3): ids are integers counting from 1 (000 renders them unquoted); names
    // need not be unique (000 states no constraint).
    pub fn create_email_list(&mut self, name: String, to: Vec<String>, cc: Vec<String>) -> &EmailListEntry {
        let id = self.next_email_list_id;
        self.next_email_list_id += 1;
        self.email_lists.entry(id).or_insert(EmailListEntry {
            email_list_id: id,
            email_list_name: name,
            to,
            cc,
        })
    }

    /// Deletes a list and strips it from every configuration; the `affected_criteria` URLs of
    /// the configurations that referenced it, node first then the levels in order (000's
    /// example order). `None`: no such list.
    // Inferred (spec §6.3): whether the id is stripped is undocumented; we strip it and report.
    pub fn delete_email_list(&mut self, id: i64) -> Option<Vec<String>> {
        self.email_lists.remove(&id)?;
        let mut affected = Vec::new();
        if self.node.email_list_ids.contains(&id) {
            self.node.email_list_ids.retain(|other| *other != id);
            affected.push("certmgmt/node_criteria".to_owned());
        }
        for (level, settings) in &mut self.levels {
            if settings.email_list_ids.contains(&id) {
                settings.email_list_ids.retain(|other| *other != id);
                affected.push(format!("certmgmt/cert_criteria/{level}"));
            }
        }
        Some(affected)
    }

    /// Evaluates every host against the configuration at the simulated present (§8.5) and
    /// returns the alerts generated now.
    ///
    /// - Certificate alerts: for each enabled level, a reported certificate whose
    ///   `cert_not_after` is at most `remaining_days` days away (or past) gets one alert per level,
    ///   ever: the same certificate (serial and issuer) on the same host never alerts twice at a
    ///   level.
    /// - Node alerts: with the node configuration enabled, a host whose `last_contact_time` is
    ///   more than `max_days_checkin_delay` days ago gets one alert per unavailability period (a
    ///   period ends when the host reports again).
    // Inferred (spec §8.5): levels fire independently (a certificate 5 days from expiry under
    // 90/30/14/7 raises INFO, WARN, HIGH and ERROR at once); a certificate is identified by host,
    // serial and issuer and alerts once per level, ever; "unavailable" is strictly more than
    // `max_days_checkin_delay` days since `last_contact_time`, and a period is identified by that
    // time; a configuration without email lists still generates alerts (they are the report) but
    // mails no one.
    pub fn evaluate(&mut self) -> Vec<SimAlert> {
        let now = self.now();
        let mut generated = Vec::new();
        for host in self.hosts.values() {
            for entry in &host.certificates {
                for (level, settings) in &self.levels {
                    let key = (
                        host.id.clone(),
                        *level,
                        entry.certificate.cert_sn.clone(),
                        entry.certificate.cert_issuer.clone(),
                    );
                    if settings.enabled
                        && expires_within(entry.not_after, now, settings.remaining_days)
                        && self.alerted_certificates.insert(key)
                    {
                        generated.push(certificate_alert(host, entry, *level, now));
                    }
                }
            }
            if self.node.enabled
                && now.duration_since(host.last_contact_time) > days(self.node.max_days_checkin_delay)
                && self
                    .alerted_nodes
                    .insert((host.id.clone(), host.last_contact_time))
            {
                generated.push(node_alert(host, self.node.max_days_checkin_delay, now));
            }
        }
        for alert in &generated {
            let list_ids = match alert.level {
                Some(level) => self
                    .levels
                    .get(&level)
                    .map(|settings| settings.email_list_ids.clone())
                    .unwrap_or_default(),
                None => self.node.email_list_ids.clone(),
            };
            if let Some(email) = self.email_for(alert, list_ids) {
                self.outbox.push(email);
            }
        }
        self.alerts.extend(generated.iter().cloned());
        self.last_evaluation = Some(now);
        if !generated.is_empty() {
            tracing::info!(alerts = generated.len(), "CertMgmt alerts generated");
        }
        generated
    }

    fn email_for(&self, alert: &SimAlert, email_list_ids: Vec<i64>) -> Option<OutgoingEmail> {
        let mut to: Vec<String> = Vec::new();
        let mut cc: Vec<String> = Vec::new();
        for list in email_list_ids.iter().filter_map(|id| self.email_lists.get(id)) {
            for address in &list.to {
                if !to.contains(address) {
                    to.push(address.clone());
                }
            }
            for address in &list.cc {
                if !cc.contains(address) {
                    cc.push(address.clone());
                }
            }
        }
        if to.is_empty() && cc.is_empty() {
            return None;
        }
        Some(OutgoingEmail {
            subject: alert.title().to_owned(),
            to,
            cc,
            email_list_ids,
            host_id: alert.host_id.clone(),
            kind: alert.kind,
            level: alert.level,
        })
    }
}

/// `count` days (saturating).
fn days(count: i64) -> SignedDuration {
    DAY.saturating_mul(i32::try_from(count).unwrap_or(i32::MAX))
}

/// Whether `not_after` is at most `remaining_days` days after `now` (or already past).
fn expires_within(not_after: Timestamp, now: Timestamp, remaining_days: i64) -> bool {
    not_after <= now.checked_add(days(remaining_days)).unwrap_or(Timestamp::MAX)
}

/// Whole days in `duration`, rounded down.
fn whole_days(duration: SignedDuration) -> i64 {
    duration.as_secs().div_euclid(DAY.as_secs())
}

/// The certificate alert of `entry` at `level`.
// Inferred (spec §6.6): 000 names `title`, `cn` and `serial_number` as detail keys; the title
// follows §6.6's example ("Certificate expiring in 30 days"), and the other keys are ours.
fn certificate_alert(host: &Host, entry: &Inventoried, level: Level, now: Timestamp) -> SimAlert {
    let certificate = &entry.certificate;
    let left = entry.not_after.duration_since(now);
    let title = if left.is_negative() {
        format!("Certificate expired {} days ago", whole_days(-left))
    } else {
        format!("Certificate expiring in {} days", whole_days(left))
    };
    let mut details = Map::new();
    details.insert("title".into(), title.into());
    details.insert("cn".into(), certificate.cert_cn.clone().into());
    details.insert("serial_number".into(), certificate.cert_sn.clone().into());
    details.insert("issuer".into(), certificate.cert_issuer.clone().into());
    details.insert("subject".into(), certificate.cert_subject.clone().into());
    details.insert("not_after".into(), certificate.cert_not_after.clone().into());
    details.insert("service_name".into(), certificate.service_name.clone().into());
    details.insert("cert_path".into(), certificate.cert_path.clone().into());
    details.insert("hostname".into(), host.hostname.clone().into());
    details.insert("remaining_days".into(), whole_days(left).into());
    SimAlert {
        kind: AlertKind::Certificate,
        level: Some(level),
        host_id: host.id.clone(),
        datetime: isoformat(now),
        details,
        at: Some(now),
    }
}

/// The node alert of a host silent for more than `max_days_checkin_delay` days.
// Inferred (spec §6.6): 000 names `last_contact_time` as a node alert's detail key; the title
// and the other keys are ours.
fn node_alert(host: &Host, max_days_checkin_delay: i64, now: Timestamp) -> SimAlert {
    let silent = whole_days(now.duration_since(host.last_contact_time));
    let mut details = Map::new();
    details.insert(
        "title".into(),
        format!("Host {} has not checked in for {silent} days", host.hostname).into(),
    );
    details.insert(
        "last_contact_time".into(),
        isoformat(host.last_contact_time).into(),
    );
    details.insert("hostname".into(), host.hostname.clone().into());
    details.insert("max_days_checkin_delay".into(), max_days_checkin_delay.into());
    SimAlert {
        kind: AlertKind::Node,
        level: None,
        host_id: host.id.clone(),
        datetime: isoformat(now),
        details,
        at: Some(now),
    }
}

/// Python `datetime.isoformat()` of a naive UTC datetime: `2024-05-01T10:00:00.123456`, the
/// fraction left out when it is zero, as Python does.
// Inferred (spec §6 "Formats"): 000 shows `<datetime.isoformat()>` only; we render naive UTC
// (no offset), the likelier reading of a Python service storing `datetime.utcnow()`.
pub fn isoformat(at: Timestamp) -> String {
    let civil = at.to_zoned(TimeZone::UTC).datetime();
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        civil.year(),
        civil.month(),
        civil.day(),
        civil.hour(),
        civil.minute(),
        civil.second()
    );
    match civil.subsec_nanosecond() / 1000 {
        0 => base,
        micros => format!("{base}.{micros:06}"),
    }
}

/// Python `str(timedelta)` without microseconds: `0:05:00`, `1 day, 3:04:05`, `2 days, 0:00:00`.
// Inferred (spec §6.1): `up_time` is documented as "<no_of_days/hours/mins/seconds>".
pub fn python_timedelta(duration: SignedDuration) -> String {
    let total = duration.as_secs().max(0);
    let (days, rest) = (total / 86_400, total % 86_400);
    let clock = format!("{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    match days {
        0 => clock,
        1 => format!("1 day, {clock}"),
        days => format!("{days} days, {clock}"),
    }
}
