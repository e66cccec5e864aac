//! What the policy knows about the pod being placed: its group, what it asks for, and where its
//! group's members and counterparts already run.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use super::Demand;
use crate::extender::{
    facts::NodeFacts,
    group::{GroupInfo, group_of},
    placed::PlacementIndex,
    view::ClusterView,
};

/// One placed pod whose node facts are known.
#[derive(Debug, Clone, Serialize)]
pub struct PeerFacts {
    /// `<namespace>/<name>`.
    pub pod: String,
    /// Its node.
    pub node: String,
    /// The node's facts.
    #[serde(skip)]
    pub facts: NodeFacts,
}

/// Everything the policy knows about the pod being placed.
#[derive(Debug, Clone, Serialize)]
pub struct PodContext {
    /// The pod's group, when it is in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupInfo>,
    /// The pod asks for GPUs (or is in a group).
    pub requires_gpu: bool,
    /// The pod itself requests a GPU resource.
    pub requests_gpu: bool,
    /// The pod needs RDMA (a multi-node group, or an RDMA resource).
    pub requires_rdma: bool,
    /// Placed members of the group (excluding this pod).
    pub members: Vec<PeerFacts>,
    /// Placed pods of the counterpart role.
    pub counterparts: Vec<PeerFacts>,
    /// Members still to place, this pod included; `None` when the group size is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
    /// GPUs the pod requests.
    pub gpus: u32,
    /// Where the group ran before it was left without placed members (a rolling replacement),
    /// when that node is still known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<PeerFacts>,
    /// Groups of the counterpart role with pods waiting to be bound and none placed, by group
    /// id: the room to leave near this group.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub counterpart_waiting: Vec<(String, Demand)>,
}

impl PodContext {
    /// True when the extender places this pod: it is in a group and requests GPUs. Every other
    /// pod passes every node unchanged.
    pub fn managed(&self) -> bool {
        self.group.is_some() && self.requests_gpu
    }

    /// The NVLink cluster that the group's placed members are on, when it is on MNNVL.
    pub fn mnnvl_cluster(&self) -> Option<&str> {
        self.members
            .iter()
            .find_map(|m| m.facts.clique_key().map(|(u, _)| u))
    }
}

fn resource_names(pod: &Pod) -> impl Iterator<Item = &str> {
    crate::extender::group::containers(pod)
        .filter_map(|c| c.resources.as_ref())
        .flat_map(|r| r.limits.iter().flatten().chain(r.requests.iter().flatten()))
        .map(|(k, _)| k.as_str())
}

/// Builds the pod's context from the placement index and the view. Members on nodes the view
/// cannot resolve are left out.
pub fn pod_context(
    pod: &Pod,
    view: &ClusterView,
    placements: &dyn PlacementIndex,
    request_labels: &crate::extender::wire::RequestLabels<'_>,
) -> PodContext {
    let group = group_of(pod);
    let me = crate::extender::group::pod_key(pod);
    let facts_of = |node: &str| {
        view.resolve(node, request_labels.get(node).copied())
            .map(|r| r.facts.into_owned())
    };
    let peers = |list: Vec<crate::extender::placed::PlacedPod>| -> Vec<PeerFacts> {
        list.into_iter()
            .filter(|p| Some(&p.pod) != me.as_ref())
            .filter_map(|p| {
                facts_of(&p.node).map(|facts| PeerFacts {
                    pod: p.pod,
                    node: p.node,
                    facts,
                })
            })
            .collect()
    };
    let (members, counterparts, placed) = match &group {
        Some(g) => {
            let all = placements.members(&g.group_id);
            let placed = all.iter().filter(|p| Some(&p.pod) != me.as_ref()).count();
            let counterparts = g
                .role
                .map(|r| peers(placements.with_role(&g.deployment, r.counterpart())))
                .unwrap_or_default();
            (peers(all), counterparts, placed)
        }
        None => (Vec::new(), Vec::new(), 0),
    };
    let counterpart_waiting = group
        .as_ref()
        .and_then(|g| Some((g, g.role?)))
        .map(|(g, r)| waiting_groups(placements, &g.deployment, r.counterpart()))
        .unwrap_or_default();
    let remaining = group.as_ref().and_then(|g| g.size).map(|s| {
        s.saturating_sub(u32::try_from(placed).unwrap_or(u32::MAX))
            .max(1)
    });
    let gpu_resource = resource_names(pod).any(|k| k.contains("gpu"));
    let rdma_resource = resource_names(pod).any(|k| k.starts_with("rdma/") || k.contains("hca"));
    PodContext {
        requires_gpu: gpu_resource || group.is_some(),
        requests_gpu: gpu_resource,
        requires_rdma: rdma_resource || group.as_ref().and_then(|g| g.size).unwrap_or(1) > 1,
        members,
        counterparts,
        remaining,
        gpus: crate::extender::placed::gpu_request(pod),
        previous: group
            .as_ref()
            .filter(|_| placed == 0)
            .and_then(|g| placements.last_node(&g.group_id))
            .and_then(|node| {
                facts_of(&node).map(|facts| PeerFacts {
                    pod: String::new(),
                    node,
                    facts,
                })
            }),
        counterpart_waiting,
        group,
    }
}

/// The groups of `deployment`'s `role` that wait with no member placed, and what each still
/// needs: its size when known (else its waiting pods), at the largest GPU request among them.
fn waiting_groups(
    placements: &dyn PlacementIndex,
    deployment: &str,
    role: crate::extender::group::Role,
) -> Vec<(String, Demand)> {
    let mut by_group: BTreeMap<String, (u32, u32, Option<u32>)> = BTreeMap::new();
    for w in placements.waiting_with_role(deployment, role) {
        let e = by_group
            .entry(w.group.group_id.clone())
            .or_insert((0, 0, w.group.size));
        e.0 += 1;
        e.1 = e.1.max(w.gpus);
    }
    by_group
        .into_iter()
        .filter(|(g, _)| placements.members(g).is_empty())
        .map(|(g, (count, gpus, size))| {
            let pods = size.unwrap_or(count).max(count);
            (
                g,
                Demand {
                    pods,
                    gpus_per_pod: gpus,
                },
            )
        })
        .collect()
}
