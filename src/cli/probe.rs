//! `nodetopo probe`: probe once and print.

use std::{io::Write, path::PathBuf, time::SystemTime};

use anyhow::{Context, bail};
use clap::Args;
use nodetopo::{
    hints::{GpuSelector, env_hints},
    labels::LabelConfig,
    probe::{
        Prober,
        nvml::live::LiveNvml,
        nvml::prober::{GpuProber, ProbeOptions},
        nvml::snapshot::NvmlSnapshot,
        rails::RoleOverrides,
        sysfs::SysfsRoot,
    },
    render::{self, Format},
};

/// Flags of `nodetopo probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Output format.
    #[arg(short, long, value_parser = super::choice::<Format>(), default_value_t = Format::Table)]
    output: Format,
    /// Root of the sysfs tree to read (`/host-sys` inside the DaemonSet).
    #[arg(long, value_name = "DIR", default_value_os_t = super::default_sysfs(), env = "NODETOPO_SYSFS_ROOT")]
    sysfs_root: PathBuf,
    /// Record a snapshot of every NVML answer to FILE (live NVML only), then print as usual.
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    record: Option<PathBuf>,
    /// Read NVML answers from a snapshot FILE instead of the driver.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// Node name to report (defaults to the host name).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// With `-o env`: only these GPUs (NVML indices or UUIDs, comma-separated), in this order.
    #[arg(long, value_name = "LIST")]
    gpus: Option<String>,
    /// With `-o env`: who reads the environment. `vllm` leaves out what a vLLM worker sets for
    /// itself (UCX_NET_DEVICES, NVSHMEM_HCA_LIST, NCCL_IB_HCA) whenever the vLLM variables are
    /// given.
    #[arg(long = "for", value_name = "CONSUMER", value_parser = super::choice::<nodetopo::hints::Consumer>(), default_value_t = nodetopo::hints::Consumer::Generic)]
    consumer: nodetopo::hints::Consumer,
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
    /// Label key prefix for `-o labels`.
    #[arg(long, value_name = "DNS-SUBDOMAIN", default_value = nodetopo::labels::DEFAULT_PREFIX)]
    label_prefix: String,
    /// Opt-in compatibility labels carrying the NVLink domain, comma-separated: `topograph`
    /// (accelerator.topograph.run/domain), `gfd-clique` (nvidia.com/gpu.clique; only where GPU
    /// feature discovery is not deployed). Off by default.
    #[arg(long, value_name = "LIST", default_value = "")]
    compat_labels: String,
    #[command(flatten)]
    network: super::NetworkArgs,
}

/// `probe`'s default first LLDP wait: one default transmit interval of a switch, and some.
const PROBE_LLDP_WAIT: std::time::Duration = std::time::Duration::from_secs(35);

pub fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let label_config = LabelConfig::new(&args.label_prefix)
        .context("--label-prefix")?
        .with_compat(
            nodetopo::labels::compat::CompatOptions::parse_list(&args.compat_labels)
                .context("--compat-labels")?,
        );
    let selection = match &args.gpus {
        Some(_) if args.output != Format::Env => bail!("--gpus needs -o env"),
        _ if args.output != Format::Env && args.consumer != nodetopo::hints::Consumer::Generic => {
            bail!("--for needs -o env")
        }
        Some(list) => Some(GpuSelector::parse_list(list).context("--gpus")?),
        None => None,
    };
    let nic_roles =
        RoleOverrides::parse(args.nic_roles.iter().map(String::as_str)).context("--nic-role")?;
    let sysfs = SysfsRoot::new(&args.sysfs_root);
    if !args.sysfs_root.is_dir() {
        tracing::warn!(root = %args.sysfs_root.display(), "sysfs root is not a directory; sysfs facts will be missing");
    }
    let node = super::node_name(args.node_name);
    let options = ProbeOptions {
        query_all_p2p: args.query_all_p2p,
    };
    let prober = if let Some(path) = &args.replay {
        let snap = NvmlSnapshot::load(path)?;
        Prober::new(Ok(GpuProber::new(Box::new(snap), options)), sysfs, node)
    } else if let Some(path) = &args.record {
        let live = match LiveNvml::init(args.nvml_lib.as_deref().map(|p| p.as_os_str())) {
            Ok(l) => l,
            Err(e) => bail!("cannot record: NVML is not available: {e}"),
        };
        let snap = NvmlSnapshot::capture(
            &live,
            format!("nodetopo {} --record on {node}", env!("CARGO_PKG_VERSION")),
        );
        snap.save(path)
            .with_context(|| format!("writing snapshot {}", path.display()))?;
        tracing::info!(path = %path.display(), "snapshot recorded");
        Prober::new(Ok(GpuProber::new(Box::new(live), options)), sysfs, node)
    } else {
        Prober::live(
            sysfs,
            node,
            options,
            args.nvml_lib.as_deref().map(|p| p.as_os_str()),
        )
    };
    // The LLDP listeners run on a runtime of their own; the probe blocks this thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut prober = prober
        .with_nic_roles(nic_roles)
        .with_network(args.network.options(PROBE_LLDP_WAIT)?)
        .with_lldp_runtime(rt.handle().clone());
    let topo = prober.probe(SystemTime::now());
    drop(prober);
    drop(rt);
    for s in topo.sources.iter().filter(|s| !s.ok) {
        tracing::info!(source = %s.source, error = %s.error, "probe source failed");
    }
    let mut out = std::io::stdout().lock();
    let text = match (&selection, args.output) {
        (sel, Format::Env) => match env_hints(&topo, sel.as_deref()) {
            Ok(h) => h.for_consumer(args.consumer).to_shell(),
            Err(e) if sel.is_some() => return Err(anyhow::Error::from(e).context("--gpus")),
            Err(e) => format!("# no hints: {e}\n"),
        },
        (_, Format::Labels) => render::labels(&topo, &label_config),
        (_, f) => render::render(&topo, f),
    };
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
