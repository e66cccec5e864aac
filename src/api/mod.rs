//! The gRPC API: the read-only `nodetopo.v1.TopologyService` server over the agent's published
//! state, health and reflection, and a small client for `nodetopo query`.
#![forbid(unsafe_code)]

pub mod convert;
pub mod tls;

use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use prost::bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use crate::{
    hints::{self, GpuSelector},
    model::NodeTopology,
    proto::{
        self,
        v1::{
            self as pb,
            topology_service_server::{TopologyService, TopologyServiceServer},
        },
        wire,
    },
};

/// One published state: the model, and its wire body encoded at most once, on first use, for
/// every Get caller and watcher. Watchers are sent only new revisions, and a probe whose state
/// nobody reads is never encoded.
#[derive(Debug, Clone)]
pub struct Published {
    /// The topology.
    pub topo: NodeTopology,
    body: Arc<std::sync::OnceLock<Bytes>>,
}

impl Default for Published {
    /// The state before the first probe: an empty topology at revision 0.
    fn default() -> Self {
        Self::new(NodeTopology::default())
    }
}

impl Published {
    /// Publishes `topo`.
    pub fn new(topo: NodeTopology) -> Self {
        Self {
            topo,
            body: Arc::default(),
        }
    }

    /// The encoded response body (field 1: the topology), shared by Get and Watch.
    fn body(&self) -> Bytes {
        self.body
            .get_or_init(|| wire::encode_body(&pb::NodeTopology::from(&self.topo)))
            .clone()
    }

    /// The Get response for this state.
    pub fn get_response(&self) -> wire::GetNodeTopologyResponse {
        wire::GetNodeTopologyResponse::from_body(self.body())
    }

    /// The watch message for this state.
    pub fn watch_message(&self) -> wire::WatchNodeTopologyResponse {
        wire::WatchNodeTopologyResponse::from_body(self.body())
    }

    /// True once the body was encoded (tests and benchmarks).
    pub fn is_encoded(&self) -> bool {
        self.body.get().is_some()
    }
}

/// Receives every published state; the value before the first probe has revision 0.
pub type StateRx = watch::Receiver<Arc<Published>>;

/// Counts open watch streams (the agent's metrics implement it).
pub trait WatcherGauge: Send + Sync + 'static {
    /// A watcher opened (`+1`) or closed (`-1`).
    fn add(&self, delta: i64);
}

impl WatcherGauge for () {
    fn add(&self, _: i64) {}
}

/// Server limits.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Most concurrent watch streams; beyond it Watch answers `RESOURCE_EXHAUSTED`.
    pub max_watchers: usize,
    /// Largest encoded or decoded message.
    pub max_message_bytes: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keepalive ping interval.
    pub keepalive_interval: Duration,
    /// How long to wait for a keepalive ack.
    pub keepalive_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_watchers: 1024,
            max_message_bytes: 16 * 1024 * 1024,
            max_concurrent_streams: 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// The `TopologyService` implementation.
pub struct TopologyApi {
    state: StateRx,
    watchers: Arc<Semaphore>,
    max_watchers: usize,
    gauge: Arc<dyn WatcherGauge>,
}

impl TopologyApi {
    /// A service over `state`, with at most `max_watchers` watch streams.
    pub fn new(state: StateRx, max_watchers: usize, gauge: Arc<dyn WatcherGauge>) -> Self {
        Self {
            state,
            watchers: Arc::new(Semaphore::new(max_watchers)),
            max_watchers,
            gauge,
        }
    }
}

/// Closes the watcher count when a watch stream's task ends.
struct WatcherGuard(Arc<dyn WatcherGauge>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchNodeTopologyResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl TopologyService for TopologyApi {
    async fn get_node_topology(
        &self,
        _: Request<pb::GetNodeTopologyRequest>,
    ) -> Result<Response<pb::GetNodeTopologyResponse>, Status> {
        let cur = self.state.borrow().clone();
        Ok(Response::new(cur.get_response()))
    }

    type WatchNodeTopologyStream = WatchStream;

    async fn watch_node_topology(
        &self,
        req: Request<pb::WatchNodeTopologyRequest>,
    ) -> Result<Response<Self::WatchNodeTopologyStream>, Status> {
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "too many watchers: the limit is {}",
                self.max_watchers
            ))
        })?;
        self.gauge.add(1);
        let guard = WatcherGuard(self.gauge.clone());
        let mut last = req.into_inner().since_revision;
        let mut rx = self.state.clone();
        // Capacity 1: a slow reader holds at most one message; the next one is taken from the
        // watch channel only when there is room, so it is always the latest state.
        let (tx, out) = mpsc::channel(1);
        tokio::spawn(async move {
            let _permit = permit;
            let _guard = guard;
            loop {
                let Ok(slot) = tx.reserve().await else { return };
                loop {
                    let cur = rx.borrow_and_update().clone();
                    if cur.topo.revision > last {
                        last = cur.topo.revision;
                        slot.send(Ok(cur.watch_message()));
                        break;
                    }
                    tokio::select! {
                        changed = rx.changed() => if changed.is_err() { return },
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn get_placement_hints(
        &self,
        req: Request<pb::GetPlacementHintsRequest>,
    ) -> Result<Response<pb::GetPlacementHintsResponse>, Status> {
        let cur = self.state.borrow().clone();
        let req = req.into_inner();
        let consumer = convert::consumer_from_proto(req.consumer).ok_or_else(|| {
            Status::invalid_argument(format!("unknown consumer {}", req.consumer))
        })?;
        let selection = req
            .gpus
            .iter()
            .map(|s| GpuSelector::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|sel| hints::placement_hints(&cur.topo, &sel));
        let mut h = selection.map_err(|e| Status::invalid_argument(e.to_string()))?;
        h.env = h.env.for_consumer(consumer);
        Ok(Response::new(pb::GetPlacementHintsResponse {
            revision: cur.topo.revision,
            env: h
                .env
                .vars
                .into_iter()
                .map(|(name, value)| pb::EnvVar { name, value })
                .collect(),
            pairs: h
                .pairs
                .into_iter()
                .map(|p| pb::GpuNicHint {
                    gpu: p.gpu,
                    gpu_uuid: p.gpu_uuid,
                    nic: p.nic,
                    port: p.port,
                    connection: pb::Connection::from(p.connection).into(),
                })
                .collect(),
            notes: h.env.notes,
        }))
    }
}

/// Errors of the gRPC server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Reflection could not load the descriptor set.
    #[error("building the reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("serving gRPC")]
    Transport(#[source] tonic::transport::Error),
    /// The TLS certificate or key is not usable.
    #[error("configuring gRPC TLS")]
    Tls(#[source] tonic::transport::Error),
}

/// Serves the topology API, health and reflection on `listener` until `shutdown` resolves, then
/// drains open streams. `health` is set to SERVING by the agent after the first probe. With
/// `tls`, every connection is TLS (and mutual TLS when it has a client CA).
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: TopologyApi,
    health: tonic_health::server::HealthReporter,
    limits: &ServerLimits,
    tls: Option<&tls::ServerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    // Reflection in both versions: v1, and v1alpha for older tools (grpcurl before 1.8.8,
    // some IDE plugins) that ask only for that one.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(ServeError::Reflection)?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;
    let svc = TopologyServiceServer::new(api)
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.config()).map_err(ServeError::Tls)?;
    }
    builder
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .add_service(tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health),
        ))
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(svc)
        .serve_with_incoming_shutdown(
            // Socket options apply to the incoming stream, not the builder, with a listener of
            // our own: without TCP_NODELAY every small reply waits for a delayed ACK (~40 ms).
            tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(limits.keepalive_interval)),
            shutdown,
        )
        .await
        .map_err(ServeError::Transport)
}

/// Name of the topology service, as health and reflection know it.
pub const SERVICE_NAME: &str = "nodetopo.v1.TopologyService";

/// The agent's gRPC port: where it listens unless told otherwise, and where the extender and
/// `query env` reach it.
pub const DEFAULT_PORT: u16 = 9750;

/// A connected client of the topology service.
pub type Client = pb::topology_service_client::TopologyServiceClient<tonic::transport::Channel>;

/// Connects to `endpoint` (`host:port` or a URL) in plaintext.
pub async fn connect(endpoint: &str) -> Result<Client, tonic::transport::Error> {
    connect_with(endpoint, None).await
}

/// Connects to `endpoint` (`host:port` or a URL; `https://` is implied for `host:port` with
/// `tls`), over TLS when `tls` is given.
pub async fn connect_with(
    endpoint: &str,
    tls: Option<&tls::ClientTls>,
) -> Result<Client, tonic::transport::Error> {
    let uri = match (endpoint.contains("://"), tls) {
        (true, _) => endpoint.to_string(),
        (false, None) => format!("http://{endpoint}"),
        (false, Some(_)) => format!("https://{endpoint}"),
    };
    let mut ep =
        tonic::transport::Endpoint::from_shared(uri)?.connect_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        ep = ep.tls_config(tls.config())?;
    }
    let ch = ep.connect().await?;
    Ok(pb::topology_service_client::TopologyServiceClient::new(ch)
        .max_decoding_message_size(ServerLimits::default().max_message_bytes))
}

/// The address a listener is bound to, for logs.
pub fn local_addr(l: &tokio::net::TcpListener) -> Option<SocketAddr> {
    l.local_addr().ok()
}

#[cfg(test)]
mod tests;
