//! RDMA NICs and their ports: link layer, states, roles, GIDs and the ibverbs check.

use serde::{Deserialize, Serialize};

use super::PortNeighbor;

text_enum! {
    /// A GID's type, as sysfs `gid_attrs/types/<index>` spells it.
    GidType {
        /// No type given.
        #[default]
        Unknown = "",
        /// InfiniBand, or RoCE v1.
        IbRoceV1 = "IB/RoCE v1",
        /// RoCE v2 (routable).
        RoceV2 = "RoCE v2",
    }
}

text_enum! {
    /// A port's physical state, by the kernel's name (`phys_state` is `5: LinkUp`).
    PhysState {
        /// Not read.
        #[default]
        Unknown = "",
        /// 1.
        Sleep = "Sleep",
        /// 2.
        Polling = "Polling",
        /// 3.
        Disabled = "Disabled",
        /// 4.
        PortConfigurationTraining = "PortConfigurationTraining",
        /// 5.
        LinkUp = "LinkUp",
        /// 6.
        LinkErrorRecovery = "LinkErrorRecovery",
        /// 7 (`Phy Test`).
        PhyTest = "PhyTest",
    }
}

/// The link layer of an RDMA port, from sysfs `ports/<n>/link_layer`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LinkLayer {
    /// Not read, or a value other than `InfiniBand` and `Ethernet`.
    #[default]
    Unknown,
    /// InfiniBand: the port is on a fabric run by a subnet manager.
    Infiniband,
    /// Ethernet (RoCE).
    Ethernet,
}

/// A port's logical state, from sysfs `ports/<n>/state` (`4: ACTIVE`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum PortState {
    /// Not read, or a state other than the five below.
    #[default]
    Unknown,
    /// `1: DOWN`: the link is not up.
    Down,
    /// `2: INIT`: the link is up; the subnet manager has not configured the port yet.
    Init,
    /// `3: ARMED`: configured by the subnet manager, not yet passing data.
    Armed,
    /// `4: ACTIVE`: the port can carry traffic.
    Active,
    /// `5: ACTIVE_DEFER`, as the kernel names it.
    ActiveDefer,
}

impl PortState {
    /// The state of an InfiniBand PortState code, as PortInfo carries it and as sysfs `state`
    /// starts (`4: ACTIVE`): 1 to 5; anything else (0 is "no state change") is unknown.
    pub fn from_iba(code: u8) -> Self {
        match code {
            1 => Self::Down,
            2 => Self::Init,
            3 => Self::Armed,
            4 => Self::Active,
            5 => Self::ActiveDefer,
            _ => Self::Unknown,
        }
    }

    /// The kernel's name of the state in sysfs `state` (`ACTIVE`); none for an unknown state.
    pub fn kernel_name(self) -> Option<&'static str> {
        Some(match self {
            Self::Unknown => return None,
            Self::Down => "DOWN",
            Self::Init => "INIT",
            Self::Armed => "ARMED",
            Self::Active => "ACTIVE",
            Self::ActiveDefer => "ACTIVE_DEFER",
        })
    }

    /// True when the link is up (the port has trained with its peer): INIT and later.
    pub fn link_up(self) -> bool {
        matches!(
            self,
            Self::Init | Self::Armed | Self::Active | Self::ActiveDefer
        )
    }
}

impl PhysState {
    /// The state of an InfiniBand PortPhysicalState code, as PortInfo carries it and as sysfs
    /// `phys_state` starts (`5: LinkUp`): 1 to 7; anything else is unknown.
    pub fn from_iba(code: u8) -> Self {
        match code {
            1 => Self::Sleep,
            2 => Self::Polling,
            3 => Self::Disabled,
            4 => Self::PortConfigurationTraining,
            5 => Self::LinkUp,
            6 => Self::LinkErrorRecovery,
            7 => Self::PhyTest,
            _ => Self::Unknown,
        }
    }
}

/// What an RDMA node is: InfiniBand NodeInfo's NodeType (1 to 3), whose numbers the kernel's
/// `node_type` attribute extends (4 to 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeType {
    /// `1: CA`: a channel adapter (every HCA and RoCE NIC the agent pairs with GPUs).
    Ca,
    /// `2: switch`.
    Switch,
    /// `3: router`.
    Router,
    /// `4: RNIC` (iWARP).
    Rnic,
    /// `5: usNIC`.
    Usnic,
    /// `6: usNIC UDP`.
    UsnicUdp,
    /// `7: unspecified`.
    Unspecified,
    /// Any other number.
    Other(u8),
}

impl NodeType {
    /// The node type of `code`.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Ca,
            2 => Self::Switch,
            3 => Self::Router,
            4 => Self::Rnic,
            5 => Self::Usnic,
            6 => Self::UsnicUdp,
            7 => Self::Unspecified,
            n => Self::Other(n),
        }
    }

    /// The kernel's name in sysfs `node_type` (`CA`); none for another number.
    pub fn kernel_name(self) -> Option<&'static str> {
        Some(match self {
            Self::Ca => "CA",
            Self::Switch => "switch",
            Self::Router => "router",
            Self::Rnic => "RNIC",
            Self::Usnic => "usNIC",
            Self::UsnicUdp => "usNIC UDP",
            Self::Unspecified => "unspecified",
            Self::Other(_) => return None,
        })
    }
}

impl std::fmt::Display for NodeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ca => f.write_str("channel adapter"),
            Self::Other(n) => write!(f, "node type {n}"),
            t => f.write_str(t.kernel_name().unwrap_or_default()),
        }
    }
}

/// One RDMA device (an InfiniBand HCA or a RoCE NIC), from sysfs `class/infiniband/<name>`;
/// with `--ib-smp only`, from SMP NodeInfo instead, and the sysfs-only fields stay empty.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Nic {
    /// Device name (`mlx5_0`).
    pub name: String,
    /// PCI address of the device's function (`0000:3b:00.0`); empty when its `device` link does not
    /// resolve to one.
    pub pci_address: String,
    /// Node GUID from sysfs `node_guid` (`0c42:a103:0065:4d2e`); empty when unreadable.
    pub node_guid: String,
    /// System image GUID from sysfs `sys_image_guid`, which devices of one system image share;
    /// empty when unreadable.
    pub sys_image_guid: String,
    /// Firmware version from sysfs `fw_ver` (`28.39.1002`); empty when unreadable.
    pub fw_version: String,
    /// Vendor board id from sysfs `board_id` (`MT_0000000838`); empty when unreadable.
    pub board_id: String,
    /// Adapter model from sysfs `hca_type` (`MT4129`); empty when unreadable.
    pub hca_type: String,
    /// NUMA node of the PCI function (its `numa_node`); `None` when missing, unparsable or `-1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<i32>,
    /// Network interfaces the device backs (`device/net/*`, e.g. `ens1f0np0`); empty when none.
    pub netdevs: Vec<String>,
    /// True for an SR-IOV virtual function: its PCI function has a `physfn` link.
    pub virtual_function: bool,
    /// True for a bonded (LAG) device, one whose name contains `_bond_` (`mlx5_bond_0`).
    pub bonded: bool,
    /// What the NIC is for: a GPU's rail, storage or front-end, or an SR-IOV VF.
    pub role: NicRole,
    /// True when the role was set by the operator (`--nic-role`), not derived.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub role_overridden: bool,
    /// The device's ports (sysfs `ports/<n>`), by port number.
    pub ports: Vec<NicPort>,
    /// ibverbs check, when run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verbs: Option<VerbsCheck>,
}

impl Nic {
    /// True for a port of a compute rail: a compute NIC, or any physical NIC where roles are not
    /// known (no GPU seen). Storage, front-end and virtual NICs are never rails.
    pub fn is_rail(&self) -> bool {
        matches!(self.role, NicRole::Compute | NicRole::Unknown) && !self.virtual_function
    }
}

/// What a NIC is for. A role applies to every port of the NIC.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum NicRole {
    /// Not derived: no GPU is known on the node, so no NIC can be told to be a rail.
    #[default]
    Unknown,
    /// A GPU's rail: the nearest NIC (by PCIe distance) of at least one GPU.
    Compute,
    /// Storage or front-end: a physical NIC no GPU is nearest to.
    Storage,
    /// An SR-IOV virtual function (handed to pods, never a node rail).
    Virtual,
}

impl NicRole {
    /// Lowercase name, as in JSON, tables and `--nic-role`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One port of an RDMA device, from sysfs `class/infiniband/<name>/ports/<n>`; with
/// `--ib-smp only`, from SMP PortInfo instead, and the sysfs-only fields stay empty.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NicPort {
    /// Port number, as sysfs numbers the port directories (from 1).
    pub port: u32,
    /// Logical state from `state`; [`PortState::Active`] once the port can carry traffic.
    pub state: PortState,
    /// Physical link state from `phys_state`; [`PhysState::LinkUp`] when the link is up.
    pub phys_state: PhysState,
    /// Link layer from `link_layer`: InfiniBand, or Ethernet for RoCE.
    pub link_layer: LinkLayer,
    /// Link rate in Gb/s from `rate` (`400 Gb/sec (4X NDR)` is 400); 0 when unreadable.
    pub rate_gbps: f64,
    /// Local identifier (LID) the subnet manager assigned, from `lid`; 0 when none (Ethernet).
    pub lid: u32,
    /// LID of the subnet manager the port knows, from `sm_lid`; 0 when none (Ethernet).
    pub sm_lid: u32,
    /// Port GUID: the interface id (low 64 bits) of GID 0; empty when GID 0 is unreadable.
    pub port_guid: String,
    /// Subnet prefix: the high 64 bits of GID 0, `fe80:0000:0000:0000` unless the subnet manager
    /// sets another; empty when GID 0 is unreadable.
    pub subnet_prefix: String,
    /// Non-zero GID table entries: every one on Ethernet (RoCE), only GID 0 on InfiniBand.
    pub gids: Vec<Gid>,
    /// The switch port this port plugs into, when it was looked for (SMP queries on
    /// InfiniBand, LLDP on Ethernet); `None` when the port was not queried (storage and virtual
    /// NICs, inactive ports, a build or run without the source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neighbor: Option<PortNeighbor>,
}

impl NicPort {
    /// The InfiniBand subnet this port is on, when its prefix names one: set and not the
    /// default [`is_default_subnet_prefix`], which most fabrics keep and which therefore tells
    /// fabrics apart no more than an empty one does.
    pub fn ib_subnet(&self) -> Option<&str> {
        let p = self.subnet_prefix.trim();
        (!p.is_empty() && !is_default_subnet_prefix(p)).then_some(p)
    }
}

/// True when `prefix` is InfiniBand's default subnet prefix `fe80:0000:0000:0000` (the
/// link-local prefix, which a subnet manager keeps unless it is configured with another), as
/// sysfs writes it, in label spelling (`fe80-0000-0000-0000`) or abbreviated (`fe80::`).
pub fn is_default_subnet_prefix(prefix: &str) -> bool {
    let text = prefix.trim().replace('-', ":");
    text.parse::<std::net::Ipv6Addr>()
        .or_else(|_| format!("{text}::").parse::<std::net::Ipv6Addr>())
        .is_ok_and(|a| a.segments()[..4] == [0xfe80, 0, 0, 0])
}

/// One entry of a port's GID table (`ports/<n>/gids/<index>`): a 128-bit address of the port.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Gid {
    /// Index in the GID table; RoCE users pick the address (and RoCE version) by this number.
    pub index: u32,
    /// The GID as eight groups of four lower-case hex digits.
    pub gid: String,
    /// The type from `gid_attrs/types/<index>`; [`GidType::Unknown`] when that file is absent.
    #[serde(rename = "type")]
    pub gid_type: GidType,
    /// The netdev the GID belongs to (`gid_attrs/ndevs/<index>`); empty on InfiniBand.
    pub netdev: String,
}

/// Whether this process can use the device through ibverbs, and whether ibverbs agrees with sysfs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VerbsCheck {
    /// True when ibverbs lists the device and it could be opened and its ports queried.
    pub usable: bool,
    /// Why the device is not usable, or how ibverbs and sysfs differ; empty when neither.
    pub error: String,
    /// True when ibverbs shows the same ports as sysfs, with the same state and link layer.
    pub consistent_with_sysfs: bool,
}
