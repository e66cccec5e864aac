//! Live NVML: `libnvidia-ml.so.1` loaded at run time through nvml-wrapper.
//!
//! Two calls bypass nvml-wrapper's safe API and go through the raw function table
//! (`Nvml::lib()`), reading the `Result` *fields* so that a missing symbol is an error, not a
//! panic:
//! - `nvmlDeviceGetGpuFabricInfoV` / `nvmlDeviceGetGpuFabricInfo`, which the safe API lacks;
//! - `nvmlDeviceGetPlatformInfo` (driver R570 and later), which the safe API lacks too;
//! - `nvmlDeviceGetNvLinkRemoteDeviceType`, whose safe wrapper in nvml-wrapper 0.13 writes the
//!   answer into a temporary and always returns `Unknown`.

#![allow(unsafe_code)]

use std::{ffi::OsStr, mem};

use nvml_wrapper::{
    Nvml,
    enum_wrappers::device::{P2pCapabilitiesIndex, TopologyLevel},
    error::NvmlError,
};
use nvml_wrapper_sys::bindings::{
    NVML_NVLINK_MAX_LINKS, nvmlGpuFabricInfo_t, nvmlGpuFabricInfo_v2_t, nvmlGpuFabricInfo_v3_t,
    nvmlIntNvLinkDeviceType_t, nvmlPlatformInfo_v2_t,
};

use super::{
    DeviceIdentity, Fact, FailureKind, NvmlFailure, NvmlSource, RawFabric, RawNvLink, RawPlatform,
};

// nvml.h's platform info struct is 44 bytes in both versions; the version word carries the size.
const _: () = assert!(mem::size_of::<nvmlPlatformInfo_v2_t>() == 44);

/// NVML return codes used here (nvml.h).
const NVML_SUCCESS: u32 = 0;
const NVML_ERROR_NOT_SUPPORTED: u32 = 3;
const NVML_ERROR_NO_PERMISSION: u32 = 4;
const NVML_ERROR_NOT_FOUND: u32 = 6;
const NVML_ERROR_FUNCTION_NOT_FOUND: u32 = 13;
const NVML_ERROR_GPU_IS_LOST: u32 = 15;
const NVML_ERROR_ARGUMENT_VERSION_MISMATCH: u32 = 25;

/// A live NVML session. NVML stays initialised for the life of this value.
pub struct LiveNvml {
    nvml: Nvml,
}

impl std::fmt::Debug for LiveNvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveNvml").finish_non_exhaustive()
    }
}

impl LiveNvml {
    /// Loads NVML (`libnvidia-ml.so.1`, or `lib_path` when given) and initialises it.
    pub fn init(lib_path: Option<&OsStr>) -> Result<Self, NvmlFailure> {
        let mut builder = Nvml::builder();
        if let Some(p) = lib_path {
            builder.lib_path(p);
        } else {
            // The unversioned name exists only with the development package; the driver ships
            // the versioned one.
            builder.lib_path(OsStr::new("libnvidia-ml.so.1"));
        }
        let nvml = builder.init().map_err(failure)?;
        Ok(Self { nvml })
    }

    fn device(&self, index: u32) -> Fact<nvml_wrapper::Device<'_>> {
        self.nvml.device_by_index(index).map_err(failure)
    }

    fn remote_device_type(&self, dev: &nvml_wrapper::Device<'_>, link: u32) -> Fact<u32> {
        let sym = self
            .nvml
            .lib()
            .nvmlDeviceGetNvLinkRemoteDeviceType
            .as_ref()
            .map_err(|e| NvmlFailure::new(FailureKind::Missing, e.to_string()))?;
        let mut out: nvmlIntNvLinkDeviceType_t = 255;
        // SAFETY: `dev.handle()` is a live handle of this NVML session, and `out` is a valid,
        // writable `nvmlIntNvLinkDeviceType_t` for the duration of the call.
        let rc = unsafe { sym(dev.handle(), link, &mut out) };
        check(rc, "nvmlDeviceGetNvLinkRemoteDeviceType")?;
        Ok(out)
    }

    fn fabric_v(&self, dev: &nvml_wrapper::Device<'_>, version: u32) -> Fact<RawFabric> {
        let sym = self
            .nvml
            .lib()
            .nvmlDeviceGetGpuFabricInfoV
            .as_ref()
            .map_err(|e| NvmlFailure::new(FailureKind::Missing, e.to_string()))?;
        // The v3 struct is a prefix-compatible extension of v2; the driver fills only the fields
        // of the version it is asked for.
        // SAFETY: an all-zero bit pattern is valid for this plain C struct.
        let mut info: nvmlGpuFabricInfo_v3_t = unsafe { mem::zeroed() };
        let size = if version == 3 {
            mem::size_of::<nvmlGpuFabricInfo_v3_t>()
        } else {
            mem::size_of::<nvmlGpuFabricInfo_v2_t>()
        } as u32;
        info.version = size | (version << 24);
        // SAFETY: the handle is live; `info` is at least as large as the struct version named in
        // `info.version`, so the driver writes within it.
        let rc = unsafe { sym(dev.handle(), &mut info) };
        check(rc, "nvmlDeviceGetGpuFabricInfoV")?;
        Ok(RawFabric {
            api_version: version,
            state: info.state,
            status: info.status,
            cluster_uuid: hex(&info.clusterUuid),
            clique_id: info.cliqueId,
            health_mask: Some(info.healthMask),
            health_summary: (version == 3).then_some(info.healthSummary),
        })
    }

    fn platform_v(&self, dev: &nvml_wrapper::Device<'_>, version: u32) -> Fact<RawPlatform> {
        let sym = self
            .nvml
            .lib()
            .nvmlDeviceGetPlatformInfo
            .as_ref()
            .map_err(|e| NvmlFailure::new(FailureKind::Missing, e.to_string()))?;
        // v1 and v2 have the same size and layout (v2 renamed the fields), so one buffer serves
        // both; the version word names which one is asked for.
        // SAFETY: an all-zero bit pattern is valid for this plain C struct.
        let mut info: nvmlPlatformInfo_v2_t = unsafe { mem::zeroed() };
        info.version = mem::size_of::<nvmlPlatformInfo_v2_t>() as u32 | (version << 24);
        // SAFETY: the handle is live; `info` is as large as the struct version named in
        // `info.version`, so the driver writes within it.
        let rc = unsafe { sym(dev.handle(), &mut info) };
        check(rc, "nvmlDeviceGetPlatformInfo")?;
        Ok(RawPlatform {
            api_version: version,
            ib_guid: hex(&info.ibGuid),
            chassis_serial: hex(&info.chassisSerialNumber),
            slot_number: info.slotNumber,
            tray_index: info.trayIndex,
            host_id: info.hostId,
            peer_type: info.peerType,
            module_id: info.moduleId,
        })
    }

    fn fabric_v1(&self, dev: &nvml_wrapper::Device<'_>) -> Fact<RawFabric> {
        let sym = self
            .nvml
            .lib()
            .nvmlDeviceGetGpuFabricInfo
            .as_ref()
            .map_err(|e| NvmlFailure::new(FailureKind::Missing, e.to_string()))?;
        // SAFETY: an all-zero bit pattern is valid for this plain C struct.
        let mut info: nvmlGpuFabricInfo_t = unsafe { mem::zeroed() };
        // SAFETY: the handle is live and `info` is a valid, writable v1 struct.
        let rc = unsafe { sym(dev.handle(), &mut info) };
        check(rc, "nvmlDeviceGetGpuFabricInfo")?;
        Ok(RawFabric {
            api_version: 1,
            state: info.state,
            status: info.status,
            cluster_uuid: hex(&info.clusterUuid),
            clique_id: info.cliqueId,
            health_mask: None,
            health_summary: None,
        })
    }
}

impl NvmlSource for LiveNvml {
    fn driver_version(&self) -> Fact<String> {
        self.nvml.sys_driver_version().map_err(failure)
    }

    fn cuda_driver_version(&self) -> Fact<i32> {
        self.nvml.sys_cuda_driver_version().map_err(failure)
    }

    fn nvml_version(&self) -> Fact<String> {
        self.nvml.sys_nvml_version().map_err(failure)
    }

    fn device_count(&self) -> Fact<u32> {
        self.nvml.device_count().map_err(failure)
    }

    fn identity(&self, index: u32) -> Fact<DeviceIdentity> {
        let d = self.device(index)?;
        let serial = match d.serial() {
            Ok(s) if !s.trim().is_empty() => Some(s),
            Ok(_) => None,
            Err(e) => {
                let f = failure(e);
                if f.is_not_supported() {
                    None
                } else {
                    return Err(f);
                }
            }
        };
        let cc = d.cuda_compute_capability().map_err(failure)?;
        Ok(DeviceIdentity {
            name: d.name().map_err(failure)?,
            uuid: d.uuid().map_err(failure)?,
            serial,
            pci_bus_id: d.pci_info().map_err(failure)?.bus_id,
            memory_total_bytes: d.memory_info().map_err(failure)?.total,
            compute_major: u32::try_from(cc.major).unwrap_or(0),
            compute_minor: u32::try_from(cc.minor).unwrap_or(0),
        })
    }

    fn numa_node(&self, index: u32) -> Fact<u32> {
        self.device(index)?.numa_node_id().map_err(failure)
    }

    fn mig_mode(&self, index: u32) -> Fact<(u32, u32)> {
        let m = self.device(index)?.mig_mode().map_err(failure)?;
        Ok((m.current, m.pending))
    }

    fn cpu_affinity(&self, index: u32) -> Fact<Vec<u64>> {
        // 16 words cover 1024 CPUs.
        let words = self.device(index)?.cpu_affinity(16).map_err(failure)?;
        // `c_ulong` is 64 bits on the Linux targets NVML supports; the cast keeps other targets
        // compiling.
        #[allow(clippy::unnecessary_cast)]
        Ok(words.into_iter().map(|w| w as u64).collect())
    }

    fn nvlinks(&self, index: u32) -> Fact<Vec<RawNvLink>> {
        let d = self.device(index)?;
        let mut out = Vec::new();
        for link in 0..NVML_NVLINK_MAX_LINKS {
            let l = d.link_wrapper_for(link);
            let active = match l.is_active() {
                Ok(a) => a,
                // A GPU without NVLink answers "not supported" for link 0: no links at all.
                Err(e) => {
                    let f = failure(e);
                    // Past link 0, an invalid-argument answer means the GPU has fewer links.
                    if f.is_not_supported() || link > 0 {
                        break;
                    }
                    return Err(f);
                }
            };
            if !active {
                out.push(RawNvLink {
                    link,
                    active,
                    version: None,
                    remote_type: None,
                    remote_pci_bus_id: None,
                });
                continue;
            }
            out.push(RawNvLink {
                link,
                active,
                version: Some(l.version().map_err(failure)),
                remote_type: Some(self.remote_device_type(&d, link)),
                remote_pci_bus_id: Some(l.remote_pci_info().map(|p| p.bus_id).map_err(failure)),
            });
        }
        Ok(out)
    }

    fn p2p_nvlink(&self, a: u32, b: u32) -> Fact<u32> {
        let da = self.device(a)?;
        let db = self.device(b)?;
        let st = da
            .p2p_status(&db, P2pCapabilitiesIndex::NvLink)
            .map_err(failure)?;
        Ok(st.as_c())
    }

    fn common_ancestor(&self, a: u32, b: u32) -> Fact<u32> {
        let da = self.device(a)?;
        let db = self.device(b)?;
        let level = da.topology_common_ancestor(db).map_err(failure)?;
        Ok(match level {
            TopologyLevel::Internal => 0,
            TopologyLevel::Single => 10,
            TopologyLevel::Multiple => 20,
            TopologyLevel::HostBridge => 30,
            TopologyLevel::Node => 40,
            TopologyLevel::System => 50,
        })
    }

    fn fabric(&self, index: u32) -> Fact<RawFabric> {
        let d = self.device(index)?;
        let mut tried = Vec::new();
        for version in [3, 2] {
            match self.fabric_v(&d, version) {
                Ok(f) => return Ok(f),
                Err(e) if matches!(e.kind, FailureKind::VersionMismatch | FailureKind::Missing) => {
                    tried.push(format!("v{version}: {e}"));
                }
                Err(e) => return Err(e),
            }
        }
        self.fabric_v1(&d).map_err(|e| {
            tried.push(format!("v1: {e}"));
            NvmlFailure::new(e.kind, tried.join("; "))
        })
    }

    fn platform(&self, index: u32) -> Fact<RawPlatform> {
        let d = self.device(index)?;
        match self.platform_v(&d, 2) {
            Err(e) if e.kind == FailureKind::VersionMismatch => self
                .platform_v(&d, 1)
                .map_err(|e1| NvmlFailure::new(e1.kind, format!("v2: {e}; v1: {e1}"))),
            other => other,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check(rc: u32, call: &str) -> Result<(), NvmlFailure> {
    let kind = match rc {
        NVML_SUCCESS => return Ok(()),
        NVML_ERROR_NOT_SUPPORTED => FailureKind::NotSupported,
        NVML_ERROR_FUNCTION_NOT_FOUND => FailureKind::Missing,
        NVML_ERROR_NO_PERMISSION => FailureKind::NoPermission,
        NVML_ERROR_NOT_FOUND => FailureKind::NotFound,
        NVML_ERROR_GPU_IS_LOST => FailureKind::GpuLost,
        NVML_ERROR_ARGUMENT_VERSION_MISMATCH => FailureKind::VersionMismatch,
        _ => FailureKind::Other,
    };
    Err(NvmlFailure::new(kind, format!("{call} returned {rc}")))
}

/// Classifies an nvml-wrapper error.
pub(crate) fn failure(e: NvmlError) -> NvmlFailure {
    let kind = match &e {
        NvmlError::NotSupported => FailureKind::NotSupported,
        NvmlError::FunctionNotFound
        | NvmlError::FailedToLoadSymbol(_)
        | NvmlError::LibloadingError(_)
        | NvmlError::LibraryNotFound
        | NvmlError::DriverNotLoaded => FailureKind::Missing,
        NvmlError::NoPermission => FailureKind::NoPermission,
        NvmlError::GpuLost => FailureKind::GpuLost,
        NvmlError::NotFound => FailureKind::NotFound,
        _ => FailureKind::Other,
    };
    NvmlFailure::new(kind, e.to_string())
}
