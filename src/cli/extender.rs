//! `nodetopo extender`: the kube-scheduler extender. Flags become an [`ExtenderConfig`], then
//! the server runs until SIGTERM or Ctrl-C.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Args;
use nodetopo::backoff::Backoff;
use nodetopo::extender::{
    ExtenderConfig,
    policy::Weights,
    server::{self, ServerConfig},
    source::AgentEndpoints,
    view::LabelKeys,
};

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
    #[arg(long, default_value_t = nodetopo::api::DEFAULT_PORT)]
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
    /// How long the server and the watches get to finish on SIGTERM.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
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
        backoff: Backoff::try_new(args.backoff_base, args.backoff_max)
            .context("--backoff-base/--backoff-max")?,
        agent_port: args.agent_port,
        agent_tls: args.agent_tls.load()?,
        grace: args.grace,
    })
}

/// Runs the extender until a shutdown signal.
pub fn run(args: ExtenderArgs) -> anyhow::Result<()> {
    let cfg = config(args)?;
    super::runtime()?.block_on(nodetopo::extender::run(cfg))?;
    Ok(())
}
