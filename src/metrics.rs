//! Prometheus metrics. Every label has a bounded set of values (controller names, outcome
//! categories), never object names, so cardinality does not grow with the cluster.

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
        Self {
            registry,
            discovered_expiry,
            discovered_count,
            reconciliations,
            reconcile_duration,
            leader,
            ready,
        }
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
}

// TEMP until the certificate metrics branch lands.
impl Metrics {
    /// Sets the alert level series.
    pub fn set_certificate_alert_level(&self, _config: &str, _namespace: &str, _name: &str, _level: u8) {}
    /// Removes the alert level series.
    pub fn remove_certificate_alert_level(&self, _config: &str, _namespace: &str, _name: &str) {}
}
