//! The few facts about a node that placement needs, read from a [`NodeTopology`] or, as a
//! fallback, from the node labels that the agent publishes.
//!
//! The policy never looks at a whole topology: extracting these facts once per update keeps a
//! request over thousands of nodes cheap, and lets topology and labels feed one shape.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    labels::{Key, LinkLayerValue},
    model::{FabricState, LinkLayer, NodeTopology, PortState, is_default_subnet_prefix},
};

/// The agent's labels (under the label prefix) that [`NodeFacts::from_labels`] reads; the view
/// keeps no other label of a node but the block label.
pub const LABEL_KEYS: [Key; 10] = [
    Key::GpuCount,
    Key::NvlinkFabric,
    Key::NvlinkCluster,
    Key::NvlinkDomain,
    Key::RdmaLinkLayer,
    Key::RdmaIbSubnet,
    Key::IbSu,
    Key::IbLeaf,
    Key::RoceLeaf,
    Key::IbBlock,
];

/// The placement facts of one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct NodeFacts {
    /// Number of GPUs on the node: from the topology, else the GPU count label (0 when absent).
    pub gpu_count: u32,
    /// The node's multi-node NVLink state; [`FabricState::Unknown`] when not known.
    pub fabric_state: FabricState,
    /// The NVLink cluster (ClusterUUID), lowercase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_uuid: Option<String>,
    /// The clique id inside the cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clique_id: Option<u32>,
    /// The RDMA link layer used for GPU traffic; `None` without an active RDMA port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_layer: Option<LinkLayer>,
    /// Normalised InfiniBand subnet prefixes (hex digits only), sorted and distinct.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ib_subnets: Vec<String>,
    /// The leaf level: the InfiniBand scalable unit (`ib.su`: the same set of leaves, one hop
    /// apart on every rail) or else the RoCE leaf (`roce.leaf`), tagged with its fabric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
    /// The block level: the operator's leaf/block label (`--block-label`) when the node has
    /// it, else the InfiniBand spine block (`ib.block`, tagged `ib:`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<String>,
}

/// The leaf-level key from the node's `ib.su` (or `ib.leaf`) and `roce.leaf`.
fn leaf_key(ib_su: Option<&str>, ib_leaf: Option<&str>, roce_leaf: Option<&str>) -> Option<String> {
    ib_su
        .map(|s| format!("ib-su:{s}"))
        .or_else(|| ib_leaf.map(|l| format!("ib-leaf:{l}")))
        .or_else(|| roce_leaf.map(|l| format!("roce-leaf:{l}")))
}

/// The spine block key from `ib.block`.
fn spine_block(b: Option<&str>) -> Option<String> {
    b.filter(|b| !b.is_empty()).map(|b| format!("ib:{b}"))
}

/// Keeps only the hex digits of a subnet prefix, lowercase, so that `fe80:0000:…` and the label
/// form `fe80-0000-…` compare equal.
pub fn normalize_subnet(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl NodeFacts {
    /// Facts from an agent's topology. `block` comes from the node's labels (the operator's
    /// block label); without it the topology's spine block is used.
    pub fn from_topology(t: &NodeTopology, block: Option<String>) -> Self {
        let net = &t.network;
        let leaf = leaf_key(
            net.infiniband.su.as_deref(),
            net.infiniband.leaf.as_deref(),
            net.roce.leaf.as_deref(),
        );
        let block = block.or_else(|| spine_block(net.infiniband.block.as_deref()));
        let mut ib = 0usize;
        let mut eth = 0usize;
        let mut subnets: Vec<String> = Vec::new();
        // Prefer the rail-paired NICs (the GPU traffic path) when the pairing names any.
        let rail: Vec<&str> = t
            .rail_pairing
            .pairs
            .iter()
            .map(|p| p.nic.as_str())
            .collect();
        let use_rail = t.nics.iter().any(|n| rail.contains(&n.name.as_str()));
        for nic in &t.nics {
            if use_rail && !rail.contains(&nic.name.as_str()) {
                continue;
            }
            for p in &nic.ports {
                if !matches!(p.state, PortState::Active | PortState::ActiveDefer) {
                    continue;
                }
                match p.link_layer {
                    LinkLayer::Infiniband => {
                        ib += 1;
                        // The default prefix names no subnet: treated as unknown.
                        if let Some(s) = p.ib_subnet() {
                            subnets.push(normalize_subnet(s));
                        }
                    }
                    LinkLayer::Ethernet => eth += 1,
                    LinkLayer::Unknown => {}
                }
            }
        }
        subnets.sort();
        subnets.dedup();
        let link_layer = match (ib, eth) {
            (0, 0) => None,
            (i, e) if i >= e => Some(LinkLayer::Infiniband),
            _ => Some(LinkLayer::Ethernet),
        };
        if link_layer != Some(LinkLayer::Infiniband) {
            subnets.clear();
        }
        let f = &t.fabric;
        Self {
            gpu_count: u32::try_from(t.gpus.len()).unwrap_or(u32::MAX),
            fabric_state: f.state,
            cluster_uuid: f
                .cluster_uuid
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(str::to_ascii_lowercase),
            clique_id: f.clique_id,
            link_layer,
            ib_subnets: subnets,
            leaf,
            block,
        }
    }

    /// Facts from node labels under `prefix` (e.g. `nodetopo.io`); `None` when the node carries
    /// none of the agent's labels.
    pub fn from_labels(
        labels: &BTreeMap<String, String>,
        prefix: &str,
        block_label: Option<&str>,
    ) -> Option<Self> {
        let get = |k: Key| labels.get(&k.under(prefix)).map(String::as_str);
        let any = [
            Key::GpuCount,
            Key::NvlinkFabric,
            Key::NvlinkCluster,
            Key::NvlinkDomain,
            Key::RdmaLinkLayer,
        ]
        .into_iter()
        .any(|k| get(k).is_some());
        if !any {
            return None;
        }
        let fabric_state = get(Key::NvlinkFabric)
            .and_then(|v| v.parse().ok())
            .unwrap_or(FabricState::Unknown);
        // `nvlink.domain` is `<uuid>.<clique>`; `nvlink.cluster` wins for the cluster.
        let (dom_uuid, clique_id) = match get(Key::NvlinkDomain).and_then(|d| d.rsplit_once('.')) {
            Some((u, c)) => (Some(u.to_ascii_lowercase()), c.parse::<u32>().ok()),
            None => (None, None),
        };
        let cluster_uuid = get(Key::NvlinkCluster)
            .map(str::to_ascii_lowercase)
            .or(dom_uuid)
            .filter(|s| !s.is_empty());
        let link_layer = get(Key::RdmaLinkLayer)
            .and_then(|v| v.parse::<LinkLayerValue>().ok())
            .map(LinkLayerValue::gpu_link_layer);
        // An agent before the default prefix was left out writes `fe80-0000-0000-0000`, which
        // names no subnet: read as unknown.
        let ib_subnets = match (link_layer, get(Key::RdmaIbSubnet)) {
            (Some(LinkLayer::Infiniband), Some(s)) if !is_default_subnet_prefix(s) => {
                vec![normalize_subnet(s)]
            }
            _ => Vec::new(),
        };
        Some(Self {
            gpu_count: get(Key::GpuCount).and_then(|c| c.parse().ok()).unwrap_or(0),
            fabric_state,
            cluster_uuid,
            clique_id,
            link_layer,
            ib_subnets,
            leaf: leaf_key(get(Key::IbSu), get(Key::IbLeaf), get(Key::RoceLeaf)),
            block: block_from(labels, block_label).or_else(|| spine_block(get(Key::IbBlock))),
        })
    }

    /// True when both nodes can reach each other over RDMA: the same link layer and, for
    /// InfiniBand, a shared subnet (nodes whose subnet is unknown are given the benefit).
    pub fn rdma_compatible(&self, other: &NodeFacts) -> bool {
        match (self.link_layer, other.link_layer) {
            (Some(a), Some(b)) if a == b => {
                a != LinkLayer::Infiniband
                    || self.ib_subnets.is_empty()
                    || other.ib_subnets.is_empty()
                    || self.ib_subnets.iter().any(|s| other.ib_subnets.contains(s))
            }
            _ => false,
        }
    }

    /// The NVLink clique key `<cluster>.<clique>`, only when the fabric is ready.
    pub fn clique_key(&self) -> Option<(&str, u32)> {
        match (&self.cluster_uuid, self.clique_id, self.fabric_state) {
            (Some(u), Some(c), FabricState::Ready) => Some((u.as_str(), c)),
            _ => None,
        }
    }
}

/// The block label's value on a node, when the label is configured and present.
pub fn block_from(labels: &BTreeMap<String, String>, block_label: Option<&str>) -> Option<String> {
    block_label
        .and_then(|k| labels.get(k))
        .filter(|v| !v.is_empty())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Fabric, Gpu, Nic, NicPort, RailPair};

    /// Facts from every label the agent may write equal facts from [`LABEL_KEYS`] alone, so that
    /// the view loses nothing by keeping only those.
    #[test]
    fn label_keys_are_every_label_facts_read() {
        let value = |k: Key| match k {
            Key::GpuCount => "4",
            Key::NvlinkFabric => "ready",
            Key::NvlinkCluster => "4F1C2D3E-5A6B-47C8-A9D0-E1F2A3B4C5D6",
            Key::NvlinkDomain => "4f1c2d3e-5a6b-47c8-a9d0-e1f2a3b4c5d6.2",
            Key::RdmaLinkLayer => "infiniband",
            Key::RdmaIbSubnet => "fe80-0000-0000-0007",
            Key::IbSu => "3f2a1b9c0d",
            Key::IbLeaf => "0x0002c90300a1b2c3",
            Key::RoceLeaf => "aa-bb-cc-dd-ee-01",
            Key::IbBlock => "9179073e9a",
            _ => "1",
        };
        let all: BTreeMap<String, String> = Key::all()
            .map(|k| (k.under("nodetopo.io"), value(k).to_string()))
            .collect();
        let kept: BTreeMap<String, String> = LABEL_KEYS
            .iter()
            .map(|k| (k.under("nodetopo.io"), value(*k).to_string()))
            .collect();
        assert!(all.len() > kept.len());
        let facts = NodeFacts::from_labels(&all, "nodetopo.io", None);
        assert!(
            facts
                .as_ref()
                .is_some_and(|f| f.leaf.is_some() && f.block.is_some())
        );
        assert_eq!(facts, NodeFacts::from_labels(&kept, "nodetopo.io", None));
    }

    fn port(ll: LinkLayer, subnet: &str) -> NicPort {
        NicPort {
            port: 1,
            state: PortState::Active,
            link_layer: ll,
            subnet_prefix: subnet.into(),
            ..Default::default()
        }
    }

    #[test]
    fn topology_facts_prefer_rail_nics() {
        let t = NodeTopology {
            gpus: vec![Gpu::default(); 4],
            fabric: Fabric {
                state: FabricState::Ready,
                cluster_uuid: Some("ABC".into()),
                clique_id: Some(3),
                ..Default::default()
            },
            nics: vec![
                Nic {
                    name: "mlx5_0".into(),
                    ports: vec![port(LinkLayer::Infiniband, "fe80:0000:0000:0001")],
                    ..Default::default()
                },
                Nic {
                    name: "mlx5_1".into(),
                    ports: vec![port(LinkLayer::Ethernet, ""), port(LinkLayer::Ethernet, "")],
                    ..Default::default()
                },
            ],
            rail_pairing: crate::model::RailPairing {
                rail_aligned: true,
                pairs: vec![RailPair {
                    gpu: 0,
                    nic: "mlx5_0".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let f = NodeFacts::from_topology(&t, Some("leaf-1".into()));
        assert_eq!(f.gpu_count, 4);
        assert_eq!(f.link_layer, Some(LinkLayer::Infiniband));
        assert_eq!(f.ib_subnets, vec!["fe80000000000001"]);
        assert_eq!(f.cluster_uuid.as_deref(), Some("abc"));
        assert_eq!(f.clique_key(), Some(("abc", 3)));
        assert_eq!(f.block.as_deref(), Some("leaf-1"));
    }

    /// The default prefix names no subnet: from a topology or a label (an older agent writes
    /// it), it is unknown, so two nodes on unrelated fabrics that both keep it are not taken to
    /// share a subnet, and a node on a configured subnet is not kept apart from them.
    #[test]
    fn the_default_subnet_prefix_is_no_subnet() {
        let t = NodeTopology {
            nics: vec![Nic {
                name: "mlx5_0".into(),
                ports: vec![port(LinkLayer::Infiniband, "fe80:0000:0000:0000")],
                ..Default::default()
            }],
            ..Default::default()
        };
        let from_topo = NodeFacts::from_topology(&t, None);
        assert_eq!(from_topo.link_layer, Some(LinkLayer::Infiniband));
        assert!(from_topo.ib_subnets.is_empty(), "{from_topo:?}");
        let labels = |subnet: &str| -> BTreeMap<String, String> {
            [
                ("nodetopo.io/gpu.count", "4"),
                ("nodetopo.io/rdma.link-layer", "infiniband"),
                ("nodetopo.io/rdma.ib-subnet", subnet),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        };
        let old_agent =
            NodeFacts::from_labels(&labels("fe80-0000-0000-0000"), "nodetopo.io", None).unwrap();
        assert!(old_agent.ib_subnets.is_empty(), "{old_agent:?}");
        let configured =
            NodeFacts::from_labels(&labels("fe80-0000-0000-0007"), "nodetopo.io", None).unwrap();
        assert_eq!(configured.ib_subnets, vec!["fe80000000000007"]);
        assert!(old_agent.rdma_compatible(&configured));
        assert!(from_topo.rdma_compatible(&configured));
    }

    #[test]
    fn label_facts_round_trip() {
        let labels: BTreeMap<String, String> = [
            ("nodetopo.io/gpu.count", "4"),
            ("nodetopo.io/nvlink.fabric", "ready"),
            ("nodetopo.io/nvlink.domain", "abc-def.7"),
            ("nodetopo.io/rdma.link-layer", "infiniband"),
            ("nodetopo.io/rdma.ib-subnet", "fe80-0000-0000-0001"),
            ("leaf", "b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let f = NodeFacts::from_labels(&labels, "nodetopo.io", Some("leaf")).unwrap();
        assert_eq!(f.gpu_count, 4);
        assert_eq!(f.clique_key(), Some(("abc-def", 7)));
        assert_eq!(f.ib_subnets, vec!["fe80000000000001"]);
        assert_eq!(f.block.as_deref(), Some("b"));
        assert!(NodeFacts::from_labels(&BTreeMap::new(), "nodetopo.io", None).is_none());
    }

    #[test]
    fn fabric_placement_gives_leaf_and_block() {
        let mut t = NodeTopology::default();
        t.network.infiniband = crate::model::FabricPlacement {
            leaf: Some("0x0000000000200001".into()),
            su: Some("abc".into()),
            block: Some("def".into()),
            reason: String::new(),
            ..Default::default()
        };
        let f = NodeFacts::from_topology(&t, None);
        assert_eq!(f.leaf.as_deref(), Some("ib-su:abc"));
        assert_eq!(f.block.as_deref(), Some("ib:def"));
        // The operator's block label wins over the spine block.
        let f = NodeFacts::from_topology(&t, Some("row-3".into()));
        assert_eq!(f.block.as_deref(), Some("row-3"));
        let mut roce = NodeTopology::default();
        roce.network.roce.leaf = Some("aa-bb".into());
        assert_eq!(
            NodeFacts::from_topology(&roce, None).leaf.as_deref(),
            Some("roce-leaf:aa-bb")
        );

        let labels: BTreeMap<String, String> = [
            ("nodetopo.io/gpu.count", "8"),
            ("nodetopo.io/ib.su", "abc"),
            ("nodetopo.io/ib.block", "def"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let l = NodeFacts::from_labels(&labels, "nodetopo.io", Some("leaf")).unwrap();
        assert_eq!(l.leaf, f_leaf("ib-su:abc"));
        assert_eq!(l.block.as_deref(), Some("ib:def"));
    }

    fn f_leaf(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn rdma_compatibility() {
        let ib = |s: &str| NodeFacts {
            link_layer: Some(LinkLayer::Infiniband),
            ib_subnets: vec![s.into()],
            ..Default::default()
        };
        let roce = NodeFacts {
            link_layer: Some(LinkLayer::Ethernet),
            ..Default::default()
        };
        assert!(ib("a").rdma_compatible(&ib("a")));
        assert!(!ib("a").rdma_compatible(&ib("b")));
        assert!(!ib("a").rdma_compatible(&roce));
        assert!(roce.rdma_compatible(&roce));
        assert!(!NodeFacts::default().rdma_compatible(&roce));
    }
}
