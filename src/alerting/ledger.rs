//! The record of what an AlertConfig has sent, so that each level crossing is told once per
//! channel (plus `repeatInterval` reminders) across restarts and leader changes. The controller
//! keeps it in a ConfigMap; this module is the pure part: the transitions and a compact text
//! encoding (sources and channels named once, times as offsets) that stays bounded: at most
//! [`MAX_ENTRIES`] entries and, with many channels, as many as fit [`MAX_BYTES`] (a ConfigMap
//! holds 1 MiB).
//!
//! One entry per *active* alert: a certificate that leaves every level (renewed, deleted, out of
//! scope) loses its entry without a notification. Entries belong to a *source* (the Certificates,
//! one DiscoveryTask's findings or its unreachable hosts); an entry whose key was not observed is
//! dropped only when its source was fully read, so discovered alerts survive the restart that
//! empties the in-memory discovery inventory until each task runs again.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest as _, Sha256};

use crate::crd::v1alpha1::alert_config::Level;

/// Active alerts recorded at most; more are counted but not notified (the controller says so).
pub const MAX_ENTRIES: usize = 10_000;

/// The most the encoded record may take, leaving room in a ConfigMap's 1 MiB for the rest.
pub const MAX_BYTES: usize = 900 * 1024;

/// The largest an encoded entry can be with `channels` channels: source index, key, level and
/// `since` (at most 40 bytes), and per channel its index and a sent time as an offset from
/// `since` (at most 1 + 3 + 1 + 11).
fn entry_bound(channels: usize) -> usize {
    40 + 16 * channels
}

/// How many entries fit with `channels` channels.
pub fn capacity(channels: usize) -> usize {
    MAX_ENTRIES.min(MAX_BYTES / entry_bound(channels.max(1)))
}

/// One active alert.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    source: String,
    level: Level,
    /// Unix seconds when the alert reached this level.
    since: i64,
    /// Unix seconds of the last notification per channel; a channel absent here is owed one.
    sent: BTreeMap<String, i64>,
}

/// What an evaluation saw: an alert `key` (stable per subject) of `source` at `level`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed<'a> {
    /// Source of the alert: `certificates`, `discovered/<task>` or `hosts/<task>`.
    pub source: &'a str,
    /// The subject's stable identity within the AlertConfig.
    pub key: &'a str,
    /// Its current level.
    pub level: Level,
}

/// A notification owed on one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// The hashed alert key ([`key_hash`] of the observed key).
    pub key: String,
    /// The channel.
    pub channel: String,
    /// The level to tell.
    pub level: Level,
    /// A `repeatInterval` reminder rather than a new crossing.
    pub repeat: bool,
}

/// The sent-record of one AlertConfig.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    entries: BTreeMap<String, Entry>,
}

/// The stored identity of an alert key: 12 hex digits of its SHA-256 (48 bits: a collision among
/// 10,000 keys has a chance below 1 in 5 million, and would merge two subjects' records).
pub fn key_hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..6].iter().fold(String::with_capacity(12), |mut hex, b| {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

fn level_code(level: Level) -> char {
    match level {
        Level::INFO => 'I',
        Level::WARN => 'W',
        Level::HIGH => 'H',
        Level::ERROR => 'E',
    }
}

fn level_of(code: &str) -> Option<Level> {
    Some(match code {
        "I" => Level::INFO,
        "W" => Level::WARN,
        "H" => Level::HIGH,
        "E" => Level::ERROR,
        _ => return None,
    })
}

/// One entry line after its source index (see [`Ledger::encode`]).
fn decode_entry<'a>(
    source: &str,
    mut fields: impl Iterator<Item = &'a str>,
    sources: &BTreeMap<&str, &str>,
    channels: &BTreeMap<&str, &str>,
) -> Option<(String, Entry)> {
    let (key, level, since) = (fields.next()?, fields.next()?, fields.next()?);
    let since: i64 = since.parse().ok()?;
    let sent = fields
        .map(|pair| {
            let (channel, offset) = pair.split_once(':')?;
            let offset: i64 = offset.parse().ok()?;
            Some(((*channels.get(channel)?).to_owned(), since.saturating_add(offset)))
        })
        .collect::<Option<BTreeMap<_, _>>>()?;
    let entry = Entry {
        source: (*sources.get(source)?).to_owned(),
        level: level_of(level)?,
        since,
        sent,
    };
    Some((key.to_owned(), entry))
}

impl Ledger {
    /// Reads the encoding of [`Ledger::encode`]; malformed lines are skipped (their alerts are
    /// then told again: a duplicate is better than a silent loss).
    pub fn decode(text: &str) -> Self {
        let mut sources: BTreeMap<&str, &str> = BTreeMap::new();
        let mut channels: BTreeMap<&str, &str> = BTreeMap::new();
        let mut entries = BTreeMap::new();
        for line in text.lines() {
            let mut fields = line.split(' ');
            match fields.next() {
                Some("@s") => {
                    if let (Some(index), Some(name)) = (fields.next(), fields.next()) {
                        sources.insert(index, name);
                    }
                }
                Some("@c") => {
                    if let (Some(index), Some(name)) = (fields.next(), fields.next()) {
                        channels.insert(index, name);
                    }
                }
                Some(source) => {
                    if let Some((key, entry)) = decode_entry(source, fields, &sources, &channels) {
                        entries.insert(key, entry);
                    }
                }
                None => {}
            }
        }
        Self { entries }
    }

    /// Sources and channels once each (`@s <index> <source>`, `@c <index> <channel>`), then one
    /// line per entry: `source-index key level since channel-index:offset…`, the offset being
    /// seconds after `since`. Sources and channels never contain spaces (the controller's
    /// names).
    pub fn encode(&self) -> String {
        use std::fmt::Write as _;
        let index_of = |names: BTreeSet<&str>| -> BTreeMap<String, usize> {
            names
                .into_iter()
                .enumerate()
                .map(|(i, n)| (n.to_owned(), i))
                .collect()
        };
        let sources = index_of(self.entries.values().map(|e| e.source.as_str()).collect());
        let channels = index_of(
            self.entries
                .values()
                .flat_map(|e| e.sent.keys().map(String::as_str))
                .collect(),
        );
        let mut out = String::with_capacity(self.entries.len() * 48);
        for (name, index) in &sources {
            let _ = writeln!(out, "@s {index} {name}");
        }
        for (name, index) in &channels {
            let _ = writeln!(out, "@c {index} {name}");
        }
        for (key, e) in &self.entries {
            let _ = write!(
                out,
                "{} {key} {} {}",
                sources[&e.source],
                level_code(e.level),
                e.since
            );
            for (channel, at) in &e.sent {
                let _ = write!(out, " {}:{}", channels[channel], at.saturating_sub(e.since));
            }
            out.push('\n');
        }
        out
    }

    /// Number of active alerts recorded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Brings the record to what an evaluation observed at `now` (seconds). A new alert, or one
    /// that reached a more severe level, is owed on every channel; one that fell back to a milder
    /// level (a partial renewal, a level edit) keeps what was sent and is not told again; an
    /// unobserved key of a source that `is_complete` (was read whole) is cleared. Observations
    /// beyond the [`capacity`] for `channels` channels are not recorded; the count of them is
    /// returned. `observed` comes most urgent first, so what does not fit is the least urgent.
    pub fn observe(
        &mut self,
        observed: &[Observed<'_>],
        is_complete: impl Fn(&str) -> bool,
        (now, channels): (i64, usize),
    ) -> usize {
        let keys: BTreeSet<String> = observed.iter().map(|o| key_hash(o.key)).collect();
        // Cleared first, so that their room goes to new alerts.
        self.entries
            .retain(|key, e| keys.contains(key) || !is_complete(&e.source));
        let capacity = capacity(channels);
        let mut over_limit = 0;
        for o in observed {
            let key = key_hash(o.key);
            let full = self.entries.len() >= capacity;
            match self.entries.get_mut(&key) {
                Some(e) if o.level > e.level => {
                    *e = Entry {
                        source: o.source.to_owned(),
                        level: o.level,
                        since: now,
                        sent: BTreeMap::new(),
                    };
                }
                Some(e) => e.level = o.level,
                None if full => over_limit += 1,
                None => {
                    self.entries.insert(
                        key,
                        Entry {
                            source: o.source.to_owned(),
                            level: o.level,
                            since: now,
                            sent: BTreeMap::new(),
                        },
                    );
                }
            }
        }
        over_limit
    }

    /// The notifications owed at `now` on `channels`: never sent on that channel at this level,
    /// or last sent `repeat` seconds ago or more. Most severe first.
    pub fn due(&self, channels: &[String], now: i64, repeat: i64) -> Vec<Due> {
        let mut due: Vec<Due> = self
            .entries
            .iter()
            .flat_map(|(key, e)| {
                channels.iter().filter_map(move |channel| {
                    let repeat_due = match e.sent.get(channel) {
                        None => false,
                        Some(at) if now.saturating_sub(*at) >= repeat => true,
                        Some(_) => return None,
                    };
                    Some(Due {
                        key: key.clone(),
                        channel: channel.clone(),
                        level: e.level,
                        repeat: repeat_due,
                    })
                })
            })
            .collect();
        due.sort_by_key(|d| std::cmp::Reverse(d.level));
        due
    }

    /// Records that `key` (hashed) was told on `channel` at `now`.
    pub fn mark_sent(&mut self, key: &str, channel: &str, now: i64) {
        if let Some(e) = self.entries.get_mut(key) {
            e.sent.insert(channel.to_owned(), now);
        }
    }

    /// When the earliest reminder of an alert in `keys` (hashed) on `channels` falls due after
    /// `now` (seconds). Alerts not evaluated now (a source not read yet) and channels paused by
    /// failures are left out by the caller: a reminder that cannot be sent must not wake the
    /// controller in a loop.
    pub fn next_repeat(
        &self,
        keys: &BTreeSet<String>,
        channels: &[String],
        (now, repeat): (i64, i64),
    ) -> Option<i64> {
        keys.iter()
            .filter_map(|key| self.entries.get(key))
            .flat_map(|e| channels.iter().filter_map(|c| e.sent.get(c)))
            .map(|at| at.saturating_add(repeat))
            .filter(|at| *at > now)
            .min()
    }

    /// When the alert `key` (hashed) reached its level (Unix seconds).
    pub fn since(&self, key: &str) -> Option<i64> {
        self.entries.get(key).map(|e| e.since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn obs(key: &str, level: Level) -> Observed<'_> {
        Observed {
            source: "certificates",
            key,
            level,
        }
    }

    fn channels() -> Vec<String> {
        vec!["event".into(), "email".into()]
    }

    fn complete() -> impl Fn(&str) -> bool {
        |source| source == "certificates"
    }

    fn send_all(ledger: &mut Ledger, now: i64) -> usize {
        let due = ledger.due(&channels(), now, DAY);
        for d in &due {
            ledger.mark_sent(&d.key, &d.channel, now);
        }
        due.len()
    }

    #[test]
    fn a_crossing_is_told_once_per_channel_then_only_as_a_reminder() {
        let mut ledger = Ledger::default();
        ledger.observe(&[obs("c/a", Level::WARN)], complete(), (0, 2));
        assert_eq!(send_all(&mut ledger, 0), 2);
        ledger.observe(&[obs("c/a", Level::WARN)], complete(), (60, 2));
        assert_eq!(
            send_all(&mut ledger, 60),
            0,
            "nothing new within the repeat interval"
        );
        let reminders = ledger.due(&channels(), DAY, DAY);
        assert_eq!(reminders.len(), 2);
        assert!(reminders.iter().all(|d| d.repeat));
    }

    #[test]
    fn escalation_is_told_again_and_de_escalation_or_clearing_is_not() {
        let mut ledger = Ledger::default();
        ledger.observe(&[obs("c/a", Level::WARN)], complete(), (0, 2));
        send_all(&mut ledger, 0);
        ledger.observe(&[obs("c/a", Level::HIGH)], complete(), (10, 2));
        let due = ledger.due(&channels(), 10, DAY);
        assert_eq!(due.len(), 2);
        assert!(due.iter().all(|d| d.level == Level::HIGH && !d.repeat));
        send_all(&mut ledger, 10);
        ledger.observe(&[obs("c/a", Level::INFO)], complete(), (20, 2));
        assert!(
            ledger.due(&channels(), 20, DAY).is_empty(),
            "a milder level is not a crossing"
        );
        ledger.observe(&[], complete(), (30, 2));
        assert!(ledger.is_empty(), "renewed: the alert is cleared");
    }

    #[test]
    fn a_failed_channel_stays_owed_without_resending_the_others() {
        let mut ledger = Ledger::default();
        ledger.observe(&[obs("c/a", Level::ERROR)], complete(), (0, 2));
        let due = ledger.due(&channels(), 0, DAY);
        let event = due.iter().find(|d| d.channel == "event").unwrap();
        ledger.mark_sent(&event.key, "event", 0);
        let still = ledger.due(&channels(), 5, DAY);
        assert_eq!(still.len(), 1);
        assert_eq!(still[0].channel, "email");
    }

    #[test]
    fn the_record_survives_its_encoding() {
        let mut ledger = Ledger::default();
        let observed = [
            obs("c/payments/api", Level::WARN),
            Observed {
                source: "discovered/ns/task",
                key: "d/ns/task/10.0.0.1:443/0a",
                level: Level::ERROR,
            },
        ];
        ledger.observe(&observed, complete(), (100, 2));
        send_all(&mut ledger, 100);
        let decoded = Ledger::decode(&ledger.encode());
        assert_eq!(decoded, ledger);
        assert!(ledger.encode().len() < 2 * 64, "{}", ledger.encode());
        assert_eq!(Ledger::decode("garbage\nx y Z 1\n"), Ledger::default());
    }

    #[test]
    fn alerts_of_an_unread_source_are_kept_until_it_is_read() {
        let mut ledger = Ledger::default();
        let found = Observed {
            source: "discovered/ns/task",
            key: "d/x",
            level: Level::HIGH,
        };
        ledger.observe(std::slice::from_ref(&found), complete(), (0, 2));
        send_all(&mut ledger, 0);
        // After a restart the task has not run yet: its source is incomplete.
        ledger.observe(&[], complete(), (10, 2));
        assert_eq!(ledger.len(), 1);
        ledger.observe(&[found], complete(), (20, 2));
        assert!(
            ledger.due(&channels(), 20, DAY).is_empty(),
            "no duplicate after the restart"
        );
        ledger.observe(&[], |_| true, (30, 2));
        assert!(ledger.is_empty());
    }

    #[test]
    fn the_record_is_bounded_in_entries_and_bytes() {
        let keys: Vec<String> = (0..MAX_ENTRIES + 5).map(|i| format!("c/{i}")).collect();
        let observed: Vec<Observed<'_>> = keys.iter().map(|k| obs(k, Level::INFO)).collect();
        let mut ledger = Ledger::default();
        assert_eq!(ledger.observe(&observed, complete(), (0, 2)), 5);
        assert_eq!(ledger.len(), MAX_ENTRIES);
        // The worst case: ten channels (Event, email, eight webhooks with long names), long
        // discovered sources, every channel told, times far from `since`.
        let channels: Vec<String> = ["event".to_owned(), "email".to_owned()]
            .into_iter()
            .chain((0..8).map(|i| format!("webhook/pki-operator-system/alert-receiver-{i}/url")))
            .collect();
        let sources: Vec<String> = (0..50)
            .map(|i| format!("discovered/some-long-namespace-name/a-discovery-task-{i}"))
            .collect();
        let observed: Vec<Observed<'_>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Observed {
                source: &sources[i % sources.len()],
                key: k,
                level: Level::ERROR,
            })
            .collect();
        let mut ledger = Ledger::default();
        let over = ledger.observe(&observed, complete(), (1_800_000_000, channels.len()));
        assert_eq!(ledger.len(), capacity(channels.len()));
        assert_eq!(over, keys.len() - ledger.len());
        for d in ledger.due(&channels, 1_800_000_000, DAY) {
            ledger.mark_sent(&d.key, &d.channel, 1_900_000_000);
        }
        let encoded = ledger.encode();
        assert!(encoded.len() <= MAX_BYTES, "{} bytes", encoded.len());
        assert_eq!(Ledger::decode(&encoded), ledger);
    }

    #[test]
    fn reminders_wake_only_for_alerts_evaluated_now_and_not_in_the_past() {
        let mut ledger = Ledger::default();
        ledger.observe(
            &[obs("c/a", Level::WARN), obs("c/b", Level::WARN)],
            complete(),
            (0, 2),
        );
        send_all(&mut ledger, 0);
        let a = BTreeSet::from([key_hash("c/a")]);
        assert_eq!(ledger.next_repeat(&a, &channels(), (10, DAY)), Some(DAY));
        assert_eq!(
            ledger.next_repeat(&a, &channels(), (DAY, DAY)),
            None,
            "due now is not a wake-up"
        );
        assert_eq!(ledger.next_repeat(&BTreeSet::new(), &channels(), (10, DAY)), None);
    }
}
