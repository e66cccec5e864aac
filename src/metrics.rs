//! Agent metrics (Prometheus text format) and the HTTP endpoints `/metrics`, `/healthz` and
//! `/readyz`.
#![forbid(unsafe_code)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::model::{FabricState, NodeTopology};

/// The `source` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SourceLabel {
    /// Probe source name.
    pub source: String,
}

/// The `state` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StateLabel {
    /// Fabric state name.
    pub state: String,
}

const FABRIC_STATES: [FabricState; 7] = [
    FabricState::Unknown,
    FabricState::None,
    FabricState::Pending,
    FabricState::Ready,
    FabricState::Degraded,
    FabricState::Inconsistent,
    FabricState::Error,
];

/// Every metric of the agent; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    probe_duration: Family<SourceLabel, Histogram>,
    probe_errors: Family<SourceLabel, Counter>,
    label_writes: Counter,
    label_write_errors: Counter,
    revision: Gauge,
    watchers: Gauge,
    fabric_state: Family<StateLabel, Gauge>,
    ready: Arc<AtomicBool>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `nodetopo_` prefix.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("nodetopo");
        let probe_duration = Family::<SourceLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0])
        });
        r.register(
            "probe_duration_seconds",
            "Duration of the probe pass that produced each source's data",
            probe_duration.clone(),
        );
        let probe_errors = Family::<SourceLabel, Counter>::default();
        r.register(
            "probe_errors",
            "Probes whose source failed",
            probe_errors.clone(),
        );
        let label_writes = Counter::default();
        r.register(
            "label_writes",
            "Node label writes that succeeded",
            label_writes.clone(),
        );
        let label_write_errors = Counter::default();
        r.register(
            "label_write_errors",
            "Node label writes that failed",
            label_write_errors.clone(),
        );
        let revision = Gauge::default();
        r.register(
            "topology_revision",
            "Current topology revision",
            revision.clone(),
        );
        let watchers = Gauge::default();
        r.register("grpc_watchers", "Open watch streams", watchers.clone());
        let fabric_state = Family::<StateLabel, Gauge>::default();
        r.register(
            "fabric_state",
            "1 for the node's current NVLink fabric state, 0 for the others",
            fabric_state.clone(),
        );
        Self {
            registry: Arc::new(r),
            probe_duration,
            probe_errors,
            label_writes,
            label_write_errors,
            revision,
            watchers,
            fabric_state,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Records one probe: its duration per source, failed sources, and the published state.
    pub fn observe_probe(&self, topo: &NodeTopology, took: Duration) {
        for s in &topo.sources {
            let l = SourceLabel {
                source: s.source.clone(),
            };
            self.probe_duration
                .get_or_create(&l)
                .observe(took.as_secs_f64());
            if !s.ok {
                self.probe_errors.get_or_create(&l).inc();
            }
        }
        self.revision
            .set(i64::try_from(topo.revision).unwrap_or(i64::MAX));
        for st in FABRIC_STATES {
            let v = i64::from(st == topo.fabric.state);
            self.fabric_state
                .get_or_create(&StateLabel {
                    state: st.as_str().to_string(),
                })
                .set(v);
        }
        self.ready.store(true, Ordering::Release);
    }

    /// Counts a label write.
    pub fn label_write(&self, ok: bool) {
        if ok {
            self.label_writes.inc();
        } else {
            self.label_write_errors.inc();
        }
    }

    /// True once the first probe was recorded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The HTTP router: `/metrics`, `/healthz`, `/readyz`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready_handler))
            .with_state(self.clone())
    }
}

impl crate::api::WatcherGauge for Metrics {
    fn add(&self, delta: i64) {
        self.watchers.inc_by(delta);
    }
}

async fn metrics_handler(State(m): State<Metrics>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn ready_handler(State(m): State<Metrics>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "first probe not done\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Fabric, SourceStatus};

    #[test]
    fn probe_is_recorded() {
        let m = Metrics::new();
        assert!(!m.is_ready());
        let t = NodeTopology {
            revision: 4,
            fabric: Fabric {
                state: FabricState::Ready,
                ..Fabric::default()
            },
            sources: vec![SourceStatus::ok("nvml"), SourceStatus::failed("rdma", "x")],
            ..NodeTopology::default()
        };
        m.observe_probe(&t, Duration::from_millis(3));
        m.label_write(false);
        let text = m.encode();
        assert!(m.is_ready());
        assert!(text.contains("nodetopo_topology_revision 4"), "{text}");
        assert!(
            text.contains("nodetopo_probe_errors_total{source=\"rdma\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("nodetopo_fabric_state{state=\"ready\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("nodetopo_label_write_errors_total 1"),
            "{text}"
        );
        assert!(text.contains("nodetopo_probe_duration_seconds_count{source=\"nvml\"} 1"));
    }
}
