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

/// The operator's metrics and the registry that serves them.
pub struct Metrics {
    registry: Registry,
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
        Self {
            registry,
            reconciliations,
            reconcile_duration,
            leader,
            ready,
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
