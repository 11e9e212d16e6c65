//! Leader election on a `coordination.k8s.io/v1` Lease, so several replicas can run while only
//! one talks to CAs and writes status.
//!
//! The algorithm is client-go's: the holder renews the Lease every `retry_period`; a standby
//! watches the Lease record and takes over once the record has not changed for a whole
//! `lease_duration` *by its own clock* (so clock skew between nodes does not matter). Every write
//! carries the `resourceVersion` it read, so two standbys cannot both win.
//!
//! Two leaders never act at once. A standby cannot have seen a record before the attempt that
//! wrote it started, so it takes over no earlier than `lease_duration` after the start of the
//! leader's last successful renewal. Measured from that same instant, the leader stops trying to
//! renew at `renew_deadline` (every attempt has a timeout, so a silent apiserver cannot hold it
//! longer), cancels its controllers and waits for them, and abandons whatever has not stopped at
//! [`LeaseSettings::stop_deadline`], before the Lease can expire; the caller then exits. On
//! graceful shutdown the leader keeps renewing while its controllers drain and only then
//! releases the Lease, so a standby takes over at once without overlapping them.

use std::{pin::pin, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::controller::errors::error_chain;

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
    /// How long after its last successful renewal the leader keeps trying to renew before it
    /// gives up and stops its controllers (client-go's `renewDeadline`).
    pub renew_deadline: Duration,
}

impl LeaseSettings {
    /// Settings derived from the lease duration: a retry period of a fifth of it (at least one
    /// second), so a standby notices expiry promptly without hammering the apiserver, and a
    /// renew deadline of two thirds of it (client-go's 10 s of 15 s), leaving the last third to
    /// stop the controllers.
    pub fn new(name: String, identity: String, lease_duration: Duration) -> Self {
        let retry_period = (lease_duration / 5).max(Duration::from_secs(1));
        Self {
            name,
            identity,
            lease_duration,
            retry_period,
            renew_deadline: lease_duration * 2 / 3,
        }
    }

    /// By when, after the start of the last successful renewal, the controllers must have
    /// stopped: halfway between the renew deadline and the Lease's expiry, the other half being
    /// the margin for clocks running at slightly different rates and for the process to exit.
    pub fn stop_deadline(&self) -> Duration {
        self.renew_deadline + self.lease_duration.saturating_sub(self.renew_deadline) / 2
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
    /// The apiserver did not answer in time.
    #[error("no answer about Lease {name} within {after:?}")]
    Timeout {
        /// Lease name.
        name: String,
        /// How long we waited.
        after: Duration,
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
    /// When the last successful acquire or renewal *started*: no standby can have seen the
    /// record it wrote earlier, so none takes over before this plus the lease duration.
    renewed_at: Option<Instant>,
}

impl LeaderElector {
    /// An elector for the Lease in `api`'s namespace.
    pub fn new(api: Api<Lease>, settings: LeaseSettings) -> Self {
        Self {
            api,
            settings,
            observed: None,
            renewed_at: None,
        }
    }

    /// Waits until this replica holds the Lease. Returns `false` if `cancel` fired first.
    pub async fn acquire(&mut self, cancel: &CancellationToken) -> bool {
        loop {
            let started = Instant::now();
            // A hung attempt must not keep a standby from retrying; a success that took this
            // long is still safe, as the lease is counted from the attempt's start.
            match self.attempt(self.settings.renew_deadline).await {
                Ok(Attempt::Leading) => {
                    self.renewed_at = Some(started);
                    tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "acquired leadership");
                    return true;
                }
                Ok(Attempt::Standby) => {}
                Err(error) => tracing::warn!(error = %error_chain(&error), "leader election attempt failed"),
            }
            tokio::select! {
                () = cancel.cancelled() => return false,
                () = sleep(self.settings.retry_period) => {}
            }
        }
    }

    /// Runs `controllers` while holding the Lease (after [`Self::acquire`]).
    ///
    /// When `controllers` finish (they stop when `stop` is cancelled, e.g. on SIGTERM), the
    /// Lease is released and `Ok` returned; it is renewed until then, so a standby cannot start
    /// while they drain. When leadership is lost, `stop` is cancelled and `controllers` get
    /// until [`LeaseSettings::stop_deadline`] to finish before they are dropped, so they are
    /// gone before the Lease can expire for a standby; the loss is returned.
    pub async fn lead(
        &mut self,
        stop: &CancellationToken,
        controllers: impl Future<Output = ()>,
    ) -> Result<(), LeaseError> {
        let mut controllers = pin!(controllers);
        let drained = CancellationToken::new();
        let mut stopped = false;
        let held = {
            let mut renewing = pin!(self.renew_until(&drained));
            tokio::select! {
                () = &mut controllers => {
                    stopped = true;
                    drained.cancel();
                    renewing.await
                }
                held = &mut renewing => held,
            }
        };
        match held {
            Ok(()) => {
                self.release().await;
                Ok(())
            }
            Err(lost) => {
                tracing::error!(error = %error_chain(&lost), "stopping the controllers");
                stop.cancel();
                if !stopped {
                    let deadline =
                        self.renewed_at.unwrap_or_else(Instant::now) + self.settings.stop_deadline();
                    if timeout_at(deadline, controllers).await.is_err() {
                        tracing::warn!(
                            "controllers did not stop before the Lease could expire; abandoning their work"
                        );
                    }
                }
                Err(lost)
            }
        }
    }

    /// Renews the Lease every retry period until `done` fires (`Ok`) or leadership is lost:
    /// another replica holds the Lease, or no renewal succeeded within the renew deadline.
    async fn renew_until(&mut self, done: &CancellationToken) -> Result<(), LeaseError> {
        let Some(mut renewed_at) = self.renewed_at else {
            return Err(self.lost("this replica does not hold the Lease".into()));
        };
        let mut attempted_at = renewed_at;
        let mut last_error = None;
        loop {
            let deadline = renewed_at + self.settings.renew_deadline;
            tokio::select! {
                () = done.cancelled() => return Ok(()),
                () = sleep_until((attempted_at + self.settings.retry_period).min(deadline)) => {}
            }
            attempted_at = Instant::now();
            if attempted_at >= deadline {
                let why =
                    last_error.map_or_else(String::new, |e: LeaseError| format!(": {}", error_chain(&e)));
                return Err(self.lost(format!(
                    "could not renew within {:?}{why}",
                    self.settings.renew_deadline
                )));
            }
            let limit = self.settings.retry_period.min(deadline - attempted_at);
            match self.attempt(limit).await {
                Ok(Attempt::Leading) => {
                    renewed_at = attempted_at;
                    self.renewed_at = Some(attempted_at);
                    last_error = None;
                }
                Ok(Attempt::Standby) => return Err(self.lost("another replica holds the Lease".into())),
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "renewing the Lease failed; retrying");
                    last_error = Some(error);
                }
            }
        }
    }

    fn lost(&self, reason: String) -> LeaseError {
        LeaseError::Lost {
            name: self.settings.name.clone(),
            reason,
        }
    }

    /// One acquire-or-renew, given up after `limit`. A write that lands after we gave up only
    /// extends a Lease we no longer count on, which is safe.
    async fn attempt(&mut self, limit: Duration) -> Result<Attempt, LeaseError> {
        timeout(limit, self.try_acquire_or_renew())
            .await
            .unwrap_or_else(|_| {
                Err(LeaseError::Timeout {
                    name: self.settings.name.clone(),
                    after: limit,
                })
            })
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

    /// Gives the Lease up so a standby can take over without waiting for expiry. Bounded by a
    /// retry period: a silent apiserver must not hold up shutdown (the Lease then expires).
    async fn release(&mut self) {
        let name = &self.settings.name;
        let Ok(Ok(Some(mut lease))) = timeout(self.settings.retry_period, self.api.get_opt(name)).await
        else {
            tracing::warn!(lease = %name, "could not read the Lease to release it; standbys take over when it expires");
            return;
        };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        match timeout(
            self.settings.retry_period,
            self.api.replace(name, &PostParams::default(), &lease),
        )
        .await
        {
            Ok(Ok(_)) => tracing::info!(lease = %name, "released leadership"),
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "could not release the Lease; standbys take over when it expires");
            }
            Err(_) => {
                tracing::warn!(lease = %name, "releasing the Lease timed out; standbys take over when it expires");
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

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    };

    use http::{Method, Request, Response};
    use kube::client::Body;
    use tower_test::mock::Handle;

    use super::*;

    /// What the mocked apiserver saw: when, which verb, and the holder a write asked for.
    #[derive(Debug)]
    struct Seen {
        at: Instant,
        method: Method,
        holder: Option<String>,
    }

    fn json(code: u16, body: &impl serde::Serialize) -> Response<Body> {
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap()
    }

    /// A Lease API over one stored Lease. Once the Lease exists, `silent` leaves every request
    /// unanswered, like an apiserver that stopped responding.
    async fn lease_api(
        mut handle: Handle<Request<Body>, Response<Body>>,
        silent: bool,
        seen: Arc<Mutex<Vec<Seen>>>,
    ) {
        let mut lease: Option<Lease> = None;
        let mut unanswered = Vec::new();
        while let Some((request, reply)) = handle.next_request().await {
            let method = request.method().clone();
            let body = request.into_body().collect_bytes().await.unwrap();
            let written: Option<Lease> = serde_json::from_slice(&body).ok();
            seen.lock().unwrap().push(Seen {
                at: Instant::now(),
                method: method.clone(),
                holder: written
                    .as_ref()
                    .and_then(|l| l.spec.as_ref()?.holder_identity.clone()),
            });
            if silent && lease.is_some() {
                unanswered.push(reply);
                continue;
            }
            match (method, written) {
                (Method::GET, _) => match &lease {
                    Some(stored) => reply.send_response(json(200, stored)),
                    None => reply.send_response(json(
                        404,
                        &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "NotFound", "code": 404, "message": "not found"}),
                    )),
                },
                (Method::POST | Method::PUT, Some(mut written)) => {
                    let version = lease
                        .as_ref()
                        .and_then(|l| l.metadata.resource_version.as_deref()?.parse::<u64>().ok())
                        .unwrap_or(0);
                    written.metadata.resource_version = Some((version + 1).to_string());
                    reply.send_response(json(200, &written));
                    lease = Some(written);
                }
                (method, _) => panic!("unexpected {method}"),
            }
        }
    }

    /// An elector over a mocked apiserver, and what that apiserver saw.
    fn elector(silent: bool) -> (LeaderElector, Arc<Mutex<Vec<Seen>>>) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(lease_api(handle, silent, seen.clone()));
        let settings = LeaseSettings::new("l".into(), "me".into(), Duration::from_secs(15));
        let api = Api::namespaced(kube::Client::new(service, "ns"), "ns");
        (LeaderElector::new(api, settings), seen)
    }

    /// The apiserver stops answering right after we acquired: the leader must stop its
    /// controllers, and they must be gone, before a standby could take over.
    #[tokio::test(start_paused = true)]
    async fn leader_whose_renewal_never_answers_stops_its_controllers_before_the_lease_expires() {
        let (mut elector, seen) = elector(true);
        let settings = elector.settings.clone();
        let acquired_at = Instant::now();
        assert!(elector.acquire(&CancellationToken::new()).await);
        let stop = CancellationToken::new();
        let cancelled_at = Arc::new(Mutex::new(None));
        let stopped_at = Arc::new(Mutex::new(None));
        let controllers = {
            let (stop, cancelled_at, stopped_at) = (stop.clone(), cancelled_at.clone(), stopped_at.clone());
            async move {
                stop.cancelled().await;
                *cancelled_at.lock().unwrap() = Some(Instant::now());
                // An in-flight reconcile finishing its work.
                sleep(Duration::from_secs(1)).await;
                *stopped_at.lock().unwrap() = Some(Instant::now());
            }
        };
        let held = elector.lead(&stop, controllers).await;
        let returned_at = Instant::now();

        assert!(matches!(held, Err(LeaseError::Lost { .. })), "{held:?}");
        let cancelled_at = cancelled_at.lock().unwrap().expect("controllers were cancelled");
        let stopped_at = stopped_at.lock().unwrap().expect("controllers stopped");
        let expiry = acquired_at + settings.lease_duration;
        assert!(
            cancelled_at <= acquired_at + settings.renew_deadline,
            "cancelled {:?} after acquiring",
            cancelled_at - acquired_at
        );
        assert!(stopped_at < expiry && returned_at < expiry);
        // It did try to renew, more than once, each attempt cut off by its timeout.
        let renewals = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == Method::GET)
            .count();
        assert!(renewals >= 3, "{renewals} renewal attempts");
    }

    /// Controllers that ignore the cancellation are abandoned before the Lease can expire.
    #[tokio::test(start_paused = true)]
    async fn controllers_that_do_not_stop_are_abandoned_before_the_lease_expires() {
        struct Dropped(Arc<AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let (mut elector, _) = elector(true);
        let lease_duration = elector.settings.lease_duration;
        let acquired_at = Instant::now();
        assert!(elector.acquire(&CancellationToken::new()).await);
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        let stuck = async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        };
        let held = elector.lead(&CancellationToken::new(), stuck).await;
        assert!(held.is_err());
        assert!(
            dropped.load(Ordering::SeqCst),
            "the controllers' future was dropped"
        );
        assert!(Instant::now() < acquired_at + lease_duration);
    }

    /// On shutdown the Lease is renewed while the controllers drain and released only after.
    #[tokio::test(start_paused = true)]
    async fn graceful_shutdown_releases_the_lease_only_after_the_controllers_stopped() {
        let (mut elector, seen) = elector(false);
        assert!(elector.acquire(&CancellationToken::new()).await);
        let stop = CancellationToken::new();
        let stopped_at = Arc::new(Mutex::new(None));
        let controllers = {
            let (stop, stopped_at) = (stop.clone(), stopped_at.clone());
            async move {
                stop.cancelled().await;
                // Draining takes longer than the lease: renewals must go on meanwhile.
                sleep(Duration::from_secs(20)).await;
                *stopped_at.lock().unwrap() = Some(Instant::now());
            }
        };
        let signal = {
            let stop = stop.clone();
            async move {
                sleep(Duration::from_secs(4)).await;
                stop.cancel();
            }
        };
        let (held, ()) = tokio::join!(elector.lead(&stop, controllers), signal);
        held.unwrap();
        let stopped_at = stopped_at.lock().unwrap().expect("controllers stopped");
        let seen = seen.lock().unwrap();
        let writes: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::PUT).collect();
        let release = writes.last().expect("the Lease was released");
        assert_eq!(release.holder, None, "{seen:?}");
        assert!(
            release.at >= stopped_at,
            "released before the controllers stopped: {seen:?}"
        );
        let renewed_while_draining = writes
            .iter()
            .filter(|w| w.holder.as_deref() == Some("me") && w.at < stopped_at)
            .count();
        assert!(renewed_while_draining >= 6, "{seen:?}");
    }

    #[test]
    fn deadlines_leave_time_to_stop_before_the_lease_expires() {
        for seconds in [2, 3, 10, 15, 60] {
            let s = LeaseSettings::new("l".into(), "me".into(), Duration::from_secs(seconds));
            assert!(s.retry_period < s.renew_deadline, "{s:?}");
            assert!(s.renew_deadline < s.stop_deadline(), "{s:?}");
            assert!(s.stop_deadline() < s.lease_duration, "{s:?}");
        }
        let s = LeaseSettings::new("l".into(), "me".into(), Duration::from_secs(15));
        assert_eq!(s.renew_deadline, Duration::from_secs(10));
        assert_eq!(s.stop_deadline(), Duration::from_millis(12_500));
    }

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
