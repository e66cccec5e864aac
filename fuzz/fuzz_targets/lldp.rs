//! LLDP frames as a raw AF_PACKET socket hands them over: Ethernet header (VLAN tags included),
//! then the LLDPDU. Never panics; a parsed frame's IDs print as non-empty text, a MAC-address
//! chassis prints as `aa:bb:cc:dd:ee:ff`, and the LLDPDU alone parses to the same neighbour; the
//! cache reports the frame as current before its TTL runs out and expired at it.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use nodetopo::probe::lldp::{IdValue, LldpCache, parse_frame, parse_lldpdu};

fuzz_target!(|data: &[u8]| {
    let _ = parse_lldpdu(data);
    let Ok(frame) = parse_frame(data) else { return };
    let n = &frame.neighbor;
    let chassis = n.chassis_id.to_string();
    assert!(!chassis.is_empty());
    assert!(!n.port_id.to_string().is_empty());
    if let IdValue::Mac(_) = n.chassis_id.value {
        assert_eq!(chassis.len(), 17);
    }
    let header = 14 + 4 * frame.vlan_ids.len();
    assert_eq!(parse_lldpdu(&data[header..]).as_ref(), Ok(n));

    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let ttl = Duration::from_secs(u64::from(n.ttl_s));
    let mut cache = LldpCache::new();
    cache.record_frame("eth0", frame.clone(), t0);
    if n.ttl_s > 0 {
        assert_eq!(cache.status("eth0", t0 + ttl - Duration::from_millis(1)).name(), "current");
    }
    assert_eq!(cache.status("eth0", t0 + ttl).name(), "expired");
});
