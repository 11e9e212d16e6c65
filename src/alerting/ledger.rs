//! The record of what an AlertConfig has sent, so that each level crossing is told once per
//! channel (plus `repeatInterval` reminders) across restarts and leader changes. The controller
//! keeps it in a ConfigMap; this module is the pure part: the transitions and a compact text
//! encoding that stays bounded ([`MAX_ENTRIES`] entries, about 60 bytes each, well under a
//! ConfigMap's 1 MiB).
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

impl Ledger {
    /// Reads the encoding of [`Ledger::encode`]; malformed lines are skipped (their alerts are
    /// then told again: a duplicate is better than a silent loss).
    pub fn decode(text: &str) -> Self {
        let entries = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                let (source, key, level, since) =
                    (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
                let sent = fields
                    .map(|pair| {
                        let (channel, at) = pair.split_once('=')?;
                        Some((channel.to_owned(), at.parse().ok()?))
                    })
                    .collect::<Option<BTreeMap<_, _>>>()?;
                let entry = Entry {
                    source: source.to_owned(),
                    level: level_of(level)?,
                    since: since.parse().ok()?,
                    sent,
                };
                Some((key.to_owned(), entry))
            })
            .collect();
        Self { entries }
    }

    /// One line per entry: `source key level since channel=at…`. Sources and channels never
    /// contain spaces (the controller's names).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.entries.len() * 64);
        for (key, e) in &self.entries {
            use std::fmt::Write as _;
            let _ = write!(out, "{} {key} {} {}", e.source, level_code(e.level), e.since);
            for (channel, at) in &e.sent {
                let _ = write!(out, " {channel}={at}");
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
    /// unobserved key of a source that `is_complete` (was read whole) is cleared. Observations beyond
    /// [`MAX_ENTRIES`] are not recorded; the count of them is returned.
    pub fn observe(
        &mut self,
        observed: &[Observed<'_>],
        is_complete: impl Fn(&str) -> bool,
        now: i64,
    ) -> usize {
        let mut seen = BTreeSet::new();
        let mut over_limit = 0;
        for o in observed {
            let key = key_hash(o.key);
            let full = self.entries.len() >= MAX_ENTRIES;
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
                None if full => {
                    over_limit += 1;
                    continue;
                }
                None => {
                    self.entries.insert(
                        key.clone(),
                        Entry {
                            source: o.source.to_owned(),
                            level: o.level,
                            since: now,
                            sent: BTreeMap::new(),
                        },
                    );
                }
            }
            seen.insert(key);
        }
        self.entries
            .retain(|key, e| seen.contains(key) || !is_complete(&e.source));
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

    /// When the earliest reminder on `channels` falls due (seconds), if any alert was told.
    pub fn next_repeat(&self, channels: &[String], repeat: i64) -> Option<i64> {
        self.entries
            .values()
            .flat_map(|e| channels.iter().filter_map(|c| e.sent.get(c)))
            .map(|at| at.saturating_add(repeat))
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
        ledger.observe(&[obs("c/a", Level::WARN)], complete(), 0);
        assert_eq!(send_all(&mut ledger, 0), 2);
        ledger.observe(&[obs("c/a", Level::WARN)], complete(), 60);
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
        ledger.observe(&[obs("c/a", Level::WARN)], complete(), 0);
        send_all(&mut ledger, 0);
        ledger.observe(&[obs("c/a", Level::HIGH)], complete(), 10);
        let due = ledger.due(&channels(), 10, DAY);
        assert_eq!(due.len(), 2);
        assert!(due.iter().all(|d| d.level == Level::HIGH && !d.repeat));
        send_all(&mut ledger, 10);
        ledger.observe(&[obs("c/a", Level::INFO)], complete(), 20);
        assert!(
            ledger.due(&channels(), 20, DAY).is_empty(),
            "a milder level is not a crossing"
        );
        ledger.observe(&[], complete(), 30);
        assert!(ledger.is_empty(), "renewed: the alert is cleared");
    }

    #[test]
    fn a_failed_channel_stays_owed_without_resending_the_others() {
        let mut ledger = Ledger::default();
        ledger.observe(&[obs("c/a", Level::ERROR)], complete(), 0);
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
        ledger.observe(&observed, complete(), 100);
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
        ledger.observe(std::slice::from_ref(&found), complete(), 0);
        send_all(&mut ledger, 0);
        // After a restart the task has not run yet: its source is incomplete.
        ledger.observe(&[], complete(), 10);
        assert_eq!(ledger.len(), 1);
        ledger.observe(&[found], complete(), 20);
        assert!(
            ledger.due(&channels(), 20, DAY).is_empty(),
            "no duplicate after the restart"
        );
        ledger.observe(&[], |_| true, 30);
        assert!(ledger.is_empty());
    }

    #[test]
    fn the_record_is_bounded() {
        let mut ledger = Ledger::default();
        let keys: Vec<String> = (0..MAX_ENTRIES + 5).map(|i| format!("c/{i}")).collect();
        let observed: Vec<Observed<'_>> = keys.iter().map(|k| obs(k, Level::INFO)).collect();
        assert_eq!(ledger.observe(&observed, complete(), 0), 5);
        assert_eq!(ledger.len(), MAX_ENTRIES);
        send_all(&mut ledger, 0);
        assert!(ledger.encode().len() < 700_000, "{} bytes", ledger.encode().len());
    }
}
