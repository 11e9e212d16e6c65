//! Leader election on a `coordination.k8s.io/v1` Lease, so several replicas can run while only
//! one talks to CAs and writes status.
//!
//! The algorithm is client-go's: the holder renews the Lease every `retry_period`; a standby
//! watches the Lease record and takes over once the record has not changed for a whole
//! `lease_duration` *by its own clock* (so clock skew between nodes does not matter). Every write
//! carries the `resourceVersion` it read, so two standbys cannot both win. A leader that cannot
//! renew within the lease duration reports the loss; the caller exits rather than risk two
//! leaders. On graceful shutdown the leader releases the Lease so a standby takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio_util::sync::CancellationToken;

/// Settings of one elector.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// This replica's identity.
    pub identity: String,
    /// How long a Lease is valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews and a standby re-reads.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Settings with the retry period derived from the lease duration (a fifth of it, at least
    /// one second), so a standby notices expiry promptly without hammering the apiserver.
    pub fn new(name: String, identity: String, lease_duration: Duration) -> Self {
        let retry_period = (lease_duration / 5).max(Duration::from_secs(1));
        Self {
            name,
            identity,
            lease_duration,
            retry_period,
        }
    }
}

/// Failure talking to the apiserver about the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The Lease could not be read.
    #[error("cannot read Lease {name}")]
    Get {
        /// Lease name.
        name: String,
        /// The apiserver's error.
        #[source]
        source: kube::Error,
    },
    /// The Lease could not be created or updated (other than losing a race).
    #[error("cannot write Lease {name}")]
    Write {
        /// Lease name.
        name: String,
        /// The apiserver's error.
        #[source]
        source: kube::Error,
    },
    /// Leadership was lost: another replica holds the Lease or renewal failed for too long.
    #[error("lost leadership of Lease {name}: {reason}")]
    Lost {
        /// Lease name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Outcome of one attempt to acquire or renew.
enum Attempt {
    Leading,
    Standby,
}

/// Competes for and holds one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The last record seen and when (by our clock) it last changed.
    observed: Option<(String, Instant)>,
}

impl LeaderElector {
    /// An elector for the Lease in `api`'s namespace.
    pub fn new(api: Api<Lease>, settings: LeaseSettings) -> Self {
        Self {
            api,
            settings,
            observed: None,
        }
    }

    /// Waits until this replica holds the Lease. Returns `false` if `cancel` fired first.
    pub async fn acquire(&mut self, cancel: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "acquired leadership");
                    return true;
                }
                Ok(Attempt::Standby) => {}
                Err(error) => tracing::warn!(error = %error_chain(&error), "leader election attempt failed"),
            }
            tokio::select! {
                () = cancel.cancelled() => return false,
                () = tokio::time::sleep(self.settings.retry_period) => {}
            }
        }
    }

    /// Renews the Lease until `cancel` fires (then releases it and returns `Ok`) or leadership
    /// is lost (returns the reason).
    pub async fn hold(&mut self, cancel: &CancellationToken) -> Result<(), LeaseError> {
        let mut last_renewal = Instant::now();
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    self.release().await;
                    return Ok(());
                }
                () = tokio::time::sleep(self.settings.retry_period) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => last_renewal = Instant::now(),
                Ok(Attempt::Standby) => {
                    return Err(LeaseError::Lost {
                        name: self.settings.name.clone(),
                        reason: "another replica holds the Lease".into(),
                    });
                }
                Err(error) => {
                    // Stop acting as leader before the Lease can expire for the others: keep a
                    // margin of one retry period.
                    let deadline = self
                        .settings
                        .lease_duration
                        .saturating_sub(self.settings.retry_period);
                    if last_renewal.elapsed() >= deadline {
                        return Err(LeaseError::Lost {
                            name: self.settings.name.clone(),
                            reason: format!(
                                "could not renew for {:?}: {}",
                                last_renewal.elapsed(),
                                error_chain(&error)
                            ),
                        });
                    }
                    tracing::warn!(error = %error_chain(&error), "renewing the Lease failed; retrying");
                }
            }
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, LeaseError> {
        let name = self.settings.name.clone();
        let name = &name;
        let now = MicroTime(jiff::Timestamp::now());
        let lease_seconds = i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let existing = self.api.get_opt(name).await.map_err(|source| LeaseError::Get {
            name: name.clone(),
            source,
        })?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.settings.identity.clone()),
                    lease_duration_seconds: Some(lease_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(e) if is_conflict(&e) => Ok(Attempt::Standby),
                Err(source) => Err(LeaseError::Write {
                    name: name.clone(),
                    source,
                }),
            };
        };

        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let we_hold = holder.as_deref() == Some(self.settings.identity.as_str());
        if !we_hold && holder.is_some() && !self.observed_expired(&lease_record(spec)) {
            return Ok(Attempt::Standby);
        }
        if !we_hold {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.settings.identity.clone());
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(lease_seconds);
        // `replace` sends the resourceVersion we read: if anyone wrote in between we get 409.
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Leading),
            Err(e) if is_conflict(&e) => Ok(Attempt::Standby),
            Err(source) => Err(LeaseError::Write {
                name: name.clone(),
                source,
            }),
        }
    }

    /// Whether the holder's record has stayed unchanged for a whole lease duration.
    fn observed_expired(&mut self, record: &str) -> bool {
        match &self.observed {
            Some((seen, since)) if seen == record => since.elapsed() >= self.settings.lease_duration,
            _ => {
                self.observed = Some((record.to_owned(), Instant::now()));
                false
            }
        }
    }

    /// Gives the Lease up so a standby can take over without waiting for expiry.
    async fn release(&mut self) {
        let name = &self.settings.name;
        let Ok(Some(mut lease)) = self.api.get_opt(name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %name, "released leadership"),
            Err(error) => {
                tracing::warn!(error = %error, "could not release the Lease; standbys take over when it expires");
            }
        }
    }
}

/// The parts of a Lease that change on every renewal or takeover.
fn lease_record(spec: &LeaseSpec) -> String {
    format!(
        "{:?}/{:?}/{:?}",
        spec.holder_identity,
        spec.renew_time.as_ref().map(|t| t.0),
        spec.lease_transitions
    )
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Renders an error with its sources, `a: b: c`, for log fields.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_period_is_a_fifth_of_the_lease_but_at_least_a_second() {
        let s = LeaseSettings::new("l".into(), "me".into(), Duration::from_secs(15));
        assert_eq!(s.retry_period, Duration::from_secs(3));
        let s = LeaseSettings::new("l".into(), "me".into(), Duration::from_secs(2));
        assert_eq!(s.retry_period, Duration::from_secs(1));
    }

    #[test]
    fn record_changes_with_renewals() {
        let mut spec = LeaseSpec {
            holder_identity: Some("a".into()),
            ..LeaseSpec::default()
        };
        let before = lease_record(&spec);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        assert_ne!(before, lease_record(&spec));
    }
}
