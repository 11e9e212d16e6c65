//! Exponential backoff with jitter, one formula for every controller: the runner's in-memory
//! retries of transient failures and the backoff a resource persists in its status (which
//! survives restarts and leader changes). ±20 % jitter keeps objects that failed together (an
//! apiserver blip, a CA outage) from retrying together.

use std::time::Duration;

/// First wait.
pub const BASE: Duration = Duration::from_secs(5);

/// Wait after `failures` consecutive failures: [`BASE`] doubling up to `cap`, ±20 % jitter.
pub fn exponential(failures: u32, cap: Duration) -> Duration {
    let exponent = failures.clamp(1, 20) - 1;
    let wait = BASE.saturating_mul(2u32.saturating_pow(exponent)).min(cap);
    wait.mul_f64(0.8 + fastrand::f64() * 0.4)
}

/// When a backoff persisted in status as `failures` at `failed_at` (Unix seconds) ends, with
/// the longest wait `cap` (the jitter-free upper bound, so a restarted operator never retries
/// before a running one would have).
pub fn persisted_until(failures: u32, failed_at: i64, cap: Duration) -> i64 {
    let exponent = failures.clamp(1, 20) - 1;
    let wait = BASE.saturating_mul(2u32.saturating_pow(exponent)).min(cap);
    failed_at.saturating_add(i64::try_from(wait.mul_f64(0.8).as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_five_seconds_to_the_cap_with_jitter() {
        let cap = Duration::from_secs(600);
        for (failures, base) in [(1, 5.0), (2, 10.0), (3, 20.0), (8, 600.0), (1000, 600.0)] {
            for _ in 0..50 {
                let wait = exponential(failures, cap).as_secs_f64();
                assert!(
                    wait >= base * 0.8 - 1e-9 && wait <= base * 1.2 + 1e-9,
                    "{failures}: {wait}"
                );
            }
        }
    }

    #[test]
    fn a_persisted_backoff_ends_no_earlier_than_the_shortest_jittered_wait() {
        let cap = Duration::from_secs(600);
        assert_eq!(persisted_until(1, 1000, cap), 1004);
        assert_eq!(persisted_until(3, 1000, cap), 1016);
        assert_eq!(persisted_until(50, 1000, cap), 1480);
    }
}
