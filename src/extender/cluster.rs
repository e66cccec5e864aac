//! In a cluster: Nodes and Pods from the Kubernetes API, through kube-runtime watchers.
//!
//! - Nodes give each node's labels (for the block label and the label fallback) and its agent
//!   endpoint (`InternalIP:agent_port`); one [`watch_agent`] task runs per node and stops when
//!   the node goes away or its endpoint changes.
//! - Bound pods of known groups are the placements, applied one event at a time; each (re)list
//!   of the watch replaces them all ([`PlacementIndex::replace_all`]), so that pods deleted while
//!   the watch was down do not linger.
//!
//! A watch that fails is retried with kube-runtime's default backoff; when it has to start over,
//! it re-lists, and whatever the re-list no longer holds is removed.

use std::{
    collections::{BTreeMap, BTreeSet},
    pin::pin,
    sync::Arc,
};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    api::Api,
    runtime::{WatchStreamExt, watcher, watcher::Event},
};
use tokio::{sync::watch, task::JoinHandle};
use tokio_stream::StreamExt;

use super::{
    group::pod_key,
    placed::{PlacedPod, PlacementIndex, PodEvent, WaitingPod},
    source::{AgentConnector, watch_agent},
    view::{SharedView, ViewEvent},
};
use crate::backoff::Backoff;

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

/// Settings of the cluster loops.
#[derive(Clone)]
pub struct ClusterSource {
    /// API client.
    pub client: kube::Client,
    /// The agents' gRPC port.
    pub agent_port: u16,
    /// Connects to agents.
    pub connector: Arc<dyn AgentConnector>,
    /// Reconnect backoff of each agent task.
    pub backoff: Backoff,
    /// Nodes whose agent endpoint is given elsewhere (`--agents`): labels only.
    pub exclude: BTreeSet<String>,
}

/// One running [`watch_agent`] task.
struct AgentTask {
    endpoint: String,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl AgentTask {
    /// Stops it at once (even in the middle of a connect) and waits until it is gone, so that
    /// it writes nothing into the view afterwards.
    async fn cancel(self) {
        let _ = self.stop.send(true);
        self.handle.abort();
        let _ = self.handle.await;
    }

    /// Asks it to stop and waits for it.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

/// What the Node watch has told so far, and the agent tasks that follow from it.
struct NodeState<'a> {
    src: &'a ClusterSource,
    view: &'a SharedView,
    /// node → its agent task (nodes with an endpoint, outside `exclude`).
    tasks: BTreeMap<String, AgentTask>,
    /// Every node the watch has reported and not deleted.
    known: BTreeSet<String>,
    /// The nodes seen so far in a (re)list in progress.
    relist: Option<BTreeSet<String>>,
}

impl<'a> NodeState<'a> {
    fn new(src: &'a ClusterSource, view: &'a SharedView) -> Self {
        Self {
            src,
            view,
            tasks: BTreeMap::new(),
            known: BTreeSet::new(),
            relist: None,
        }
    }

    async fn handle(&mut self, event: Event<Node>) {
        match event {
            Event::Init => self.relist = Some(BTreeSet::new()),
            Event::InitApply(node) => {
                if let Some(name) = self.apply(&node).await
                    && let Some(seen) = &mut self.relist
                {
                    seen.insert(name);
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.relist.take() {
                    let gone: Vec<String> = self.known.difference(&seen).cloned().collect();
                    for name in gone {
                        self.remove(&name).await;
                    }
                }
                // Decoding the whole list left freed memory behind, most of it in pages that
                // the allocator keeps; hand it back.
                crate::memory::release_freed_memory();
            }
            Event::Apply(node) => {
                self.apply(&node).await;
            }
            Event::Delete(node) => {
                if let Some(name) = &node.metadata.name {
                    self.remove(name).await;
                }
            }
        }
    }

    /// A node was added or changed: its labels, and its agent task (started, restarted on a new
    /// endpoint, or stopped when it has none). Returns its name.
    async fn apply(&mut self, node: &Node) -> Option<String> {
        let name = node.metadata.name.clone()?;
        self.known.insert(name.clone());
        self.view.apply(ViewEvent::Labels {
            node: name.clone(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
        });
        if self.src.exclude.contains(&name) {
            return Some(name);
        }
        let endpoint = node_endpoint(node, self.src.agent_port);
        if let (Some(task), Some(ep)) = (self.tasks.get(&name), &endpoint)
            && task.endpoint == *ep
        {
            return Some(name);
        }
        if let Some(task) = self.tasks.remove(&name) {
            tracing::info!(node = %name, endpoint = %task.endpoint, "agent endpoint changed or gone");
            task.cancel().await;
            if endpoint.is_none() {
                self.view.apply(ViewEvent::Disconnected {
                    node: name.clone(),
                    reason: "the node has no InternalIP".into(),
                });
            }
        }
        if let Some(ep) = endpoint {
            tracing::debug!(node = %name, endpoint = %ep, "starting agent task");
            let (stop, rx) = watch::channel(false);
            let handle = tokio::spawn(watch_agent(
                name.clone(),
                ep.clone(),
                self.src.connector.clone(),
                self.view.clone(),
                self.src.backoff,
                rx,
            ));
            self.tasks.insert(
                name.clone(),
                AgentTask {
                    endpoint: ep,
                    stop,
                    handle,
                },
            );
        }
        Some(name)
    }

    /// A node is gone: its agent task stops and it leaves the view.
    async fn remove(&mut self, name: &str) {
        self.known.remove(name);
        if let Some(task) = self.tasks.remove(name) {
            task.cancel().await;
        }
        if !self.src.exclude.contains(name) {
            tracing::info!(node = %name, "node gone");
            self.view.apply(ViewEvent::Removed { node: name.into() });
        }
    }

    /// Stops every agent task and waits for them.
    async fn shutdown(self) {
        for (_, task) in self.tasks {
            task.stop().await;
        }
    }
}

/// Feeds one Pod watch event to `placements`; `relist` buffers the placed pods of a (re)list
/// until it is complete.
fn on_pod_event(
    placements: &dyn PlacementIndex,
    relist: &mut Option<(Vec<PlacedPod>, Vec<WaitingPod>)>,
    event: Event<Pod>,
) {
    match event {
        Event::Init => *relist = Some(Default::default()),
        Event::InitApply(pod) => match (PodEvent::from_pod(&pod), &mut *relist) {
            (Some(PodEvent::Placed(p)), Some(buf)) => buf.0.push(p),
            (Some(PodEvent::Waiting(w)), Some(buf)) => buf.1.push(w),
            _ => {}
        },
        Event::InitDone => {
            if let Some((placed, waiting)) = relist.take() {
                placements.replace_all(placed);
                placements.replace_waiting(waiting);
            }
        }
        Event::Apply(pod) => {
            if let Some(ev) = PodEvent::from_pod(&pod) {
                placements.apply(ev);
            }
        }
        Event::Delete(pod) => {
            if let Some(pod) = pod_key(&pod) {
                placements.apply(PodEvent::Removed { pod });
            }
        }
    }
}

impl ClusterSource {
    /// Watches Nodes until `stop`; keeps one agent task per node.
    pub async fn run_nodes(self, view: SharedView, mut stop: watch::Receiver<bool>) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut events = pin!(watcher(api, watcher::Config::default()).default_backoff());
        let mut nodes = NodeState::new(&self, &view);
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                _ = stop.changed() => break,
            };
            match event {
                Some(Ok(event)) => nodes.handle(event).await,
                Some(Err(e)) => tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "watching nodes failed; retrying"
                ),
                None => {
                    tracing::warn!("the node watch ended");
                    break;
                }
            }
        }
        nodes.shutdown().await;
    }

    /// Watches bound Pods until `stop` and keeps the placements.
    pub async fn run_pods(
        self,
        placements: Arc<dyn PlacementIndex>,
        mut stop: watch::Receiver<bool>,
    ) {
        let api: Api<Pod> = Api::all(self.client.clone());
        // Every pod, bound or not: a group's pods still waiting to be bound are the room its
        // counterpart must leave nearby.
        let config = watcher::Config::default();
        let mut events = pin!(watcher(api, config).default_backoff());
        let mut relist = None;
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                _ = stop.changed() => return,
            };
            match event {
                Some(Ok(event)) => on_pod_event(placements.as_ref(), &mut relist, event),
                Some(Err(e)) => tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "watching pods failed; retrying"
                ),
                None => {
                    tracing::warn!("the pod watch ended");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Mutex, time::Duration};

    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};
    use tokio::sync::mpsc;
    use tower_test::mock;

    use super::*;
    use crate::extender::{
        placed::MemoryPlacementIndex,
        source::{BoxFuture, SourceError, TopologyStream},
        view::{ClusterView, LabelKeys},
    };

    /// Records the endpoints it is asked for and refuses them all.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Recorder {
        fn seen(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

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
                    source: "test".into(),
                })
            })
        }
    }

    /// A fake API server for one resource path: each LIST is answered with the next queued
    /// list, each WATCH (`watch=true`) with the next queued batch of watch events (one JSON
    /// line each, then the end of the body, after which the watcher watches again). A request
    /// waits until its answer is queued. `requests` records `LIST ?query` / `WATCH ?query`.
    struct FakeApi {
        lists: mpsc::UnboundedSender<Value>,
        watches: mpsc::UnboundedSender<Vec<Value>>,
        requests: Arc<Mutex<Vec<String>>>,
        server: JoinHandle<()>,
    }

    impl FakeApi {
        fn start(path: &'static str) -> (kube::Client, FakeApi) {
            let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
            let (lists, mut list_rx) = mpsc::unbounded_channel::<Value>();
            let (watches, mut watch_rx) = mpsc::unbounded_channel::<Vec<Value>>();
            let requests = Arc::new(Mutex::new(Vec::new()));
            let log = requests.clone();
            let server = tokio::spawn(async move {
                while let Some((req, send)) = handle.next_request().await {
                    assert_eq!(req.method(), http::Method::GET);
                    assert_eq!(req.uri().path(), path, "{:?}", req.uri());
                    let query = req.uri().query().unwrap_or_default().to_string();
                    let watch = query.split('&').any(|kv| kv == "watch=true");
                    let kind = if watch { "WATCH" } else { "LIST" };
                    log.lock().unwrap().push(format!("{kind} ?{query}"));
                    let body = if watch {
                        let Some(events) = watch_rx.recv().await else {
                            return;
                        };
                        events
                            .iter()
                            .map(|e| format!("{e}\n"))
                            .collect::<String>()
                            .into_bytes()
                    } else {
                        let Some(list) = list_rx.recv().await else {
                            return;
                        };
                        serde_json::to_vec(&list).unwrap()
                    };
                    send.send_response(
                        Response::builder()
                            .status(200)
                            .body(Body::from(body))
                            .unwrap(),
                    );
                }
            });
            let client = kube::Client::new(svc, "default");
            (
                client,
                FakeApi {
                    lists,
                    watches,
                    requests,
                    server,
                },
            )
        }

        fn list(&self, list: Value) {
            self.lists.send(list).unwrap();
        }

        fn watch(&self, events: Vec<Value>) {
            self.watches.send(events).unwrap();
        }

        fn requests(&self) -> Vec<String> {
            self.requests.lock().unwrap().clone()
        }
    }

    /// Waits (up to 10 s) until `done` holds.
    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn node(name: &str, rv: &str, ip: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "resourceVersion": rv, "labels": labels},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
    }

    fn node_list(rv: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": rv},
            "items": items})
    }

    fn source(client: kube::Client, rec: Arc<Recorder>) -> ClusterSource {
        ClusterSource {
            client,
            agent_port: 9750,
            connector: rec,
            backoff: Backoff::fixed(Duration::from_secs(3600), Duration::from_secs(3600)),
            exclude: ["pinned".to_string()].into(),
        }
    }

    #[tokio::test]
    async fn node_watch_feeds_the_view_and_the_agent_tasks() {
        let (client, api) = FakeApi::start("/api/v1/nodes");
        let rec = Arc::new(Recorder::default());
        let view = SharedView::new(ClusterView::new(LabelKeys {
            prefix: "nodetopo.io".into(),
            block_label: Some("leaf".into()),
        }));
        let (stop_tx, stop_rx) = watch::channel(false);
        let nodes = tokio::spawn(source(client, rec.clone()).run_nodes(view.clone(), stop_rx));
        let block =
            |node: &str| view.read(|v| v.resolve(node, None).and_then(|r| r.facts.block.clone()));
        let leaf =
            |node: &str| view.read(|v| v.entry(node).and_then(|e| e.labels.get("leaf").cloned()));
        let has = |node: &str| view.read(|v| v.entry(node).is_some());

        // The first list: one agent task per node with an InternalIP, none for the pinned one.
        api.list(node_list(
            "1",
            vec![
                node(
                    "a",
                    "1",
                    "10.0.0.1",
                    json!({"leaf": "l1",
                    "nodetopo.io/gpu.count": "4", "nodetopo.io/rdma.link-layer": "ethernet"}),
                ),
                node("pinned", "1", "10.0.0.2", json!({})),
            ],
        ));
        eventually("node a's agent task and the pinned node", || {
            !rec.seen().is_empty() && has("pinned")
        })
        .await;
        assert_eq!(rec.seen(), ["10.0.0.1:9750"]);
        assert_eq!(block("a").as_deref(), Some("l1"));

        // Watched: a new node.
        api.watch(vec![json!({"type": "ADDED",
            "object": node("b", "2", "10.0.0.3", json!({"leaf": "l2"}))})]);
        eventually("node b's agent task", || rec.seen().len() == 2).await;
        assert_eq!(rec.seen()[1], "10.0.0.3:9750");
        assert_eq!(leaf("b").as_deref(), Some("l2"));

        // Watched: a deleted node leaves the view; a moved one gets a new agent task.
        api.watch(vec![
            json!({"type": "DELETED", "object": node("a", "3", "10.0.0.1", json!({}))}),
            json!({"type": "MODIFIED",
                "object": node("b", "4", "10.0.0.4", json!({"leaf": "l3"}))}),
        ]);
        eventually("node b's new agent task", || rec.seen().len() == 3).await;
        assert_eq!(rec.seen()[2], "10.0.0.4:9750");
        assert!(!has("a"));
        assert_eq!(leaf("b").as_deref(), Some("l3"));

        // The watch expires (410): the re-list no longer holds b, so b goes too.
        api.watch(vec![json!({"type": "ERROR", "object": {"apiVersion": "v1",
            "kind": "Status", "status": "Failure", "reason": "Expired", "code": 410,
            "message": "too old resource version"}})]);
        api.list(node_list(
            "5",
            vec![node("pinned", "5", "10.0.0.2", json!({}))],
        ));
        eventually("node b leaves the view", || !has("b")).await;
        assert!(has("pinned"));
        assert_eq!(rec.seen().len(), 3, "no task for the pinned node");

        let requests = api.requests();
        let kinds: Vec<&str> = requests
            .iter()
            .map(|r| r.split(' ').next().unwrap_or_default())
            .collect();
        assert_eq!(
            kinds[..5],
            ["LIST", "WATCH", "WATCH", "WATCH", "LIST"],
            "{requests:?}"
        );
        assert!(requests[2].contains("resourceVersion=2"), "{requests:?}");

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), nodes)
            .await
            .expect("the node loop stops")
            .unwrap();
        api.server.abort();
    }

    fn pod(name: &str, rv: &str, node: &str, phase: Option<&str>) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv,
                "labels": {"llm-d.ai/role": "decode"}},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase.unwrap_or("Running")}})
    }

    fn pod_list(rv: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": rv},
            "items": items})
    }

    #[tokio::test]
    async fn pod_watch_feeds_the_placements() {
        let (client, api) = FakeApi::start("/api/v1/pods");
        let placements = Arc::new(MemoryPlacementIndex::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let pods = tokio::spawn(
            source(client, Arc::new(Recorder::default())).run_pods(placements.clone(), stop_rx),
        );
        let placed = || {
            let mut p: Vec<(String, String)> =
                placements.summary().into_values().flatten().collect();
            p.sort();
            p
        };
        let pair = |p: &str, n: &str| (p.to_string(), n.to_string());

        api.list(pod_list("1", vec![pod("p", "1", "a", None)]));
        eventually("the listed pod is placed", || placements.len() == 1).await;
        assert_eq!(placed(), [pair("ns/p", "a")]);

        api.watch(vec![
            json!({"type": "ADDED", "object": pod("q", "2", "b", None)}),
        ]);
        eventually("the added pod is placed", || placements.len() == 2).await;

        // Deleted, or finished: no longer placed.
        api.watch(vec![
            json!({"type": "DELETED", "object": pod("p", "3", "a", None)}),
            json!({"type": "ADDED", "object": pod("r", "4", "c", None)}),
            json!({"type": "MODIFIED", "object": pod("r", "5", "c", Some("Succeeded"))}),
            json!({"type": "ADDED", "object": pod("s", "6", "d", None)}),
        ]);
        eventually("the last pod is placed", || {
            placed().contains(&pair("ns/s", "d"))
        })
        .await;
        assert_eq!(placed(), [pair("ns/q", "b"), pair("ns/s", "d")]);

        // A re-list replaces everything: q was deleted while the watch was down.
        api.watch(vec![json!({"type": "ERROR", "object": {"apiVersion": "v1",
            "kind": "Status", "status": "Failure", "reason": "Expired", "code": 410}})]);
        api.list(pod_list(
            "9",
            vec![pod("s", "6", "d", None), pod("t", "8", "e", None)],
        ));
        eventually("the re-list replaces the placements", || {
            placed() == [pair("ns/s", "d"), pair("ns/t", "e")]
        })
        .await;

        let requests = api.requests();
        assert!(requests.len() >= 5, "{requests:?}");
        // Every pod is watched: unbound group pods are the demand a counterpart leaves room for.
        for r in &requests {
            assert!(!r.contains("fieldSelector"), "{r}");
        }

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), pods)
            .await
            .expect("the pod loop stops")
            .unwrap();
        api.server.abort();
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
}
