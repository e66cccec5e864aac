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
