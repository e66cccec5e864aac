//! Renderers of a [`crate::model::NodeTopology`]: table, JSON, YAML, Graphviz and
//! RDMA env hints.

pub mod dot;
pub mod table;

use crate::{labels::LabelConfig, model::NodeTopology};

/// Output formats of `probe` and `query`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::EnumMessage,
)]
#[strum(serialize_all = "kebab-case")]
pub enum Format {
    /// A readable summary and the `topo -m` matrix.
    Table,
    /// The model as JSON.
    Json,
    /// The model as YAML.
    Yaml,
    /// A Graphviz picture.
    Dot,
    /// The node labels the agent would apply, one `key=value` per line.
    Labels,
    /// RDMA environment hints (DeepEP, UCX, NCCL, NVSHMEM) as `export` lines.
    Env,
}

/// Renders `topo` in `format`.
pub fn render(topo: &NodeTopology, format: Format) -> String {
    match format {
        Format::Table => table::render(topo),
        Format::Json => serde_json::to_string_pretty(topo).expect("model always serializes") + "\n",
        Format::Yaml => serde_yaml_ng::to_string(topo).expect("model always serializes"),
        Format::Dot => dot::render(topo),
        Format::Labels => labels(topo, &LabelConfig::default()),
        Format::Env => match crate::hints::env_hints(topo, None) {
            Ok(h) => h.to_shell(),
            Err(e) => format!("# no hints: {e}\n"),
        },
    }
}

/// The node labels for `topo` under `config`, one `key=value` per line.
pub fn labels(topo: &NodeTopology, config: &LabelConfig) -> String {
    crate::labels::render(&crate::labels::desired_labels(topo, config))
}
