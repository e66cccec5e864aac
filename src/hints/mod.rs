//! Environment hints for RDMA libraries, derived from the rail pairing: which NIC (and port)
//! each GPU of a workload should use.
//!
//! [`env_hints`] is a pure function from a [`NodeTopology`] and an optional GPU selection to an
//! ordered list of variables ([`EnvHints`]), rendered as `export` lines by
//! [`EnvHints::to_shell`]. Variables produced:
//! - `DEEP_EP_DEVICE_TO_HCA_MAPPING`: `<cuda ordinal>:<nic>:<port>` per selected GPU; the ordinal
//!   is the GPU's position in the selection, which is its CUDA ordinal when the process sees
//!   exactly the selected GPUs in that order (as a pod allocated those GPUs does);
//! - `UCX_NET_DEVICES`, `NVSHMEM_HCA_LIST`: `<nic>:<port>` of the selected GPUs' rails;
//! - `NCCL_IB_HCA`: the same list with `=` (exact names, not prefixes);
//! - `NVSHMEM_HCA_PREFIX`: only when the rail NICs are not named `mlx5_*` and share a prefix;
//! - for RoCE rails, `NCCL_IB_GID_INDEX` and `NVSHMEM_IB_GID_INDEX`: the RoCE v2 GID index
//!   with an IPv4-mapped address, when every rail port uses the same one;
//! - `VLLM_GPU_NIC_PCIE_MAPPING` and `VLLM_NIC_SELECTION_VARS`, which vLLM reads to give each
//!   worker its own rail (see `vllm_vars`).
//! - `NODETOPO_RAILS`: the rails (leaf switches, or their names from the mapping file) that the
//!   selected GPUs' NIC ports reach, sorted and distinct, when every one is known (see
//!   `rail_ids`); a launcher or router compares two pods' values to pair prefill and decode
//!   on the same rails.

pub mod pod;

use std::fmt::Write;

use thiserror::Error;

use crate::model::{
    Connection, GidType, LinkLayer, NicPort, NicRole, NodeTopology, PciAddress, PortState, RailPair,
};

/// A GPU named by NVML index or by UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelector {
    /// NVML device index (the number `nvidia-smi` shows).
    Index(u32),
    /// GPU UUID (`GPU-…`).
    Uuid(String),
}

impl GpuSelector {
    /// Parses one selector: a decimal index, else a UUID.
    pub fn parse(s: &str) -> Result<Self, HintError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(HintError::BadSelector(s.to_string()));
        }
        if s.chars().all(|c| c.is_ascii_digit()) {
            return s
                .parse()
                .map(Self::Index)
                .map_err(|_| HintError::BadSelector(s.to_string()));
        }
        Ok(Self::Uuid(s.to_string()))
    }

    /// Parses a comma-separated list (`0,1` or `GPU-…,GPU-…`).
    pub fn parse_list(s: &str) -> Result<Vec<Self>, HintError> {
        s.split(',').map(Self::parse).collect()
    }
}

impl std::fmt::Display for GpuSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Index(i) => write!(f, "{i}"),
            Self::Uuid(u) => f.write_str(u),
        }
    }
}

/// Why hints could not be made.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HintError {
    /// The selection names a GPU this node does not have.
    #[error("unknown GPU {selector:?}: this node has GPU indices {indices} and their UUIDs")]
    UnknownGpu {
        /// The selector as given.
        selector: String,
        /// The node's indices, e.g. `0,1,2,3`, or `none`.
        indices: String,
    },
    /// A selector is empty or malformed.
    #[error("bad GPU selector {0:?}")]
    BadSelector(String),
    /// The same GPU is selected twice.
    #[error("GPU {0} is selected more than once")]
    Duplicate(u32),
}

/// Resolves a selection to GPU indices, **in selection order**: position `i` of the result is
/// CUDA ordinal `i` of a process that sees exactly these GPUs (`CUDA_VISIBLE_DEVICES=1,0` makes
/// GPU 1 ordinal 0). `None` or an empty selection is every GPU in index order. A GPU selected
/// twice, by index or UUID, is an error: it cannot be two ordinals.
pub fn select_gpus(
    topo: &NodeTopology,
    selection: Option<&[GpuSelector]>,
) -> Result<Vec<u32>, HintError> {
    let Some(sel) = selection.filter(|s| !s.is_empty()) else {
        let mut v: Vec<u32> = topo.gpus.iter().map(|g| g.index).collect();
        v.sort_unstable();
        return Ok(v);
    };
    let mut v = Vec::with_capacity(sel.len());
    for s in sel {
        let g = topo
            .gpus
            .iter()
            .find(|g| match s {
                GpuSelector::Index(i) => g.index == *i,
                GpuSelector::Uuid(u) => g.uuid.eq_ignore_ascii_case(u),
            })
            .ok_or_else(|| unknown_gpu(topo, s))?;
        if v.contains(&g.index) {
            return Err(HintError::Duplicate(g.index));
        }
        v.push(g.index);
    }
    Ok(v)
}

fn unknown_gpu(topo: &NodeTopology, s: &GpuSelector) -> HintError {
    let indices: Vec<String> = topo.gpus.iter().map(|g| g.index.to_string()).collect();
    HintError::UnknownGpu {
        selector: s.to_string(),
        indices: if indices.is_empty() {
            "none".into()
        } else {
            indices.join(",")
        },
    }
}

/// A selected GPU and its paired NIC port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuNic {
    /// NVML index of the GPU.
    pub gpu: u32,
    /// The GPU's UUID (`GPU-…`).
    pub gpu_uuid: String,
    /// RDMA device name of its rail NIC (`mlx5_0`).
    pub nic: String,
    /// The rail's port on that NIC (from 1).
    pub port: u32,
    /// The PCIe path between the GPU and the NIC (`PIX`, `PXB`, ...).
    pub connection: Connection,
}

/// Placement hints for one GPU selection, as `GetPlacementHints` serves them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlacementHints {
    /// The environment of [`env_hints`] for the same selection.
    pub env: EnvHints,
    /// Selected GPUs with a paired NIC, in selection (CUDA ordinal) order.
    pub pairs: Vec<GpuNic>,
}

/// Hints for the selected GPUs: their rail pairs and the environment that `nodetopo probe -o env
/// --gpus` prints for the same selection. The selection means what [`select_gpus`] says.
pub fn placement_hints(
    topo: &NodeTopology,
    selection: &[GpuSelector],
) -> Result<PlacementHints, HintError> {
    let selected = select_gpus(topo, Some(selection))?;
    let pairs = selected
        .iter()
        .filter_map(|&gpu| {
            let pair = rail_of(topo, gpu)?;
            let uuid = topo.gpus.iter().find(|g| g.index == gpu)?.uuid.clone();
            Some(GpuNic {
                gpu,
                gpu_uuid: uuid,
                nic: pair.nic.clone(),
                port: pair.port,
                connection: pair.connection,
            })
        })
        .collect();
    let env = env_for(topo, &selected);
    Ok(PlacementHints { env, pairs })
}

/// Ordered environment variables plus remarks for the reader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvHints {
    /// `(name, value)` in output order.
    pub vars: Vec<(String, String)>,
    /// Remarks (rendered as shell comments), e.g. a GPU without a rail or a port that is down.
    pub notes: Vec<String>,
}

impl EnvHints {
    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `# note` lines, then `export NAME="value"` lines, for `source` or `eval`.
    pub fn to_shell(&self) -> String {
        let mut out = String::new();
        for n in &self.notes {
            let _ = writeln!(out, "# {}", n.replace('\n', " "));
        }
        for (k, v) in &self.vars {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
                .replace('`', "\\`");
            let _ = writeln!(out, "export {k}=\"{v}\"");
        }
        out
    }
}

/// The RoCE v2 IPv4 GID index of a port, if it has one.
fn roce_v2_ipv4_gid(port: &NicPort) -> Option<u32> {
    port.gids
        .iter()
        .filter(|g| g.gid_type == GidType::RoceV2)
        .find(|g| g.gid.starts_with("0000:0000:0000:0000:0000:ffff:"))
        .map(|g| g.index)
}

/// The name prefix shared by all `names` up to the trailing digits (`ibp` for `ibp0`, `ibp1`).
fn common_prefix(names: &[&str]) -> Option<String> {
    let strip = |n: &str| n.trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
    let first = strip(names.first()?);
    (!first.is_empty() && names.iter().all(|n| strip(n) == first)).then_some(first)
}

/// Env hints for the selected GPUs (all GPUs, in index order, when `selection` is `None`), in
/// the order of [`select_gpus`].
pub fn env_hints(
    topo: &NodeTopology,
    selection: Option<&[GpuSelector]>,
) -> Result<EnvHints, HintError> {
    Ok(env_for(topo, &select_gpus(topo, selection)?))
}

/// A GPU's rail: from `gpu_rails` (which includes rails shared with another GPU), else from the
/// one-to-one pairs (a topology from an agent that predates `gpu_rails`).
fn rail_of(topo: &NodeTopology, gpu: u32) -> Option<&RailPair> {
    let rails = &topo.rail_pairing;
    let list = if rails.gpu_rails.is_empty() {
        &rails.pairs
    } else {
        &rails.gpu_rails
    };
    list.iter().find(|p| p.gpu == gpu)
}

/// The rails of `gpus` (distinct `(nic, port)` in first-use order) and the DeepEP mapping.
fn rails_of(
    topo: &NodeTopology,
    gpus: &[u32],
    hints: &mut EnvHints,
) -> (Vec<(String, u32)>, Vec<String>) {
    let mut mapping = Vec::new();
    let mut rails: Vec<(String, u32)> = Vec::new();
    for (ordinal, gpu) in gpus.iter().enumerate() {
        let Some(pair) = rail_of(topo, *gpu) else {
            hints.notes.push(format!("GPU {gpu} has no RDMA rail"));
            continue;
        };
        mapping.push(format!("{ordinal}:{}:{}", pair.nic, pair.port));
        let rail = (pair.nic.clone(), pair.port);
        if !rails.contains(&rail) {
            rails.push(rail);
        }
    }
    (rails, mapping)
}

/// Notes on the rail ports (down, missing, mixed link layers); the RoCE v2 GID index of each
/// Ethernet rail.
fn check_rail_ports(
    topo: &NodeTopology,
    rails: &[(String, u32)],
    hints: &mut EnvHints,
) -> Vec<Option<u32>> {
    let mut link_layers = Vec::new();
    let mut gid_indices = Vec::new();
    for (nic, port) in rails {
        let found = topo
            .nics
            .iter()
            .find(|n| &n.name == nic)
            .and_then(|n| n.ports.iter().find(|p| p.port == *port));
        let Some(p) = found else {
            hints
                .notes
                .push(format!("{nic} port {port} is not in the NIC list"));
            continue;
        };
        if p.state != PortState::Active {
            hints
                .notes
                .push(format!("{nic} port {port} is not active ({:?})", p.state));
        }
        if !link_layers.contains(&p.link_layer) {
            link_layers.push(p.link_layer);
        }
        if p.link_layer == LinkLayer::Ethernet {
            gid_indices.push(roce_v2_ipv4_gid(p));
        }
    }
    if link_layers.len() > 1 {
        hints.notes.push(
            "rails mix InfiniBand and Ethernet (RoCE); the two cannot talk to each other".into(),
        );
    }
    gid_indices
}

/// Notes on NIC roles: rails shared by several selected GPUs, and the NICs left out of the
/// lists because they are storage, front-end or virtual.
fn role_notes(topo: &NodeTopology, rails: &[(String, u32)], hints: &mut EnvHints) {
    for (nic, _) in rails {
        let sharing: Vec<String> = topo
            .rail_pairing
            .gpu_rails
            .iter()
            .filter(|r| &r.nic == nic)
            .map(|r| r.gpu.to_string())
            .collect();
        if sharing.len() > 1 {
            hints.notes.push(format!(
                "GPUs {} share rail {nic}: each gets a part of its bandwidth",
                sharing.join(",")
            ));
        }
    }
    for role in [NicRole::Storage, NicRole::Virtual] {
        let names: Vec<&str> = topo
            .nics
            .iter()
            .filter(|n| n.role == role)
            .map(|n| n.name.as_str())
            .collect();
        if !names.is_empty() {
            hints
                .notes
                .push(format!("{role} NICs, not rails: {}", names.join(",")));
        }
    }
}

/// The RoCE GID index variables, when every Ethernet rail has the same RoCE v2 IPv4 index.
fn push_gid_index(gid_indices: &[Option<u32>], hints: &mut EnvHints) {
    let Some(first) = gid_indices.first() else {
        return;
    };
    match first {
        Some(i) if gid_indices.iter().all(|g| g == first) => {
            hints.vars.push(("NCCL_IB_GID_INDEX".into(), i.to_string()));
            hints
                .vars
                .push(("NVSHMEM_IB_GID_INDEX".into(), i.to_string()));
        }
        _ => hints.notes.push(
            "RoCE rails have no common RoCE v2 IPv4 GID index; set NCCL_IB_GID_INDEX by hand"
                .into(),
        ),
    }
}

/// Env hints for resolved GPU indices, in that order.
fn env_for(topo: &NodeTopology, gpus: &[u32]) -> EnvHints {
    let mut hints = EnvHints::default();
    let (rails, mapping) = rails_of(topo, gpus, &mut hints);
    if rails.is_empty() {
        hints.notes.push("no RDMA rails: no hints".into());
        return hints;
    }
    let gid_indices = check_rail_ports(topo, &rails, &mut hints);
    role_notes(topo, &rails, &mut hints);
    let list = rails
        .iter()
        .map(|(n, p)| format!("{n}:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    hints
        .vars
        .push(("DEEP_EP_DEVICE_TO_HCA_MAPPING".into(), mapping.join(",")));
    hints.vars.push(("UCX_NET_DEVICES".into(), list.clone()));
    hints.vars.push(("NCCL_IB_HCA".into(), format!("={list}")));
    hints.vars.push(("NVSHMEM_HCA_LIST".into(), list));
    let names: Vec<&str> = rails.iter().map(|(n, _)| n.as_str()).collect();
    if !names.iter().all(|n| n.starts_with("mlx5_")) {
        if let Some(prefix) = common_prefix(&names) {
            hints.vars.push(("NVSHMEM_HCA_PREFIX".into(), prefix));
        }
    }
    push_gid_index(&gid_indices, &mut hints);
    vllm_vars(topo, gpus, &rails, &mut hints);
    rail_ids(topo, &rails, &mut hints);
    hints
}

/// `NODETOPO_RAILS`: the rail of each NIC port in `rails` ([`crate::model::PortRail`], from the
/// leaf it reaches), sorted and distinct, only when every port's rail is known: a partial list
/// would tell a router that two pods share no rail when they may. Nothing, and no note, when no
/// rail is known at all (no SMP or LLDP source).
fn rail_ids(topo: &NodeTopology, rails: &[(String, u32)], hints: &mut EnvHints) {
    let known: Vec<Option<&str>> = rails
        .iter()
        .map(|(nic, port)| topo.network.rail(nic, *port))
        .collect();
    if known.iter().all(Option::is_none) {
        return;
    }
    let Some(mut ids) = known.into_iter().collect::<Option<Vec<&str>>>() else {
        let unknown: Vec<String> = rails
            .iter()
            .filter(|(nic, port)| topo.network.rail(nic, *port).is_none())
            .map(|(nic, port)| format!("{nic}:{port}"))
            .collect();
        hints.notes.push(format!(
            "the rail of {} is unknown: no NODETOPO_RAILS",
            unknown.join(",")
        ));
        return;
    };
    ids.sort_unstable();
    ids.dedup();
    hints.vars.push((RAILS_VAR.into(), ids.join(",")));
}

/// The variable that names the selected GPUs' rails.
pub const RAILS_VAR: &str = "NODETOPO_RAILS";

/// The variables vLLM's per-worker NIC selection reads, in vLLM's format (its reader is
/// `vllm/v1/executor/vllm_net_devices.py` in vllm-project/vllm, added by vllm-project/vllm#42083):
/// - `VLLM_GPU_NIC_PCIE_MAPPING`: comma-separated `<GPU BDF>=<NIC BDF>` pairs. vLLM looks up the
///   worker's GPU by its PCI bus id, and the NIC BDF must be the PCI function that
///   `/sys/class/infiniband/<dev>/device` resolves to (the RDMA device's own function, which
///   is the NIC's `pci_address` here). Both sides are written `dddd:bb:dd.f`.
/// - `VLLM_NIC_SELECTION_VARS`: comma-separated `VAR[:suffix]`; vLLM sets each `VAR` to the
///   worker's RDMA device name followed verbatim by `:suffix`. Written as
///   `UCX_NET_DEVICES:<port>,NVSHMEM_HCA_LIST:<port>,NCCL_IB_HCA:<port>`, so only when every
///   selected rail uses the same port.
///
/// vLLM puts the worker's device in front of a value the variable already has, so a note says
/// to leave the node-wide lists above out of a vLLM worker's environment. Nothing is emitted
/// when there is no rail (the caller returns before this) or a GPU has no PCI address.
fn vllm_vars(topo: &NodeTopology, gpus: &[u32], rails: &[(String, u32)], hints: &mut EnvHints) {
    let mut pairs = Vec::new();
    for &gpu in gpus {
        let Some(rail) = rail_of(topo, gpu) else {
            continue;
        };
        let gpu_bdf = topo
            .gpus
            .iter()
            .find(|g| g.index == gpu)
            .and_then(|g| PciAddress::parse(&g.pci_bus_id));
        let nic_bdf = topo
            .nics
            .iter()
            .find(|n| n.name == rail.nic)
            .and_then(|n| PciAddress::parse(&n.pci_address));
        match (gpu_bdf, nic_bdf) {
            (Some(g), Some(n)) => pairs.push(format!("{g}={n}")),
            _ => {
                hints.notes.push(format!(
                    "GPU {gpu} or its rail {} has no PCI address: no vLLM mapping",
                    rail.nic
                ));
                return;
            }
        }
    }
    let mut ports: Vec<u32> = rails.iter().map(|(_, p)| *p).collect();
    ports.sort_unstable();
    ports.dedup();
    let [port] = ports[..] else {
        hints
            .notes
            .push("rails use different ports: no VLLM_NIC_SELECTION_VARS".into());
        return;
    };
    if pairs.is_empty() {
        return;
    }
    hints
        .vars
        .push(("VLLM_GPU_NIC_PCIE_MAPPING".into(), pairs.join(",")));
    hints.vars.push((
        "VLLM_NIC_SELECTION_VARS".into(),
        VLLM_SELECTED
            .iter()
            .map(|v| format!("{v}:{port}"))
            .collect::<Vec<_>>()
            .join(","),
    ));
    hints.notes.push(format!(
        "{VLLM_GENERIC_NOTE}, leave out {} (vLLM sets them per worker, in front of any value \
         already set; or use --for vllm)",
        VLLM_SELECTED.join(", ")
    ));
}

/// The variables vLLM is asked to set per worker.
const VLLM_SELECTED: [&str; 3] = ["UCX_NET_DEVICES", "NVSHMEM_HCA_LIST", "NCCL_IB_HCA"];

/// Who reads the environment (`--for`, `GetPlacementHintsRequest.consumer`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::EnumMessage,
)]
#[strum(serialize_all = "kebab-case")]
#[non_exhaustive]
pub enum Consumer {
    /// Any launcher (NCCL, NVSHMEM, UCX, DeepEP): every variable, and a note for vLLM workers.
    #[default]
    Generic,
    /// A vLLM worker. vLLM puts each worker's own NIC in front of `UCX_NET_DEVICES`,
    /// `NVSHMEM_HCA_LIST` and `NCCL_IB_HCA` when `VLLM_NIC_SELECTION_VARS` names them; a
    /// node-wide value already there would follow it and widen the worker's list to every rail.
    /// So those three are left out whenever the vLLM variables are given; without them (a rail
    /// with no PCI address, rails on different ports) vLLM touches nothing and they stay.
    Vllm,
}

impl EnvHints {
    /// These hints as `consumer` should get them. The same hints again for [`Consumer::Generic`];
    /// applying it twice changes nothing more.
    pub fn for_consumer(mut self, consumer: Consumer) -> Self {
        match consumer {
            Consumer::Generic => self,
            Consumer::Vllm => {
                if self.get("VLLM_NIC_SELECTION_VARS").is_none() {
                    if !self.notes.iter().any(|n| n.starts_with(VLLM_KEPT)) {
                        self.notes.push(format!(
                            "{VLLM_KEPT}: no VLLM_NIC_SELECTION_VARS (see above), so vLLM leaves \
                             them as they are"
                        ));
                    }
                    return self;
                }
                self.vars
                    .retain(|(k, _)| !VLLM_SELECTED.contains(&k.as_str()));
                self.notes.retain(|n| !n.starts_with(VLLM_GENERIC_NOTE));
                if !self.notes.iter().any(|n| n.starts_with(VLLM_LEFT_OUT)) {
                    self.notes.push(format!(
                        "{VLLM_LEFT_OUT}: {} (vLLM sets each worker's own, from \
                         VLLM_GPU_NIC_PCIE_MAPPING)",
                        VLLM_SELECTED.join(", ")
                    ));
                }
                self
            }
        }
    }
}

/// The start of the note `vllm_vars` writes for every consumer.
const VLLM_GENERIC_NOTE: &str = "vLLM workers: keep VLLM_*";
/// The start of the note for vLLM when the node-wide lists are left out.
const VLLM_LEFT_OUT: &str = "for vLLM, left out";
/// The start of the note for vLLM when the node-wide lists stay.
const VLLM_KEPT: &str = "for vLLM, node-wide rail lists kept";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Gid, Gpu, Nic, RailPairing};

    fn topo(link: LinkLayer) -> NodeTopology {
        let gpus = (0..4)
            .map(|i| Gpu {
                index: i,
                uuid: format!("GPU-{i}"),
                ..Gpu::default()
            })
            .collect();
        let nics = (0..3)
            .map(|i| Nic {
                name: format!("mlx5_{i}"),
                ports: vec![NicPort {
                    port: 1,
                    state: if i == 2 {
                        PortState::Down
                    } else {
                        PortState::Active
                    },
                    link_layer: link,
                    gids: vec![
                        Gid {
                            index: 0,
                            gid: "fe80:0000:0000:0000:0000:0000:0000:0001".into(),
                            gid_type: GidType::IbRoceV1,
                            netdev: String::new(),
                        },
                        Gid {
                            index: 3,
                            gid: "0000:0000:0000:0000:0000:ffff:0a00:0001".into(),
                            gid_type: GidType::RoceV2,
                            netdev: String::new(),
                        },
                    ],
                    ..NicPort::default()
                }],
                ..Nic::default()
            })
            .collect();
        // GPU 3 has no rail; GPU 2's rail is down.
        let pairs = (0..3)
            .map(|i| RailPair {
                gpu: i,
                nic: format!("mlx5_{}", 2 - i),
                port: 1,
                connection: Connection::Pix,
            })
            .collect();
        NodeTopology {
            gpus,
            nics,
            rail_pairing: RailPairing {
                rail_aligned: false,
                pairs,
                ..RailPairing::default()
            },
            ..NodeTopology::default()
        }
    }

    #[test]
    fn all_gpus() {
        let h = env_hints(&topo(LinkLayer::Infiniband), None).unwrap();
        assert_eq!(
            h.get("DEEP_EP_DEVICE_TO_HCA_MAPPING"),
            Some("0:mlx5_2:1,1:mlx5_1:1,2:mlx5_0:1")
        );
        assert_eq!(h.get("UCX_NET_DEVICES"), Some("mlx5_2:1,mlx5_1:1,mlx5_0:1"));
        assert_eq!(h.get("NCCL_IB_HCA"), Some("=mlx5_2:1,mlx5_1:1,mlx5_0:1"));
        assert_eq!(
            h.get("NVSHMEM_HCA_LIST"),
            Some("mlx5_2:1,mlx5_1:1,mlx5_0:1")
        );
        assert_eq!(h.get("NVSHMEM_HCA_PREFIX"), None);
        assert_eq!(h.get("NCCL_IB_GID_INDEX"), None);
        assert!(h.notes.iter().any(|n| n.contains("GPU 3")), "{:?}", h.notes);
        assert!(
            h.notes.iter().any(|n| n.contains("mlx5_2 port 1")),
            "{:?}",
            h.notes
        );
    }

    #[test]
    fn rails_of_the_selected_gpus() {
        use crate::model::{FabricPlacement, PortRail};
        let mut t = topo(LinkLayer::Infiniband);
        // GPU 0 uses mlx5_2, GPU 1 mlx5_1, GPU 2 mlx5_0.
        let rail = |nic: &str, rail: &str| PortRail {
            nic: nic.into(),
            port: 1,
            rail: rail.into(),
        };
        t.network.infiniband = FabricPlacement {
            rails: vec![
                rail("mlx5_0", "rail-0"),
                rail("mlx5_1", "rail-1"),
                rail("mlx5_2", "rail-2"),
            ],
            rail_optimised: Some(true),
            ..FabricPlacement::default()
        };
        let sel = |s: &str| GpuSelector::parse_list(s).unwrap();
        let h = env_hints(&t, Some(&sel("1,0"))).unwrap();
        assert_eq!(h.get(RAILS_VAR), Some("rail-1,rail-2"));
        let h = env_hints(&t, None).unwrap();
        assert_eq!(h.get(RAILS_VAR), Some("rail-0,rail-1,rail-2"));
        // A rail that is not known: no list, and a note says whose.
        t.network.infiniband.rails.remove(0);
        let h = env_hints(&t, Some(&sel("2,1"))).unwrap();
        assert_eq!(h.get(RAILS_VAR), None);
        assert!(
            h.notes.iter().any(|n| n.contains("mlx5_0:1")),
            "{:?}",
            h.notes
        );
        // Without any rail known, neither the variable nor a note.
        let h = env_hints(&topo(LinkLayer::Infiniband), None).unwrap();
        assert_eq!(h.get(RAILS_VAR), None);
        assert!(!h.notes.iter().any(|n| n.contains(RAILS_VAR)));
    }

    #[test]
    fn selection_uses_cuda_ordinals() {
        let sel = GpuSelector::parse_list("1,GPU-0").unwrap();
        let h = env_hints(&topo(LinkLayer::Infiniband), Some(&sel)).unwrap();
        assert_eq!(
            h.get("DEEP_EP_DEVICE_TO_HCA_MAPPING"),
            Some("0:mlx5_1:1,1:mlx5_2:1")
        );
        assert_eq!(h.get("NCCL_IB_HCA"), Some("=mlx5_1:1,mlx5_2:1"));
    }

    #[test]
    fn unknown_and_bad_selections() {
        let t = topo(LinkLayer::Infiniband);
        assert_eq!(
            env_hints(&t, Some(&[GpuSelector::Index(9)])),
            Err(HintError::UnknownGpu {
                selector: "9".into(),
                indices: "0,1,2,3".into()
            })
        );
        assert_eq!(
            env_hints(&t, Some(&[GpuSelector::Uuid("GPU-x".into())])),
            Err(HintError::UnknownGpu {
                selector: "GPU-x".into(),
                indices: "0,1,2,3".into()
            })
        );
        assert_eq!(
            env_hints(&t, Some(&GpuSelector::parse_list("1,1").unwrap())),
            Err(HintError::Duplicate(1))
        );
        assert!(GpuSelector::parse_list("0,,1").is_err());
        assert!(GpuSelector::parse("99999999999").is_err());
    }

    #[test]
    fn roce_gets_gid_index() {
        let h = env_hints(&topo(LinkLayer::Ethernet), None).unwrap();
        assert_eq!(h.get("NCCL_IB_GID_INDEX"), Some("3"));
        assert_eq!(h.get("NVSHMEM_IB_GID_INDEX"), Some("3"));
        let mut t = topo(LinkLayer::Ethernet);
        t.nics[1].ports[0].gids.pop();
        let h = env_hints(&t, None).unwrap();
        assert_eq!(h.get("NCCL_IB_GID_INDEX"), None);
        assert!(h.notes.iter().any(|n| n.contains("GID index")));
    }

    #[test]
    fn other_nic_names_get_a_prefix() {
        let mut t = topo(LinkLayer::Infiniband);
        for n in &mut t.nics {
            n.name = n.name.replace("mlx5_", "ibp");
        }
        for p in &mut t.rail_pairing.pairs {
            p.nic = p.nic.replace("mlx5_", "ibp");
        }
        let h = env_hints(&t, None).unwrap();
        assert_eq!(h.get("NVSHMEM_HCA_PREFIX"), Some("ibp"));
    }

    #[test]
    fn no_rails_no_vars() {
        let h = env_hints(&NodeTopology::default(), None).unwrap();
        assert!(h.vars.is_empty());
        assert!(h.to_shell().lines().all(|l| l.starts_with('#')));
    }

    #[test]
    fn shell_quoting() {
        let h = EnvHints {
            vars: vec![("A".into(), "x\"$y`z\\".into())],
            notes: vec!["two\nlines".into()],
        };
        assert_eq!(
            h.to_shell(),
            "# two lines\nexport A=\"x\\\"\\$y\\`z\\\\\"\n"
        );
    }

    fn sel(s: &[&str]) -> Vec<GpuSelector> {
        s.iter().map(|s| GpuSelector::parse(s).unwrap()).collect()
    }

    fn paired() -> NodeTopology {
        NodeTopology {
            gpus: (0..4)
                .map(|i| Gpu {
                    index: i,
                    uuid: format!("GPU-{i}"),
                    ..Gpu::default()
                })
                .collect(),
            rail_pairing: RailPairing {
                rail_aligned: true,
                pairs: (0..4)
                    .map(|i| RailPair {
                        gpu: i,
                        nic: format!("mlx5_{i}"),
                        port: 1,
                        connection: Connection::Pix,
                    })
                    .collect(),
                ..RailPairing::default()
            },
            ..NodeTopology::default()
        }
    }

    #[test]
    fn by_index_and_uuid() {
        let h = placement_hints(&paired(), &sel(&["2", "gpu-0"])).unwrap();
        // GPUs 2 and 0 are CUDA ordinals 0 and 1 of a pod that sees them in that order.
        assert_eq!(
            h.env.vars,
            vec![
                (
                    "DEEP_EP_DEVICE_TO_HCA_MAPPING".into(),
                    "0:mlx5_2:1,1:mlx5_0:1".into()
                ),
                ("UCX_NET_DEVICES".into(), "mlx5_2:1,mlx5_0:1".into()),
                ("NCCL_IB_HCA".into(), "=mlx5_2:1,mlx5_0:1".into()),
                ("NVSHMEM_HCA_LIST".into(), "mlx5_2:1,mlx5_0:1".into()),
            ]
        );
        assert_eq!(h.pairs.len(), 2);
        assert_eq!(h.pairs[0].gpu_uuid, "GPU-2");
    }

    #[test]
    fn order_is_cuda_ordinal_order_as_on_the_command_line() {
        let t = paired();
        let h = placement_hints(&t, &sel(&["1", "GPU-0"])).unwrap();
        let cli = env_hints(&t, Some(&GpuSelector::parse_list("1,0").unwrap())).unwrap();
        assert_eq!(h.env, cli);
        assert_eq!(
            h.env.get("DEEP_EP_DEVICE_TO_HCA_MAPPING"),
            Some("0:mlx5_1:1,1:mlx5_0:1")
        );
        let gpus: Vec<u32> = h.pairs.iter().map(|p| p.gpu).collect();
        assert_eq!(gpus, [1, 0]);
    }

    #[test]
    fn duplicates_are_refused() {
        for s in [["2", "2"], ["2", "GPU-2"]] {
            let e = placement_hints(&paired(), &sel(&s)).unwrap_err();
            assert!(e.to_string().contains("more than once"), "{e}");
        }
    }

    #[test]
    fn unknown_gpu_is_an_error() {
        let e = placement_hints(&paired(), &sel(&["7"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown GPU \"7\": this node has GPU indices 0,1,2,3 and their UUIDs"
        );
    }

    #[test]
    fn no_nics_no_env() {
        let mut t = paired();
        t.rail_pairing = RailPairing::default();
        let h = placement_hints(&t, &[]).unwrap();
        assert!(h.env.vars.is_empty() && h.pairs.is_empty());
    }

    fn with_addresses(mut t: NodeTopology) -> NodeTopology {
        for g in &mut t.gpus {
            // NVML's form: eight-digit domain, upper case.
            g.pci_bus_id = format!("00000000:{:02X}:00.0", 0x1a + g.index);
        }
        for (i, n) in t.nics.iter_mut().enumerate() {
            n.pci_address = format!("0000:{:02x}:00.1", 0xb0 + i);
        }
        t
    }

    #[test]
    fn vllm_mapping_in_selection_order() {
        let t = with_addresses(topo(LinkLayer::Infiniband));
        let h = env_hints(&t, Some(&sel(&["2", "0"]))).unwrap();
        // GPU 2's rail is mlx5_0 (0000:b0:00.1), GPU 0's is mlx5_2 (0000:b2:00.1).
        assert_eq!(
            h.get("VLLM_GPU_NIC_PCIE_MAPPING"),
            Some("0000:1c:00.0=0000:b0:00.1,0000:1a:00.0=0000:b2:00.1")
        );
        assert_eq!(
            h.get("VLLM_NIC_SELECTION_VARS"),
            Some("UCX_NET_DEVICES:1,NVSHMEM_HCA_LIST:1,NCCL_IB_HCA:1")
        );
        // A GPU without a rail is left out of the mapping.
        let all = env_hints(&t, None).unwrap();
        let mapping = all.get("VLLM_GPU_NIC_PCIE_MAPPING").unwrap();
        assert_eq!(mapping.split(',').count(), 3);
        assert!(!mapping.contains("0000:1d:00.0"), "{mapping}");
        // Through GetPlacementHints too.
        let p = placement_hints(&t, &sel(&["1"])).unwrap();
        assert_eq!(
            p.env.get("VLLM_GPU_NIC_PCIE_MAPPING"),
            Some("0000:1b:00.0=0000:b1:00.1")
        );
    }

    #[test]
    fn vllm_vars_need_addresses_and_one_port() {
        // No PCI addresses: no mapping, and a note says why.
        let t = topo(LinkLayer::Infiniband);
        let h = env_hints(&t, None).unwrap();
        assert_eq!(h.get("VLLM_GPU_NIC_PCIE_MAPPING"), None);
        assert!(h.notes.iter().any(|n| n.contains("no vLLM mapping")));
        // Rails on different ports: one suffix cannot say both.
        let mut t = with_addresses(topo(LinkLayer::Infiniband));
        t.rail_pairing.pairs[1].port = 2;
        let h = env_hints(&t, None).unwrap();
        assert_eq!(h.get("VLLM_NIC_SELECTION_VARS"), None);
        assert_eq!(h.get("VLLM_GPU_NIC_PCIE_MAPPING"), None);
        // No rails: nothing.
        let mut t = with_addresses(topo(LinkLayer::Infiniband));
        t.rail_pairing = RailPairing::default();
        assert!(env_hints(&t, None).unwrap().vars.is_empty());
    }

    #[test]
    fn for_vllm_leaves_out_what_vllm_sets_per_worker() {
        let t = with_addresses(topo(LinkLayer::Infiniband));
        let generic = env_hints(&t, Some(&sel(&["1", "0"]))).unwrap();
        assert_eq!(generic.clone().for_consumer(Consumer::Generic), generic);
        for name in VLLM_SELECTED {
            assert!(generic.get(name).is_some(), "{name} for any launcher");
        }
        let v = generic.clone().for_consumer(Consumer::Vllm);
        for name in VLLM_SELECTED {
            assert_eq!(v.get(name), None, "{name} would be widened by vLLM");
        }
        // Everything else stays, in the same order.
        let kept: Vec<_> = generic
            .vars
            .iter()
            .filter(|(k, _)| !VLLM_SELECTED.contains(&k.as_str()))
            .cloned()
            .collect();
        assert_eq!(v.vars, kept);
        assert!(v.get("VLLM_GPU_NIC_PCIE_MAPPING").is_some());
        assert!(v.get("DEEP_EP_DEVICE_TO_HCA_MAPPING").is_some());
        assert!(v.notes.iter().any(|n| n.starts_with(VLLM_LEFT_OUT)));
        assert!(!v.notes.iter().any(|n| n.starts_with(VLLM_GENERIC_NOTE)));
        // Idempotent: a client may filter what an agent already filtered.
        assert_eq!(v.clone().for_consumer(Consumer::Vllm), v);
    }

    #[test]
    fn for_vllm_without_its_variables_keeps_the_node_wide_lists() {
        // No PCI addresses: no VLLM_NIC_SELECTION_VARS, so vLLM does not touch the lists.
        let t = topo(LinkLayer::Infiniband);
        let generic = env_hints(&t, None).unwrap();
        let v = generic.clone().for_consumer(Consumer::Vllm);
        assert_eq!(v.vars, generic.vars);
        assert!(v.get("UCX_NET_DEVICES").is_some());
        assert!(v.notes.iter().any(|n| n.starts_with(VLLM_KEPT)), "{v:?}");
        assert_eq!(v.clone().for_consumer(Consumer::Vllm), v);
    }

    #[test]
    fn consumer_names() {
        assert_eq!("vllm".parse::<Consumer>(), Ok(Consumer::Vllm));
        assert_eq!("generic".parse::<Consumer>(), Ok(Consumer::Generic));
        assert!("sglang".parse::<Consumer>().is_err());
        assert_eq!(Consumer::Vllm.to_string(), "vllm");
    }
}
