//! Operator metrics (Prometheus text format on `/metrics`).

use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    duration: HistogramVec,
    steps: IntCounterVec,
    conditions: GaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "parsec_operator_reconciliations_total",
                "Reconciles by result (ok or the error category)",
            ),
            &["result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "parsec_operator_reconcile_duration_seconds",
                "Duration of one reconcile",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0]),
            &[],
        )?;
        let steps = IntCounterVec::new(
            Opts::new(
                "parsec_operator_operation_steps_total",
                "Disruptive steps taken (membership changes, pod deletions) by step and result",
            ),
            &["step", "result"],
        )?;
        let conditions = GaugeVec::new(
            Opts::new(
                "parsec_operator_cluster_condition",
                "1 when the condition of the cluster is True, else 0",
            ),
            &["namespace", "cluster", "type"],
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(steps.clone()))?;
        registry.register(Box::new(conditions.clone()))?;
        Ok(Metrics {
            registry,
            reconciliations,
            duration,
            steps,
            conditions,
        })
    }

    pub fn observe_reconcile(&self, elapsed: Duration, error: Option<&str>) {
        self.reconciliations
            .with_label_values(&[error.unwrap_or("ok")])
            .inc();
        self.duration
            .with_label_values(&[] as &[&str])
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_step(&self, step: &str, ok: bool) {
        self.steps
            .with_label_values(&[step, if ok { "ok" } else { "failed" }])
            .inc();
    }

    pub fn set_condition(&self, namespace: &str, cluster: &str, type_: &str, value: bool) {
        self.conditions
            .with_label_values(&[namespace, cluster, type_])
            .set(if value { 1.0 } else { 0.0 });
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reconciles_and_conditions_are_exposed() {
        let m = Metrics::new().unwrap();
        m.observe_reconcile(Duration::from_millis(20), None);
        m.observe_reconcile(Duration::from_millis(20), Some("KubernetesApi"));
        m.set_condition("ns", "demo", "Available", true);
        m.observe_step("AddLearner", true);
        let text = m.render();
        assert!(
            text.contains("parsec_operator_reconciliations_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("parsec_operator_reconciliations_total{result=\"KubernetesApi\"} 1"));
        assert!(text.contains(
            "parsec_operator_cluster_condition{cluster=\"demo\",namespace=\"ns\",type=\"Available\"} 1"
        ));
        assert!(text.contains(
            "parsec_operator_operation_steps_total{result=\"ok\",step=\"AddLearner\"} 1"
        ));
    }
}
