//! Recorded NVML snapshots: `nodetopo probe --record FILE` writes one, `--replay FILE` reads one.
//!
//! A snapshot holds the raw answer (or the error) of every query in [`NvmlSource`], so replaying
//! it drives exactly the code that live NVML drives. The format is JSON with a version number.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{
    DeviceIdentity, Fact, FailureKind, NvmlFailure, NvmlSource, RawFabric, RawNvLink, RawPlatform,
};

/// Current snapshot format version.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Errors reading or writing a snapshot.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The file could not be read or written.
    #[error("snapshot {path}: {source}")]
    Io {
        /// Path of the snapshot file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid snapshot.
    #[error("snapshot {path} is not valid: {source}")]
    Parse {
        /// Path of the snapshot file.
        path: String,
        /// The JSON error: bad syntax or a field of the wrong shape.
        #[source]
        source: serde_json::Error,
    },
    /// The file has a format version this build does not read.
    #[error("snapshot {path} has format {found}, this build reads format {SNAPSHOT_FORMAT}")]
    Format {
        /// Path of the snapshot file.
        path: String,
        /// The format version the file declares.
        found: u32,
    },
}

/// Everything NVML answered for one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// NVML device index these answers are for.
    pub index: u32,
    /// Name, UUID, serial, PCI bus id, memory and compute capability, or the error.
    pub identity: Fact<DeviceIdentity>,
    /// The answer (or error) of `nvmlDeviceGetNumaNodeId`.
    pub numa_node: Fact<u32>,
    /// MIG mode (current, pending).
    pub mig_mode: Fact<(u32, u32)>,
    /// `nvmlDeviceGetCpuAffinity`: a CPU bitmask in 64-bit words, lowest CPUs first, or the error.
    pub cpu_affinity: Fact<Vec<u64>>,
    /// The state of every NVLink, with details for the active ones, or the error.
    pub nvlinks: Fact<Vec<RawNvLink>>,
    /// The GPU fabric info (v3, else v2, else v1), or the error.
    pub fabric: Fact<RawFabric>,
    /// Platform info; `None` in snapshots recorded before it was asked (replayed as not
    /// recorded: unknown, not a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Fact<RawPlatform>>,
}

/// Everything NVML answered for one ordered device pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    /// NVML index of the first device.
    pub a: u32,
    /// NVML index of the second device.
    pub b: u32,
    /// `nvmlDeviceGetP2PStatus` for NVLink (0 = OK), or the error.
    pub p2p_nvlink: Fact<u32>,
    /// `nvmlDeviceGetTopologyCommonAncestor` (0 same board, up to 50 across sockets), or the error.
    pub common_ancestor: Fact<u32>,
}

/// A recorded NVML session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NvmlSnapshot {
    /// Format version ([`SNAPSHOT_FORMAT`]).
    pub format: u32,
    /// Free-text provenance (host, tool, date).
    #[serde(default)]
    pub source: String,
    /// The answer (or error) of `nvmlSystemGetDriverVersion`.
    pub driver_version: Fact<String>,
    /// `nvmlSystemGetCudaDriverVersion_v2` as NVML gives it (13000 for 13.0), or the error.
    pub cuda_driver_version: Fact<i32>,
    /// The answer (or error) of `nvmlSystemGetNVMLVersion`.
    pub nvml_version: Fact<String>,
    /// The answer (or error) of `nvmlDeviceGetCount`.
    pub device_count: Fact<u32>,
    /// What NVML answered for each device, by index.
    pub devices: Vec<DeviceRecord>,
    /// What NVML answered for each ordered pair of distinct devices.
    pub pairs: Vec<PairRecord>,
}

impl NvmlSnapshot {
    /// Asks `src` every question the probe can ask, including every pair's P2P status.
    pub fn capture(src: &dyn NvmlSource, source: impl Into<String>) -> Self {
        let device_count = src.device_count();
        let n = *device_count.as_ref().unwrap_or(&0);
        let devices = (0..n)
            .map(|i| DeviceRecord {
                index: i,
                identity: src.identity(i),
                numa_node: src.numa_node(i),
                mig_mode: src.mig_mode(i),
                cpu_affinity: src.cpu_affinity(i),
                nvlinks: src.nvlinks(i),
                fabric: src.fabric(i),
                platform: Some(src.platform(i)),
            })
            .collect();
        let mut pairs = Vec::new();
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    pairs.push(PairRecord {
                        a,
                        b,
                        p2p_nvlink: src.p2p_nvlink(a, b),
                        common_ancestor: src.common_ancestor(a, b),
                    });
                }
            }
        }
        Self {
            format: SNAPSHOT_FORMAT,
            source: source.into(),
            driver_version: src.driver_version(),
            cuda_driver_version: src.cuda_driver_version(),
            nvml_version: src.nvml_version(),
            device_count,
            devices,
            pairs,
        }
    }

    /// Reads a snapshot file.
    pub fn load(path: &Path) -> Result<Self, SnapshotError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Io {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    /// Parses snapshot JSON; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SnapshotError> {
        #[derive(Deserialize)]
        struct Head {
            format: u32,
        }
        let head: Head = serde_json::from_str(text).map_err(|source| SnapshotError::Parse {
            path: origin.to_string(),
            source,
        })?;
        if head.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format {
                path: origin.to_string(),
                found: head.format,
            });
        }
        serde_json::from_str(text).map_err(|source| SnapshotError::Parse {
            path: origin.to_string(),
            source,
        })
    }

    /// Writes the snapshot as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<(), SnapshotError> {
        let text = serde_json::to_string_pretty(self).expect("snapshot types always serialize");
        std::fs::write(path, text + "\n").map_err(|source| SnapshotError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    fn device(&self, index: u32) -> Fact<&DeviceRecord> {
        self.devices
            .iter()
            .find(|d| d.index == index)
            .ok_or_else(|| not_recorded(&format!("device {index}")))
    }

    fn pair(&self, a: u32, b: u32) -> Fact<&PairRecord> {
        self.pairs
            .iter()
            .find(|p| p.a == a && p.b == b)
            .ok_or_else(|| not_recorded(&format!("pair {a}-{b}")))
    }

    /// Device index by UUID, for tests and tools.
    pub fn uuid_index(&self) -> BTreeMap<String, u32> {
        self.devices
            .iter()
            .filter_map(|d| {
                d.identity
                    .as_ref()
                    .ok()
                    .map(|id| (id.uuid.clone(), d.index))
            })
            .collect()
    }
}

fn not_recorded(what: &str) -> NvmlFailure {
    NvmlFailure::new(
        FailureKind::NotFound,
        format!("{what} is not in the snapshot"),
    )
}

impl NvmlSource for NvmlSnapshot {
    fn driver_version(&self) -> Fact<String> {
        self.driver_version.clone()
    }
    fn cuda_driver_version(&self) -> Fact<i32> {
        self.cuda_driver_version.clone()
    }
    fn nvml_version(&self) -> Fact<String> {
        self.nvml_version.clone()
    }
    fn device_count(&self) -> Fact<u32> {
        self.device_count.clone()
    }
    fn identity(&self, index: u32) -> Fact<DeviceIdentity> {
        self.device(index)?.identity.clone()
    }
    fn numa_node(&self, index: u32) -> Fact<u32> {
        self.device(index)?.numa_node.clone()
    }
    fn mig_mode(&self, index: u32) -> Fact<(u32, u32)> {
        self.device(index)?.mig_mode.clone()
    }
    fn cpu_affinity(&self, index: u32) -> Fact<Vec<u64>> {
        self.device(index)?.cpu_affinity.clone()
    }
    fn nvlinks(&self, index: u32) -> Fact<Vec<RawNvLink>> {
        self.device(index)?.nvlinks.clone()
    }
    fn p2p_nvlink(&self, a: u32, b: u32) -> Fact<u32> {
        self.pair(a, b)?.p2p_nvlink.clone()
    }
    fn common_ancestor(&self, a: u32, b: u32) -> Fact<u32> {
        self.pair(a, b)?.common_ancestor.clone()
    }
    fn fabric(&self, index: u32) -> Fact<RawFabric> {
        self.device(index)?.fabric.clone()
    }
    fn platform(&self, index: u32) -> Fact<RawPlatform> {
        self.device(index)?.platform.clone().unwrap_or_else(|| {
            Err(NvmlFailure::new(
                FailureKind::NotRecorded,
                "not in the snapshot (recorded before platform info was asked)",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H200: &str = include_str!("../../../tests/fixtures/h200x4-hgx/snapshot.json");

    #[test]
    fn a_snapshot_without_platform_info_replays_it_as_not_recorded() {
        let snap = NvmlSnapshot::parse(H200, "h200").unwrap();
        assert!(snap.devices.iter().all(|d| d.platform.is_none()));
        let e = snap.platform(0).unwrap_err();
        assert_eq!(e.kind, FailureKind::NotRecorded);
        assert!(!e.is_not_supported());
        // Written back, it still has no platform field.
        let text = serde_json::to_string(&snap).unwrap();
        assert!(!text.contains("\"platform\""));
    }

    #[test]
    fn platform_info_is_recorded_and_replayed() {
        let mut snap = NvmlSnapshot::parse(H200, "h200").unwrap();
        let raw = RawPlatform {
            api_version: 2,
            ib_guid: "0".repeat(32),
            chassis_serial: format!("{}{}", "31383231", "0".repeat(24)),
            slot_number: 9,
            tray_index: 4,
            host_id: 1,
            peer_type: 2,
            module_id: 3,
        };
        snap.devices[0].platform = Some(Ok(raw.clone()));
        snap.devices[1].platform = Some(Err(NvmlFailure::new(
            FailureKind::NotSupported,
            "Not Supported",
        )));
        let again = NvmlSnapshot::capture(&snap, "re-recorded");
        assert_eq!(again.platform(0), Ok(raw));
        assert_eq!(
            again.platform(1).unwrap_err().kind,
            FailureKind::NotSupported
        );
        // Asked again of a source that had no answer: recorded as not recorded.
        assert_eq!(
            again.platform(2).unwrap_err().kind,
            FailureKind::NotRecorded
        );
        let text = serde_json::to_string_pretty(&again).unwrap();
        let back = NvmlSnapshot::parse(&text, "again").unwrap();
        assert_eq!(back, again);
    }
}
