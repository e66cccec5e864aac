//! `nodetopo probe`: probe once and print.

use std::{io::Write, path::PathBuf, time::SystemTime};

use anyhow::{Context, bail};
use clap::Args;
use nodetopo::{
    hints::{GpuSelector, env_hints},
    probe::{GpuSource, Prober, nvml::snapshot::NvmlSnapshot},
    render::{self, Format},
};

/// Flags of `nodetopo probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Output format.
    #[arg(short, long, value_parser = super::choice::<Format>(), default_value_t = Format::Table)]
    output: Format,
    /// Record a snapshot of every NVML answer to FILE (live NVML only), then print as usual.
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    record: Option<PathBuf>,
    /// With `-o env`: only these GPUs (NVML indices or UUIDs, comma-separated), in this order.
    #[arg(long, value_name = "LIST")]
    gpus: Option<String>,
    /// With `-o env`: who reads the environment. `vllm` leaves out what a vLLM worker sets for
    /// itself (UCX_NET_DEVICES, NVSHMEM_HCA_LIST, NCCL_IB_HCA) whenever the vLLM variables are
    /// given.
    #[arg(long = "for", value_name = "CONSUMER", value_parser = super::choice::<nodetopo::hints::Consumer>(), default_value_t = nodetopo::hints::Consumer::Generic)]
    consumer: nodetopo::hints::Consumer,
    #[command(flatten)]
    labels: super::LabelArgs,
    #[command(flatten)]
    source: super::ProbeSourceArgs,
}

/// `probe`'s default first LLDP wait: one default transmit interval of a switch, and some.
const PROBE_LLDP_WAIT: std::time::Duration = std::time::Duration::from_secs(35);

pub fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let label_config = args.labels.config()?;
    let selection = match &args.gpus {
        Some(_) if args.output != Format::Env => bail!("--gpus needs -o env"),
        _ if args.output != Format::Env && args.consumer != nodetopo::hints::Consumer::Generic => {
            bail!("--for needs -o env")
        }
        Some(list) => Some(GpuSelector::parse_list(list).context("--gpus")?),
        None => None,
    };
    let cfg = args.source.config(args.record, PROBE_LLDP_WAIT)?;
    if let GpuSource::Replay(path) = &cfg.gpu {
        // A bad snapshot is this command's error (the agent reports it as a failed source).
        NvmlSnapshot::load(path)?;
    }
    // The LLDP listeners run on a runtime of their own; the probe blocks this thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut prober = Prober::from_config(&cfg, Some(rt.handle().clone()))?;
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
