use std::sync::Mutex;

use super::*;
use crate::backoff::Backoff;
use crate::extender::view::{ClusterView, Freshness, LabelKeys};

#[test]
fn agents_file_yaml_and_json() {
    let y = "a: 10.0.0.1:9750\nb:\n  endpoint: file:/x.json\n  labels: {leaf: l1}\nc:\n  labels: {leaf: l2}\n";
    let e = AgentEndpoints::parse(y, Path::new("agents.yaml")).unwrap();
    assert_eq!(e.endpoints["a"], "10.0.0.1:9750");
    assert_eq!(e.endpoints["b"], "file:/x.json");
    assert!(!e.endpoints.contains_key("c"));
    assert_eq!(e.labels["c"]["leaf"], "l2");
    let j = r#"{"a": "h:1", "b": {"endpoint": "h:2"}}"#;
    let e = AgentEndpoints::parse(j, Path::new("agents.json")).unwrap();
    assert_eq!(e.endpoints.len(), 2);
    let err = AgentEndpoints::parse("a: [1, 2]", Path::new("bad.yaml")).unwrap_err();
    assert!(err.to_string().contains("bad.yaml"), "{err}");
}

/// A connector whose behaviour the test scripts: each connect pops one plan.
struct Scripted {
    plans: Mutex<Vec<Option<Vec<NodeTopology>>>>,
    connects: Mutex<u32>,
}

struct VecStream(Vec<NodeTopology>);

impl TopologyStream for VecStream {
    fn next(&mut self) -> BoxFuture<'_, Option<Result<NodeTopology, SourceError>>> {
        Box::pin(async move {
            if self.0.is_empty() {
                None
            } else {
                Some(Ok(self.0.remove(0)))
            }
        })
    }
}

impl AgentConnector for Scripted {
    fn connect<'a>(
        &'a self,
        endpoint: &'a str,
        _since: u64,
    ) -> BoxFuture<'a, Result<Box<dyn TopologyStream>, SourceError>> {
        Box::pin(async move {
            *self.connects.lock().unwrap() += 1;
            let plan = {
                let mut p = self.plans.lock().unwrap();
                if p.is_empty() { None } else { p.remove(0) }
            };
            match plan {
                Some(items) => Ok(Box::new(VecStream(items)) as Box<dyn TopologyStream>),
                None => Err(SourceError::Connect {
                    endpoint: endpoint.into(),
                    source: "refused".into(),
                }),
            }
        })
    }
}

fn topo(rev: u64) -> NodeTopology {
    NodeTopology {
        node_name: "n".into(),
        revision: rev,
        ..Default::default()
    }
}

fn empty_view() -> SharedView {
    SharedView::new(ClusterView::new(LabelKeys {
        prefix: "nodetopo.io".into(),
        block_label: None,
    }))
}

/// Watches node `n`'s agent at `agent:1` through `conn` into `view`, with a short backoff.
fn watch_node_n(
    conn: Arc<Scripted>,
    view: &SharedView,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(watch_agent(
        "n".into(),
        "agent:1".into(),
        conn,
        view.clone(),
        Backoff::fixed(Duration::from_millis(20), Duration::from_millis(40)),
        stop_rx,
    ));
    (stop_tx, task)
}

async fn wait_for(view: &SharedView, want: Freshness, rev: Option<u64>) {
    for _ in 0..400 {
        let ok = view.read(|v| {
            v.resolve("n", None).map(|r| r.freshness) == Some(want)
                && rev.is_none_or(|r| {
                    v.entry("n")
                        .and_then(|e| e.topology.as_ref())
                        .is_some_and(|t| t.revision == r)
                })
        });
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("node never became {want:?} at {rev:?}");
}

/// On paused time: the backoff sleeps and the polling below advance the clock only when every
/// task is idle, so the test neither waits on nor races the wall clock.
#[tokio::test(start_paused = true)]
async fn watcher_marks_stale_and_recovers() {
    let view = empty_view();
    let conn = Arc::new(Scripted {
        // Connect 1: two updates then the stream ends; connect 2: refused; connect 3: one update,
        // then the stream ends again, and every later connect is refused.
        plans: Mutex::new(vec![
            Some(vec![topo(1), topo(2)]),
            None,
            Some(vec![topo(3)]),
        ]),
        connects: Mutex::new(0),
    });
    let (stop_tx, task) = watch_node_n(conn.clone(), &view);
    wait_for(&view, Freshness::Stale, Some(2)).await;
    wait_for(&view, Freshness::Stale, Some(3)).await;
    assert!(*conn.connects.lock().unwrap() >= 3);
    view.read(|v| {
        assert!(
            v.entry("n").unwrap().stale_reason.contains("refused")
                || v.entry("n").unwrap().stale_reason.contains("ended")
        )
    });
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("watcher stops")
        .unwrap();
}

/// An endpoint that answers for another node is not this node's agent: its topology is not
/// taken, and the node is marked with the reason until its own agent answers.
#[tokio::test(start_paused = true)]
async fn an_agent_of_another_node_is_not_taken_for_this_one() {
    let view = empty_view();
    let mut other = topo(7);
    other.node_name = "m".into();
    // Connect 1: another node's agent; connect 2: refused; connect 3: this node's own.
    let conn = Arc::new(Scripted {
        plans: Mutex::new(vec![Some(vec![other]), None, Some(vec![topo(8)])]),
        connects: Mutex::new(0),
    });
    let (stop_tx, task) = watch_node_n(conn.clone(), &view);
    let mut reasons = Vec::new();
    for _ in 0..400 {
        let (reason, taken) = view.read(|v| {
            let e = v.entry("n");
            (
                e.map(|e| e.stale_reason.clone()).unwrap_or_default(),
                e.and_then(|e| e.topology.as_ref().map(|t| t.node_name.clone())),
            )
        });
        assert_ne!(taken.as_deref(), Some("m"), "another node's facts taken");
        if taken.as_deref() == Some("n") {
            break;
        }
        if !reason.is_empty() && !reasons.contains(&reason) {
            reasons.push(reason);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("answers for node \"m\", not \"n\"")),
        "{reasons:?}"
    );
    wait_for(&view, Freshness::Stale, Some(8)).await;
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("watcher stops")
        .unwrap();
}

#[tokio::test]
async fn file_connector_streams_changes_and_fails_when_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.json");
    let c = FileConnector {
        poll: Duration::from_millis(5),
    };
    let ep = format!("file:{}", path.display());
    assert!(c.connect(&ep, 0).await.is_err());
    std::fs::write(&path, serde_json::to_string(&topo(7)).unwrap()).unwrap();
    let mut s = c.connect(&ep, 0).await.unwrap();
    assert_eq!(s.next().await.unwrap().unwrap().revision, 7);
    std::fs::remove_file(&path).unwrap();
    assert!(s.next().await.unwrap().is_err());
}

/// The whole cause chain of an error, as the log line prints it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

#[tokio::test]
async fn a_refused_connection_keeps_its_cause() {
    // A port nothing listens on: the transport error alone says only "transport error".
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    let Err(e) = crate::extender::grpc::GrpcConnector::default()
        .connect(&endpoint, 0)
        .await
    else {
        panic!("connected to a closed port");
    };
    let text = chain(&e);
    assert!(
        text.starts_with(&format!("connecting to {endpoint}")),
        "{text}"
    );
    assert!(
        text.to_ascii_lowercase().contains("connection refused"),
        "the cause is lost: {text}"
    );
}
