//! Keeping last good data: the pure merge of a fresh probe into the previous topology.
//!
//! A source that fails and returns nothing keeps the data it gave last time, marked stale in its
//! [`SourceStatus`], so a transient fault never empties the topology (and never removes labels).
//! A source that fails partially (some data, plus errors) is taken as probed for what it did
//! answer: that data is newer than anything kept. What it left out is not taken as gone: a GPU
//! that NVML could not identify, or a NIC whose sysfs directory could not be read, keeps its
//! last good entry (the source is marked stale). Facts derived from the whole set (NIC roles,
//! GPU-NIC affinity and rail pairing, the node's place in the fabrics) were derived this round
//! from an incomplete set, so the last good ones are kept with it: a NIC left out for one probe
//! must not turn a storage NIC into a compute rail.

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
    let mut derived_from_a_partial_set = false;
    for (i, sec) in failed {
        let kept = if is_empty(&fresh, sec) && !is_empty(previous, sec) {
            copy(previous, &mut fresh, sec);
            true
        } else {
            let kept = keep_left_out(previous, &mut fresh, sec);
            derived_from_a_partial_set |= kept;
            kept
        };
        if kept {
            let status: &mut SourceStatus = &mut fresh.sources[i];
            status.stale = true;
        }
    }
    if derived_from_a_partial_set {
        keep_derived(previous, &mut fresh);
    }
    fresh
}

/// Puts back the entries of `previous` that a partially failed source left out of `fresh`: GPUs
/// by index (with their GPU pairs), NICs by name. True when any entry was put back.
fn keep_left_out(previous: &NodeTopology, fresh: &mut NodeTopology, s: Section) -> bool {
    match s {
        Section::Gpus => {
            let missing: Vec<_> = previous
                .gpus
                .iter()
                .filter(|p| !fresh.gpus.iter().any(|g| g.index == p.index))
                .cloned()
                .collect();
            if missing.is_empty() {
                return false;
            }
            let back = |i: u32| missing.iter().any(|g| g.index == i);
            for pair in &previous.gpu_pairs {
                if (back(pair.a) || back(pair.b))
                    && !fresh
                        .gpu_pairs
                        .iter()
                        .any(|p| p.a == pair.a && p.b == pair.b)
                {
                    fresh.gpu_pairs.push(pair.clone());
                }
            }
            fresh.gpus.extend(missing);
            fresh.gpus.sort_by_key(|g| g.index);
            fresh.gpu_pairs.sort_by_key(|p| (p.a, p.b));
            true
        }
        Section::Nics => {
            let missing: Vec<_> = previous
                .nics
                .iter()
                .filter(|p| !fresh.nics.iter().any(|n| n.name == p.name))
                .cloned()
                .collect();
            if missing.is_empty() {
                return false;
            }
            fresh.nics.extend(missing);
            fresh.nics.sort_by(|a, b| a.name.cmp(&b.name));
            true
        }
        _ => false,
    }
}

/// Keeps what was derived from the whole GPU and NIC sets when this probe saw only part of one:
/// each NIC's role (for NICs known before), the GPU-NIC affinity and rail pairing, and the node's
/// place in the fabrics.
fn keep_derived(previous: &NodeTopology, fresh: &mut NodeTopology) {
    for nic in &mut fresh.nics {
        if let Some(p) = previous.nics.iter().find(|p| p.name == nic.name) {
            nic.role = p.role;
            nic.role_overridden = p.role_overridden;
        }
    }
    fresh.gpu_nic_affinity = previous.gpu_nic_affinity.clone();
    fresh.rail_pairing = previous.rail_pairing.clone();
    fresh.network = previous.network.clone();
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
            ..Default::default()
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

    fn two_gpus_two_nics(t: u64) -> NodeTopology {
        use crate::model::{GpuPair, NicRole, RailPair, RailPairing};
        let mut n = good(t);
        n.gpus.push(Gpu {
            index: 1,
            uuid: "GPU-1".into(),
            ..Gpu::default()
        });
        n.gpu_pairs = vec![GpuPair {
            a: 0,
            b: 1,
            nvlink_count: 18,
            ..GpuPair::default()
        }];
        n.nics = vec![
            Nic {
                name: "mlx5_0".into(),
                role: NicRole::Compute,
                ..Nic::default()
            },
            Nic {
                name: "mlx5_1".into(),
                role: NicRole::Storage,
                ..Nic::default()
            },
        ];
        let pair = |gpu| RailPair {
            gpu,
            nic: "mlx5_0".into(),
            ..RailPair::default()
        };
        n.rail_pairing = RailPairing {
            rail_aligned: false,
            pairs: vec![pair(0)],
            gpu_rails: vec![pair(0), pair(1)],
            gpus_per_rail: 2,
        };
        n.network.infiniband.leaf = Some("leaf-a".into());
        n
    }

    #[test]
    fn a_gpu_nvml_could_not_identify_keeps_its_last_entry() {
        let prev = two_gpus_two_nics(1);
        // GPU 1 fails its identity query: the prober leaves it out and says so.
        let mut fresh = two_gpus_two_nics(2);
        fresh.gpus.retain(|g| g.index == 0);
        fresh.gpu_pairs.clear();
        fresh.rail_pairing.gpu_rails.truncate(1);
        fresh.rail_pairing.gpus_per_rail = 1;
        fresh.sources[0] = SourceStatus::failed(Source::Nvml, "GPU 1: Unknown Error");
        let m = merge(&prev, fresh);
        assert_eq!(m.gpus, prev.gpus, "GPU 1 is not taken as gone");
        assert_eq!(m.gpu_pairs, prev.gpu_pairs);
        assert_eq!(m.rail_pairing, prev.rail_pairing, "its rail is kept too");
        let nvml = &m.sources[0];
        assert!(!nvml.ok && nvml.stale, "{nvml:?}");

        // With NVML answering fully, a GPU that is gone is gone.
        let mut gone = two_gpus_two_nics(3);
        gone.gpus.retain(|g| g.index == 0);
        gone.gpu_pairs.clear();
        let m = merge(&m, gone.clone());
        assert_eq!(m.gpus, gone.gpus);
        assert!(m.sources.iter().all(|s| !s.stale));
    }

    #[test]
    fn a_nic_left_out_keeps_its_entry_and_the_roles_are_not_derived_again() {
        use crate::model::NicRole;
        let prev = two_gpus_two_nics(1);
        // mlx5_0's directory could not be read: without it, mlx5_1 is every GPU's nearest NIC
        // and is derived a compute rail; the fabric placement loses mlx5_0's leaf.
        let mut fresh = two_gpus_two_nics(2);
        fresh.nics.retain(|n| n.name == "mlx5_1");
        fresh.nics[0].role = NicRole::Compute;
        fresh.nics[0].fw_version = "28.43.1014".into();
        fresh.rail_pairing.pairs[0].nic = "mlx5_1".into();
        fresh.network.infiniband.leaf = None;
        fresh.sources[2] = SourceStatus::failed(
            Source::Rdma,
            "mlx5_0: No such file or directory (os error 2); left out",
        );
        let m = merge(&prev, fresh);
        let names: Vec<_> = m.nics.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["mlx5_0", "mlx5_1"]);
        assert_eq!(m.nics[0], prev.nics[0]);
        assert_eq!(m.nics[1].role, NicRole::Storage, "not a rail for one probe");
        assert_eq!(m.nics[1].fw_version, "28.43.1014", "what was read is fresh");
        assert_eq!(m.rail_pairing, prev.rail_pairing);
        assert_eq!(m.network, prev.network);
        assert!(m.sources[2].stale);

        // Once the NIC is read again, the fresh roles stand.
        let mut back = two_gpus_two_nics(3);
        back.nics[1].role = NicRole::Compute;
        let m = merge(&m, back.clone());
        assert_eq!(m.nics, back.nics);
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
