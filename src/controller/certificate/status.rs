//! Certificate status bookkeeping: the conditions of each outcome, failures with their persisted backoff, and the status write.

use super::error::Error;
use super::plan::SecretState;
use super::validate::Renewal;
use super::{ABANDONED_RETRY, MAX_FAILURE_MESSAGE, MAX_RESYNC, backoff, now, time};
use crate::controller::conditions;
use crate::crd::v1alpha1::Certificate;
use crate::crd::v1alpha1::certificate::CertificateStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::runtime::controller::Action;
use std::time::Duration;

/// Requeue at `at` (Unix seconds), at most [`MAX_RESYNC`] from now, and within
/// [`ABANDONED_RETRY`] while abandoned orders wait to be revoked.
pub(super) fn requeue_at(at: i64, status: &CertificateStatus) -> Action {
    let mut wait = Duration::from_secs((at - now()).max(1).unsigned_abs()).min(MAX_RESYNC);
    if !status.abandoned_orders.is_empty() {
        wait = wait.min(ABANDONED_RETRY);
    }
    Action::requeue(wait)
}

pub(super) fn mark_conflict(status: &mut CertificateStatus, secret_name: &str, generation: Option<i64>) {
    let message = format!(
        "Secret {secret_name} exists and is not owned by this Certificate; delete or rename it, or change spec.secretName"
    );
    conditions::set(
        &mut status.conditions,
        "Ready",
        false,
        "SecretConflict",
        message,
        generation,
    );
    let waiting = "waiting for the Secret name to be free";
    conditions::set(
        &mut status.conditions,
        "Issuing",
        false,
        "SecretConflict",
        waiting,
        generation,
    );
}

pub(super) fn mark_up_to_date(
    status: &mut CertificateStatus,
    secret: &SecretState,
    renewal: Renewal,
    generation: Option<i64>,
) {
    if let SecretState::Owned {
        certificate: Some(info),
        ..
    } = secret
    {
        status.not_before = time(info.not_before);
        status.not_after = time(info.not_after);
        status.serial_number = Some(info.serial_hex.clone());
    }
    status.renewal_time = time(renewal.at);
    status.failed_issuance_attempts = None;
    status.last_failure_time = None;
    status.last_failure_message = None;
    // A certificate just delivered keeps the delivery's words (Issued/Repaired): rewording the
    // same state would cost a status write per issuance and say nothing new.
    let settled = |type_: &str, status_: &str| {
        conditions::get(&status.conditions, type_).is_some_and(|c| {
            c.status == status_
                && c.observed_generation == generation
                && ["Issued", "Repaired", "Ready", "UpToDate"].contains(&c.reason.as_str())
        })
    };
    let (ready_settled, issuing_settled) = (settled("Ready", "True"), settled("Issuing", "False"));
    if !ready_settled {
        let message = if renewal.renew_before_too_long {
            RENEW_BEFORE_TOO_LONG.to_owned()
        } else {
            "the certificate is up to date".to_owned()
        };
        conditions::set(
            &mut status.conditions,
            "Ready",
            true,
            "Ready",
            message,
            generation,
        );
    }
    if !issuing_settled {
        let message = "no issuance in progress";
        conditions::set(
            &mut status.conditions,
            "Issuing",
            false,
            "UpToDate",
            message,
            generation,
        );
    }
}

/// Said in the Ready condition and a Warning event when `renewBefore` had to be overridden.
pub(super) const RENEW_BEFORE_TOO_LONG: &str = "the certificate is up to date; renewBefore is not shorter than the lifetime the CA issued, so it is renewed at two thirds of that lifetime (shorten renewBefore or use renewBeforePercentage)";

/// Records a failed attempt in status (so the backoff survives restarts); returns the message
/// and how long to wait: the backoff, or the CA's Retry-After when longer.
pub(super) fn record_failure(
    status: &mut CertificateStatus,
    error: &Error,
    secret: &SecretState,
    generation: Option<i64>,
) -> (String, Duration) {
    let attempts = status.failed_issuance_attempts.unwrap_or(0) + 1;
    let message = conditions::truncate(crate::controller::errors::error_chain(error), MAX_FAILURE_MESSAGE);
    status.failed_issuance_attempts = Some(attempts);
    status.last_failure_time = Some(Time(jiff::Timestamp::now()));
    status.last_failure_message = Some(message.clone());
    // Ready stays True while the current Secret is still good (e.g. a failed renewal).
    conditions::set(
        &mut status.conditions,
        "Ready",
        secret_ready(secret),
        error.category(),
        message.clone(),
        generation,
    );
    let retry_after = match error {
        Error::Backend { source, .. } => source.retry_after(),
        _ => None,
    };
    (
        message,
        retry_after.map_or(backoff(attempts), |hint| hint.max(backoff(attempts))),
    )
}

pub(super) fn secret_ready(state: &SecretState) -> bool {
    matches!(
        state,
        SecretState::Owned {
            certificate: Some(_),
            key_matches: true,
            chain_verifies: true
        }
    )
}

/// Writes status when it changed. Returns whether a write happened.
pub(super) async fn write_status(
    api: &Api<Certificate>,
    name: &str,
    old: &CertificateStatus,
    new: &CertificateStatus,
) -> Result<bool, Error> {
    crate::controller::status::write_if_changed(api, name, old, new)
        .await
        .map_err(|source| Error::StatusWrite { source })
}
