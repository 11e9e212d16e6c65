//! Where a certificate stands against an AlertConfig's levels, and when that next changes. Pure:
//! the controller passes the clock in.

use jiff::{SignedDuration, Timestamp};

use crate::crd::v1alpha1::alert_config::{AlertLevel, DEFAULT_LEVELS, Level};

const DAY: i64 = 86_400;

/// The enabled levels of one AlertConfig, most severe first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelSet {
    /// `(level, remaining days)`, most severe first.
    enabled: Vec<(Level, i64)>,
}

impl LevelSet {
    /// The enabled levels of `spec.levels`, or the defaults (INFO 60, WARN 30, HIGH 14, ERROR 7)
    /// when it is empty.
    pub fn from_spec(levels: &[AlertLevel]) -> Self {
        let mut enabled: Vec<(Level, i64)> = if levels.is_empty() {
            DEFAULT_LEVELS.iter().map(|(l, d)| (*l, i64::from(*d))).collect()
        } else {
            levels
                .iter()
                .filter(|l| l.enabled)
                .map(|l| (l.level, i64::from(l.remaining_days)))
                .collect()
        };
        enabled.sort_by_key(|(level, _)| std::cmp::Reverse(*level));
        Self { enabled }
    }

    /// The enabled levels, most severe first, with their remaining days.
    pub fn enabled(&self) -> &[(Level, i64)] {
        &self.enabled
    }

    /// The level of a certificate valid until `not_after`, at `now`: ERROR once expired (even when
    /// the ERROR level is disabled: an expired certificate is never quiet), else the most severe
    /// enabled level whose threshold has been reached, else none.
    pub fn level_at(&self, not_after: Timestamp, now: Timestamp) -> Option<Level> {
        if now >= not_after {
            return Some(Level::ERROR);
        }
        let left = not_after.as_second() - now.as_second();
        self.enabled
            .iter()
            .find(|(_, days)| left <= days.saturating_mul(DAY))
            .map(|(level, _)| *level)
    }

    /// The next time after `now` at which the level of a certificate valid until `not_after`
    /// changes: the next threshold still ahead, or expiry.
    pub fn next_crossing(&self, not_after: Timestamp, now: Timestamp) -> Option<Timestamp> {
        self.enabled
            .iter()
            .filter_map(|(_, days)| {
                not_after
                    .checked_sub(SignedDuration::from_secs(days.saturating_mul(DAY)))
                    .ok()
            })
            .chain(std::iter::once(not_after))
            .filter(|at| *at > now)
            .min()
    }
}

/// Whole days of validity left at `now`, rounded down; once expired, minus the days since
/// expiry rounded up, so at least -1 from the moment of expiry (an expired certificate never
/// reads as "0 days left").
pub fn days_left(not_after: Timestamp, now: Timestamp) -> i64 {
    let left = not_after.as_second() - now.as_second();
    if now >= not_after {
        let elapsed = -left;
        return -(elapsed.div_euclid(DAY) + i64::from(elapsed.rem_euclid(DAY) != 0)).max(1);
    }
    left.div_euclid(DAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + days * DAY).unwrap()
    }

    fn level(level: Level, remaining_days: i32, enabled: bool) -> AlertLevel {
        AlertLevel {
            level,
            remaining_days,
            enabled,
        }
    }

    #[test]
    fn a_certificate_is_at_the_most_severe_level_it_has_reached_and_expired_is_error() {
        let levels = LevelSet::from_spec(&[]);
        let now = at(0);
        let cases = [
            (45, Some(Level::INFO)),
            (20, Some(Level::WARN)),
            (10, Some(Level::HIGH)),
            (3, Some(Level::ERROR)),
            (-1, Some(Level::ERROR)),
            (61, None),
            (60, Some(Level::INFO)),
            (30, Some(Level::WARN)),
        ];
        for (days, expected) in cases {
            assert_eq!(levels.level_at(at(days), now), expected, "{days} days left");
        }
    }

    #[test]
    fn disabled_levels_are_skipped_but_expiry_is_always_error() {
        let levels = LevelSet::from_spec(&[
            level(Level::WARN, 30, true),
            level(Level::ERROR, 7, false),
            level(Level::HIGH, 14, true),
        ]);
        assert_eq!(levels.level_at(at(3), at(0)), Some(Level::HIGH));
        assert_eq!(levels.level_at(at(0), at(0)), Some(Level::ERROR));
        assert_eq!(levels.level_at(at(45), at(0)), None);
    }

    #[test]
    fn the_next_crossing_is_the_nearest_threshold_ahead_or_expiry() {
        let levels = LevelSet::from_spec(&[]);
        // 45 days left: WARN is reached in 15 days.
        assert_eq!(levels.next_crossing(at(45), at(0)), Some(at(15)));
        // 3 days left, past every threshold: expiry is next.
        assert_eq!(levels.next_crossing(at(3), at(0)), Some(at(3)));
        // Expired: nothing changes any more.
        assert_eq!(levels.next_crossing(at(-2), at(0)), None);
        // 100 days left: INFO in 40 days.
        assert_eq!(levels.next_crossing(at(100), at(0)), Some(at(40)));
    }

    #[test]
    fn days_left_round_down_and_go_negative_after_expiry() {
        assert_eq!(days_left(at(3), at(0)), 3);
        let just_under = Timestamp::from_second(at(3).as_second() - 1).unwrap();
        assert_eq!(days_left(just_under, at(0)), 2);
        assert_eq!(
            days_left(Timestamp::from_second(at(0).as_second() - 1).unwrap(), at(0)),
            -1
        );
        assert_eq!(days_left(at(-2), at(0)), -2);
    }
}
