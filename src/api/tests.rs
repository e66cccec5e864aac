//! gRPC service tests, calling the trait methods directly.

use std::sync::atomic::{AtomicI64, Ordering};

use tokio_stream::StreamExt;

use super::*;
use crate::model::Gpu;

#[derive(Default)]
struct Count(AtomicI64);

impl WatcherGauge for Count {
    fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::SeqCst);
    }
}

fn topo(revision: u64) -> Arc<Published> {
    Arc::new(Published::new(NodeTopology {
        node_name: "n".into(),
        revision,
        gpus: vec![Gpu {
            index: 0,
            uuid: "GPU-0".into(),
            ..Gpu::default()
        }],
        ..NodeTopology::default()
    }))
}

fn api(max: usize) -> (watch::Sender<Arc<Published>>, TopologyApi, Arc<Count>) {
    let (tx, rx) = watch::channel(Arc::new(Published::default()));
    let count = Arc::new(Count::default());
    (tx, TopologyApi::new(rx, max, count.clone()), count)
}

async fn watch(api: &TopologyApi, since: u64) -> Result<WatchStream, Status> {
    api.watch_node_topology(Request::new(pb::WatchNodeTopologyRequest {
        since_revision: since,
    }))
    .await
    .map(Response::into_inner)
}

/// The revision of a stream item, read back through its wire form as a client would.
fn rev(m: Option<Result<pb::WatchNodeTopologyResponse, Status>>) -> u64 {
    use prost::Message;
    let bytes = m.expect("a message").expect("not an error").encode_to_vec();
    pb::WatchNodeTopologyResponse::decode(bytes.as_slice())
        .unwrap()
        .topology
        .expect("a topology")
        .revision
}

/// A Get response read back through its wire form.
fn decoded(r: pb::GetNodeTopologyResponse) -> pb::NodeTopology {
    use prost::Message;
    pb::GetNodeTopologyResponse::decode(r.encode_to_vec().as_slice())
        .unwrap()
        .topology
        .expect("a topology")
}

#[tokio::test]
async fn get_returns_current_state() {
    let (tx, api, _) = api(4);
    let r = api
        .get_node_topology(Request::new(pb::GetNodeTopologyRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decoded(r).revision, 0, "before the first probe");
    tx.send(topo(7)).unwrap();
    let r = api
        .get_node_topology(Request::new(pb::GetNodeTopologyRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decoded(r).node_name, "n");
}

#[tokio::test]
async fn watch_sends_current_if_newer_then_changes() {
    let (tx, api, _) = api(4);
    tx.send(topo(5)).unwrap();
    let mut s = watch(&api, 0).await.unwrap();
    assert_eq!(rev(s.next().await), 5);
    let mut up_to_date = watch(&api, 5).await.unwrap();
    tx.send(topo(6)).unwrap();
    assert_eq!(rev(s.next().await), 6);
    assert_eq!(rev(up_to_date.next().await), 6, "revision 5 was not resent");
}

#[tokio::test]
async fn slow_watcher_gets_latest_state_not_backlog() {
    let (tx, api, _) = api(4);
    tx.send(topo(1)).unwrap();
    let mut s = watch(&api, 0).await.unwrap();
    for r in 2..=50 {
        tx.send(topo(r)).unwrap();
        tokio::task::yield_now().await;
    }
    // At most one buffered message, then the latest.
    let first = rev(s.next().await);
    let second = if first == 50 { 50 } else { rev(s.next().await) };
    assert_eq!(second, 50, "first {first}");
}

#[tokio::test(start_paused = true)]
async fn watcher_cap_is_resource_exhausted() {
    let (tx, api, count) = api(2);
    tx.send(topo(1)).unwrap();
    let a = watch(&api, 0).await.unwrap();
    let _b = watch(&api, 0).await.unwrap();
    let err = watch(&api, 0).await.err().expect("over the cap");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(count.0.load(Ordering::SeqCst), 2);
    drop(a);
    // The slot frees once the stream's task sees the closed receiver.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if watch(&api, 0).await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn hints_unknown_gpu_is_invalid_argument() {
    let (tx, api, _) = api(1);
    tx.send(topo(1)).unwrap();
    let err = api
        .get_placement_hints(Request::new(pb::GetPlacementHintsRequest {
            gpus: vec!["GPU-nope".into()],
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("GPU-nope"), "{}", err.message());
    let ok = api
        .get_placement_hints(Request::new(pb::GetPlacementHintsRequest {
            gpus: vec!["0".into()],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.revision, 1);
    // A consumer this agent does not know (a newer client) is refused, not served as another.
    let err = api
        .get_placement_hints(Request::new(pb::GetPlacementHintsRequest {
            gpus: vec!["0".into()],
            consumer: 7,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("consumer 7"), "{}", err.message());
}

#[test]
fn a_state_is_encoded_once_and_only_when_read() {
    use prost::Message;
    let p = Published::clone(&topo(3));
    assert!(!p.is_encoded(), "nobody read it yet");
    let get = p.get_response().encode_to_vec();
    assert!(p.is_encoded());
    // Get and Watch send the same body, and a clone shares the encoding.
    let copy = p.clone();
    assert_eq!(copy.watch_message().encode_to_vec(), get);
    let back = pb::GetNodeTopologyResponse::decode(get.as_slice()).unwrap();
    assert_eq!(back.topology.unwrap().revision, 3);
}
