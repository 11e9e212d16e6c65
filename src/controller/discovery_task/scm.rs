//! The SCM source: an SCM network scan task (`net_task`) kept in step with the spec, started on
//! the DiscoveryTask's schedule (the operator owns the schedule: the remote task is `Manual`),
//! followed until its operation completes, and its results read page by page.
//!
//! Never two remote tasks for one DiscoveryTask: the remote id is written to status right after
//! the create, and a create whose answer was lost (or a crash before that write) is found again
//! by name (`displayName`) before any create. Deleting the DiscoveryTask deletes the remote task
//! (finalizer), stopping a running scan first.

use std::time::Duration;

use kube::ResourceExt as _;

use super::sources::SourceFailure;
use crate::{
    backend::{
        Backend,
        scm::{
            ScmBackend,
            discovery::{DiscoveredCertificate, DiscoveryError, NetRange, NetTaskSpec, Operation},
        },
    },
    controller::{
        Context, errors,
        issuer::{IssuerTarget, resolve},
    },
    crd::v1alpha1::{DiscoveryTask, discovery_task::ScmDiscoverySource},
    discovery::analysis::{Found, Source, Weakness},
};

/// Finalizer holding a DiscoveryTask with an SCM source until its remote task is deleted.
pub const FINALIZER: &str = "pki-operator.io/discovery-scm-task";
/// How often a running scan is looked at.
pub const POLL: Duration = Duration::from_secs(15);
/// Operations created this long before our start still count as ours (clock skew with SCM).
const START_SKEW: jiff::SignedDuration = jiff::SignedDuration::from_secs(120);

/// The SCM client of the source's issuer.
pub async fn backend(
    ctx: &Context,
    namespace: &str,
    source: &ScmDiscoverySource,
) -> Result<std::sync::Arc<Backend>, SourceFailure> {
    let target = IssuerTarget::from_namespaced(&source.issuer_ref, namespace);
    let issuer = resolve(ctx, &target, None).await.map_err(|e| SourceFailure {
        reason: e.reason(),
        message: format!("spec.scm.issuerRef: {}", errors::error_chain(&e)),
    })?;
    if !matches!(issuer.backend.as_ref(), Backend::Scm(_)) {
        return Err(SourceFailure {
            reason: "Unsupported",
            message: format!("spec.scm.issuerRef: {target} is not an SCM issuer"),
        });
    }
    Ok(issuer.backend)
}

/// The remote task `source` asks for.
pub fn net_task(task: &DiscoveryTask, source: &ScmDiscoverySource) -> Result<NetTaskSpec, SourceFailure> {
    let ranges = source
        .ranges
        .iter()
        .enumerate()
        .map(|(index, range)| {
            let ports = range
                .ports
                .iter()
                .map(|p| {
                    u16::try_from(*p).map_err(|_| SourceFailure {
                        reason: "InvalidRange",
                        message: format!("spec.scm.ranges[{index}].ports: {p} is not a port"),
                    })
                })
                .collect::<Result<Vec<u16>, _>>()?;
            Ok(NetRange {
                address: range.cidr.clone(),
                ports,
            })
        })
        .collect::<Result<Vec<_>, SourceFailure>>()?;
    let spec = NetTaskSpec {
        name: source.display_name.clone().unwrap_or_else(|| default_name(task)),
        agent: source.agent.clone(),
        ranges,
        bucket_id: source.bucket_id.clone(),
    };
    spec.validate().map_err(|e| discovery_failure(&e))?;
    Ok(spec)
}

/// The remote task's default name: `<namespace>.<name>`, unique because namespaces hold no dots;
/// one over SCM's 256 characters keeps its start and a hash of the whole.
fn default_name(task: &DiscoveryTask) -> String {
    let name = format!("{}.{}", task.namespace().unwrap_or_default(), task.name_any());
    if name.len() <= 256 {
        return name;
    }
    let hash = crate::pki::chain::sha256_hex(name.as_bytes());
    format!("{}-{}", &name[..240], &hash[..12])
}

/// A discovery error as a source failure (reason and an actionable message).
pub fn discovery_failure(error: &DiscoveryError) -> SourceFailure {
    SourceFailure {
        reason: error.reason(),
        message: format!("SCM network discovery: {}", errors::error_chain(error)),
    }
}

/// The remote task's id: the one in status if SCM still has it (updated when it drifted from
/// the spec), else one found by name (adopted), else a new one. `Ok((id, created))`.
pub async fn ensure_task(
    scm: &ScmBackend,
    spec: &NetTaskSpec,
    recorded: Option<i64>,
) -> Result<(i64, bool), DiscoveryError> {
    if let Some(id) = recorded {
        match scm.discovery_get_task(id).await {
            Ok(remote) => {
                sync(scm, id, spec, remote.matches(spec)).await?;
                return Ok((id, false));
            }
            // Deleted at SCM (by a person): found by name or made again below.
            Err(DiscoveryError::TaskNotFound { .. }) => {}
            Err(other) => return Err(other),
        }
    }
    if let Some(remote) = scm.discovery_find_task(&spec.name).await? {
        tracing::info!(task = remote.id, name = %spec.name, "adopted an SCM discovery task found by name");
        sync(scm, remote.id, spec, remote.matches(spec)).await?;
        return Ok((remote.id, false));
    }
    let id = scm.discovery_create_task(spec).await?;
    tracing::info!(task = id, name = %spec.name, "created an SCM discovery task");
    Ok((id, true))
}

/// Brings the remote task to the spec; a running scan (-618) defers the update to a later look.
async fn sync(scm: &ScmBackend, id: i64, spec: &NetTaskSpec, in_step: bool) -> Result<(), DiscoveryError> {
    if in_step {
        return Ok(());
    }
    match scm.discovery_update_task(id, spec).await {
        Err(DiscoveryError::ScanRunning { .. }) => Ok(()),
        other => other,
    }
}

/// Starts a scan; one already running (-618) is followed instead.
pub async fn start(scm: &ScmBackend, id: i64) -> Result<(), DiscoveryError> {
    match scm.discovery_start_task(id).await {
        Err(DiscoveryError::ScanRunning { .. }) => Ok(()),
        other => other,
    }
}

/// The state of the scan started at `started`.
pub enum Scan {
    /// Still running (or its operation not listed yet).
    Running,
    /// Done: its operation and what it found.
    Done(Operation, Vec<Found>),
    /// Failed at SCM: the operation and its error.
    Failed(Operation),
    /// Still running after [`MAX_SCAN`]: stopped.
    TimedOut(Operation),
    /// No operation of ours appeared within [`MAX_SCAN`].
    Lost,
}

/// The longest a scan is followed; after that it is given up (and stopped at SCM).
pub const MAX_SCAN: jiff::SignedDuration = jiff::SignedDuration::from_hours(6);

/// Looks at the scan started at `started`: the newest operation created since (less the clock
/// skew), or one still running that was started earlier (SCM answered our start with -618, or a
/// restart lost our start time), is ours; its results are read once it and the task are
/// finished. A scan not done within [`MAX_SCAN`] is stopped and reported.
pub async fn follow(scm: &ScmBackend, id: i64, started: jiff::Timestamp) -> Result<Scan, DiscoveryError> {
    let since = started.checked_sub(START_SKEW).unwrap_or(started);
    let operations = scm.discovery_operations(id).await?;
    let Some(operation) = operations
        .into_iter()
        .filter(|o| !o.is_terminal() || o.created.is_none_or(|created| created >= since))
        .max_by_key(|o| o.created)
    else {
        return Ok(if jiff::Timestamp::now().duration_since(started) > MAX_SCAN {
            Scan::Lost
        } else {
            Scan::Running
        });
    };
    if !operation.is_terminal() && jiff::Timestamp::now().duration_since(started) > MAX_SCAN {
        scm.discovery_stop_operation(id, &operation.id).await?;
        return Ok(Scan::TimedOut(operation));
    }
    if operation.is_failed() {
        return Ok(Scan::Failed(operation));
    }
    if !operation.is_terminal() {
        return Ok(Scan::Running);
    }
    // "Scan completed (Processing Result)": the results are not final until the task is.
    if !scm.discovery_get_task(id).await?.status.is_terminal() {
        return Ok(Scan::Running);
    }
    let results = scm.discovery_results(id, &operation.id).await?;
    // A result without an end of validity cannot be judged; it is left out rather than
    // counted as expired.
    let found = results.iter().filter_map(found).collect();
    Ok(Scan::Done(operation, found))
}

/// A DN from SCM's attribute map, most specific attribute first.
fn dn(attributes: &std::collections::BTreeMap<String, String>) -> String {
    const ORDER: [&str; 6] = ["CN", "OU", "O", "L", "ST", "C"];
    let mut parts: Vec<String> = ORDER
        .iter()
        .filter_map(|key| attributes.get(*key).map(|v| format!("{key}={v}")))
        .collect();
    parts.extend(
        attributes
            .iter()
            .filter(|(k, _)| !ORDER.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}")),
    );
    parts.join(", ")
}

/// What SCM reports about a certificate, as discovery's record (SCM sends facts, not the
/// certificate itself); `None` without `validTo`.
pub fn found(result: &DiscoveredCertificate) -> Option<Found> {
    let not_after = result.valid_to?.as_second();
    let rsa_bits = result
        .key_algorithm
        .as_deref()
        .filter(|a| a.to_ascii_uppercase().contains("RSA"))
        .and(result.key_size);
    let sha1 = result
        .signature_algorithm
        .as_deref()
        .is_some_and(|s| s.to_ascii_uppercase().replace('-', "").contains("SHA1"));
    let weakness = rsa_bits
        .filter(|bits| *bits < 2048)
        .map(|bits| Weakness::ShortRsaKey(bits as usize))
        .or(sha1.then_some(Weakness::Sha1Signature));
    let (subject, issuer) = (dn(&result.subject), dn(&result.issuer));
    Some(Found {
        source: Source::Scm,
        location: format!("{}:{}", result.ip, result.port),
        common_name: result.common_name.clone(),
        self_signed: result
            .self_signed()
            .unwrap_or(!subject.is_empty() && subject == issuer),
        subject,
        issuer,
        serial_hex: result
            .serial
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('0')
            .to_ascii_lowercase(),
        not_before: result.valid_from.map_or(0, jiff::Timestamp::as_second),
        not_after,
        weakness,
        managed: result.is_managed(),
        der: std::sync::Arc::from(&[][..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(valid_to: Option<&str>) -> DiscoveredCertificate {
        let mut subject = std::collections::BTreeMap::new();
        subject.insert("CN".to_owned(), "a.example.com".to_owned());
        DiscoveredCertificate {
            ip: "10.0.0.1".into(),
            port: 443,
            common_name: Some("a.example.com".into()),
            serial: Some("00AB".into()),
            issuer: subject.clone(),
            subject,
            valid_to: valid_to.map(|t| t.parse().unwrap()),
            key_algorithm: Some("RSA".into()),
            key_size: Some(1024),
            ..DiscoveredCertificate::default()
        }
    }

    #[test]
    fn scm_results_become_findings_and_those_without_an_end_are_left_out() {
        assert_eq!(found(&result(None)), None);
        let f = found(&result(Some("2027-01-01T00:00:00Z"))).unwrap();
        assert_eq!(f.location, "10.0.0.1:443");
        assert_eq!(f.serial_hex, "ab");
        assert_eq!(f.weakness, Some(Weakness::ShortRsaKey(1024)));
        assert!(f.self_signed);
    }

    #[test]
    fn default_remote_names_cannot_collide() {
        let task = |namespace: &str, name: &str| {
            let mut task = DiscoveryTask::new(name, crate::crd::v1alpha1::DiscoveryTaskSpec::default());
            task.metadata.namespace = Some(namespace.into());
            task
        };
        assert_ne!(default_name(&task("a-b", "c")), default_name(&task("a", "b-c")));
        assert_eq!(default_name(&task("web", "tier")), "web.tier");
        assert!(default_name(&task("ns", &"x".repeat(253))).len() <= 256);
    }
}
