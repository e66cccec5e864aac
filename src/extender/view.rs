//! The cluster view: node name → the latest topology facts and how fresh they are.
//!
//! Sources (agent streams, the Node watch, the agents file) only send [`ViewEvent`]s; the view
//! applies them. Requests read it through [`ClusterView::resolve`], which falls back to the
//! node labels in the request when an agent's data is stale or missing.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use foldhash::{HashMap, HashMapExt};
use serde::Serialize;

use super::{
    domain::DomainKeys,
    facts::{NodeFacts, block_from},
};
use crate::model::NodeTopology;

/// How current a node's facts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Freshness {
    /// From a connected agent.
    Live,
    /// The agent's last data; it is disconnected now.
    Stale,
    /// From the node's labels only.
    LabelsOnly,
}

/// One node in the view.
#[derive(Debug, Clone, Default)]
pub struct NodeEntry {
    /// The agent's last topology.
    pub topology: Option<Arc<NodeTopology>>,
    /// Facts from `topology` (or from `labels` when there is no topology).
    pub facts: Option<NodeFacts>,
    /// The domain keys of `facts`, interned when they were stored.
    pub keys: DomainKeys,
    /// True while the agent's stream is down.
    pub stale: bool,
    /// The node's labels that the view reads ([`LabelKeys::keeps`]), from the Node watch or the
    /// agents file; the others are dropped on arrival.
    pub labels: BTreeMap<String, String>,
    /// Why the node is stale, when it is.
    pub stale_reason: String,
}

/// A change to the view.
#[derive(Debug, Clone)]
pub enum ViewEvent {
    /// An agent sent a topology.
    Topology {
        /// The Kubernetes node the agent runs on.
        node: String,
        /// The topology the agent sent.
        topology: Arc<NodeTopology>,
    },
    /// An agent's stream is down; keep the last data but mark it stale.
    Disconnected {
        /// The Kubernetes node the agent runs on.
        node: String,
        /// Why the stream is down, in words.
        reason: String,
    },
    /// The node's labels (from the Node watch or the agents file).
    Labels {
        /// The Kubernetes node name.
        node: String,
        /// All the node's labels; the view keeps only those it reads.
        labels: BTreeMap<String, String>,
    },
    /// The node is gone.
    Removed {
        /// The Kubernetes node name.
        node: String,
    },
}

/// Settings the view needs to read labels.
#[derive(Debug, Clone)]
pub struct LabelKeys {
    /// The agent's label prefix, e.g. `nodetopo.io`.
    pub prefix: String,
    /// The leaf/block label key, when configured.
    pub block_label: Option<String>,
}

impl LabelKeys {
    /// Whether the view keeps label `key`: one of the agent's labels that facts are read from
    /// ([`super::facts::LABEL_KEYS`] under the prefix), or the block label. A Node carries
    /// a hundred labels or more (the kubelet's, GPU and node feature discovery's); kept whole,
    /// they were most of the view's memory.
    pub fn keeps(&self, key: &str) -> bool {
        self.block_label.as_deref() == Some(key)
            || key
                .strip_prefix(self.prefix.as_str())
                .and_then(|k| k.strip_prefix('/'))
                .is_some_and(|name| super::facts::LABEL_KEYS.iter().any(|k| k.name() == name))
    }
}

/// Resolved facts for one candidate node.
#[derive(Debug, Clone)]
pub struct Resolved<'a> {
    /// The node's placement facts, from its topology or else its labels.
    pub facts: Cow<'a, NodeFacts>,
    /// Their domain keys.
    pub keys: DomainKeys,
    /// How current they are: live, stale, or from labels only.
    pub freshness: Freshness,
}

/// node name → entry.
#[derive(Debug)]
pub struct ClusterView {
    nodes: HashMap<String, NodeEntry>,
    labels: LabelKeys,
}

impl ClusterView {
    /// An empty view.
    pub fn new(labels: LabelKeys) -> Self {
        Self {
            nodes: HashMap::new(),
            labels,
        }
    }

    /// The label settings.
    pub fn label_keys(&self) -> &LabelKeys {
        &self.labels
    }

    /// Number of known nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no node is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// True when `labels` (a Node's, whole) agree with `kept` (what the view keeps of a node's
    /// labels) on every label the view reads.
    pub fn same_labels(
        &self,
        kept: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        labels
            .iter()
            .filter(|(k, _)| self.labels.keeps(k))
            .eq(kept.iter())
    }

    /// The entry of `node`.
    pub fn entry(&self, node: &str) -> Option<&NodeEntry> {
        self.nodes.get(node)
    }

    /// Node names, sorted.
    pub fn node_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.nodes.keys().cloned().collect();
        v.sort();
        v
    }

    fn refresh_facts(&self, e: &mut NodeEntry) {
        let block = block_from(&e.labels, self.labels.block_label.as_deref());
        let from_labels = NodeFacts::from_labels(
            &e.labels,
            &self.labels.prefix,
            self.labels.block_label.as_deref(),
        );
        e.facts = match &e.topology {
            Some(t) => {
                let mut f = NodeFacts::from_topology(t, block);
                // An agent built without the RDMA probe reports no NICs: take the RDMA facts
                // from the node's labels instead.
                if f.link_layer.is_none()
                    && let Some(l) = &from_labels
                {
                    f.link_layer = l.link_layer;
                    f.ib_subnets = l.ib_subnets.clone();
                }
                Some(f)
            }
            None => from_labels,
        };
        e.keys = e.facts.as_ref().map(DomainKeys::of).unwrap_or_default();
    }

    /// Applies one event.
    pub fn apply(&mut self, ev: ViewEvent) {
        match ev {
            ViewEvent::Topology { node, topology } => {
                let mut e = self.nodes.remove(&node).unwrap_or_default();
                e.topology = Some(topology);
                e.stale = false;
                e.stale_reason.clear();
                self.refresh_facts(&mut e);
                self.nodes.insert(node, e);
            }
            ViewEvent::Disconnected { node, reason } => {
                let e = self.nodes.entry(node).or_default();
                e.stale = true;
                e.stale_reason = reason;
            }
            ViewEvent::Labels { node, mut labels } => {
                let mut e = self.nodes.remove(&node).unwrap_or_default();
                labels.retain(|k, _| self.labels.keeps(k));
                e.labels = labels;
                self.refresh_facts(&mut e);
                self.nodes.insert(node, e);
            }
            ViewEvent::Removed { node } => {
                self.nodes.remove(&node);
            }
        }
    }

    /// Facts for `node`. Order: a live agent topology; else the request's labels (when they
    /// carry the agent's labels); else the stale topology; else the view's labels. `None`
    /// when nothing is known.
    pub fn resolve<'a>(
        &'a self,
        node: &str,
        request_labels: Option<&BTreeMap<String, String>>,
    ) -> Option<Resolved<'a>> {
        let entry = self.nodes.get(node);
        let block_label = self.labels.block_label.as_deref();
        if let Some(e) = entry
            && e.topology.is_some()
            && !e.stale
            && let Some(f) = &e.facts
        {
            // A live topology; a block label in the request still wins over a stored one.
            if let Some(b) = request_labels.and_then(|l| block_from(l, block_label))
                && f.block.as_deref() != Some(b.as_str())
            {
                let mut f = f.clone();
                f.block = Some(b);
                return Some(Resolved {
                    keys: DomainKeys::of(&f),
                    facts: Cow::Owned(f),
                    freshness: Freshness::Live,
                });
            }
            return Some(Resolved {
                facts: Cow::Borrowed(f),
                keys: e.keys,
                freshness: Freshness::Live,
            });
        }
        // The request's labels are the ones the view already holds (a full-Node request
        // remembers its Nodes): their facts were derived when they were stored.
        if let (Some(l), Some(e)) = (request_labels, entry)
            && e.topology.is_none()
            && self.same_labels(&e.labels, l)
            && let Some(f) = &e.facts
        {
            return Some(Resolved {
                facts: Cow::Borrowed(f),
                keys: e.keys,
                freshness: Freshness::LabelsOnly,
            });
        }
        if let Some(f) =
            request_labels.and_then(|l| NodeFacts::from_labels(l, &self.labels.prefix, block_label))
        {
            return Some(Resolved {
                keys: DomainKeys::of(&f),
                facts: Cow::Owned(f),
                freshness: Freshness::LabelsOnly,
            });
        }
        let e = entry?;
        // The stale topology (more complete than partial labels), else the view's labels.
        e.facts.as_ref().map(|f| Resolved {
            facts: Cow::Borrowed(f),
            keys: e.keys,
            freshness: if e.topology.is_some() {
                Freshness::Stale
            } else {
                Freshness::LabelsOnly
            },
        })
    }
}

/// A view shared between sources (writers) and request handlers (readers). Locks are held for
/// one event or one request, never across an await.
#[derive(Debug, Clone)]
pub struct SharedView(Arc<RwLock<ClusterView>>);

impl SharedView {
    /// Wraps a view.
    pub fn new(view: ClusterView) -> Self {
        Self(Arc::new(RwLock::new(view)))
    }

    /// Applies one event.
    pub fn apply(&self, ev: ViewEvent) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).apply(ev);
    }

    /// Runs `f` with the view read-locked.
    pub fn read<R>(&self, f: impl FnOnce(&ClusterView) -> R) -> R {
        f(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Fabric, FabricState, Gpu};

    fn topo(clique: u32) -> Arc<NodeTopology> {
        Arc::new(NodeTopology {
            gpus: vec![Gpu::default(); 4],
            fabric: Fabric {
                state: FabricState::Ready,
                cluster_uuid: Some("u".into()),
                clique_id: Some(clique),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn cfg() -> LabelKeys {
        LabelKeys {
            prefix: "nodetopo.io".into(),
            block_label: Some("leaf".into()),
        }
    }

    #[test]
    fn live_then_stale_then_labels_then_recovered() {
        let mut v = ClusterView::new(cfg());
        v.apply(ViewEvent::Labels {
            node: "n".into(),
            labels: [("leaf".to_string(), "a".to_string())].into(),
        });
        v.apply(ViewEvent::Topology {
            node: "n".into(),
            topology: topo(1),
        });
        let r = v.resolve("n", None).unwrap();
        assert_eq!(r.freshness, Freshness::Live);
        assert_eq!(r.facts.clique_id, Some(1));
        assert_eq!(r.facts.block.as_deref(), Some("a"));

        v.apply(ViewEvent::Disconnected {
            node: "n".into(),
            reason: "gone".into(),
        });
        assert_eq!(v.resolve("n", None).unwrap().freshness, Freshness::Stale);
        let labels: BTreeMap<String, String> = [
            ("nodetopo.io/gpu.count", "4"),
            ("nodetopo.io/nvlink.domain", "u.2"),
            ("nodetopo.io/nvlink.fabric", "ready"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = v.resolve("n", Some(&labels)).unwrap();
        assert_eq!(r.freshness, Freshness::LabelsOnly);
        assert_eq!(r.facts.clique_id, Some(2));

        v.apply(ViewEvent::Topology {
            node: "n".into(),
            topology: topo(1),
        });
        let r = v.resolve("n", Some(&labels)).unwrap();
        assert_eq!(r.freshness, Freshness::Live);
        assert_eq!(r.facts.clique_id, Some(1));
        v.apply(ViewEvent::Removed { node: "n".into() });
        assert!(v.resolve("n", None).is_none());
    }

    #[test]
    fn keeps_only_the_labels_it_reads() {
        let mut v = ClusterView::new(cfg());
        let mut labels: BTreeMap<String, String> = [
            ("nodetopo.io/gpu.count", "4"),
            ("nodetopo.io/gpu.product", "NVIDIA-GB200"),
            ("nodetopo.io/nvlink.domain", "u.2"),
            ("nodetopo.io/nvlink.fabric", "ready"),
            ("nodetopo.io/ib.su", "3f2a1b9c0d"),
            ("leaf", "a"),
            ("kubernetes.io/hostname", "n"),
            ("feature.node.kubernetes.io/cpu-cpuid.SVE2", "true"),
            ("example.com/nodetopo.io/gpu.count", "8"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        v.apply(ViewEvent::Labels {
            node: "n".into(),
            labels: labels.clone(),
        });
        let e = v.entry("n").unwrap();
        let kept: Vec<&str> = e.labels.keys().map(String::as_str).collect();
        assert_eq!(
            kept,
            [
                "leaf",
                "nodetopo.io/gpu.count",
                "nodetopo.io/ib.su",
                "nodetopo.io/nvlink.domain",
                "nodetopo.io/nvlink.fabric"
            ]
        );
        let whole = NodeFacts::from_labels(&labels, "nodetopo.io", Some("leaf"));
        assert_eq!(e.facts, whole);
        // A request Node with the same labels reuses the stored facts; one whose labels differ
        // only where the view does not read is the same node to it.
        assert!(v.same_labels(&e.labels, &labels));
        labels.insert("kubernetes.io/hostname".into(), "m".into());
        assert!(v.same_labels(&e.labels, &labels));
        labels.insert("nodetopo.io/nvlink.domain".into(), "u.1".into());
        assert!(!v.same_labels(&e.labels, &labels));
        let r = v.resolve("n", Some(&labels)).unwrap();
        assert_eq!(r.facts.clique_id, Some(1));
    }

    #[test]
    fn rdma_facts_from_labels_when_the_agent_reports_no_nics() {
        let mut v = ClusterView::new(cfg());
        v.apply(ViewEvent::Labels {
            node: "n".into(),
            labels: [
                ("nodetopo.io/rdma.link-layer", "infiniband"),
                ("nodetopo.io/rdma.ib-subnet", "fe80-0000-0000-0007"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        });
        v.apply(ViewEvent::Topology {
            node: "n".into(),
            topology: topo(1),
        });
        let r = v.resolve("n", None).unwrap();
        assert_eq!(r.freshness, Freshness::Live);
        assert_eq!(
            r.facts.link_layer,
            Some(crate::model::LinkLayer::Infiniband)
        );
        assert_eq!(r.facts.ib_subnets, vec!["fe80000000000007"]);
        assert_eq!(r.facts.gpu_count, 4);
    }
}
