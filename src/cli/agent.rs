//! `nodetopo agent`: flags become an [`AgentConfig`], then the agent runs.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use nodetopo::{
    agent::{self, AgentConfig, GpuSource},
    api::ServerLimits,
    labels::LabelConfig,
    probe::{nvml::prober::ProbeOptions, rails::RoleOverrides},
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
    /// Read NVML answers from a snapshot FILE (read again on every probe) instead of the driver.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// Root of the sysfs tree to read (`/host-sys` inside the DaemonSet).
    #[arg(long, value_name = "DIR", default_value_os_t = super::default_sysfs(), env = "NODETOPO_SYSFS_ROOT")]
    sysfs_root: PathBuf,
    /// This node's name (the Node whose labels are written).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// gRPC listen address.
    #[arg(long, default_value = "0.0.0.0:9750")]
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
    /// Label key prefix.
    #[arg(long, value_name = "DNS-SUBDOMAIN", default_value = nodetopo::labels::DEFAULT_PREFIX)]
    label_prefix: String,
    /// Opt-in compatibility labels carrying the NVLink domain, comma-separated: `topograph`
    /// (accelerator.topograph.run/domain), `gfd-clique` (nvidia.com/gpu.clique; only where GPU
    /// feature discovery is not deployed). Off by default.
    #[arg(long, value_name = "LIST", default_value = "")]
    compat_labels: String,
    /// Do not write node labels (no cluster needed): gRPC and metrics only.
    #[arg(long)]
    no_kube: bool,
    /// Timeout of one label write.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    kube_timeout: Duration,
    /// How long the probe loop, the label writer and the gRPC streams get to finish on SIGTERM.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// Ask NVML for every pair's P2P status, even where NVSwitch links make it certain.
    #[arg(long)]
    query_all_p2p: bool,
    /// Path of the NVML library (default: `libnvidia-ml.so.1` from the loader's search path).
    #[arg(long, value_name = "PATH", env = "NODETOPO_NVML_LIB")]
    nvml_lib: Option<PathBuf>,
    /// NIC roles set by hand, repeatable: `ROLE=NAME[,NAME...]` with ROLE `compute`, `storage`
    /// or `virtual` and NAME a device (`mlx5_4`), a netdev (`enp94s0f0np0`) or a PCI address.
    /// Named NICs take that role instead of the derived one.
    #[arg(long = "nic-role", value_name = "ROLE=NAMES")]
    nic_roles: Vec<String>,
    #[command(flatten)]
    network: super::NetworkArgs,
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
        let labels = LabelConfig::new(&self.label_prefix)
            .context("--label-prefix")?
            .with_compat(
                nodetopo::labels::compat::CompatOptions::parse_list(&self.compat_labels)
                    .context("--compat-labels")?,
            );
        let nic_roles = RoleOverrides::parse(self.nic_roles.iter().map(String::as_str))
            .context("--nic-role")?;
        if !self.sysfs_root.is_dir() {
            tracing::warn!(root = %self.sysfs_root.display(), "sysfs root is not a directory; sysfs facts will be missing");
        }
        let grpc_tls = match (&self.grpc_tls_cert, &self.grpc_tls_key) {
            (Some(cert), Some(key)) => Some(
                nodetopo::api::tls::ServerTls::load(cert, key, self.grpc_tls_client_ca.as_deref())
                    .context("--grpc-tls-cert/--grpc-tls-key/--grpc-tls-client-ca")?,
            ),
            _ => None,
        };
        Ok(AgentConfig {
            grpc_tls,
            node_name: super::node_name(self.node_name),
            interval: self.interval,
            oneshot: self.oneshot,
            gpu_source: match self.replay {
                Some(p) => GpuSource::Replay(p),
                None => GpuSource::Live,
            },
            nvml_lib: self.nvml_lib.clone(),
            probe_options: ProbeOptions {
                query_all_p2p: self.query_all_p2p,
            },
            sysfs_root: self.sysfs_root,
            nic_roles,
            network: self.network.options(nodetopo::agent::AGENT_LLDP_WAIT)?,
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
