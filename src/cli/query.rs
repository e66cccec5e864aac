//! `nodetopo query`: the gRPC client of a running agent, printing with the same renderers as
//! `probe`.

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand};
use nodetopo::{
    api,
    labels::{DEFAULT_PREFIX, LabelConfig},
    model::NodeTopology,
    proto::v1 as pb,
    render::{self, Format},
};

/// Flags of `nodetopo query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The agent's gRPC address.
    #[arg(long, default_value_t = format!("127.0.0.1:{}", nodetopo::api::DEFAULT_PORT), global = true)]
    endpoint: String,
    /// Output format.
    #[arg(short, long, value_parser = super::choice::<Format>(), default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(flatten)]
    tls: super::ClientTlsArgs,
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Print the current topology.
    Get,
    /// Print the topology now and after every change.
    Watch {
        /// Only revisions after this one.
        #[arg(long, default_value_t = 0)]
        since_revision: u64,
    },
    /// Print placement hints (environment variables) for GPUs given by index or UUID.
    Hints {
        /// GPU indices or UUIDs; none means every GPU.
        gpus: Vec<String>,
        /// Who reads the environment (`generic` or `vllm`, as in `query env --for`).
        #[arg(long = "for", value_name = "CONSUMER", value_parser = super::choice::<nodetopo::hints::Consumer>(), default_value_t = nodetopo::hints::Consumer::Generic)]
        consumer: nodetopo::hints::Consumer,
    },
    /// Write the placement hints of this pod's own GPUs to an env file (an init container).
    Env(super::query_env::EnvArgs),
}

fn print(topo: &pb::NodeTopology, format: Format) -> anyhow::Result<()> {
    let model = NodeTopology::from(topo);
    let text = match format {
        Format::Labels => render::labels(&model, &LabelConfig::new(DEFAULT_PREFIX)?),
        f => render::render(&model, f),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

async fn query(args: QueryArgs, tls: Option<api::tls::ClientTls>) -> anyhow::Result<()> {
    let mut client = api::connect_with(&args.endpoint, tls.as_ref())
        .await
        .with_context(|| format!("connecting to {}", args.endpoint))?;
    match args.what {
        What::Get => {
            let r = client
                .get_node_topology(pb::GetNodeTopologyRequest {})
                .await?
                .into_inner();
            print(&r.topology.unwrap_or_default(), args.output)
        }
        What::Watch { since_revision } => {
            let mut s = client
                .watch_node_topology(pb::WatchNodeTopologyRequest { since_revision })
                .await?
                .into_inner();
            while let Some(msg) = s.message().await? {
                print(&msg.topology.unwrap_or_default(), args.output)?;
            }
            Ok(())
        }
        What::Hints { gpus, consumer } => {
            let r = client
                .get_placement_hints(pb::GetPlacementHintsRequest {
                    gpus,
                    consumer: nodetopo::api::convert::consumer_to_proto(consumer).into(),
                })
                .await?
                .into_inner();
            let mut out = std::io::stdout().lock();
            match args.output {
                Format::Json | Format::Yaml => {
                    let v = serde_json::json!({
                        "revision": r.revision,
                        "env": r.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect::<Vec<_>>(),
                        "pairs": r.pairs.iter().map(|p| serde_json::json!({
                            "gpu": p.gpu, "gpu_uuid": p.gpu_uuid, "nic": p.nic, "port": p.port,
                        })).collect::<Vec<_>>(),
                        "notes": r.notes,
                    });
                    let text = if args.output == Format::Json {
                        serde_json::to_string_pretty(&v)? + "\n"
                    } else {
                        serde_yaml_ng::to_string(&v)?
                    };
                    out.write_all(text.as_bytes())?;
                }
                _ => {
                    // The same `# note` and `export NAME="value"` lines as `probe -o env`.
                    let hints = nodetopo::hints::EnvHints {
                        vars: r.env.into_iter().map(|e| (e.name, e.value)).collect(),
                        notes: r.notes,
                    };
                    out.write_all(hints.to_shell().as_bytes())?;
                }
            }
            Ok(())
        }
        What::Env(_) => unreachable!("handled in run"),
    }
}

pub fn run(args: QueryArgs) -> anyhow::Result<()> {
    let tls = args.tls.load()?;
    if let What::Env(env) = args.what {
        return super::query_env::run(&args.endpoint, tls, env);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(query(args, tls))
}
