//! Where a group's first member goes: room counted in pods of the group's own size (from each
//! node's free GPUs), and the deployment placed as a whole, so that the counterpart role still
//! fits near the group that lands first.
//!
//! A domain's room is what its candidate nodes can still take of the group's pods: per node,
//! its free GPUs (its GPU count less the GPUs of group pods placed there) over the pod's GPUs,
//! at least one (kube-scheduler passed the node), less the room that other groups' reservations
//! hold there.
//!
//! The group's own tightest level comes first (its members talk on every layer; prefill and
//! decode once per request). Then the pair: at the tightest level where one domain holds this
//! group at that own level together with its counterpart (the placed counterpart's domain when
//! it is placed or reserved, any domain when it is still waiting), only that level's fitting
//! domains are candidates. Among the domains that hold the group there, the one that leaves the
//! waiting counterpart the tightest fit wins, then the one nearest to the placed counterpart,
//! then the tightest fit, then the smallest key.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{
    Candidate, DOMAIN_LEVELS, Domain, GroupDomain, Held, Level, PeerFacts, domain_key, proximity,
};

/// What a group still has to place: pods, and the GPUs each of them asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Demand {
    /// Pods still to place.
    pub pods: u32,
    /// GPUs per pod (0: the pod asks for none; each node then takes one).
    pub gpus_per_pod: u32,
}

impl Demand {
    /// GPUs in all.
    fn gpus(self) -> u64 {
        u64::from(self.pods) * u64::from(self.gpus_per_pod)
    }

    /// Pods of this demand's size that one node with `gpus` free GPUs takes (one, for pods
    /// without GPUs).
    fn pods_in(self, gpus: u64) -> u64 {
        gpus.checked_div(u64::from(self.gpus_per_pod)).unwrap_or(1)
    }
}

/// The counterpart role of the group's deployment, as far as it is known.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counterpart<'a> {
    /// Its placed pods.
    pub placed: &'a [PeerFacts],
    /// Domains reserved for its groups whose members are not visible as placed yet, with the
    /// domains around them at looser levels.
    pub reserved: &'a [Domain],
    /// Its groups still waiting with nothing placed or reserved, taken together.
    pub waiting: Option<Demand>,
    /// `waiting` is a guess (no pod of the counterpart seen yet): the largest half, quarter, ...
    /// of it that still fits beside the group is kept free.
    pub guessed: bool,
}

/// One candidate node as the room count sees it.
struct Node<'a> {
    keys: [Option<String>; 5],
    facts: &'a crate::extender::facts::NodeFacts,
    free_gpus: u32,
}

/// Per-domain sums.
#[derive(Debug, Clone, Default)]
struct Agg {
    /// Pods of the group it can take.
    slots: u64,
    /// Free GPUs.
    free: u64,
    /// Closeness to a placed counterpart pod.
    near: Option<Level>,
}

fn level_index(l: Level) -> usize {
    DOMAIN_LEVELS
        .iter()
        .position(|x| *x == l)
        .unwrap_or(DOMAIN_LEVELS.len() - 1)
}

/// Room that `held` takes in each domain, in GPUs and in pods of `need`'s size.
fn held_in(held: &[Held], need: Demand) -> BTreeMap<(usize, String), (u64, u64)> {
    let mut out: BTreeMap<(usize, String), (u64, u64)> = BTreeMap::new();
    for h in held {
        let gpus = u64::from(h.remaining) * u64::from(h.gpus_per_pod);
        let pods = if need.gpus_per_pod == 0 || h.gpus_per_pod == 0 {
            u64::from(h.remaining)
        } else {
            gpus.div_ceil(u64::from(need.gpus_per_pod))
        };
        let e = out
            .entry((level_index(h.domain.level), h.domain.key.clone()))
            .or_default();
        e.0 += gpus;
        e.1 += pods;
    }
    out
}

/// The domain for the first member of a group that still needs `need`: see the module
/// documentation. `None` when no domain at any level can hold the group.
pub fn choose_domain(
    need: Demand,
    counterpart: Counterpart<'_>,
    candidates: &[Candidate<'_>],
    held: &[Held],
) -> Option<GroupDomain> {
    let nodes: Vec<Node<'_>> = candidates
        .iter()
        .filter_map(|c| {
            let f = c.facts?;
            Some(Node {
                keys: DOMAIN_LEVELS.map(|l| domain_key(f, l)),
                facts: f,
                free_gpus: f.gpu_count.saturating_sub(c.used_gpus),
            })
        })
        .collect();
    let held = held_in(held, need);
    // The group's own tightest level comes first: the pair is kept together only where that
    // costs the group nothing.
    let alone = choose_within(need, counterpart, &nodes, &held, None)?;
    let own = level_index(alone.domain().level);
    let mut cp = counterpart;
    loop {
        if let Some(anchor) = pair_anchor(need, cp, &nodes, &held, own) {
            return choose_within(need, cp, &nodes, &held, Some(&anchor)).or(Some(alone));
        }
        match cp.waiting {
            Some(w) if cp.guessed && w.pods > 1 => {
                cp.waiting = Some(Demand {
                    pods: w.pods / 2,
                    ..w
                });
            }
            _ => return Some(alone),
        }
    }
}

/// Domains at one level that the group must stay inside.
struct Anchor {
    level: usize,
    keys: BTreeSet<String>,
}

impl Anchor {
    fn admits(&self, n: &Node<'_>) -> bool {
        n.keys[self.level]
            .as_ref()
            .is_some_and(|k| self.keys.contains(k))
    }
}

/// Per-domain sums at `level` over the nodes `keep` admits, less what `held` takes there.
fn aggregate(
    level: usize,
    need: Demand,
    counterpart: Counterpart<'_>,
    nodes: &[Node<'_>],
    held: &BTreeMap<(usize, String), (u64, u64)>,
    keep: impl Fn(&Node<'_>) -> bool,
) -> BTreeMap<String, Agg> {
    let mut out: BTreeMap<String, Agg> = BTreeMap::new();
    for n in nodes.iter().filter(|n| keep(n)) {
        let Some(key) = &n.keys[level] else { continue };
        let e = out.entry(key.clone()).or_default();
        e.slots += need.pods_in(u64::from(n.free_gpus)).max(1);
        e.free += u64::from(n.free_gpus);
        let near = counterpart
            .placed
            .iter()
            .map(|p| proximity(n.facts, &p.facts))
            .max();
        e.near = e.near.max(near);
    }
    for (key, agg) in &mut out {
        if let Some((gpus, pods)) = held.get(&(level, key.clone())) {
            agg.slots = agg.slots.saturating_sub(*pods);
            agg.free = agg.free.saturating_sub(*gpus);
        }
    }
    out
}

/// The tightest level (no tighter than `own`, the group's own tightest level) where a domain
/// holds the group together with its counterpart, and that level's domains which do: those
/// holding (or reserved for) the counterpart when it is placed, any with room for both when it
/// is only waiting, and in either case with a domain at level `own` inside that holds the
/// group. `None` when there is no counterpart to keep near or no domain holds both.
fn pair_anchor(
    need: Demand,
    counterpart: Counterpart<'_>,
    nodes: &[Node<'_>],
    held: &BTreeMap<(usize, String), (u64, u64)>,
    own: usize,
) -> Option<Anchor> {
    let placed = !counterpart.placed.is_empty() || !counterpart.reserved.is_empty();
    if !placed && counterpart.waiting.is_none() {
        return None;
    }
    let extra = counterpart.waiting.map_or(0, Demand::gpus);
    let own_domains = aggregate(own, need, Counterpart::default(), nodes, held, |_| true);
    // A waiting counterpart keeps its own tightest level too.
    let cp_own = counterpart.waiting.and_then(|w| {
        (0..DOMAIN_LEVELS.len()).find(|&lv| {
            aggregate(lv, w, Counterpart::default(), nodes, held, |_| true)
                .values()
                .any(|a| a.slots >= u64::from(w.pods))
        })
    });
    for (level, l) in DOMAIN_LEVELS.iter().enumerate().skip(own) {
        let domains = aggregate(level, need, Counterpart::default(), nodes, held, |_| true);
        // Keys at this level that contain a domain at the group's own level which holds it
        // and, beside it, one at the waiting counterpart's own level which holds that.
        let room_beside = match (counterpart.waiting, cp_own) {
            (Some(w), Some(cp)) => Some(RoomBeside::new(need, w, level, own, cp, nodes, held)),
            _ => None,
        };
        let mut holds_group: BTreeSet<&str> = BTreeSet::new();
        for n in nodes {
            let (Some(own_key), Some(key)) = (&n.keys[own], &n.keys[level]) else {
                continue;
            };
            let holds = own_domains
                .get(own_key)
                .is_some_and(|a| a.slots >= u64::from(need.pods));
            if !holds || holds_group.contains(key.as_str()) {
                continue;
            }
            if room_beside.as_ref().is_none_or(|r| r.fits(own_key, key)) {
                holds_group.insert(key.as_str());
            }
        }
        let home: BTreeSet<String> = if placed {
            let mut keys: BTreeSet<String> = counterpart
                .placed
                .iter()
                .filter_map(|p| domain_key(&p.facts, *l))
                .collect();
            keys.extend(
                counterpart
                    .reserved
                    .iter()
                    .filter(|d| d.level == *l)
                    .map(|d| d.key.clone()),
            );
            keys
        } else {
            domains.keys().cloned().collect()
        };
        let keys: BTreeSet<String> = home
            .into_iter()
            .filter(|k| {
                holds_group.contains(k.as_str())
                    && domains.get(k).is_some_and(|a| {
                        a.slots >= u64::from(need.pods) && a.free >= need.gpus() + extra
                    })
            })
            .collect();
        if !keys.is_empty() {
            return Some(Anchor { level, keys });
        }
    }
    None
}

/// The tightest level with a domain (inside `anchor`, where given) that holds the group.
fn choose_within(
    need: Demand,
    counterpart: Counterpart<'_>,
    nodes: &[Node<'_>],
    held: &BTreeMap<(usize, String), (u64, u64)>,
    anchor: Option<&Anchor>,
) -> Option<GroupDomain> {
    let keep = |n: &Node<'_>| anchor.is_none_or(|a| a.admits(n));
    for (level, l) in DOMAIN_LEVELS.iter().enumerate() {
        let domains = aggregate(level, need, counterpart, nodes, held, keep);
        let fitting: Vec<(&String, &Agg)> = domains
            .iter()
            .filter(|(_, a)| a.slots >= u64::from(need.pods))
            .collect();
        if fitting.is_empty() {
            continue;
        }
        // How tightly the waiting counterpart still fits beside each choice (tighter first).
        let leaves = counterpart.waiting.map(|w| {
            let keys: Vec<&str> = fitting.iter().map(|(k, _)| k.as_str()).collect();
            counterpart_fits(need, w, level, &keys, nodes, held, &keep)
        });
        let leaves = |key: &str| leaves.as_ref().map_or(0, |m| m[key]);
        let best = fitting
            .into_iter()
            .map(|(k, a)| (k, a, leaves(k)))
            .min_by(|a, b| {
                a.2.cmp(&b.2)
                    .then(b.1.near.cmp(&a.1.near))
                    .then(a.1.slots.cmp(&b.1.slots))
                    .then(a.0.cmp(b.0))
            })?;
        return Some(GroupDomain::Chosen {
            domain: Domain {
                level: *l,
                key: best.0.clone(),
            },
            room: u32::try_from(best.1.slots).unwrap_or(u32::MAX),
            counterpart: best.1.near.unwrap_or(Level::None),
        });
    }
    None
}

/// The room `need` takes, in pods of `w`'s size.
fn taken_by(need: Demand, w: Demand) -> u64 {
    if w.gpus_per_pod == 0 {
        u64::from(need.pods)
    } else {
        need.gpus().div_ceil(u64::from(w.gpus_per_pod))
    }
}

/// Whether the waiting counterpart `w` still fits in one domain at level `cp` inside a domain
/// at `level`, once the group took its room in a domain at level `own` there: the counterpart's
/// room per domain at `level`, and the `cp` domains each `own` domain shares nodes with, counted
/// once.
struct RoomBeside<'n> {
    w: Demand,
    taken: u64,
    /// key at `level` -> key at `cp` -> pods of `w` its nodes there take.
    room: std::collections::HashMap<&'n str, BTreeMap<&'n str, u64>>,
    /// key at `own` -> the keys at `cp` its nodes have.
    shares: std::collections::HashMap<&'n str, BTreeSet<&'n str>>,
}

impl<'n> RoomBeside<'n> {
    fn new(
        need: Demand,
        w: Demand,
        level: usize,
        own: usize,
        cp: usize,
        nodes: &'n [Node<'_>],
        held: &BTreeMap<(usize, String), (u64, u64)>,
    ) -> Self {
        let mut room: std::collections::HashMap<&str, BTreeMap<&str, u64>> = Default::default();
        for n in nodes {
            if let (Some(k), Some(e)) = (n.keys[level].as_deref(), n.keys[cp].as_deref()) {
                *room.entry(k).or_default().entry(e).or_default() +=
                    w.pods_in(u64::from(n.free_gpus)).max(1);
            }
        }
        for domains in room.values_mut() {
            for (e, slots) in domains.iter_mut() {
                if let Some((_, pods)) = held.get(&(cp, (*e).to_string())) {
                    *slots = slots.saturating_sub(*pods);
                }
            }
        }
        Self {
            w,
            taken: taken_by(need, w),
            room,
            shares: overlaps(nodes, &|_: &Node<'_>| true, own, cp),
        }
    }

    /// Whether the counterpart still fits inside `key` once the group took `own_key`.
    fn fits(&self, own_key: &str, key: &str) -> bool {
        let shared = self.shares.get(own_key);
        self.room.get(key).is_some_and(|domains| {
            domains.iter().any(|(e, slots)| {
                let left = if shared.is_some_and(|s| s.contains(e)) {
                    slots.saturating_sub(self.taken)
                } else {
                    *slots
                };
                left >= u64::from(self.w.pods)
            })
        })
    }
}

/// For each domain `keys` at `level`: the index of the tightest level at which the waiting
/// counterpart `w` still fits in one domain once the group took `need` there
/// (`DOMAIN_LEVELS.len()` when it fits nowhere). Every domain that shares nodes with the chosen
/// one loses the group's GPUs there (at worst, for domains inside it).
fn counterpart_fits<'k>(
    need: Demand,
    w: Demand,
    level: usize,
    keys: &[&'k str],
    nodes: &[Node<'_>],
    held: &BTreeMap<(usize, String), (u64, u64)>,
    keep: &impl Fn(&Node<'_>) -> bool,
) -> std::collections::HashMap<&'k str, usize> {
    let taken = taken_by(need, w);
    let mut out: std::collections::HashMap<&'k str, usize> =
        keys.iter().map(|k| (*k, DOMAIN_LEVELS.len())).collect();
    for other in 0..DOMAIN_LEVELS.len() {
        let domains = aggregate(other, w, Counterpart::default(), nodes, held, keep);
        let shares = overlaps(nodes, keep, level, other);
        for (key, best) in out.iter_mut().filter(|(_, b)| **b == DOMAIN_LEVELS.len()) {
            let shared = shares.get(*key);
            let fits = domains.iter().any(|(k, a)| {
                let left = if shared.is_some_and(|s| s.contains(k.as_str())) {
                    a.slots.saturating_sub(taken)
                } else {
                    a.slots
                };
                left >= u64::from(w.pods)
            });
            if fits {
                *best = other;
            }
        }
    }
    out
}

/// For each key at level `a` (among the nodes `keep` admits): the keys at level `b` that its
/// nodes have too.
fn overlaps<'n>(
    nodes: &'n [Node<'_>],
    keep: &impl Fn(&Node<'_>) -> bool,
    a: usize,
    b: usize,
) -> std::collections::HashMap<&'n str, BTreeSet<&'n str>> {
    let mut out: std::collections::HashMap<&str, BTreeSet<&str>> = Default::default();
    for n in nodes.iter().filter(|n| keep(n)) {
        if let (Some(ka), Some(kb)) = (n.keys[a].as_deref(), n.keys[b].as_deref()) {
            out.entry(ka).or_default().insert(kb);
        }
    }
    out
}
