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

/// RDMA link layer.
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
    /// Unknown.
    #[default]
    Unknown,
    /// InfiniBand.
    Infiniband,
    /// Ethernet (RoCE).
    Ethernet,
}

/// Logical port state.
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
    /// Unknown.
    #[default]
    Unknown,
    /// DOWN.
    Down,
    /// INIT.
    Init,
    /// ARMED.
    Armed,
    /// ACTIVE.
    Active,
    /// ACTIVE_DEFER.
    ActiveDefer,
}

/// One RDMA device.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Nic {
    /// Device name (`mlx5_0`).
    pub name: String,
    /// PCI address.
    pub pci_address: String,
    /// Node GUID.
    pub node_guid: String,
    /// System image GUID.
    pub sys_image_guid: String,
    /// Firmware version.
    pub fw_version: String,
    /// Board id.
    pub board_id: String,
    /// HCA type.
    pub hca_type: String,
    /// NUMA node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<i32>,
    /// Netdevs.
    pub netdevs: Vec<String>,
    /// SR-IOV VF.
    pub virtual_function: bool,
    /// Bond / LAG.
    pub bonded: bool,
    /// What the NIC is for: a GPU's rail, storage or front-end, or an SR-IOV VF.
    pub role: NicRole,
    /// True when the role was set by the operator (`--nic-role`), not derived.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub role_overridden: bool,
    /// Ports.
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

/// One port.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NicPort {
    /// Port number.
    pub port: u32,
    /// Logical state.
    pub state: PortState,
    /// Physical state.
    pub phys_state: PhysState,
    /// Link layer.
    pub link_layer: LinkLayer,
    /// Rate in Gb/s.
    pub rate_gbps: f64,
    /// LID.
    pub lid: u32,
    /// SM LID.
    pub sm_lid: u32,
    /// Port GUID.
    pub port_guid: String,
    /// Subnet prefix.
    pub subnet_prefix: String,
    /// GIDs.
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

/// A GID entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Gid {
    /// Index.
    pub index: u32,
    /// Value.
    pub gid: String,
    /// Type.
    #[serde(rename = "type")]
    pub gid_type: GidType,
    /// Netdev.
    pub netdev: String,
}

/// ibverbs check result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VerbsCheck {
    /// Usable from this process.
    pub usable: bool,
    /// Why not.
    pub error: String,
    /// sysfs agrees.
    pub consistent_with_sysfs: bool,
}
