//! When a DiscoveryTask runs (pure): five-field cron expressions in UTC, the `@daily`-style
//! macros, or a fixed interval.

use jiff::{Timestamp, ToSpan as _, civil::DateTime, tz::TimeZone};

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Cron fields, each the set of allowed values.
    Cron(Box<Cron>),
    /// Every this many seconds after the last run.
    Every(i64),
}

/// The allowed values of each cron field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    /// Both day fields restricted: a day matches when either does (cron's rule).
    either_day: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    /// A cron expression (`0 3 * * *`, `*/15 * * * mon-fri`, `@daily`).
    pub fn cron(expression: &str) -> Result<Self, String> {
        let expanded = match expression.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields.as_slice() else {
            return Err(format!("{expression:?} does not have five fields"));
        };
        let mut weekdays = field(weekday, 0, 7, &WEEKDAYS, "day-of-week")?;
        // 7 is Sunday too.
        if weekdays[7] {
            weekdays[0] = true;
        }
        weekdays.truncate(7);
        Ok(Self::Cron(Box::new(Cron {
            minutes: field(minute, 0, 59, &[], "minute")?,
            hours: field(hour, 0, 23, &[], "hour")?,
            days: field(day, 1, 31, &[], "day-of-month")?,
            months: field(month, 1, 12, &MONTHS, "month")?,
            weekdays,
            either_day: !day.starts_with('*') && !weekday.starts_with('*'),
        })))
    }

    /// The first run strictly after `after` (to the minute for cron). `None` when a cron
    /// expression never matches (e.g. `0 0 31 2 *`) within five years.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        match self {
            Self::Every(seconds) => after.checked_add(seconds.seconds()).ok(),
            Self::Cron(cron) => cron.next_after(after),
        }
    }
}

impl Cron {
    fn day_matches(&self, at: DateTime) -> bool {
        let day = self.days[usize::try_from(at.day()).unwrap_or(0)];
        let weekday = self.weekdays[usize::from(at.weekday().to_sunday_zero_offset().unsigned_abs())];
        if self.either_day {
            day || weekday
        } else {
            day && weekday
        }
    }

    fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let utc = TimeZone::UTC;
        let start = after.to_zoned(utc.clone()).datetime();
        // The next whole minute.
        let mut at = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = start.checked_add(5.years()).ok()?;
        while at < limit {
            if !self.months[usize::try_from(at.month()).unwrap_or(0)] {
                at = at.first_of_month().checked_add(1.month()).ok()?.start_of_day();
                continue;
            }
            if !self.day_matches(at) {
                at = at.start_of_day().checked_add(1.day()).ok()?;
                continue;
            }
            if !self.hours[usize::try_from(at.hour()).unwrap_or(0)] {
                at = at.with().minute(0).build().ok()?.checked_add(1.hour()).ok()?;
                continue;
            }
            if !self.minutes[usize::try_from(at.minute()).unwrap_or(0)] {
                at = at.checked_add(1.minute()).ok()?;
                continue;
            }
            return at.to_zoned(utc).ok().map(|z| z.timestamp());
        }
        None
    }
}

/// One cron field as a table of allowed values `0..=max` (values below `min` never allowed).
fn field(text: &str, min: u32, max: u32, names: &[&str], what: &str) -> Result<Vec<bool>, String> {
    let size = usize::try_from(max).map_err(|e| e.to_string())? + 1;
    let mut allowed = vec![false; size];
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(index) = names.iter().position(|n| *n == lower) {
            // Month names count from 1, weekday names from 0.
            let base = u32::from(names.len() == 12);
            return u32::try_from(index).map(|i| i + base).map_err(|e| e.to_string());
        }
        let n: u32 = s.parse().map_err(|_| format!("{what} {s:?} is not a number"))?;
        if n < min || n > max {
            return Err(format!("{what} {n} is outside {min}-{max}"));
        }
        Ok(n)
    };
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("{what} step {step:?} is not a number"))?;
                if step == 0 {
                    return Err(format!("{what} step must be at least 1"));
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((low, high)) = range.split_once('-') {
            (value(low)?, value(high)?)
        } else {
            let v = value(range)?;
            // `5/15` means from 5 to the end in steps of 15.
            (v, if part.contains('/') { max } else { v })
        };
        if low > high {
            return Err(format!("{what} range {range:?} runs backwards"));
        }
        for v in (low..=high).step_by(usize::try_from(step).map_err(|e| e.to_string())?) {
            allowed[usize::try_from(v).map_err(|e| e.to_string())?] = true;
        }
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next(expression: &str, after: &str) -> String {
        Schedule::cron(expression)
            .unwrap()
            .next_after(at(after))
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn cron_expressions_give_the_next_minute_that_matches() {
        assert_eq!(next("0 3 * * *", "2026-11-29T12:00:00Z"), "2026-11-30T03:00:00Z");
        assert_eq!(next("0 3 * * *", "2026-11-29T02:59:59Z"), "2026-11-29T03:00:00Z");
        assert_eq!(
            next("*/15 * * * *", "2026-11-29T12:00:00Z"),
            "2026-11-29T12:15:00Z"
        );
        assert_eq!(
            next("30 9 * * mon-fri", "2026-11-28T10:00:00Z"),
            "2026-11-30T09:30:00Z"
        );
        assert_eq!(
            next("0 0 1 jan *", "2026-11-29T00:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(next("@daily", "2026-11-29T23:59:00Z"), "2026-11-30T00:00:00Z");
        assert_eq!(next("0 12 * * 7", "2026-11-29T13:00:00Z"), "2026-12-06T12:00:00Z");
        // Both day fields restricted: either matches (the 1st, or any Monday).
        assert_eq!(
            next("0 0 1 * mon", "2026-11-29T12:00:00Z"),
            "2026-11-30T00:00:00Z"
        );
        // Never (30 February).
        assert_eq!(next("0 0 30 2 *", "2026-11-29T12:00:00Z"), "");
    }

    #[test]
    fn bad_cron_expressions_say_which_field() {
        for (expression, needle) in [
            ("0 3 * *", "five fields"),
            ("60 * * * *", "minute 60"),
            ("0 24 * * *", "hour 24"),
            ("0 0 0 * *", "day-of-month 0"),
            ("0 0 * 13 *", "month 13"),
            ("*/0 * * * *", "at least 1"),
            ("0 5-3 * * *", "backwards"),
        ] {
            let error = Schedule::cron(expression).unwrap_err();
            assert!(error.contains(needle), "{expression}: {error}");
        }
    }

    #[test]
    fn intervals_count_from_the_last_run() {
        let every = Schedule::Every(3600);
        assert_eq!(
            every.next_after(at("2026-11-29T12:00:00Z")).unwrap().to_string(),
            "2026-11-29T13:00:00Z"
        );
    }
}
