//! The extender process: its sources feed the cluster view, the pod watch feeds the placed
//! members, and the HTTP server answers kube-scheduler until the process is told to stop
//! ([`crate::serve`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use thiserror::Error;

use super::{
    Extender,
    cluster::ClusterSource,
    grpc::GrpcConnector,
    placed::{MemoryPlacementIndex, PlacementIndex},
    policy::Weights,
    server::{self, ServerConfig},
    source::{AgentConnector, AgentEndpoints, FileConnector, SchemeConnector, watch_agent},
    view::{ClusterView, LabelKeys, SharedView, ViewEvent},
};
use crate::{
    backoff::Backoff,
    serve::{BindError, Lifecycle, ServeError, bind},
};

/// The extender's validated configuration.
#[derive(Debug, Clone)]
pub struct ExtenderConfig {
    /// Where the verbs are served.
    pub listen: SocketAddr,
    /// The HTTP server's options.
    pub server: ServerConfig,
    /// The agents' label keys.
    pub labels: LabelKeys,
    /// Agents named on the command line (`--agents`), and their nodes' labels.
    pub agents: AgentEndpoints,
    /// Score weights.
    pub weights: Weights,
    /// Run without a Kubernetes API (no Node or Pod watch).
    pub no_kube: bool,
    /// Reconnect delays of the agent streams and the watches.
    pub backoff: Backoff,
    /// The agents' gRPC port, for endpoints found through the Node watch.
    pub agent_port: u16,
    /// TLS for the agents' gRPC API (plaintext when `None`).
    pub agent_tls: Option<crate::api::tls::ClientTls>,
    /// How long the server and the watches get to finish on SIGTERM.
    pub grace: Duration,
}

/// Why the extender could not start, or stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RunError {
    /// No Kubernetes client.
    #[error("connecting to the Kubernetes API (use --no-kube outside a cluster)")]
    Kube(#[source] kube::Error),
    /// The listen address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The server failed or stopped on its own.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Runs the extender until SIGTERM or Ctrl-C, then drains within the grace period.
pub async fn run(cfg: ExtenderConfig) -> Result<(), RunError> {
    let mut lifecycle = Lifecycle::new();
    let view = SharedView::new(ClusterView::new(cfg.labels.clone()));
    for (node, labels) in &cfg.agents.labels {
        view.apply(ViewEvent::Labels {
            node: node.clone(),
            labels: labels.clone(),
        });
    }
    let connector: Arc<dyn AgentConnector> = Arc::new(SchemeConnector {
        file: Arc::new(FileConnector {
            poll: Duration::from_millis(200),
        }),
        network: Arc::new(GrpcConnector {
            tls: cfg.agent_tls.clone(),
        }),
    });
    for (node, endpoint) in &cfg.agents.endpoints {
        lifecycle.worker(watch_agent(
            node.clone(),
            endpoint.clone(),
            connector.clone(),
            view.clone(),
            cfg.backoff,
            lifecycle.stop(),
        ));
    }
    let placements: Arc<dyn PlacementIndex> = Arc::new(MemoryPlacementIndex::new());
    if !cfg.no_kube {
        let client = crate::kube_client::client().await.map_err(RunError::Kube)?;
        let src = ClusterSource {
            client,
            agent_port: cfg.agent_port,
            connector: connector.clone(),
            backoff: cfg.backoff,
            exclude: cfg.agents.endpoints.keys().cloned().collect(),
        };
        lifecycle.worker(src.clone().run_nodes(view.clone(), lifecycle.stop()));
        lifecycle.worker(src.run_pods(placements.clone(), lifecycle.stop()));
    }
    let ext = Extender::new(view, placements, cfg.weights);
    let listener = bind("--listen", cfg.listen).await?;
    let local = listener.local_addr().unwrap_or(cfg.listen);
    // The first line on stdout is the bound address, so that callers can use port 0.
    println!("listening on {local}");
    tracing::info!(%local, "extender serving");
    lifecycle.server(
        "HTTP server",
        axum::serve(listener, server::router(ext, cfg.server))
            .with_graceful_shutdown(lifecycle.stopped())
            .into_future(),
    );
    lifecycle.run(cfg.grace).await?;
    Ok(())
}
