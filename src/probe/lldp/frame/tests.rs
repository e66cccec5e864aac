//! Parser tests over frames a real lldpd sent (tests/fixtures/lldp, captured on a veth pair
//! between two network namespaces) and hand-built TLVs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

use crate::probe::lldp::captured::{LOCAL, MAC_IFNAME, SHUTDOWN};

const SWITCH_MAC: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x10, 0x00, 0x07]);

#[test]
fn lldpd_frame_with_mac_chassis_and_ifname_port() {
    let f = parse_frame(MAC_IFNAME).unwrap();
    assert_eq!(f.destination, MacAddr(LLDP_MULTICAST[0]));
    assert_eq!(f.source, SWITCH_MAC);
    assert!(f.vlan_ids.is_empty());
    let n = f.neighbor;
    assert_eq!(
        n.chassis_id,
        ChassisId {
            subtype: ChassisIdSubtype::MacAddress,
            value: IdValue::Mac(SWITCH_MAC)
        }
    );
    assert_eq!(n.chassis_id.to_string(), "02:00:5e:10:00:07");
    assert_eq!(
        n.port_id,
        PortId {
            subtype: PortIdSubtype::InterfaceName,
            value: IdValue::Text("swp12".into())
        }
    );
    assert_eq!(n.port_id.to_string(), "swp12");
    assert_eq!(n.ttl_s, 4);
    assert_eq!(n.system_name.as_deref(), Some("leaf-07"));
    assert_eq!(n.port_description.as_deref(), Some("rail-3 gpu-node-a"));
}

#[test]
fn lldpd_frame_with_locally_assigned_ids() {
    let n = parse_frame(LOCAL).unwrap().neighbor;
    assert_eq!(n.chassis_id.subtype, ChassisIdSubtype::LocallyAssigned);
    assert_eq!(n.chassis_id.to_string(), "leaf-07.pod2");
    assert_eq!(n.port_id.subtype, PortIdSubtype::LocallyAssigned);
    assert_eq!(n.port_id.to_string(), "Ethernet1/12");
    assert_eq!(n.port_description.as_deref(), Some("swp12"));
}

#[test]
fn lldpd_shutdown_frame() {
    let n = parse_frame(SHUTDOWN).unwrap().neighbor;
    assert_eq!(n.ttl_s, 0);
    assert_eq!(n.chassis_id.to_string(), "leaf-07.pod2");
    assert_eq!(n.system_name, None);
    assert_eq!(n.port_description, None);
}

/// `frame` with 802.1Q tags (TPID, VID) inserted after the source MAC.
fn tagged(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    for (tpid, vid) in tags {
        v.extend_from_slice(&tpid.to_be_bytes());
        // PCP 5 in the top bits, which must not leak into the VLAN ID.
        v.extend_from_slice(&((5 << 13) | vid).to_be_bytes());
    }
    v.extend_from_slice(&frame[12..]);
    v
}

#[test]
fn vlan_tags_are_read_and_skipped() {
    let plain = parse_frame(MAC_IFNAME).unwrap();
    let one = parse_frame(&tagged(MAC_IFNAME, &[(0x8100, 100)])).unwrap();
    assert_eq!(one.vlan_ids, [100]);
    assert_eq!(one.neighbor, plain.neighbor);
    let two = parse_frame(&tagged(MAC_IFNAME, &[(0x88a8, 10), (0x8100, 4094)])).unwrap();
    assert_eq!(two.vlan_ids, [10, 4094]);
    assert_eq!(two.neighbor, plain.neighbor);
    assert_eq!(
        parse_frame(&tagged(
            MAC_IFNAME,
            &[(0x88a8, 1), (0x8100, 2), (0x8100, 3)]
        )),
        Err(ParseError::TooManyVlanTags)
    );
    // A tag cut short.
    assert!(matches!(
        parse_frame(&tagged(MAC_IFNAME, &[(0x8100, 100)])[..15]),
        Err(ParseError::ShortFrame { len: 15, .. })
    ));
}

#[test]
fn other_ethertypes_are_refused() {
    let mut ipv4 = MAC_IFNAME.to_vec();
    ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(parse_frame(&ipv4), Err(ParseError::NotLldp(0x0800)));
    assert_eq!(
        parse_frame(&tagged(&ipv4, &[(0x8100, 7)])),
        Err(ParseError::NotLldp(0x0800))
    );
}

/// Offsets in the LLDPDU of `frame` (after the 14-byte header) where each TLV starts, and the
/// offset of its End TLV.
fn tlv_starts(pdu: &[u8]) -> (Vec<usize>, usize) {
    let mut at = 0;
    let mut starts = vec![];
    loop {
        let t = pdu[at] >> 1;
        let len = (usize::from(pdu[at] & 1) << 8) | usize::from(pdu[at + 1]);
        if t == 0 {
            return (starts, at);
        }
        starts.push(at);
        at += 2 + len;
    }
}

#[test]
fn every_truncation_of_a_real_frame_is_an_error_or_a_complete_prefix() {
    let full = parse_frame(MAC_IFNAME).unwrap();
    let pdu = &MAC_IFNAME[14..];
    let (starts, end) = tlv_starts(pdu);
    // The first TLV after Chassis ID, Port ID and TTL.
    let after_ttl = starts[3];
    for cut in 0..=MAC_IFNAME.len() {
        let r = parse_frame(&MAC_IFNAME[..cut]);
        if cut < 14 {
            assert!(
                matches!(r, Err(ParseError::ShortFrame { .. })),
                "{cut}: {r:?}"
            );
            continue;
        }
        let p = cut - 14;
        let at_boundary = starts.contains(&p) || p >= end;
        if p < after_ttl {
            assert!(
                r.is_err(),
                "cut at {p} inside the mandatory TLVs parsed: {r:?}"
            );
        } else if at_boundary {
            // A prefix ending on a TLV boundary is a valid LLDPDU without End.
            let n = r.unwrap_or_else(|e| panic!("cut at {p}: {e}")).neighbor;
            assert_eq!(n.chassis_id, full.neighbor.chassis_id);
            assert_eq!(n.port_id, full.neighbor.port_id);
            assert_eq!(n.ttl_s, 4);
        } else {
            assert!(
                matches!(r, Err(ParseError::Truncated { .. })),
                "cut at {p}: {r:?}"
            );
        }
    }
}

/// A TLV's bytes.
fn tlv(t: u8, value: &[u8]) -> Vec<u8> {
    let len = value.len();
    assert!(len < 512);
    let mut v = vec![
        (t << 1) | u8::try_from(len >> 8).unwrap(),
        (len & 0xff) as u8,
    ];
    v.extend_from_slice(value);
    v
}

fn pdu(tlvs: &[Vec<u8>]) -> Vec<u8> {
    tlvs.concat()
}

fn chassis_mac() -> Vec<u8> {
    tlv(1, &[4, 0x02, 0, 0x5e, 0x10, 0, 0x07])
}

fn port_name(name: &str) -> Vec<u8> {
    let mut v = vec![5];
    v.extend_from_slice(name.as_bytes());
    tlv(2, &v)
}

fn ttl(s: u16) -> Vec<u8> {
    tlv(3, &s.to_be_bytes())
}

#[test]
fn mandatory_tlvs_must_come_first_in_order() {
    let r = parse_lldpdu(&pdu(&[port_name("swp1"), chassis_mac(), ttl(120)]));
    assert_eq!(
        r,
        Err(ParseError::MissingMandatory {
            expected: "Chassis ID",
            want: 1,
            offset: 0,
            found: Found::Tlv(2)
        })
    );
    let r = parse_lldpdu(&pdu(&[chassis_mac(), ttl(120)]));
    assert!(matches!(
        r,
        Err(ParseError::MissingMandatory {
            expected: "Port ID",
            found: Found::Tlv(3),
            offset: 9,
            ..
        })
    ));
    let r = parse_lldpdu(&pdu(&[chassis_mac(), port_name("swp1"), tlv(0, &[])]));
    assert!(matches!(
        r,
        Err(ParseError::MissingMandatory {
            expected: "Time To Live",
            found: Found::End,
            ..
        })
    ));
    assert!(matches!(
        parse_lldpdu(&[]),
        Err(ParseError::MissingMandatory {
            found: Found::End,
            ..
        })
    ));
    let r = parse_lldpdu(&pdu(&[
        chassis_mac(),
        port_name("a"),
        ttl(1),
        chassis_mac(),
    ]));
    assert_eq!(
        r,
        Err(ParseError::RepeatedMandatory {
            tlv_type: 1,
            offset: 17
        })
    );
}

#[test]
fn bad_lengths_are_refused() {
    // Subtype without an ID.
    let r = parse_lldpdu(&pdu(&[tlv(1, &[4]), port_name("a"), ttl(1)]));
    assert!(matches!(
        r,
        Err(ParseError::BadLength {
            tlv: "Chassis ID",
            len: 1,
            ..
        })
    ));
    let r = parse_lldpdu(&pdu(&[chassis_mac(), tlv(2, &[]), ttl(1)]));
    assert!(matches!(
        r,
        Err(ParseError::BadLength {
            tlv: "Port ID",
            len: 0,
            ..
        })
    ));
    // 256 octets of ID is one too many.
    let mut long = vec![7];
    long.extend_from_slice(&[b'x'; 256]);
    let r = parse_lldpdu(&pdu(&[chassis_mac(), tlv(2, &long), ttl(1)]));
    assert!(matches!(
        r,
        Err(ParseError::BadLength {
            tlv: "Port ID",
            len: 257,
            ..
        })
    ));
    long.pop();
    let n = parse_lldpdu(&pdu(&[chassis_mac(), tlv(2, &long), ttl(1)])).unwrap();
    assert_eq!(n.port_id.to_string().len(), 255);
    let r = parse_lldpdu(&pdu(&[chassis_mac(), port_name("a"), tlv(3, &[9])]));
    assert!(matches!(
        r,
        Err(ParseError::BadLength {
            tlv: "Time To Live",
            len: 1,
            ..
        })
    ));
    // A longer TTL is read by its first two octets.
    let n = parse_lldpdu(&pdu(&[chassis_mac(), port_name("a"), tlv(3, &[0, 120, 9])])).unwrap();
    assert_eq!(n.ttl_s, 120);
}

#[test]
fn nine_bit_lengths_and_unknown_tlvs() {
    // An organisationally specific TLV of 300 octets (the 9th length bit set), then a name.
    let mut org = vec![0x00, 0x12, 0x0f, 0x01];
    org.resize(300, 0xab);
    let n = parse_lldpdu(&pdu(&[
        chassis_mac(),
        port_name("Ethernet12"),
        ttl(120),
        tlv(127, &org),
        tlv(5, b"leaf-9"),
        tlv(0, &[]),
        // Padding after End is ignored.
        vec![0; 20],
    ]))
    .unwrap();
    assert_eq!(n.system_name.as_deref(), Some("leaf-9"));
    assert_eq!(n.ttl_s, 120);
    // Its length cut by one octet: truncated, and the error names it.
    let mut bytes = pdu(&[chassis_mac(), port_name("e"), ttl(1), tlv(127, &org)]);
    bytes.pop();
    assert!(matches!(
        parse_lldpdu(&bytes),
        Err(ParseError::Truncated {
            tlv_type: 127,
            needed: 302,
            available: 301,
            ..
        })
    ));
    // One stray octet where a TLV header should be.
    let mut bytes = pdu(&[chassis_mac(), port_name("e"), ttl(1)]);
    bytes.push(0x0a);
    assert!(matches!(
        parse_lldpdu(&bytes),
        Err(ParseError::Truncated {
            tlv_type: 5,
            needed: 2,
            available: 1,
            ..
        })
    ));
}

#[test]
fn optional_strings_first_wins_trimmed_and_empty_is_none() {
    let n = parse_lldpdu(&pdu(&[
        chassis_mac(),
        port_name("swp3"),
        ttl(120),
        tlv(4, b"uplink to gpu-7\0\0"),
        tlv(5, b""),
        tlv(5, b"leaf-3"),
        tlv(4, b"second"),
    ]))
    .unwrap();
    assert_eq!(n.port_description.as_deref(), Some("uplink to gpu-7"));
    assert_eq!(n.system_name.as_deref(), Some("leaf-3"));
    let n = parse_lldpdu(&pdu(&[
        chassis_mac(),
        port_name("p"),
        ttl(1),
        tlv(5, b"l\xffeaf"),
    ]))
    .unwrap();
    assert_eq!(n.system_name.as_deref(), Some("l\u{fffd}eaf"));
}

#[test]
fn id_values_by_subtype() {
    let chassis = |sub: u8, id: &[u8]| {
        let mut v = vec![sub];
        v.extend_from_slice(id);
        parse_lldpdu(&pdu(&[tlv(1, &v), port_name("p"), ttl(1)]))
            .unwrap()
            .chassis_id
    };
    let port = |sub: u8, id: &[u8]| {
        let mut v = vec![sub];
        v.extend_from_slice(id);
        parse_lldpdu(&pdu(&[chassis_mac(), tlv(2, &v), ttl(1)]))
            .unwrap()
            .port_id
    };
    let c = chassis(5, &[1, 10, 0, 3, 7]);
    assert_eq!(c.subtype, ChassisIdSubtype::NetworkAddress);
    assert_eq!(c.value, IdValue::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 3, 7))));
    assert_eq!(c.to_string(), "10.0.3.7");
    let mut v6 = vec![2];
    v6.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x12).octets());
    assert_eq!(chassis(5, &v6).to_string(), "fd00::12");
    // An address family other than IPv4/IPv6, or a wrong length: the octets.
    assert_eq!(chassis(5, &[6, 0xaa, 0xbb]).to_string(), "06:aa:bb");
    assert_eq!(chassis(5, &[1, 10, 0, 3]).to_string(), "01:0a:00:03");
    // A MAC of the wrong length.
    assert_eq!(chassis(4, &[1, 2, 3]).value, IdValue::Bytes(vec![1, 2, 3]));
    assert_eq!(chassis(6, b"eth0").subtype, ChassisIdSubtype::InterfaceName);
    assert_eq!(
        chassis(1, b"chassis-1").subtype,
        ChassisIdSubtype::ChassisComponent
    );
    // Text with a control character, or not UTF-8: the octets.
    assert_eq!(chassis(7, b"a\nb").to_string(), "61:0a:62");
    assert_eq!(chassis(7, &[0xff, 0xfe]).to_string(), "ff:fe");
    let r = chassis(0, b"x");
    assert_eq!(r.subtype, ChassisIdSubtype::Reserved(0));
    assert_eq!(r.subtype.name(), "reserved_0");
    assert_eq!(r.to_string(), "78");
    assert_eq!(chassis(200, b"x").subtype.octet(), 200);

    let p = port(3, &[0xb8, 0x3f, 0xd2, 0, 0, 1]);
    assert_eq!(p.subtype, PortIdSubtype::MacAddress);
    assert_eq!(p.to_string(), "b8:3f:d2:00:00:01");
    assert_eq!(port(1, b"uplink").subtype, PortIdSubtype::InterfaceAlias);
    assert_eq!(port(6, b"circuit-9").to_string(), "circuit-9");
    assert_eq!(port(6, &[0, 1]).to_string(), "00:01");
    assert_eq!(port(4, &[1, 192, 168, 0, 1]).to_string(), "192.168.0.1");
    assert_eq!(port(8, b"z").subtype, PortIdSubtype::Reserved(8));
}

#[test]
fn subtype_octets_round_trip() {
    for o in 0..=255u8 {
        assert_eq!(ChassisIdSubtype::from_octet(o).octet(), o);
        assert_eq!(PortIdSubtype::from_octet(o).octet(), o);
    }
}

#[test]
fn error_messages_say_what_and_where() {
    let e = parse_lldpdu(&pdu(&[chassis_mac(), port_name("p")])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "expected the Time To Live TLV (type 3) at offset 13, found the end of the LLDPDU"
    );
    assert_eq!(
        ParseError::NotLldp(0x86dd).to_string(),
        "ethertype 0x86dd is not LLDP (0x88cc)"
    );
}

/// Encodes an ID TLV value from a subtype octet and an ID.
fn encode(tlvs: &[(u8, Vec<u8>)]) -> Vec<u8> {
    tlvs.iter().flat_map(|(t, v)| tlv(*t, v)).collect()
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_frame(&bytes);
        let _ = parse_lldpdu(&bytes);
    }

    #[test]
    fn arbitrary_tlvs_after_a_real_header_never_panic(
        tail in proptest::collection::vec((0u8..128, proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
    ) {
        let mut bytes = MAC_IFNAME[..14].to_vec();
        bytes.extend(encode(&tail));
        let _ = parse_frame(&bytes);
    }

    #[test]
    fn encoded_neighbors_parse_back(
        chassis_sub in 1u8..=7,
        chassis in proptest::collection::vec(any::<u8>(), 1..=255),
        port_sub in 1u8..=7,
        port in "[A-Za-z0-9/._-]{1,64}",
        ttl_s in any::<u16>(),
        name in proptest::option::of("[a-z0-9.-]{1,32}"),
        descr in proptest::option::of("[ -~]{0,80}"),
        extra in proptest::collection::vec((6u8..128, proptest::collection::vec(any::<u8>(), 0..300)), 0..4),
    ) {
        let mut c = vec![chassis_sub];
        c.extend_from_slice(&chassis);
        let mut p = vec![port_sub];
        p.extend_from_slice(port.as_bytes());
        let mut tlvs = vec![(1, c), (2, p), (3, ttl_s.to_be_bytes().to_vec())];
        tlvs.extend(extra);
        if let Some(n) = &name {
            tlvs.push((5, n.clone().into_bytes()));
        }
        if let Some(d) = &descr {
            tlvs.push((4, d.clone().into_bytes()));
        }
        let mut bytes = encode(&tlvs);
        bytes.extend(tlv(0, &[]));
        let n = parse_lldpdu(&bytes).unwrap();
        prop_assert_eq!(n.chassis_id.subtype.octet(), chassis_sub);
        prop_assert_eq!(n.port_id.subtype.octet(), port_sub);
        prop_assert_eq!(n.ttl_s, ttl_s);
        // Port IDs of printable text print back as themselves (MAC and network-address
        // subtypes excepted, whose octets are decoded).
        if !matches!(port_sub, 3 | 4) {
            prop_assert_eq!(n.port_id.to_string(), port);
        }
        prop_assert_eq!(n.system_name, name);
        prop_assert_eq!(n.port_description, descr.map(|d| d.trim_end().to_string()).filter(|d| !d.is_empty()));
        // The chassis ID's text form is never empty and, for opaque octets, is their hex form.
        let text = n.chassis_id.to_string();
        prop_assert!(!text.is_empty());
        if let IdValue::Bytes(b) = &n.chassis_id.value {
            prop_assert_eq!(b, &chassis);
            prop_assert_eq!(text.len(), chassis.len() * 3 - 1);
        }
    }
}
