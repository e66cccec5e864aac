//! Port rate strings (`400 Gb/sec (4X NDR)`): never panics, and a parsed rate is finite and
//! not negative.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetopo::probe::rdma::sysfs::parse_rate_gbps;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(v) = parse_rate_gbps(s) {
            assert!(v.is_finite() && v >= 0.0);
        }
    }
});
