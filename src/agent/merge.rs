//! Keeping last good data: the pure merge of a fresh probe into the previous topology.
//!
//! A source that fails and returns nothing keeps the data it gave last time, marked stale in its
//! [`SourceStatus`], so a transient fault never empties the topology (and never removes labels).
//! A source that fails partially (some data, plus errors) is taken as probed: its data is newer
//! than anything kept.

use crate::model::{FabricState, NodeTopology, Source, SourceStatus};

/// Which part of the topology each source fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// `nvml`: driver, GPUs and GPU pairs.
    Gpus,
    /// `fabric`: the node fabric.
    Fabric,
    /// `rdma`: the NICs.
    Nics,
    /// `sysfs-pci`: GPU-NIC affinity and rail pairing.
    Pci,
    /// `gpudirect`: GPUDirect readiness.
    GpuDirect,
    /// `ib-smp`: the node's place in the InfiniBand fabric.
    IbPlacement,
    /// `lldp`: the node's place in the RoCE fabric.
    RocePlacement,
}

fn section_of(source: Source) -> Option<Section> {
    match source {
        Source::Nvml => Some(Section::Gpus),
        Source::Fabric => Some(Section::Fabric),
        Source::Rdma => Some(Section::Nics),
        Source::SysfsPci => Some(Section::Pci),
        Source::Gpudirect => Some(Section::GpuDirect),
        // ibverbs only annotates the NICs of `rdma`: it has no data of its own to keep.
        Source::Verbs => None,
        // The port neighbours are this probe's facts; the node-level placement is kept.
        Source::IbSmp => Some(Section::IbPlacement),
        Source::Lldp => Some(Section::RocePlacement),
    }
}

fn is_empty(t: &NodeTopology, s: Section) -> bool {
    match s {
        Section::Gpus => t.gpus.is_empty(),
        // A source that failed reports "none" or nothing: no knowledge to keep.
        Section::Fabric => matches!(t.fabric.state, FabricState::Unknown | FabricState::None),
        Section::Nics => t.nics.is_empty(),
        Section::Pci => t.gpu_nic_affinity.is_empty() && t.rail_pairing.pairs.is_empty(),
        Section::GpuDirect => {
            t.gpudirect.method == crate::model::GpuDirectMethod::None && !t.gpudirect.ready
        }
        Section::IbPlacement => no_placement(&t.network.infiniband),
        Section::RocePlacement => no_placement(&t.network.roce),
    }
}

fn copy(from: &NodeTopology, to: &mut NodeTopology, s: Section) {
    match s {
        Section::Gpus => {
            to.driver = from.driver.clone();
            to.gpus = from.gpus.clone();
            to.gpu_pairs = from.gpu_pairs.clone();
        }
        Section::Fabric => to.fabric = from.fabric.clone(),
        Section::Nics => to.nics = from.nics.clone(),
        Section::Pci => {
            to.gpu_nic_affinity = from.gpu_nic_affinity.clone();
            to.rail_pairing = from.rail_pairing.clone();
        }
        Section::GpuDirect => to.gpudirect = from.gpudirect.clone(),
        Section::IbPlacement => to.network.infiniband = from.network.infiniband.clone(),
        Section::RocePlacement => to.network.roce = from.network.roce.clone(),
    }
}

fn no_placement(p: &crate::model::FabricPlacement) -> bool {
    p.leaf.is_none() && p.su.is_none() && p.block.is_none()
}

/// Merges a `fresh` probe into the `previous` published topology.
///
/// The result has the fresh probe's time; its revision is the previous one (the caller bumps it
/// when the content changed).
pub fn merge(previous: &NodeTopology, mut fresh: NodeTopology) -> NodeTopology {
    fresh.revision = previous.revision;
    let failed: Vec<(usize, Section)> = fresh
        .sources
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.ok)
        .filter_map(|(i, s)| section_of(s.source).map(|sec| (i, sec)))
        .collect();
    for (i, sec) in failed {
        if is_empty(&fresh, sec) && !is_empty(previous, sec) {
            copy(previous, &mut fresh, sec);
            let status: &mut SourceStatus = &mut fresh.sources[i];
            status.stale = true;
        }
    }
    fresh
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::model::{DriverInfo, Fabric, Gpu, Nic};

    fn good(t: u64) -> NodeTopology {
        NodeTopology {
            node_name: "n".into(),
            revision: 3,
            probe_time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(t)),
            driver: DriverInfo {
                driver_version: Some("580".into()),
                ..DriverInfo::default()
            },
            gpus: vec![Gpu {
                uuid: "GPU-0".into(),
                ..Gpu::default()
            }],
            fabric: Fabric {
                state: FabricState::Ready,
                domain: Some("c.1".into()),
                ..Fabric::default()
            },
            nics: vec![Nic {
                name: "mlx5_0".into(),
                ..Nic::default()
            }],
            sources: vec![
                SourceStatus::ok(Source::Nvml),
                SourceStatus::ok(Source::Fabric),
                SourceStatus::ok(Source::Rdma),
            ],
            ..NodeTopology::default()
        }
    }

    #[test]
    fn all_good_takes_fresh() {
        let prev = good(1);
        let mut fresh = good(2);
        fresh.gpus[0].uuid = "GPU-9".into();
        let m = merge(&prev, fresh.clone());
        assert_eq!(m.gpus[0].uuid, "GPU-9");
        assert_eq!(m.revision, 3);
        assert_eq!(m.probe_time, fresh.probe_time);
        assert!(m.sources.iter().all(|s| !s.stale));
    }

    #[test]
    fn failed_empty_source_keeps_last_good_data_marked_stale() {
        let prev = good(1);
        let fresh = NodeTopology {
            node_name: "n".into(),
            probe_time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2)),
            nics: prev.nics.clone(),
            sources: vec![
                SourceStatus::failed(Source::Nvml, "driver gone"),
                SourceStatus::failed(Source::Fabric, "not probed"),
                SourceStatus::ok(Source::Rdma),
            ],
            ..NodeTopology::default()
        };
        let m = merge(&prev, fresh);
        assert_eq!(m.gpus, prev.gpus);
        assert_eq!(m.driver, prev.driver);
        assert_eq!(m.fabric, prev.fabric);
        let nvml = &m.sources[0];
        assert!(!nvml.ok && nvml.stale && nvml.error == "driver gone");
        assert!(m.sources[1].stale);
        assert!(!m.sources[2].stale);
        assert!(!m.same_content(&prev), "the stale mark is content");
    }

    #[test]
    fn each_rdma_source_keeps_its_own_section() {
        let mut prev = good(1);
        prev.gpudirect = crate::model::GpuDirect {
            ready: true,
            method: "dma-buf".into(),
            reason: "ok".into(),
        };
        prev.rail_pairing.rail_aligned = true;
        prev.rail_pairing.pairs = vec![crate::model::RailPair {
            gpu: 0,
            nic: "mlx5_0".into(),
            ..Default::default()
        }];
        prev.sources.push(SourceStatus::ok(Source::SysfsPci));
        prev.sources.push(SourceStatus::ok(Source::Gpudirect));
        let mut fresh = good(2);
        fresh
            .sources
            .push(SourceStatus::failed(Source::SysfsPci, "walk failed"));
        fresh
            .sources
            .push(SourceStatus::failed(Source::Gpudirect, "no modules"));
        fresh.sources[2] = SourceStatus::failed(Source::Rdma, "no class/infiniband");
        fresh.nics.clear();
        let m = merge(&prev, fresh);
        assert_eq!(m.nics, prev.nics);
        assert_eq!(m.rail_pairing, prev.rail_pairing);
        assert_eq!(m.gpudirect, prev.gpudirect);
        assert!(m.sources[2..].iter().all(|s| s.stale && !s.ok));
    }

    #[test]
    fn a_failed_fabric_query_keeps_the_last_placement() {
        let mut prev = good(1);
        prev.network.infiniband = crate::model::FabricPlacement {
            leaf: Some("0x0000000000b00001".into()),
            su: Some("49c8b0ac92".into()),
            block: Some("b19274c34c".into()),
            reason: String::new(),
        };
        let mut fresh = good(2);
        fresh.network.infiniband.reason = "no leaf found for mlx5_0/1: timeout".into();
        fresh
            .sources
            .push(SourceStatus::failed(Source::IbSmp, "mlx5_0/1: timeout"));
        let m = merge(&prev, fresh.clone());
        assert_eq!(m.network.infiniband, prev.network.infiniband);
        let ib = m
            .sources
            .iter()
            .find(|s| s.source == Source::IbSmp)
            .unwrap();
        assert!(ib.stale && !ib.ok, "{ib:?}");
        // A fresh answer replaces it.
        let mut found = good(3);
        found.network.infiniband.leaf = Some("0x0000000000b00002".into());
        found.sources.push(SourceStatus::ok(Source::IbSmp));
        let m = merge(&m, found);
        assert_eq!(
            m.network.infiniband.leaf.as_deref(),
            Some("0x0000000000b00002")
        );
    }

    #[test]
    fn partial_failure_keeps_fresh_data() {
        let prev = good(1);
        let mut fresh = good(2);
        fresh.gpus[0].uuid = "GPU-new".into();
        fresh.sources[0] = SourceStatus::failed(Source::Nvml, "GPU 1: mig mode: unknown error");
        let m = merge(&prev, fresh);
        assert_eq!(m.gpus[0].uuid, "GPU-new");
        assert!(!m.sources[0].stale);
    }

    #[test]
    fn first_probe_failing_stays_empty() {
        let fresh = NodeTopology {
            sources: vec![SourceStatus::failed(Source::Nvml, "no NVML")],
            ..NodeTopology::default()
        };
        let m = merge(&NodeTopology::default(), fresh.clone());
        assert_eq!(m, fresh);
    }

    #[test]
    fn stale_data_survives_repeated_failures() {
        let prev = good(1);
        let failing = |t| NodeTopology {
            probe_time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(t)),
            node_name: "n".into(),
            sources: vec![SourceStatus::failed(Source::Nvml, "x")],
            ..NodeTopology::default()
        };
        let once = merge(&prev, failing(2));
        let twice = merge(&once, failing(3));
        assert_eq!(twice.gpus, prev.gpus);
        assert!(once.same_content(&twice));
    }
}
