//! What a probe reads, decided once: `nodetopo probe` and `nodetopo agent` build the same
//! [`ProbeConfig`] from the same flags, and [`super::Prober::from_config`] is the one
//! constructor.

use std::path::PathBuf;

use thiserror::Error;

use super::{NetworkOptions, nvml::prober::ProbeOptions, rails::RoleOverrides};

/// Where GPU facts come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GpuSource {
    /// The live driver. NVML stays open between probes; while it is not available (not
    /// installed, or a driver container not up yet) the probe reports zero GPUs and tries to open
    /// it again on every probe.
    #[default]
    Live,
    /// The live driver, with a snapshot of every NVML answer written to this file first
    /// (`probe --record`). NVML must be available.
    Record(PathBuf),
    /// A recorded snapshot file, read again on every probe.
    Replay(PathBuf),
}

/// The configuration of every probe of one node.
#[derive(Debug, Clone, Default)]
pub struct ProbeConfig {
    /// The node name to report.
    pub node_name: String,
    /// The root of the sysfs tree to read (`/host-sys` inside the DaemonSet).
    pub sysfs_root: PathBuf,
    /// Where GPU facts come from.
    pub gpu: GpuSource,
    /// The NVML library (default: `libnvidia-ml.so.1` from the loader's search path).
    pub nvml_lib: Option<PathBuf>,
    /// NVML query options.
    pub options: ProbeOptions,
    /// NIC roles set by the operator (`--nic-role`).
    pub nic_roles: RoleOverrides,
    /// The fabric placement probes (SMP queries, LLDP, the mapping file).
    pub network: NetworkOptions,
}

/// Why a prober could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SetupError {
    /// `--record` without a working NVML.
    #[error("cannot record: NVML is not available")]
    RecordWithoutNvml(#[source] super::nvml::NvmlFailure),
    /// The snapshot could not be written.
    #[error("writing snapshot {}", .0.display())]
    Record(PathBuf, #[source] super::nvml::snapshot::SnapshotError),
}
