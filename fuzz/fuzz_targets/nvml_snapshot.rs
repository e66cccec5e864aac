//! The NVML snapshot reader: any text either fails to parse with an error, or loads as a
//! snapshot that the GPU prober then probes without panicking (every NVML answer the snapshot
//! can hold, including transitional fabric states, reaches the prober this way).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetopo::probe::{
    nvml::{
        prober::{GpuProber, ProbeOptions},
        snapshot::NvmlSnapshot,
    },
    sysfs::SysfsRoot,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(snap) = NvmlSnapshot::parse(text, "fuzz") else {
        return;
    };
    let _ = snap.uuid_index();
    for query_all_p2p in [false, true] {
        let mut prober = GpuProber::new(Box::new(snap.clone()), ProbeOptions { query_all_p2p });
        let r = prober.probe(&SysfsRoot::new("/nonexistent-sysfs"));
        assert!(r.gpus.len() <= snap.devices.len().max(1024));
    }
});
