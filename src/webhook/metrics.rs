//! The webhook's metrics: admission latency and outcomes per object kind, and the Nodes held.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::{
    consumer::Consumer,
    mutate::{Kept, ObjectKind, Outcome},
    route::Route,
};

/// The `kind` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    /// `binding`, `pod` or `other`.
    pub kind: String,
}

/// The `kind` and `outcome` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `binding`, `pod` or `other`.
    pub kind: String,
    /// `patched`, `unchanged`, `unknown_node`, `not_bound`, `ignored` or `error`.
    pub outcome: String,
}

/// The `decision` label of a routing review.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DecisionLabel {
    /// `routed`, `already_there`, `not_grouped`, `no_managed_resource`, `other_scheduler`,
    /// `ignored` or `error`.
    pub decision: String,
}

/// The `consumer` label of the consumer-key counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConsumerLabel {
    /// `llm-d`, `dynamo` or `pod-key`.
    pub consumer: String,
}

/// Buckets of the admission histogram, in seconds: fine below the 2 ms target.
const BUCKETS: [f64; 11] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// Every webhook metric; cheap to clone.
#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    registry: Arc<Registry>,
    duration: Family<KindLabel, Histogram>,
    reviews: Family<OutcomeLabels, Counter>,
    routes: Family<DecisionLabel, Counter>,
    kept: Family<ConsumerLabel, Counter>,
    withheld: Family<ConsumerLabel, Counter>,
    nodes: Gauge,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WebhookMetrics {
    /// Registers every metric under the `nodetopo_webhook_` prefix.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("nodetopo_webhook");
        let duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(BUCKETS.iter().copied())
        });
        r.register(
            "admission_duration_seconds",
            "Time from a review's body read to its answer, by object kind",
            duration.clone(),
        );
        let reviews = Family::<OutcomeLabels, Counter>::default();
        r.register(
            "reviews",
            "Admission reviews answered, by object kind and outcome",
            reviews.clone(),
        );
        let routes = Family::<DecisionLabel, Counter>::default();
        r.register(
            "route_decisions",
            "Pod creations reviewed for the scheduler profile (POST /route), by decision",
            routes.clone(),
        );
        let kept = Family::<ConsumerLabel, Counter>::default();
        r.register(
            "consumer_keys_kept",
            "Consumer keys not written because the Pod has its own value there (kept), by consumer",
            kept.clone(),
        );
        let withheld = Family::<ConsumerLabel, Counter>::default();
        r.register(
            "consumer_keys_withheld",
            "Consumer keys left out of a binding because its Pod's labels could not be read, by consumer",
            withheld.clone(),
        );
        let nodes = Gauge::default();
        r.register("nodes", "Nodes in the webhook's reflector", nodes.clone());
        Self {
            registry: Arc::new(r),
            duration,
            reviews,
            routes,
            kept,
            withheld,
            nodes,
        }
    }

    /// Records one review.
    pub fn observe(&self, kind: ObjectKind, outcome: Option<&Outcome>, took: Duration) {
        let k = kind.as_str().to_string();
        self.duration
            .get_or_create(&KindLabel { kind: k.clone() })
            .observe(took.as_secs_f64());
        self.reviews
            .get_or_create(&OutcomeLabels {
                kind: k,
                outcome: outcome.map_or("error", Outcome::as_str).to_string(),
            })
            .inc();
    }

    /// Records one routing review (`None`: the review could not be read); its time goes to the
    /// admission histogram as kind `route`.
    pub fn observe_route(&self, decision: Option<&Route>, took: Duration) {
        self.duration
            .get_or_create(&KindLabel {
                kind: "route".to_string(),
            })
            .observe(took.as_secs_f64());
        self.routes
            .get_or_create(&DecisionLabel {
                decision: decision.map_or("error", Route::as_str).to_string(),
            })
            .inc();
    }

    /// Counts the consumer keys of one review that kept the Pod's value or were left out.
    pub fn observe_consumers(&self, kept: &[Kept], withheld: &[Consumer]) {
        let label = |c: Consumer| ConsumerLabel {
            consumer: c.as_str().to_string(),
        };
        for k in kept {
            self.kept.get_or_create(&label(k.consumer)).inc();
        }
        for c in withheld {
            self.withheld.get_or_create(&label(*c)).inc();
        }
    }

    /// Sets the number of Nodes held.
    pub fn set_nodes(&self, n: usize) {
        self.nodes.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviews_are_counted_by_kind_and_outcome() {
        let m = WebhookMetrics::new();
        m.observe(
            ObjectKind::Binding,
            Some(&Outcome::Patched(1)),
            Duration::from_micros(300),
        );
        m.observe(ObjectKind::Other, None, Duration::from_micros(30));
        m.observe_route(Some(&Route::Routed), Duration::from_micros(40));
        m.observe_route(None, Duration::from_micros(40));
        m.set_nodes(5000);
        let kept = Kept {
            consumer: Consumer::LlmD,
            key: "k".into(),
            pod_value: "a".into(),
            node_value: "b".into(),
        };
        m.observe_consumers(&[kept.clone(), kept], &[Consumer::Dynamo]);
        let text = m.encode();
        assert!(
            text.contains(r#"nodetopo_webhook_consumer_keys_kept_total{consumer="llm-d"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"nodetopo_webhook_consumer_keys_withheld_total{consumer="dynamo"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"nodetopo_webhook_reviews_total{kind="binding",outcome="patched"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"nodetopo_webhook_reviews_total{kind="other",outcome="error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"nodetopo_webhook_admission_duration_seconds_bucket{le="0.0005",kind="binding"} 1"#
            ) || text.contains(
                r#"nodetopo_webhook_admission_duration_seconds_bucket{kind="binding",le="0.0005"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("nodetopo_webhook_nodes 5000"), "{text}");
        assert!(
            text.contains(r#"nodetopo_webhook_route_decisions_total{decision="routed"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"nodetopo_webhook_route_decisions_total{decision="error"} 1"#),
            "{text}"
        );
    }
}
