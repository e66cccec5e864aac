//! The label vocabulary: every key nodetopo writes or reads, and the typed values that need more
//! than a number or a name.
//!
//! This is the only place a key is spelled. The agent writes [`Key`]s under its prefix, the
//! extender reads them back, `manifests topology` names them as levels, and `docs/labels.md` is
//! their contract: keys are only ever added (see [`Key`]). Boolean values are Rust's `bool`
//! text (`true`, `false`); the fabric state is [`FabricState`]'s lowercase name.

use strum::IntoEnumIterator;

use super::syntax::{LabelError, LabelKey};
use crate::model::LinkLayer;
// The fabric state's label value is its `Display`/`FromStr` form.
pub use crate::model::FabricState;

/// The agent's default key prefix.
pub const DEFAULT_PREFIX: &str = "nodetopo.io";

/// The node label every scheduler uses for the host level (written by the kubelet; nodetopo
/// names it as the narrowest topology level).
pub const HOSTNAME: &str = "kubernetes.io/hostname";

/// The well-known zone label (set on Nodes by cloud providers; Kubernetes' `PodTopologyLabels`
/// admission copies it onto Pods at binding).
pub const ZONE: &str = "topology.kubernetes.io/zone";

/// The well-known region label (see [`ZONE`]).
pub const REGION: &str = "topology.kubernetes.io/region";

/// The rack label that routers read from their own Pod (llm-d's router among them). Not a label
/// Kubernetes itself sets; nodetopo's webhook writes it on Pods when asked to.
pub const RACK: &str = "topology.kubernetes.io/rack";

/// The start of NVIDIA Dynamo's per-domain Pod label: `nvidia.com/dynamo-topology.<domain>`.
pub const DYNAMO_TOPOLOGY_PREFIX: &str = "nvidia.com/dynamo-topology.";

/// A label nodetopo writes, under the configured prefix (`<prefix>/<name>`).
///
/// Public contract: a variant's name is never changed or removed. A renamed key gets a new
/// variant and the old one stays, written as an alias, for at least one minor release.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::EnumIter,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::Display,
)]
pub enum Key {
    /// Number of GPUs NVML sees.
    #[strum(serialize = "gpu.count")]
    GpuCount,
    /// The GPU product name, or `mixed`.
    #[strum(serialize = "gpu.product")]
    GpuProduct,
    /// The smallest GPU memory, in MiB.
    #[strum(serialize = "gpu.memory-mib")]
    GpuMemoryMib,
    /// The architecture family (`hopper`, `blackwell`, ...).
    #[strum(serialize = "gpu.family")]
    GpuFamily,
    /// The compute capability, `major.minor`.
    #[strum(serialize = "gpu.compute")]
    GpuCompute,
    /// The kernel driver version.
    #[strum(serialize = "gpu.driver")]
    GpuDriver,
    /// The highest CUDA version the driver supports.
    #[strum(serialize = "cuda.driver")]
    CudaDriver,
    /// The fewest NVLinks of any GPU.
    #[strum(serialize = "nvlink.links")]
    NvlinkLinks,
    /// Whether GPUs reach each other through NVSwitch.
    #[strum(serialize = "nvlink.switch")]
    NvlinkSwitch,
    /// Whether every GPU pair is P2P over NVLink.
    #[strum(serialize = "nvlink.all-to-all")]
    NvlinkAllToAll,
    /// The multi-node NVLink state ([`FabricState`]).
    #[strum(serialize = "nvlink.fabric")]
    NvlinkFabric,
    /// `<ClusterUUID>.<CliqueId>`, only when the fabric is ready.
    #[strum(serialize = "nvlink.domain")]
    NvlinkDomain,
    /// The multi-node NVLink cluster (ClusterUUID).
    #[strum(serialize = "nvlink.cluster")]
    NvlinkCluster,
    /// The physical rack: the chassis serial number every GPU's platform info reports (NVML,
    /// GB200/GB300), in label spelling. Not the NVLink partition, which Fabric Manager may cut
    /// smaller.
    #[strum(serialize = "rack.serial")]
    RackSerial,
    /// The compute tray's index in that rack, when every GPU reports the same one.
    #[strum(serialize = "rack.tray")]
    RackTray,
    /// Active ports of the compute rails (every active port of a physical NIC where no GPU is
    /// known to tell rails apart).
    #[strum(serialize = "rdma.count")]
    RdmaCount,
    /// The link layer of the rails' active ports ([`LinkLayerValue`]).
    #[strum(serialize = "rdma.link-layer")]
    RdmaLinkLayer,
    /// The slowest active rail port, in Gb/s.
    #[strum(serialize = "rdma.rate-gbps")]
    RdmaRateGbps,
    /// The InfiniBand subnet prefix, `:` written as `-`; never the default prefix
    /// (`fe80-0000-0000-0000`), which tells no fabric from another.
    #[strum(serialize = "rdma.ib-subnet")]
    RdmaIbSubnet,
    /// Whether GPUDirect RDMA is ready.
    #[strum(serialize = "rdma.gpudirect")]
    RdmaGpudirect,
    /// Whether every GPU has a rail NIC of its own on its PCIe switch.
    #[strum(serialize = "rdma.rail-aligned")]
    RdmaRailAligned,
    /// The most GPUs that share one rail NIC (1 on a rail-aligned node).
    #[strum(serialize = "rdma.gpus-per-rail")]
    RdmaGpusPerRail,
    /// The InfiniBand leaf switch every compute port plugs into (its node GUID, or its name from
    /// the mapping file).
    #[strum(serialize = "ib.leaf")]
    IbLeaf,
    /// The InfiniBand scalable unit: a short hash of the set of the compute ports' leaves.
    #[strum(serialize = "ib.su")]
    IbSu,
    /// The InfiniBand spine block: a short hash of the set of the leaves' uplink switches.
    #[strum(serialize = "ib.block")]
    IbBlock,
    /// The RoCE leaf switch every compute port plugs into (its LLDP chassis ID, or its name from
    /// the mapping file).
    #[strum(serialize = "roce.leaf")]
    RoceLeaf,
    /// Whether every InfiniBand compute port reaches a different leaf (a rail-optimised node:
    /// each port a rail of its own).
    #[strum(serialize = "ib.rail-optimised")]
    IbRailOptimised,
    /// Whether every RoCE compute port reaches a different leaf.
    #[strum(serialize = "roce.rail-optimised")]
    RoceRailOptimised,
}

impl Key {
    /// The name after the prefix, e.g. `gpu.count`.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The full key under `prefix`, e.g. `nodetopo.io/gpu.count`.
    pub fn under(self, prefix: &str) -> String {
        format!("{prefix}/{}", self.name())
    }

    /// The full key under `prefix`, checked.
    pub fn label_key(self, prefix: &str) -> Result<LabelKey, LabelError> {
        LabelKey::new(Some(prefix), self.name())
    }

    /// Every key, in declaration order.
    pub fn all() -> impl Iterator<Item = Self> {
        Self::iter()
    }
}

/// The value of [`Key::RdmaLinkLayer`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString, strum::IntoStaticStr,
)]
#[strum(serialize_all = "lowercase")]
pub enum LinkLayerValue {
    /// Every active port is InfiniBand.
    Infiniband,
    /// Every active port is Ethernet (RoCE).
    Ethernet,
    /// Both; GPU rails are usually InfiniBand, with an Ethernet front-end port.
    Mixed,
}

impl LinkLayerValue {
    /// The value for a node with `ib` InfiniBand and `eth` Ethernet active ports.
    pub fn from_ports(ib: bool, eth: bool) -> Option<Self> {
        match (ib, eth) {
            (true, true) => Some(Self::Mixed),
            (true, false) => Some(Self::Infiniband),
            (false, true) => Some(Self::Ethernet),
            (false, false) => None,
        }
    }

    /// The link layer GPU traffic uses: `mixed` counts as InfiniBand.
    pub fn gpu_link_layer(self) -> LinkLayer {
        match self {
            Self::Infiniband | Self::Mixed => LinkLayer::Infiniband,
            Self::Ethernet => LinkLayer::Ethernet,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_key_is_valid_distinct_and_parses_back() {
        let names: BTreeSet<&str> = Key::all().map(Key::name).collect();
        assert_eq!(names.len(), Key::all().count());
        for k in Key::all() {
            k.label_key(DEFAULT_PREFIX).unwrap();
            assert_eq!(k.name().parse::<Key>().unwrap(), k);
            assert_eq!(k.under("x.io"), format!("x.io/{k}"));
        }
        LabelKey::parse(HOSTNAME).unwrap();
    }

    #[test]
    fn values_round_trip() {
        for v in [
            LinkLayerValue::Infiniband,
            LinkLayerValue::Ethernet,
            LinkLayerValue::Mixed,
        ] {
            assert_eq!(v.to_string().parse::<LinkLayerValue>().unwrap(), v);
        }
        assert!("ib".parse::<LinkLayerValue>().is_err());
        for s in <FabricState as strum::IntoEnumIterator>::iter() {
            assert_eq!(s.to_string().parse::<FabricState>().unwrap(), s);
            assert_eq!(s.to_string(), s.as_str());
        }
    }
}
