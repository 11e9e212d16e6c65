//! The sources a run reads: TLS Secrets and live endpoints in the cluster, and the Nexus
//! certificate database. Each returns what it found, the targets it could not read, or why the
//! source cannot be used (a reason and a message naming the setting).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::{
    Api, Client, ResourceExt as _,
    api::{ListParams, PartialObjectMeta},
};

use super::plan;
use crate::{
    backend::{Backend, nexus::CertificateQuery},
    controller::{
        Context, errors,
        issuer::{IssuerTarget, resolve},
    },
    crd::v1alpha1::discovery_task::{ClusterDiscoverySource, NexusDiscoverySource},
    discovery::{
        analysis::{Found, Source, examine},
        tls_probe::{ProbeSettings, Probed, Target, probe_all},
    },
    secret::CERTIFICATE_NAME_LABEL,
};

/// Why a source could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFailure {
    /// Condition reason.
    pub reason: &'static str,
    /// What happened and what to do, naming the setting.
    pub message: String,
}

impl SourceFailure {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// What one or more sources gave.
#[derive(Debug, Default)]
pub struct Collected {
    /// Certificates read.
    pub found: Vec<Found>,
    /// Targets not read, with why.
    pub unreachable: Vec<(String, String)>,
    /// Sources that could not be used.
    pub failures: Vec<SourceFailure>,
}

/// Default per-connection timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default connections at once.
const DEFAULT_CONCURRENCY: usize = 32;
/// Default time budget of an endpoint sweep.
const DEFAULT_BUDGET: Duration = Duration::from_secs(300);
/// Certificates read from Nexus per run at most (each is downloaded to be examined).
pub const MAX_NEXUS_CERTIFICATES: usize = 1000;
/// How far back expired Nexus certificates are still listed.
const NEXUS_EXPIRED_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(30 * 24);

/// The namespaces the cluster source inspects: the listed ones, else the task's own.
pub fn namespaces(source: &ClusterDiscoverySource, own: &str) -> Vec<String> {
    if source.namespaces.is_empty() {
        vec![own.to_owned()]
    } else {
        source.namespaces.clone()
    }
}

/// The endpoint sweep's targets and settings, or why the spec cannot be swept.
pub async fn endpoint_plan(
    client: &Client,
    source: &ClusterDiscoverySource,
    namespaces: &[String],
) -> Result<Option<(Vec<Target>, ProbeSettings)>, SourceFailure> {
    let Some(endpoints) = &source.endpoints else {
        return Ok(None);
    };
    let ports: Vec<u16> = if endpoints.ports.is_empty() {
        vec![443]
    } else {
        endpoints
            .ports
            .iter()
            .map(|p| {
                u16::try_from(*p).map_err(|_| {
                    SourceFailure::new(
                        "InvalidSpec",
                        format!("spec.cluster.endpoints.ports: {p} is not a port"),
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    let duration =
        |text: &Option<String>, field: &str, default: Duration| -> Result<Duration, SourceFailure> {
            text.as_deref().map_or(Ok(default), |t| {
                crate::controller::certificate::validate::parse_duration(t).map_err(|e| {
                    SourceFailure::new("InvalidSpec", format!("spec.cluster.endpoints.{field}: {e}"))
                })
            })
        };
    let settings = ProbeSettings {
        timeout: duration(&endpoints.timeout, "timeout", DEFAULT_TIMEOUT)?,
        budget: duration(&endpoints.budget, "budget", DEFAULT_BUDGET)?,
        concurrency: endpoints
            .concurrency
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(DEFAULT_CONCURRENCY),
    };
    let mut hosts = endpoints.hosts.clone();
    if endpoints.services {
        for namespace in namespaces {
            let services: Api<Service> = Api::namespaced(client.clone(), namespace);
            let list = services.list(&ListParams::default()).await.map_err(|e| {
                SourceFailure::new(
                    "KubernetesError",
                    format!("cannot list the Services of {namespace}: {e}"),
                )
            })?;
            // The Service's DNS name: its cluster IP routes to the pods and the name is what a
            // certificate for it would carry.
            hosts.extend(
                list.items
                    .iter()
                    .filter(|s| {
                        s.spec
                            .as_ref()
                            .and_then(|spec| spec.cluster_ip.as_deref())
                            .is_some_and(|ip| ip != "None")
                    })
                    .map(|s| format!("{}.{namespace}.svc", s.name_any())),
            );
        }
    }
    let targets = plan::targets(
        &hosts,
        &ports,
        &endpoints.ranges,
        endpoints.server_name.as_deref(),
    )
    .map_err(|e| SourceFailure::new("TooManyTargets", e))?;
    Ok(Some((targets, settings)))
}

/// Reads every target's chain; the leaf of each is examined.
pub async fn sweep(targets: Vec<Target>, settings: ProbeSettings, into: &mut Collected) {
    for (target, probed) in probe_all(targets, settings).await {
        match probed {
            Probed::Chain(chain) => match chain
                .first()
                .map(|leaf| examine(leaf, Source::Endpoint, target.to_string()))
            {
                Some(Ok(found)) => into.found.push(found),
                Some(Err(why)) => into
                    .unreachable
                    .push((target.to_string(), format!("unreadable certificate: {why}"))),
                None => into
                    .unreachable
                    .push((target.to_string(), "no certificate".into())),
            },
            Probed::Unreachable(why) => into.unreachable.push((target.to_string(), why)),
        }
    }
}

/// The `kubernetes.io/tls` Secrets of `namespaces`: their names from a metadata list (no data),
/// then each one read for its `tls.crt`, so no Secret's data is held beyond its examination.
pub async fn secrets(
    client: &Client,
    namespaces: &[String],
    into: &mut Collected,
) -> Result<(), SourceFailure> {
    for namespace in namespaces {
        let metadata: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), namespace);
        let listed = metadata
            .list_metadata(&ListParams::default().fields("type=kubernetes.io/tls"))
            .await
            .map_err(|e| {
                SourceFailure::new(
                    "KubernetesError",
                    format!("cannot list the Secrets of {namespace}: {e}"),
                )
            })?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        for meta in listed.items {
            let name = meta.name_any();
            let location = format!("{namespace}/{name}");
            let secret = match secrets.get_opt(&name).await {
                Ok(Some(secret)) => secret,
                Ok(None) => continue, // Deleted meanwhile.
                Err(e) => {
                    into.unreachable
                        .push((location, format!("cannot read the Secret: {e}")));
                    continue;
                }
            };
            let leaf = secret
                .data
                .as_ref()
                .and_then(|d| d.get("tls.crt"))
                .and_then(|pem| crate::pki::chain::parse_certificates(&pem.0).ok())
                .and_then(|chain| chain.into_iter().next())
                .and_then(|leaf| der::Encode::to_der(&leaf).ok());
            let Some(leaf) = leaf else {
                into.unreachable
                    .push((location, "tls.crt holds no readable certificate".into()));
                continue;
            };
            match examine(&leaf, Source::Secret, location.clone()) {
                Ok(mut found) => {
                    found.managed = is_managed(&secret);
                    into.found.push(found);
                }
                Err(why) => into.unreachable.push((location, why)),
            }
        }
    }
    Ok(())
}

/// A Secret this operator writes for a Certificate: our label and a Certificate as its
/// controller.
fn is_managed(secret: &Secret) -> bool {
    secret.labels().contains_key(CERTIFICATE_NAME_LABEL)
        && secret.owner_references().iter().any(|o| {
            o.kind == "Certificate"
                && o.controller == Some(true)
                && o.api_version.starts_with("pki-operator.io/")
        })
}

/// The Nexus certificates of `source`: a search by issuer and subject over certificates still
/// valid or expired within the last 30 days, paged, each downloaded to be examined.
pub async fn nexus(
    ctx: &Context,
    namespace: &str,
    source: &NexusDiscoverySource,
    into: &mut Collected,
) -> Result<(), SourceFailure> {
    let target = IssuerTarget::from_namespaced(&source.issuer_ref, namespace);
    let issuer = resolve(ctx, &target, None).await.map_err(|e| {
        SourceFailure::new(
            e.reason(),
            format!("spec.nexus.issuerRef: {}", errors::error_chain(&e)),
        )
    })?;
    let Backend::Nexus(nexus) = issuer.backend.as_ref() else {
        return Err(SourceFailure::new(
            "Unsupported",
            format!("spec.nexus.issuerRef: {target} is not a Nexus issuer"),
        ));
    };
    let query = CertificateQuery {
        common_name: source.subject_contains.clone(),
        issuer: source.issuer.clone(),
        valid_to_after: jiff::Timestamp::now().checked_sub(NEXUS_EXPIRED_WINDOW).ok(),
        not_revoked: true,
        ..CertificateQuery::default()
    };
    let hits = nexus.search(&query, MAX_NEXUS_CERTIFICATES).await.map_err(|e| {
        SourceFailure::new(
            e.category(),
            format!("Nexus certificate search: {}", errors::error_chain(&e)),
        )
    })?;
    for hit in hits {
        let location = format!("nexus certid {}", hit.certid);
        let body = match nexus
            .download(&hit.certid, crate::backend::nexus::DownloadFormat::Der)
            .await
        {
            Ok(body) => body,
            Err(e) => {
                into.unreachable.push((location, errors::error_chain(&e)));
                continue;
            }
        };
        match examine(&body, Source::Nexus, location.clone()) {
            Ok(found) => into.found.push(found),
            Err(why) => into.unreachable.push((location, why)),
        }
    }
    Ok(())
}
