//! `nodetopo manifests`: prints objects that other components need, built from nodetopo's own
//! label list.

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use nodetopo::manifests::topology::{self, LevelOptions, ObjectOptions, Scheduler};

/// Flags of `nodetopo manifests`.
#[derive(Debug, Args)]
pub struct ManifestsArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// The topology object of a scheduler (Kueue, KAI, Grove or Volcano) for nodetopo's levels.
    Topology(TopologyArgs),
}

/// Output formats of `nodetopo manifests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
struct TopologyArgs {
    /// The scheduler whose object to write.
    #[arg(long = "for", value_parser = super::choice::<Scheduler>())]
    scheduler: Scheduler,
    /// The agent's label prefix.
    #[arg(long, default_value = nodetopo::labels::DEFAULT_PREFIX)]
    label_prefix: String,
    /// A block or leaf node label between the NVLink clique and the host level.
    #[arg(long, value_name = "LABEL")]
    block_label: Option<String>,
    /// The agent's fabric placement labels to add as levels: `infiniband` (`ib.block` and
    /// `ib.su` above the NVLink levels) or `roce` (`roce.leaf` above the host).
    #[arg(long, value_parser = super::choice::<topology::FabricLevels>(), default_value_t = topology::FabricLevels::None)]
    fabric: topology::FabricLevels,
    /// Name of the object: `nodetopo`, for Grove `nodetopo-grove` (Grove's KAI backend creates a
    /// KAI Topology of the binding's name, which must not be the one `--for kai` writes). For
    /// Volcano, the prefix of its topology types (`<name>-nvlink`, `<name>-ib`, ...; Volcano skips
    /// a type name over 20 characters, so this is refused).
    #[arg(long)]
    name: Option<String>,
    /// Grove only: bind Grove's KAI backend to this KAI Topology (the one `--for kai --name NAME`
    /// writes) through `spec.schedulerTopologyBindings`; Grove then checks it for drift instead of
    /// creating its own. Needs Grove's KAI backend enabled (Grove's webhook refuses it otherwise).
    #[arg(long, value_name = "NAME")]
    kai_topology: Option<String>,
    /// Volcano only: `per-family` writes a topology type per family of levels, so that every
    /// node is in the HyperNodes of the labels it carries (tiers counted per type); `single` one
    /// type of every level (one tree, a tier per level, but a node lacking any level, such as an
    /// HGX node without `nvlink.domain`, is in no HyperNode).
    #[arg(long, value_parser = super::choice::<topology::VolcanoTypes>(), default_value_t = topology::VolcanoTypes::PerFamily)]
    volcano_types: topology::VolcanoTypes,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Yaml)]
    output: Output,
}

pub fn run(args: ManifestsArgs) -> anyhow::Result<()> {
    match args.what {
        What::Topology(t) => topology(t),
    }
}

fn topology(args: TopologyArgs) -> anyhow::Result<()> {
    let levels = topology::levels(&LevelOptions {
        label_prefix: args.label_prefix,
        block_label: args.block_label,
        fabric: args.fabric,
    })
    .context("--label-prefix or --block-label")?;
    let name = args
        .name
        .as_deref()
        .unwrap_or(args.scheduler.default_name());
    let object = topology::topology_object_with(
        args.scheduler,
        name,
        &levels,
        &ObjectOptions {
            kai_topology: args.kai_topology,
            volcano_types: args.volcano_types,
        },
    )?;
    let text = match args.output {
        Output::Yaml => serde_yaml_ng::to_string(&object)?,
        Output::Json => serde_json::to_string_pretty(&object)? + "\n",
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}
