//! An AlertConfig's side of a CertMgmt service (`spec.certMgmt`, `scm-discovery-alerts.md`
//! §8.4): one AlertConfig per service URL (the service's alert state is global; a second one is
//! `Ready=False reason=Conflict` and touches nothing), levels and its email list pushed and read
//! back on every poll, generated alerts read into status and Events, and on deletion the levels
//! disabled and the list removed (finalizer). The calls themselves are
//! [`crate::alerting::certmgmt_sync`]'s.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, ResourceExt as _, api::ListParams, runtime::events::EventType};

use crate::{
    alerting::certmgmt_sync,
    backend::certmgmt::CertMgmtClient,
    controller::{Context, errors},
    crd::v1alpha1::{
        AlertConfig,
        alert_config::{AlertConfigStatus, AlertCounts, CertMgmtStatus, CertMgmtSync, GeneratedAlertSummary},
    },
};

/// Held while an AlertConfig has levels and a list at a CertMgmt service to take back.
pub const FINALIZER: &str = "pki-operator.io/certmgmt-sync";

/// The reason of `Ready=False` for a second AlertConfig syncing the same service.
pub const CONFLICT: &str = "Conflict";

/// Default `certMgmt.pollInterval`.
const DEFAULT_POLL: Duration = Duration::from_secs(15 * 60);

/// Recent generated alerts kept in status (the CRD's limit).
const MAX_RECENT: usize = 10;

/// Whether `config` pushes levels and a list to a CertMgmt service (and so holds the finalizer
/// that takes them back). A read-only AlertConfig (`syncLevels: false`) leaves the service as it
/// found it, also when deleted.
pub fn pushes(config: &AlertConfig) -> bool {
    config.spec.cert_mgmt.as_ref().is_some_and(|c| c.sync_levels)
}

/// How soon an AlertConfig in `Conflict` looks again whether the owner is gone.
const CONFLICT_RECHECK: Duration = Duration::from_secs(60);

/// What the CertMgmt side of a pass left.
#[derive(Debug, Default)]
pub struct Synced {
    /// Set when another AlertConfig owns the service: the condition message.
    pub conflict: Option<String>,
    /// When to poll the service again.
    pub next_poll: Option<Timestamp>,
}

/// Syncs `config` with its CertMgmt service when its poll is due or its spec changed, updating
/// `status.certMgmt`. Errors are recorded there (`lastError`), not returned: alerting through the
/// other channels goes on.
pub async fn reconcile(
    ctx: &Context,
    config: &AlertConfig,
    status: &mut AlertConfigStatus,
    now: Timestamp,
) -> Synced {
    let Some(spec) = config.spec.cert_mgmt.as_ref() else {
        status.cert_mgmt = None;
        return Synced::default();
    };
    match conflicting_owner(ctx, config, spec).await {
        Ok(None) => {}
        Ok(Some(owner)) => {
            status.cert_mgmt = None;
            return Synced {
                conflict: Some(format!(
                    "AlertConfig {owner} already syncs {}; one AlertConfig per CertMgmt service (its levels and lists are global): remove spec.certMgmt from one of them",
                    spec.url
                )),
                next_poll: now.checked_add(CONFLICT_RECHECK).ok(),
            };
        }
        // Without the list nobody can tell whether another AlertConfig owns the service:
        // nothing is pushed until it can.
        Err(message) => {
            let state = status.cert_mgmt.get_or_insert_with(|| CertMgmtStatus {
                url: spec.url.clone(),
                ..CertMgmtStatus::default()
            });
            state.last_error = Some(message);
            return Synced {
                conflict: None,
                next_poll: now.checked_add(CONFLICT_RECHECK).ok(),
            };
        }
    }
    let poll = poll_interval(spec);
    let mut state = status
        .cert_mgmt
        .take()
        .filter(|s| s.url == spec.url)
        .unwrap_or_else(|| CertMgmtStatus {
            url: spec.url.clone(),
            ..CertMgmtStatus::default()
        });
    let spec_changed = status.observed_generation != config.metadata.generation;
    let due = state
        .last_sync_time
        .as_ref()
        .and_then(|t| t.0.checked_add(poll).ok())
        .is_none_or(|at| at <= now);
    if spec_changed || due || state.last_error.is_some() {
        match sync(ctx, config, spec, &mut state, (now, spec_changed)).await {
            Ok(()) => state.last_error = None,
            Err(message) => {
                tracing::warn!(alert_config = %config.name_any(), error = %message, "CertMgmt sync failed");
                state.last_error = Some(message);
            }
        }
    }
    let next = if state.last_error.is_some() {
        now.checked_add(jiff::SignedDuration::from_secs(60)).ok()
    } else {
        state
            .last_sync_time
            .as_ref()
            .and_then(|t| t.0.checked_add(poll).ok())
    };
    status.cert_mgmt = Some(state);
    Synced {
        conflict: None,
        next_poll: next,
    }
}

fn poll_interval(spec: &CertMgmtSync) -> jiff::SignedDuration {
    let poll = spec
        .poll_interval
        .as_deref()
        .and_then(|text| crate::controller::certificate::validate::parse_duration(text).ok())
        .filter(|d| *d >= Duration::from_secs(10))
        .unwrap_or(DEFAULT_POLL);
    jiff::SignedDuration::try_from(poll).unwrap_or(jiff::SignedDuration::from_mins(15))
}

/// The older AlertConfig (by creation, then name) syncing the same URL, if any.
async fn conflicting_owner(
    ctx: &Context,
    config: &AlertConfig,
    spec: &CertMgmtSync,
) -> Result<Option<String>, String> {
    let api: Api<AlertConfig> = Api::all(ctx.client.clone());
    let all = api.list(&ListParams::default()).await.map_err(|e| {
        format!(
            "cannot list AlertConfigs to check that no other one syncs {}: {e}",
            spec.url
        )
    })?;
    let rank = |c: &AlertConfig| (c.metadata.creation_timestamp.clone().map(|t| t.0), c.name_any());
    Ok(all
        .items
        .iter()
        .filter(|other| other.name_any() != config.name_any() && other.metadata.deletion_timestamp.is_none())
        .filter(|other| {
            other
                .spec
                .cert_mgmt
                .as_ref()
                .is_some_and(|o| same_service(&o.url, &spec.url))
        })
        .filter(|other| rank(other) < rank(config))
        .map(kube::ResourceExt::name_any)
        .next())
}

fn same_service(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

async fn client(ctx: &Context, spec: &CertMgmtSync) -> Result<CertMgmtClient, String> {
    let field = "spec.certMgmt.credentialsSecretRef";
    let username = super::channels::secret_key(ctx, &spec.credentials_secret_ref, "username", field).await?;
    let password = super::channels::secret_key(ctx, &spec.credentials_secret_ref, "password", field).await?;
    CertMgmtClient::new(&spec.url, username.expose(), password, spec.ca_bundle.as_deref())
        .map_err(|e| format!("spec.certMgmt: {}", errors::error_chain(&e)))
}

/// Pushes levels and the list (read back for drift) and reads new generated alerts.
async fn sync(
    ctx: &Context,
    config: &AlertConfig,
    spec: &CertMgmtSync,
    state: &mut CertMgmtStatus,
    (now, spec_changed): (Timestamp, bool),
) -> Result<(), String> {
    let client = client(ctx, spec).await?;
    let failed = |what: &str, e: &certmgmt_sync::SyncError| {
        format!("{what} at {}: {}", spec.url, errors::error_chain(e))
    };
    if let Some(desired) = certmgmt_sync::desired_from_spec(&config.name_any(), &config.spec) {
        let pushed = certmgmt_sync::push(&client, &desired, state.email_list_id)
            .await
            .map_err(|e| failed("pushing the levels", &e))?;
        state.email_list_id = pushed.email_list_id;
        // Writes after a spec change or the first sync are ours; at any other time the service
        // was changed behind our back.
        if !spec_changed && state.last_sync_time.is_some() {
            for drift in &pushed.corrected {
                let note = format!("{drift} (changed at the service, put back)");
                ctx.events
                    .publish(config, EventType::Warning, "CertMgmtDriftCorrected", &note)
                    .await;
            }
        }
    }
    if spec.read_alerts {
        let since = state.last_alert_poll.as_ref().map(|t| t.0);
        let poll = certmgmt_sync::read_alerts(&client, since, &state.recent_alerts, now)
            .await
            .map_err(|e| failed("reading generated alerts", &e))?;
        record_alerts(ctx, config, state, poll.new_alerts, &poll.new_counts).await;
        state.last_alert_poll = Some(Time(poll.high_water));
    }
    state.last_sync_time = Some(Time(now));
    Ok(())
}

/// Counts new generated alerts, keeps the latest in status and publishes an Event for each
/// (for at most the 100 newest of one poll).
async fn record_alerts(
    ctx: &Context,
    config: &AlertConfig,
    state: &mut CertMgmtStatus,
    new_alerts: Vec<GeneratedAlertSummary>,
    new_counts: &AlertCounts,
) {
    let counts = state.alert_counts.get_or_insert_with(AlertCounts::default);
    counts.info += new_counts.info;
    counts.warn += new_counts.warn;
    counts.high += new_counts.high;
    counts.error += new_counts.error;
    counts.unavailable_hosts += new_counts.unavailable_hosts;
    for alert in &new_alerts {
        let what = alert.cn.as_deref().map_or_else(
            || format!("host {}", alert.host_id),
            |cn| format!("certificate {cn}"),
        );
        let note = format!(
            "CertMgmt {} alert for {what}: {} ({})",
            alert.level, alert.title, alert.datetime
        );
        ctx.events
            .publish(config, EventType::Warning, "CertMgmtAlert", &note)
            .await;
    }
    let mut recent = new_alerts;
    recent.append(&mut state.recent_alerts);
    recent.truncate(MAX_RECENT);
    state.recent_alerts = recent;
}

/// On deletion: disable the levels and remove the owned list at the service. Best effort: an
/// unreachable service does not hold the AlertConfig forever; a Warning says what was left.
pub async fn finalize(ctx: &Context, config: &AlertConfig) {
    let Some(spec) = config.spec.cert_mgmt.as_ref().filter(|_| pushes(config)) else {
        return;
    };
    // A conflicting AlertConfig never pushed anything: nothing to take back. If that cannot be
    // told, the teardown is attempted (it only disables levels and deletes this list).
    if matches!(conflicting_owner(ctx, config, spec).await, Ok(Some(_))) {
        return;
    }
    let list_name = spec
        .email_list_name
        .clone()
        .unwrap_or_else(|| format!("pki-operator-{}", config.name_any()));
    let list_id = config
        .status
        .as_ref()
        .and_then(|s| s.cert_mgmt.as_ref())
        .and_then(|c| c.email_list_id);
    let outcome = match client(ctx, spec).await {
        Ok(client) => certmgmt_sync::teardown(&client, &list_name, list_id)
            .await
            .map_err(|e| errors::error_chain(&e)),
        Err(message) => Err(message),
    };
    match outcome {
        Ok(affected) if affected.is_empty() => {}
        Ok(affected) => {
            let note = format!(
                "email list {list_name} was still referenced by {} when it was deleted",
                affected.join(", ")
            );
            ctx.events
                .publish(config, EventType::Warning, "CertMgmtListStillReferenced", &note)
                .await;
        }
        Err(message) => {
            let note = format!(
                "could not disable the levels at {}: {message}; disable them there by hand",
                spec.url
            );
            ctx.events
                .publish(config, EventType::Warning, "CertMgmtCleanupFailed", &note)
                .await;
        }
    }
}
