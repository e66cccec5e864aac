//! Command-line interface: flags become a validated configuration, then one `run` per
//! subcommand.

use std::path::PathBuf;

use clap::{
    Parser, Subcommand,
    builder::{PossibleValue, PossibleValuesParser, TypedValueParser},
};
use strum::{EnumMessage, IntoEnumIterator};

mod agent;
mod extender;
mod lldp;
mod manifests;
mod probe;
mod query;
mod query_env;
mod webhook;

/// The value parser of a flag that takes one of a library enum's variants: their names come
/// from the enum (`strum`, kebab-case) and each one's help from its doc comment, so the library
/// knows nothing of clap and the flag lists its values, with their help, as a `ValueEnum` would.
pub fn choice<T>() -> impl TypedValueParser<Value = T>
where
    T: IntoEnumIterator + EnumMessage + Into<&'static str> + std::str::FromStr,
    T: Clone + Send + Sync + 'static,
{
    let values = T::iter().map(|v| {
        let help = v.get_documentation().map(summary).unwrap_or_default();
        let name: &'static str = v.into();
        PossibleValue::new(name).help(help)
    });
    PossibleValuesParser::new(values).map(|name| {
        name.parse::<T>()
            .unwrap_or_else(|_| unreachable!("{name} is one of the listed values"))
    })
}

/// A doc comment's first paragraph on one line, without its closing period: a value's help,
/// as clap writes a `ValueEnum` variant's.
fn summary(doc: &str) -> String {
    let paragraph = doc.trim().split("\n\n").next().unwrap_or_default();
    let line = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
    line.strip_suffix('.').map(str::to_string).unwrap_or(line)
}

/// Client TLS flags for reaching agents whose gRPC API serves TLS.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// Use TLS; verify the agent's certificate against this PEM CA.
    #[arg(long, value_name = "FILE", global = true)]
    pub grpc_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for agents that require mutual TLS (needs `--grpc-tls-client-key`).
    #[arg(
        long,
        value_name = "FILE",
        requires = "grpc_tls_client_key",
        global = true
    )]
    pub grpc_tls_client_cert: Option<PathBuf>,
    /// The PEM private key of `--grpc-tls-client-cert`.
    #[arg(
        long,
        value_name = "FILE",
        requires = "grpc_tls_client_cert",
        global = true
    )]
    pub grpc_tls_client_key: Option<PathBuf>,
    /// The name the agent's certificate must carry, when it is not the host dialled (an IP).
    #[arg(long, value_name = "NAME", global = true)]
    pub grpc_tls_server_name: Option<String>,
}

impl ClientTlsArgs {
    /// The client TLS settings, or `None` for plaintext (no `--grpc-tls-ca`).
    pub fn load(&self) -> anyhow::Result<Option<nodetopo::api::tls::ClientTls>> {
        use anyhow::Context;
        let Some(ca) = &self.grpc_tls_ca else {
            anyhow::ensure!(
                self.grpc_tls_client_cert.is_none() && self.grpc_tls_server_name.is_none(),
                "the --grpc-tls-* client options need --grpc-tls-ca"
            );
            return Ok(None);
        };
        nodetopo::api::tls::ClientTls::load(
            Some(ca),
            self.grpc_tls_client_cert.as_deref(),
            self.grpc_tls_client_key.as_deref(),
            self.grpc_tls_server_name.clone(),
        )
        .map(Some)
        .context("--grpc-tls-ca/--grpc-tls-client-cert/--grpc-tls-client-key")
    }
}

/// What a probe reads: the flags `probe` and `agent` share, turned into one
/// [`ProbeConfig`](nodetopo::probe::ProbeConfig).
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeSourceArgs {
    /// Root of the sysfs tree to read (`/host-sys` inside the DaemonSet).
    #[arg(long, value_name = "DIR", default_value_os_t = default_sysfs(), env = "NODETOPO_SYSFS_ROOT")]
    pub sysfs_root: PathBuf,
    /// Read NVML answers from a snapshot FILE instead of the driver (the agent reads it again
    /// on every probe).
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// This node's name: the one reported, and the Node whose labels the agent writes
    /// (defaults to the host name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Ask NVML for every pair's P2P status, even where NVSwitch links make it certain.
    #[arg(long)]
    pub query_all_p2p: bool,
    /// Path of the NVML library (default: `libnvidia-ml.so.1` from the loader's search path).
    #[arg(long, value_name = "PATH", env = "NODETOPO_NVML_LIB")]
    pub nvml_lib: Option<PathBuf>,
    /// NIC roles set by hand, repeatable: `ROLE=NAME[,NAME...]` with ROLE `compute`, `storage`
    /// or `virtual` and NAME a device (`mlx5_4`), a netdev (`enp94s0f0np0`) or a PCI address.
    /// Named NICs take that role instead of the derived one.
    #[arg(long = "nic-role", value_name = "ROLE=NAMES")]
    pub nic_roles: Vec<String>,
    #[command(flatten)]
    pub network: NetworkArgs,
}

impl ProbeSourceArgs {
    /// The validated configuration. `record` is `probe --record`'s file; `default_lldp_wait`
    /// the command's own default of `--lldp-wait`.
    pub fn config(
        self,
        record: Option<PathBuf>,
        default_lldp_wait: std::time::Duration,
    ) -> anyhow::Result<nodetopo::probe::ProbeConfig> {
        use anyhow::Context;
        use nodetopo::probe::GpuSource;
        let nic_roles =
            nodetopo::probe::rails::RoleOverrides::parse(self.nic_roles.iter().map(String::as_str))
                .context("--nic-role")?;
        if !self.sysfs_root.is_dir() {
            tracing::warn!(root = %self.sysfs_root.display(), "sysfs root is not a directory; sysfs facts will be missing");
        }
        let gpu = match (self.replay, record) {
            (Some(path), _) => GpuSource::Replay(path),
            (None, Some(path)) => GpuSource::Record(path),
            (None, None) => GpuSource::Live,
        };
        Ok(nodetopo::probe::ProbeConfig {
            node_name: node_name(self.node_name),
            network: self.network.options(default_lldp_wait)?,
            sysfs_root: self.sysfs_root,
            gpu,
            nvml_lib: self.nvml_lib,
            options: nodetopo::probe::nvml::prober::ProbeOptions {
                query_all_p2p: self.query_all_p2p,
            },
            nic_roles,
        })
    }
}

/// The node labels' naming: the flags `probe -o labels` and `agent` share.
#[derive(Debug, Clone, clap::Args)]
pub struct LabelArgs {
    /// Label key prefix.
    #[arg(long, value_name = "DNS-SUBDOMAIN", default_value = nodetopo::labels::DEFAULT_PREFIX)]
    pub label_prefix: String,
    /// Opt-in compatibility labels carrying the NVLink domain, comma-separated: `topograph`
    /// (accelerator.topograph.run/domain), `gfd-clique` (nvidia.com/gpu.clique; only where GPU
    /// feature discovery is not deployed). Off by default.
    #[arg(long, value_name = "LIST", default_value = "")]
    pub compat_labels: String,
}

impl LabelArgs {
    /// The validated label configuration.
    pub fn config(&self) -> anyhow::Result<nodetopo::labels::LabelConfig> {
        use anyhow::Context;
        Ok(nodetopo::labels::LabelConfig::new(&self.label_prefix)
            .context("--label-prefix")?
            .with_compat(
                nodetopo::labels::compat::CompatOptions::parse_list(&self.compat_labels)
                    .context("--compat-labels")?,
            ))
    }
}

/// Flags of the fabric placement probes, shared by `probe` and `agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct NetworkArgs {
    /// Directed-route SMP queries for each InfiniBand compute port's leaf switch and spines:
    /// `on` (the ports found in sysfs), `off`, or `only` (adapters and ports from libibumad
    /// alone, no RDMA sysfs: for the ibsim simulator). Builds without the `umad` feature send
    /// none.
    #[arg(long, value_parser = choice::<nodetopo::probe::IbSmpMode>(), default_value_t = nodetopo::probe::IbSmpMode::On, env = "NODETOPO_IB_SMP")]
    pub ib_smp: nodetopo::probe::IbSmpMode,
    /// Timeout of one SMP query attempt.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub ib_smp_timeout: std::time::Duration,
    /// Attempts after the first for an SMP query that got no reply.
    #[arg(long, default_value_t = 2)]
    pub ib_smp_retries: u32,
    /// LLDP on each active compute-rail RoCE port's netdev, for its leaf switch (needs
    /// CAP_NET_RAW): `auto` (listen unless every socket is refused or no such netdev exists
    /// here), `on` (listen and report each failure), `off`.
    #[arg(long, value_parser = choice::<nodetopo::probe::lldp::LldpMode>(), default_value_t = nodetopo::probe::lldp::LldpMode::Auto, env = "NODETOPO_LLDP")]
    pub lldp: nodetopo::probe::lldp::LldpMode,
    /// How long the first probe waits for every RoCE compute port's first LLDP frame (switches
    /// send every 30 s by default). Default: 35s for `probe`, 5s for `agent` (whose labels
    /// follow when the frames arrive). At most 5m.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lldp_wait: Option<std::time::Duration>,
    /// A YAML or JSON file of names for leaf IDs and su/block hashes (`names: {ID: NAME}`).
    #[arg(long, value_name = "FILE", env = "NODETOPO_FABRIC_NAMES")]
    pub fabric_names: Option<PathBuf>,
}

impl NetworkArgs {
    /// The validated options.
    pub fn options(
        &self,
        default_lldp_wait: std::time::Duration,
    ) -> anyhow::Result<nodetopo::probe::NetworkOptions> {
        use anyhow::Context;
        if self.ib_smp == nodetopo::probe::IbSmpMode::Only && !cfg!(feature = "umad") {
            anyhow::bail!("--ib-smp only needs a build with the umad feature");
        }
        anyhow::ensure!(
            !self.ib_smp_timeout.is_zero()
                && self.ib_smp_timeout <= std::time::Duration::from_secs(10),
            "--ib-smp-timeout must be above 0 and at most 10s"
        );
        anyhow::ensure!(
            self.ib_smp_retries <= 10,
            "--ib-smp-retries must be at most 10"
        );
        let lldp_wait = self.lldp_wait.unwrap_or(default_lldp_wait);
        anyhow::ensure!(
            lldp_wait <= std::time::Duration::from_secs(300),
            "--lldp-wait must be at most 5m"
        );
        let names = match &self.fabric_names {
            Some(p) => nodetopo::probe::network::FabricNames::load(p).context("--fabric-names")?,
            None => nodetopo::probe::network::FabricNames::default(),
        };
        Ok(nodetopo::probe::NetworkOptions {
            ib_smp: self.ib_smp,
            budget: nodetopo::probe::ib::QueryBudget {
                timeout: self.ib_smp_timeout,
                retries: self.ib_smp_retries,
            },
            names,
            lldp: self.lldp,
            lldp_wait,
        })
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Discovers this node's GPU, NVLink, multi-node NVLink and RDMA topology.
#[derive(Debug, Parser)]
// A single-valued flag given twice takes the last value, as kube components do: the chart's
// arguments come first and `extraArgs` after them, so an operator can override any flag.
#[command(name = "nodetopo", version, about, args_override_self = true)]
pub struct Cli {
    /// More logging on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe this node's hardware and print its topology.
    Probe(probe::ProbeArgs),
    /// Serve the kube-scheduler extender that places pod groups by topology.
    Extender(extender::ExtenderArgs),
    /// Print manifests built from nodetopo's labels (scheduler topology objects).
    Manifests(manifests::ManifestsArgs),
    /// Run the node agent: probe loop, gRPC topology service, node labels, metrics.
    Agent(agent::AgentArgs),
    /// Ask a running agent for its topology over gRPC.
    Query(query::QueryArgs),
    /// Serve the admission webhook that copies topology labels from a Pod's Node onto the Pod.
    Webhook(webhook::WebhookArgs),
    /// Listen for LLDP frames on netdevs for a bounded time and print the neighbours heard
    /// (diagnostic; needs CAP_NET_RAW).
    #[command(hide = true)]
    Lldp(lldp::LldpArgs),
}

/// Sets up `tracing` on stderr.
pub fn init_tracing(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Probe(args) => probe::run(args),
        Command::Extender(args) => extender::run(args),
        Command::Manifests(args) => manifests::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Query(args) => query::run(args),
        Command::Webhook(args) => webhook::run(args),
        Command::Lldp(args) => lldp::run(args),
    }
}

/// The node name: `--node-name`/`NODE_NAME`, else the host name.
pub(crate) fn node_name(flag: Option<String>) -> String {
    flag.filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The multi-threaded runtime of a long-running subcommand.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Default sysfs root.
pub(crate) fn default_sysfs() -> PathBuf {
    PathBuf::from("/sys")
}
