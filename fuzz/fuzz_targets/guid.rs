//! GUIDs (`0c42:a103:0065:4d2e`): never panics, and parsing is idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetopo::probe::rdma::sysfs::{parse_guid, parse_lid};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(g) = parse_guid(s) {
            assert_eq!(parse_guid(&g).as_deref(), Some(g.as_str()));
        }
        let _ = parse_lid(s);
    }
});
