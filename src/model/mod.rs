//! The `Topology` model: one node's GPUs, NVLink matrix, MNNVL fabric and RDMA NICs.
//!
//! This mirrors `proto/nodetopo/v1/topology.proto` (the public contract) as plain Rust types with
//! serde, so that `probe -o json|yaml` is stable and every consumer (labels, gRPC, extender) reads
//! one shape. Probes fill it; policy reads it; nothing here does I/O.
//!
//! One file a part of the node: `gpu` (GPUs, NVLinks, pairs), `fabric` (the multi-node
//! NVLink domain), `platform` (rack and tray), `nic` (RDMA NICs and ports), `network`
//! (the ports' neighbours and the node's place in its fabrics), `rails` (GPU-to-NIC pairing),
//! `source` (which probe said what) and `pci`; every type is re-exported here.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The whole topology of one node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeTopology {
    /// Kubernetes node name (or host name outside a cluster).
    pub node_name: String,
    /// Content revision; changes only when the content changes. 0 = never published.
    pub revision: u64,
    /// When the data was probed (RFC 3339 in JSON).
    #[serde(with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub probe_time: Option<SystemTime>,
    /// Versions of the NVIDIA driver, the CUDA driver API and NVML, as NVML reports them.
    pub driver: DriverInfo,
    /// GPUs ordered by NVML index.
    pub gpus: Vec<Gpu>,
    /// Ordered GPU pairs (a != b): the `nvidia-smi topo -m` matrix.
    pub gpu_pairs: Vec<GpuPair>,
    /// The node's multi-node NVLink domain.
    pub fabric: Fabric,
    /// RDMA devices (InfiniBand HCAs and RoCE NICs), by name.
    pub nics: Vec<Nic>,
    /// PCIe distance from every GPU to every NIC, nearest first per GPU.
    pub gpu_nic_affinity: Vec<GpuNicAffinity>,
    /// One-to-one GPU to NIC rail pairing.
    pub rail_pairing: RailPairing,
    /// Whether GPUDirect RDMA can work on the node, and why.
    pub gpudirect: GpuDirect,
    /// Where the node's compute rails plug into the InfiniBand and RoCE fabrics.
    pub network: NetworkPlacement,
    /// One entry per probe source: whether it answered fully, and what went wrong.
    pub sources: Vec<SourceStatus>,
}

impl NodeTopology {
    /// The pair entry for GPUs `a` and `b`, if present.
    pub fn pair(&self, a: u32, b: u32) -> Option<&GpuPair> {
        self.gpu_pairs.iter().find(|p| p.a == a && p.b == b)
    }

    /// True when the content (everything but revision and probe time) equals `other`'s.
    pub fn same_content(&self, other: &NodeTopology) -> bool {
        let strip = |t: &NodeTopology| NodeTopology {
            revision: 0,
            probe_time: None,
            ..t.clone()
        };
        strip(self) == strip(other)
    }
}

/// Driver-level facts shared by all GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DriverInfo {
    /// Kernel driver version, e.g. `580.159.04`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// Highest CUDA version the driver supports, e.g. `13.0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_driver_version: Option<String>,
    /// NVML library version (`nvmlSystemGetNVMLVersion`); `None` when the query failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvml_version: Option<String>,
}

/// A fixed set of values spelled as text in JSON, gRPC and labels, plus the text of any value
/// nodetopo has no name for, kept as it came (from a newer kernel or driver).
macro_rules! text_enum {
    (
        $(#[$m:meta])*
        $name:ident {
            $($(#[$vm:meta])* $var:ident = $text:literal,)*
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($(#[$vm])* $var,)*
            /// A value without a name here, as read.
            Other(String),
        }

        impl $name {
            /// The value as text, as in JSON, gRPC and labels.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$var => $text,)*
                    Self::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => Self::$var,)*
                    _ => Self::Other(s.to_string()),
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self::from(s.as_str())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.as_str().to_string()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

mod fabric;
mod gpu;
mod network;
mod nic;
mod pci;
mod platform;
mod rails;
mod source;

pub use fabric::*;
pub use gpu::*;
pub use network::*;
pub use nic::*;
pub use pci::*;
pub use platform::*;
pub use rails::*;
pub use source::*;

mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        v.map(|s| humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_from_compute_capability() {
        assert_eq!(GpuFamily::from_compute_capability(9, 0), GpuFamily::Hopper);
        assert_eq!(GpuFamily::from_compute_capability(8, 9), GpuFamily::Ada);
        assert_eq!(GpuFamily::from_compute_capability(8, 6), GpuFamily::Ampere);
        assert_eq!(GpuFamily::from_compute_capability(8, 0), GpuFamily::Ampere);
        assert_eq!(GpuFamily::from_compute_capability(7, 5), GpuFamily::Turing);
        assert_eq!(GpuFamily::from_compute_capability(7, 0), GpuFamily::Volta);
        assert_eq!(
            GpuFamily::from_compute_capability(10, 0),
            GpuFamily::Blackwell
        );
        assert_eq!(
            GpuFamily::from_compute_capability(12, 0),
            GpuFamily::Blackwell
        );
        assert_eq!(GpuFamily::from_compute_capability(2, 0), GpuFamily::Unknown);
    }

    #[test]
    fn cpulist_ranges() {
        assert_eq!(cpulist_from_mask(&[u64::MAX, 0, 0, 0]), "0-63");
        assert_eq!(cpulist_from_mask(&[0b1011]), "0-1,3");
        assert_eq!(cpulist_from_mask(&[1u64 << 63, 1]), "63-64");
        assert_eq!(cpulist_from_mask(&[0, 0]), "");
    }

    #[test]
    fn same_content_ignores_revision_and_time() {
        let a = NodeTopology {
            node_name: "n".into(),
            revision: 1,
            probe_time: Some(SystemTime::UNIX_EPOCH),
            ..Default::default()
        };
        let mut b = a.clone();
        b.revision = 7;
        b.probe_time = Some(SystemTime::now());
        assert!(a.same_content(&b));
        b.node_name = "m".into();
        assert!(!a.same_content(&b));
    }

    #[test]
    fn json_round_trip_keeps_time() {
        let t = NodeTopology {
            probe_time: Some(humantime::parse_rfc3339("2026-11-29T05:00:00.123Z").unwrap()),
            ..Default::default()
        };
        let s = serde_json::to_string(&t).unwrap();
        assert!(
            s.contains("\"probe_time\":\"2026-11-29T05:00:00.123Z\""),
            "{s}"
        );
        let back: NodeTopology = serde_json::from_str(&s).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn only_a_set_non_default_prefix_names_a_subnet() {
        for d in [
            "fe80:0000:0000:0000",
            "FE80:0000:0000:0000",
            "fe80-0000-0000-0000",
            "fe80::",
            " fe80:0:0:0 ",
        ] {
            assert!(is_default_subnet_prefix(d), "{d}");
        }
        for other in [
            "fe80:0000:0000:0007",
            "fec0:0000:0000:0000",
            "fe80-0000-0000-0001",
            "",
            "x",
        ] {
            assert!(!is_default_subnet_prefix(other), "{other}");
        }
        let port = |prefix: &str| NicPort {
            subnet_prefix: prefix.into(),
            ..NicPort::default()
        };
        assert_eq!(port("fe80:0000:0000:0000").ib_subnet(), None);
        assert_eq!(port("").ib_subnet(), None);
        assert_eq!(
            port("fe80:0000:0000:0007").ib_subnet(),
            Some("fe80:0000:0000:0007")
        );
    }

    #[test]
    fn text_enums_keep_known_and_unknown_values() {
        let g: GidType = serde_json::from_str("\"RoCE v2\"").unwrap();
        assert_eq!(g, GidType::RoceV2);
        let other: GidType = serde_json::from_str("\"RoCE v3\"").unwrap();
        assert_eq!(other, GidType::Other("RoCE v3".into()));
        assert_eq!(serde_json::to_string(&other).unwrap(), "\"RoCE v3\"");
        assert_eq!(
            serde_json::to_string(&GpuDirectMethod::None).unwrap(),
            "\"\""
        );
        assert_eq!(GpuDirectMethod::from("dma-buf"), GpuDirectMethod::DmaBuf);
        assert_eq!(PhysState::LinkUp.to_string(), "LinkUp");
        assert_eq!(
            FabricHealthProblem::from("route-recovery"),
            FabricHealthProblem::RouteRecovery
        );
    }
}
