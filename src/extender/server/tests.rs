use std::collections::BTreeMap;

use axum::body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::extender::{
    placed::MemoryPlacementIndex,
    policy::Weights,
    view::{ClusterView, LabelKeys, SharedView, ViewEvent},
    wire::{ExtenderFilterResult, HostPriorityList},
};

fn ext() -> Extender {
    let view = SharedView::new(ClusterView::new(LabelKeys {
        prefix: "nodetopo.io".into(),
        block_label: Some("leaf".into()),
    }));
    let labels = |clique: &str| -> BTreeMap<String, String> {
        [
            ("nodetopo.io/gpu.count", "4"),
            ("nodetopo.io/nvlink.fabric", "ready"),
            ("nodetopo.io/nvlink.domain", clique),
            ("nodetopo.io/rdma.link-layer", "infiniband"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    view.apply(ViewEvent::Labels {
        node: "a".into(),
        labels: labels("u.0"),
    });
    view.apply(ViewEvent::Labels {
        node: "b".into(),
        labels: labels("u.1"),
    });
    Extender::new(
        view,
        Arc::new(MemoryPlacementIndex::new()),
        Weights::default(),
    )
}

async fn call(app: Router, method: &str, uri: &str, body: String) -> (StatusCode, Vec<u8>) {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, bytes)
}

const POD: &str = r#"{"metadata":{"name":"p","namespace":"ns","labels":{"leaderworkerset.sigs.k8s.io/name":"d"},"annotations":{"leaderworkerset.sigs.k8s.io/size":"2"}},"spec":{"containers":[{"name":"c","resources":{"limits":{"nvidia.com/gpu":"4"}}}]}}"#;

#[tokio::test]
async fn pods_the_extender_does_not_place_pass_every_node() {
    // No GPU request (a group's router, a CPU pod), and a GPU pod in no group.
    let cpu = POD.replace(r#"{"limits":{"nvidia.com/gpu":"4"}}"#, "{}");
    let single = r#"{"metadata":{"name":"s","namespace":"ns"},"spec":{"containers":[{"name":"c","resources":{"limits":{"nvidia.com/gpu":"1"}}}]}}"#;
    for pod in [cpu.as_str(), single] {
        let app = router(ext(), ServerConfig::default());
        let body = format!(r#"{{"Pod":{pod},"NodeNames":["a","b","ghost"]}}"#);
        let (s, b) = call(app.clone(), "POST", "/filter", body.clone()).await;
        assert_eq!(s, StatusCode::OK);
        let r: ExtenderFilterResult = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            r.node_names,
            Some(vec!["a".into(), "b".into(), "ghost".into()]),
            "{pod}"
        );
        assert!(r.failed_and_unresolvable_nodes.is_empty(), "{pod}");
        let (s, _) = call(app, "POST", "/prioritize", body).await;
        assert_eq!(s, StatusCode::OK);
    }
}

#[tokio::test]
async fn malformed_json_is_400_with_a_message() {
    let app = router(ext(), ServerConfig::default());
    let (s, b) = call(app, "POST", "/filter", "{not json".into()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("malformed ExtenderRequest JSON"));
    let app = router(ext(), ServerConfig::default());
    let (s, b) = call(
        app.clone(),
        "POST",
        "/prioritize",
        r#"{"NodeNames":["a"]}"#.into(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("Pod is missing"));
    let (s, b) = call(app, "POST", "/filter", format!(r#"{{"Pod":{POD}}}"#)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("neither Nodes nor NodeNames"));
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let cfg = ServerConfig {
        body_limit: 64,
        ..Default::default()
    };
    let (s, _) = call(router(ext(), cfg), "POST", "/filter", "x".repeat(1000)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn names_only_mode_with_unknown_node() {
    let cfg = ServerConfig {
        prefix: "/ext/".into(),
        ..Default::default()
    };
    let app = router(ext(), cfg);
    let body = format!(r#"{{"Pod":{POD},"NodeNames":["a","b","ghost"]}}"#);
    let (s, b) = call(app.clone(), "POST", "/ext/filter", body.clone()).await;
    assert_eq!(s, StatusCode::OK);
    let r: ExtenderFilterResult = serde_json::from_slice(&b).unwrap();
    assert_eq!(r.node_names, Some(vec!["a".into(), "b".into()]));
    assert!(r.nodes.is_none());
    assert!(r.failed_and_unresolvable_nodes["ghost"].contains("unknown node"));
    let (s, b) = call(app, "POST", "/ext/prioritize", body).await;
    assert_eq!(s, StatusCode::OK);
    let p: HostPriorityList = serde_json::from_slice(&b).unwrap();
    assert_eq!(p.len(), 3);
    assert!(p.iter().all(|h| (0..=10).contains(&h.score)));
    assert_eq!(p[2].score, 0);
}

#[tokio::test]
async fn full_nodes_mode_uses_request_labels() {
    let app = router(ext(), ServerConfig::default());
    // "c" is unknown to the view but carries the agent's labels; "d" has none (a CPU node).
    let body = format!(
        r#"{{"Pod":{POD},"Nodes":{{"items":[
            {{"metadata":{{"name":"a"}}}},
            {{"metadata":{{"name":"c","labels":{{"nodetopo.io/gpu.count":"4","nodetopo.io/rdma.link-layer":"ethernet"}}}}}},
            {{"metadata":{{"name":"d","labels":{{"kubernetes.io/os":"linux"}}}}}}]}}}}"#
    );
    let (s, b) = call(app.clone(), "POST", "/filter", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let r: ExtenderFilterResult = serde_json::from_slice(&b).unwrap();
    let kept: Vec<_> = r
        .nodes
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.name)
        .collect();
    assert_eq!(kept, vec!["a", "c"]);
    assert!(r.node_names.is_none());
    assert!(r.failed_and_unresolvable_nodes["d"].contains("no topology"));
    let (s, b) = call(app, "POST", "/debug/explain", body).await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["scores"][1]["freshness"], "labels-only");
}

#[tokio::test]
async fn placements_only_when_enabled_and_health() {
    let app = router(ext(), ServerConfig::default());
    let (s, _) = call(app.clone(), "POST", "/debug/placed", POD.into()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = call(app, "GET", "/healthz", String::new()).await;
    assert_eq!((s, b.as_slice()), (StatusCode::OK, b"ok".as_slice()));

    let e = ext();
    let cfg = ServerConfig {
        debug_placements: true,
        ..Default::default()
    };
    let app = router(e.clone(), cfg);
    let bound = POD.replace(r#""spec":{"#, r#""spec":{"nodeName":"a","#);
    let (s, _) = call(app.clone(), "POST", "/debug/placed", bound).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(e.placements.members("ns/lws:d/0").len(), 1);
    let (s, _) = call(app, "POST", "/debug/placed", "[]".into()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
