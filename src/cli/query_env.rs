//! `nodetopo query env`: run as an init container, finds the pod's own GPUs, asks the node's
//! agent for their placement hints and writes an env file that the main container sources.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, anyhow};
use clap::Args;
use nodetopo::{
    api,
    backoff::{Backoff, retry},
    hints::{
        EnvHints,
        pod::{NodeGpu, pairs_in_order, visible_gpus},
    },
    proto::v1 as pb,
};
use tokio::time::Instant;

/// Flags of `nodetopo query env`.
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// The file to write (`-`: standard output). The main container runs `. FILE`.
    #[arg(long, default_value = "/nodetopo/env")]
    file: PathBuf,
    /// The node's address (`status.hostIP` through the Downward API); the agent is dialled at
    /// HOST_IP:--agent-port instead of --endpoint.
    #[arg(long, env = "HOST_IP")]
    host_ip: Option<String>,
    /// The agent's gRPC port on the node.
    #[arg(long, default_value_t = nodetopo::api::DEFAULT_PORT)]
    agent_port: u16,
    /// GPUs by NVML index or UUID, in CUDA ordinal order, instead of NVIDIA_VISIBLE_DEVICES and
    /// CUDA_VISIBLE_DEVICES.
    #[arg(long, value_delimiter = ',')]
    gpus: Vec<String>,
    /// Who reads the file: `vllm` leaves out what a vLLM worker sets for itself
    /// (UCX_NET_DEVICES, NVSHMEM_HCA_LIST, NCCL_IB_HCA) whenever the vLLM variables are given.
    #[arg(long = "for", value_name = "CONSUMER", value_parser = super::choice::<nodetopo::hints::Consumer>(), default_value_t = nodetopo::hints::Consumer::Generic)]
    consumer: nodetopo::hints::Consumer,
    /// When the agent cannot be reached, write a file without hints and exit 0.
    #[arg(long)]
    optional: bool,
    /// How long to keep trying to reach the agent.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Why no file with hints was made.
enum Failure {
    /// The agent did not answer.
    Unreachable(anyhow::Error),
    /// Anything else (no GPU visible, an unknown GPU, a file that cannot be written).
    Other(anyhow::Error),
}

fn unreachable_status(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    )
}

/// The agent's topology, retried until `deadline`; past it, the last attempt's error.
async fn topology(
    endpoint: &str,
    tls: Option<&api::tls::ClientTls>,
    deadline: Instant,
) -> Result<(api::Client, pb::NodeTopology), anyhow::Error> {
    let mut last: Option<anyhow::Error> = None;
    let once = async || {
        let mut c = api::connect_with(endpoint, tls).await?;
        let t = c
            .get_node_topology(pb::GetNodeTopologyRequest {})
            .await
            .map_err(anyhow::Error::from)?
            .into_inner()
            .topology
            .filter(|t| t.revision != 0)
            .ok_or_else(|| anyhow!("the agent has no topology yet (first probe not done)"))?;
        anyhow::Ok((c, t))
    };
    let every = Backoff::fixed(RETRY_EVERY, RETRY_EVERY);
    retry(
        every,
        async || {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, once()).await {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => {
                    last = Some(e);
                    Err(Missed::Failed)
                }
                Err(_) => Err(Missed::TimedOut),
            }
        },
        |_, _, delay| (Instant::now() + delay < deadline).then_some(delay),
    )
    .await
    .map_err(|missed| {
        let e = last.take().unwrap_or_else(|| anyhow!("no attempt made"));
        match missed {
            Missed::TimedOut => e.context("timed out"),
            Missed::Failed => e,
        }
    })
}

/// How an attempt to reach the agent missed: the last error is kept aside.
enum Missed {
    Failed,
    TimedOut,
}

/// The longest wait between attempts to reach the agent (jittered in its upper half).
const RETRY_EVERY: Duration = Duration::from_millis(500);

async fn make(
    endpoint: &str,
    tls: Option<&api::tls::ClientTls>,
    args: &EnvArgs,
) -> Result<String, Failure> {
    let deadline = Instant::now() + args.timeout;
    let (mut client, topo) = topology(endpoint, tls, deadline)
        .await
        .map_err(Failure::Unreachable)?;
    let node: Vec<NodeGpu> = topo
        .gpus
        .iter()
        .map(|g| NodeGpu {
            index: g.index,
            uuid: g.uuid.clone(),
        })
        .collect();
    let selection = if args.gpus.is_empty() {
        let nvidia = std::env::var("NVIDIA_VISIBLE_DEVICES")
            .ok()
            .map(|v| device_list(&v))
            .transpose()
            .map_err(Failure::Other)?;
        let cuda = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        visible_gpus(nvidia.as_deref(), cuda.as_deref(), &node)
            .context("finding the pod's GPUs")
            .map_err(Failure::Other)?
    } else {
        // Explicit selectors are in CUDA order already; the agent checks that they exist.
        let list = args.gpus.join(",");
        visible_gpus(None, Some(&list), &node)
            .context("--gpus")
            .map_err(Failure::Other)?
    };
    let request = pb::GetPlacementHintsRequest {
        gpus: selection.iter().map(u32::to_string).collect(),
        consumer: nodetopo::api::convert::consumer_to_proto(args.consumer).into(),
    };
    let r = match client.get_placement_hints(request).await {
        Ok(r) => r.into_inner(),
        Err(s) if unreachable_status(&s) => {
            return Err(Failure::Unreachable(
                anyhow::Error::from(s).context("GetPlacementHints"),
            ));
        }
        Err(s) => {
            return Err(Failure::Other(
                anyhow::Error::from(s).context("GetPlacementHints"),
            ));
        }
    };
    let pair_gpus: Vec<u32> = r.pairs.iter().map(|p| p.gpu).collect();
    let hints = if pairs_in_order(&selection, &pair_gpus) {
        EnvHints {
            vars: r.env.into_iter().map(|e| (e.name, e.value)).collect(),
            notes: r.notes,
        }
    } else {
        // An agent that answers in GPU index order: the CUDA ordinals of its mapping would be
        // wrong, so the hints are made here, by the same policy, from the agent's topology.
        tracing::warn!(
            endpoint,
            "the agent reordered the GPU selection; hints made from its topology instead"
        );
        let sel: Vec<nodetopo::hints::GpuSelector> = selection
            .iter()
            .map(|&i| nodetopo::hints::GpuSelector::Index(i))
            .collect();
        nodetopo::hints::env_hints(&nodetopo::model::NodeTopology::from(&topo), Some(&sel))
            .context("placement hints")
            .map_err(Failure::Other)?
    };
    // An agent that predates `consumer` answers for any launcher: the same filter here.
    let hints = hints.for_consumer(args.consumer);
    let gpus: Vec<String> = selection.iter().map(u32::to_string).collect();
    Ok(format!(
        "# nodetopo query env: node GPUs {} are CUDA devices 0-{} (agent {endpoint}, revision {})\n{}",
        gpus.join(","),
        gpus.len() - 1,
        r.revision,
        hints.to_shell()
    ))
}

/// The device plugin's `volume-mounts` strategy sets NVIDIA_VISIBLE_DEVICES to a folder whose
/// entries are the device IDs; any other value is the list itself.
fn device_list(value: &str) -> anyhow::Result<String> {
    if !value.starts_with('/') {
        return Ok(value.to_string());
    }
    let mut ids: Vec<String> = std::fs::read_dir(value)
        .with_context(|| format!("NVIDIA_VISIBLE_DEVICES={value}: reading the device folder"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    ids.sort();
    Ok(ids.join(","))
}

/// Writes `text` to `path` atomically (a temporary file renamed into place), or to stdout.
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        return Ok(out.flush()?);
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

pub fn run(endpoint: &str, tls: Option<api::tls::ClientTls>, args: EnvArgs) -> anyhow::Result<()> {
    let endpoint = match args.host_ip.as_deref().map(str::trim) {
        Some(ip) if !ip.is_empty() && ip.contains(':') => format!("[{ip}]:{}", args.agent_port),
        Some(ip) if !ip.is_empty() => format!("{ip}:{}", args.agent_port),
        _ => endpoint.to_string(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match rt.block_on(make(&endpoint, tls.as_ref(), &args)) {
        Ok(text) => write(&args.file, &text),
        Err(Failure::Unreachable(e)) if args.optional => {
            let msg = format!("{e:#}").replace('\n', " ");
            tracing::warn!(%endpoint, error = %msg, "agent unreachable; writing no hints (--optional)");
            eprintln!("nodetopo: the agent at {endpoint} is unreachable ({msg}); no hints written");
            write(
                &args.file,
                &format!("# nodetopo query env: no hints: the agent at {endpoint} is unreachable: {msg}\n"),
            )
        }
        Err(Failure::Unreachable(e)) => Err(e.context(format!(
            "the nodetopo agent at {endpoint} is unreachable (--optional writes a file without hints instead)"
        ))),
        Err(Failure::Other(e)) => Err(e),
    }
}
