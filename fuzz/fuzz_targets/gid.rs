//! GIDs (`fe80:0000:…`): never panics, and a parsed GID prints back to what it parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetopo::probe::rdma::sysfs::GidValue;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(g) = GidValue::parse(s) {
            assert_eq!(GidValue::parse(&g.text()), Some(g));
            let _ = (g.prefix(), g.interface_id(), g.is_zero(), g.is_ipv4_mapped());
        }
    }
});
