//! `nodetopo extender`: the kube-scheduler extender. Flags become an [`ExtenderConfig`], then
//! the server runs until SIGTERM or Ctrl-C.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Args;
use nodetopo::backoff::Backoff;
use nodetopo::extender::{
    Extender,
    cluster::ClusterSource,
    grpc::GrpcConnector,
    placed::{MemoryPlacementIndex, PlacementIndex},
    policy::Weights,
    server::{self, ServerConfig},
    source::{AgentConnector, AgentEndpoints, FileConnector, SchemeConnector, watch_agent},
    view::{ClusterView, LabelKeys, SharedView, ViewEvent},
};
use tokio::sync::watch;

/// Flags of `nodetopo extender`.
#[derive(Debug, Args)]
pub struct ExtenderArgs {
    /// Address to serve the extender verbs on.
    #[arg(long, default_value = "0.0.0.0:8888")]
    listen: SocketAddr,
    /// URL path prefix of the verbs (`{prefix}/filter`, `{prefix}/prioritize`).
    #[arg(long, default_value = "/")]
    prefix: String,
    /// node → agent endpoint (`host:port` or `file:PATH`), YAML or JSON.
    #[arg(long)]
    agents: Option<PathBuf>,
    /// The agents' gRPC port, for endpoints found through the Node watch.
    #[arg(long, default_value_t = 9750)]
    agent_port: u16,
    /// Node label that names the leaf/block (e.g. `network.topology.nvidia.com/leaf`).
    #[arg(long)]
    block_label: Option<String>,
    /// The agent's label prefix.
    #[arg(long, default_value = nodetopo::labels::DEFAULT_PREFIX)]
    label_prefix: String,
    /// Log the per-node score breakdown of every request.
    #[arg(long)]
    explain: bool,
    /// Run without a Kubernetes API (no Node or Pod watch).
    #[arg(long)]
    no_kube: bool,
    /// Score weights, YAML or JSON (fields: within_group, counterpart, capacity, level_*).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Accept pod events on `POST {prefix}/debug/placed` (tests and demos).
    #[arg(long)]
    debug_placements: bool,
    /// Request body limit in bytes.
    #[arg(long, default_value_t = server::DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    #[command(flatten)]
    agent_tls: super::ClientTlsArgs,
    /// First reconnect delay for agent streams.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    backoff_base: Duration,
    /// Longest reconnect delay for agent streams.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    backoff_max: Duration,
    /// Ignored (deprecated: Nodes and Pods are watched).
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    node_resync: Option<Duration>,
    /// Ignored (deprecated: Nodes and Pods are watched).
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    pod_resync: Option<Duration>,
}

/// Validated configuration.
struct ExtenderConfig {
    listen: SocketAddr,
    server: ServerConfig,
    labels: LabelKeys,
    agents: AgentEndpoints,
    weights: Weights,
    no_kube: bool,
    backoff: Backoff,
    agent_port: u16,
    agent_tls: Option<nodetopo::api::tls::ClientTls>,
}

fn config(args: ExtenderArgs) -> anyhow::Result<ExtenderConfig> {
    let weights = match &args.weights {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("--weights {}", p.display()))?;
            serde_yaml_ng::from_str::<Weights>(&text)
                .with_context(|| format!("--weights {}", p.display()))?
        }
        None => Weights::default(),
    };
    weights.validate().context("--weights")?;
    let agents = match &args.agents {
        Some(p) => AgentEndpoints::load(p).context("--agents")?,
        None => AgentEndpoints::default(),
    };
    for (flag, given) in [
        ("--node-resync", args.node_resync.is_some()),
        ("--pod-resync", args.pod_resync.is_some()),
    ] {
        if given {
            tracing::warn!(flag, "deprecated and ignored: Nodes and Pods are watched");
        }
    }
    if args.no_kube && args.agents.is_none() {
        tracing::warn!("--no-kube without --agents: only node labels in requests are used");
    }
    if !nodetopo::labels::is_dns_subdomain(&args.label_prefix) {
        anyhow::bail!(
            "--label-prefix {:?}: want a lowercase DNS subdomain, as the agent's",
            args.label_prefix
        );
    }
    if let Some(block) = args.block_label.as_deref().filter(|s| !s.is_empty()) {
        nodetopo::labels::LabelKey::parse(block).context("--block-label")?;
    }
    Ok(ExtenderConfig {
        listen: args.listen,
        server: ServerConfig {
            prefix: args.prefix,
            explain: args.explain,
            debug_placements: args.debug_placements,
            body_limit: args.body_limit,
        },
        labels: LabelKeys {
            prefix: args.label_prefix,
            block_label: args.block_label.filter(|s| !s.is_empty()),
        },
        agents,
        weights,
        no_kube: args.no_kube,
        backoff: Backoff::new(args.backoff_base, args.backoff_max),
        agent_port: args.agent_port,
        agent_tls: args.agent_tls.load()?,
    })
}

/// Runs the extender until a shutdown signal.
pub fn run(args: ExtenderArgs) -> anyhow::Result<()> {
    let cfg = config(args)?;
    super::runtime()?.block_on(serve(cfg))
}

async fn serve(cfg: ExtenderConfig) -> anyhow::Result<()> {
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (node, endpoint) in &cfg.agents.endpoints {
        tasks.push(tokio::spawn(watch_agent(
            node.clone(),
            endpoint.clone(),
            connector.clone(),
            view.clone(),
            cfg.backoff,
            stop_rx.clone(),
        )));
    }
    let placements: Arc<dyn PlacementIndex> = Arc::new(MemoryPlacementIndex::new());
    if !cfg.no_kube {
        let client = nodetopo::kube_client::client()
            .await
            .context("connecting to the Kubernetes API (use --no-kube outside a cluster)")?;
        let src = ClusterSource {
            client,
            agent_port: cfg.agent_port,
            connector: connector.clone(),
            backoff: cfg.backoff,
            exclude: cfg.agents.endpoints.keys().cloned().collect(),
        };
        tasks.push(tokio::spawn(
            src.clone().run_nodes(view.clone(), stop_rx.clone()),
        ));
        tasks.push(tokio::spawn(
            src.run_pods(placements.clone(), stop_rx.clone()),
        ));
    }
    let ext = Extender::new(view, placements, cfg.weights);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("--listen {}", cfg.listen))?;
    let local = listener.local_addr().context("local address")?;
    // The first line on stdout is the bound address, so that callers can use port 0.
    println!("listening on {local}");
    tracing::info!(%local, "extender serving");
    let app = server::router(ext, cfg.server);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

pub(super) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
