//! What one probe means for the agent's publishers, decided before anything is sent: the next
//! published state and its revision, the labels after the fabric hysteresis, and the Node event.
//! Pure: no channels, no clock. The probe loop ([`super`]) only waits, probes, calls
//! [`Decider::step`] and sends what it returns.

use super::{
    labeler::{NodeEvent, fabric_event},
    merge,
};
use crate::{
    labels::{self, LabelConfig, Labels, hysteresis::FabricHysteresis},
    model::NodeTopology,
};

/// Consecutive probes that must agree on a new fabric state, domain or cluster before the labels
/// change ([`labels::hysteresis`]): a change is written once it held for a whole interval.
pub const FABRIC_CONFIRMATIONS: u32 = 2;

/// What one probe means for the publishers.
#[derive(Debug, Clone)]
pub struct Step {
    /// The state to publish: the probe merged with the last good state, and its revision.
    pub next: NodeTopology,
    /// True when the content changed (a new revision): watchers are woken.
    pub changed: bool,
    /// The labels the Node should carry now, fabric changes held back until confirmed.
    pub labels: Labels,
    /// True while a fabric label change waits for confirmation.
    pub fabric_held: bool,
    /// The Node event to record: the NVLink fabric state or domain changed since the last
    /// published state (never for the first).
    pub event: Option<NodeEvent>,
}

/// What the decisions carry from one probe to the next, besides the published state.
#[derive(Debug, Clone)]
pub struct Decider {
    labels: LabelConfig,
    hold: FabricHysteresis,
    first_revision: u64,
}

impl Decider {
    /// Decisions for labels named by `labels`; the first published revision is
    /// `first_revision` (the agent passes its start time in milliseconds, so revisions keep
    /// increasing across restarts).
    pub fn new(labels: LabelConfig, first_revision: u64) -> Self {
        let hold = FabricHysteresis::new(labels.prefix(), FABRIC_CONFIRMATIONS);
        Self {
            labels,
            hold,
            first_revision,
        }
    }

    /// The step for a `fresh` probe after the published state `prev`.
    pub fn step(&mut self, prev: &NodeTopology, fresh: NodeTopology) -> Step {
        let next = next_state(prev, fresh, self.first_revision);
        let changed = next.revision != prev.revision;
        // Every probe: a held fabric change is confirmed, or dropped, by the probes after it.
        let labels = self
            .hold
            .update(labels::desired_labels(&next, &self.labels));
        let event = (changed && prev.revision != 0)
            .then(|| fabric_event(&prev.fabric, &next.fabric))
            .flatten();
        Step {
            changed,
            labels,
            fabric_held: self.hold.is_holding(),
            event,
            next,
        }
    }
}

/// The next published state from the previous one and a fresh probe. The first published
/// revision is `first_revision`; later ones move by one per content change.
pub fn next_state(prev: &NodeTopology, fresh: NodeTopology, first_revision: u64) -> NodeTopology {
    let mut next = merge::merge(prev, fresh);
    next.revision = if prev.revision == 0 {
        first_revision.max(1)
    } else if next.same_content(prev) {
        prev.revision
    } else {
        prev.revision + 1
    };
    next
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::{
        labels::Key,
        model::{FabricState, SourceStatus},
        probe::{GpuSource, ProbeConfig, Prober},
    };

    fn probe(t: u64, driver: &str) -> NodeTopology {
        NodeTopology {
            node_name: "n".into(),
            probe_time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(t)),
            driver: crate::model::DriverInfo {
                driver_version: Some(driver.into()),
                ..Default::default()
            },
            sources: vec![SourceStatus::ok(crate::model::Source::Nvml)],
            ..NodeTopology::default()
        }
    }

    #[test]
    fn revision_moves_only_on_content() {
        let s1 = next_state(&NodeTopology::default(), probe(1, "a"), 1000);
        assert_eq!(s1.revision, 1000);
        let s2 = next_state(&s1, probe(2, "a"), 1000);
        assert_eq!(s2.revision, 1000, "probe time is not content");
        assert_eq!(s2.probe_time, probe(2, "a").probe_time);
        let s3 = next_state(&s2, probe(3, "b"), 1000);
        assert_eq!(s3.revision, 1001);
    }

    /// A GB200 tray probed from its recorded snapshot.
    fn tray(snapshot: &str) -> NodeTopology {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gb200/");
        let cfg = ProbeConfig {
            node_name: "tray".into(),
            sysfs_root: "/nonexistent".into(),
            gpu: GpuSource::Replay(format!("{dir}{snapshot}").into()),
            ..ProbeConfig::default()
        };
        Prober::from_config(&cfg, None)
            .expect("a replay prober")
            .probe(SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn a_fabric_change_is_published_at_once_labelled_after_confirmation_and_recorded_once() {
        let fabric = Key::NvlinkFabric.under(crate::labels::DEFAULT_PREFIX);
        let label = |s: &Step| {
            let found = s.labels.iter().find(|(k, _)| k.to_string() == fabric);
            found.map(|(_, v)| v.to_string())
        };
        let (ok, degraded) = (tray("tray-a1.json"), tray("tray-degraded.json"));
        assert_eq!(ok.fabric.state, FabricState::Ready);
        assert_ne!(degraded.fabric.state, ok.fabric.state);
        let mut d = Decider::new(LabelConfig::default(), 500);

        let first = d.step(&NodeTopology::default(), ok.clone());
        assert!(first.changed && first.next.revision == 500);
        assert_eq!(label(&first).as_deref(), Some("ready"));
        assert!(first.event.is_none(), "no event for the first state");
        assert!(!first.fabric_held);

        let same = d.step(&first.next, ok.clone());
        assert!(!same.changed && same.next.revision == 500 && same.event.is_none());

        let flap = d.step(&same.next, degraded.clone());
        assert!(flap.changed && flap.next.revision == 501);
        assert_eq!(
            flap.next.fabric.state, degraded.fabric.state,
            "published at once"
        );
        assert_eq!(label(&flap).as_deref(), Some("ready"), "label held");
        assert!(flap.fabric_held);
        let ev = flap.event.as_ref().expect("the change is recorded");
        assert!(ev.warning, "{ev:?}");

        let confirmed = d.step(&flap.next, degraded.clone());
        assert!(
            !confirmed.changed && confirmed.event.is_none(),
            "recorded once"
        );
        assert_eq!(label(&confirmed).as_deref(), Some("degraded"));
        assert!(!confirmed.fabric_held);

        // A flap that reverts before confirmation never reaches the labels.
        let back = d.step(&confirmed.next, ok.clone());
        assert!(back.fabric_held && back.event.is_some());
        let settled = d.step(&back.next, degraded);
        assert!(!settled.fabric_held);
        assert_eq!(label(&settled), label(&confirmed));
    }
}
