//! Node labels from the API server: a metadata-only Node watch feeding a compact store of the
//! webhook's own, which keeps for each Node its name and the labels the webhook copies and
//! nothing else, so that a lookup is one map read and 50,000 Nodes take a few MiB.
//!
//! The watch decodes each Node into a `NodeMeta`, which skips everything in the metadata but
//! the name, the resource version and the labels (managed fields, annotations and the rest are
//! never allocated). [`NodeStore`] holds one entry per Node: the name, and the copied labels
//! that the Node has as (key, value) pairs whose keys are shared with the copy rules' keys.
//! After each full list the memory freed while decoding it is handed back to the OS
//! ([`crate::memory::release_freed_memory`]).

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicBool, Ordering},
    },
};

use k8s_openapi::{ClusterResourceScope, api::core::v1::Node};
use kube::{
    Api, Client, Resource,
    core::ObjectMeta,
    runtime::{
        WatchStreamExt,
        watcher::{self, Event, watcher},
    },
};
use serde::{Deserialize, Deserializer};
use tokio_stream::StreamExt;

use super::mutate::NodeLabels;
use crate::memory::release_freed_memory;

/// A Node as the webhook's watch decodes it: its name, resource version and labels. Everything
/// else in the metadata (managed fields, annotations, owner references, …) is skipped while
/// decoding. It asks for the metadata API ([`Resource::metadata_api`]), so the API server sends
/// only `PartialObjectMetadata`.
#[derive(Clone, Debug, Default)]
struct NodeMeta {
    metadata: ObjectMeta,
}

impl NodeMeta {
    /// A Node named `name` with `labels`.
    #[cfg(test)]
    fn new(name: &str, labels: BTreeMap<String, String>) -> Self {
        Self {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
        }
    }
}

impl Resource for NodeMeta {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        <Node as Resource>::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        <Node as Resource>::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        <Node as Resource>::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        <Node as Resource>::plural(dt)
    }

    fn metadata_api() -> bool {
        true
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<'de> Deserialize<'de> for NodeMeta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Fields not named here are skipped by the decoder without being built.
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            metadata: WireMeta,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct WireMeta {
            name: Option<String>,
            resource_version: Option<String>,
            labels: Option<BTreeMap<String, String>>,
        }
        let Wire {
            metadata:
                WireMeta {
                    name,
                    resource_version,
                    labels,
                },
        } = Wire::deserialize(deserializer)?;
        Ok(Self {
            metadata: ObjectMeta {
                name,
                resource_version,
                labels,
                ..ObjectMeta::default()
            },
        })
    }
}

/// The copied labels of one Node: (key, value) pairs, each key shared with the copy rules.
type Kept = Box<[(Arc<str>, Box<str>)]>;

/// Node name → the copied labels it has.
type Entries = HashMap<Box<str>, Kept>;

/// The webhook's Nodes: name → the copied labels each has. Cheap to clone (the clones share
/// the entries); the watch of [`reflect_nodes`] fills it.
#[derive(Clone, Default)]
pub struct NodeStore {
    nodes: Arc<RwLock<Entries>>,
    ready: Arc<AtomicBool>,
}

impl NodeStore {
    /// True once the first full list has been read.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Number of Nodes held.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when no Node is held.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> RwLockReadGuard<'_, Entries> {
        // The writer holds the lock only for a map insert, removal or swap; a panic there
        // leaves the map whole.
        self.nodes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Entries> {
        self.nodes.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl NodeLabels for NodeStore {
    fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.read().get(name).map(|kept| {
            kept.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    }
}

/// Applies the watch's events to a [`NodeStore`], keeping only the labels of the copy rules.
///
/// A (re-)list (`Init`, `InitApply`…, `InitDone`) is gathered aside while the store goes on
/// serving the previous one, and replaces it whole at `InitDone`: a Node missing from the new
/// list is gone. `Apply` and `Delete` change the store at once. The store is ready from the end
/// of the first list on, and stays ready through later re-lists.
struct NodeWriter {
    store: NodeStore,
    keep: Box<[Arc<str>]>,
    listing: Entries,
}

impl NodeWriter {
    /// A writer for `store` that keeps the labels named in `keep`.
    fn new(store: NodeStore, keep: &BTreeSet<String>) -> Self {
        Self {
            store,
            keep: keep.iter().map(|k| Arc::from(k.as_str())).collect(),
            listing: Entries::new(),
        }
    }

    /// Applies one watch event.
    fn apply(&mut self, event: Event<NodeMeta>) {
        match event {
            Event::Init => self.listing = Entries::new(),
            Event::InitApply(node) => {
                if let Some((name, kept)) = self.compact(node) {
                    self.listing.insert(name, kept);
                }
            }
            Event::InitDone => self.listed(),
            Event::Apply(node) => {
                if let Some((name, kept)) = self.compact(node) {
                    self.store.write().insert(name, kept);
                }
            }
            Event::Delete(node) => {
                if let Some(name) = node.metadata.name {
                    let gone = self.store.write().remove(name.as_str());
                    drop(gone);
                }
            }
        }
    }

    /// The end of a list: its Nodes replace the store's, and the memory freed while decoding
    /// it (and the previous entries) goes back to the OS.
    fn listed(&mut self) {
        let listed = std::mem::take(&mut self.listing);
        let nodes = listed.len();
        let previous = std::mem::replace(&mut *self.store.write(), listed);
        drop(previous);
        release_freed_memory();
        if self.store.ready.swap(true, Ordering::Relaxed) {
            tracing::info!(nodes, "node list read again");
        } else {
            tracing::info!(nodes, "node list read");
        }
    }

    /// The store's entry for `node`: its name and the kept labels it has (moved out of the
    /// decoded labels, the keys shared). `None` for a Node without a name.
    fn compact(&self, node: NodeMeta) -> Option<(Box<str>, Kept)> {
        let ObjectMeta { name, labels, .. } = node.metadata;
        let name = name.filter(|n| !n.is_empty())?;
        let mut labels = labels.unwrap_or_default();
        let kept = self
            .keep
            .iter()
            .filter_map(|k| {
                labels
                    .remove(k.as_ref())
                    .map(|v| (Arc::clone(k), v.into_boxed_str()))
            })
            .collect();
        Some((name.into_boxed_str(), kept))
    }
}

/// The Nodes whose labels `keep` lists, from a metadata-only Node watch. The returned future
/// runs the watch (retried with kube-runtime's default backoff) until it is dropped.
pub fn reflect_nodes(
    client: Client,
    keep: BTreeSet<String>,
) -> (NodeStore, impl Future<Output = ()> + Send + 'static) {
    let nodes = NodeStore::default();
    let mut writer = NodeWriter::new(nodes.clone(), &keep);
    let api: Api<NodeMeta> = Api::all(client);
    let run = async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => writer.apply(event),
                Err(e) => tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "node watch failed; retrying"
                ),
            }
        }
    };
    (nodes, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: [&str; 3] = [
        "nodetopo.io/nvlink.domain",
        "nodetopo.io/nvlink.cluster",
        "network.example.com/leaf",
    ];

    fn keep() -> BTreeSet<String> {
        KEEP.iter().map(|k| k.to_string()).collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A kubelet-like Node: two copied labels among others.
    fn node(name: &str, domain: &str) -> NodeMeta {
        NodeMeta::new(
            name,
            labels(&[
                ("kubernetes.io/hostname", name),
                ("nodetopo.io/nvlink.domain", domain),
                ("nodetopo.io/nvlink.cluster", "c-1"),
                ("nvidia.com/gpu.product", "GB200"),
            ]),
        )
    }

    fn writer() -> (NodeStore, NodeWriter) {
        let store = NodeStore::default();
        let writer = NodeWriter::new(store.clone(), &keep());
        (store, writer)
    }

    fn list(w: &mut NodeWriter, nodes: impl IntoIterator<Item = NodeMeta>) {
        w.apply(Event::Init);
        for n in nodes {
            w.apply(Event::InitApply(n));
        }
        w.apply(Event::InitDone);
    }

    fn names(store: &NodeStore) -> Vec<String> {
        let mut v: Vec<String> = store.read().keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    fn domain(store: &NodeStore, name: &str) -> Option<String> {
        store
            .node_labels(name)
            .and_then(|l| l.get("nodetopo.io/nvlink.domain").cloned())
    }

    #[test]
    fn keeps_only_the_copied_labels() {
        let (store, mut w) = writer();
        list(
            &mut w,
            [
                node("gb-1", "d-1"),
                NodeMeta::new("cpu-1", labels(&[("kubernetes.io/hostname", "cpu-1")])),
                NodeMeta::new("bare", BTreeMap::new()),
            ],
        );
        assert_eq!(
            store.node_labels("gb-1"),
            Some(labels(&[
                ("nodetopo.io/nvlink.cluster", "c-1"),
                ("nodetopo.io/nvlink.domain", "d-1"),
            ]))
        );
        // A Node with none of them is still known, with no labels.
        assert_eq!(store.node_labels("cpu-1"), Some(BTreeMap::new()));
        assert_eq!(store.node_labels("bare"), Some(BTreeMap::new()));
        assert_eq!(store.node_labels("gb-2"), None);
        // The stored keys are the keep set's strings, not one copy per Node.
        let nodes = store.read();
        let kept = &nodes["gb-1"];
        assert_eq!(kept.len(), 2);
        for (k, _) in kept.iter() {
            let shared = w.keep.iter().find(|s| s == &k).expect("a kept key");
            assert!(Arc::ptr_eq(k, shared), "{k} is a copy");
        }
    }

    #[test]
    fn apply_adds_and_replaces_and_delete_removes() {
        let (store, mut w) = writer();
        list(&mut w, [node("gb-1", "d-1")]);
        w.apply(Event::Apply(node("gb-2", "d-2")));
        assert_eq!(store.len(), 2);
        assert_eq!(domain(&store, "gb-2").as_deref(), Some("d-2"));
        // A relabelled Node: the new value, and a label removed from the Node goes too.
        w.apply(Event::Apply(NodeMeta::new(
            "gb-1",
            labels(&[("nodetopo.io/nvlink.domain", "d-9")]),
        )));
        assert_eq!(
            store.node_labels("gb-1"),
            Some(labels(&[("nodetopo.io/nvlink.domain", "d-9")]))
        );
        w.apply(Event::Delete(node("gb-2", "d-2")));
        assert_eq!(names(&store), ["gb-1"]);
        assert_eq!(store.node_labels("gb-2"), None);
        // Deleting an unknown Node changes nothing.
        w.apply(Event::Delete(node("gb-7", "d-7")));
        assert_eq!(names(&store), ["gb-1"]);
    }

    #[test]
    fn a_relist_replaces_the_store_and_drops_missing_nodes() {
        let (store, mut w) = writer();
        list(&mut w, [node("gb-1", "d-1"), node("gb-2", "d-1")]);
        w.apply(Event::Apply(node("gb-3", "d-1")));
        assert_eq!(names(&store), ["gb-1", "gb-2", "gb-3"]);

        // The watch restarts: while the new list comes in, the old one is served.
        w.apply(Event::Init);
        w.apply(Event::InitApply(node("gb-2", "d-5")));
        w.apply(Event::InitApply(node("gb-4", "d-5")));
        assert_eq!(names(&store), ["gb-1", "gb-2", "gb-3"]);
        assert_eq!(domain(&store, "gb-2").as_deref(), Some("d-1"));
        assert_eq!(store.node_labels("gb-4"), None);

        // At its end, Nodes missing from it are gone and the others carry their new labels.
        w.apply(Event::InitDone);
        assert_eq!(names(&store), ["gb-2", "gb-4"]);
        assert_eq!(domain(&store, "gb-2").as_deref(), Some("d-5"));
        assert_eq!(store.len(), 2);

        // A list cut short and restarted: only the restarted list counts.
        w.apply(Event::Init);
        w.apply(Event::InitApply(node("gb-8", "d-8")));
        w.apply(Event::Init);
        w.apply(Event::InitApply(node("gb-9", "d-9")));
        w.apply(Event::InitDone);
        assert_eq!(names(&store), ["gb-9"]);

        // An empty list empties the store.
        list(&mut w, []);
        assert!(store.is_empty());
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn ready_once_the_first_list_is_in_and_through_relists() {
        let (store, mut w) = writer();
        assert!(!store.is_ready());
        w.apply(Event::Init);
        w.apply(Event::InitApply(node("gb-1", "d-1")));
        assert!(!store.is_ready());
        assert!(store.is_empty(), "a list is served only once complete");
        w.apply(Event::InitDone);
        assert!(store.is_ready());
        assert_eq!(store.len(), 1);
        w.apply(Event::Init);
        assert!(store.is_ready());
        w.apply(Event::InitDone);
        assert!(store.is_ready());
        // Clones share the entries and the readiness.
        let clone = store.clone();
        w.apply(Event::Apply(node("gb-2", "d-1")));
        assert!(clone.is_ready());
        assert_eq!(clone.len(), 1);
    }

    #[test]
    fn decodes_only_name_version_and_labels_from_partial_object_metadata() {
        let json = serde_json::json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {
                "name": "gb-1",
                "uid": "0b0f6a53-31a4-4c4e-b4f0-8d0f1c2b3a4d",
                "resourceVersion": "4711",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"nodetopo.io/nvlink.domain": "d-1", "kubernetes.io/os": "linux"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
                "managedFields": [{
                    "manager": "kubelet", "operation": "Update", "apiVersion": "v1",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:kubernetes.io/os": {}}}}
                }]
            }
        });
        let n: NodeMeta = serde_json::from_value(json).expect("decodes");
        assert_eq!(n.metadata.name.as_deref(), Some("gb-1"));
        assert_eq!(n.metadata.resource_version.as_deref(), Some("4711"));
        assert_eq!(
            n.metadata.labels,
            Some(labels(&[
                ("kubernetes.io/os", "linux"),
                ("nodetopo.io/nvlink.domain", "d-1"),
            ]))
        );
        assert!(n.metadata.managed_fields.is_none());
        assert!(n.metadata.annotations.is_none());
        assert!(n.metadata.uid.is_none());
        // The same list and watch requests as for Nodes, asking for metadata only.
        assert!(NodeMeta::metadata_api());
        assert_eq!(NodeMeta::url_path(&(), None), "/api/v1/nodes");
        assert_eq!(NodeMeta::kind(&()), "Node");
    }
}
