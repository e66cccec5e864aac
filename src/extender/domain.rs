//! The domains a group can be kept in: a proximity [`Level`] and the key a node's facts give it
//! there ([`domain_key`]). Keys are interned once per distinct value ([`DomainKeys::of`], when
//! the view stores a node's facts), so that choosing a group's domain over tens of thousands of
//! candidates compares integers instead of formatting and comparing strings.
//!
//! The intern table is process-wide and only grows: it holds each distinct key seen during the
//! extender's life, which for a fleet is its cliques, NVLink clusters, leaves or scalable units,
//! blocks and fabrics (about 9,000 keys for 50,000 GB200 trays).

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, LazyLock, RwLock},
};

use serde::Serialize;

use super::facts::NodeFacts;
use crate::model::FabricState;

/// How close two nodes are, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Nothing in common (or unknown).
    None,
    /// The same RDMA fabric (link layer and IB subnet).
    Fabric,
    /// The same leaf/block label value, or the same InfiniBand spine block.
    Block,
    /// The same leaf switch, or the same InfiniBand scalable unit (the same leaves on every
    /// rail).
    Leaf,
    /// The same NVLink cluster (ClusterUUID).
    Cluster,
    /// The same NVLink clique.
    Clique,
}

/// The levels a group can be kept in, tightest first.
pub const DOMAIN_LEVELS: [Level; 5] = [
    Level::Clique,
    Level::Cluster,
    Level::Leaf,
    Level::Block,
    Level::Fabric,
];

impl Level {
    /// The level's position in [`DOMAIN_LEVELS`]; `None` for [`Level::None`].
    pub fn slot(self) -> Option<usize> {
        DOMAIN_LEVELS.iter().position(|l| *l == self)
    }
}

/// The key of `f`'s domain at `level`: nodes with equal keys are in one domain.
pub fn domain_key(f: &NodeFacts, level: Level) -> Option<String> {
    let fabric = || {
        f.link_layer.map(|l| {
            let subnet = f.ib_subnets.first().map(String::as_str).unwrap_or("");
            format!("{}/{subnet}", <&str>::from(l))
        })
    };
    match level {
        Level::Clique => f.clique_key().map(|(u, c)| format!("{u}.{c}")),
        // A node whose fabric is not ready is in no NVLink cluster domain: the cluster's
        // multi-node NVLink does not reach it.
        Level::Cluster => f
            .cluster_uuid
            .clone()
            .filter(|_| f.fabric_state == FabricState::Ready),
        Level::Leaf => f
            .leaf
            .as_ref()
            .map(|b| format!("{}|{b}", fabric().as_deref().unwrap_or(""))),
        Level::Block => f
            .block
            .as_ref()
            .map(|b| format!("{}|{b}", fabric().as_deref().unwrap_or(""))),
        Level::Fabric => fabric(),
        Level::None => None,
    }
}

/// One interned domain key (at one level; the same text at two levels is two ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainId(NonZeroU32);

impl DomainId {
    /// The key's text.
    pub fn key(self) -> Arc<str> {
        let t = TABLE.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&t.names[self.index()])
    }

    /// Runs `f` with a reader of key texts: one lock for many lookups.
    pub fn with_keys<R>(f: impl for<'t> FnOnce(&dyn Fn(DomainId) -> &'t str) -> R) -> R {
        let t = TABLE.read().unwrap_or_else(|e| e.into_inner());
        f(&|id: DomainId| &t.names[id.index()])
    }

    fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

/// The process-wide intern table.
#[derive(Default)]
struct Table {
    /// Per level slot: key text -> id.
    ids: [HashMap<Arc<str>, DomainId>; 5],
    /// id - 1 -> key text.
    names: Vec<Arc<str>>,
}

static TABLE: LazyLock<RwLock<Table>> = LazyLock::new(Default::default);

/// The id of `key` at level slot `slot`, when some node has had it.
fn lookup(slot: usize, key: &str) -> Option<DomainId> {
    let t = TABLE.read().unwrap_or_else(|e| e.into_inner());
    t.ids[slot].get(key).copied()
}

/// The id of `key` at level slot `slot`, interned now if new.
fn intern(slot: usize, key: &str) -> DomainId {
    if let Some(id) = lookup(slot, key) {
        return id;
    }
    let mut t = TABLE.write().unwrap_or_else(|e| e.into_inner());
    if let Some(id) = t.ids[slot].get(key) {
        return *id;
    }
    let text: Arc<str> = Arc::from(key);
    let n = u32::try_from(t.names.len() + 1).unwrap_or(u32::MAX);
    let id = DomainId(NonZeroU32::new(n).unwrap_or(NonZeroU32::MAX));
    t.names.push(Arc::clone(&text));
    t.ids[slot].insert(text, id);
    id
}

/// A node's domain at each level of [`DOMAIN_LEVELS`] (where it has one), interned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DomainKeys([Option<DomainId>; 5]);

impl DomainKeys {
    /// The keys of `f` ([`domain_key`] at each level).
    pub fn of(f: &NodeFacts) -> Self {
        let mut out = [None; 5];
        for (slot, level) in DOMAIN_LEVELS.iter().enumerate() {
            out[slot] = domain_key(f, *level).map(|k| intern(slot, &k));
        }
        Self(out)
    }

    /// The key at level slot `slot` (a position in [`DOMAIN_LEVELS`]).
    pub fn at(&self, slot: usize) -> Option<DomainId> {
        self.0.get(slot).copied().flatten()
    }

    /// The key at `level`.
    pub fn get(&self, level: Level) -> Option<DomainId> {
        level.slot().and_then(|s| self.at(s))
    }

    /// All five, by slot.
    pub fn slots(&self) -> [Option<DomainId>; 5] {
        self.0
    }
}

/// One domain: a level and the key its nodes share there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Domain {
    /// The level.
    pub level: Level,
    /// The nodes' key at that level.
    pub key: String,
}

impl Domain {
    /// The domain of `id` at `level`.
    pub fn from_id(level: Level, id: DomainId) -> Self {
        Self {
            level,
            key: id.key().to_string(),
        }
    }

    /// The interned id of this domain's key; `None` when no node was ever in it.
    pub fn id(&self) -> Option<DomainId> {
        self.level.slot().and_then(|s| lookup(s, &self.key))
    }

    /// True when `f` is in this domain.
    pub fn contains(&self, f: &NodeFacts) -> bool {
        domain_key(f, self.level).as_deref() == Some(self.key.as_str())
    }

    /// A test for "this node is in this domain" over interned keys, looked up once.
    pub fn matcher(&self) -> impl Fn(&DomainKeys) -> bool + use<> {
        let (level, id) = (self.level, self.id());
        move |keys: &DomainKeys| id.is_some() && keys.get(level) == id
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Clique => "clique",
            Level::Cluster => "NVLink cluster",
            Level::Leaf => "leaf",
            Level::Block => "block",
            Level::Fabric => "fabric",
            Level::None => "none",
        };
        write!(f, "{level} {}", self.key)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LinkLayer;

    fn facts(cluster: &str, clique: u32, su: &str) -> NodeFacts {
        NodeFacts {
            gpu_count: 4,
            fabric_state: FabricState::Ready,
            cluster_uuid: Some(cluster.into()),
            clique_id: Some(clique),
            link_layer: Some(LinkLayer::Infiniband),
            ib_subnets: vec!["fe80:0000:0000:0007".into()],
            leaf: Some(su.into()),
            ..Default::default()
        }
    }

    #[test]
    fn equal_keys_share_an_id_and_the_id_gives_the_key_back() {
        let a = DomainKeys::of(&facts("domain-test-u1", 1, "su-a"));
        let b = DomainKeys::of(&facts("domain-test-u1", 2, "su-a"));
        let c = DomainKeys::of(&facts("domain-test-u2", 1, "su-b"));
        assert_ne!(a.get(Level::Clique), b.get(Level::Clique));
        assert_eq!(a.get(Level::Cluster), b.get(Level::Cluster));
        assert_eq!(a.get(Level::Leaf), b.get(Level::Leaf));
        assert_ne!(a.get(Level::Leaf), c.get(Level::Leaf));
        assert_eq!(a.get(Level::Fabric), c.get(Level::Fabric));
        assert_eq!(a.get(Level::None), None);
        for level in DOMAIN_LEVELS.into_iter().filter(|l| *l != Level::Block) {
            let f = facts("domain-test-u1", 1, "su-a");
            let id = a.get(level).expect("a key at every level but block");
            let d = Domain::from_id(level, id);
            assert_eq!(Some(d.key.clone()), domain_key(&f, level));
            assert_eq!(d.id(), Some(id));
            assert!(d.matcher()(&a) && d.contains(&f));
        }
        assert!(a.get(Level::Block).is_none());
    }

    #[test]
    fn the_same_text_at_two_levels_is_two_domains() {
        let cluster = intern(1, "domain-test-same");
        let block = intern(3, "domain-test-same");
        assert_ne!(cluster, block);
        assert_eq!(cluster.key(), block.key());
        let k = DomainKeys::of(&facts("domain-test-u3", 1, "su-c"));
        let never = Domain {
            level: Level::Leaf,
            key: "domain-test-never-seen".into(),
        };
        assert_eq!(never.id(), None);
        assert!(!never.matcher()(&k));
    }
}
