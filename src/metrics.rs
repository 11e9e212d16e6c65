//! Prometheus metrics. Operational labels have a bounded set of values (controller names,
//! outcome categories). Object names appear in two places only, where a series per object is
//! the point: the per-Certificate series ([`CertificateSeries`], one set per Certificate, the
//! labels cert-manager's `certmanager_certificate_*` metrics carry so its dashboards and alerts
//! work with the prefix renamed) and the discovered-certificate series (bounded per task).

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of reconcile metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// Controller name, e.g. `certificate`.
    pub controller: &'static str,
    /// `success`, or the failure's reason from [`crate::controller::errors`] (the word its
    /// conditions and Events use), such as `KubernetesError` or `InvalidObject`.
    pub outcome: &'static str,
}

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// Controller name, e.g. `certificate`.
    pub controller: &'static str,
}

/// Labels of a discovered certificate. Unlike the other metrics these name objects (a
/// DiscoveryTask, a location, a serial): a series per discovered certificate is the point. They
/// are bounded by [`MAX_DISCOVERED_SERIES_PER_TASK`] per task (the soonest-expiring), and the
/// series of a run replace the task's previous ones.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiscoveredLabels {
    /// `namespace/name` of the DiscoveryTask.
    pub task: String,
    /// `scm`, `nexus`, `secret` or `endpoint`.
    pub source: &'static str,
    /// `host:port`, `namespace/secret` or the CA's id.
    pub location: String,
    /// Serial number, hex.
    pub serial: String,
    /// Subject common name (at most 64 characters; empty when none).
    pub common_name: String,
    /// `true` for certificates of Certificates this operator manages.
    pub managed: &'static str,
}

/// Labels of the discovered-certificate counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiscoveryTaskLabels {
    /// `namespace/name` of the DiscoveryTask.
    pub task: String,
    /// `scm`, `nexus`, `secret` or `endpoint`.
    pub source: &'static str,
}

/// The `issuer_group` label of every Certificate series: cert-manager's label, which names the
/// API group of the issuer (here always ours; `issuerRef` has no group).
pub const ISSUER_GROUP: &str = "pki-operator.io";

/// Labels of the per-Certificate series: cert-manager's, so its dashboards and alerts apply.
/// Object names as labels, deliberately: a series set per Certificate is the point, and
/// [`Metrics::remove_certificate`] drops it with the Certificate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// Certificate name.
    pub name: String,
    /// Certificate namespace.
    pub namespace: String,
    /// `spec.issuerRef.name`.
    pub issuer_name: String,
    /// `Issuer` or `ClusterIssuer`.
    pub issuer_kind: &'static str,
    /// Always [`ISSUER_GROUP`].
    pub issuer_group: &'static str,
}

/// Labels of `certificate_ready_status`: a Certificate's labels and one `condition` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateReadyLabels {
    /// `True`, `False` or `Unknown`; the series of the current status is 1, the others 0.
    pub condition: &'static str,
    /// The Certificate's labels.
    #[prometheus(flatten)]
    pub certificate: CertificateLabels,
}

/// Labels of `certificate_alert_level`: per AlertConfig, as two AlertConfigs may see one
/// Certificate at different levels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateAlertLabels {
    /// The AlertConfig.
    pub alert_config: String,
    /// Certificate name.
    pub name: String,
    /// Certificate namespace.
    pub namespace: String,
}

/// What the per-Certificate series say about one Certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateSeries {
    /// Certificate namespace.
    pub namespace: String,
    /// Certificate name.
    pub name: String,
    /// `spec.issuerRef.name`.
    pub issuer_name: String,
    /// `Issuer` or `ClusterIssuer`.
    pub issuer_kind: &'static str,
    /// `status.notAfter`, Unix seconds; no expiration series while unknown (cert-manager
    /// exports 0, which would read as long expired).
    pub not_after: Option<i64>,
    /// `status.renewalTime`, Unix seconds; no renewal series while unknown.
    pub renewal: Option<i64>,
    /// The Ready condition: `None` while it is absent or `Unknown`.
    pub ready: Option<bool>,
}

/// The values of `certificate_ready_status`'s `condition` label, as cert-manager has them.
const READY_CONDITIONS: [&str; 3] = ["True", "False", "Unknown"];

/// The most expiry series one DiscoveryTask exports (its soonest-expiring certificates); the
/// counts cover everything.
pub const MAX_DISCOVERED_SERIES_PER_TASK: usize = 1000;

/// The operator's metrics and the registry that serves them.
pub struct Metrics {
    registry: Registry,
    discovered_expiry: Family<DiscoveredLabels, Gauge>,
    discovered_count: Family<DiscoveryTaskLabels, Gauge>,
    reconciliations: Family<ReconcileLabels, Counter>,
    reconcile_duration: Family<ControllerLabels, Histogram>,
    leader: Gauge,
    ready: Gauge,
    certificates: CertificateFamilies,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers all metrics under the `pki_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pki_operator");
        let reconciliations = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciliations",
            "Reconcile runs by controller and outcome",
            reconciliations.clone(),
        );
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0])
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile run",
            reconcile_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without election)",
            leader.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 while /readyz answers 200", ready.clone());
        let build_info = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("build_info", "Build information", build_info);
        let discovered_expiry = Family::<DiscoveredLabels, Gauge>::default();
        registry.register(
            "discovered_certificate_expiry_timestamp_seconds",
            "End of validity (Unix seconds) of each certificate a DiscoveryTask found, at most 1000 per task (the soonest-expiring)",
            discovered_expiry.clone(),
        );
        let discovered_count = Family::<DiscoveryTaskLabels, Gauge>::default();
        registry.register(
            "discovered_certificates",
            "Certificates each DiscoveryTask found in its last run, by source",
            discovered_count.clone(),
        );
        let certificates = CertificateFamilies::register(&mut registry);
        Self {
            registry,
            discovered_expiry,
            discovered_count,
            reconciliations,
            reconcile_duration,
            leader,
            ready,
            certificates,
        }
    }

    /// Sets one Certificate's expiration, renewal and ready series. A label set the
    /// Certificate had before (another issuer) is removed, and so is a timestamp that is no
    /// longer known.
    pub fn set_certificate(&self, c: &CertificateSeries) {
        let labels = CertificateLabels {
            name: c.name.clone(),
            namespace: c.namespace.clone(),
            issuer_name: c.issuer_name.clone(),
            issuer_kind: c.issuer_kind,
            issuer_group: ISSUER_GROUP,
        };
        let mut known = self
            .certificates
            .labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (c.namespace.clone(), c.name.clone());
        if let Some(old) = known.insert(key, labels.clone())
            && old != labels
        {
            self.remove_certificate_series(&old);
        }
        for (family, value) in [
            (&self.certificates.expiration, c.not_after),
            (&self.certificates.renewal, c.renewal),
        ] {
            match value {
                Some(seconds) => {
                    family.get_or_create(&labels).set(seconds);
                }
                None => {
                    family.remove(&labels);
                }
            }
        }
        let current = match c.ready {
            Some(true) => "True",
            Some(false) => "False",
            None => "Unknown",
        };
        for condition in READY_CONDITIONS {
            self.certificates
                .ready
                .get_or_create(&CertificateReadyLabels {
                    condition,
                    certificate: labels.clone(),
                })
                .set(i64::from(condition == current));
        }
    }

    /// Removes the expiration, renewal and Ready series of a Certificate (deleted, or being
    /// deleted). Its alert-level series belong to the AlertConfigs, which re-evaluate on the
    /// deletion and remove them.
    pub fn remove_certificate(&self, namespace: &str, name: &str) {
        let mut known = self
            .certificates
            .labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = known.remove(&(namespace.to_owned(), name.to_owned())) {
            self.remove_certificate_series(&old);
        }
    }

    fn remove_certificate_series(&self, labels: &CertificateLabels) {
        self.certificates.expiration.remove(labels);
        self.certificates.renewal.remove(labels);
        for condition in READY_CONDITIONS {
            self.certificates.ready.remove(&CertificateReadyLabels {
                condition,
                certificate: labels.clone(),
            });
        }
    }

    /// Sets a Certificate's alert level in one AlertConfig: 0 none, 1 INFO, 2 WARN, 3 HIGH,
    /// 4 ERROR. The AlertConfig controller decides it, and removes it when the Certificate
    /// leaves its scope or is deleted (it re-evaluates on every Certificate change).
    pub fn set_certificate_alert_level(&self, alert_config: &str, namespace: &str, name: &str, level: u8) {
        self.certificates
            .alert_level
            .get_or_create(&alert_labels(alert_config, namespace, name))
            .set(i64::from(level));
    }

    /// Removes a Certificate's alert level series of one AlertConfig.
    pub fn remove_certificate_alert_level(&self, alert_config: &str, namespace: &str, name: &str) {
        self.certificates
            .alert_level
            .remove(&alert_labels(alert_config, namespace, name));
    }

    /// Replaces the discovery series with `inventory` (every task's last run).
    pub fn set_discovered(
        &self,
        inventory: &std::collections::BTreeMap<
            String,
            std::sync::Arc<Vec<crate::discovery::analysis::Found>>,
        >,
    ) {
        self.discovered_expiry.clear();
        self.discovered_count.clear();
        for (task, found) in inventory {
            let mut counts: std::collections::BTreeMap<&'static str, i64> = std::collections::BTreeMap::new();
            for f in found.iter() {
                *counts.entry(f.source.as_str()).or_default() += 1;
            }
            for (source, count) in counts {
                self.discovered_count
                    .get_or_create(&DiscoveryTaskLabels {
                        task: task.clone(),
                        source,
                    })
                    .set(count);
            }
            let mut soonest: Vec<&crate::discovery::analysis::Found> = found.iter().collect();
            soonest.sort_by_key(|f| f.not_after);
            for f in soonest.into_iter().take(MAX_DISCOVERED_SERIES_PER_TASK) {
                self.discovered_expiry
                    .get_or_create(&DiscoveredLabels {
                        task: task.clone(),
                        source: f.source.as_str(),
                        location: f.location.clone(),
                        serial: f.serial_hex.clone(),
                        common_name: f
                            .common_name
                            .as_deref()
                            .unwrap_or_default()
                            .chars()
                            .take(64)
                            .collect(),
                        managed: if f.managed { "true" } else { "false" },
                    })
                    .set(f.not_after);
            }
        }
    }

    /// Records one reconcile run, failed ones included, with how long it took.
    pub fn reconciled(&self, controller: &'static str, outcome: &'static str, seconds: f64) {
        self.reconciliations
            .get_or_create(&ReconcileLabels { controller, outcome })
            .inc();
        self.reconcile_duration
            .get_or_create(&ControllerLabels { controller })
            .observe(seconds);
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Sets the ready gauge.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Renders the OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn alert_labels(alert_config: &str, namespace: &str, name: &str) -> CertificateAlertLabels {
    CertificateAlertLabels {
        alert_config: alert_config.to_owned(),
        name: name.to_owned(),
        namespace: namespace.to_owned(),
    }
}

/// The per-Certificate families, and the label set each Certificate's series carry now.
struct CertificateFamilies {
    expiration: Family<CertificateLabels, Gauge>,
    renewal: Family<CertificateLabels, Gauge>,
    ready: Family<CertificateReadyLabels, Gauge>,
    alert_level: Family<CertificateAlertLabels, Gauge>,
    /// Kept so that a changed `issuerRef` removes the old series instead of leaving them
    /// beside the new ones, and a deletion finds the series to remove.
    labels: Mutex<HashMap<(String, String), CertificateLabels>>,
}

impl CertificateFamilies {
    /// Registers the families under cert-manager's names (prefix aside).
    fn register(registry: &mut Registry) -> Self {
        let expiration = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certificate_expiration_timestamp_seconds",
            "End of validity (notAfter, Unix seconds) of each Certificate's current certificate",
            expiration.clone(),
        );
        let renewal = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certificate_renewal_timestamp_seconds",
            "When each Certificate is due for renewal (status.renewalTime, Unix seconds)",
            renewal.clone(),
        );
        let ready = Family::<CertificateReadyLabels, Gauge>::default();
        registry.register(
            "certificate_ready_status",
            "The Ready condition of each Certificate: 1 on the series of its current status",
            ready.clone(),
        );
        let alert_level = Family::<CertificateAlertLabels, Gauge>::default();
        registry.register(
            "certificate_alert_level",
            "Alert level of each Certificate: 0 none, 1 INFO, 2 WARN, 3 HIGH, 4 ERROR",
            alert_level.clone(),
        );
        Self {
            expiration,
            renewal,
            ready,
            alert_level,
            labels: Mutex::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_counter_is_exposed_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.reconciled("certificate", "success", 0.01);
        metrics.reconciled("certificate", "success", 0.02);
        metrics.set_leader(true);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"pki_operator_reconciliations_total{controller="certificate",outcome="success"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains("pki_operator_leader 1"), "{text}");
        assert!(text.contains("pki_operator_build_info{version="), "{text}");
    }
    fn series(issuer: &str, ready: Option<bool>) -> CertificateSeries {
        CertificateSeries {
            namespace: "apps".into(),
            name: "web".into(),
            issuer_name: issuer.into(),
            issuer_kind: "ClusterIssuer",
            not_after: Some(1_900_000_000),
            renewal: Some(1_899_000_000),
            ready,
        }
    }

    /// The encoded sample lines of the `certificate_*` families.
    fn certificate_lines(metrics: &Metrics) -> Vec<String> {
        let text = metrics.encode().unwrap();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("pki_operator_certificate_"))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn certificate_series_carry_cert_managers_labels_and_follow_the_ready_condition() {
        let metrics = Metrics::new();
        metrics.set_certificate(&series("corp", Some(true)));
        let labels = r#"name="web",namespace="apps",issuer_name="corp",issuer_kind="ClusterIssuer",issuer_group="pki-operator.io""#;
        assert_eq!(
            certificate_lines(&metrics),
            [
                format!("pki_operator_certificate_expiration_timestamp_seconds{{{labels}}} 1900000000"),
                format!(r#"pki_operator_certificate_ready_status{{condition="False",{labels}}} 0"#),
                format!(r#"pki_operator_certificate_ready_status{{condition="True",{labels}}} 1"#),
                format!(r#"pki_operator_certificate_ready_status{{condition="Unknown",{labels}}} 0"#),
                format!("pki_operator_certificate_renewal_timestamp_seconds{{{labels}}} 1899000000"),
            ]
        );
        metrics.set_certificate(&series("corp", Some(false)));
        let ready: Vec<_> = certificate_lines(&metrics)
            .into_iter()
            .filter(|l| l.contains("ready_status") && l.ends_with(" 1"))
            .collect();
        assert_eq!(
            ready,
            [format!(
                r#"pki_operator_certificate_ready_status{{condition="False",{labels}}} 1"#
            )]
        );
        // No Ready condition yet, nothing issued: Unknown, and no timestamps rather than 0.
        metrics.set_certificate(&CertificateSeries {
            not_after: None,
            renewal: None,
            ..series("corp", None)
        });
        assert_eq!(
            certificate_lines(&metrics),
            [
                format!(r#"pki_operator_certificate_ready_status{{condition="False",{labels}}} 0"#),
                format!(r#"pki_operator_certificate_ready_status{{condition="True",{labels}}} 0"#),
                format!(r#"pki_operator_certificate_ready_status{{condition="Unknown",{labels}}} 1"#),
            ]
        );
    }

    #[test]
    fn an_issuer_change_replaces_the_series_and_removal_leaves_none() {
        let metrics = Metrics::new();
        metrics.set_certificate(&series("old-ca", Some(true)));
        let other = CertificateSeries {
            name: "api".into(),
            ..series("old-ca", Some(true))
        };
        metrics.set_certificate(&other);
        metrics.set_certificate(&series("new-ca", Some(true)));
        let lines = certificate_lines(&metrics);
        assert_eq!(lines.len(), 10, "{lines:#?}");
        assert!(
            lines
                .iter()
                .filter(|l| l.contains(r#"name="web""#))
                .all(|l| l.contains(r#"issuer_name="new-ca""#)),
            "{lines:#?}"
        );
        metrics.remove_certificate("apps", "web");
        let lines = certificate_lines(&metrics);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines.iter().all(|l| l.contains(r#"name="api""#)), "{lines:#?}");
        metrics.remove_certificate("apps", "api");
        metrics.remove_certificate("apps", "never-seen");
        assert_eq!(certificate_lines(&metrics), Vec::<String>::new());
    }

    #[test]
    fn alert_levels_are_set_per_alert_config_and_certificate_and_removed() {
        let metrics = Metrics::new();
        metrics.set_certificate_alert_level("prod", "apps", "web", 3);
        metrics.set_certificate_alert_level("prod", "apps", "api", 1);
        metrics.set_certificate_alert_level("prod", "apps", "api", 0);
        metrics.set_certificate_alert_level("audit", "apps", "api", 2);
        assert_eq!(
            certificate_lines(&metrics),
            [
                r#"pki_operator_certificate_alert_level{alert_config="audit",name="api",namespace="apps"} 2"#,
                r#"pki_operator_certificate_alert_level{alert_config="prod",name="api",namespace="apps"} 0"#,
                r#"pki_operator_certificate_alert_level{alert_config="prod",name="web",namespace="apps"} 3"#,
            ]
        );
        metrics.remove_certificate_alert_level("prod", "apps", "web");
        metrics.remove_certificate_alert_level("prod", "apps", "api");
        assert_eq!(
            certificate_lines(&metrics),
            [r#"pki_operator_certificate_alert_level{alert_config="audit",name="api",namespace="apps"} 2"#]
        );
    }
}
