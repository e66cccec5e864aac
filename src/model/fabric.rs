//! The multi-node NVLink fabric: each GPU's registration and health, and the node's NVLink
//! domain.

use serde::{Deserialize, Serialize};

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
        /// The incorrect-configuration field says: no partition.
        NoPartition = "no-partition",
        /// Too few NVLinks.
        InsufficientNvlinks = "insufficient-nvlinks",
        /// GPU firmware incompatible with the fabric.
        IncompatibleGpuFirmware = "incompatible-gpu-firmware",
        /// The incorrect-configuration field says: invalid location.
        InvalidLocation = "invalid-location",
        /// Health summary says unhealthy.
        Unhealthy = "unhealthy",
        /// Health summary says limited capacity.
        LimitedCapacity = "limited-capacity",
    }
}

/// Where one GPU's registration in the multi-node NVLink fabric stands (NVML fabric info state).
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
    /// A state code this build does not know, or none read.
    #[default]
    Unknown,
    /// State 0, or the query is not supported: the GPU is in no multi-node NVLink fabric.
    NotSupported,
    /// State 1: registration has not started.
    NotStarted,
    /// State 2: registration is under way.
    InProgress,
    /// State 3: registration finished; whether it succeeded is in [`GpuFabricInfo::status`].
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
    /// Summary 1: the GPU's fabric connection is healthy.
    Healthy,
    /// Summary 2: the GPU's fabric connection is unhealthy.
    Unhealthy,
    /// Summary 3: the fabric works at limited capacity.
    LimitedCapacity,
}

/// One GPU's fabric info.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuFabricInfo {
    /// Struct version that answered (3, 2 or 1).
    pub api_version: u32,
    /// Where the GPU's fabric registration stands.
    pub registration: FabricRegistration,
    /// NVML return code of the registration; 0 (`NVML_SUCCESS`) when it succeeded.
    pub status: u32,
    /// ClusterUUID, canonical form.
    pub cluster_uuid: String,
    /// Clique id in the cluster; GPUs with equal ClusterUUID and clique id share an NVLink domain.
    pub clique_id: u32,
    /// The raw health bit mask (fabric info v2 and later); 0 when not given.
    pub health_mask: u32,
    /// The health summary (fabric info v3 and later); [`FabricHealth::Unknown`] when not given.
    pub health_summary: FabricHealth,
    /// Problems decoded from the health mask and summary; empty when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub health_problems: Vec<FabricHealthProblem>,
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
    /// No multi-node NVLink: no GPUs, or no GPU is in a fabric cluster.
    None,
    /// Some GPU has not finished its fabric registration.
    Pending,
    /// Every GPU registered, healthy, and in one cluster and clique; `domain` is set.
    Ready,
    /// Every GPU is in one clique, but some report a health problem.
    Degraded,
    /// GPUs disagree: they are in different cliques or clusters, or only some are in one.
    Inconsistent,
    /// A fabric query failed, or a registration failed or is in an unknown state.
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
    /// The domain state; `reason` says how it was reached.
    pub state: FabricState,
    /// Why the state is what it is, in words (`fabric registration not completed on GPU 3`).
    pub reason: String,
    /// `<ClusterUUID>.<CliqueId>`, only when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The non-zero ClusterUUID every GPU shares, also when degraded or when only cliques differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_uuid: Option<String>,
    /// The clique id, when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clique_id: Option<u32>,
}
