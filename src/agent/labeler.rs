//! Node labels in Kubernetes: server-side apply of the desired label set on the agent's own
//! Node, with field manager `nodetopo` and force.
//!
//! The writer only applies what the pure policy ([`crate::labels`]) decided. It skips a write
//! when the desired set equals the last applied one, retries failures with exponential backoff
//! and jitter, and never deletes labels: keys it stops applying are dropped by the API server's
//! field ownership, and on shutdown the labels stay in place. Before its first write it reads
//! the Node once: when the labels it owns there (by `managedFields`) already equal the desired
//! set, as after a restart with the same facts, it writes nothing.
#![forbid(unsafe_code)]

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use k8s_openapi::{
    api::core::v1::{Event, EventSource, Node, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{MicroTime, Time},
};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::{
    agent::metrics::Metrics,
    labels::Labels,
    model::{Fabric, FabricState},
};

/// Field manager of every write.
pub const FIELD_MANAGER: &str = "nodetopo";

/// The SSA body: a Node with only its name and the labels.
pub fn apply_body(node: &str, labels: &Labels) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

/// The labels on `node` that field manager `manager` owns through server-side apply, with their
/// current values; `None` when the manager owns no labels there.
pub fn applied_labels(node: &Node, manager: &str) -> Option<BTreeMap<String, String>> {
    let entry = node.metadata.managed_fields.as_ref()?.iter().find(|m| {
        m.manager.as_deref() == Some(manager)
            && m.operation.as_deref() == Some("Apply")
            && m.subresource.as_deref().unwrap_or_default().is_empty()
    })?;
    let fields = entry.fields_v1.as_ref()?;
    let owned = fields.0.get("f:metadata")?.get("f:labels")?.as_object()?;
    let current = node.metadata.labels.clone().unwrap_or_default();
    Some(
        owned
            .keys()
            .filter_map(|k| k.strip_prefix("f:"))
            .map(|k| (k.to_string(), current.get(k).cloned().unwrap_or_default()))
            .collect(),
    )
}

/// True when `labels` is exactly the set `owned` holds, keys and values.
fn same_labels(owned: &BTreeMap<String, String>, labels: &Labels) -> bool {
    owned.len() == labels.len()
        && labels.iter().all(|(k, v)| {
            owned
                .get(&k.to_string())
                .is_some_and(|o| *o == v.to_string())
        })
}

/// The longest wait a server's `Retry-After` can ask of the label writer; a longer one is
/// capped here, so a misconfigured server cannot park the labels for hours.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// The `Retry-After` of a `429 Too Many Requests` or `503 Service Unavailable` answer, in
/// delta-seconds (the form kube-apiserver sends); `None` for other answers or an HTTP date.
pub fn retry_after(status: http::StatusCode, headers: &http::HeaderMap) -> Option<Duration> {
    if status != http::StatusCode::TOO_MANY_REQUESTS
        && status != http::StatusCode::SERVICE_UNAVAILABLE
    {
        return None;
    }
    let secs: u64 = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// The wait before the next write attempt: the backoff's, or longer when the server asked for
/// longer (capped at [`RETRY_AFTER_MAX`]).
pub fn retry_delay(backoff: Duration, server: Option<Duration>) -> Duration {
    match server {
        Some(s) => backoff.max(s.min(RETRY_AFTER_MAX)),
        None => backoff,
    }
}

/// The `Retry-After` the API server last sent, recorded by [`RetryAfterLayer`] on the client
/// and read by the label writer after a failed write.
#[derive(Debug, Clone, Default)]
pub struct RetryAfterHint(Arc<Mutex<Option<Duration>>>);

impl RetryAfterHint {
    fn record(&self, d: Duration) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
    }

    /// The last recorded wait, cleared.
    pub fn take(&self) -> Option<Duration> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A client layer that records each answer's [`retry_after`] into a [`RetryAfterHint`]: the kube
/// client reports a 429 as an error without its headers.
#[derive(Debug, Clone)]
pub struct RetryAfterLayer(pub RetryAfterHint);

impl<S> tower::Layer<S> for RetryAfterLayer {
    type Service = RecordRetryAfter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordRetryAfter {
            inner,
            hint: self.0.clone(),
        }
    }
}

/// The service of [`RetryAfterLayer`].
#[derive(Debug, Clone)]
pub struct RecordRetryAfter<S> {
    inner: S,
    hint: RetryAfterHint,
}

impl<S, Req, B> tower::Service<Req> for RecordRetryAfter<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let hint = self.hint.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            if let Some(d) = retry_after(res.status(), res.headers()) {
                hint.record(d);
            }
            Ok(res)
        })
    }
}

/// The wait the server asked for in a failed write: its `Retry-After` header (through `hint`),
/// or the `retryAfterSeconds` of its Status body.
fn server_retry_after(e: &WriteError, hint: &RetryAfterHint) -> Option<Duration> {
    let from_header = hint.take();
    let from_status = match e {
        WriteError::Api(err) => match err.as_ref() {
            kube::Error::Api(status) => status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s))),
            _ => None,
        },
        WriteError::Timeout(_) => None,
    };
    from_header.max(from_status)
}

/// Writes labels on one Node.
pub struct NodeLabeler {
    api: Api<Node>,
    node: String,
    last_applied: Option<Labels>,
    /// The Node was read once, before the first write.
    read_current: bool,
    request_timeout: Duration,
    metrics: Metrics,
    retry_after: RetryAfterHint,
}

impl NodeLabeler {
    /// A labeler of `node`. Each request is abandoned after `request_timeout`.
    pub fn new(
        client: kube::Client,
        node: String,
        request_timeout: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            api: Api::all(client),
            node,
            last_applied: None,
            read_current: false,
            request_timeout,
            metrics,
            retry_after: RetryAfterHint::default(),
        }
    }

    /// Honours the `Retry-After` that `hint` records (the client must carry a
    /// [`RetryAfterLayer`] of the same hint).
    pub fn with_retry_after(mut self, hint: RetryAfterHint) -> Self {
        self.retry_after = hint;
        self
    }

    /// Applies `labels` unless they equal the last applied set. `Ok(false)` when skipped.
    pub async fn apply(&mut self, labels: &Labels) -> Result<bool, WriteError> {
        if self.last_applied.as_ref() == Some(labels) {
            return Ok(false);
        }
        if !self.read_current {
            match tokio::time::timeout(self.request_timeout, self.api.get(&self.node)).await {
                Ok(Ok(node)) => {
                    self.read_current = true;
                    if applied_labels(&node, FIELD_MANAGER).is_some_and(|o| same_labels(&o, labels))
                    {
                        tracing::info!(node = %self.node, "node labels already applied; nothing to write");
                        self.last_applied = Some(labels.clone());
                        return Ok(false);
                    }
                }
                // The write below reports the cause when the server is really unreachable.
                Ok(Err(e)) => {
                    tracing::debug!(node = %self.node, error = &e as &dyn std::error::Error, "reading the node before the first write failed");
                }
                Err(_) => {
                    tracing::debug!(node = %self.node, "reading the node before the first write timed out");
                }
            }
        }
        // A hint left by an earlier answer says nothing about this write.
        self.retry_after.take();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let body = apply_body(&self.node, labels);
        let res = tokio::time::timeout(
            self.request_timeout,
            self.api.patch(&self.node, &params, &Patch::Apply(&body)),
        )
        .await;
        let res = match res {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(WriteError::Api(Box::new(e))),
            Err(_) => Err(WriteError::Timeout(self.request_timeout)),
        };
        self.metrics.label_write(res.is_ok());
        res?;
        self.last_applied = Some(labels.clone());
        Ok(true)
    }

    /// Applies every new desired set from `desired` until `shutdown` fires or the sender is
    /// dropped. Failures are retried with backoff; a newer desired set replaces a failing one.
    /// On shutdown an in-flight write is abandoned and the labels stay as they are.
    pub async fn run(
        mut self,
        mut desired: watch::Receiver<Option<Labels>>,
        mut shutdown: watch::Receiver<bool>,
        mut backoff: Backoff,
    ) {
        loop {
            let want = desired.borrow_and_update().clone();
            let mut retry_in = None;
            if let Some(want) = want {
                let res = tokio::select! {
                    res = self.apply(&want) => res,
                    _ = shutdown.changed() => {
                        tracing::info!("shutdown: label write abandoned; labels stay in place");
                        return;
                    }
                };
                match res {
                    Ok(wrote) => {
                        backoff.reset();
                        if wrote {
                            tracing::info!(node = %self.node, labels = want.len(), "node labels applied");
                        }
                    }
                    Err(e) => {
                        let server = server_retry_after(&e, &self.retry_after);
                        let delay = retry_delay(backoff.next_random_delay(), server);
                        tracing::warn!(node = %self.node, error = &e as &dyn std::error::Error, retry_in = ?delay, retry_after = ?server, "node label write failed");
                        retry_in = Some(delay);
                    }
                }
            }
            if !next_turn(&mut desired, &mut shutdown, retry_in).await {
                return;
            }
        }
    }
}

/// Waits for a new desired set, or for `retry_in` to pass; `false` when the writer should stop
/// (shutdown, or the sender is gone).
async fn next_turn(
    desired: &mut watch::Receiver<Option<Labels>>,
    shutdown: &mut watch::Receiver<bool>,
    retry_in: Option<Duration>,
) -> bool {
    let retry = async {
        match retry_in {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = retry => true,
        changed = desired.changed() => changed.is_ok(),
        _ = shutdown.changed() => false,
    }
}

/// A Kubernetes Event to record on the Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// Machine-readable reason, e.g. `NVLinkFabricChanged`.
    pub reason: &'static str,
    /// What happened, in words.
    pub message: String,
    /// A `Warning` rather than a `Normal` event.
    pub warning: bool,
}

/// The event for a change of the node's NVLink fabric state or domain; `None` when neither
/// changed.
pub fn fabric_event(prev: &Fabric, next: &Fabric) -> Option<NodeEvent> {
    if prev.state == next.state && prev.domain == next.domain {
        return None;
    }
    let domain = |f: &Fabric| f.domain.clone().unwrap_or_else(|| "none".into());
    Some(NodeEvent {
        reason: "NVLinkFabricChanged",
        message: format!(
            "NVLink fabric {} (domain {}) -> {} (domain {}): {}",
            prev.state.as_str(),
            domain(prev),
            next.state.as_str(),
            domain(next),
            next.reason
        ),
        warning: matches!(
            next.state,
            FabricState::Degraded | FabricState::Inconsistent | FabricState::Error
        ),
    })
}

/// Namespace of Node events (Nodes are cluster-scoped; `kubectl describe node` looks here).
pub const EVENT_NAMESPACE: &str = "default";

/// The Event object for `ev` on Node `node` at `now`.
pub fn event_body(node: &str, ev: &NodeEvent, now: SystemTime) -> Event {
    let ts = k8s_openapi::jiff::Timestamp::try_from(now).ok();
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{node}.")),
            namespace: Some(EVENT_NAMESPACE.to_string()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..ObjectReference::default()
        },
        reason: Some(ev.reason.to_string()),
        message: Some(ev.message.clone()),
        type_: Some(if ev.warning { "Warning" } else { "Normal" }.to_string()),
        source: Some(EventSource {
            component: Some(FIELD_MANAGER.to_string()),
            host: Some(node.to_string()),
        }),
        reporting_component: Some(FIELD_MANAGER.to_string()),
        reporting_instance: Some(node.to_string()),
        action: Some("Probe".into()),
        count: Some(1),
        first_timestamp: ts.map(Time),
        last_timestamp: ts.map(Time),
        event_time: ts.map(MicroTime),
        ..Event::default()
    }
}

/// Records `ev` on Node `node`; best effort, abandoned after `timeout`.
pub async fn record_event(
    client: kube::Client,
    node: &str,
    ev: &NodeEvent,
    now: SystemTime,
    timeout: Duration,
) -> Result<(), WriteError> {
    let api: Api<Event> = Api::namespaced(client, EVENT_NAMESPACE);
    let body = event_body(node, ev, now);
    match tokio::time::timeout(timeout, api.create(&PostParams::default(), &body)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(WriteError::Api(Box::new(e))),
        Err(_) => Err(WriteError::Timeout(timeout)),
    }
}

/// Records every event from `events` until the channel closes; failures are logged, not
/// retried.
pub async fn record_events(
    client: kube::Client,
    node: String,
    timeout: Duration,
    mut events: tokio::sync::mpsc::Receiver<NodeEvent>,
) {
    while let Some(ev) = events.recv().await {
        let now = SystemTime::now();
        match record_event(client.clone(), &node, &ev, now, timeout).await {
            Ok(()) => tracing::info!(reason = ev.reason, message = %ev.message, "event recorded"),
            Err(e) => tracing::warn!(
                error = &e as &dyn std::error::Error,
                reason = ev.reason,
                "event not recorded"
            ),
        }
    }
}

/// Why a label write failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The API server answered with an error, or the connection failed.
    #[error("applying node labels")]
    Api(#[source] Box<kube::Error>),
    /// No answer in time.
    #[error("applying node labels: no answer within {0:?}")]
    Timeout(Duration),
}

#[cfg(test)]
mod tests;
