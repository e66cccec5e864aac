//! `node_type` (`1: CA`): never panics, and a parsed type comes only from a number and a name
//! that agree (the text has a colon).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetopo::probe::rdma::sysfs::parse_node_type;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if parse_node_type(s).is_some() {
            assert!(s.contains(':'));
        }
    }
});
