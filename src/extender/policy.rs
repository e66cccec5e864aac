//! Placement policy: pure functions from the cluster view, the placed pods and one pod to a
//! filter verdict and a 0..=10 score per candidate node, each with its explanation.
//!
//! Hard rules (filter) keep a group on one RDMA fabric and, once it is on multi-node NVLink,
//! inside one healthy NVLink cluster. Soft rules (prioritize) rank nodes by how close they are to
//! the group's placed members (clique > cluster > leaf/block > fabric), then to the
//! counterpart role (prefill ↔ decode), then by whether their domain can still hold the rest of
//! the group.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

pub use super::domain::{DOMAIN_LEVELS, Domain, DomainId, DomainKeys, Level, domain_key};
use super::{
    domain::link_layer_name,
    facts::NodeFacts,
    group::{GroupInfo, group_of},
    placed::PlacementIndex,
    view::{ClusterView, Freshness},
    wire::MAX_EXTENDER_PRIORITY,
};
use crate::model::FabricState;

/// Weights of the score terms and the value of each proximity level. Only the ratios matter:
/// the weighted sum is scaled to 0..=10.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    /// Closeness to the group's placed members.
    pub within_group: f64,
    /// Closeness to the counterpart role of the same deployment; must not exceed
    /// `within_group`.
    pub counterpart: f64,
    /// Whether the node's domain can hold the rest of the group.
    pub capacity: f64,
    /// Value of the same clique, in 0..=1.
    pub level_clique: f64,
    /// Value of the same NVLink cluster.
    pub level_cluster: f64,
    /// Value of the same leaf switch or scalable unit.
    pub level_leaf: f64,
    /// Value of the same leaf/block.
    pub level_block: f64,
    /// Value of the same RDMA fabric.
    pub level_fabric: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            within_group: 6.0,
            counterpart: 2.0,
            capacity: 2.0,
            level_clique: 1.0,
            level_cluster: 0.75,
            level_leaf: 0.6,
            level_block: 0.5,
            level_fabric: 0.25,
        }
    }
}

/// Invalid weights.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum WeightsError {
    /// A weight is negative or not finite.
    #[error("weight {name} = {value} must be a finite number >= 0")]
    Negative {
        /// Field name.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// A level value is outside 0..=1.
    #[error("level value {name} = {value} must be within 0..=1")]
    LevelRange {
        /// Field name.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// Levels must not rank a farther level above a closer one.
    #[error(
        "level values must not increase with distance (clique >= cluster >= leaf >= block >= fabric)"
    )]
    LevelOrder,
    /// The counterpart term is larger than the within-group term.
    #[error("counterpart weight {counterpart} must not exceed within_group weight {within_group}")]
    CounterpartTooLarge {
        /// Counterpart weight.
        counterpart: f64,
        /// Within-group weight.
        within_group: f64,
    },
    /// All weights are zero.
    #[error("at least one of within_group, counterpart, capacity must be > 0")]
    AllZero,
}

impl Weights {
    /// Checks the weights.
    pub fn validate(&self) -> Result<(), WeightsError> {
        for (name, value) in [
            ("within_group", self.within_group),
            ("counterpart", self.counterpart),
            ("capacity", self.capacity),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(WeightsError::Negative { name, value });
            }
        }
        for (name, value) in [
            ("level_clique", self.level_clique),
            ("level_cluster", self.level_cluster),
            ("level_leaf", self.level_leaf),
            ("level_block", self.level_block),
            ("level_fabric", self.level_fabric),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(WeightsError::LevelRange { name, value });
            }
        }
        if !(self.level_clique >= self.level_cluster
            && self.level_cluster >= self.level_leaf
            && self.level_leaf >= self.level_block
            && self.level_block >= self.level_fabric)
        {
            return Err(WeightsError::LevelOrder);
        }
        if self.counterpart > self.within_group {
            return Err(WeightsError::CounterpartTooLarge {
                counterpart: self.counterpart,
                within_group: self.within_group,
            });
        }
        if self.within_group + self.counterpart + self.capacity <= 0.0 {
            return Err(WeightsError::AllZero);
        }
        Ok(())
    }

    /// The value of a level.
    pub fn level_value(&self, l: Level) -> f64 {
        match l {
            Level::Clique => self.level_clique,
            Level::Cluster => self.level_cluster,
            Level::Leaf => self.level_leaf,
            Level::Block => self.level_block,
            Level::Fabric => self.level_fabric,
            Level::None => 0.0,
        }
    }
}

/// How close `a` is to `b`.
pub fn proximity(a: &NodeFacts, b: &NodeFacts) -> Level {
    if a.clique_key().is_some() && a.clique_key() == b.clique_key() {
        return Level::Clique;
    }
    if a.cluster_uuid.is_some() && a.cluster_uuid == b.cluster_uuid {
        return Level::Cluster;
    }
    let rdma = a.rdma_compatible(b);
    let rdma_unknown = a.link_layer.is_none() || b.link_layer.is_none();
    if a.leaf.is_some() && a.leaf == b.leaf && (rdma || rdma_unknown) {
        return Level::Leaf;
    }
    if a.block.is_some() && a.block == b.block && (rdma || rdma_unknown) {
        return Level::Block;
    }
    if rdma { Level::Fabric } else { Level::None }
}

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
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
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
    request_labels: &super::wire::RequestLabels<'_>,
) -> PodContext {
    let group = group_of(pod);
    let me = super::group::pod_key(pod);
    let facts_of = |node: &str| {
        view.resolve(node, request_labels.get(node).copied())
            .map(|r| r.facts.into_owned())
    };
    let peers = |list: Vec<super::placed::PlacedPod>| -> Vec<PeerFacts> {
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
        gpus: super::placed::gpu_request(pod),
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
    role: super::group::Role,
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
                link_layer_name(*have),
                member.facts.link_layer.map_or("unknown", link_layer_name),
                member.pod,
                member.node
            ),
            Reject::NoRdmaForGroup { member } => write!(
                f,
                "no active RDMA port; the group uses {} (pod {} on {})",
                member.facts.link_layer.map_or("unknown", link_layer_name),
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

/// One candidate, as the policy sees it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Node name.
    pub name: &'a str,
    /// Facts, when known.
    pub facts: Option<&'a NodeFacts>,
    /// Their freshness.
    pub freshness: Option<Freshness>,
    /// GPUs the node already gives to placed group pods.
    pub used_gpus: u32,
    /// Its domain keys ([`DomainKeys::of`] its facts; the view keeps them with the facts).
    pub keys: DomainKeys,
}

impl<'a> Candidate<'a> {
    /// A candidate whose domain keys are computed from `facts` now.
    pub fn new(
        name: &'a str,
        facts: Option<&'a NodeFacts>,
        freshness: Option<Freshness>,
        used_gpus: u32,
    ) -> Self {
        Self {
            name,
            facts,
            freshness,
            used_gpus,
            keys: facts.map(DomainKeys::of).unwrap_or_default(),
        }
    }
}

/// The score of one node and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreBreakdown {
    /// Node name.
    pub node: String,
    /// Final score, 0..=10.
    pub score: i64,
    /// Within-group term, 0..=1 (mean level value to the placed members).
    pub within_group: f64,
    /// Counterpart term, 0..=1 (best level value to a counterpart pod).
    pub counterpart: f64,
    /// Capacity term, 0..=1.
    pub capacity: f64,
    /// Closest level to any placed member.
    pub nearest_member: Level,
    /// The domain level that can hold the rest of the group, if any.
    pub capacity_level: Level,
    /// Freshness of the facts used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
    /// Why the node scored 0 without being scored, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Where a group's next member must go, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "from", rename_all = "kebab-case")]
pub enum GroupDomain {
    /// The tightest domain holding every placed member that still has a candidate node.
    Members {
        /// The domain.
        domain: Domain,
    },
    /// Reserved for the group when its first member was placed (the member is not yet visible
    /// in the pod watch).
    Reserved {
        /// The domain.
        domain: Domain,
    },
    /// Where the group ran before it was replaced as a whole (a rolling update), or the
    /// domain of its placed members, while pods it replaced there still hold part of it in
    /// kube-scheduler's view: the pod waits for them to leave rather than moving the group.
    Returning {
        /// The domain.
        domain: Domain,
    },
    /// Chosen now, for the group's first member ([`choose_domain`]): inside the tightest
    /// domain that holds the group with its counterpart role, the tightest domain that holds
    /// the group, leaving the counterpart its tightest fit.
    Chosen {
        /// The domain.
        domain: Domain,
        /// Pods of the group its candidates can take, less the room held for other groups.
        room: u32,
        /// Its closeness to the counterpart role's placed pods.
        counterpart: Level,
    },
}

impl GroupDomain {
    /// The domain.
    pub fn domain(&self) -> &Domain {
        match self {
            Self::Members { domain }
            | Self::Reserved { domain }
            | Self::Returning { domain }
            | Self::Chosen { domain, .. } => domain,
        }
    }
}

/// A domain held for another group that still has `remaining` members to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The domain.
    pub domain: Domain,
    /// Members still to place there.
    pub remaining: u32,
    /// GPUs per member.
    pub gpus_per_pod: u32,
}

/// The domains that hold every placed member, tightest first.
pub fn members_domains(members: &[PeerFacts]) -> Vec<Domain> {
    let Some(first) = members.first() else {
        return Vec::new();
    };
    DOMAIN_LEVELS
        .iter()
        .filter_map(|&level| {
            let key = domain_key(&first.facts, level)?;
            members[1..]
                .iter()
                .all(|m| domain_key(&m.facts, level).as_deref() == Some(key.as_str()))
                .then_some(Domain { level, key })
        })
        .collect()
}

/// Scores every candidate (in input order). Candidates without facts score 0.
pub fn score_nodes(
    ctx: &PodContext,
    candidates: &[Candidate<'_>],
    w: &Weights,
) -> Vec<ScoreBreakdown> {
    let counts = if ctx.remaining.is_some() {
        domain_counts(candidates, ctx.gpus)
    } else {
        HashMap::new()
    };
    // Only the terms that apply to this pod count, so that the first pod of a group (no
    // members yet) still spreads its scores over 0..=10.
    let active = |on: bool, weight: f64| if on { weight } else { 0.0 };
    let total = active(!ctx.members.is_empty(), w.within_group)
        + active(!ctx.counterparts.is_empty(), w.counterpart)
        + active(ctx.remaining.is_some(), w.capacity);
    candidates
        .iter()
        .map(|c| match c.facts {
            Some(f) => score_node(ctx, c, f, &counts, w, total),
            None => ScoreBreakdown {
                node: c.name.to_string(),
                score: 0,
                within_group: 0.0,
                counterpart: 0.0,
                capacity: 0.0,
                nearest_member: Level::None,
                capacity_level: Level::None,
                freshness: c.freshness,
                note: Some("no topology facts".into()),
            },
        })
        .collect()
}

/// Capacity: per domain at each level, the pods of `gpus` GPUs its candidates can still take
/// (each candidate at least one: kube-scheduler passed it).
fn domain_counts(candidates: &[Candidate<'_>], gpus: u32) -> HashMap<DomainId, u32> {
    let mut counts: HashMap<DomainId, u32> = HashMap::new();
    for c in candidates {
        let Some(f) = c.facts else { continue };
        let free = f.gpu_count.saturating_sub(c.used_gpus);
        let slots = free.checked_div(gpus).unwrap_or(1).max(1);
        for id in c.keys.slots().into_iter().flatten() {
            let e = counts.entry(id).or_default();
            *e = e.saturating_add(slots);
        }
    }
    counts
}

/// The tightest level at which a node's domain (`keys`) still has room for the group's
/// remaining pods.
fn capacity_level(keys: &DomainKeys, remaining: u32, counts: &HashMap<DomainId, u32>) -> Level {
    DOMAIN_LEVELS
        .iter()
        .enumerate()
        .find_map(|(slot, lvl)| {
            let n = counts.get(&keys.at(slot)?).copied().unwrap_or(0);
            (n >= remaining).then_some(*lvl)
        })
        .unwrap_or(Level::None)
}

/// One candidate's score from its facts.
fn score_node(
    ctx: &PodContext,
    c: &Candidate<'_>,
    f: &NodeFacts,
    counts: &HashMap<DomainId, u32>,
    w: &Weights,
    total: f64,
) -> ScoreBreakdown {
    let levels: Vec<Level> = ctx.members.iter().map(|m| proximity(f, &m.facts)).collect();
    let within = if levels.is_empty() {
        0.0
    } else {
        levels.iter().map(|l| w.level_value(*l)).sum::<f64>() / levels.len() as f64
    };
    let nearest_member = levels.iter().copied().max().unwrap_or(Level::None);
    let counterpart = ctx
        .counterparts
        .iter()
        .map(|p| w.level_value(proximity(f, &p.facts)))
        .fold(0.0, f64::max);
    let capacity_level = ctx
        .remaining
        .map_or(Level::None, |rem| capacity_level(&c.keys, rem, counts));
    let capacity = w.level_value(capacity_level);
    let raw = if total > 0.0 {
        (w.within_group * within + w.counterpart * counterpart + w.capacity * capacity) / total
    } else {
        0.0
    };
    let score = (raw * MAX_EXTENDER_PRIORITY as f64).round();
    let score = if score.is_finite() {
        (score as i64).clamp(0, MAX_EXTENDER_PRIORITY)
    } else {
        0
    };
    ScoreBreakdown {
        node: c.name.to_string(),
        score,
        within_group: within,
        counterpart,
        capacity,
        nearest_member,
        capacity_level,
        freshness: c.freshness,
        note: None,
    }
}

mod room;
pub use room::{Counterpart, Demand, choose_domain};

#[cfg(test)]
mod tests;
