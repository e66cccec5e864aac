//! The benchmark floor: `nvmlInit` plus the same NVML calls `nodetopo probe` makes by default,
//! and nothing else (no CLI, no model, no serialization). See BENCHMARKS.md.

use std::{mem, process::ExitCode};

use nvml_wrapper::{Nvml, enum_wrappers::device::P2pCapabilitiesIndex};
use nvml_wrapper_sys::bindings::{NVML_NVLINK_MAX_LINKS, nvmlGpuFabricInfo_v3_t};

fn main() -> ExitCode {
    let mut builder = Nvml::builder();
    builder.lib_path(std::ffi::OsStr::new("libnvidia-ml.so.1"));
    let Ok(nvml) = builder.init() else {
        eprintln!("NVML not available");
        return ExitCode::FAILURE;
    };
    let mut answers = 0usize;
    let mut count_ok = |ok: bool| answers += usize::from(ok);
    count_ok(nvml.sys_driver_version().is_ok());
    count_ok(nvml.sys_nvml_version().is_ok());
    count_ok(nvml.sys_cuda_driver_version().is_ok());
    let n = nvml.device_count().unwrap_or(0);
    let mut all_switch = vec![false; n as usize];
    for i in 0..n {
        let Ok(d) = nvml.device_by_index(i) else {
            continue;
        };
        count_ok(d.name().is_ok());
        count_ok(d.uuid().is_ok());
        count_ok(d.serial().is_ok());
        count_ok(d.pci_info().is_ok());
        count_ok(d.memory_info().is_ok());
        count_ok(d.cuda_compute_capability().is_ok());
        count_ok(d.numa_node_id().is_ok());
        count_ok(d.mig_mode().is_ok());
        count_ok(d.cpu_affinity(16).is_ok());
        let mut active = 0;
        let mut to_switch = 0;
        for l in 0..NVML_NVLINK_MAX_LINKS {
            let link = d.link_wrapper_for(l);
            match link.is_active() {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => break,
            }
            active += 1;
            count_ok(link.version().is_ok());
            count_ok(link.remote_pci_info().is_ok());
            if let Ok(sym) = nvml.lib().nvmlDeviceGetNvLinkRemoteDeviceType.as_ref() {
                let mut t = 255;
                // SAFETY: live handle, valid out pointer.
                let rc = unsafe { sym(d.handle(), l, &mut t) };
                if rc == 0 && t == 2 {
                    to_switch += 1;
                }
            }
        }
        all_switch[i as usize] = active > 0 && active == to_switch;
        if let Ok(sym) = nvml.lib().nvmlDeviceGetGpuFabricInfoV.as_ref() {
            // SAFETY: all-zero is a valid value of this plain C struct.
            let mut info: nvmlGpuFabricInfo_v3_t = unsafe { mem::zeroed() };
            info.version = mem::size_of::<nvmlGpuFabricInfo_v3_t>() as u32 | (3 << 24);
            // SAFETY: live handle; the struct matches the version it names.
            count_ok(unsafe { sym(d.handle(), &mut info) } == 0);
        }
    }
    for a in 0..n {
        for b in 0..n {
            if a == b {
                continue;
            }
            let (Ok(da), Ok(db)) = (nvml.device_by_index(a), nvml.device_by_index(b)) else {
                continue;
            };
            if !(all_switch[a as usize] && all_switch[b as usize]) {
                count_ok(da.p2p_status(&db, P2pCapabilitiesIndex::NvLink).is_ok());
            }
            count_ok(da.topology_common_ancestor(db).is_ok());
        }
    }
    println!("{answers}");
    ExitCode::SUCCESS
}
