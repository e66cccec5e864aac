//! The `Topology` model: one node's GPUs, NVLink matrix, MNNVL fabric and RDMA NICs.
//!
//! This mirrors `proto/nodetopo/v1/topology.proto` (the public contract) as plain Rust types with
//! serde, so that `probe -o json|yaml` is stable and every consumer (labels, gRPC, extender) reads
//! one shape. Probes fill it; policy reads it; nothing here does I/O.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The whole topology of one node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeTopology {
    /// Kubernetes node name (or host name outside a cluster).
    pub node_name: String,
    /// Content revision; changes only when the content changes. 0 = never published.
    pub revision: u64,
    /// When the data was probed (RFC 3339 in JSON).
    #[serde(with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub probe_time: Option<SystemTime>,
    /// Driver-level facts.
    pub driver: DriverInfo,
    /// GPUs ordered by NVML index.
    pub gpus: Vec<Gpu>,
    /// Ordered GPU pairs (a != b): the `nvidia-smi topo -m` matrix.
    pub gpu_pairs: Vec<GpuPair>,
    /// The node's multi-node NVLink domain.
    pub fabric: Fabric,
    /// RDMA devices.
    pub nics: Vec<Nic>,
    /// PCIe distance from every GPU to every NIC, nearest first per GPU.
    pub gpu_nic_affinity: Vec<GpuNicAffinity>,
    /// One-to-one GPU to NIC rail pairing.
    pub rail_pairing: RailPairing,
    /// GPUDirect RDMA readiness.
    pub gpudirect: GpuDirect,
    /// Where the node's compute rails plug into the InfiniBand and RoCE fabrics.
    pub network: NetworkPlacement,
    /// One entry per probe source.
    pub sources: Vec<SourceStatus>,
}

impl NodeTopology {
    /// The pair entry for GPUs `a` and `b`, if present.
    pub fn pair(&self, a: u32, b: u32) -> Option<&GpuPair> {
        self.gpu_pairs.iter().find(|p| p.a == a && p.b == b)
    }

    /// True when the content (everything but revision and probe time) equals `other`'s.
    pub fn same_content(&self, other: &NodeTopology) -> bool {
        let strip = |t: &NodeTopology| NodeTopology {
            revision: 0,
            probe_time: None,
            ..t.clone()
        };
        strip(self) == strip(other)
    }
}

/// Driver-level facts shared by all GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DriverInfo {
    /// Kernel driver version, e.g. `580.159.04`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// Highest CUDA version the driver supports, e.g. `13.0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_driver_version: Option<String>,
    /// NVML library version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvml_version: Option<String>,
}

/// A fixed set of values spelled as text in JSON, gRPC and labels, plus the text of any value
/// nodetopo has no name for, kept as it came (from a newer kernel or driver).
macro_rules! text_enum {
    (
        $(#[$m:meta])*
        $name:ident {
            $($(#[$vm:meta])* $var:ident = $text:literal,)*
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($(#[$vm])* $var,)*
            /// A value without a name here, as read.
            Other(String),
        }

        impl $name {
            /// The text form.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$var => $text,)*
                    Self::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => Self::$var,)*
                    _ => Self::Other(s.to_string()),
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self::from(s.as_str())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.as_str().to_string()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// How GPUDirect RDMA reaches the NIC.
    GpuDirectMethod {
        /// Neither.
        #[default]
        None = "",
        /// The `nvidia_peermem` kernel module.
        NvidiaPeermem = "nvidia_peermem",
        /// dma-buf (open kernel modules, kernel 5.12 or later).
        DmaBuf = "dma-buf",
    }
}

text_enum! {
    /// A GID's type, as sysfs `gid_attrs/types/<index>` spells it.
    GidType {
        /// No type given.
        #[default]
        Unknown = "",
        /// InfiniBand, or RoCE v1.
        IbRoceV1 = "IB/RoCE v1",
        /// RoCE v2 (routable).
        RoceV2 = "RoCE v2",
    }
}

text_enum! {
    /// A port's physical state, by the kernel's name (`phys_state` is `5: LinkUp`).
    PhysState {
        /// Not read.
        #[default]
        Unknown = "",
        /// 1.
        Sleep = "Sleep",
        /// 2.
        Polling = "Polling",
        /// 3.
        Disabled = "Disabled",
        /// 4.
        PortConfigurationTraining = "PortConfigurationTraining",
        /// 5.
        LinkUp = "LinkUp",
        /// 6.
        LinkErrorRecovery = "LinkErrorRecovery",
        /// 7 (`Phy Test`).
        PhyTest = "PhyTest",
    }
}

text_enum! {
    /// One decoded NVLink fabric health problem.
    FabricHealthProblem {
        /// Placeholder; never produced.
        #[default]
        Unknown = "",
        /// Bandwidth degraded.
        DegradedBandwidth = "degraded-bandwidth",
        /// Route recovery in progress.
        RouteRecovery = "route-recovery",
        /// A route is unhealthy.
        RouteUnhealthy = "route-unhealthy",
        /// Recovering from an access timeout.
        AccessTimeoutRecovery = "access-timeout-recovery",
        /// Incorrect system GUID.
        IncorrectSysguid = "incorrect-sysguid",
        /// Incorrect chassis serial number.
        IncorrectChassisSn = "incorrect-chassis-sn",
        /// No partition.
        NoPartition = "no-partition",
        /// Too few NVLinks.
        InsufficientNvlinks = "insufficient-nvlinks",
        /// GPU firmware incompatible with the fabric.
        IncompatibleGpuFirmware = "incompatible-gpu-firmware",
        /// Invalid location.
        InvalidLocation = "invalid-location",
        /// Health summary says unhealthy.
        Unhealthy = "unhealthy",
        /// Health summary says limited capacity.
        LimitedCapacity = "limited-capacity",
    }
}

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

/// Per-GPU fabric registration state.
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
pub enum FabricRegistration {
    /// Unknown.
    #[default]
    Unknown,
    /// No fabric.
    NotSupported,
    /// Not started.
    NotStarted,
    /// In progress.
    InProgress,
    /// Completed.
    Completed,
}

/// Fabric health summary (v3).
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
pub enum FabricHealth {
    /// Not reported.
    #[default]
    Unknown,
    /// Healthy.
    Healthy,
    /// Unhealthy.
    Unhealthy,
    /// Limited capacity.
    LimitedCapacity,
}

/// One GPU's fabric info.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuFabricInfo {
    /// Struct version that answered (3, 2 or 1).
    pub api_version: u32,
    /// Registration state.
    pub registration: FabricRegistration,
    /// NVML return code of the registration.
    pub status: u32,
    /// ClusterUUID, canonical form.
    pub cluster_uuid: String,
    /// Clique id.
    pub clique_id: u32,
    /// Raw health mask.
    pub health_mask: u32,
    /// Health summary.
    pub health_summary: FabricHealth,
    /// Decoded problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub health_problems: Vec<FabricHealthProblem>,
}

/// Whether a GPU's platform info (physical rack and tray) is known.
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
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum PlatformStatus {
    /// Not asked, or not in a replayed snapshot.
    #[default]
    Unknown,
    /// The driver answered.
    Ok,
    /// The GPU or driver has no platform info (before R570, or not a GB200/GB300 rack).
    NotSupported,
    /// The query failed.
    Error,
}

impl PlatformStatus {
    /// Kebab-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where one GPU sits physically, from NVML's platform info. On GB200/GB300 the chassis is the
/// rack, which Fabric Manager may split into several NVLink partitions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuPlatform {
    /// Whether the facts below are known.
    pub status: PlatformStatus,
    /// What the driver said when the status is not `ok`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Struct version that answered (2 or 1).
    #[serde(skip_serializing_if = "is_zero")]
    pub api_version: u32,
    /// The chassis (rack) serial number; hex digits when the bytes are not printable text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chassis_serial: Option<String>,
    /// Slot number in the chassis, switch trays included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_number: Option<u32>,
    /// Index among the chassis' compute trays, switch trays not included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tray_index: Option<u32>,
    /// Index of the host within the slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_id: Option<u32>,
    /// The GPU's module id within the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_id: Option<u32>,
    /// NVLink peer type the platform indicates (switch present or not), as a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_type: Option<u32>,
    /// InfiniBand GUID reported by the platform, lowercase hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ib_guid: Option<String>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// The node's physical rack, where every GPU agrees: the chassis serial and the tray.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rack {
    /// The chassis serial every GPU reports.
    pub chassis_serial: String,
    /// The tray index, when every GPU reports the same one.
    pub tray_index: Option<u32>,
}

impl NodeTopology {
    /// The rack every GPU agrees on: `None` without GPUs, or when any GPU's platform info is not
    /// known or names another chassis.
    pub fn rack(&self) -> Option<Rack> {
        let first = self.gpus.first()?;
        fn known(g: &Gpu) -> Option<&str> {
            (g.platform.status == PlatformStatus::Ok)
                .then_some(g.platform.chassis_serial.as_deref())
                .flatten()
        }
        let serial = known(first)?;
        if !self.gpus.iter().all(|g| known(g) == Some(serial)) {
            return None;
        }
        let tray = first.platform.tray_index;
        Some(Rack {
            chassis_serial: serial.to_string(),
            tray_index: tray.filter(|_| self.gpus.iter().all(|g| g.platform.tray_index == tray)),
        })
    }
}

/// The node's NVLink domain state.
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
    strum::EnumIter,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum FabricState {
    /// Not derived.
    #[default]
    Unknown,
    /// No MNNVL.
    None,
    /// Registration not done.
    Pending,
    /// One agreed clique.
    Ready,
    /// Health problem.
    Degraded,
    /// GPUs disagree.
    Inconsistent,
    /// Query failed or registration error.
    Error,
}

impl FabricState {
    /// Lowercase name (the `nvlink.fabric` label value).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The node's multi-node NVLink domain.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Fabric {
    /// State.
    pub state: FabricState,
    /// Why.
    pub reason: String,
    /// `<ClusterUUID>.<CliqueId>`, only when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The agreed non-zero ClusterUUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_uuid: Option<String>,
    /// The clique id, when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clique_id: Option<u32>,
}

/// RDMA link layer.
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
    strum::EnumIter,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LinkLayer {
    /// Unknown.
    #[default]
    Unknown,
    /// InfiniBand.
    Infiniband,
    /// Ethernet (RoCE).
    Ethernet,
}

/// Logical port state.
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
pub enum PortState {
    /// Unknown.
    #[default]
    Unknown,
    /// DOWN.
    Down,
    /// INIT.
    Init,
    /// ARMED.
    Armed,
    /// ACTIVE.
    Active,
    /// ACTIVE_DEFER.
    ActiveDefer,
}

/// One RDMA device.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Nic {
    /// Device name (`mlx5_0`).
    pub name: String,
    /// PCI address.
    pub pci_address: String,
    /// Node GUID.
    pub node_guid: String,
    /// System image GUID.
    pub sys_image_guid: String,
    /// Firmware version.
    pub fw_version: String,
    /// Board id.
    pub board_id: String,
    /// HCA type.
    pub hca_type: String,
    /// NUMA node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<i32>,
    /// Netdevs.
    pub netdevs: Vec<String>,
    /// SR-IOV VF.
    pub virtual_function: bool,
    /// Bond / LAG.
    pub bonded: bool,
    /// What the NIC is for: a GPU's rail, storage or front-end, or an SR-IOV VF.
    pub role: NicRole,
    /// True when the role was set by the operator (`--nic-role`), not derived.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub role_overridden: bool,
    /// Ports.
    pub ports: Vec<NicPort>,
    /// ibverbs check, when run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verbs: Option<VerbsCheck>,
}

impl Nic {
    /// True for a port of a compute rail: a compute NIC, or any physical NIC where roles are not
    /// known (no GPU seen). Storage, front-end and virtual NICs are never rails.
    pub fn is_rail(&self) -> bool {
        matches!(self.role, NicRole::Compute | NicRole::Unknown) && !self.virtual_function
    }
}

/// What a NIC is for. A role applies to every port of the NIC.
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
    strum::EnumIter,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum NicRole {
    /// Not derived: no GPU is known on the node, so no NIC can be told to be a rail.
    #[default]
    Unknown,
    /// A GPU's rail: the nearest NIC (by PCIe distance) of at least one GPU.
    Compute,
    /// Storage or front-end: a physical NIC no GPU is nearest to.
    Storage,
    /// An SR-IOV virtual function (handed to pods, never a node rail).
    Virtual,
}

impl NicRole {
    /// Lowercase name, as in JSON, tables and `--nic-role`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One port.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NicPort {
    /// Port number.
    pub port: u32,
    /// Logical state.
    pub state: PortState,
    /// Physical state.
    pub phys_state: PhysState,
    /// Link layer.
    pub link_layer: LinkLayer,
    /// Rate in Gb/s.
    pub rate_gbps: f64,
    /// LID.
    pub lid: u32,
    /// SM LID.
    pub sm_lid: u32,
    /// Port GUID.
    pub port_guid: String,
    /// Subnet prefix.
    pub subnet_prefix: String,
    /// GIDs.
    pub gids: Vec<Gid>,
    /// The switch port this port plugs into, when it was looked for (SMP queries on
    /// InfiniBand, LLDP on Ethernet); `None` when the port was not queried (storage and virtual
    /// NICs, inactive ports, a build or run without the source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neighbor: Option<PortNeighbor>,
}

impl NicPort {
    /// The InfiniBand subnet this port is on, when its prefix names one: set and not the
    /// default [`is_default_subnet_prefix`], which most fabrics keep and which therefore tells
    /// fabrics apart no more than an empty one does.
    pub fn ib_subnet(&self) -> Option<&str> {
        let p = self.subnet_prefix.trim();
        (!p.is_empty() && !is_default_subnet_prefix(p)).then_some(p)
    }
}

/// True when `prefix` is InfiniBand's default subnet prefix `fe80:0000:0000:0000` (the
/// link-local prefix, which a subnet manager keeps unless it is configured with another), as
/// sysfs writes it, in label spelling (`fe80-0000-0000-0000`) or abbreviated (`fe80::`).
pub fn is_default_subnet_prefix(prefix: &str) -> bool {
    let text = prefix.trim().replace('-', ":");
    text.parse::<std::net::Ipv6Addr>()
        .or_else(|_| format!("{text}::").parse::<std::net::Ipv6Addr>())
        .is_ok_and(|a| a.segments()[..4] == [0xfe80, 0, 0, 0])
}

text_enum! {
    /// The outcome of looking for one port's switch.
    NeighborStatus {
        /// Not looked for.
        #[default]
        Unknown = "",
        /// Found: `leaf_id` and `leaf_port` are set.
        Ok = "ok",
        /// The port is not active (down, armed, ...); nothing was sent.
        NotActive = "not-active",
        /// The port is in INIT and no subnet manager has answered it (SM LID 0).
        NoSm = "no-sm",
        /// The device that would send or listen could not be opened (permissions, a missing
        /// device file, no capability).
        NoAccess = "no-access",
        /// No answer within the time allowed, after every retry.
        Timeout = "timeout",
        /// The far end is not a switch (a cable straight to another host's adapter).
        NoSwitch = "no-switch",
        /// LLDP: the last frame's time-to-live ran out (or the switch sent a shutdown LLDPDU);
        /// `leaf_id` and `leaf_port` are the last known answer, kept.
        Expired = "expired",
        /// LLDP: listening, but no frame heard yet (switches send every 30 s by default; a
        /// port whose switch sends no LLDP stays here).
        NoFrameYet = "no-frame-yet",
        /// Anything else: a malformed or refused answer, an I/O error.
        Error = "error",
    }
}

/// The switch one port plugs into, and that switch's uplinks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PortNeighbor {
    /// How the search went.
    pub status: NeighborStatus,
    /// Why, in words, when the status is not `ok`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The leaf switch: its node GUID on InfiniBand (`0x` and 16 hex digits), its LLDP chassis
    /// ID on Ethernet, as read.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub leaf_id: String,
    /// The leaf's port: the port number on InfiniBand (NodeInfo LocalPortNum), the LLDP port
    /// ID on Ethernet, as read.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub leaf_port: String,
    /// The switches above the leaf (InfiniBand spines), by node GUID, sorted and distinct.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uplink_ids: Vec<String>,
}

impl PortNeighbor {
    /// A neighbour that was found.
    pub fn found(leaf_id: impl Into<String>, leaf_port: impl Into<String>) -> Self {
        Self {
            status: NeighborStatus::Ok,
            leaf_id: leaf_id.into(),
            leaf_port: leaf_port.into(),
            ..Self::default()
        }
    }

    /// A search that did not find one, and why.
    pub fn failed(status: NeighborStatus, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            ..Self::default()
        }
    }
}

/// The node's place in one RDMA fabric, derived from its compute ports' neighbours
/// ([`crate::probe::network`]). A value is `None` when it is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FabricPlacement {
    /// The leaf switch, only when every compute port of this fabric plugs into the same one
    /// (renamed by the mapping file when it names it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
    /// The scalable unit: a short hash of the sorted set of the compute ports' leaves. Nodes
    /// with the same set are one hop apart on every rail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub su: Option<String>,
    /// The spine block: a short hash of the sorted set of the leaves' uplink switches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<String>,
    /// Why a value is missing, in words.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The rail of every compute port of this fabric whose leaf is known, by NIC and port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rails: Vec<PortRail>,
    /// True when every compute port of this fabric reaches a different leaf (each NIC, or
    /// port, is a rail of its own), false when two reach the same leaf; `None` when fewer than
    /// two ports are placed or a port's leaf is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rail_optimised: Option<bool>,
}

impl FabricPlacement {
    /// True when nothing is known and there is no reason to give.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The rail of `nic`'s port `port`, when known.
    pub fn rail(&self, nic: &str, port: u32) -> Option<&str> {
        self.rails
            .iter()
            .find(|r| r.nic == nic && r.port == port)
            .map(|r| r.rail.as_str())
    }
}

/// One compute port's rail: the leaf switch (or plane) it reaches. On a rail-optimised fabric
/// port k of every node of a scalable unit reaches the same leaf, so equal rails are one hop
/// apart and unequal rails are not.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PortRail {
    /// NIC name.
    pub nic: String,
    /// Port number.
    pub port: u32,
    /// The rail: the leaf's name in the mapping file (`rails:`, else `names:`), else the
    /// leaf's ID in label spelling. Always a label value.
    pub rail: String,
}

/// Where the node's compute rails plug into the fabrics.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkPlacement {
    /// InfiniBand (SMP queries).
    #[serde(skip_serializing_if = "FabricPlacement::is_empty")]
    pub infiniband: FabricPlacement,
    /// RoCE (LLDP).
    #[serde(skip_serializing_if = "FabricPlacement::is_empty")]
    pub roce: FabricPlacement,
}

impl NetworkPlacement {
    /// The rail of `nic`'s port `port` in either fabric, when known.
    pub fn rail(&self, nic: &str, port: u32) -> Option<&str> {
        self.infiniband
            .rail(nic, port)
            .or_else(|| self.roce.rail(nic, port))
    }
}

/// A GID entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Gid {
    /// Index.
    pub index: u32,
    /// Value.
    pub gid: String,
    /// Type.
    #[serde(rename = "type")]
    pub gid_type: GidType,
    /// Netdev.
    pub netdev: String,
}

/// ibverbs check result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VerbsCheck {
    /// Usable from this process.
    pub usable: bool,
    /// Why not.
    pub error: String,
    /// sysfs agrees.
    pub consistent_with_sysfs: bool,
}

/// GPU to NIC PCIe distance.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuNicAffinity {
    /// GPU index.
    pub gpu: u32,
    /// NIC name.
    pub nic: String,
    /// Classification.
    pub connection: Connection,
    /// Rank for this GPU, 0 = nearest.
    pub rank: u32,
}

/// Rail pairing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RailPairing {
    /// Every GPU has a distinct NIC at PIX or PXB.
    pub rail_aligned: bool,
    /// Pairs.
    pub pairs: Vec<RailPair>,
    /// Every GPU's rail: its pair, or else the nearest compute NIC, which it then shares with
    /// the GPU paired to it. GPUs without any compute NIC are absent.
    pub gpu_rails: Vec<RailPair>,
    /// The most GPUs that share one rail in `gpu_rails`; 0 when there is no rail.
    pub gpus_per_rail: u32,
}

/// A GPU and its NIC.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RailPair {
    /// GPU index.
    pub gpu: u32,
    /// NIC name.
    pub nic: String,
    /// Port.
    pub port: u32,
    /// Distance.
    pub connection: Connection,
}

/// GPUDirect RDMA readiness.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuDirect {
    /// Ready.
    pub ready: bool,
    /// Method.
    pub method: GpuDirectMethod,
    /// Why.
    pub reason: String,
}

/// A probe source: one part of the hardware that is probed and reported on by itself. Its name
/// (`nvml`, `sysfs-pci`, ...) appears in JSON, gRPC, logs and the `source` metric label.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Source {
    /// NVML: driver, GPUs, NVLinks and GPU pairs.
    #[default]
    Nvml,
    /// NVML's fabric info: the multi-node NVLink state and clique.
    Fabric,
    /// sysfs `class/infiniband`: the RDMA NICs.
    Rdma,
    /// sysfs PCI tree: GPU-NIC affinity and rail pairing.
    SysfsPci,
    /// Kernel modules and driver parameters: GPUDirect RDMA readiness.
    Gpudirect,
    /// ibverbs: each NIC opened once (the `verbs` feature).
    Verbs,
    /// Directed-route SubnetManagement queries through libibumad: each InfiniBand compute
    /// port's leaf switch and its uplinks (the `umad` feature).
    IbSmp,
    /// LLDP frames from the leaf switch on each RoCE compute port.
    Lldp,
}

impl Source {
    /// The source's name, as in JSON and the `source` metric label.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Outcome of one probe source. Two statuses are equal when they say the same thing: the time a
/// source took is a measurement, not content, so it never makes a topology "changed".
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceStatus {
    /// The source.
    pub source: Source,
    /// Answered fully.
    pub ok: bool,
    /// What went wrong.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Some or all of its data is the last good data from an earlier probe (what it could not
    /// read this time).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    /// How long this source's own probing took in the pass that produced this status (not
    /// serialized: output stays the same between identical probes).
    #[serde(skip)]
    pub took: std::time::Duration,
}

impl PartialEq for SourceStatus {
    fn eq(&self, other: &Self) -> bool {
        let Self {
            source,
            ok,
            error,
            stale,
            took: _,
        } = self;
        *source == other.source && *ok == other.ok && *error == other.error && *stale == other.stale
    }
}

impl Eq for SourceStatus {}

impl SourceStatus {
    /// A source that answered fully.
    pub fn ok(source: Source) -> Self {
        Self {
            source,
            ok: true,
            ..Self::default()
        }
    }

    /// A source that failed or answered partially.
    pub fn failed(source: Source, error: impl Into<String>) -> Self {
        Self {
            source,
            ok: false,
            error: error.into(),
            ..Self::default()
        }
    }

    /// The same status with the time its source took.
    pub fn took(mut self, took: std::time::Duration) -> Self {
        self.took = took;
        self
    }
}

/// A PCI function address `domain:bus:device.function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// PCI domain (segment).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device number (0..=31).
    pub device: u8,
    /// Function number (0..=7).
    pub function: u8,
}

impl PciAddress {
    /// Parses the sysfs form `0000:1b:00.0` (also NVML's `00000000:1B:00.0`, upper-case with an
    /// 8-digit domain). Bus and device are always two digits in both; a short form such as
    /// `0:0:6.0` is no address any kernel or NVML prints, and is refused. `None` for anything
    /// else. [`Display`](std::fmt::Display) gives the sysfs form.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split(':');
        let (d, b, df) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || d.is_empty() || d.len() > 8 || b.len() != 2 {
            return None;
        }
        let (dev, func) = df.split_once('.')?;
        if dev.len() != 2 || func.len() != 1 {
            return None;
        }
        let hex = |x: &str| x.chars().all(|c| c.is_ascii_hexdigit());
        if !(hex(d) && hex(b) && hex(dev) && hex(func)) {
            return None;
        }
        let device = u8::from_str_radix(dev, 16).ok()?;
        let function = u8::from_str_radix(func, 16).ok()?;
        if device > 0x1f || function > 7 {
            return None;
        }
        Some(Self {
            domain: u32::from_str_radix(d, 16).ok()?,
            bus: u8::from_str_radix(b, 16).ok()?,
            device,
            function,
        })
    }
}

impl std::fmt::Display for PciAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// Renders a CPU bitmask (NVML's array of 64-bit words, lowest CPUs first) as a Linux cpulist.
pub fn cpulist_from_mask(words: &[u64]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for (w, word) in words.iter().enumerate() {
        for bit in 0..64 {
            if word & (1u64 << bit) != 0 {
                let cpu = w * 64 + bit;
                match ranges.last_mut() {
                    Some((_, end)) if *end + 1 == cpu => *end = cpu,
                    _ => ranges.push((cpu, cpu)),
                }
            }
        }
    }
    ranges
        .iter()
        .map(|&(s, e)| {
            if s == e {
                s.to_string()
            } else {
                format!("{s}-{e}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        v.map(|s| humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_from_compute_capability() {
        assert_eq!(GpuFamily::from_compute_capability(9, 0), GpuFamily::Hopper);
        assert_eq!(GpuFamily::from_compute_capability(8, 9), GpuFamily::Ada);
        assert_eq!(GpuFamily::from_compute_capability(8, 6), GpuFamily::Ampere);
        assert_eq!(GpuFamily::from_compute_capability(8, 0), GpuFamily::Ampere);
        assert_eq!(GpuFamily::from_compute_capability(7, 5), GpuFamily::Turing);
        assert_eq!(GpuFamily::from_compute_capability(7, 0), GpuFamily::Volta);
        assert_eq!(
            GpuFamily::from_compute_capability(10, 0),
            GpuFamily::Blackwell
        );
        assert_eq!(
            GpuFamily::from_compute_capability(12, 0),
            GpuFamily::Blackwell
        );
        assert_eq!(GpuFamily::from_compute_capability(2, 0), GpuFamily::Unknown);
    }

    #[test]
    fn cpulist_ranges() {
        assert_eq!(cpulist_from_mask(&[u64::MAX, 0, 0, 0]), "0-63");
        assert_eq!(cpulist_from_mask(&[0b1011]), "0-1,3");
        assert_eq!(cpulist_from_mask(&[1u64 << 63, 1]), "63-64");
        assert_eq!(cpulist_from_mask(&[0, 0]), "");
    }

    #[test]
    fn same_content_ignores_revision_and_time() {
        let a = NodeTopology {
            node_name: "n".into(),
            revision: 1,
            probe_time: Some(SystemTime::UNIX_EPOCH),
            ..Default::default()
        };
        let mut b = a.clone();
        b.revision = 7;
        b.probe_time = Some(SystemTime::now());
        assert!(a.same_content(&b));
        b.node_name = "m".into();
        assert!(!a.same_content(&b));
    }

    #[test]
    fn json_round_trip_keeps_time() {
        let t = NodeTopology {
            probe_time: Some(humantime::parse_rfc3339("2026-11-29T05:00:00.123Z").unwrap()),
            ..Default::default()
        };
        let s = serde_json::to_string(&t).unwrap();
        assert!(
            s.contains("\"probe_time\":\"2026-11-29T05:00:00.123Z\""),
            "{s}"
        );
        let back: NodeTopology = serde_json::from_str(&s).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn only_a_set_non_default_prefix_names_a_subnet() {
        for d in [
            "fe80:0000:0000:0000",
            "FE80:0000:0000:0000",
            "fe80-0000-0000-0000",
            "fe80::",
            " fe80:0:0:0 ",
        ] {
            assert!(is_default_subnet_prefix(d), "{d}");
        }
        for other in [
            "fe80:0000:0000:0007",
            "fec0:0000:0000:0000",
            "fe80-0000-0000-0001",
            "",
            "x",
        ] {
            assert!(!is_default_subnet_prefix(other), "{other}");
        }
        let port = |prefix: &str| NicPort {
            subnet_prefix: prefix.into(),
            ..NicPort::default()
        };
        assert_eq!(port("fe80:0000:0000:0000").ib_subnet(), None);
        assert_eq!(port("").ib_subnet(), None);
        assert_eq!(
            port("fe80:0000:0000:0007").ib_subnet(),
            Some("fe80:0000:0000:0007")
        );
    }

    #[test]
    fn text_enums_keep_known_and_unknown_values() {
        let g: GidType = serde_json::from_str("\"RoCE v2\"").unwrap();
        assert_eq!(g, GidType::RoceV2);
        let other: GidType = serde_json::from_str("\"RoCE v3\"").unwrap();
        assert_eq!(other, GidType::Other("RoCE v3".into()));
        assert_eq!(serde_json::to_string(&other).unwrap(), "\"RoCE v3\"");
        assert_eq!(
            serde_json::to_string(&GpuDirectMethod::None).unwrap(),
            "\"\""
        );
        assert_eq!(GpuDirectMethod::from("dma-buf"), GpuDirectMethod::DmaBuf);
        assert_eq!(PhysState::LinkUp.to_string(), "LinkUp");
        assert_eq!(
            FabricHealthProblem::from("route-recovery"),
            FabricHealthProblem::RouteRecovery
        );
    }
}
