//! Directed-route SubnetManagement packets (SMPs): building a `Get` and decoding its reply,
//! NodeInfo and PortInfo. Pure byte work over the 256-byte MAD, by the InfiniBand
//! Architecture Specification's layout (volume 1, 14.2.1.2 and 14.2.5); no I/O.
//!
//! Multi-byte fields are big-endian on the wire.

use thiserror::Error;

use crate::model::{NodeType, PortState};

/// Size in bytes of a MAD (management datagram), the packet an SMP travels in.
pub const MAD_SIZE: usize = 256;
/// The directed-route SubnetManagement class.
pub const CLASS_SM_DIRECTED_ROUTE: u8 = 0x81;
/// `SubnGet()`.
pub const METHOD_GET: u8 = 0x01;
/// `SubnGetResp()`.
pub const METHOD_GET_RESP: u8 = 0x81;
/// The most hops a directed route may have.
pub const MAX_HOPS: usize = 63;
/// The permissive LID, used as DrSLID and DrDLID of a purely directed route.
pub const PERMISSIVE_LID: u16 = 0xffff;

/// Offset of the SMP data (64 bytes) in a directed-route SMP.
const DATA: usize = 64;
/// Offset of the initial path (64 bytes).
const INITIAL_PATH: usize = 128;
/// Length of the SMP data.
pub const DATA_SIZE: usize = 64;

/// The attributes this module asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    /// NodeInfo (0x0011).
    NodeInfo,
    /// PortInfo (0x0015); the attribute modifier is the port number.
    PortInfo,
}

impl Attribute {
    /// The attribute ID.
    pub fn id(self) -> u16 {
        match self {
            Self::NodeInfo => 0x0011,
            Self::PortInfo => 0x0015,
        }
    }
}

/// A reply that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MadError {
    /// The path is empty or too long.
    #[error("a directed route has 1 to 64 path entries, not {0}")]
    Path(usize),
    /// Fewer bytes than a MAD.
    #[error("short MAD: {0} bytes")]
    Short(usize),
    /// Not a directed-route SMP reply to a Get.
    #[error("not a directed-route GetResp: class {class:#04x}, method {method:#04x}")]
    NotReply {
        /// Management class of the reply (a directed-route SMP reply has 0x81).
        class: u8,
        /// Method of the reply (a reply to a Get has 0x81, `SubnGetResp()`).
        method: u8,
    },
    /// The reply is for another attribute.
    #[error("reply for attribute {got:#06x}, asked for {want:#06x}")]
    Attribute {
        /// The attribute ID in the reply.
        got: u16,
        /// The attribute ID that was asked for.
        want: u16,
    },
    /// The responder set a status (e.g. 0x001c: unsupported attribute or modifier).
    #[error("MAD status {0:#06x}")]
    Status(u16),
}

/// Builds a directed-route `SubnGet(attribute)` along `path` (`[0, p]` reaches the neighbour on
/// local port `p`, `[0, p, q]` goes one hop further out of its port `q`).
pub fn encode_get(
    path: &[u8],
    attribute: Attribute,
    modifier: u32,
    tid: u64,
) -> Result<[u8; MAD_SIZE], MadError> {
    if path.is_empty() || path.len() > MAX_HOPS + 1 {
        return Err(MadError::Path(path.len()));
    }
    let mut m = [0u8; MAD_SIZE];
    m[0] = 1; // BaseVersion
    m[1] = CLASS_SM_DIRECTED_ROUTE;
    m[2] = 1; // ClassVersion
    m[3] = METHOD_GET;
    // Status and D bit (4..6) zero: outbound. HopPointer 0, HopCount = hops.
    m[6] = 0;
    m[7] = (path.len() - 1) as u8;
    m[8..16].copy_from_slice(&tid.to_be_bytes());
    m[16..18].copy_from_slice(&attribute.id().to_be_bytes());
    m[20..24].copy_from_slice(&modifier.to_be_bytes());
    // M_Key (24..32) zero. DrSLID, DrDLID permissive.
    m[32..34].copy_from_slice(&PERMISSIVE_LID.to_be_bytes());
    m[34..36].copy_from_slice(&PERMISSIVE_LID.to_be_bytes());
    m[INITIAL_PATH..INITIAL_PATH + path.len()].copy_from_slice(path);
    Ok(m)
}

/// The transaction ID of a MAD, when it is long enough.
pub fn tid(mad: &[u8]) -> Option<u64> {
    mad.get(8..16)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// Checks a reply to a Get of `attribute` and returns its SMP data.
pub fn decode_reply(mad: &[u8], attribute: Attribute) -> Result<[u8; DATA_SIZE], MadError> {
    if mad.len() < MAD_SIZE {
        return Err(MadError::Short(mad.len()));
    }
    let (class, method) = (mad[1], mad[3]);
    if class != CLASS_SM_DIRECTED_ROUTE || method != METHOD_GET_RESP {
        return Err(MadError::NotReply { class, method });
    }
    // Bit 15 of the status word is the D (direction) bit of a directed-route SMP.
    let status = u16::from_be_bytes([mad[4], mad[5]]) & 0x7fff;
    if status != 0 {
        return Err(MadError::Status(status));
    }
    let got = u16::from_be_bytes([mad[16], mad[17]]);
    if got != attribute.id() {
        return Err(MadError::Attribute {
            got,
            want: attribute.id(),
        });
    }
    let mut data = [0u8; DATA_SIZE];
    data.copy_from_slice(&mad[DATA..DATA + DATA_SIZE]);
    Ok(data)
}

/// The fields of NodeInfo used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    /// What the node is: channel adapter, switch or router.
    pub node_type: NodeType,
    /// Number of physical ports.
    pub num_ports: u8,
    /// System image GUID: a 64-bit id the nodes of one system share.
    pub system_image_guid: u64,
    /// Node GUID: the node's own 64-bit id (a leaf switch's becomes its `leaf_id`).
    pub node_guid: u64,
    /// Port GUID of the port the SMP arrived on (switches: port 0's).
    pub port_guid: u64,
    /// The port the SMP entered this node on.
    pub local_port: u8,
}

fn be64(d: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(d[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes NodeInfo from SMP data.
pub fn node_info(d: &[u8; DATA_SIZE]) -> NodeInfo {
    NodeInfo {
        node_type: NodeType::from_code(d[2]),
        num_ports: d[3],
        system_image_guid: be64(d, 4),
        node_guid: be64(d, 12),
        port_guid: be64(d, 20),
        local_port: d[36],
    }
}

/// The fields of PortInfo used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortInfo {
    /// GID prefix (the subnet prefix).
    pub gid_prefix: u64,
    /// The port's LID, the address the subnet manager assigned; 0 when it has none.
    pub lid: u16,
    /// The master SM's LID; 0 when no SM has configured the port.
    pub sm_lid: u16,
    /// The port this PortInfo describes.
    pub local_port: u8,
    /// Logical port state, from DOWN to ACTIVE.
    pub state: PortState,
    /// Physical state (5 = LinkUp).
    pub phys_state: u8,
}

/// Decodes PortInfo from SMP data.
pub fn port_info(d: &[u8; DATA_SIZE]) -> PortInfo {
    PortInfo {
        gid_prefix: be64(d, 8),
        lid: u16::from_be_bytes([d[16], d[17]]),
        sm_lid: u16::from_be_bytes([d[18], d[19]]),
        local_port: d[28],
        state: PortState::from_iba(d[32] & 0x0f),
        phys_state: d[33] >> 4,
    }
}

/// A GUID as nodetopo writes it: `0x` and 16 lowercase hex digits.
pub fn guid_text(g: u64) -> String {
    format!("0x{g:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as a switch's SMA would build it from `req`.
    fn reply(req: &[u8; MAD_SIZE], data: &[u8]) -> [u8; MAD_SIZE] {
        let mut r = *req;
        r[3] = METHOD_GET_RESP;
        r[4] = 0x80; // D bit: inbound
        r[DATA..DATA + data.len()].copy_from_slice(data);
        r
    }

    #[test]
    fn get_layout() {
        let m = encode_get(&[0, 3, 17], Attribute::PortInfo, 5, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(&m[0..4], &[1, 0x81, 1, 0x01]);
        assert_eq!((m[6], m[7]), (0, 2));
        assert_eq!(tid(&m), Some(0x1122_3344_5566_7788));
        assert_eq!(&m[16..18], &[0x00, 0x15]);
        assert_eq!(&m[20..24], &[0, 0, 0, 5]);
        assert_eq!(&m[32..36], &[0xff; 4]);
        assert_eq!(&m[128..131], &[0, 3, 17]);
        assert!(m[131..].iter().all(|&b| b == 0));
        assert_eq!(
            encode_get(&[], Attribute::NodeInfo, 0, 1),
            Err(MadError::Path(0))
        );
        assert!(encode_get(&[0; 65], Attribute::NodeInfo, 0, 1).is_err());
        assert!(encode_get(&[0; 64], Attribute::NodeInfo, 0, 1).is_ok());
    }

    #[test]
    fn node_info_reply() {
        let req = encode_get(&[0, 1], Attribute::NodeInfo, 0, 7).unwrap();
        let mut d = [0u8; DATA_SIZE];
        d[0] = 1;
        d[1] = 1;
        d[2] = 2;
        d[3] = 36;
        d[4..12].copy_from_slice(&0x0002_c903_00a1_b2c3u64.to_be_bytes());
        d[12..20].copy_from_slice(&0x0002_c903_00a1_b2c3u64.to_be_bytes());
        d[20..28].copy_from_slice(&0x0002_c903_00a1_b2c4u64.to_be_bytes());
        d[36] = 17;
        let data = decode_reply(&reply(&req, &d), Attribute::NodeInfo).unwrap();
        let ni = node_info(&data);
        assert_eq!(ni.node_type, NodeType::Switch);
        assert_eq!(ni.num_ports, 36);
        assert_eq!(guid_text(ni.node_guid), "0x0002c90300a1b2c3");
        assert_eq!(ni.port_guid, 0x0002_c903_00a1_b2c4);
        assert_eq!(ni.local_port, 17);
        assert_eq!(ni.node_type.to_string(), "switch");
        assert_eq!(NodeType::from_code(9).to_string(), "node type 9");
    }

    #[test]
    fn port_info_reply() {
        let req = encode_get(&[0], Attribute::PortInfo, 2, 9).unwrap();
        let mut d = [0u8; DATA_SIZE];
        d[8..16].copy_from_slice(&0xfe80_0000_0000_0000u64.to_be_bytes());
        d[16..18].copy_from_slice(&5u16.to_be_bytes());
        d[18..20].copy_from_slice(&1u16.to_be_bytes());
        d[28] = 2;
        d[32] = 0x34; // speed supported 3, state ACTIVE
        d[33] = 0x52; // phys LinkUp, default Polling
        let pi = port_info(&decode_reply(&reply(&req, &d), Attribute::PortInfo).unwrap());
        assert_eq!(pi.gid_prefix, 0xfe80_0000_0000_0000);
        assert_eq!((pi.lid, pi.sm_lid, pi.local_port), (5, 1, 2));
        assert_eq!(pi.state, PortState::Active);
        assert!(pi.state.link_up());
        assert_eq!(pi.phys_state, 5);
        d[32] = 0x01;
        let down = port_info(&d);
        assert_eq!(down.state, PortState::Down);
        assert!(!down.state.link_up());
    }

    #[test]
    fn bad_replies_are_errors() {
        let req = encode_get(&[0, 1], Attribute::NodeInfo, 0, 7).unwrap();
        assert_eq!(
            decode_reply(&req[..100], Attribute::NodeInfo),
            Err(MadError::Short(100))
        );
        // The request itself is no reply.
        assert!(matches!(
            decode_reply(&req, Attribute::NodeInfo),
            Err(MadError::NotReply { .. })
        ));
        let mut r = reply(&req, &[]);
        assert!(matches!(
            decode_reply(&r, Attribute::PortInfo),
            Err(MadError::Attribute { .. })
        ));
        r[5] = 0x1c;
        assert_eq!(
            decode_reply(&r, Attribute::NodeInfo),
            Err(MadError::Status(0x1c))
        );
    }
}
