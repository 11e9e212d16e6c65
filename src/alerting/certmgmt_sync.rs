//! The CertMgmt side of an AlertConfig without Kubernetes (`scm-discovery-alerts.md` §8.4): what
//! the spec wants at the service ([`desired_from_spec`]), pushing it with read-before-write and
//! read-back drift checks ([`push`]), reading the generated alerts past a high-water mark
//! ([`read_alerts`]) and undoing it all on deletion ([`teardown`]).
//!
//! Ownership model. The service's alert state is global (four fixed levels, one node
//! configuration), and an AlertConfig is the only one syncing with its endpoint (a second one is
//! `Conflict`), so the AlertConfig owns all four levels and the node configuration outright: a
//! push overwrites whatever it finds there, including email lists someone else attached. Of the
//! shared pool of email lists it owns exactly one, matched by name (`emailListName`); other lists
//! are never touched.
//!
//! Empty recipients. The service refuses a list without `to` addresses (and an empty list would
//! mail no one anyway), so with no `channels.email.to` the AlertConfig wants *no* list: levels are
//! pushed with `email_list_ids: []` (the service still generates alerts, which we read back), and
//! an owned list left from an earlier push is deleted once no configuration references it.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp, civil::Date, tz::TimeZone};

use crate::{
    backend::certmgmt::{
        AlertLevel, CertMgmtClient, CertMgmtError, EmailList, GeneratedAlert, LevelConfig, NewEmailList,
        NodeAlertConfig, parse_isoformat,
    },
    crd::v1alpha1::alert_config::{
        AlertConfigSpec, AlertCounts, DEFAULT_LEVELS, GeneratedAlertSummary, Level,
    },
};

/// How far back the first poll reads, when there is no high-water mark yet.
pub const FIRST_POLL_LOOKBACK: SignedDuration = SignedDuration::from_hours(7 * 24);

/// Most new alerts one poll returns (the newest); the rest are only counted.
pub const MAX_NEW_ALERTS: usize = 100;

/// The level name of host-unavailability alerts in [`GeneratedAlertSummary::level`].
pub const NODE_LEVEL: &str = "NODE";

/// What the AlertConfig wants at the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredAlerting {
    /// Name of the one email list the AlertConfig owns.
    pub email_list_name: String,
    /// Its `to` recipients (`spec.channels.email.to`). Empty: no list is wanted (module docs).
    pub to: Vec<String>,
    /// Every one of the four levels once, least severe first: `(level, enabled, remaining_days)`.
    /// Levels absent from the spec are disabled with their default days.
    pub levels: Vec<(Level, bool, i32)>,
    /// Host unavailability `(enabled, max_days_checkin_delay)`; `None` disables it at the service
    /// and keeps the service's day count.
    pub node: Option<(bool, i32)>,
}

/// The result of a [`push`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Id of the owned email list; `None` when no list is wanted.
    pub email_list_id: Option<i64>,
    /// Every write the push made, as a sentence naming what was found and what it is now (e.g.
    /// `WARN remaining_days 45 -> 30`). The first push lists the initial settings; afterwards a
    /// non-empty list means someone changed the service behind our back. Empty: in sync.
    pub corrected: Vec<String>,
}

/// The result of a [`read_alerts`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Poll {
    /// Alerts not seen before, newest first, at most [`MAX_NEW_ALERTS`].
    pub new_alerts: Vec<GeneratedAlertSummary>,
    /// All new alerts per level (including those beyond [`MAX_NEW_ALERTS`]); `NODE` alerts count
    /// as `unavailable_hosts`.
    pub new_counts: AlertCounts,
    /// The next poll's `since`: the newest alert time read, never earlier than `since`.
    pub high_water: Timestamp,
}

/// What went wrong while syncing, named for the action that failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A call to the service failed.
    #[error("cannot {action}: {source}")]
    Call {
        /// What we were doing, e.g. `write alert level WARN`.
        action: String,
        /// The client's error (never carries credentials).
        #[source]
        source: CertMgmtError,
    },
    /// A write was accepted but reading it back shows something else.
    #[error("CertMgmt did not keep {what}: wrote {wanted}, read back {found}")]
    NotApplied {
        /// What was written, e.g. `alert level WARN`.
        what: String,
        /// What we wrote.
        wanted: String,
        /// What the service holds.
        found: String,
    },
}

impl SyncError {
    /// A bounded PascalCase name of the error kind, for condition reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Call { source, .. } => source.reason(),
            Self::NotApplied { .. } => "NotApplied",
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Call { source, .. } => source.is_transient(),
            // Another writer racing us or a service quirk; the next poll reads again.
            Self::NotApplied { .. } => true,
        }
    }
}

/// Attaches the action to a client error.
fn doing(action: impl FnOnce() -> String) -> impl FnOnce(CertMgmtError) -> SyncError {
    move |source| SyncError::Call {
        action: action(),
        source,
    }
}

/// The client's spelling of a level.
fn wire(level: Level) -> AlertLevel {
    match level {
        Level::INFO => AlertLevel::Info,
        Level::WARN => AlertLevel::Warn,
        Level::HIGH => AlertLevel::High,
        Level::ERROR => AlertLevel::Error,
    }
}

// ---------------------------------------------------------------------------------------------
// Spec
// ---------------------------------------------------------------------------------------------

/// What `spec` wants at the service, or `None` when it does not push (`spec.certMgmt` absent or
/// `syncLevels: false`). The list is `emailListName`, default `pki-operator-<name>`.
pub fn desired_from_spec(name: &str, spec: &AlertConfigSpec) -> Option<DesiredAlerting> {
    let sync = spec.cert_mgmt.as_ref().filter(|sync| sync.sync_levels)?;
    let email_list_name = sync
        .email_list_name
        .clone()
        .unwrap_or_else(|| format!("pki-operator-{name}"));
    let to = spec
        .channels
        .as_ref()
        .and_then(|channels| channels.email.as_ref())
        .map(|email| email.to.clone())
        .unwrap_or_default();
    let levels = DEFAULT_LEVELS
        .iter()
        .map(|&(level, default_days)| {
            if spec.levels.is_empty() {
                return (level, true, default_days);
            }
            // A level the spec leaves out raises nothing; its days are the default so the pushed
            // value stays stable and the ordering the service may expect holds.
            spec.levels
                .iter()
                .find(|configured| configured.level == level)
                .map_or((level, false, default_days), |configured| {
                    (level, configured.enabled, configured.remaining_days)
                })
        })
        .collect();
    let node = spec
        .host_unavailability
        .as_ref()
        .map(|host| (host.enabled, host.max_days_checkin_delay));
    Some(DesiredAlerting {
        email_list_name,
        to,
        levels,
        node,
    })
}

// ---------------------------------------------------------------------------------------------
// Push
// ---------------------------------------------------------------------------------------------

/// Makes the service match `desired` (§8.4 reconcile order): the owned email list, then each
/// level, then the node configuration, each read first and written only when it differs, and
/// read back after a write (PUT returns no body) to catch a write that did not stick.
/// `known_list_id` is the list id recorded in status; it finds the list even after a rename.
pub async fn push(
    client: &CertMgmtClient,
    desired: &DesiredAlerting,
    known_list_id: Option<i64>,
) -> Result<Pushed, SyncError> {
    let mut corrected = Vec::new();
    let lists = client
        .email_lists()
        .await
        .map_err(doing(|| "list the email lists".to_owned()))?;
    let list_id = if desired.to.is_empty() {
        None
    } else {
        Some(sync_list(client, desired, &lists, known_list_id, &mut corrected).await?)
    };
    let attached: Vec<i64> = list_id.into_iter().collect();
    sync_levels(client, desired, &attached, &mut corrected).await?;
    sync_node(client, desired, &attached, &mut corrected).await?;
    if list_id.is_none() {
        // No recipients any more: the list we owned goes, now that nothing we wrote names it.
        for stale in owned_lists(&lists, &desired.email_list_name, known_list_id) {
            delete_list(client, stale).await?;
            corrected.push(format!(
                "email list {} deleted (no recipients)",
                desired.email_list_name
            ));
        }
    }
    Ok(Pushed {
        email_list_id: list_id,
        corrected,
    })
}

/// The ids of the lists we own: the recorded one and every list with our name.
fn owned_lists(lists: &[EmailList], name: &str, known_list_id: Option<i64>) -> BTreeSet<i64> {
    lists
        .iter()
        .filter(|list| {
            Some(list.email_list_id) == known_list_id || list.email_list_name.as_deref() == Some(name)
        })
        .map(|list| list.email_list_id)
        .collect()
}

/// The list to keep: the recorded id if it still exists, else the oldest list with our name.
fn find_list<'a>(lists: &'a [EmailList], name: &str, known_list_id: Option<i64>) -> Option<&'a EmailList> {
    known_list_id
        .and_then(|id| lists.iter().find(|list| list.email_list_id == id))
        .or_else(|| {
            lists
                .iter()
                .filter(|list| list.email_list_name.as_deref() == Some(name))
                .min_by_key(|list| list.email_list_id)
        })
}

/// Addresses compared as sets, ignoring case: the service may reorder or normalise them, and
/// neither is a change (comparing exactly would turn such a service into endless rewrites).
fn same_addresses(a: &[String], b: &[String]) -> bool {
    let set = |addresses: &[String]| -> BTreeSet<String> {
        addresses
            .iter()
            .map(|address| address.to_ascii_lowercase())
            .collect()
    };
    set(a) == set(b)
}

/// Creates the owned list or updates it when its name or recipients differ; returns its id.
async fn sync_list(
    client: &CertMgmtClient,
    desired: &DesiredAlerting,
    lists: &[EmailList],
    known_list_id: Option<i64>,
    corrected: &mut Vec<String>,
) -> Result<i64, SyncError> {
    let name = &desired.email_list_name;
    // We own `cc` too: the AlertConfig has no cc, so a cc someone added is drift.
    let wanted = NewEmailList {
        email_list_name: name.clone(),
        to: desired.to.clone(),
        cc: Vec::new(),
    };
    let Some(found) = find_list(lists, name, known_list_id) else {
        let created = client
            .create_email_list(&wanted)
            .await
            .map_err(doing(|| format!("create email list {name}")))?;
        corrected.push(format!(
            "email list {name} created (id {}) to {:?}",
            created.email_list_id, wanted.to
        ));
        return Ok(created.email_list_id);
    };
    let id = found.email_list_id;
    let mut changes = Vec::new();
    if found.email_list_name.as_deref() != Some(name) {
        changes.push(format!(
            "name {:?} -> {name:?}",
            found.email_list_name.as_deref().unwrap_or("")
        ));
    }
    if !same_addresses(&found.to, &wanted.to) {
        changes.push(format!("to {:?} -> {:?}", found.to, wanted.to));
    }
    if !found.cc.is_empty() {
        changes.push(format!("cc {:?} -> []", found.cc));
    }
    if changes.is_empty() {
        return Ok(id);
    }
    client
        .update_email_list(id, &wanted)
        .await
        .map_err(doing(|| format!("update email list {name} (id {id})")))?;
    let back = client
        .email_list(id)
        .await
        .map_err(doing(|| format!("read back email list {name} (id {id})")))?;
    if !same_addresses(&back.to, &wanted.to) || !back.cc.is_empty() {
        return Err(SyncError::NotApplied {
            what: format!("email list {name} (id {id})"),
            wanted: format!("to {:?} cc []", wanted.to),
            found: format!("to {:?} cc {:?}", back.to, back.cc),
        });
    }
    corrected.push(format!("email list {name} {}", changes.join(", ")));
    Ok(id)
}

/// Ids compared as sets (the service may reorder them).
fn same_ids(a: &[i64], b: &[i64]) -> bool {
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

/// What one level should hold: an enabled level mails the owned list, a disabled one none.
fn level_config(enabled: bool, remaining_days: i32, attached: &[i64]) -> LevelConfig {
    LevelConfig {
        enabled,
        email_list_ids: if enabled { attached.to_vec() } else { Vec::new() },
        remaining_days: i64::from(remaining_days),
    }
}

fn same_level(a: &LevelConfig, b: &LevelConfig) -> bool {
    a.enabled == b.enabled
        && a.remaining_days == b.remaining_days
        && same_ids(&a.email_list_ids, &b.email_list_ids)
}

/// `LEVEL enabled false -> true, remaining_days 45 -> 30`: the fields that differ.
fn level_changes(label: &str, found: &LevelConfig, wanted: &LevelConfig) -> String {
    let mut changes = Vec::new();
    if found.enabled != wanted.enabled {
        changes.push(format!("enabled {} -> {}", found.enabled, wanted.enabled));
    }
    if found.remaining_days != wanted.remaining_days {
        changes.push(format!(
            "remaining_days {} -> {}",
            found.remaining_days, wanted.remaining_days
        ));
    }
    if !same_ids(&found.email_list_ids, &wanted.email_list_ids) {
        changes.push(format!(
            "email_list_ids {:?} -> {:?}",
            found.email_list_ids, wanted.email_list_ids
        ));
    }
    format!("{label} {}", changes.join(", "))
}

/// Writes each level that differs from what the service holds, and reads it back.
async fn sync_levels(
    client: &CertMgmtClient,
    desired: &DesiredAlerting,
    attached: &[i64],
    corrected: &mut Vec<String>,
) -> Result<(), SyncError> {
    let current = client
        .alert_configs()
        .await
        .map_err(doing(|| "read the alert levels".to_owned()))?;
    for &(level, enabled, remaining_days) in &desired.levels {
        let level = wire(level);
        let wanted = level_config(enabled, remaining_days, attached);
        // A level missing from the map is read on its own; a service that omits it from the
        // overview still answers per level.
        let found = match current.get(&level) {
            Some(found) => found.clone(),
            None => client
                .alert_config(level)
                .await
                .map_err(doing(|| format!("read alert level {level}")))?,
        };
        if same_level(&found, &wanted) {
            continue;
        }
        write_level(client, level, &wanted).await?;
        corrected.push(level_changes(level.as_str(), &found, &wanted));
    }
    Ok(())
}

/// PUTs one level and checks the read-back.
async fn write_level(
    client: &CertMgmtClient,
    level: AlertLevel,
    wanted: &LevelConfig,
) -> Result<(), SyncError> {
    client
        .put_alert_config(level, wanted)
        .await
        .map_err(doing(|| format!("write alert level {level}")))?;
    let back = client
        .alert_config(level)
        .await
        .map_err(doing(|| format!("read back alert level {level}")))?;
    if same_level(&back, wanted) {
        return Ok(());
    }
    Err(SyncError::NotApplied {
        what: format!("alert level {level}"),
        wanted: format!("{wanted:?}"),
        found: format!("{back:?}"),
    })
}

/// Writes the node configuration when it differs, and reads it back.
async fn sync_node(
    client: &CertMgmtClient,
    desired: &DesiredAlerting,
    attached: &[i64],
    corrected: &mut Vec<String>,
) -> Result<(), SyncError> {
    let found = client
        .node_alert_config()
        .await
        .map_err(doing(|| "read the node alert configuration".to_owned()))?;
    let wanted = match desired.node {
        Some((enabled, days)) => NodeAlertConfig {
            enabled,
            email_list_ids: if enabled { attached.to_vec() } else { Vec::new() },
            max_days_checkin_delay: i64::from(days),
        },
        // Not configured: off, and the service's day count stays (it must be at least 1, and
        // rewriting it would be a needless write).
        None => NodeAlertConfig {
            enabled: false,
            email_list_ids: Vec::new(),
            max_days_checkin_delay: found.max_days_checkin_delay,
        },
    };
    if same_node(&found, &wanted) {
        return Ok(());
    }
    write_node(client, &wanted).await?;
    corrected.push(node_changes(&found, &wanted));
    Ok(())
}

fn same_node(a: &NodeAlertConfig, b: &NodeAlertConfig) -> bool {
    a.enabled == b.enabled
        && a.max_days_checkin_delay == b.max_days_checkin_delay
        && same_ids(&a.email_list_ids, &b.email_list_ids)
}

fn node_changes(found: &NodeAlertConfig, wanted: &NodeAlertConfig) -> String {
    let as_level = |config: &NodeAlertConfig| LevelConfig {
        enabled: config.enabled,
        email_list_ids: config.email_list_ids.clone(),
        remaining_days: config.max_days_checkin_delay,
    };
    level_changes("node", &as_level(found), &as_level(wanted))
        .replace("remaining_days", "max_days_checkin_delay")
}

/// PUTs the node configuration and checks the read-back.
async fn write_node(client: &CertMgmtClient, wanted: &NodeAlertConfig) -> Result<(), SyncError> {
    client
        .put_node_alert_config(wanted)
        .await
        .map_err(doing(|| "write the node alert configuration".to_owned()))?;
    let back = client
        .node_alert_config()
        .await
        .map_err(doing(|| "read back the node alert configuration".to_owned()))?;
    if same_node(&back, wanted) {
        return Ok(());
    }
    Err(SyncError::NotApplied {
        what: "the node alert configuration".to_owned(),
        wanted: format!("{wanted:?}"),
        found: format!("{back:?}"),
    })
}

/// Deletes a list; one already gone is fine (a retried DELETE, or someone else). Returns the
/// `affected_criteria` URLs.
async fn delete_list(client: &CertMgmtClient, id: i64) -> Result<Vec<String>, SyncError> {
    match client.delete_email_list(id).await {
        Ok(affected) => Ok(affected.into_iter().map(|criterion| criterion.url).collect()),
        Err(CertMgmtError::NotFound { .. }) => Ok(Vec::new()),
        Err(source) => Err(SyncError::Call {
            action: format!("delete email list {id}"),
            source,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Teardown
// ---------------------------------------------------------------------------------------------

/// Undoes a push on deletion (§8.4 step 4): every level and the node configuration that is
/// enabled or mails one of our lists is written `enabled: false, email_list_ids: []` (levels
/// cannot be deleted; their day counts stay), then the owned lists (the recorded id and every list
/// named `email_list_name`) are deleted. Returns the `affected_criteria` the deletes reported:
/// non-empty means something re-attached a list between our writes and the delete, worth an
/// Event. Configurations already off and not naming our list are left alone (no needless writes,
/// and someone's disabled template survives).
pub async fn teardown(
    client: &CertMgmtClient,
    email_list_name: &str,
    known_list_id: Option<i64>,
) -> Result<Vec<String>, SyncError> {
    let lists = client
        .email_lists()
        .await
        .map_err(doing(|| "list the email lists".to_owned()))?;
    let ours = owned_lists(&lists, email_list_name, known_list_id);
    let ours_in = |ids: &[i64]| ids.iter().any(|id| ours.contains(id));
    let levels = client
        .alert_configs()
        .await
        .map_err(doing(|| "read the alert levels".to_owned()))?;
    for (level, found) in levels {
        if found.enabled || ours_in(&found.email_list_ids) {
            let off = LevelConfig {
                enabled: false,
                email_list_ids: Vec::new(),
                remaining_days: found.remaining_days,
            };
            write_level(client, level, &off).await?;
        }
    }
    let node = client
        .node_alert_config()
        .await
        .map_err(doing(|| "read the node alert configuration".to_owned()))?;
    if node.enabled || ours_in(&node.email_list_ids) {
        let off = NodeAlertConfig {
            enabled: false,
            email_list_ids: Vec::new(),
            max_days_checkin_delay: node.max_days_checkin_delay,
        };
        write_node(client, &off).await?;
    }
    let mut affected = Vec::new();
    for id in ours {
        affected.extend(delete_list(client, id).await?);
    }
    Ok(affected)
}

// ---------------------------------------------------------------------------------------------
// Generated alerts
// ---------------------------------------------------------------------------------------------

/// Reads the alerts the service generated since `since` (the previous [`Poll::high_water`];
/// `None`: the last [`FIRST_POLL_LOOKBACK`]) up to `now`, from each level and the node query.
///
/// The queries are day-granular (`from_dt`/`to_dt`), so the days around the mark are read again:
/// an alert is new when it is not older than `since` and its key `(level, host_id, datetime,
/// title)` is not in `recent` (the summaries kept in status), which settles alerts at exactly the
/// high-water mark. The mark is the newest alert time read (the service's clock, so our clock's
/// skew does not matter), never moving back; with no alerts at all it stays at `since` (or the
/// lookback start). Alerts without a `datetime` cannot be placed and are skipped. An alert stamped
/// before the mark but published only after a poll read past it would be missed; the service
/// stamps alerts as it generates them, so that takes a race inside one evaluation.
pub async fn read_alerts(
    client: &CertMgmtClient,
    since: Option<Timestamp>,
    recent: &[GeneratedAlertSummary],
    now: Timestamp,
) -> Result<Poll, SyncError> {
    let start = since.unwrap_or_else(|| now.saturating_sub(FIRST_POLL_LOOKBACK).unwrap_or(now));
    // Inferred (spec §6.6): whether `from_dt`/`to_dt` are inclusive is undocumented, so the
    // window is padded by a day on each side; the time filter in `select_new` does the exact cut.
    let from = utc_date(start).yesterday().unwrap_or(Date::MIN);
    let to = utc_date(now.max(start)).tomorrow().unwrap_or(Date::MAX);
    let mut fetched = Vec::new();
    for level in AlertLevel::ALL {
        let alerts = client
            .level_alerts(level, from, to)
            .await
            .map_err(doing(|| format!("read the alerts of level {level}")))?;
        fetched.extend(alerts.iter().map(|alert| (level.as_str(), alert.clone())));
    }
    let node = client
        .node_alerts(from, to)
        .await
        .map_err(doing(|| "read the node alerts".to_owned()))?;
    fetched.extend(node.into_iter().map(|alert| (NODE_LEVEL, alert)));
    Ok(select_new(&fetched, start, recent))
}

fn utc_date(at: Timestamp) -> Date {
    at.to_zoned(TimeZone::UTC).date()
}

/// The de-duplication key of §8.4: `(level, host_id, datetime, details.title)`, the time parsed
/// so that two spellings of one instant match.
type AlertKey = (String, String, Timestamp, String);

fn summary_key(summary: &GeneratedAlertSummary) -> Option<AlertKey> {
    let at = parse_isoformat(&summary.datetime)?;
    Some((
        summary.level.clone(),
        summary.host_id.clone(),
        at,
        summary.title.clone(),
    ))
}

/// The summary of `alert` under `level` (`NODE` for node alerts); `None` without a `datetime`.
pub fn summarize(level: &str, alert: &GeneratedAlert) -> Option<GeneratedAlertSummary> {
    let at = alert.datetime?;
    Some(GeneratedAlertSummary {
        level: level.to_owned(),
        datetime: at.to_string(),
        host_id: alert.host_id.clone(),
        title: alert.title().unwrap_or_default().to_owned(),
        cn: alert.detail("cn"),
        serial_number: alert.detail("serial_number"),
    })
}

/// The pure half of [`read_alerts`]: picks the new alerts out of `fetched` (`(level, alert)`),
/// newest first, bounded, with the counts and the next high-water mark (see [`read_alerts`]).
/// `start` is where the read began: the previous high-water mark, or the lookback start.
pub fn select_new(
    fetched: &[(&str, GeneratedAlert)],
    start: Timestamp,
    recent: &[GeneratedAlertSummary],
) -> Poll {
    let seen: BTreeSet<AlertKey> = recent.iter().filter_map(summary_key).collect();
    let mut high_water = start;
    let mut fresh: BTreeMap<AlertKey, GeneratedAlertSummary> = BTreeMap::new();
    for (level, alert) in fetched {
        let Some(summary) = summarize(level, alert) else {
            continue;
        };
        let Some(key) = summary_key(&summary) else {
            continue;
        };
        high_water = high_water.max(key.2);
        if key.2 < start || seen.contains(&key) {
            continue;
        }
        fresh.entry(key).or_insert(summary);
    }
    let mut new_counts = AlertCounts::default();
    for (level, ..) in fresh.keys() {
        match level.as_str() {
            "INFO" => new_counts.info += 1,
            "WARN" => new_counts.warn += 1,
            "HIGH" => new_counts.high += 1,
            "ERROR" => new_counts.error += 1,
            _ => new_counts.unavailable_hosts += 1,
        }
    }
    let mut ordered: Vec<(AlertKey, GeneratedAlertSummary)> = fresh.into_iter().collect();
    // Newest first; ties in key order so the result does not depend on the query order.
    ordered.sort_by(|(a, _), (b, _)| b.2.cmp(&a.2).then_with(|| a.cmp(b)));
    Poll {
        new_alerts: ordered
            .into_iter()
            .take(MAX_NEW_ALERTS)
            .map(|(_, summary)| summary)
            .collect(),
        new_counts,
        high_water,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::v1alpha1::alert_config::{
        AlertChannels, AlertLevel as SpecLevel, CertMgmtSync, EmailChannel, HostUnavailability,
        SecretReference,
    };

    fn sync() -> CertMgmtSync {
        CertMgmtSync {
            url: "https://cc.example:8445".into(),
            credentials_secret_ref: SecretReference {
                name: "certmgmt-basic".into(),
                namespace: "pki".into(),
            },
            ca_bundle: None,
            sync_levels: true,
            email_list_name: None,
            read_alerts: true,
            poll_interval: None,
        }
    }

    fn spec_with(sync: Option<CertMgmtSync>) -> AlertConfigSpec {
        AlertConfigSpec {
            cert_mgmt: sync,
            ..AlertConfigSpec::default()
        }
    }

    #[test]
    fn nothing_is_pushed_without_cert_mgmt_or_with_sync_levels_off() {
        assert_eq!(desired_from_spec("a", &spec_with(None)), None);
        let off = CertMgmtSync {
            sync_levels: false,
            ..sync()
        };
        assert_eq!(desired_from_spec("a", &spec_with(Some(off))), None);
    }

    #[test]
    fn defaults_name_the_list_after_the_alert_config_and_enable_the_default_levels() {
        let desired = desired_from_spec("prod", &spec_with(Some(sync()))).unwrap();
        assert_eq!(
            desired,
            DesiredAlerting {
                email_list_name: "pki-operator-prod".into(),
                to: vec![],
                levels: vec![
                    (Level::INFO, true, 60),
                    (Level::WARN, true, 30),
                    (Level::HIGH, true, 14),
                    (Level::ERROR, true, 7),
                ],
                node: None,
            }
        );
    }

    #[test]
    fn levels_left_out_are_disabled_and_the_rest_follow_the_spec() {
        let spec = AlertConfigSpec {
            levels: vec![
                SpecLevel {
                    level: Level::ERROR,
                    remaining_days: 3,
                    enabled: true,
                },
                SpecLevel {
                    level: Level::WARN,
                    remaining_days: 45,
                    enabled: false,
                },
            ],
            channels: Some(AlertChannels {
                email: Some(EmailChannel {
                    smtp_host: "smtp.example".into(),
                    from: "pki@example.com".into(),
                    to: vec!["ops@example.com".into(), "sec@example.com".into()],
                    ..EmailChannel::default()
                }),
                webhooks: vec![],
            }),
            host_unavailability: Some(HostUnavailability {
                enabled: true,
                max_days_checkin_delay: 2,
            }),
            cert_mgmt: Some(CertMgmtSync {
                email_list_name: Some("ops".into()),
                ..sync()
            }),
            ..AlertConfigSpec::default()
        };
        let desired = desired_from_spec("prod", &spec).unwrap();
        assert_eq!(desired.email_list_name, "ops");
        assert_eq!(desired.to, ["ops@example.com", "sec@example.com"]);
        assert_eq!(
            desired.levels,
            [
                (Level::INFO, false, 60),
                (Level::WARN, false, 45),
                (Level::HIGH, false, 14),
                (Level::ERROR, true, 3),
            ]
        );
        assert_eq!(desired.node, Some((true, 2)));
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn alert(host: &str, datetime: &str, title: &str) -> GeneratedAlert {
        GeneratedAlert {
            datetime: Some(at(datetime)),
            host_id: host.into(),
            details: [
                ("title".to_owned(), json!(title)),
                ("cn".to_owned(), json!("a.example")),
                ("serial_number".to_owned(), json!("0A")),
            ]
            .into(),
            ..GeneratedAlert::default()
        }
    }

    #[test]
    fn the_first_poll_takes_everything_in_the_lookback_newest_first_once() {
        let start = at("2026-11-01T00:00:00Z");
        let warn = alert("h1", "2026-11-02T06:00:00Z", "Certificate expiring in 30 days");
        let fetched = [
            (
                "INFO",
                alert("h1", "2026-11-01T06:00:00Z", "Certificate expiring in 59 days"),
            ),
            ("WARN", warn.clone()),
            // The same alert twice (a service answering overlapping queries) counts once.
            ("WARN", warn),
            (
                "NODE",
                alert("h2", "2026-11-02T07:00:00Z", "Host h2 has not checked in"),
            ),
            // Before the start: read because the query is day-granular, but not new.
            (
                "HIGH",
                alert("h1", "2026-10-31T23:00:00Z", "Certificate expiring in 14 days"),
            ),
            // No datetime: cannot be placed.
            ("ERROR", GeneratedAlert::default()),
        ];
        let poll = select_new(&fetched, start, &[]);
        let got: Vec<(&str, &str)> = poll
            .new_alerts
            .iter()
            .map(|a| (a.level.as_str(), a.datetime.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("NODE", "2026-11-02T07:00:00Z"),
                ("WARN", "2026-11-02T06:00:00Z"),
                ("INFO", "2026-11-01T06:00:00Z"),
            ]
        );
        assert_eq!(poll.new_alerts[1].cn.as_deref(), Some("a.example"));
        assert_eq!(poll.new_alerts[1].serial_number.as_deref(), Some("0A"));
        assert_eq!(
            poll.new_counts,
            AlertCounts {
                info: 1,
                warn: 1,
                unavailable_hosts: 1,
                ..AlertCounts::default()
            }
        );
        assert_eq!(poll.high_water, at("2026-11-02T07:00:00Z"));
    }

    #[test]
    fn a_second_poll_skips_what_it_saw_and_catches_late_alerts_at_the_mark() {
        let first = [
            ("WARN", alert("h1", "2026-11-02T06:00:00Z", "w")),
            ("INFO", alert("h1", "2026-11-02T06:00:00Z", "i")),
        ];
        let poll = select_new(&first, at("2026-11-01T00:00:00Z"), &[]);
        assert_eq!(poll.new_alerts.len(), 2);
        // Same answer plus an alert written at the mark after we read, and an older one that
        // appeared late (before the mark: the mark is a promise, it is not read again).
        let mut second = first.to_vec();
        second.push(("HIGH", alert("h1", "2026-11-02T06:00:00Z", "h")));
        second.push(("ERROR", alert("h1", "2026-11-02T05:00:00Z", "e")));
        let again = select_new(&second, poll.high_water, &poll.new_alerts);
        let levels: Vec<&str> = again.new_alerts.iter().map(|a| a.level.as_str()).collect();
        assert_eq!(levels, ["HIGH"]);
        assert_eq!(again.high_water, poll.high_water);
        // Nothing new: the mark stays.
        let quiet = select_new(&[], again.high_water, &[]);
        assert!(quiet.new_alerts.is_empty());
        assert_eq!(quiet.high_water, poll.high_water);
    }

    #[test]
    fn recent_summaries_match_whatever_isoformat_spelling_they_were_stored_in() {
        let recent = [GeneratedAlertSummary {
            level: "WARN".into(),
            // Naive isoformat, as the service writes it, is UTC.
            datetime: "2026-11-02T06:00:00".into(),
            host_id: "h1".into(),
            title: "w".into(),
            ..GeneratedAlertSummary::default()
        }];
        let fetched = [("WARN", alert("h1", "2026-11-02T06:00:00Z", "w"))];
        let poll = select_new(&fetched, at("2026-11-02T06:00:00Z"), &recent);
        assert!(poll.new_alerts.is_empty(), "{:?}", poll.new_alerts);
    }

    #[test]
    fn a_flood_is_cut_to_the_newest_but_counted_whole() {
        let start = at("2026-11-01T00:00:00Z");
        let fetched: Vec<(&str, GeneratedAlert)> = (0..150)
            .map(|minute| {
                let datetime = (start + SignedDuration::from_mins(minute)).to_string();
                ("INFO", alert(&format!("h{minute}"), &datetime, "i"))
            })
            .collect();
        let poll = select_new(&fetched, start, &[]);
        assert_eq!(poll.new_alerts.len(), MAX_NEW_ALERTS);
        assert_eq!(poll.new_counts.info, 150);
        assert_eq!(poll.new_alerts[0].host_id, "h149");
        assert_eq!(poll.new_alerts[99].host_id, "h50");
        assert_eq!(poll.high_water, start + SignedDuration::from_mins(149));
    }

    #[test]
    fn drift_is_described_field_by_field() {
        let found = LevelConfig {
            enabled: true,
            email_list_ids: vec![3],
            remaining_days: 45,
        };
        let wanted = LevelConfig {
            remaining_days: 30,
            ..found.clone()
        };
        assert_eq!(
            level_changes("WARN", &found, &wanted),
            "WARN remaining_days 45 -> 30"
        );
        let reordered = LevelConfig {
            email_list_ids: vec![5, 3],
            ..found.clone()
        };
        assert!(same_level(
            &reordered,
            &LevelConfig {
                email_list_ids: vec![3, 5],
                ..found.clone()
            }
        ));
        let node = |enabled, days| NodeAlertConfig {
            enabled,
            email_list_ids: vec![],
            max_days_checkin_delay: days,
        };
        assert_eq!(
            node_changes(&node(false, 2), &node(true, 3)),
            "node enabled false -> true, max_days_checkin_delay 2 -> 3"
        );
    }
}
