//! The gRPC topology source: an [`AgentConnector`] that opens an agent's `WatchNodeTopology`
//! stream and turns each message back into the model.

use super::source::{AgentConnector, BoxError, BoxFuture, SourceError, TopologyStream};
use crate::{api, model::NodeTopology, proto::v1 as pb};

/// Connects to agents over gRPC (`host:port`, `http://host:port` or `https://host:port`), over
/// TLS when `tls` is set.
#[derive(Debug, Clone, Default)]
pub struct GrpcConnector {
    /// Client TLS settings (plaintext when `None`).
    pub tls: Option<api::tls::ClientTls>,
}

struct GrpcStream {
    endpoint: String,
    inner: tonic::Streaming<pb::WatchNodeTopologyResponse>,
}

impl TopologyStream for GrpcStream {
    fn next(&mut self) -> BoxFuture<'_, Option<Result<NodeTopology, SourceError>>> {
        Box::pin(async move {
            match self.inner.message().await {
                Ok(Some(msg)) => Some(Ok(msg
                    .topology
                    .as_ref()
                    .map(NodeTopology::from)
                    .unwrap_or_default())),
                Ok(None) => None,
                Err(status) => Some(Err(SourceError::Stream {
                    endpoint: self.endpoint.clone(),
                    source: status.into(),
                })),
            }
        })
    }
}

impl AgentConnector for GrpcConnector {
    fn connect<'a>(
        &'a self,
        endpoint: &'a str,
        since_revision: u64,
    ) -> BoxFuture<'a, Result<Box<dyn TopologyStream>, SourceError>> {
        Box::pin(async move {
            let connect_err = |source: BoxError| SourceError::Connect {
                endpoint: endpoint.to_string(),
                source,
            };
            let mut client = api::connect_with(endpoint, self.tls.as_ref())
                .await
                .map_err(|e| connect_err(e.into()))?;
            let inner = client
                .watch_node_topology(pb::WatchNodeTopologyRequest { since_revision })
                .await
                .map_err(|s| connect_err(s.into()))?
                .into_inner();
            Ok(Box::new(GrpcStream {
                endpoint: endpoint.to_string(),
                inner,
            }) as Box<dyn TopologyStream>)
        })
    }
}
