//! The hard rules: whether a node can take the pod at all, and why not.

use super::{PeerFacts, PodContext};
use crate::model::FabricState;
use crate::{extender::facts::NodeFacts, model::LinkLayer};

/// Why a node is rejected. Rendered only when the reason is sent (filter, explain), so that
/// scoring thousands of nodes does not format thousands of strings.
#[derive(Debug, Clone, Copy)]
pub enum Reject<'a> {
    /// Nothing is known about the node.
    NoTopology,
    /// The node has no GPUs.
    NoGpus,
    /// The node has no active RDMA port.
    NoRdma,
    /// Another link layer than a placed member's.
    LinkLayer {
        /// The node's.
        have: crate::model::LinkLayer,
        /// The member's.
        member: &'a PeerFacts,
    },
    /// No RDMA while the group uses RDMA.
    NoRdmaForGroup {
        /// The member.
        member: &'a PeerFacts,
    },
    /// No shared IB subnet with a placed member.
    Subnet {
        /// The node's subnets.
        have: &'a [String],
        /// The member.
        member: &'a PeerFacts,
    },
    /// Fabric not usable for an MNNVL group.
    Fabric(FabricState),
    /// Outside the group's NVLink cluster.
    OutsideCluster {
        /// The group's cluster.
        cluster: &'a str,
        /// The node's.
        node: Option<&'a str>,
    },
}

impl std::fmt::Display for Reject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::NoTopology => f.write_str(
                "no topology for this node: no agent data and no nodetopo labels (is the agent running?)",
            ),
            Reject::NoGpus => f.write_str("node reports no GPUs"),
            Reject::NoRdma => f.write_str("node has no active RDMA port"),
            Reject::LinkLayer { have, member } => write!(
                f,
                "RDMA link layer {} differs from the group's {} (pod {} on {})",
                <&str>::from(*have),
                <&str>::from(member.facts.link_layer.unwrap_or(LinkLayer::Unknown)),
                member.pod,
                member.node
            ),
            Reject::NoRdmaForGroup { member } => write!(
                f,
                "no active RDMA port; the group uses {} (pod {} on {})",
                <&str>::from(member.facts.link_layer.unwrap_or(LinkLayer::Unknown)),
                member.pod,
                member.node
            ),
            Reject::Subnet { have, member } => write!(
                f,
                "InfiniBand subnet {:?} differs from the group's {:?} (pod {} on {})",
                have, member.facts.ib_subnets, member.pod, member.node
            ),
            Reject::Fabric(state) => write!(
                f,
                "NVLink fabric is {} and the group is on multi-node NVLink",
                state.as_str()
            ),
            Reject::OutsideCluster { cluster, node } => write!(
                f,
                "outside the group's NVLink cluster {cluster} (node: {})",
                node.unwrap_or("none")
            ),
        }
    }
}

/// The hard rules for one node: `Err(reason)` rejects it.
pub fn filter_node<'a>(ctx: &'a PodContext, node: Option<&'a NodeFacts>) -> Result<(), Reject<'a>> {
    let Some(f) = node else {
        return Err(Reject::NoTopology);
    };
    if ctx.requires_gpu && f.gpu_count == 0 {
        return Err(Reject::NoGpus);
    }
    if ctx.requires_rdma && f.link_layer.is_none() {
        return Err(Reject::NoRdma);
    }
    for m in &ctx.members {
        let Some(want) = m.facts.link_layer else {
            continue;
        };
        match f.link_layer {
            Some(have) if have != want => return Err(Reject::LinkLayer { have, member: m }),
            None => return Err(Reject::NoRdmaForGroup { member: m }),
            _ => {}
        }
        if !f.rdma_compatible(&m.facts) {
            return Err(Reject::Subnet {
                have: &f.ib_subnets,
                member: m,
            });
        }
    }
    if let Some(cluster) = ctx.mnnvl_cluster() {
        if matches!(
            f.fabric_state,
            FabricState::Pending | FabricState::Degraded | FabricState::Inconsistent
        ) {
            return Err(Reject::Fabric(f.fabric_state));
        }
        if f.cluster_uuid.as_deref() != Some(cluster) {
            return Err(Reject::OutsideCluster {
                cluster,
                node: f.cluster_uuid.as_deref(),
            });
        }
    }
    Ok(())
}
