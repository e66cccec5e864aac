//! Node labels from the API server: a kube-runtime reflector over a metadata-only Node watch,
//! each object trimmed to the labels the webhook copies, so that a lookup is one map read and
//! thousands of Nodes take little memory.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher::{self, watcher},
    },
};
use tokio_stream::StreamExt;

use super::mutate::NodeLabels;

/// The reflector's store of trimmed Node metadata.
#[derive(Clone)]
pub struct NodeStore {
    store: Store<PartialObjectMeta<Node>>,
    ready: Arc<AtomicBool>,
}

impl NodeStore {
    /// True once the first full list has been read.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Number of Nodes held.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// True when no Node is held.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }
}

impl NodeLabels for NodeStore {
    fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.store
            .get(&ObjectRef::new(name))
            .map(|n| n.metadata.labels.clone().unwrap_or_default())
    }
}

/// Keeps only what the webhook reads: the name and the copied labels.
pub fn trim(node: &mut PartialObjectMeta<Node>, keep: &BTreeSet<String>) {
    let m = &mut node.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.owner_references = None;
    m.finalizers = None;
    if let Some(labels) = m.labels.as_mut() {
        labels.retain(|k, _| keep.contains(k));
    }
}

/// A reflector of Nodes whose labels `keep` lists. The returned future runs the watch (retried
/// with kube-runtime's default backoff) until it is dropped.
pub fn reflect_nodes(
    client: Client,
    keep: BTreeSet<String>,
) -> (NodeStore, impl Future<Output = ()> + Send + 'static) {
    let (store, writer) = reflector::store();
    let ready = Arc::new(AtomicBool::new(false));
    let nodes = NodeStore {
        store: store.clone(),
        ready: ready.clone(),
    };
    let api: Api<PartialObjectMeta<Node>> = Api::all(client);
    let run = async move {
        let waiter = tokio::spawn(async move {
            if store.wait_until_ready().await.is_ok() {
                ready.store(true, Ordering::Relaxed);
                tracing::info!(nodes = store.len(), "node list read");
            }
        });
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(move |n| trim(n, &keep))
            .reflect(writer)
            .touched_objects();
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "node watch failed; retrying"
                );
            }
        }
        waiter.abort();
    };
    (nodes, run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::ObjectMeta;

    #[test]
    fn trim_keeps_only_copied_labels_and_the_name() {
        let mut n: PartialObjectMeta<Node> = PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some("gb-1".into()),
                labels: Some(
                    [("a/x", "1"), ("b/y", "2")]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                annotations: Some([("big".to_string(), "x".repeat(1000))].into()),
                ..ObjectMeta::default()
            },
            _phantom: std::marker::PhantomData,
        };
        trim(&mut n, &["b/y".to_string()].into());
        assert_eq!(n.metadata.name.as_deref(), Some("gb-1"));
        assert_eq!(
            n.metadata.labels.unwrap().into_iter().collect::<Vec<_>>(),
            [("b/y".to_string(), "2".to_string())]
        );
        assert!(n.metadata.annotations.is_none());
    }
}
