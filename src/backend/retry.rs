//! When and how long to wait before repeating a request. Only idempotent requests are ever
//! repeated (see [`Idempotency`]); the waits use decorrelated jitter so many operators behind one
//! CA account do not retry in lockstep, and a CA's `Retry-After` is a floor, never shortened,
//! though never longer than [`MAX_RETRY_AFTER`].

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The longest `Retry-After` honoured: one hour. A CA (or whatever answers at its URL) asking
/// for more would park certificates for days, and a value near `u64::MAX` seconds would
/// overflow the time arithmetic of whoever schedules the next attempt.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A response's `Retry-After` in its seconds form, clamped to [`MAX_RETRY_AFTER`]. The HTTP-date
/// form is ignored: neither CA documents rate limiting, so we accept what proxies and gateways
/// commonly send.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(|seconds| Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// Whether a request may be sent again after a failure whose outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotency {
    /// Repeating it cannot change the result (reads, revocation).
    Idempotent,
    /// Repeating it could place a second order: send once, report failures to the caller.
    Once,
}

/// Retry limits of one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call in total, the first included (at least 1).
    pub max_attempts: u32,
    /// The first wait.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts (a longer `Retry-After` is still honoured).
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited out inside a call; the caller gets a
    /// rate-limited error and requeues instead of holding a worker.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// The backoff state of one call.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    previous: Duration,
    attempts: u32,
}

impl Backoff {
    /// A fresh call: no attempt made yet.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            previous: policy.initial_backoff,
            attempts: 0,
        }
    }

    /// Records an attempt; returns its number (1-based).
    pub fn attempt(&mut self) -> u32 {
        self.attempts += 1;
        self.attempts
    }

    /// Whether another attempt is allowed.
    pub fn can_retry(&self) -> bool {
        self.attempts < self.policy.max_attempts.max(1)
    }

    /// The wait before the next attempt: decorrelated jitter between the initial backoff and
    /// three times the previous wait, capped, and never shorter than `retry_after`.
    pub fn next_wait(&mut self, retry_after: Option<Duration>) -> Duration {
        let low = self.policy.initial_backoff.as_millis();
        let high = (self.previous.as_millis() * 3).max(low + 1);
        let low = u64::try_from(low).unwrap_or(u64::MAX);
        let high = u64::try_from(high).unwrap_or(u64::MAX);
        let jittered = Duration::from_millis(fastrand::u64(low..high)).min(self.policy.max_backoff);
        self.previous = jittered;
        retry_after.map_or(jittered, |floor| jittered.max(floor.min(MAX_RETRY_AFTER)))
    }

    /// Whether a `Retry-After` is short enough to wait out inside the call.
    pub fn may_wait(&self, retry_after: Duration) -> bool {
        retry_after <= self.policy.max_retry_after
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_seconds_are_parsed_and_clamped_to_an_hour() {
        let mut headers = HeaderMap::new();
        assert_eq!(parse_retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("86400"));
        assert_eq!(parse_retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("18446744073709551615"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(3600)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&headers), None);
        let mut backoff = Backoff::new(RetryPolicy::default());
        assert_eq!(backoff.next_wait(Some(Duration::MAX)), MAX_RETRY_AFTER);
    }

    #[test]
    fn attempts_are_bounded() {
        let mut backoff = Backoff::new(RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        });
        let mut made = 0;
        loop {
            backoff.attempt();
            made += 1;
            if !backoff.can_retry() {
                break;
            }
        }
        assert_eq!(made, 3);
    }

    #[test]
    fn waits_stay_within_bounds_and_honour_retry_after() {
        let policy = RetryPolicy::default();
        let mut backoff = Backoff::new(policy);
        for _ in 0..50 {
            let wait = backoff.next_wait(None);
            assert!(
                wait >= policy.initial_backoff && wait <= policy.max_backoff,
                "{wait:?}"
            );
        }
        let wait = backoff.next_wait(Some(Duration::from_secs(30)));
        assert!(wait >= Duration::from_secs(30));
        assert!(backoff.may_wait(Duration::from_secs(60)));
        assert!(!backoff.may_wait(Duration::from_secs(61)));
    }
}
