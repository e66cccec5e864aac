//! GPUs and what joins them: each GPU, its NVLinks, and the connection and P2P status of each
//! pair.

use serde::{Deserialize, Serialize};

use super::{GpuFabricInfo, GpuPlatform};

/// GPU architecture family, derived from the compute capability.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum GpuFamily {
    /// Unknown.
    #[default]
    Unknown,
    /// 3.x
    Kepler,
    /// 5.x
    Maxwell,
    /// 6.x
    Pascal,
    /// 7.0, 7.2
    Volta,
    /// 7.5
    Turing,
    /// 8.0, 8.6, 8.7
    Ampere,
    /// 8.9
    Ada,
    /// 9.0
    Hopper,
    /// 10.x, 11.x, 12.x
    Blackwell,
}

impl GpuFamily {
    /// Family of a CUDA compute capability.
    pub fn from_compute_capability(major: u32, minor: u32) -> Self {
        match (major, minor) {
            (3, _) => Self::Kepler,
            (5, _) => Self::Maxwell,
            (6, _) => Self::Pascal,
            (7, 5) => Self::Turing,
            (7, _) => Self::Volta,
            (8, 9) => Self::Ada,
            (8, _) => Self::Ampere,
            (9, _) => Self::Hopper,
            (10..=12, _) => Self::Blackwell,
            _ => Self::Unknown,
        }
    }

    /// Lowercase name, as used in labels and tables.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Multi-Instance GPU mode.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum MigMode {
    /// The query failed.
    #[default]
    Unknown,
    /// The GPU does not support MIG.
    Unsupported,
    /// Supported, disabled.
    Disabled,
    /// Enabled.
    Enabled,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Gpu {
    /// NVML index.
    pub index: u32,
    /// UUID.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// Board serial, when the board has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// PCI bus id as NVML reports it (`00000000:00:06.0`).
    pub pci_bus_id: String,
    /// Total memory in bytes.
    pub memory_total_bytes: u64,
    /// Compute capability major.
    pub compute_major: u32,
    /// Compute capability minor.
    pub compute_minor: u32,
    /// Family derived from the compute capability.
    pub family: GpuFamily,
    /// Current MIG mode.
    pub mig_mode: MigMode,
    /// MIG mode after the next reset.
    pub mig_mode_pending: MigMode,
    /// NUMA node; `None` when neither NVML nor sysfs knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<i32>,
    /// CPUs close to the GPU as a cpulist (`0-63`); empty when unknown.
    pub cpu_affinity: String,
    /// Active NVLinks.
    pub nvlinks: Vec<NvLink>,
    /// MNNVL fabric info, when the GPU reports any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fabric: Option<GpuFabricInfo>,
    /// Where the GPU sits physically (NVML platform info): always written, with its status.
    pub platform: GpuPlatform,
}

impl Gpu {
    /// Memory in MiB.
    pub fn memory_mib(&self) -> u64 {
        self.memory_total_bytes / (1024 * 1024)
    }

    /// Number of active NVLinks whose far end is an NVSwitch.
    pub fn switch_links(&self) -> usize {
        self.nvlinks
            .iter()
            .filter(|l| l.remote_type == NvLinkRemoteType::Switch)
            .count()
    }
}

/// What the far end of an NVLink is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum NvLinkRemoteType {
    /// Not reported.
    #[default]
    Unknown,
    /// Another GPU.
    Gpu,
    /// An NVSwitch.
    Switch,
    /// An IBM NPU.
    Ibmnpu,
}

/// One active NVLink.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NvLink {
    /// Link number.
    pub link: u32,
    /// NVLink version, e.g. `4.0`; empty when unknown.
    pub version: String,
    /// Far end type.
    pub remote_type: NvLinkRemoteType,
    /// Far end PCI bus id, when reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_pci_bus_id: Option<String>,
}

/// How two devices connect, as in `nvidia-smi topo -m`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Connection {
    /// Unknown.
    #[default]
    Unknown,
    /// Bonded NVLinks.
    #[serde(rename = "NV")]
    NvLink,
    /// Same board.
    Internal,
    /// At most one PCIe bridge.
    Pix,
    /// Several bridges, no host bridge.
    Pxb,
    /// Through a host bridge.
    Phb,
    /// Across host bridges in one NUMA node.
    Node,
    /// Across NUMA nodes.
    Sys,
}

impl Connection {
    /// The `topo -m` abbreviation (without the NVLink count).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "?",
            Self::NvLink => "NV",
            Self::Internal => "INT",
            Self::Pix => "PIX",
            Self::Pxb => "PXB",
            Self::Phb => "PHB",
            Self::Node => "NODE",
            Self::Sys => "SYS",
        }
    }

    /// Distance rank: smaller is closer. NVLink is closest, unknown is farthest.
    pub fn distance(self) -> u8 {
        match self {
            Self::NvLink => 0,
            Self::Internal => 1,
            Self::Pix => 2,
            Self::Pxb => 3,
            Self::Phb => 4,
            Self::Node => 5,
            Self::Sys => 6,
            Self::Unknown => 7,
        }
    }
}

/// P2P over NVLink.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum P2pStatus {
    /// Not queried.
    #[default]
    Unknown,
    /// Works.
    Ok,
    /// Not supported.
    NotSupported,
    /// NVML failed to answer.
    Error,
}

/// An ordered GPU pair.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuPair {
    /// First GPU index.
    pub a: u32,
    /// Second GPU index.
    pub b: u32,
    /// The `topo -m` cell.
    pub connection: Connection,
    /// Bonded NVLink count (0 without NVLink).
    pub nvlink_count: u32,
    /// P2P over NVLink.
    pub p2p_nvlink: P2pStatus,
    /// PCIe level of the common ancestor, ignoring NVLink.
    pub pcie: Connection,
}

impl GpuPair {
    /// The matrix cell text, e.g. `NV18` or `PHB`.
    pub fn cell(&self) -> String {
        match self.connection {
            Connection::NvLink => format!("NV{}", self.nvlink_count),
            c => c.as_str().to_string(),
        }
    }
}
