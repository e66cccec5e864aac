//! The scheduler extender: kube-scheduler asks it to filter and score nodes for a pod, and it
//! answers from the agents' topology.
//!
//! Data flow: sources ([`source`]) send [`view::ViewEvent`]s into the [`view::ClusterView`];
//! pod events feed the [`placed::PlacementIndex`]; for each request, [`Extender`] resolves
//! the candidates and calls the pure [`policy`]; [`server`] speaks the HTTP wire format
//! ([`wire`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;

pub mod cluster;
pub mod domain;
pub mod facts;
pub mod group;
pub mod grpc;
pub mod page;
pub mod placed;
pub mod policy;
mod run;
pub mod server;
pub mod source;
pub mod view;
pub mod wire;

pub use run::{ExtenderConfig, RunError, run};

use placed::PlacementIndex;
use policy::{Candidate, Domain, GroupDomain, Held, PodContext, ScoreBreakdown, Weights};
use view::SharedView;
use wire::{ExtenderFilterResult, ExtenderRequest, HostPriority, HostPriorityList};

/// How long a group's domain stays reserved after its first member passed the filter, unless
/// every member has passed before.
pub const RESERVATION_TTL: Duration = Duration::from_secs(600);

/// Domains reserved for groups when their first member passed the filter. kube-scheduler binds
/// asynchronously and places the next member at once, before the pod watch shows the first: the
/// reservation keeps that member in the same domain, and keeps other groups from counting the
/// room as free. A reservation holds room for the members that have not passed the filter yet,
/// and ends when all have, or after [`RESERVATION_TTL`].
#[derive(Debug, Default)]
pub struct Reservations(Mutex<HashMap<String, Reservation>>);

#[derive(Debug, Clone)]
struct Reservation {
    domain: Domain,
    size: u32,
    /// GPUs per member.
    gpus: u32,
    /// The domain and those around it at the looser levels, so that the counterpart finds it
    /// at every level.
    home: Vec<Domain>,
    /// The group's deployment and role, so that its counterpart can find it.
    deployment: String,
    role: Option<group::Role>,
    at: Instant,
    /// Pods that passed the filter into the domain.
    admitted: std::collections::BTreeSet<String>,
}

impl Reservation {
    /// Not expired, and not every member seen placed yet.
    fn live(&self, placed: usize, now: Instant) -> bool {
        now.duration_since(self.at) < RESERVATION_TTL && placed < self.size as usize
    }

    /// Members still to come: neither admitted nor seen placed.
    fn remaining(&self, placed: usize) -> u32 {
        let done = placed.max(self.admitted.len());
        self.size
            .saturating_sub(u32::try_from(done).unwrap_or(u32::MAX))
    }
}

impl Reservations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Reservation>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The domain reserved for `group`, if any and not expired at `now`.
    pub fn get(&self, group: &str, now: Instant) -> Option<Domain> {
        self.lock()
            .get(group)
            .filter(|r| now.duration_since(r.at) < RESERVATION_TTL)
            .map(|r| r.domain.clone())
    }

    /// Reserves `domain` for `group` (of known size), whose pods ask for `gpus` GPUs each,
    /// `pod` admitted first; drops expired reservations.
    pub fn reserve(
        &self,
        group: &group::GroupInfo,
        pod: &str,
        home: Vec<Domain>,
        gpus: u32,
        now: Instant,
    ) {
        let Some(size) = group.size else { return };
        let Some(domain) = home.first().cloned() else {
            return;
        };
        let mut m = self.lock();
        m.retain(|_, r| now.duration_since(r.at) < RESERVATION_TTL);
        let mut r = Reservation {
            domain,
            home,
            size,
            gpus,
            deployment: group.deployment.clone(),
            role: group.role,
            at: now,
            admitted: Default::default(),
        };
        r.admitted.insert(pod.to_string());
        // Kept until every member is seen placed (or the TTL ends), also once all have passed
        // the filter: the counterpart finds the group's domain here while the pod watch lags.
        m.insert(group.group_id.clone(), r);
    }

    /// The domains reserved for groups of `deployment` with role `role` (their members not yet
    /// all placed), with the domains around them at looser levels, and those groups' ids.
    pub fn reserved_for(
        &self,
        deployment: &str,
        role: group::Role,
        placements: &dyn PlacementIndex,
        now: Instant,
    ) -> Vec<(String, Domain)> {
        self.lock()
            .iter()
            .filter(|(g, r)| r.live(placements.members(g).len(), now))
            .filter(|(_, r)| r.deployment == deployment && r.role == Some(role))
            .flat_map(|(g, r)| r.home.iter().map(|d| (g.clone(), d.clone())))
            .collect()
    }

    /// Records that `pod` of `group` passed the filter; the reservation ends when every member
    /// is seen placed.
    pub fn admit(&self, group: &str, pod: &str, placed: usize) {
        let mut m = self.lock();
        if let Some(r) = m.get_mut(group) {
            r.admitted.insert(pod.to_string());
            if placed >= r.size as usize {
                m.remove(group);
            }
        }
    }

    /// The room other groups still hold: each reservation but `group`'s, for its members still
    /// to come. Expired and fulfilled reservations are dropped.
    pub fn held(&self, group: &str, placements: &dyn PlacementIndex, now: Instant) -> Vec<Held> {
        let mut m = self.lock();
        let mut out = Vec::new();
        m.retain(|g, r| {
            let placed = placements.members(g).len();
            let remaining = r.remaining(placed);
            let keep = r.live(placed, now);
            if keep && remaining > 0 && g != group {
                out.push(Held {
                    domain: r.domain.clone(),
                    remaining,
                    gpus_per_pod: r.gpus,
                });
            }
            keep
        });
        out
    }

    /// Number of reservations.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is reserved.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The extender's state: the view, the placements, the weights and the group reservations.
#[derive(Clone)]
pub struct Extender {
    /// The cluster view.
    pub view: SharedView,
    /// Placed pods.
    pub placements: Arc<dyn PlacementIndex>,
    /// Score weights.
    pub weights: Weights,
    /// Domains reserved for groups.
    pub reservations: Arc<Reservations>,
}

/// Most rejected nodes that a filter answer names with a reason. kube-scheduler decodes the
/// answer for every pod and folds the reasons into its event; thousands of them (a group kept
/// in one clique of a 5,000-node cluster) would cost it more than the filtering itself.
/// `/debug/explain` gives every reason.
pub const FILTER_REASONS: usize = 64;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The whole explanation of one request.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The pod, `<namespace>/<name>`.
    pub pod: Option<String>,
    /// What the policy knew about the pod.
    pub context: PodContext,
    /// Rejected nodes and why.
    pub rejected: BTreeMap<String, String>,
    /// Rejected nodes beyond those given a reason.
    #[serde(skip_serializing_if = "is_zero")]
    pub rejected_more: usize,
    /// The domain the pod's group is kept in, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<GroupDomain>,
    /// Scores of the nodes that passed.
    pub scores: Vec<ScoreBreakdown>,
}

impl Extender {
    /// An extender over `view` and `placements`, with no reservations yet.
    pub fn new(view: SharedView, placements: Arc<dyn PlacementIndex>, weights: Weights) -> Self {
        Self {
            view,
            placements,
            weights,
            reservations: Arc::default(),
        }
    }

    /// Filters and scores the request's candidates. Unknown nodes are rejected with a reason.
    /// Explaining reserves nothing.
    pub fn evaluate(&self, args: &ExtenderRequest) -> Explanation {
        self.evaluate_with(args, usize::MAX, false)
    }

    /// Remembers the labels of the request's Node objects (full-Node mode) where the view has
    /// none or only older labels, so that a group member's node stays known after it leaves the candidate
    /// list (kube-scheduler drops nodes that are full before it calls the extender).
    fn remember_request_nodes(&self, labels: &wire::RequestLabels<'_>) {
        if labels.is_empty() {
            return;
        }
        let stale: Vec<&str> = self.view.read(|v| {
            labels
                .iter()
                .filter(|(n, l)| match v.entry(n) {
                    None => true,
                    // Newer labels of a node known by its labels alone; an agent's topology
                    // and labels from the watch are not replaced by a request's.
                    Some(e) => {
                        e.topology.is_none() && !l.is_empty() && !v.same_labels(&e.labels, l)
                    }
                })
                .map(|(n, _)| *n)
                .collect()
        });
        for node in stale {
            self.view.apply(view::ViewEvent::Labels {
                node: node.to_string(),
                labels: labels[node].clone(),
            });
        }
    }

    /// [`Self::evaluate`]; the rejected map holds at most `reasons` nodes (0 for prioritize,
    /// [`FILTER_REASONS`] for filter; the rest are counted in `rejected_more`); with
    /// `reserve` a domain chosen for a group's first member is reserved (filter).
    fn evaluate_with(&self, args: &ExtenderRequest, reasons: usize, reserve: bool) -> Explanation {
        let names = args.candidate_names();
        let labels = args.node_labels();
        self.remember_request_nodes(&labels);
        let pod = args.pod.clone().unwrap_or_default();
        // A gated pod is not being scheduled: it is explained, but reserves no domain.
        let reserve = reserve && !placed::scheduling_gated(&pod);
        let now = Instant::now();
        self.view.read(|view| {
            let ctx = policy::pod_context(&pod, view, self.placements.as_ref(), &labels);
            let resolved: Vec<_> = names
                .iter()
                .map(|n| (n.as_str(), view.resolve(n, labels.get(n.as_str()).copied())))
                .collect();
            let mut rejected = Rejections::new(reasons);
            // A pod the extender does not place passes every node, known or not.
            let (scores, domain) = if ctx.managed() {
                // GPUs that placed group pods take, per node: one pass over the placed pods.
                let used = self.placements.gpus_by_node();
                let mut passed = Vec::with_capacity(resolved.len());
                for (name, r) in &resolved {
                    let facts = r.as_ref().map(|r| r.facts.as_ref());
                    match (facts, policy::filter_node(&ctx, facts)) {
                        (Some(f), Ok(())) => passed.push(Candidate {
                            name,
                            facts: Some(f),
                            freshness: r.as_ref().map(|r| r.freshness),
                            used_gpus: used.get(*name).copied().unwrap_or(0),
                            keys: r.as_ref().map(|r| r.keys).unwrap_or_default(),
                        }),
                        (None, _) if !labels.contains_key(name) => rejected.add(
                            name,
                            "unknown node: not in the extender's view and no Node object in the request",
                        ),
                        (None, _) => rejected.add(name, policy::Reject::NoTopology),
                        (Some(_), Err(why)) => rejected.add(name, why),
                    }
                }
                let key = group::pod_key(&pod).unwrap_or_default();
                let domain = self.group_domain(view, &ctx, &key, &passed, reserve, now);
                if let Some(d) = &domain {
                    let dom = d.domain();
                    let inside = dom.matcher();
                    passed.retain(|c| {
                        let inside = inside(&c.keys);
                        if !inside {
                            rejected.add(
                                c.name,
                                format_args!("outside {dom}, where the pod's group is kept"),
                            );
                        }
                        inside
                    });
                }
                (policy::score_nodes(&ctx, &passed, &self.weights), domain)
            } else {
                let all: Vec<Candidate<'_>> = resolved
                    .iter()
                    .map(|(name, r)| Candidate {
                        name,
                        facts: r.as_ref().map(|r| r.facts.as_ref()),
                        freshness: r.as_ref().map(|r| r.freshness),
                        used_gpus: 0,
                        keys: r.as_ref().map(|r| r.keys).unwrap_or_default(),
                    })
                    .collect();
                (policy::score_nodes(&ctx, &all, &self.weights), None)
            };
            Explanation {
                pod: group::pod_key(&pod),
                context: ctx,
                rejected: rejected.reasons,
                rejected_more: rejected.more,
                domain,
                scores,
            }
        })
    }

    /// The domain the pod's group is kept in: the placed members' tightest domain that still has
    /// a candidate; else the group's reservation; else, for a group of known size, the domain
    /// chosen now (and reserved when `reserve`). `None` leaves the candidates as they are.
    fn group_domain(
        &self,
        view: &view::ClusterView,
        ctx: &PodContext,
        pod: &str,
        passed: &[Candidate<'_>],
        reserve: bool,
        now: Instant,
    ) -> Option<GroupDomain> {
        let group = ctx.group.as_ref()?;
        let has_candidate = |d: &Domain| {
            let inside = d.matcher();
            passed.iter().any(|c| inside(&c.keys))
        };
        let leaving = self.leaving(view, &group.group_id, passed, ctx.gpus);
        let found = if !ctx.members.is_empty() {
            policy::members_domains(&ctx.members)
                .into_iter()
                .find_map(|domain| {
                    if has_candidate(&domain) {
                        Some(GroupDomain::Members { domain })
                    } else if leaving.room(&domain) > 0 {
                        Some(GroupDomain::Returning { domain })
                    } else {
                        None
                    }
                })
        } else if let Some(domain) = self.reservations.get(&group.group_id, now)
            && has_candidate(&domain)
        {
            Some(GroupDomain::Reserved { domain })
        } else {
            let chosen = self.choose_first(ctx, group, passed, &leaving, now);
            if reserve && let Some(c) = &chosen {
                let home = domains_around(c.domain(), passed);
                self.reservations.reserve(group, pod, home, ctx.gpus, now);
            }
            return chosen;
        };
        if reserve && found.is_some() {
            self.reservations
                .admit(&group.group_id, pod, ctx.members.len());
        }
        found
    }

    /// The nodes this group's pods left a moment ago that are not candidates: kube-scheduler
    /// still counts the leaving pods there, and their room comes back to the group soon.
    fn leaving(
        &self,
        view: &view::ClusterView,
        group_id: &str,
        passed: &[Candidate<'_>],
        gpus_per_pod: u32,
    ) -> Leaving {
        let left = self.placements.recently_left(group_id);
        let left = if left.is_empty() {
            Vec::new()
        } else {
            let candidates: std::collections::HashSet<&str> =
                passed.iter().map(|c| c.name).collect();
            left.into_iter()
                .filter(|(node, _)| !candidates.contains(node.as_str()))
                .filter_map(|(node, gpus)| view.resolve(&node, None).map(|r| (r.keys, gpus)))
                .collect()
        };
        Leaving { left, gpus_per_pod }
    }

    /// The domain of a group's first member: the tightest with room for the whole group beside
    /// its counterpart, or, for a group replaced as a whole, the domain it ran in.
    fn choose_first(
        &self,
        ctx: &PodContext,
        group: &group::GroupInfo,
        passed: &[Candidate<'_>],
        leaving: &Leaving,
        now: Instant,
    ) -> Option<GroupDomain> {
        let held = self
            .reservations
            .held(&group.group_id, self.placements.as_ref(), now);
        let (reserved, waiting, guessed) = self.counterpart_demand(ctx, group, now);
        let counterpart = policy::Counterpart {
            placed: &ctx.counterparts,
            reserved: &reserved,
            waiting,
            guessed,
        };
        let need = policy::Demand {
            pods: ctx.remaining?,
            gpus_per_pod: ctx.gpus,
        };
        let fresh = policy::choose_domain(need, counterpart, passed, &held)?;
        let back = ctx.previous.as_ref().and_then(|prev| {
            let level = fresh.domain().level;
            let home = policy::Domain {
                level,
                key: policy::domain_key(&prev.facts, level)?,
            };
            back_home(need, counterpart, passed, &held, leaving, home)
        });
        Some(back.unwrap_or(fresh))
    }

    /// What the counterpart role needs kept free: the domains reserved for its groups not yet
    /// visible as placed, every group of it still waiting taken together, and whether that
    /// demand is a guess.
    fn counterpart_demand(
        &self,
        ctx: &PodContext,
        group: &group::GroupInfo,
        now: Instant,
    ) -> (Vec<Domain>, Option<policy::Demand>, bool) {
        let reserved = group
            .role
            .map(|r| {
                self.reservations.reserved_for(
                    &group.deployment,
                    r.counterpart(),
                    self.placements.as_ref(),
                    now,
                )
            })
            .unwrap_or_default();
        // Every counterpart group still waiting, taken together (a decode group's prefill
        // groups should all find room beside it).
        let waiting = ctx
            .counterpart_waiting
            .iter()
            .filter(|(g, _)| !reserved.iter().any(|(r, _)| r == g))
            .map(|(_, d)| *d)
            .reduce(|a, b| policy::Demand {
                pods: a.pods.saturating_add(b.pods),
                gpus_per_pod: a.gpus_per_pod.max(b.gpus_per_pod),
            });
        // A counterpart not seen at all yet (its LeaderWorkerSet created a moment later, its
        // controller still making the pods) is guessed at this group's size, or the largest
        // half, quarter, ... of it that still fits beside the group.
        let guessed = waiting.is_none();
        let waiting = waiting.or_else(|| {
            (group.role.is_some() && reserved.is_empty() && ctx.counterparts.is_empty())
                .then_some(group.size)
                .flatten()
                .map(|pods| policy::Demand {
                    pods,
                    gpus_per_pod: ctx.gpus,
                })
        });
        let reserved = reserved.into_iter().map(|(_, d)| d).collect();
        (reserved, waiting, guessed)
    }

    /// The `filter` verb. The rejections move into the result; the returned explanation keeps
    /// the scores.
    pub fn filter(&self, args: &ExtenderRequest) -> (ExtenderFilterResult, Explanation) {
        let mut ex = self.evaluate_with(args, FILTER_REASONS, true);
        let mut out = ExtenderFilterResult {
            failed_and_unresolvable_nodes: std::mem::take(&mut ex.rejected),
            ..Default::default()
        };
        if args.node_names.is_some() {
            // The nodes that passed, in the request's order.
            out.node_names = Some(ex.scores.iter().map(|s| s.node.clone()).collect());
        } else if let Some(list) = &args.nodes {
            let keep: std::collections::BTreeSet<String> =
                ex.scores.iter().map(|s| s.node.clone()).collect();
            out.nodes = Some(wire::retain_nodes(list, &keep));
        } else {
            out.node_names = Some(Vec::new());
        }
        (out, ex)
    }

    /// The `prioritize` verb: every candidate gets a score; rejected ones get 0.
    pub fn prioritize(&self, args: &ExtenderRequest) -> (HostPriorityList, Explanation) {
        let ex = self.evaluate_with(args, 0, false);
        // The scores follow the candidates' order (those that passed, for a pod the extender
        // places): one walk pairs them.
        let mut scores = ex.scores.iter().peekable();
        let list = args
            .candidate_names()
            .iter()
            .map(|n| HostPriority {
                host: n.clone(),
                score: scores.next_if(|s| s.node == *n).map_or(0, |s| s.score),
            })
            .collect();
        (list, ex)
    }
}

/// Filter reasons, at most `cap` of them by node name; the rest are only counted.
struct Rejections {
    cap: usize,
    reasons: BTreeMap<String, String>,
    more: usize,
}

impl Rejections {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            reasons: BTreeMap::new(),
            more: 0,
        }
    }

    fn add(&mut self, node: &str, why: impl std::fmt::Display) {
        if self.reasons.len() >= self.cap {
            self.more += 1;
        } else {
            self.reasons.insert(node.to_string(), why.to_string());
        }
    }
}

/// Room that a group's pods leaving nodes outside the candidates will free soon.
struct Leaving {
    left: Vec<(policy::DomainKeys, u32)>,
    gpus_per_pod: u32,
}

impl Leaving {
    /// Pods of the group's size that the leaving pods' room in `d` will take.
    fn room(&self, d: &Domain) -> u32 {
        let inside = d.matcher();
        let (pods, gpus) = self
            .left
            .iter()
            .filter(|(k, _)| inside(k))
            .fold((0u32, 0u32), |(p, g), (_, gpus)| {
                (p + 1, g.saturating_add(*gpus))
            });
        gpus.checked_div(self.gpus_per_pod).unwrap_or(pods)
    }
}

/// A group replaced as a whole (a rolling update) goes back to `home`, where it ran, when that
/// domain still holds it, or will once the pods it replaced there have left.
fn back_home(
    need: policy::Demand,
    counterpart: policy::Counterpart<'_>,
    passed: &[Candidate<'_>],
    held: &[Held],
    leaving: &Leaving,
    home: Domain,
) -> Option<GroupDomain> {
    let at_home = home.matcher();
    let inside: Vec<Candidate<'_>> = passed
        .iter()
        .filter(|c| at_home(&c.keys))
        .cloned()
        .collect();
    if let Some(d) =
        policy::choose_domain(need, counterpart, &inside, held).filter(|d| d.domain() == &home)
    {
        return Some(d);
    }
    // Not yet: the pods it replaced there still hold part of it.
    let soon = leaving.room(&home);
    let room_now: u32 = inside
        .iter()
        .filter_map(|c| {
            let free = c.facts?.gpu_count.saturating_sub(c.used_gpus);
            Some(free.checked_div(need.gpus_per_pod).unwrap_or(1).max(1))
        })
        .sum();
    (soon > 0 && room_now.saturating_add(soon) >= need.pods)
        .then_some(GroupDomain::Returning { domain: home })
}

/// The domains reserved for a group's first member: the chosen one, then the domains around it
/// at looser levels.
fn domains_around(dom: &Domain, passed: &[Candidate<'_>]) -> Vec<Domain> {
    let inside = dom.matcher();
    let around = passed
        .iter()
        .find(|c| inside(&c.keys))
        .map(|c| {
            policy::DOMAIN_LEVELS
                .iter()
                .filter(|l| **l < dom.level)
                .filter_map(|&level| c.keys.get(level).map(|id| Domain::from_id(level, id)))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    std::iter::once(dom.clone()).chain(around).collect()
}

#[cfg(test)]
mod tests;
