//! The webhook's servers: `POST /mutate` (and `GET /healthz`) over TLS for the API server, and
//! `/metrics`, `/healthz`, `/readyz` over plain HTTP for probes and Prometheus.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::{
    WebhookError,
    metrics::WebhookMetrics,
    mutate::{MutationConfig, NodeLabels, ObjectKind, ReadReview, Reviewed},
    route::{RouteConfig, review_route},
};

/// Reads a Pod's labels by namespace and name: how a binding's Pod is looked up when consumer
/// keys are configured (the Binding does not carry its Pod's labels).
pub type PodLookup = Arc<dyn Fn(String, String) -> PodLabelsFuture + Send + Sync>;

/// What a [`PodLookup`] returns: the Pod's labels, in time.
pub type PodLabelsFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<BTreeMap<String, String>, WebhookError>> + Send>>;

/// Largest accepted review body (a Pod with a large spec fits well within it).
pub const BODY_LIMIT: usize = 4 << 20;
/// Longest TLS handshake before a connection is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the handlers share.
#[derive(Clone)]
pub struct WebhookState {
    /// Which labels are copied.
    pub config: Arc<MutationConfig>,
    /// Which pods `POST /route` sends to which scheduler profile.
    pub route: Arc<RouteConfig>,
    /// Each Node's labels, looked up by Node name.
    pub nodes: Arc<dyn NodeLabels + Send + Sync>,
    /// Looks a binding's Pod up for its labels; `None`: never (consumer keys are then left out
    /// of bindings).
    pub pods: Option<PodLookup>,
    /// The webhook's metrics (latency, outcomes, Nodes held), served on the plain HTTP `/metrics`.
    pub metrics: WebhookMetrics,
    /// True once the Node view is complete.
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Number of Nodes in the view, read at each scrape.
    pub node_count: Arc<dyn Fn() -> usize + Send + Sync>,
}

/// `POST /mutate`, `POST /route` and `GET /healthz`: the router served over TLS.
pub fn admission_router(state: WebhookState) -> Router {
    Router::new()
        .route("/mutate", post(mutate_handler))
        .route("/route", post(route_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// `/metrics`, `/healthz`, `/readyz`: the plain HTTP router.
pub fn http_router(state: WebhookState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(state)
}

async fn mutate_handler(State(s): State<WebhookState>, body: Bytes) -> axum::response::Response {
    let t0 = Instant::now();
    match mutate(&s, &body).await {
        Ok(r) => {
            s.metrics.observe(r.kind, Some(&r.outcome), t0.elapsed());
            s.metrics.observe_consumers(&r.kept, &r.withheld);
            tracing::debug!(kind = r.kind.as_str(), outcome = ?r.outcome, "review answered");
            Json(r.response).into_response()
        }
        Err(e) => {
            s.metrics.observe(ObjectKind::Other, None, t0.elapsed());
            tracing::warn!(error = &e as &dyn std::error::Error, "bad admission review");
            (StatusCode::BAD_REQUEST, crate::error::chain(&e)).into_response()
        }
    }
}

/// Reads the review, looks a binding's Pod up when consumer keys need its labels, and answers.
async fn mutate(s: &WebhookState, body: &[u8]) -> Result<Reviewed, WebhookError> {
    let read = ReadReview::read(body)?;
    let subject = read.subject();
    let mut pod_labels = None;
    if let (Some((ns, name)), Some(lookup)) = (read.pod_to_look_up(&s.config), &s.pods) {
        let t0 = Instant::now();
        match lookup(ns.to_string(), name.to_string()).await {
            Ok(l) => {
                tracing::debug!(pod = %subject, took = ?t0.elapsed(), "read the bound Pod's labels");
                pod_labels = Some(l);
            }
            Err(e) => tracing::warn!(
                pod = %subject,
                error = &e as &dyn std::error::Error,
                "cannot read the bound Pod's labels; its consumer keys are left out"
            ),
        }
    }
    let r = read.answer(s.nodes.as_ref(), &s.config, pod_labels.as_ref())?;
    for k in &r.kept {
        tracing::info!(
            pod = %subject,
            consumer = k.consumer.as_str(),
            key = %k.key,
            pod_value = %k.pod_value,
            node_value = %k.node_value,
            "the Pod sets this consumer key itself; its value is kept"
        );
    }
    Ok(r)
}

/// `POST /route`: the scheduler profile of a Pod being created ([`super::route`]).
async fn route_handler(State(s): State<WebhookState>, body: Bytes) -> axum::response::Response {
    let t0 = Instant::now();
    match review_route(&body, &s.route) {
        Ok((decision, response)) => {
            s.metrics.observe_route(Some(&decision), t0.elapsed());
            tracing::debug!(decision = decision.as_str(), "route review answered");
            Json(response).into_response()
        }
        Err(e) => {
            s.metrics.observe_route(None, t0.elapsed());
            tracing::warn!(error = &e as &dyn std::error::Error, "bad route review");
            (StatusCode::BAD_REQUEST, crate::error::chain(&e)).into_response()
        }
    }
}

async fn metrics_handler(State(s): State<WebhookState>) -> impl IntoResponse {
    s.metrics.set_nodes((s.node_count)());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn ready_handler(State(s): State<WebhookState>) -> impl IntoResponse {
    if (s.ready)() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "node list not read yet\n")
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` completes; each connection runs in its
/// own task, its handshake bounded in time. Then it stops accepting, asks every open connection
/// to close once its request in flight is answered (HTTP/1 keep-alive ends, HTTP/2 sends
/// GOAWAY), and returns when they have: the caller bounds that wait.
pub async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = &e as &dyn std::error::Error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = connections.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = &e as &dyn std::error::Error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let svc = TowerToHyperService::new(app);
            let http = auto::Builder::new(TokioExecutor::new());
            let conn = http.serve_connection(TokioIo::new(tls), svc).into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = &*e as &dyn std::error::Error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}
