//! LLDPDUs captured from a real lldpd (1.0.16), shared by the parser's and the cache's tests.

/// Chassis ID from the MAC of `swp12` (02:00:5e:10:00:07), port ID subtype ifname, system name
/// `leaf-07`, port description `rail-3 gpu-node-a`, TTL 4 (tx-interval 1).
pub const MAC_IFNAME: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/lldp/lldpd-mac-ifname.bin"
));
/// The same lldpd after `configure system chassisid leaf-07.pod2` and `configure ports swp12
/// lldp portidsubtype local Ethernet1/12`.
pub const LOCAL: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/lldp/lldpd-local.bin"
));
/// The shutdown LLDPDU it sent when stopped (TTL 0, mandatory TLVs only).
pub const SHUTDOWN: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/lldp/lldpd-shutdown.bin"
));
