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
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::model::{FabricState, NodeTopology, Source, SourceStatus};

/// The `source` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SourceLabel {
    /// The probe source the sample is about (`nvml`, `rdma`, ...).
    pub source: Source,
}

impl EncodeLabelValue for Source {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// The `state` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StateLabel {
    /// The fabric state's name, as in the `nvlink.fabric` label (`ready`, `pending`, ...).
    pub state: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0])
}

/// Every metric of the agent; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    probe_duration: Family<SourceLabel, Histogram>,
    pass_duration: Histogram,
    probe_errors: Family<SourceLabel, Counter>,
    label_writes: Counter,
    label_write_errors: Counter,
    revision: Gauge,
    watchers: Gauge,
    fabric_state: Family<StateLabel, Gauge>,
    fabric_change_held: Gauge,
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
        let probe_duration =
            Family::<SourceLabel, Histogram>::new_with_constructor(duration_histogram);
        r.register(
            "probe_duration_seconds",
            "Time each probe source took, measured where it runs",
            probe_duration.clone(),
        );
        let pass_duration = duration_histogram();
        r.register(
            "probe_pass_duration_seconds",
            "Time a whole probe pass took, every source included",
            pass_duration.clone(),
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
        let fabric_change_held = Gauge::default();
        r.register(
            "fabric_change_held",
            "1 while a fabric label change waits for the next probe to confirm it (hysteresis)",
            fabric_change_held.clone(),
        );
        Self {
            registry: Arc::new(r),
            probe_duration,
            pass_duration,
            probe_errors,
            label_writes,
            label_write_errors,
            revision,
            watchers,
            fabric_state,
            fabric_change_held,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a fabric label change is held by the hysteresis.
    pub fn set_fabric_change_held(&self, held: bool) {
        self.fabric_change_held.set(i64::from(held));
    }

    /// Records one probe pass: each source's own time and failure from `sources` (those of the
    /// fresh probe), the whole pass's time, and the published state `topo`.
    pub fn observe_probe(&self, sources: &[SourceStatus], pass: Duration, topo: &NodeTopology) {
        for s in sources {
            let l = SourceLabel { source: s.source };
            self.probe_duration
                .get_or_create(&l)
                .observe(s.took.as_secs_f64());
            if !s.ok {
                self.probe_errors.get_or_create(&l).inc();
            }
        }
        self.pass_duration.observe(pass.as_secs_f64());
        self.revision
            .set(i64::try_from(topo.revision).unwrap_or(i64::MAX));
        for st in <FabricState as strum::IntoEnumIterator>::iter() {
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
    use crate::model::Fabric;

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
            sources: vec![
                SourceStatus::ok(Source::Nvml).took(Duration::from_millis(2)),
                SourceStatus::failed(Source::Rdma, "x").took(Duration::from_millis(1)),
            ],
            ..NodeTopology::default()
        };
        m.observe_probe(&t.sources, Duration::from_millis(4), &t);
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
        assert!(text.contains("nodetopo_probe_duration_seconds_sum{source=\"nvml\"} 0.002\n"));
        assert!(text.contains("nodetopo_probe_duration_seconds_sum{source=\"rdma\"} 0.001\n"));
        assert!(text.contains("nodetopo_probe_pass_duration_seconds_sum 0.004\n"));
    }
}
