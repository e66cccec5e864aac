//! The physical rack and tray, from each GPU's platform info.

use serde::{Deserialize, Serialize};

use super::{Gpu, NodeTopology};

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
