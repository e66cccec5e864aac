//! HTTP front end: the extender verbs, health and debug endpoints (axum).
//!
//! Bodies are parsed by hand so that malformed JSON gets a 400 that says what is wrong; the
//! body size is capped; handlers only read the view and call the pure policy.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use super::{Extender, placed::PodEvent, wire::ExtenderRequest};

/// The cluster size the request limit is set for: 5,000 Nodes, the largest cluster Kubernetes
/// documents.
pub const DOCUMENTED_NODES: usize = 5_000;

/// The largest Node object a full-Node request is sized for. A Node as a kubelet, GPU feature
/// discovery and a CSI driver leave it (40 labels, managed fields, conditions, the kubelet's
/// 50-image status list) is about 15 KB; 24 KiB leaves room.
pub const NODE_OBJECT_BYTES: usize = 24 * 1024;

/// Default request body limit: [`DOCUMENTED_NODES`] Nodes of [`NODE_OBJECT_BYTES`] (117 MiB), so
/// that kube-scheduler without `nodeCacheCapable` can send every Node of the largest documented
/// cluster. Names-only mode (the shipped configuration) sends about 10 bytes a node.
pub const DEFAULT_BODY_LIMIT: usize = DOCUMENTED_NODES * NODE_OBJECT_BYTES;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Path prefix of the verbs, e.g. `/` or `/nodetopo`.
    pub prefix: String,
    /// Log every score breakdown.
    pub explain: bool,
    /// Accept `POST {prefix}/debug/placed` (pod events from outside; for tests and demos).
    pub debug_placements: bool,
    /// Body size limit in bytes.
    pub body_limit: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            prefix: "/".into(),
            explain: false,
            debug_placements: false,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

#[derive(Clone)]
struct AppState {
    ext: Extender,
    cfg: Arc<ServerConfig>,
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(ErrorBody { error: msg })).into_response()
}

fn parse_args(body: &[u8]) -> Result<ExtenderRequest, Box<Response>> {
    let args: ExtenderRequest = serde_json::from_slice(body)
        .map_err(|e| Box::new(bad_request(format!("malformed ExtenderRequest JSON: {e}"))))?;
    if args.pod.is_none() {
        return Err(Box::new(bad_request(
            "malformed ExtenderRequest: Pod is missing".into(),
        )));
    }
    if args.nodes.is_none() && args.node_names.is_none() {
        return Err(Box::new(bad_request(
            "malformed ExtenderRequest: neither Nodes nor NodeNames is set".into(),
        )));
    }
    Ok(args)
}

/// `/x/` and `x` → `/x`; `/` → empty.
pub fn normalize_prefix(p: &str) -> String {
    let t = p.trim_matches('/');
    if t.is_empty() {
        String::new()
    } else {
        format!("/{t}")
    }
}

/// The router.
pub fn router(ext: Extender, cfg: ServerConfig) -> Router {
    let prefix = normalize_prefix(&cfg.prefix);
    let limit = cfg.body_limit;
    let state = AppState {
        ext,
        cfg: Arc::new(cfg),
    };
    Router::new()
        .route(&format!("{prefix}/filter"), post(filter))
        .route(&format!("{prefix}/prioritize"), post(prioritize))
        .route(&format!("{prefix}/debug/explain"), post(explain))
        .route(&format!("{prefix}/debug/placed"), post(placed))
        .route(&format!("{prefix}/debug/view"), get(view))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn filter(State(s): State<AppState>, body: Bytes) -> Response {
    let args = match parse_args(&body) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let (out, ex) = s.ext.filter(&args);
    if s.cfg.explain {
        tracing::info!(
            explain = %serde_json::to_string(&ex).unwrap_or_default(),
            rejected = %serde_json::to_string(&out.failed_and_unresolvable_nodes).unwrap_or_default(),
            "filter"
        );
    }
    Json(out).into_response()
}

async fn prioritize(State(s): State<AppState>, body: Bytes) -> Response {
    let args = match parse_args(&body) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let (out, ex) = s.ext.prioritize(&args);
    if s.cfg.explain {
        tracing::info!(explain = %serde_json::to_string(&ex).unwrap_or_default(), "prioritize");
    }
    Json(out).into_response()
}

async fn explain(State(s): State<AppState>, body: Bytes) -> Response {
    match parse_args(&body) {
        Ok(a) => Json(s.ext.evaluate(&a)).into_response(),
        Err(r) => *r,
    }
}

/// A pod as the pod watcher sees it: bound (`spec.nodeName`) → placed; unbound, finished or
/// deleting → removed.
async fn placed(State(s): State<AppState>, body: Bytes) -> Response {
    if !s.cfg.debug_placements {
        return (
            StatusCode::NOT_FOUND,
            Json(ErrorBody {
                error: "debug placements are off (--debug-placements)".into(),
            }),
        )
            .into_response();
    }
    let pod: Pod = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_request(format!("malformed Pod JSON: {e}")),
    };
    match PodEvent::from_pod(&pod) {
        Some(ev) => {
            s.ext.placements.apply(ev);
            StatusCode::NO_CONTENT.into_response()
        }
        None => bad_request("pod has no metadata.name".into()),
    }
}

#[derive(Serialize)]
struct ViewRow {
    node: String,
    freshness: Option<super::view::Freshness>,
    stale_reason: String,
    facts: Option<super::facts::NodeFacts>,
}

/// True when the client asked for the HTML page: `?format=html`, or a browser's `Accept`
/// (`text/html` listed). Anything else (curl, scripts, `?format=json`) gets JSON.
fn wants_html(headers: &HeaderMap, query: Option<&str>) -> bool {
    let q = query.unwrap_or("");
    if q.split('&').any(|kv| kv == "format=json") {
        return false;
    }
    q.split('&').any(|kv| kv == "format=html")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
}

async fn view(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if wants_html(&headers, query.as_deref()) {
        let nodes: Vec<super::page::PageNode> = s.ext.view.read(|v| {
            v.node_names()
                .into_iter()
                .map(|n| {
                    let r = v.resolve(&n, None);
                    super::page::PageNode {
                        stale_reason: v
                            .entry(&n)
                            .map(|e| e.stale_reason.clone())
                            .unwrap_or_default(),
                        freshness: r.as_ref().map(|r| r.freshness),
                        facts: r.map(|r| r.facts.into_owned()),
                        name: n,
                    }
                })
                .collect()
        });
        let html = super::page::render(&nodes, &s.ext.placements.all());
        return ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    }
    let rows: Vec<ViewRow> = s.ext.view.read(|v| {
        v.node_names()
            .into_iter()
            .map(|n| {
                let r = v.resolve(&n, None);
                let reason = v
                    .entry(&n)
                    .map(|e| e.stale_reason.clone())
                    .unwrap_or_default();
                ViewRow {
                    freshness: r.as_ref().map(|r| r.freshness),
                    facts: r.map(|r| r.facts.into_owned()),
                    stale_reason: reason,
                    node: n,
                }
            })
            .collect()
    });
    Json(rows).into_response()
}

#[cfg(test)]
mod tests;
