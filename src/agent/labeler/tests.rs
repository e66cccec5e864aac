//! Label writer tests at the HTTP boundary: a mock API server checks every request.

use std::time::{Duration, SystemTime};

use http::{Request, Response};
use kube::client::Body;
use tower_test::mock;

use super::*;
use crate::backoff::Backoff;
use crate::labels::{LabelConfig, LabelKey, LabelValue};

type Handle = mock::Handle<Request<Body>, Response<Body>>;

fn labels(count: &str) -> Labels {
    let p = LabelConfig::default();
    let mut l = Labels::new();
    l.insert(
        LabelKey::new(Some(p.prefix()), "gpu.count").unwrap(),
        LabelValue::new(count).unwrap(),
    );
    l.insert(
        LabelKey::new(Some(p.prefix()), "gpu.product").unwrap(),
        LabelValue::new("NVIDIA-H200").unwrap(),
    );
    l
}

fn labeler() -> (NodeLabeler, Handle, Metrics) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let metrics = Metrics::new();
    (
        NodeLabeler::new(
            client,
            "node-a".into(),
            Duration::from_secs(10),
            metrics.clone(),
        ),
        handle,
        metrics,
    )
}

/// Checks one SSA request and returns its labels.
async fn expect_apply(req: Request<Body>) -> serde_json::Map<String, serde_json::Value> {
    assert_eq!(req.method(), http::Method::PATCH);
    assert_eq!(req.uri().path(), "/api/v1/nodes/node-a");
    let query = req.uri().query().unwrap_or_default().to_string();
    let params: Vec<&str> = query.split('&').filter(|s| !s.is_empty()).collect();
    assert!(params.contains(&"fieldManager=nodetopo"), "{query}");
    assert!(params.contains(&"force=true"), "{query}");
    assert_eq!(
        req.headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/apply-patch+yaml")
    );
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["kind"], "Node");
    let meta = body["metadata"].as_object().unwrap();
    let mut keys: Vec<&str> = meta.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["labels", "name"], "only name and labels: {body}");
    assert_eq!(meta["name"], "node-a");
    let others: Vec<&String> = body
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !["apiVersion", "kind", "metadata"].contains(&k.as_str()))
        .collect();
    assert!(others.is_empty(), "nothing but metadata: {body}");
    meta["labels"].as_object().unwrap().clone()
}

fn node_ok() -> Response<Body> {
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a", "labels": {"nodetopo.io/gpu.count": "4"}},
    });
    Response::builder()
        .status(200)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

/// Answers the one GET of the Node that precedes the first write with `resp`.
async fn expect_get(handle: &mut Handle, resp: Response<Body>) {
    let (req, send) = handle.next_request().await.expect("a GET first");
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(req.uri().path(), "/api/v1/nodes/node-a");
    send.send_response(resp);
}

/// A Node whose labels `owned` are owned by field manager `manager` through apply.
fn node_owned_by(manager: &str, labels: &[(&str, &str)], owned: &[&str]) -> Response<Body> {
    let fields: serde_json::Map<String, serde_json::Value> = owned
        .iter()
        .map(|k| (format!("f:{k}"), serde_json::json!({})))
        .collect();
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), serde_json::json!(v)))
        .collect();
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a", "labels": labels, "managedFields": [{
            "manager": manager, "operation": "Apply", "apiVersion": "v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": fields}},
        }]},
    });
    Response::builder()
        .status(200)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn status(code: u16, reason: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("injected {code}"), "reason": reason, "code": code,
    });
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn as_map(l: &Labels) -> serde_json::Map<String, serde_json::Value> {
    l.iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect()
}

#[tokio::test]
async fn apply_sends_exactly_the_desired_labels_once() {
    let (mut labeler, mut handle, metrics) = labeler();
    let want = labels("4");
    let server = tokio::spawn(async move {
        expect_get(&mut handle, status(404, "NotFound")).await;
        let (req, send) = handle.next_request().await.expect("one request");
        let got = expect_apply(req).await;
        send.send_response(node_ok());
        (got, handle)
    });
    assert!(labeler.apply(&want).await.unwrap());
    let (got, mut handle) = server.await.unwrap();
    assert_eq!(got, as_map(&want));

    // Unchanged labels: zero requests.
    assert!(!labeler.apply(&want).await.unwrap());
    tokio::time::pause();
    let next = tokio::time::timeout(Duration::from_secs(3600), handle.next_request()).await;
    assert!(next.is_err(), "no request for an unchanged label set");
    assert!(metrics.encode().contains("nodetopo_label_writes_total 1"));
}

#[tokio::test(start_paused = true)]
async fn converges_through_500_409_timeout_without_duplicates() {
    let (labeler, mut handle, metrics) = labeler();
    let want = labels("4");
    let (desired_tx, desired_rx) = watch::channel(Some(want.clone()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let run = tokio::spawn(labeler.run(
        desired_rx,
        shutdown_rx,
        Backoff::fixed(Duration::from_millis(100), Duration::from_secs(5)),
    ));

    // The Node carries the labels, but another manager owns them: nodetopo applies its own.
    expect_get(
        &mut handle,
        node_owned_by(
            "kubectl",
            &[
                ("nodetopo.io/gpu.count", "4"),
                ("nodetopo.io/gpu.product", "NVIDIA-H200"),
            ],
            &["nodetopo.io/gpu.count", "nodetopo.io/gpu.product"],
        ),
    )
    .await;
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(expect_apply(req).await, as_map(&want));
    send.send_response(status(500, "InternalError"));

    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(expect_apply(req).await, as_map(&want));
    send.send_response(status(409, "Conflict"));

    // No answer: the write times out (10 s) and is retried.
    let (req, hung) = handle.next_request().await.unwrap();
    assert_eq!(expect_apply(req).await, as_map(&want));

    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(expect_apply(req).await, as_map(&want));
    send.send_response(node_ok());
    drop(hung);

    // Converged: nothing more is sent while nothing changes.
    let next = tokio::time::timeout(Duration::from_secs(3600), handle.next_request()).await;
    assert!(next.is_err(), "no duplicate write after convergence");
    let text = metrics.encode();
    assert!(text.contains("nodetopo_label_writes_total 1"), "{text}");
    assert!(
        text.contains("nodetopo_label_write_errors_total 3"),
        "{text}"
    );

    // A new desired set is written exactly once.
    let newer = labels("8");
    desired_tx.send(Some(newer.clone())).unwrap();
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(expect_apply(req).await, as_map(&newer));
    send.send_response(node_ok());
    let next = tokio::time::timeout(Duration::from_secs(3600), handle.next_request()).await;
    assert!(next.is_err());

    shutdown_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), run)
        .await
        .expect("labeler stops on shutdown")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_abandons_an_in_flight_write() {
    let (labeler, mut handle, _) = labeler();
    let (_desired_tx, desired_rx) = watch::channel(Some(labels("4")));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let run = tokio::spawn(labeler.run(
        desired_rx,
        shutdown_rx,
        Backoff::fixed(Duration::from_millis(100), Duration::from_secs(5)),
    ));
    expect_get(&mut handle, node_ok()).await;
    let (_req, _hung) = handle.next_request().await.unwrap();
    shutdown_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_millis(10), run)
        .await
        .expect("in-flight write abandoned at once")
        .unwrap();
}

#[test]
fn fabric_event_only_on_state_or_domain_change() {
    let ready = Fabric {
        state: FabricState::Ready,
        reason: "ok".into(),
        domain: Some("c.1".into()),
        cluster_uuid: Some("c".into()),
        clique_id: Some(1),
    };
    assert_eq!(fabric_event(&ready, &ready.clone()), None);
    let mut reason_only = ready.clone();
    reason_only.reason = "different words".into();
    assert_eq!(fabric_event(&ready, &reason_only), None);
    let degraded = Fabric {
        state: FabricState::Degraded,
        reason: "degraded-bandwidth".into(),
        domain: None,
        ..ready.clone()
    };
    let ev = fabric_event(&ready, &degraded).unwrap();
    assert!(ev.warning);
    assert_eq!(
        ev.message,
        "NVLink fabric ready (domain c.1) -> degraded (domain none): degraded-bandwidth"
    );
    let mut moved = ready.clone();
    moved.domain = Some("c.2".into());
    assert!(!fabric_event(&ready, &moved).unwrap().warning);
}

#[tokio::test]
async fn event_is_posted_on_the_node() {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let ev = NodeEvent {
        reason: "NVLinkFabricChanged",
        message: "m".into(),
        warning: true,
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri().path(), "/api/v1/namespaces/default/events");
        let body: serde_json::Value =
            serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
        send.send_response(
            Response::builder()
                .status(201)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
        body
    });
    record_event(client, "node-a", &ev, now, Duration::from_secs(5))
        .await
        .unwrap();
    let body = server.await.unwrap();
    assert_eq!(body["involvedObject"]["kind"], "Node");
    assert_eq!(body["involvedObject"]["name"], "node-a");
    assert_eq!(body["reason"], "NVLinkFabricChanged");
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["reportingComponent"], "nodetopo");
    assert_eq!(body["lastTimestamp"], "2027-01-15T08:00:00Z");
}

#[tokio::test(start_paused = true)]
async fn restart_with_the_same_labels_writes_nothing() {
    let (mut labeler, mut handle, metrics) = labeler();
    let want = labels("4");
    let server = tokio::spawn(async move {
        expect_get(
            &mut handle,
            node_owned_by(
                FIELD_MANAGER,
                &[
                    ("nodetopo.io/gpu.count", "4"),
                    ("nodetopo.io/gpu.product", "NVIDIA-H200"),
                    ("example.com/rack", "r1"),
                ],
                &["nodetopo.io/gpu.count", "nodetopo.io/gpu.product"],
            ),
        )
        .await;
        handle
    });
    assert!(!labeler.apply(&want).await.unwrap(), "nothing written");
    let mut handle = server.await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(3600), handle.next_request()).await;
    assert!(next.is_err(), "no write after the GET");
    assert!(metrics.encode().contains("nodetopo_label_writes_total 0"));

    // A changed fact is written, without another GET.
    let newer = labels("8");
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.unwrap();
        let got = expect_apply(req).await;
        send.send_response(node_ok());
        got
    });
    assert!(labeler.apply(&newer).await.unwrap());
    assert_eq!(server.await.unwrap(), as_map(&newer));
}

#[test]
fn applied_labels_reads_only_the_managers_apply_entry() {
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n", "labels": {"a/x": "1", "a/y": "2", "b/z": "3"},
            "managedFields": [
                {"manager": "nodetopo", "operation": "Update", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:labels": {"f:b/z": {}}}}},
                {"manager": "nodetopo", "operation": "Apply", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:labels": {"f:a/x": {}, "f:a/gone": {}}}}},
                {"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:labels": {"f:a/y": {}}}}},
            ]},
    }))
    .unwrap();
    let owned = applied_labels(&node, "nodetopo").unwrap();
    assert_eq!(
        owned.into_iter().collect::<Vec<_>>(),
        [
            ("a/gone".to_string(), String::new()),
            ("a/x".to_string(), "1".to_string())
        ]
    );
    assert!(applied_labels(&node, "other").is_none());
}

#[tokio::test]
async fn a_failed_write_keeps_the_api_servers_answer() {
    let (mut labeler, mut handle, _) = labeler();
    let want = labels("4");
    let server = tokio::spawn(async move {
        expect_get(&mut handle, node_owned_by("kubectl", &[], &[])).await;
        let (req, send) = handle.next_request().await.unwrap();
        let _ = expect_apply(req).await;
        send.send_response(status(409, "Conflict"));
    });
    let e = labeler.apply(&want).await.unwrap_err();
    server.await.unwrap();
    // The log line prints the chain: the API server's code and reason reach it.
    let mut chain = e.to_string();
    let mut cur = std::error::Error::source(&e);
    while let Some(c) = cur {
        chain.push_str(": ");
        chain.push_str(&c.to_string());
        cur = c.source();
    }
    assert!(chain.starts_with("applying node labels: "), "{chain}");
    assert!(
        chain.contains("409") || chain.contains("Conflict"),
        "{chain}"
    );
}

#[test]
fn retry_after_is_read_from_429_and_503_only() {
    let mut h = http::HeaderMap::new();
    h.insert(http::header::RETRY_AFTER, " 7 ".parse().unwrap());
    let s = Duration::from_secs;
    assert_eq!(
        retry_after(http::StatusCode::TOO_MANY_REQUESTS, &h),
        Some(s(7))
    );
    assert_eq!(
        retry_after(http::StatusCode::SERVICE_UNAVAILABLE, &h),
        Some(s(7))
    );
    assert_eq!(retry_after(http::StatusCode::CONFLICT, &h), None);
    h.insert(
        http::header::RETRY_AFTER,
        "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
    );
    assert_eq!(retry_after(http::StatusCode::TOO_MANY_REQUESTS, &h), None);
    assert_eq!(
        retry_after(http::StatusCode::TOO_MANY_REQUESTS, &http::HeaderMap::new()),
        None
    );
    // The longer of the backoff and the server's wish, the latter capped.
    assert_eq!(retry_delay(s(2), Some(s(5))), s(5));
    assert_eq!(retry_delay(s(9), Some(s(5))), s(9));
    assert_eq!(retry_delay(s(2), None), s(2));
    assert_eq!(retry_delay(s(2), Some(s(86_400))), RETRY_AFTER_MAX);
}

fn too_many(retry_after: &str) -> Response<Body> {
    Response::builder()
        .status(429)
        .header("Retry-After", retry_after)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(Body::from(
            b"Too many requests, please try again later.\n".to_vec(),
        ))
        .unwrap()
}

/// A 429 with `Retry-After: 20` (header only, as kube-apiserver's filters send it), then a 409
/// and a 429 whose Status body carries `retryAfterSeconds: 12`: each retry waits at least what
/// the server asked, though the backoff alone would wait 50-100 ms.
#[tokio::test(start_paused = true)]
async fn retry_after_of_a_429_is_honoured() {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let hint = RetryAfterHint::default();
    let client = kube::client::ClientBuilder::new(svc, "default")
        .with_layer(&RetryAfterLayer(hint.clone()))
        .build();
    let metrics = Metrics::new();
    let labeler = NodeLabeler::new(
        client,
        "node-a".into(),
        Duration::from_secs(10),
        metrics.clone(),
    )
    .with_retry_after(hint);
    let want = labels("4");
    let (_desired_tx, desired_rx) = watch::channel(Some(want.clone()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let run = tokio::spawn(labeler.run(
        desired_rx,
        shutdown_rx,
        Backoff::fixed(Duration::from_millis(100), Duration::from_secs(5)),
    ));
    expect_get(&mut handle, node_ok()).await;

    let (req, send) = handle.next_request().await.unwrap();
    let t0 = tokio::time::Instant::now();
    assert_eq!(expect_apply(req).await, as_map(&want));
    send.send_response(too_many("20"));

    let (req, send) = handle.next_request().await.unwrap();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(20) && waited < Duration::from_secs(21),
        "{waited:?}"
    );
    expect_apply(req).await;
    send.send_response(status(409, "Conflict"));

    // A 409 has no Retry-After: the backoff's second step (100-200 ms).
    let t1 = tokio::time::Instant::now();
    let (req, send) = handle.next_request().await.unwrap();
    assert!(
        t1.elapsed() <= Duration::from_millis(200),
        "{:?}",
        t1.elapsed()
    );
    expect_apply(req).await;
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "throttled", "reason": "TooManyRequests", "code": 429,
        "details": {"retryAfterSeconds": 12},
    });
    send.send_response(
        Response::builder()
            .status(429)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );

    let t2 = tokio::time::Instant::now();
    let (req, send) = handle.next_request().await.unwrap();
    let waited = t2.elapsed();
    assert!(
        waited >= Duration::from_secs(12) && waited < Duration::from_secs(13),
        "{waited:?}"
    );
    expect_apply(req).await;
    send.send_response(node_ok());

    let next = tokio::time::timeout(Duration::from_secs(3600), handle.next_request()).await;
    assert!(next.is_err(), "nothing more once written");
    let text = metrics.encode();
    assert!(text.contains("nodetopo_label_writes_total 1"), "{text}");
    assert!(
        text.contains("nodetopo_label_write_errors_total 3"),
        "{text}"
    );
    shutdown_tx.send(true).unwrap();
    run.await.unwrap();
}
