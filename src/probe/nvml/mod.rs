//! The NVML seam: a small trait over the raw NVML facts a topology probe needs.
//!
//! Two implementations exist: [`live::LiveNvml`] calls the driver, and
//! [`snapshot::NvmlSnapshot`] replays a recorded snapshot. Everything above the trait
//! (model building, fabric derivation) is shared, so replay tests exercise the real code path.
//! Facts are kept raw (NVML's own numeric codes) so that snapshots record what the driver said,
//! not what we made of it.

pub mod fabric;
pub mod live;
pub mod platform;
pub mod prober;
pub mod snapshot;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why an NVML call gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The device or driver does not support the query (an answer, not a fault).
    NotSupported,
    /// The library or a symbol in it is missing.
    Missing,
    /// Not permitted for this process.
    NoPermission,
    /// The GPU fell off the bus.
    GpuLost,
    /// The structure version is not understood by this driver.
    VersionMismatch,
    /// Not present (e.g. a device index past the count, or a fact not recorded).
    NotFound,
    /// A replayed snapshot predates the query: the answer is unknown, not a fault.
    NotRecorded,
    /// Any other NVML error.
    Other,
}

/// An NVML call that gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct NvmlFailure {
    /// What kind of failure it was.
    pub kind: FailureKind,
    /// The driver's message.
    pub message: String,
}

impl NvmlFailure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// True for "not supported" style answers, which mean "unknown", not "broken".
    pub fn is_not_supported(&self) -> bool {
        matches!(self.kind, FailureKind::NotSupported | FailureKind::Missing)
    }
}

/// The answer to one NVML query.
pub type Fact<T> = Result<T, NvmlFailure>;

/// Static identity of a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    /// Product name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// The GPU's UUID (`GPU-` and a UUID).
    pub uuid: String,
    /// Board serial; `None` when the board has none (NVML: not supported).
    pub serial: Option<String>,
    /// PCI bus id, NVML's long form (`00000000:00:06.0`).
    pub pci_bus_id: String,
    /// Total memory in bytes.
    pub memory_total_bytes: u64,
    /// Major number of the CUDA compute capability (9 for `9.0`).
    pub compute_major: u32,
    /// Minor number of the CUDA compute capability (0 for `9.0`).
    pub compute_minor: u32,
}

/// One NVLink as NVML reports it. The detail facts are present only for active links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawNvLink {
    /// Link index on the GPU, from 0.
    pub link: u32,
    /// `nvmlDeviceGetNvLinkState`.
    pub active: bool,
    /// `nvmlDeviceGetNvLinkVersion` (NVML_NVLINK_VERSION_*; 6 = 4.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Fact<u32>>,
    /// `nvmlDeviceGetNvLinkRemoteDeviceType` (0 GPU, 1 IBMNPU, 2 switch, 255 unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_type: Option<Fact<u32>>,
    /// `nvmlDeviceGetNvLinkRemotePciInfo_v2` bus id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_pci_bus_id: Option<Fact<String>>,
}

/// `nvmlDeviceGetGpuFabricInfo(V)` as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawFabric {
    /// Struct version that answered: 3, 2 or 1.
    pub api_version: u32,
    /// `nvmlGpuFabricState_t`: 0 not supported, 1 not started, 2 in progress, 3 completed.
    pub state: u8,
    /// `nvmlReturn_t` of the registration.
    pub status: u32,
    /// ClusterUUID bytes as 32 lowercase hex digits.
    pub cluster_uuid: String,
    /// Clique id within the cluster.
    pub clique_id: u32,
    /// Health mask (v2+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_mask: Option<u32>,
    /// Health summary (v3): 0 not supported, 1 healthy, 2 unhealthy, 3 limited capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_summary: Option<u8>,
}

/// `nvmlDeviceGetPlatformInfo` as answered (driver R570 and later; filled on GB200/GB300).
///
/// The v1 and v2 structs have the same size and layout: v2 renamed the rack GUID to the chassis
/// serial number, and the slot, compute-slot and node indices to slot number, tray index and
/// host id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawPlatform {
    /// Struct version that answered: 2 or 1.
    pub api_version: u32,
    /// The 16 InfiniBand GUID bytes as 32 lowercase hex digits (8 bytes used on Blackwell).
    pub ib_guid: String,
    /// The 16 chassis serial number bytes (v1: rack GUID) as 32 lowercase hex digits; on
    /// Blackwell, 13 ASCII characters and zeros.
    pub chassis_serial: String,
    /// Slot number in the chassis, switches included.
    pub slot_number: u8,
    /// Tray index among the chassis' compute trays, switches not included.
    pub tray_index: u8,
    /// Index of the host (node) within the slot.
    pub host_id: u8,
    /// The NVLink peer type the platform indicates (switch present or not).
    pub peer_type: u8,
    /// The GPU's module id within the host.
    pub module_id: u8,
}

/// The raw NVML facts a topology probe reads. Indices are NVML device indices.
pub trait NvmlSource: Send {
    /// `nvmlSystemGetDriverVersion`.
    fn driver_version(&self) -> Fact<String>;
    /// `nvmlSystemGetCudaDriverVersion_v2` (e.g. 13000).
    fn cuda_driver_version(&self) -> Fact<i32>;
    /// `nvmlSystemGetNVMLVersion`.
    fn nvml_version(&self) -> Fact<String>;
    /// `nvmlDeviceGetCount`.
    fn device_count(&self) -> Fact<u32>;
    /// Name, UUID, serial, PCI, memory and compute capability.
    fn identity(&self, index: u32) -> Fact<DeviceIdentity>;
    /// `nvmlDeviceGetNumaNodeId`.
    fn numa_node(&self, index: u32) -> Fact<u32>;
    /// `nvmlDeviceGetMigMode`: (current, pending), 1 = enabled.
    fn mig_mode(&self, index: u32) -> Fact<(u32, u32)>;
    /// `nvmlDeviceGetCpuAffinity` as 64-bit words.
    fn cpu_affinity(&self, index: u32) -> Fact<Vec<u64>>;
    /// NVLink state of every link, with details for the active ones.
    fn nvlinks(&self, index: u32) -> Fact<Vec<RawNvLink>>;
    /// `nvmlDeviceGetP2PStatus(.., NVML_P2P_CAPS_INDEX_NVLINK)`: 0 = OK.
    fn p2p_nvlink(&self, a: u32, b: u32) -> Fact<u32>;
    /// `nvmlDeviceGetTopologyCommonAncestor`: 0, 10, 20, 30, 40, 50.
    fn common_ancestor(&self, a: u32, b: u32) -> Fact<u32>;
    /// GPU fabric info, v3 then v2 then v1.
    fn fabric(&self, index: u32) -> Fact<RawFabric>;
    /// Platform info (physical rack and tray), v2 then v1. A source that cannot ask answers
    /// "missing", which reads as not supported.
    fn platform(&self, index: u32) -> Fact<RawPlatform> {
        let _ = index;
        Err(NvmlFailure::new(
            FailureKind::Missing,
            "this NVML source has no platform info",
        ))
    }
}

/// A shared source answers like the source it shares (e.g. one snapshot read by several
/// probers).
impl<T: NvmlSource + Sync + ?Sized> NvmlSource for std::sync::Arc<T> {
    fn driver_version(&self) -> Fact<String> {
        (**self).driver_version()
    }
    fn cuda_driver_version(&self) -> Fact<i32> {
        (**self).cuda_driver_version()
    }
    fn nvml_version(&self) -> Fact<String> {
        (**self).nvml_version()
    }
    fn device_count(&self) -> Fact<u32> {
        (**self).device_count()
    }
    fn identity(&self, index: u32) -> Fact<DeviceIdentity> {
        (**self).identity(index)
    }
    fn numa_node(&self, index: u32) -> Fact<u32> {
        (**self).numa_node(index)
    }
    fn mig_mode(&self, index: u32) -> Fact<(u32, u32)> {
        (**self).mig_mode(index)
    }
    fn cpu_affinity(&self, index: u32) -> Fact<Vec<u64>> {
        (**self).cpu_affinity(index)
    }
    fn nvlinks(&self, index: u32) -> Fact<Vec<RawNvLink>> {
        (**self).nvlinks(index)
    }
    fn p2p_nvlink(&self, a: u32, b: u32) -> Fact<u32> {
        (**self).p2p_nvlink(a, b)
    }
    fn common_ancestor(&self, a: u32, b: u32) -> Fact<u32> {
        (**self).common_ancestor(a, b)
    }
    fn fabric(&self, index: u32) -> Fact<RawFabric> {
        (**self).fabric(index)
    }
    fn platform(&self, index: u32) -> Fact<RawPlatform> {
        (**self).platform(index)
    }
}

/// NVML's `NVML_NVLINK_VERSION_*` code as a version string.
pub fn nvlink_version_name(code: u32) -> String {
    match code {
        1 => "1.0".into(),
        2 => "2.0".into(),
        3 => "2.2".into(),
        4 => "3.0".into(),
        5 => "3.1".into(),
        6 => "4.0".into(),
        7 => "5.0".into(),
        other => format!("unknown-{other}"),
    }
}

/// CUDA driver version integer (13000) as `major.minor` (`13.0`).
pub fn cuda_version_string(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_version() {
        assert_eq!(cuda_version_string(13000), "13.0");
        assert_eq!(cuda_version_string(12080), "12.8");
        assert_eq!(cuda_version_string(12020), "12.2");
    }

    #[test]
    fn nvlink_versions() {
        assert_eq!(nvlink_version_name(6), "4.0");
        assert_eq!(nvlink_version_name(7), "5.0");
        assert_eq!(nvlink_version_name(42), "unknown-42");
    }

    #[test]
    fn fact_serializes_explicitly() {
        let ok: Fact<u32> = Ok(3);
        let err: Fact<u32> = Err(NvmlFailure::new(FailureKind::NotSupported, "Not Supported"));
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"Ok":3}"#);
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"Err":{"kind":"not-supported","message":"Not Supported"}}"#
        );
    }
}
