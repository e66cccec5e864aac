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
//!
//! Every count runs over classes of alike candidates (the same domain keys, free GPUs and
//! closeness to the placed counterpart), with their number, rather than over each node: a
//! fleet of NVL72 racks has one class per clique, a ninth of its nodes, and the domain keys are
//! interned ids ([`super::DomainKeys`]).

use std::{cell::RefCell, rc::Rc};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use serde::Serialize;

use super::{
    Candidate, DOMAIN_LEVELS, Domain, DomainId, DomainKeys, GroupDomain, Held, Level, PeerFacts,
    proximity,
};
use crate::extender::facts::NodeFacts;

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

/// A class of alike candidate nodes, as the room count sees them.
struct Node {
    keys: [Option<DomainId>; 5],
    free_gpus: u32,
    /// Closeness to the placed counterpart.
    near: Option<Level>,
    /// Candidates in the class.
    count: u64,
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

/// Room that held domains take: (level slot, domain) -> (GPUs, pods of the group's size).
type HeldRoom = HashMap<(usize, DomainId), (u64, u64)>;

/// The candidates' classes and the held room, with the sums that several passes of one
/// choice share (over every class, by level and GPUs per pod).
struct Counts {
    nodes: Vec<Node>,
    held: HeldRoom,
    sums: RefCell<HashMap<(usize, u32), Rc<Sums>>>,
    overlaps: RefCell<HashMap<(usize, usize), Rc<Overlaps>>>,
    beside: RefCell<HashMap<(usize, usize, u32), Rc<Beside>>>,
}

/// Pairs (key at one level, key at another level) that some node has, sorted: the keys at the
/// second level that a first-level domain's nodes have are one run.
struct Overlaps(Vec<(DomainId, DomainId)>);

impl Overlaps {
    /// The keys at the second level that `a`'s nodes have.
    fn get(&self, a: &DomainId) -> impl Iterator<Item = DomainId> + '_ {
        let a = *a;
        let start = self.0.partition_point(|(x, _)| *x < a);
        self.0[start..]
            .iter()
            .take_while(move |(x, _)| *x == a)
            .map(|(_, b)| *b)
    }
}

/// Per-domain sums at one level.
type Sums = HashMap<DomainId, Agg>;

/// What makes candidates alike for the count: domain keys, free GPUs, closeness.
type Class = ([Option<DomainId>; 5], u32, Option<Level>);

/// Key at one level -> key at another level -> pods its nodes there take.
type Beside = HashMap<DomainId, HashMap<DomainId, u64>>;

impl Counts {
    fn new(nodes: Vec<Node>, held: HeldRoom) -> Self {
        Self {
            nodes,
            held,
            sums: RefCell::default(),
            overlaps: RefCell::default(),
            beside: RefCell::default(),
        }
    }

    /// [`aggregate`] over every class without `near`, computed once per level and pod size.
    fn all(&self, level: usize, need: Demand) -> Rc<Sums> {
        let key = (level, need.gpus_per_pod);
        if let Some(a) = self.sums.borrow().get(&key) {
            return Rc::clone(a);
        }
        let a = Rc::new(aggregate(level, need, false, self, None));
        self.sums.borrow_mut().insert(key, Rc::clone(&a));
        a
    }

    /// [`overlaps`] over every class, computed once per pair of levels.
    fn overlaps_all(&self, a: usize, b: usize) -> Rc<Overlaps> {
        if let Some(o) = self.overlaps.borrow().get(&(a, b)) {
            return Rc::clone(o);
        }
        let o = Rc::new(overlaps(&self.nodes, None, a, b));
        self.overlaps.borrow_mut().insert((a, b), Rc::clone(&o));
        o
    }

    /// Per domain at `level`, per domain at `cp` inside it: the pods of `w`'s size its nodes
    /// take, less the held room; computed once per pair of levels and pod size.
    fn beside(&self, level: usize, cp: usize, w: Demand) -> Rc<Beside> {
        let key = (level, cp, w.gpus_per_pod);
        if let Some(b) = self.beside.borrow().get(&key) {
            return Rc::clone(b);
        }
        let mut room = Beside::new();
        for n in &self.nodes {
            if let (Some(k), Some(e)) = (n.keys[level], n.keys[cp]) {
                *room.entry(k).or_default().entry(e).or_default() +=
                    n.count * w.pods_in(u64::from(n.free_gpus)).max(1);
            }
        }
        for domains in room.values_mut() {
            for (e, slots) in domains.iter_mut() {
                if let Some((_, pods)) = self.held.get(&(cp, *e)) {
                    *slots = slots.saturating_sub(*pods);
                }
            }
        }
        let room = Rc::new(room);
        self.beside.borrow_mut().insert(key, Rc::clone(&room));
        room
    }
}

/// Room that `held` takes in each domain, in GPUs and in pods of `need`'s size.
fn held_in(held: &[Held], need: Demand) -> HeldRoom {
    let mut out = HeldRoom::new();
    for h in held {
        // A domain no node was ever in holds no candidate.
        let (Some(slot), Some(id)) = (h.domain.level.slot(), h.domain.id()) else {
            continue;
        };
        let gpus = u64::from(h.remaining) * u64::from(h.gpus_per_pod);
        let pods = if need.gpus_per_pod == 0 || h.gpus_per_pod == 0 {
            u64::from(h.remaining)
        } else {
            gpus.div_ceil(u64::from(need.gpus_per_pod))
        };
        let e = out.entry((slot, id)).or_default();
        e.0 += gpus;
        e.1 += pods;
    }
    out
}

/// The candidates with facts, in classes of alike nodes.
fn classes(candidates: &[Candidate<'_>], placed: &[PeerFacts]) -> Vec<Node> {
    // Closeness to the placed counterpart, once per distinct facts (nodes of one clique share
    // theirs).
    let mut near_of: HashMap<&NodeFacts, Option<Level>> = HashMap::new();
    let mut by_class: HashMap<Class, u64> = HashMap::new();
    for c in candidates {
        let Some(f) = c.facts else { continue };
        let near = if placed.is_empty() {
            None
        } else {
            *near_of
                .entry(f)
                .or_insert_with(|| placed.iter().map(|p| proximity(f, &p.facts)).max())
        };
        let free = f.gpu_count.saturating_sub(c.used_gpus);
        *by_class.entry((c.keys.slots(), free, near)).or_default() += 1;
    }
    by_class
        .into_iter()
        .map(|((keys, free_gpus, near), count)| Node {
            keys,
            free_gpus,
            near,
            count,
        })
        .collect()
}

/// The domain for the first member of a group that still needs `need`: see the module
/// documentation. `None` when no domain at any level can hold the group.
pub fn choose_domain(
    need: Demand,
    counterpart: Counterpart<'_>,
    candidates: &[Candidate<'_>],
    held: &[Held],
) -> Option<GroupDomain> {
    let counts = Counts::new(classes(candidates, counterpart.placed), held_in(held, need));
    // The group's own tightest level comes first: the pair is kept together only where that
    // costs the group nothing.
    let alone = choose_within(need, counterpart, &counts, None)?;
    let own = alone.domain().level.slot()?;
    let mut cp = counterpart;
    loop {
        if let Some(anchor) = pair_anchor(need, cp, &counts, own) {
            return choose_within(need, cp, &counts, Some(&anchor)).or(Some(alone));
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
    keys: HashSet<DomainId>,
}

impl Anchor {
    fn admits(&self, n: &Node) -> bool {
        n.keys[self.level].is_some_and(|k| self.keys.contains(&k))
    }
}

/// Whether `anchor` (none: every class) admits `n`.
fn admitted(anchor: Option<&Anchor>, n: &Node) -> bool {
    anchor.is_none_or(|a| a.admits(n))
}

/// Per-domain sums at `level` over the classes `anchor` admits, less the held room there;
/// `near` only when `with_near`.
fn aggregate(
    level: usize,
    need: Demand,
    with_near: bool,
    counts: &Counts,
    anchor: Option<&Anchor>,
) -> HashMap<DomainId, Agg> {
    let mut out: HashMap<DomainId, Agg> = HashMap::new();
    for n in counts.nodes.iter().filter(|n| admitted(anchor, n)) {
        let Some(key) = n.keys[level] else { continue };
        let e = out.entry(key).or_default();
        e.slots += n.count * need.pods_in(u64::from(n.free_gpus)).max(1);
        e.free += n.count * u64::from(n.free_gpus);
        if with_near {
            e.near = e.near.max(n.near);
        }
    }
    for (key, agg) in &mut out {
        if let Some((gpus, pods)) = counts.held.get(&(level, *key)) {
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
    counts: &Counts,
    own: usize,
) -> Option<Anchor> {
    let placed = !counterpart.placed.is_empty() || !counterpart.reserved.is_empty();
    if !placed && counterpart.waiting.is_none() {
        return None;
    }
    let extra = counterpart.waiting.map_or(0, Demand::gpus);
    let own_domains = counts.all(own, need);
    // A waiting counterpart keeps its own tightest level too.
    let cp_own = counterpart.waiting.and_then(|w| {
        (0..DOMAIN_LEVELS.len()).find(|&lv| {
            counts
                .all(lv, w)
                .values()
                .any(|a| a.slots >= u64::from(w.pods))
        })
    });
    let placed_keys: Vec<DomainKeys> = counterpart
        .placed
        .iter()
        .map(|p| DomainKeys::of(&p.facts))
        .collect();
    for (level, l) in DOMAIN_LEVELS.iter().enumerate().skip(own) {
        let domains = counts.all(level, need);
        // Keys at this level that contain a domain at the group's own level which holds it
        // and, beside it, one at the waiting counterpart's own level which holds that.
        let room_beside = match (counterpart.waiting, cp_own) {
            (Some(w), Some(cp)) => Some(RoomBeside::new(need, w, level, own, cp, counts)),
            _ => None,
        };
        let mut holds_group: HashSet<DomainId> = HashSet::new();
        for n in &counts.nodes {
            let (Some(own_key), Some(key)) = (n.keys[own], n.keys[level]) else {
                continue;
            };
            let holds = own_domains
                .get(&own_key)
                .is_some_and(|a| a.slots >= u64::from(need.pods));
            if !holds || holds_group.contains(&key) {
                continue;
            }
            if room_beside.as_ref().is_none_or(|r| r.fits(own_key, key)) {
                holds_group.insert(key);
            }
        }
        let home: HashSet<DomainId> = if placed {
            placed_keys
                .iter()
                .filter_map(|k| k.at(level))
                .chain(
                    counterpart
                        .reserved
                        .iter()
                        .filter(|d| d.level == *l)
                        .filter_map(Domain::id),
                )
                .collect()
        } else {
            domains.keys().copied().collect()
        };
        let keys: HashSet<DomainId> = home
            .into_iter()
            .filter(|k| {
                holds_group.contains(k)
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
    counts: &Counts,
    anchor: Option<&Anchor>,
) -> Option<GroupDomain> {
    for (level, l) in DOMAIN_LEVELS.iter().enumerate() {
        let domains = aggregate(level, need, true, counts, anchor);
        let fitting: Vec<(DomainId, &Agg)> = domains
            .iter()
            .filter(|(_, a)| a.slots >= u64::from(need.pods))
            .map(|(k, a)| (*k, a))
            .collect();
        if fitting.is_empty() {
            continue;
        }
        // How tightly the waiting counterpart still fits beside each choice (tighter first).
        let leaves = counterpart.waiting.map(|w| {
            let keys: Vec<DomainId> = fitting.iter().map(|(k, _)| *k).collect();
            counterpart_fits(need, w, level, &keys, counts, anchor)
        });
        let leaves = |key: DomainId| leaves.as_ref().map_or(0, |m| m[&key]);
        let best = DomainId::with_keys(|key| {
            fitting
                .into_iter()
                .map(|(k, a)| (k, a, leaves(k)))
                .min_by(|a, b| {
                    a.2.cmp(&b.2)
                        .then(b.1.near.cmp(&a.1.near))
                        .then(a.1.slots.cmp(&b.1.slots))
                        .then_with(|| key(a.0).cmp(key(b.0)))
                })
        })?;
        return Some(GroupDomain::Chosen {
            domain: Domain::from_id(*l, best.0),
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
struct RoomBeside {
    w: Demand,
    taken: u64,
    /// key at `level` -> key at `cp` -> pods of `w` its nodes there take.
    room: Rc<Beside>,
    /// key at `level` -> how many of its `cp` domains hold `w` untouched.
    holding: HashMap<DomainId, usize>,
    /// key at `own` -> the keys at `cp` its nodes have.
    shares: Rc<Overlaps>,
}

impl RoomBeside {
    fn new(need: Demand, w: Demand, level: usize, own: usize, cp: usize, counts: &Counts) -> Self {
        let room = counts.beside(level, cp, w);
        let holding = room
            .iter()
            .map(|(k, domains)| {
                let n = domains
                    .values()
                    .filter(|s| **s >= u64::from(w.pods))
                    .count();
                (*k, n)
            })
            .collect();
        Self {
            w,
            taken: taken_by(need, w),
            room,
            holding,
            shares: counts.overlaps_all(own, cp),
        }
    }

    /// Whether the counterpart still fits inside `key` once the group took `own_key`: a `cp`
    /// domain the group's domain does not touch that holds it, or one it touches that holds it
    /// with the group's room taken.
    fn fits(&self, own_key: DomainId, key: DomainId) -> bool {
        let Some(domains) = self.room.get(&key) else {
            return false;
        };
        let pods = u64::from(self.w.pods);
        let mut touched_holding = 0;
        for e in self.shares.get(&own_key) {
            let Some(slots) = domains.get(&e) else {
                continue;
            };
            if slots.saturating_sub(self.taken) >= pods {
                return true;
            }
            if *slots >= pods {
                touched_holding += 1;
            }
        }
        self.holding.get(&key).copied().unwrap_or(0) > touched_holding
    }
}

/// For each domain `keys` at `level`: the index of the tightest level at which the waiting
/// counterpart `w` still fits in one domain once the group took `need` there
/// (`DOMAIN_LEVELS.len()` when it fits nowhere). Every domain that shares nodes with the chosen
/// one loses the group's GPUs there (at worst, for domains inside it).
fn counterpart_fits(
    need: Demand,
    w: Demand,
    level: usize,
    keys: &[DomainId],
    counts: &Counts,
    anchor: Option<&Anchor>,
) -> HashMap<DomainId, usize> {
    let taken = taken_by(need, w);
    let pods = u64::from(w.pods);
    let mut out: HashMap<DomainId, usize> =
        keys.iter().map(|k| (*k, DOMAIN_LEVELS.len())).collect();
    for other in 0..DOMAIN_LEVELS.len() {
        let (domains, shares) = match anchor {
            None => (counts.all(other, w), counts.overlaps_all(level, other)),
            Some(_) => (
                Rc::new(aggregate(other, w, false, counts, anchor)),
                Rc::new(overlaps(&counts.nodes, anchor, level, other)),
            ),
        };
        let holding = domains.values().filter(|a| a.slots >= pods).count();
        for (key, best) in out.iter_mut().filter(|(_, b)| **b == DOMAIN_LEVELS.len()) {
            // A domain the group's does not touch that holds the counterpart, or one it
            // touches that holds it with the group's room taken.
            let mut touched_holding = 0;
            let mut fits = false;
            for k in shares.get(key) {
                let Some(a) = domains.get(&k) else { continue };
                if a.slots.saturating_sub(taken) >= pods {
                    fits = true;
                    break;
                }
                if a.slots >= pods {
                    touched_holding += 1;
                }
            }
            if fits || holding > touched_holding {
                *best = other;
            }
        }
    }
    out
}

/// For each key at level `a` (among the classes `anchor` admits): the keys at level `b` that
/// its nodes have too.
fn overlaps(nodes: &[Node], anchor: Option<&Anchor>, a: usize, b: usize) -> Overlaps {
    let mut pairs: Vec<(DomainId, DomainId)> = nodes
        .iter()
        .filter(|n| admitted(anchor, n))
        .filter_map(|n| Some((n.keys[a]?, n.keys[b]?)))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    Overlaps(pairs)
}
