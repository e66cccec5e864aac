//! In a cluster: Nodes and Pods from the Kubernetes API, by periodic re-list.
//!
//! - Nodes give each node's labels (for the block label and the label fallback) and its agent
//!   endpoint (`InternalIP:agent_port`); one [`watch_agent`] task runs per node and stops when
//!   the node goes away or its endpoint changes.
//! - Bound pods of known groups are the placements ([`PlacementIndex::replace_all`]).
//!
//! The pure parts ([`node_endpoint`], [`placed_pods`]) are tested here; the loops only list and
//! hand over.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use tokio::{sync::watch, task::JoinHandle};

use super::{
    placement::{PlacedPod, PlacementIndex, PodEvent},
    source::{AgentConnector, Backoff, watch_agent},
    view::{SharedView, ViewEvent},
};

/// The agent endpoint of a node: its first InternalIP and the agent port.
pub fn node_endpoint(node: &Node, port: u16) -> Option<String> {
    let addr = node
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .clone();
    Some(if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    })
}

/// The placements among `pods`: bound, running pods of known groups.
pub fn placed_pods(pods: &[Pod]) -> Vec<PlacedPod> {
    pods.iter()
        .filter_map(PodEvent::from_pod)
        .filter_map(|e| match e {
            PodEvent::Placed(p) => Some(p),
            PodEvent::Removed { .. } => None,
        })
        .collect()
}

/// Settings of the cluster loops.
#[derive(Clone)]
pub struct ClusterSource {
    /// API client.
    pub client: kube::Client,
    /// The agents' gRPC port.
    pub agent_port: u16,
    /// How often Nodes are listed.
    pub node_resync: Duration,
    /// How often Pods are listed.
    pub pod_resync: Duration,
    /// Connects to agents.
    pub connector: Arc<dyn AgentConnector>,
    /// Reconnect backoff of each agent task.
    pub backoff: Backoff,
    /// Nodes whose agent endpoint is given elsewhere (`--agents`): labels only.
    pub exclude: std::collections::BTreeSet<String>,
}

impl ClusterSource {
    /// Lists Nodes every `node_resync` until `stop`; keeps one agent task per node.
    pub async fn run_nodes(self, view: SharedView, mut stop: watch::Receiver<bool>) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut tasks: BTreeMap<String, (String, watch::Sender<bool>, JoinHandle<()>)> =
            BTreeMap::new();
        let mut known: std::collections::BTreeSet<String> = Default::default();
        loop {
            match api.list(&ListParams::default()).await {
                Ok(list) => {
                    let mut seen = BTreeMap::new();
                    let listed: std::collections::BTreeSet<String> = list
                        .items
                        .iter()
                        .filter_map(|n| n.metadata.name.clone())
                        .collect();
                    for gone in known.difference(&listed) {
                        if !tasks.contains_key(gone) && !self.exclude.contains(gone) {
                            view.apply(ViewEvent::Removed { node: gone.clone() });
                        }
                    }
                    known = listed;
                    for n in &list.items {
                        let Some(name) = n.metadata.name.clone() else {
                            continue;
                        };
                        view.apply(ViewEvent::Labels {
                            node: name.clone(),
                            labels: n.metadata.labels.clone().unwrap_or_default(),
                        });
                        if self.exclude.contains(&name) {
                            continue;
                        }
                        if let Some(ep) = node_endpoint(n, self.agent_port) {
                            seen.insert(name, ep);
                        }
                    }
                    // Stop tasks of nodes that are gone or moved.
                    let old: Vec<String> = tasks.keys().cloned().collect();
                    for name in old {
                        let keep = seen.get(&name) == tasks.get(&name).map(|t| &t.0);
                        if !keep && let Some((_, tx, _)) = tasks.remove(&name) {
                            let _ = tx.send(true);
                            if !seen.contains_key(&name) {
                                view.apply(ViewEvent::Removed { node: name });
                            }
                        }
                    }
                    for (name, ep) in seen {
                        if tasks.contains_key(&name) {
                            continue;
                        }
                        let (tx, rx) = watch::channel(false);
                        let h = tokio::spawn(watch_agent(
                            name.clone(),
                            ep.clone(),
                            self.connector.clone(),
                            view.clone(),
                            self.backoff,
                            rx,
                        ));
                        tasks.insert(name, (ep, tx, h));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "listing nodes failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.node_resync) => {}
                _ = stop.changed() => break,
            }
        }
        for (_, (_, tx, h)) in tasks {
            let _ = tx.send(true);
            let _ = h.await;
        }
    }

    /// Lists bound Pods every `pod_resync` until `stop` and replaces the placements.
    pub async fn run_pods(
        self,
        placements: Arc<dyn PlacementIndex>,
        mut stop: watch::Receiver<bool>,
    ) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let params = ListParams::default().fields("spec.nodeName!=");
        loop {
            match api.list(&params).await {
                Ok(list) => placements.replace_all(placed_pods(&list.items)),
                Err(e) => tracing::warn!(error = %e, "listing pods failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.pod_resync) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http::{Request, Response};
    use kube::client::Body;
    use tower_test::mock;

    use super::*;
    use crate::extender::{
        placement::MemoryPlacementIndex,
        source::{BoxFuture, SourceError, TopologyStream},
        view::{ClusterView, LabelConfig},
    };

    /// Records the endpoints it is asked for and refuses them all.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl AgentConnector for Recorder {
        fn connect<'a>(
            &'a self,
            endpoint: &'a str,
            _since: u64,
        ) -> BoxFuture<'a, Result<Box<dyn TopologyStream>, SourceError>> {
            Box::pin(async move {
                self.0.lock().unwrap().push(endpoint.to_string());
                Err(SourceError::Connect {
                    endpoint: endpoint.into(),
                    message: "test".into(),
                })
            })
        }
    }

    fn ok(v: serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(200)
            .body(Body::from(serde_json::to_vec(&v).unwrap()))
            .unwrap()
    }

    #[tokio::test]
    async fn node_and_pod_lists_feed_the_view_the_agents_and_the_placements() {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let rec = Arc::new(Recorder::default());
        let src = ClusterSource {
            client: kube::Client::new(svc, "default"),
            agent_port: 9750,
            node_resync: Duration::from_secs(3600),
            pod_resync: Duration::from_secs(3600),
            connector: rec.clone(),
            backoff: Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600)),
            exclude: ["pinned".to_string()].into(),
        };
        let view = SharedView::new(ClusterView::new(LabelConfig {
            prefix: "nodetopo.io".into(),
            block_label: Some("leaf".into()),
        }));
        let placements = Arc::new(MemoryPlacementIndex::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let nodes = tokio::spawn(src.clone().run_nodes(view.clone(), stop_rx.clone()));
        let server = async {
            let (req, send) = handle.next_request().await.expect("a node list");
            assert_eq!(req.method(), http::Method::GET);
            assert_eq!(req.uri().path(), "/api/v1/nodes");
            send.send_response(ok(serde_json::json!({
                "apiVersion": "v1", "kind": "NodeList", "metadata": {},
                "items": [
                    {"metadata": {"name": "a", "labels": {"leaf": "l1",
                        "nodetopo.io/gpu.count": "4", "nodetopo.io/rdma.link-layer": "ethernet"}},
                     "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}},
                    {"metadata": {"name": "pinned"},
                     "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}
                ]
            })));
            let (req, send) = handle.next_request().await.expect("a pod list");
            assert_eq!(req.uri().path(), "/api/v1/pods");
            assert!(
                req.uri()
                    .query()
                    .unwrap_or_default()
                    .contains("fieldSelector=spec.nodeName"),
                "{:?}",
                req.uri()
            );
            send.send_response(ok(serde_json::json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": {},
                "items": [{"metadata": {"name": "p", "namespace": "ns",
                    "labels": {"llm-d.ai/role": "decode"}},
                    "spec": {"containers": [], "nodeName": "a"}}]
            })));
        };
        let pods = tokio::spawn(src.run_pods(placements.clone(), stop_rx));
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("both lists requested");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while rec.0.lock().unwrap().is_empty() || placements.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "no agent task or placement"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*rec.0.lock().unwrap(), vec!["10.0.0.1:9750".to_string()]);
        view.read(|v| {
            let r = v.resolve("a", None).unwrap();
            assert_eq!(r.facts.block.as_deref(), Some("l1"));
            assert!(v.entry("pinned").is_some());
        });
        assert_eq!(placements.len(), 1);
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            nodes.await.unwrap();
            pods.await.unwrap();
        })
        .await
        .expect("loops stop");
    }

    #[test]
    fn endpoint_from_internal_ip() {
        let n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n"},
                {"type": "InternalIP", "address": "10.1.2.3"}
            ]}
        }))
        .unwrap();
        assert_eq!(node_endpoint(&n, 9750).as_deref(), Some("10.1.2.3:9750"));
        let v6: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {"addresses": [{"type": "InternalIP", "address": "fd00::1"}]}
        }))
        .unwrap();
        assert_eq!(node_endpoint(&v6, 1).as_deref(), Some("[fd00::1]:1"));
        assert_eq!(node_endpoint(&Node::default(), 1), None);
    }

    #[test]
    fn placed_pods_keep_bound_group_members() {
        let pods: Vec<Pod> = serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "a", "namespace": "ns",
                "labels": {"leaderworkerset.sigs.k8s.io/name": "m"}},
             "spec": {"containers": [], "nodeName": "n1"}},
            {"metadata": {"name": "b", "namespace": "ns"},
             "spec": {"containers": [], "nodeName": "n2"}},
            {"metadata": {"name": "c", "namespace": "ns",
                "labels": {"leaderworkerset.sigs.k8s.io/name": "m"}},
             "spec": {"containers": []}}
        ]))
        .unwrap();
        let p = placed_pods(&pods);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].pod.as_str(), p[0].node.as_str()), ("ns/a", "n1"));
    }
}
