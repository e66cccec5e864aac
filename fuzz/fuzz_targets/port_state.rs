//! The port attributes: `state` (`4: ACTIVE`), `phys_state` (`5: LinkUp`), `link_layer` and `lid`
//! (`0x1b`). None panics; a parsed physical state's name is plain text, and a parsed LID is
//! hexadecimal text of at most 8 digits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetopo::probe::rdma::sysfs::{parse_link_layer, parse_lid, parse_phys_state, parse_port_state};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if parse_port_state(s).is_some() {
            assert!(s.contains(':'));
        }
        if parse_phys_state(s).is_some() {
            assert!(s.contains(':'));
        }
        let _ = parse_link_layer(s);
        if let Some(lid) = parse_lid(s) {
            assert_eq!(parse_lid(&format!("0x{lid:x}")), Some(lid));
        }
    }
});
