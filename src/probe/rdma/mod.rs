//! Composes the RDMA side of a probe: NICs (sysfs, plus ibverbs with the `verbs` feature),
//! their PCIe placement relative to the GPUs, rail pairing and GPUDirect readiness.
//!
//! Called by [`Prober::probe`](super::Prober::probe) after the GPUs are known.

use std::time::Instant;

use crate::model::{NodeTopology, Source, SourceStatus};

pub mod gpudirect;
pub mod sysfs;
#[cfg(feature = "verbs")]
pub mod verbs;

use self::{gpudirect::GpuDirectFacts, sysfs::RdmaProbe};
use super::{
    pci,
    rails::{self, RoleOverrides},
    sysfs::SysfsRoot,
};

/// Probes the NICs under `root` and fills the RDMA part of `topo` (whose GPUs must already be
/// set). With the `verbs` feature every NIC is also checked through ibverbs.
pub fn fill(root: &SysfsRoot, topo: &mut NodeTopology) {
    fill_with(root, topo, &RoleOverrides::default());
}

/// [`fill`], with the operator's NIC roles.
pub fn fill_with(root: &SysfsRoot, topo: &mut NodeTopology, roles: &RoleOverrides) {
    let start = Instant::now();
    #[allow(unused_mut)]
    let mut rdma = sysfs::probe(root);
    rdma.took = start.elapsed();
    #[cfg(feature = "verbs")]
    let verbs = {
        let start = Instant::now();
        let status = verbs::check(&verbs::Ibverbs, &mut rdma.nics);
        Some(status.took(start.elapsed()))
    };
    #[cfg(not(feature = "verbs"))]
    let verbs = None;
    finish(root, topo, rdma, verbs, roles);
}

/// Fills `topo` from an RDMA probe result and an optional verbs status: PCIe affinity, NIC
/// roles ([`rails`]), rail pairing over the compute NICs, GPUDirect readiness and the source statuses (`rdma`, `sysfs-pci`, `gpudirect`,
/// then `verbs` when given).
pub fn finish(
    root: &SysfsRoot,
    topo: &mut NodeTopology,
    rdma: RdmaProbe,
    verbs: Option<SourceStatus>,
    roles: &RoleOverrides,
) {
    topo.sources.push(rdma.status());
    topo.nics = rdma.nics;

    let start = Instant::now();
    let placement = pci::place(root, &topo.gpus, &topo.nics);
    topo.gpu_nic_affinity = pci::gpu_nic_affinity(&placement);
    rails::classify(&topo.gpus, &mut topo.nics, &topo.gpu_nic_affinity, roles);
    topo.rail_pairing = rails::pairing(&topo.gpus, &topo.nics, &topo.gpu_nic_affinity);
    let mut problems = placement.errors.clone();
    let tree = pci::gpu_pairs_from_tree(&placement);
    for (a, b, sysfs, nvml) in pci::disagreements(&tree, &topo.gpu_pairs) {
        if a < b {
            problems.push(format!(
                "GPU {a}-{b}: PCI tree says {}, NVML says {}",
                sysfs.as_str(),
                nvml.as_str()
            ));
        }
    }
    let pci = if problems.is_empty() {
        SourceStatus::ok(Source::SysfsPci)
    } else {
        SourceStatus::failed(Source::SysfsPci, problems.join("; "))
    };
    topo.sources.push(pci.took(start.elapsed()));

    let start = Instant::now();
    let facts = GpuDirectFacts::read(root, topo.nics.len(), topo.gpus.len());
    topo.gpudirect = gpudirect::assess(&facts);
    topo.sources
        .push(SourceStatus::ok(Source::Gpudirect).took(start.elapsed()));

    if let Some(v) = verbs {
        topo.sources.push(v);
    }
}
