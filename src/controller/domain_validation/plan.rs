//! The DomainValidation decision, pure: from the CA's DCV state (`scm-dcv-domains.md` §8) and the
//! spec, what to do next. No I/O, so every branch has a unit test.
//!
//! The rules that keep several clusters (or a person in the SCM console) sharing one account
//! from fighting over the domain's single order slot (§10.2 "one order per domain"):
//! - a validation completed elsewhere counts: `VALIDATED` and not due is done, whoever did it;
//! - a submitted order is followed, never cleared, until it lapses (`orderExpiration`);
//! - only an order nobody submitted is replaced by ours.

use std::time::Duration;

use jiff::{Timestamp, civil::Date};

use crate::backend::scm::dcv::{Challenge, DcvMethod, DcvState, OrderStatus, ValidationStatus};

/// The shortest wait between two looks at a submitted order.
pub const MIN_POLL: Duration = Duration::from_secs(30);
/// The longest wait between two looks at a submitted order (§10.2: at most every 15 min).
pub const MAX_POLL: Duration = Duration::from_secs(15 * 60);
/// How long after the CA's announced next check the result is read.
const AFTER_CHECK: Duration = Duration::from_secs(60);
/// The poll when the CA announces no next check.
const DEFAULT_POLL: Duration = Duration::from_secs(5 * 60);

/// The precision of SCM's validation dates.
const DATE_PRECISION: Duration = Duration::from_secs(86_400);

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Validated and not due: nothing to do until `revalidate_at`; our challenge, if any, is no
    /// longer needed.
    Valid {
        /// When revalidation starts (`expiresAt − revalidateBefore`).
        revalidate_at: Timestamp,
    },
    /// A submitted order (ours or anyone's): look again at `poll_at`. `challenge` is set when the
    /// order is of our method, so it stays published until the CA has checked it.
    Follow {
        /// When to read the status again.
        poll_at: Timestamp,
        /// The order's challenge, when it is of our method.
        challenge: Option<Challenge>,
    },
    /// The submitted order lapsed without success: reset it, then start again.
    Clear,
    /// Start an order of our method (HTTP, HTTPS, CNAME) to learn its challenge.
    Start,
    /// The order of our method is started and not submitted: publish `challenge`, check it
    /// ourselves, then submit.
    PublishAndSubmit(Challenge),
    /// TXT has no start: submit, and the answer holds the record to publish (§3.10).
    SubmitTxt,
    /// EMAIL: read the allowed addresses, then submit to `spec.email` when it is one of them.
    SubmitEmail,
}

/// The facts the decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// The CA's state of the domain.
    pub state: &'a DcvState,
    /// The method the spec asks for.
    pub method: DcvMethod,
    /// Now.
    pub now: Timestamp,
    /// `spec.revalidateBefore`.
    pub revalidate_before: Duration,
}

/// Midnight UTC of `date`: SCM's dates carry no time, so a validation is treated as expiring at
/// the start of its expiration day (the earliest reading, so revalidation is never late).
pub fn start_of(date: Date) -> Timestamp {
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .map_or(Timestamp::UNIX_EPOCH, |zoned| zoned.timestamp())
}

fn plus(at: Timestamp, wait: Duration) -> Timestamp {
    at.checked_add(jiff::SignedDuration::try_from(wait).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

fn minus(at: Timestamp, wait: Duration) -> Timestamp {
    at.checked_sub(jiff::SignedDuration::try_from(wait).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MIN)
}

/// When a validated domain is due for revalidation; `None` when it is not validated now.
/// `revalidateBefore` not shorter than the validation's lifetime (validities shrink: 200, 100,
/// then 10 days under CA/B SC-081, `scm-dcv-domains.md` §8.4) would make a fresh validation due
/// at once, an order per reconcile: then revalidation starts at two thirds of the lifetime, the
/// rule Certificates follow for `renewBefore`.
pub fn revalidation_time(state: &DcvState, revalidate_before: Duration) -> Option<Timestamp> {
    if state.status != ValidationStatus::Validated {
        return None;
    }
    // A validation without an expiry date is taken as due: reading it again costs one order,
    // missing its expiry costs every certificate of the domain.
    let Some(expires) = state.expiration_date.map(start_of) else {
        return Some(Timestamp::UNIX_EPOCH);
    };
    let lifetime = state
        .validation_date
        .map(start_of)
        .and_then(|validated| Duration::try_from(expires.duration_since(validated)).ok())
        .filter(|lifetime| !lifetime.is_zero());
    // SCM's dates are days: a validation may be up to a day older than its date says, so a
    // `revalidateBefore` within a day of the lifetime would also fall due on the day of a fresh
    // validation.
    Some(match lifetime {
        Some(lifetime) if revalidate_before + DATE_PRECISION >= lifetime => minus(expires, lifetime / 3),
        _ => minus(expires, revalidate_before),
    })
}

/// Whether the order's mode is `method` (`orderMode` is read in any case).
fn same_mode(state: &DcvState, method: DcvMethod) -> bool {
    state
        .order_mode
        .as_deref()
        .is_some_and(|mode| mode.trim().eq_ignore_ascii_case(method.order_mode()))
}

/// The next step.
pub fn plan(facts: &Facts<'_>) -> Step {
    let Facts {
        state,
        method,
        now,
        revalidate_before,
    } = *facts;
    if let Some(revalidate_at) = revalidation_time(state, revalidate_before)
        && revalidate_at > now
    {
        return Step::Valid { revalidate_at };
    }
    match &state.order_status {
        OrderStatus::Submitted => {
            if state.order_expiration.is_some_and(|lapses| lapses <= now) {
                return Step::Clear;
            }
            let announced = state.next_check.map(|next| plus(next, AFTER_CHECK));
            let poll_at = announced
                .unwrap_or_else(|| plus(now, DEFAULT_POLL))
                .clamp(plus(now, MIN_POLL), plus(now, MAX_POLL));
            let challenge = state.challenge.clone().filter(|_| same_mode(state, method));
            Step::Follow { poll_at, challenge }
        }
        OrderStatus::AwaitingSubmission
            if same_mode(state, method)
                && matches!(method, DcvMethod::Http | DcvMethod::Https | DcvMethod::Cname) =>
        {
            match &state.challenge {
                Some(challenge) => Step::PublishAndSubmit(challenge.clone()),
                // Started, but the status shows no material: start again (same material, §8.2 T1).
                None => Step::Start,
            }
        }
        // Nothing submitted (or an order nobody can complete without submitting it): ours.
        _ => match method {
            DcvMethod::Txt => Step::SubmitTxt,
            DcvMethod::Email => Step::SubmitEmail,
            DcvMethod::Http | DcvMethod::Https | DcvMethod::Cname => Step::Start,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn now() -> Timestamp {
        "2026-06-01T12:00:00Z".parse().unwrap()
    }

    fn state(status: ValidationStatus, order: OrderStatus) -> DcvState {
        DcvState {
            status,
            validation_date: None,
            expiration_date: None,
            order_status: order,
            order_mode: None,
            challenge: None,
            order_backend_id: None,
            submitted_date: None,
            order_expiration: None,
            last_check: None,
            next_check: None,
        }
    }

    fn file() -> Challenge {
        Challenge::File {
            url: "http://example.com/.well-known/pki-validation/AB.txt".into(),
            file_name: "AB.txt".into(),
            content: "hash\nsectigo.com".into(),
        }
    }

    fn decide(state: &DcvState, method: DcvMethod) -> Step {
        plan(&Facts {
            state,
            method,
            now: now(),
            revalidate_before: 30 * DAY,
        })
    }

    #[test]
    fn a_validation_not_yet_due_is_done_whoever_made_it() {
        let mut validated = state(ValidationStatus::Validated, OrderStatus::NotInitiated);
        validated.expiration_date = Some(jiff::civil::date(2026, 12, 1));
        // Validated by EMAIL in the SCM console; we asked for HTTP: it still counts.
        validated.order_mode = Some("EMAIL".into());
        assert_eq!(
            decide(&validated, DcvMethod::Http),
            Step::Valid {
                revalidate_at: "2026-11-01T00:00:00Z".parse().unwrap()
            }
        );
    }

    #[test]
    fn a_validation_within_revalidate_before_starts_a_new_order() {
        let mut due = state(ValidationStatus::Validated, OrderStatus::NotInitiated);
        due.expiration_date = Some(jiff::civil::date(2026, 6, 20));
        assert_eq!(decide(&due, DcvMethod::Http), Step::Start);
        assert_eq!(decide(&due, DcvMethod::Txt), Step::SubmitTxt);
        assert_eq!(decide(&due, DcvMethod::Email), Step::SubmitEmail);
        let mut no_expiry = due.clone();
        no_expiry.expiration_date = None;
        assert_eq!(
            decide(&no_expiry, DcvMethod::Cname),
            Step::Start,
            "no expiry is due"
        );
    }

    #[test]
    fn revalidate_before_longer_than_the_validity_revalidates_at_two_thirds() {
        let mut short = state(ValidationStatus::Validated, OrderStatus::NotInitiated);
        short.validation_date = Some(jiff::civil::date(2026, 6, 1));
        short.expiration_date = Some(jiff::civil::date(2026, 6, 10));
        // 9 days of validity, 30 days of revalidateBefore: due after 6 days, not at once.
        assert_eq!(
            decide(&short, DcvMethod::Http),
            Step::Valid {
                revalidate_at: "2026-06-07T00:00:00Z".parse().unwrap()
            }
        );
        // 2 days of validity, validated today, revalidateBefore 40 h: with day-precise dates
        // that would be due already; two thirds it is.
        let mut two_days = state(ValidationStatus::Validated, OrderStatus::NotInitiated);
        two_days.validation_date = Some(jiff::civil::date(2026, 6, 1));
        two_days.expiration_date = Some(jiff::civil::date(2026, 6, 3));
        let step = plan(&Facts {
            state: &two_days,
            method: DcvMethod::Http,
            now: now(),
            revalidate_before: Duration::from_secs(40 * 3600),
        });
        assert_eq!(
            step,
            Step::Valid {
                revalidate_at: "2026-06-02T08:00:00Z".parse().unwrap()
            }
        );
    }

    #[test]
    fn an_expired_or_missing_validation_orders_by_method() {
        for status in [ValidationStatus::NotValidated, ValidationStatus::Expired] {
            for order in [OrderStatus::NotInitiated, OrderStatus::Rejected] {
                let s = state(status.clone(), order);
                assert_eq!(decide(&s, DcvMethod::Https), Step::Start);
                assert_eq!(decide(&s, DcvMethod::Txt), Step::SubmitTxt);
                assert_eq!(decide(&s, DcvMethod::Email), Step::SubmitEmail);
            }
        }
    }

    #[test]
    fn a_submitted_order_is_followed_until_it_lapses_never_cleared_before() {
        let mut submitted = state(ValidationStatus::NotValidated, OrderStatus::Submitted);
        submitted.order_mode = Some("EMAIL".into()); // someone else's order
        submitted.order_expiration = Some(plus(now(), DAY));
        submitted.next_check = Some(plus(now(), Duration::from_secs(600)));
        assert_eq!(
            decide(&submitted, DcvMethod::Http),
            Step::Follow {
                poll_at: plus(now(), Duration::from_secs(660)),
                challenge: None
            },
            "another method's order is adopted and followed"
        );
        let mut lapsed = submitted.clone();
        lapsed.order_expiration = Some(minus(now(), Duration::from_secs(1)));
        assert_eq!(decide(&lapsed, DcvMethod::Http), Step::Clear);
    }

    #[test]
    fn polls_follow_the_cas_next_check_within_bounds() {
        let mut submitted = state(ValidationStatus::NotValidated, OrderStatus::Submitted);
        submitted.order_mode = Some("http".into());
        submitted.challenge = Some(file());
        submitted.next_check = Some(plus(now(), 2 * 3600 * Duration::from_secs(1)));
        assert_eq!(
            decide(&submitted, DcvMethod::Http),
            Step::Follow {
                poll_at: plus(now(), MAX_POLL),
                challenge: Some(file())
            },
            "never later than 15 minutes; our own order keeps its challenge published"
        );
        submitted.next_check = Some(minus(now(), DAY));
        assert!(
            matches!(decide(&submitted, DcvMethod::Http), Step::Follow { poll_at, .. } if poll_at == plus(now(), MIN_POLL)),
            "a check in the past is not a hot loop"
        );
        submitted.next_check = None;
        assert!(
            matches!(decide(&submitted, DcvMethod::Http), Step::Follow { poll_at, .. } if poll_at == plus(now(), DEFAULT_POLL))
        );
    }

    #[test]
    fn a_started_order_of_our_method_is_published_and_submitted_another_is_replaced() {
        let mut started = state(ValidationStatus::NotValidated, OrderStatus::AwaitingSubmission);
        started.order_mode = Some("HTTP".into());
        started.challenge = Some(file());
        assert_eq!(decide(&started, DcvMethod::Http), Step::PublishAndSubmit(file()));
        assert_eq!(
            decide(&started, DcvMethod::Cname),
            Step::Start,
            "an unsubmitted order of another method cannot succeed: ours replaces it"
        );
        started.challenge = None;
        assert_eq!(decide(&started, DcvMethod::Http), Step::Start);
    }
}
