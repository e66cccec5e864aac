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
    /// No compute capability read, or one not listed here.
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

/// Multi-Instance GPU (MIG) mode, from `nvmlDeviceGetMigMode`: whether the GPU may be split into
/// isolated GPU instances.
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
    /// Supported and enabled: the GPU is used through MIG instances, not whole.
    Enabled,
}

/// One GPU, as NVML reports it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Gpu {
    /// NVML device index, from 0 (the numbering `nvidia-smi` shows).
    pub index: u32,
    /// The GPU's UUID as NVML reports it (`GPU-` and a UUID); it names the same GPU across reboots.
    pub uuid: String,
    /// Product name as NVML reports it (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Board serial, when the board has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// PCI bus id as NVML reports it (`00000000:00:06.0`).
    pub pci_bus_id: String,
    /// Total memory in bytes.
    pub memory_total_bytes: u64,
    /// Major number of the CUDA compute capability (9 for `9.0`, Hopper).
    pub compute_major: u32,
    /// Minor number of the CUDA compute capability (0 for `9.0`).
    pub compute_minor: u32,
    /// Family derived from the compute capability.
    pub family: GpuFamily,
    /// MIG mode in effect now; [`MigMode::Unsupported`] on a GPU without MIG.
    pub mig_mode: MigMode,
    /// MIG mode after the next reset.
    pub mig_mode_pending: MigMode,
    /// NUMA node; `None` when neither NVML nor sysfs knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<i32>,
    /// CPUs close to the GPU as a cpulist (`0-63`); empty when unknown.
    pub cpu_affinity: String,
    /// The GPU's NVLinks that are up (`nvmlDeviceGetNvLinkState`); empty on a GPU without NVLink.
    pub nvlinks: Vec<NvLink>,
    /// MNNVL fabric info, when the GPU reports any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fabric: Option<GpuFabricInfo>,
    /// Where the GPU sits physically (NVML platform info): always written, with its status.
    pub platform: GpuPlatform,
}

impl Gpu {
    /// Total memory in MiB (1024 × 1024 bytes), rounded down.
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

/// One NVLink of a GPU that is up, and what NVML says is at its far end.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NvLink {
    /// Link number on the GPU, from 0 (NVML's link index).
    pub link: u32,
    /// NVLink version, e.g. `4.0`; empty when unknown.
    pub version: String,
    /// What the far end is (`nvmlDeviceGetNvLinkRemoteDeviceType`); unknown when NVML does not say.
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
    /// Not known: NVML gave no topology level, or one this code does not know.
    #[default]
    Unknown,
    /// Joined by NVLink, with P2P over NVLink working (`NV#`, # the number of links).
    #[serde(rename = "NV")]
    NvLink,
    /// Both on one board, as on a dual-GPU card (NVML's internal level).
    Internal,
    /// At most one PCIe bridge.
    Pix,
    /// Several bridges, no host bridge.
    Pxb,
    /// Through a PCIe host bridge (the CPU's root complex).
    Phb,
    /// Across host bridges in one NUMA node.
    Node,
    /// Across NUMA nodes, over the interconnect between CPU sockets.
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

/// Whether two GPUs can reach each other's memory directly (P2P) over NVLink.
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
    /// No status set (the default; a probe always sets one of the others).
    #[default]
    Unknown,
    /// NVML reports P2P over NVLink as OK, or was not asked because every active link of both
    /// GPUs ends at an NVSwitch.
    Ok,
    /// Not supported.
    NotSupported,
    /// NVML failed to answer.
    Error,
}

/// How one GPU reaches another: one cell of the `nvidia-smi topo -m` matrix. Both orders of
/// every pair are listed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuPair {
    /// NVML index of the first GPU (the matrix row).
    pub a: u32,
    /// NVML index of the second GPU (the matrix column).
    pub b: u32,
    /// The `topo -m` cell.
    pub connection: Connection,
    /// Bonded NVLink count (0 without NVLink).
    pub nvlink_count: u32,
    /// Whether `a` can reach `b`'s memory directly over NVLink (`nvmlDeviceGetP2PStatus`).
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
