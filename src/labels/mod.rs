//! Node labels: the vocabulary ([`keys`]), its syntax ([`syntax`]), the opt-in compatibility keys
//! ([`compat`]) and the pure mapping from a [`NodeTopology`] to the label set the agent applies.
//!
//! [`LabelKey`] and [`LabelValue`] can only hold syntax the Kubernetes API server accepts, so a
//! label set built here never fails validation on the server. A fact that is unknown produces
//! no key at all, never a placeholder.
#![forbid(unsafe_code)]

pub mod compat;
pub mod hysteresis;
pub mod keys;
pub mod syntax;

use std::collections::BTreeMap;

use self::compat::{CompatOptions, compat_labels};
pub use self::{
    keys::{DEFAULT_PREFIX, Key, LinkLayerValue},
    syntax::{LabelError, LabelKey, LabelValue, is_dns_subdomain},
};
use crate::model::{
    Connection, FabricState, GpuFamily, LinkLayer, NicPort, NodeTopology, P2pStatus, PortState,
    Source,
};

/// How labels are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelConfig {
    prefix: String,
    compat: CompatOptions,
}

impl LabelConfig {
    /// A config with key prefix `prefix` (e.g. `nodetopo.io`), checked.
    pub fn new(prefix: &str) -> Result<Self, LabelError> {
        if is_dns_subdomain(prefix) {
            Ok(Self {
                prefix: prefix.to_string(),
                compat: CompatOptions::default(),
            })
        } else {
            Err(LabelError::Prefix(prefix.to_string()))
        }
    }

    /// The key prefix (`nodetopo.io`): the part of every label key before the `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Also writes the opt-in compatibility labels (Topograph, GFD) named in `compat`.
    pub fn with_compat(mut self, compat: CompatOptions) -> Self {
        self.compat = compat;
        self
    }
}

impl Default for LabelConfig {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_string(),
            compat: CompatOptions::default(),
        }
    }
}

/// A desired label set, ordered by key.
pub type Labels = BTreeMap<LabelKey, LabelValue>;

/// Collects labels under one prefix; a fact that is unknown (`None`) or sanitises to nothing
/// writes no key.
struct LabelSet<'a> {
    prefix: &'a str,
    out: Labels,
}

impl LabelSet<'_> {
    fn put(&mut self, key: Key, value: Option<String>) {
        let k = key.label_key(self.prefix);
        debug_assert!(k.is_ok(), "keys are valid under a checked prefix");
        if let (Ok(k), Some(v)) = (k, value.as_deref().and_then(LabelValue::sanitize)) {
            self.out.insert(k, v);
        }
    }
}

/// True when `source` failed without data to keep: its facts are unknown. Stale data is the
/// last good answer, so it still counts as known.
fn failed(topo: &NodeTopology, source: Source) -> bool {
    topo.sources
        .iter()
        .any(|s| s.source == source && !s.ok && !s.stale)
}

/// The labels the agent should apply for `topo`.
pub fn desired_labels(topo: &NodeTopology, config: &LabelConfig) -> Labels {
    let mut set = LabelSet {
        prefix: &config.prefix,
        out: Labels::new(),
    };
    gpu_labels(topo, &mut set);
    nvlink_labels(topo, &mut set);
    rack_labels(topo, &mut set);
    rdma_labels(topo, &mut set);
    network_labels(topo, &mut set);
    let mut out = set.out;
    for (key, value) in compat_labels(topo.fabric.domain.as_deref(), &config.compat) {
        if let (Ok(k), Some(v)) = (LabelKey::parse(key), LabelValue::sanitize(&value)) {
            out.insert(k, v);
        }
    }
    out
}

/// `gpu.*` and `cuda.driver`: what NVML says about the GPUs and the driver.
fn gpu_labels(topo: &NodeTopology, set: &mut LabelSet<'_>) {
    let nvml_ok = topo
        .sources
        .iter()
        .any(|s| s.source == Source::Nvml && s.ok);
    let gpus = &topo.gpus;
    let first = gpus.first();
    set.put(
        Key::GpuCount,
        (nvml_ok || !gpus.is_empty()).then(|| gpus.len().to_string()),
    );
    set.put(
        Key::GpuProduct,
        first.map(|g| {
            if gpus.iter().all(|x| x.name == g.name) {
                g.name.clone()
            } else {
                "mixed".into()
            }
        }),
    );
    set.put(
        Key::GpuMemoryMib,
        gpus.iter()
            .map(|g| g.memory_mib())
            .min()
            .filter(|m| *m > 0)
            .map(|m| m.to_string()),
    );
    set.put(
        Key::GpuFamily,
        first
            .map(|g| g.family)
            .filter(|f| *f != GpuFamily::Unknown)
            .map(|f| f.to_string()),
    );
    set.put(
        Key::GpuCompute,
        first
            .filter(|g| g.compute_major > 0)
            .map(|g| format!("{}.{}", g.compute_major, g.compute_minor)),
    );
    set.put(Key::GpuDriver, topo.driver.driver_version.clone());
    set.put(Key::CudaDriver, topo.driver.cuda_driver_version.clone());
}

/// `nvlink.*`: the NVLinks inside the node and the multi-node NVLink fabric.
fn nvlink_labels(topo: &NodeTopology, set: &mut LabelSet<'_>) {
    let gpus = &topo.gpus;
    set.put(
        Key::NvlinkLinks,
        gpus.iter()
            .map(|g| g.nvlinks.len())
            .min()
            .map(|n| n.to_string()),
    );
    set.put(
        Key::NvlinkSwitch,
        gpus.first()
            .map(|_| gpus.iter().any(|g| g.switch_links() > 0).to_string()),
    );
    let nvlink_pair = |a: u32, b: u32| {
        topo.pair(a, b)
            .is_some_and(|p| p.connection == Connection::NvLink && p.p2p_nvlink == P2pStatus::Ok)
    };
    set.put(
        Key::NvlinkAllToAll,
        (gpus.len() >= 2).then(|| {
            gpus.iter()
                .all(|a| {
                    gpus.iter()
                        .filter(|b| b.index != a.index)
                        .all(|b| nvlink_pair(a.index, b.index))
                })
                .to_string()
        }),
    );
    // A fabric source that failed without an answer ("none" or unknown) is no fact; a failed
    // query that was answered reports `error`, which is.
    let fabric_known = match topo.fabric.state {
        FabricState::Unknown => false,
        FabricState::None => !failed(topo, Source::Fabric),
        _ => true,
    };
    set.put(
        Key::NvlinkFabric,
        fabric_known.then(|| topo.fabric.state.to_string()),
    );
    set.put(
        Key::NvlinkDomain,
        topo.fabric
            .domain
            .clone()
            .filter(|_| topo.fabric.state == FabricState::Ready),
    );
    set.put(Key::NvlinkCluster, topo.fabric.cluster_uuid.clone());
}

/// `rack.*`: the physical rack and tray, only where every GPU's platform info agrees. A serial
/// is spelled as a label value like a switch ID ([`crate::labels::syntax::id_label_value`]).
fn rack_labels(topo: &NodeTopology, set: &mut LabelSet<'_>) {
    let Some(rack) = topo.rack() else {
        return;
    };
    set.put(
        Key::RackSerial,
        Some(crate::labels::syntax::id_label_value(&rack.chassis_serial)),
    );
    set.put(Key::RackTray, rack.tray_index.map(|t| t.to_string()));
}

/// `rdma.*`: the compute rails' active ports, written once RDMA facts are known. Storage,
/// front-end and virtual NICs are left out.
fn rdma_labels(topo: &NodeTopology, set: &mut LabelSet<'_>) {
    let rdma_known = !topo.nics.is_empty()
        || topo
            .sources
            .iter()
            .any(|s| s.source == Source::Rdma && s.ok);
    if !rdma_known {
        return;
    }
    // The rails: compute NICs, or every physical NIC where roles are unknown (no GPU seen).
    let active: Vec<_> = topo
        .nics
        .iter()
        .filter(|n| n.is_rail())
        .flat_map(|n| &n.ports)
        .filter(|p| matches!(p.state, PortState::Active | PortState::ActiveDefer))
        .collect();
    set.put(Key::RdmaCount, Some(active.len().to_string()));
    let ib = active.iter().any(|p| p.link_layer == LinkLayer::Infiniband);
    let eth = active.iter().any(|p| p.link_layer == LinkLayer::Ethernet);
    set.put(
        Key::RdmaLinkLayer,
        LinkLayerValue::from_ports(ib, eth).map(|v| v.to_string()),
    );
    set.put(
        Key::RdmaRateGbps,
        active
            .iter()
            .map(|p| p.rate_gbps)
            .filter(|r| r.is_finite() && *r > 0.0)
            .min_by(f64::total_cmp)
            .map(|r| r.to_string()),
    );
    // The InfiniBand subnet, when every active IB port is on one and its prefix names it
    // (label values cannot hold `:`, so `fe80:0000:0000:0007` becomes `fe80-0000-0000-0007`).
    // The default prefix, which most fabrics keep, names none: no label rather than one that
    // groups unrelated fabrics together.
    let mut subnets: Vec<&NicPort> = active
        .iter()
        .copied()
        .filter(|p| p.link_layer == LinkLayer::Infiniband && !p.subnet_prefix.trim().is_empty())
        .collect();
    subnets.sort_unstable_by(|a, b| a.subnet_prefix.cmp(&b.subnet_prefix));
    subnets.dedup_by(|a, b| a.subnet_prefix == b.subnet_prefix);
    set.put(
        Key::RdmaIbSubnet,
        match subnets[..] {
            [one] => one.ib_subnet().map(|s| s.replace(':', "-")),
            _ => None,
        },
    );
    set.put(
        Key::RdmaGpudirect,
        (!failed(topo, Source::Gpudirect)).then(|| topo.gpudirect.ready.to_string()),
    );
    set.put(
        Key::RdmaRailAligned,
        topo.gpus
            .first()
            .filter(|_| !failed(topo, Source::SysfsPci))
            .map(|_| topo.rail_pairing.rail_aligned.to_string()),
    );
    set.put(
        Key::RdmaGpusPerRail,
        (topo.rail_pairing.gpus_per_rail > 0 && !failed(topo, Source::SysfsPci))
            .then(|| topo.rail_pairing.gpus_per_rail.to_string()),
    );
}

/// `ib.*` and `roce.leaf`: where the compute rails plug into the fabrics
/// ([`crate::probe::network`]). Each value is already a label value (an ID's label spelling, a hash,
/// or a name from the mapping file).
fn network_labels(topo: &NodeTopology, set: &mut LabelSet<'_>) {
    let ib = &topo.network.infiniband;
    set.put(Key::IbLeaf, ib.leaf.clone());
    set.put(Key::IbSu, ib.su.clone());
    set.put(Key::IbBlock, ib.block.clone());
    set.put(Key::RoceLeaf, topo.network.roce.leaf.clone());
    set.put(
        Key::IbRailOptimised,
        ib.rail_optimised.map(|b| b.to_string()),
    );
    set.put(
        Key::RoceRailOptimised,
        topo.network.roce.rail_optimised.map(|b| b.to_string()),
    );
}

/// Renders labels one per line as `key=value`, as `nodetopo probe -o labels` prints them.
pub fn render(labels: &Labels) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

#[cfg(test)]
mod tests;
