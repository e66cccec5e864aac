//! The LLDPDU parser (IEEE 802.1AB): an Ethernet frame, optionally 802.1Q/802.1ad tagged, with
//! ethertype 0x88cc, then type-length-value records (7-bit type, 9-bit length).
//!
//! Pure: bytes in, a typed [`LldpFrame`] or a typed [`ParseError`] out. It reads the three
//! mandatory TLVs (Chassis ID, Port ID, Time To Live, in that order, as 802.1AB requires of a
//! receiver), the optional Port Description and System Name, and stops at End of LLDPDU or at the
//! end of the bytes (802.1AB-2016 made End optional). Every other TLV is skipped by its length.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::{Serialize, Serializer};

/// The LLDP ethertype.
pub const ETHERTYPE_LLDP: u16 = 0x88cc;
/// 802.1Q customer VLAN tag.
const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad service VLAN tag (the outer tag of QinQ).
const ETHERTYPE_QINQ: u16 = 0x88a8;
/// The most VLAN tags read before the ethertype (802.1ad outer + 802.1Q inner).
const MAX_VLAN_TAGS: usize = 2;

/// The three destination addresses an LLDP agent sends to (802.1AB table 7-1): nearest bridge
/// (what a switch port sends, and what passes no bridge), nearest non-TPMR bridge, nearest
/// customer bridge.
pub const LLDP_MULTICAST: [[u8; 6]; 3] = [
    [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e],
    [0x01, 0x80, 0xc2, 0x00, 0x00, 0x03],
    [0x01, 0x80, 0xc2, 0x00, 0x00, 0x00],
];

const TLV_END: u8 = 0;
const TLV_CHASSIS_ID: u8 = 1;
const TLV_PORT_ID: u8 = 2;
const TLV_TTL: u8 = 3;
const TLV_PORT_DESCRIPTION: u8 = 4;
const TLV_SYSTEM_NAME: u8 = 5;

/// Why bytes are not an LLDPDU this parser accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes than an Ethernet header (with its VLAN tags) needs.
    #[error("frame of {len} bytes is shorter than its Ethernet header ({needed} bytes)")]
    ShortFrame {
        /// Bytes present.
        len: usize,
        /// Bytes the header needs.
        needed: usize,
    },
    /// The frame carries another protocol.
    #[error("ethertype {0:#06x} is not LLDP (0x88cc)")]
    NotLldp(u16),
    /// More VLAN tags than the parser reads.
    #[error("more than {MAX_VLAN_TAGS} VLAN tags")]
    TooManyVlanTags,
    /// A TLV header or value runs past the end of the bytes.
    #[error("TLV type {tlv_type} at offset {offset} needs {needed} bytes, {available} left")]
    Truncated {
        /// Type of the TLV (0 when not even its header fits).
        tlv_type: u8,
        /// Offset of the TLV in the LLDPDU.
        offset: usize,
        /// Bytes the TLV needs after its offset.
        needed: usize,
        /// Bytes left after its offset.
        available: usize,
    },
    /// A mandatory TLV is missing or out of place (the first three must be Chassis ID, Port ID
    /// and TTL, in that order).
    #[error("expected the {expected} TLV (type {want}) at offset {offset}, found {found}")]
    MissingMandatory {
        /// Name of the TLV expected.
        expected: &'static str,
        /// Its type.
        want: u8,
        /// Offset where it was expected.
        offset: usize,
        /// What was there: a TLV type, or the end of the LLDPDU.
        found: Found,
    },
    /// A TLV whose length is invalid for its type.
    #[error("{tlv} TLV at offset {offset} has length {len}, expected {expected}")]
    BadLength {
        /// Name of the TLV.
        tlv: &'static str,
        /// Offset of the TLV.
        offset: usize,
        /// The length it carries.
        len: usize,
        /// The lengths allowed.
        expected: &'static str,
    },
    /// A second Chassis ID, Port ID or TTL TLV.
    #[error("TLV type {tlv_type} at offset {offset} repeats a mandatory TLV")]
    RepeatedMandatory {
        /// Its type.
        tlv_type: u8,
        /// Its offset.
        offset: usize,
    },
}

/// What a parser found where it expected a mandatory TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A TLV of this type.
    Tlv(u8),
    /// The end of the LLDPDU (an End TLV or no more bytes).
    End,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Tlv(t) => write!(f, "TLV type {t}"),
            Found::End => f.write_str("the end of the LLDPDU"),
        }
    }
}

/// A 48-bit MAC address, printed `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Lower-case hex octets joined by `:` (`0a:ff`), the form lldpd and switches print.
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            f.write_str(":")?;
        }
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// The value of a Chassis ID or Port ID, decoded by its subtype.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdValue {
    /// A MAC address subtype with 6 octets.
    Mac(MacAddr),
    /// A network address subtype whose IANA address family is IPv4 (1) or IPv6 (2) with the
    /// matching length.
    Ip(IpAddr),
    /// A textual subtype (interface name, alias, locally assigned, ...) that is UTF-8 without
    /// control characters.
    Text(String),
    /// Anything else, kept as the octets (printed as `:`-joined hex).
    Bytes(Vec<u8>),
}

impl fmt::Display for IdValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdValue::Mac(m) => m.fmt(f),
            IdValue::Ip(ip) => ip.fmt(f),
            IdValue::Text(t) => f.write_str(t),
            IdValue::Bytes(b) => write_hex(f, b),
        }
    }
}

impl IdValue {
    /// Decodes `octets` of an ID whose subtype says MAC, network address, text or other.
    fn decode(kind: ValueKind, octets: &[u8]) -> Self {
        match kind {
            ValueKind::Mac => match <[u8; 6]>::try_from(octets) {
                Ok(m) => IdValue::Mac(MacAddr(m)),
                Err(_) => IdValue::Bytes(octets.to_vec()),
            },
            ValueKind::NetworkAddress => match octets {
                [1, a @ ..] if a.len() == 4 => {
                    IdValue::Ip(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])))
                }
                [2, a @ ..] if a.len() == 16 => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(a);
                    IdValue::Ip(IpAddr::V6(Ipv6Addr::from(o)))
                }
                _ => IdValue::Bytes(octets.to_vec()),
            },
            ValueKind::Text => match std::str::from_utf8(octets) {
                Ok(s) if !s.is_empty() && !s.chars().any(char::is_control) => {
                    IdValue::Text(s.to_string())
                }
                _ => IdValue::Bytes(octets.to_vec()),
            },
            ValueKind::Opaque => IdValue::Bytes(octets.to_vec()),
        }
    }
}

/// How an ID subtype's octets are read.
#[derive(Debug, Clone, Copy)]
enum ValueKind {
    Mac,
    NetworkAddress,
    Text,
    Opaque,
}

/// Chassis ID subtypes (802.1AB table 8-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChassisIdSubtype {
    /// 1: `entPhysicalAlias` of a chassis component.
    ChassisComponent,
    /// 2: `ifAlias` of an interface.
    InterfaceAlias,
    /// 3: `entPhysicalAlias` of a port or backplane component.
    PortComponent,
    /// 4: a MAC address (what most switches send).
    MacAddress,
    /// 5: a network address, its first octet the IANA address family.
    NetworkAddress,
    /// 6: `ifName` of an interface.
    InterfaceName,
    /// 7: locally assigned text.
    LocallyAssigned,
    /// 0 or 8–255: reserved.
    Reserved(u8),
}

impl ChassisIdSubtype {
    fn from_octet(o: u8) -> Self {
        match o {
            1 => Self::ChassisComponent,
            2 => Self::InterfaceAlias,
            3 => Self::PortComponent,
            4 => Self::MacAddress,
            5 => Self::NetworkAddress,
            6 => Self::InterfaceName,
            7 => Self::LocallyAssigned,
            n => Self::Reserved(n),
        }
    }

    /// The subtype's octet on the wire.
    pub fn octet(self) -> u8 {
        match self {
            Self::ChassisComponent => 1,
            Self::InterfaceAlias => 2,
            Self::PortComponent => 3,
            Self::MacAddress => 4,
            Self::NetworkAddress => 5,
            Self::InterfaceName => 6,
            Self::LocallyAssigned => 7,
            Self::Reserved(n) => n,
        }
    }

    /// A short lower-case name (`mac_address`, `reserved_9`).
    pub fn name(self) -> String {
        match self {
            Self::ChassisComponent => "chassis_component".into(),
            Self::InterfaceAlias => "interface_alias".into(),
            Self::PortComponent => "port_component".into(),
            Self::MacAddress => "mac_address".into(),
            Self::NetworkAddress => "network_address".into(),
            Self::InterfaceName => "interface_name".into(),
            Self::LocallyAssigned => "locally_assigned".into(),
            Self::Reserved(n) => format!("reserved_{n}"),
        }
    }

    fn value_kind(self) -> ValueKind {
        match self {
            Self::MacAddress => ValueKind::Mac,
            Self::NetworkAddress => ValueKind::NetworkAddress,
            Self::ChassisComponent
            | Self::InterfaceAlias
            | Self::PortComponent
            | Self::InterfaceName
            | Self::LocallyAssigned => ValueKind::Text,
            Self::Reserved(_) => ValueKind::Opaque,
        }
    }
}

/// Port ID subtypes (802.1AB table 8-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortIdSubtype {
    /// 1: `ifAlias` of the port.
    InterfaceAlias,
    /// 2: `entPhysicalAlias` of a port component.
    PortComponent,
    /// 3: the port's MAC address.
    MacAddress,
    /// 4: a network address, its first octet the IANA address family.
    NetworkAddress,
    /// 5: `ifName` of the port (`Ethernet12`, `swp12`: what most switches send).
    InterfaceName,
    /// 6: an agent circuit ID (RFC 3046).
    AgentCircuitId,
    /// 7: locally assigned text.
    LocallyAssigned,
    /// 0 or 8–255: reserved.
    Reserved(u8),
}

impl PortIdSubtype {
    fn from_octet(o: u8) -> Self {
        match o {
            1 => Self::InterfaceAlias,
            2 => Self::PortComponent,
            3 => Self::MacAddress,
            4 => Self::NetworkAddress,
            5 => Self::InterfaceName,
            6 => Self::AgentCircuitId,
            7 => Self::LocallyAssigned,
            n => Self::Reserved(n),
        }
    }

    /// The subtype's octet on the wire.
    pub fn octet(self) -> u8 {
        match self {
            Self::InterfaceAlias => 1,
            Self::PortComponent => 2,
            Self::MacAddress => 3,
            Self::NetworkAddress => 4,
            Self::InterfaceName => 5,
            Self::AgentCircuitId => 6,
            Self::LocallyAssigned => 7,
            Self::Reserved(n) => n,
        }
    }

    /// A short lower-case name (`interface_name`, `reserved_9`).
    pub fn name(self) -> String {
        match self {
            Self::InterfaceAlias => "interface_alias".into(),
            Self::PortComponent => "port_component".into(),
            Self::MacAddress => "mac_address".into(),
            Self::NetworkAddress => "network_address".into(),
            Self::InterfaceName => "interface_name".into(),
            Self::AgentCircuitId => "agent_circuit_id".into(),
            Self::LocallyAssigned => "locally_assigned".into(),
            Self::Reserved(n) => format!("reserved_{n}"),
        }
    }

    fn value_kind(self) -> ValueKind {
        match self {
            Self::MacAddress => ValueKind::Mac,
            Self::NetworkAddress => ValueKind::NetworkAddress,
            Self::InterfaceAlias
            | Self::PortComponent
            | Self::InterfaceName
            | Self::LocallyAssigned => ValueKind::Text,
            // RFC 3046 circuit IDs are opaque octets (often text; printed as text when they are).
            Self::AgentCircuitId => ValueKind::Text,
            Self::Reserved(_) => ValueKind::Opaque,
        }
    }
}

macro_rules! serialize_by_name {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.name())
            }
        }
    };
}
serialize_by_name!(ChassisIdSubtype);
serialize_by_name!(PortIdSubtype);

impl Serialize for IdValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The Chassis ID TLV: which switch sent the frame.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ChassisId {
    /// How the ID is formed.
    pub subtype: ChassisIdSubtype,
    /// The ID, decoded by its subtype: a MAC or IP address, text, or raw bytes.
    pub value: IdValue,
}

/// Prints the value alone (`02:00:5e:10:00:07`, `leaf-07`): the text to map into a label value.
impl fmt::Display for ChassisId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

/// The Port ID TLV: which port of that switch the frame left by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PortId {
    /// How the ID is formed.
    pub subtype: PortIdSubtype,
    /// The ID, decoded by its subtype: a MAC or IP address, text, or raw bytes.
    pub value: IdValue,
}

/// Prints the value alone (`swp12`, `Ethernet1/12`).
impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

/// What one LLDPDU says about the neighbour that sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LldpNeighbor {
    /// The sender's chassis.
    pub chassis_id: ChassisId,
    /// The sender's port.
    pub port_id: PortId,
    /// How long the receiver may keep this information, in seconds; 0 withdraws it (a shutdown
    /// LLDPDU).
    pub ttl_s: u16,
    /// The sender's description of its port (Port Description TLV), when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_description: Option<String>,
    /// The sending system's name (System Name TLV), when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_name: Option<String>,
}

/// An LLDP Ethernet frame: its link-layer facts and the neighbour its LLDPDU describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LldpFrame {
    /// Destination MAC (one of [`LLDP_MULTICAST`] from a conforming sender).
    pub destination: MacAddr,
    /// Source MAC: the sending port's address.
    pub source: MacAddr,
    /// VLAN IDs of the tags, outermost first (LLDP is normally untagged).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vlan_ids: Vec<u16>,
    /// What the frame's LLDPDU (its LLDP payload) says about the sender.
    pub neighbor: LldpNeighbor,
}

/// Parses an Ethernet frame carrying an LLDPDU (no frame check sequence; trailing padding is
/// ignored).
pub fn parse_frame(frame: &[u8]) -> Result<LldpFrame, ParseError> {
    let short = |needed| ParseError::ShortFrame {
        len: frame.len(),
        needed,
    };
    let mac = |at: usize| -> Result<MacAddr, ParseError> {
        frame
            .get(at..at + 6)
            .and_then(|b| <[u8; 6]>::try_from(b).ok())
            .map(MacAddr)
            .ok_or(short(14))
    };
    let destination = mac(0)?;
    let source = mac(6)?;
    let be16 = |at: usize| -> Result<u16, ParseError> {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(short(at + 2))
    };
    let mut at = 12;
    let mut ethertype = be16(at)?;
    let mut vlan_ids = Vec::new();
    while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        if vlan_ids.len() == MAX_VLAN_TAGS {
            return Err(ParseError::TooManyVlanTags);
        }
        let tci = be16(at + 2)?;
        vlan_ids.push(tci & 0x0fff);
        ethertype = be16(at + 4)?;
        at += 4;
    }
    if ethertype != ETHERTYPE_LLDP {
        return Err(ParseError::NotLldp(ethertype));
    }
    let neighbor = parse_lldpdu(&frame[at + 2..])?;
    Ok(LldpFrame {
        destination,
        source,
        vlan_ids,
        neighbor,
    })
}

/// One TLV: its type, its value, and its offset in the LLDPDU.
struct Tlv<'a> {
    tlv_type: u8,
    offset: usize,
    value: &'a [u8],
}

/// Iterates the TLVs of an LLDPDU up to End (exclusive) or the end of the bytes.
struct Tlvs<'a> {
    pdu: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Result<Tlv<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.at == self.pdu.len() {
            return None;
        }
        let offset = self.at;
        let rest = &self.pdu[offset..];
        let [hi, lo, ..] = *rest else {
            self.done = true;
            // A lone octet of type 0: the start of an End TLV cut by the frame's end (or a
            // padding octet), which ends the LLDPDU like End does.
            if rest.first().is_some_and(|b| b >> 1 == TLV_END) {
                return None;
            }
            return Some(Err(ParseError::Truncated {
                tlv_type: rest.first().map_or(0, |b| b >> 1),
                offset,
                needed: 2,
                available: rest.len(),
            }));
        };
        let tlv_type = hi >> 1;
        let len = (usize::from(hi & 1) << 8) | usize::from(lo);
        if tlv_type == TLV_END {
            self.done = true;
            return None;
        }
        let Some(value) = rest.get(2..2 + len) else {
            self.done = true;
            return Some(Err(ParseError::Truncated {
                tlv_type,
                offset,
                needed: 2 + len,
                available: rest.len(),
            }));
        };
        self.at += 2 + len;
        Some(Ok(Tlv {
            tlv_type,
            offset,
            value,
        }))
    }
}

/// Parses an LLDPDU (the bytes after the ethertype).
pub fn parse_lldpdu(pdu: &[u8]) -> Result<LldpNeighbor, ParseError> {
    let mut tlvs = Tlvs {
        pdu,
        at: 0,
        done: false,
    };
    let mut mandatory = |expected: &'static str, want: u8| -> Result<Tlv<'_>, ParseError> {
        let offset = tlvs.at;
        match tlvs.next().transpose()? {
            Some(t) if t.tlv_type == want => Ok(t),
            other => Err(ParseError::MissingMandatory {
                expected,
                want,
                offset,
                found: other.map_or(Found::End, |t| Found::Tlv(t.tlv_type)),
            }),
        }
    };
    let chassis = mandatory("Chassis ID", TLV_CHASSIS_ID)?;
    let (subtype, octets) = id_parts("Chassis ID", &chassis)?;
    let subtype = ChassisIdSubtype::from_octet(subtype);
    let chassis_id = ChassisId {
        subtype,
        value: IdValue::decode(subtype.value_kind(), octets),
    };
    let port = mandatory("Port ID", TLV_PORT_ID)?;
    let (subtype, octets) = id_parts("Port ID", &port)?;
    let subtype = PortIdSubtype::from_octet(subtype);
    let port_id = PortId {
        subtype,
        value: IdValue::decode(subtype.value_kind(), octets),
    };
    let ttl = mandatory("Time To Live", TLV_TTL)?;
    // 802.1AB-2016 8.5.4: a TTL TLV longer than 2 octets is read by its first two.
    let ttl_s = match *ttl.value {
        [a, b, ..] => u16::from_be_bytes([a, b]),
        _ => {
            return Err(ParseError::BadLength {
                tlv: "Time To Live",
                offset: ttl.offset,
                len: ttl.value.len(),
                expected: "at least 2",
            });
        }
    };
    let mut neighbor = LldpNeighbor {
        chassis_id,
        port_id,
        ttl_s,
        port_description: None,
        system_name: None,
    };
    for tlv in tlvs {
        let tlv = tlv?;
        let slot = match tlv.tlv_type {
            TLV_PORT_DESCRIPTION => &mut neighbor.port_description,
            TLV_SYSTEM_NAME => &mut neighbor.system_name,
            // A second Chassis ID, Port ID or TTL makes the LLDPDU invalid (802.1AB 9.2.7.7.1).
            TLV_CHASSIS_ID | TLV_PORT_ID | TLV_TTL => {
                return Err(ParseError::RepeatedMandatory {
                    tlv_type: tlv.tlv_type,
                    offset: tlv.offset,
                });
            }
            _ => continue,
        };
        // The first of a repeated optional TLV wins; an empty one says nothing.
        if slot.is_none() {
            *slot = display_string(tlv.value);
        }
    }
    Ok(neighbor)
}

/// The subtype octet and the ID octets (1 to 255 of them) of a Chassis or Port ID TLV.
fn id_parts<'a>(name: &'static str, tlv: &Tlv<'a>) -> Result<(u8, &'a [u8]), ParseError> {
    match tlv.value {
        [subtype, id @ ..] if !id.is_empty() && id.len() <= 255 => Ok((*subtype, id)),
        _ => Err(ParseError::BadLength {
            tlv: name,
            offset: tlv.offset,
            len: tlv.value.len(),
            expected: "2 to 256",
        }),
    }
}

/// A DisplayString TLV as text: invalid UTF-8 replaced, trailing NULs and blanks trimmed, `None`
/// when nothing is left.
fn display_string(octets: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(octets);
    let s = s.trim_end_matches(['\0', ' ', '\t', '\r', '\n']);
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests;
