//! `local_cpulist` (`0-3,8`): never panics, and the result is sorted without duplicates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetopo::probe::pci::parse_cpulist;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(v) = parse_cpulist(s) {
            assert!(v.windows(2).all(|w| w[0] < w[1]));
        }
    }
});
