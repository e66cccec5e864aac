//! `nodetopo agent`: flags become an [`AgentConfig`], then the agent runs.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use nodetopo::{
    agent::{self, AgentConfig},
    api::ServerLimits,
};

/// Flags of `nodetopo agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Time between probes (e.g. `60s`, `200ms`).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Probe once, print and apply the labels, then exit.
    #[arg(long)]
    oneshot: bool,
    /// gRPC listen address.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], nodetopo::api::DEFAULT_PORT)))]
    grpc_listen: SocketAddr,
    /// Metrics and health HTTP listen address.
    #[arg(long, default_value = "0.0.0.0:9751")]
    metrics_listen: SocketAddr,
    /// Serve gRPC over TLS with this PEM certificate chain (needs `--grpc-tls-key`).
    #[arg(long, value_name = "FILE", requires = "grpc_tls_key")]
    grpc_tls_cert: Option<PathBuf>,
    /// The PEM private key of `--grpc-tls-cert`.
    #[arg(long, value_name = "FILE", requires = "grpc_tls_cert")]
    grpc_tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS; needs `--grpc-tls-cert`).
    #[arg(long, value_name = "FILE", requires = "grpc_tls_cert")]
    grpc_tls_client_ca: Option<PathBuf>,
    /// Most concurrent watch streams.
    #[arg(long, default_value_t = 1024)]
    max_watchers: usize,
    /// Threads of the async runtime that serves gRPC, metrics and label writes (probes run on
    /// blocking threads of their own).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    worker_threads: u16,
    /// Do not write node labels (no cluster needed): gRPC and metrics only.
    #[arg(long)]
    no_kube: bool,
    /// Timeout of one label write.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    kube_timeout: Duration,
    /// How long the probe loop, the label writer and the gRPC streams get to finish on SIGTERM.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
    #[command(flatten)]
    labels: super::LabelArgs,
    #[command(flatten)]
    source: super::ProbeSourceArgs,
}

impl AgentArgs {
    fn into_config(self) -> anyhow::Result<AgentConfig> {
        if self.interval < Duration::from_millis(10) {
            bail!(
                "--interval {:?} is too short (at least 10ms)",
                self.interval
            );
        }
        if self.max_watchers == 0 {
            bail!("--max-watchers must be at least 1");
        }
        let labels = self.labels.config()?;
        let grpc_tls = match (&self.grpc_tls_cert, &self.grpc_tls_key) {
            (Some(cert), Some(key)) => Some(
                nodetopo::api::tls::ServerTls::load(cert, key, self.grpc_tls_client_ca.as_deref())
                    .context("--grpc-tls-cert/--grpc-tls-key/--grpc-tls-client-ca")?,
            ),
            _ => None,
        };
        Ok(AgentConfig {
            grpc_tls,
            probe: self.source.config(None, nodetopo::agent::AGENT_LLDP_WAIT)?,
            interval: self.interval,
            oneshot: self.oneshot,
            grpc_listen: self.grpc_listen,
            metrics_listen: self.metrics_listen,
            limits: ServerLimits {
                max_watchers: self.max_watchers,
                ..ServerLimits::default()
            },
            labels,
            kube: !self.no_kube,
            kube_timeout: self.kube_timeout,
            grace: self.grace,
        })
    }
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let workers = usize::from(args.worker_threads);
    let cfg = args.into_config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if cfg.oneshot {
        Ok(rt.block_on(agent::run_oneshot(cfg))?)
    } else {
        Ok(rt.block_on(agent::run(cfg))?)
    }
}
