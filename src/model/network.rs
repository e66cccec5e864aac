//! Where the node plugs into its RDMA fabrics: each port's neighbour, its rail, and the node's
//! leaf, scalable unit and block.

use serde::{Deserialize, Serialize};

text_enum! {
    /// The outcome of looking for one port's switch.
    NeighborStatus {
        /// Not looked for.
        #[default]
        Unknown = "",
        /// Found: `leaf_id` and `leaf_port` are set.
        Ok = "ok",
        /// The port is not active (down, armed, ...); nothing was sent.
        NotActive = "not-active",
        /// The port is in INIT and no subnet manager has answered it (SM LID 0).
        NoSm = "no-sm",
        /// The device that would send or listen could not be opened (permissions, a missing
        /// device file, no capability).
        NoAccess = "no-access",
        /// No answer within the time allowed, after every retry.
        Timeout = "timeout",
        /// The far end is not a switch (a cable straight to another host's adapter).
        NoSwitch = "no-switch",
        /// LLDP: the last frame's time-to-live ran out (or the switch sent a shutdown LLDPDU);
        /// `leaf_id` and `leaf_port` are the last known answer, kept.
        Expired = "expired",
        /// LLDP: listening, but no frame heard yet (switches send every 30 s by default; a
        /// port whose switch sends no LLDP stays here).
        NoFrameYet = "no-frame-yet",
        /// Anything else: a malformed or refused answer, an I/O error.
        Error = "error",
    }
}

/// The switch one port plugs into, and that switch's uplinks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PortNeighbor {
    /// How the search went.
    pub status: NeighborStatus,
    /// Why, in words, when the status is not `ok`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The leaf switch: its node GUID on InfiniBand (`0x` and 16 hex digits), its LLDP chassis
    /// ID on Ethernet, as read.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub leaf_id: String,
    /// The leaf's port: the port number on InfiniBand (NodeInfo LocalPortNum), the LLDP port
    /// ID on Ethernet, as read.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub leaf_port: String,
    /// The switches above the leaf (InfiniBand spines), by node GUID, sorted and distinct.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uplink_ids: Vec<String>,
}

impl PortNeighbor {
    /// A neighbour that was found.
    pub fn found(leaf_id: impl Into<String>, leaf_port: impl Into<String>) -> Self {
        Self {
            status: NeighborStatus::Ok,
            leaf_id: leaf_id.into(),
            leaf_port: leaf_port.into(),
            ..Self::default()
        }
    }

    /// A search that did not find one, and why.
    pub fn failed(status: NeighborStatus, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            ..Self::default()
        }
    }
}

/// The node's place in one RDMA fabric, derived from its compute ports' neighbours
/// ([`crate::probe::network`]). A value is `None` when it is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FabricPlacement {
    /// The leaf switch, only when every compute port of this fabric plugs into the same one
    /// (renamed by the mapping file when it names it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
    /// The scalable unit: a short hash of the sorted set of the compute ports' leaves. Nodes
    /// with the same set are one hop apart on every rail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub su: Option<String>,
    /// The spine block: a short hash of the sorted set of the leaves' uplink switches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<String>,
    /// Why a value is missing, in words.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The rail of every compute port of this fabric whose leaf is known, by NIC and port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rails: Vec<PortRail>,
    /// True when every compute port of this fabric reaches a different leaf (each NIC, or
    /// port, is a rail of its own), false when two reach the same leaf; `None` when fewer than
    /// two ports are placed or a port's leaf is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rail_optimised: Option<bool>,
}

impl FabricPlacement {
    /// True when nothing is known and there is no reason to give.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The rail of `nic`'s port `port`, when known.
    pub fn rail(&self, nic: &str, port: u32) -> Option<&str> {
        self.rails
            .iter()
            .find(|r| r.nic == nic && r.port == port)
            .map(|r| r.rail.as_str())
    }
}

/// One compute port's rail: the leaf switch (or plane) it reaches. On a rail-optimised fabric
/// port k of every node of a scalable unit reaches the same leaf, so equal rails are one hop
/// apart and unequal rails are not.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PortRail {
    /// RDMA device name of the NIC (`mlx5_0`).
    pub nic: String,
    /// Port number on that NIC (from 1).
    pub port: u32,
    /// The rail: the leaf's name in the mapping file (`rails:`, else `names:`), else the
    /// leaf's ID in label spelling. Always a label value.
    pub rail: String,
}

/// Where the node's compute rails plug into the fabrics.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkPlacement {
    /// Placement in the InfiniBand fabric, from SMP queries; empty when nothing is known.
    #[serde(skip_serializing_if = "FabricPlacement::is_empty")]
    pub infiniband: FabricPlacement,
    /// Placement in the RoCE (Ethernet) fabric, from LLDP; empty when nothing is known.
    #[serde(skip_serializing_if = "FabricPlacement::is_empty")]
    pub roce: FabricPlacement,
}

impl NetworkPlacement {
    /// The rail of `nic`'s port `port` in either fabric, when known.
    pub fn rail(&self, nic: &str, port: u32) -> Option<&str> {
        self.infiniband
            .rail(nic, port)
            .or_else(|| self.roce.rail(nic, port))
    }
}
