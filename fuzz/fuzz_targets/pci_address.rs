//! PCI addresses (`0000:1b:00.0`, NVML's `00000000:1B:00.0`): never panics, and a parsed
//! address prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetopo::model::PciAddress;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(a) = PciAddress::parse(s) {
            assert_eq!(PciAddress::parse(&a.to_string()), Some(a));
        }
    }
});
