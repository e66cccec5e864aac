//! The RDMA side of a probe on the 10-NIC fixture (8 InfiniBand rails, 2 RoCE storage NICs):
//! sysfs NICs, PCIe placement and pairing, GPUDirect facts, and with the `verbs` feature the
//! ibverbs check. Target: at most 2 ms warm.

use std::{path::Path, time::SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use nodetopo::model::Source;
use nodetopo::probe::{
    Prober,
    nvml::prober::{GpuProber, ProbeOptions},
    nvml::snapshot::NvmlSnapshot,
    rdma,
    sysfs::SysfsRoot,
};

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/h100x8-ib");
    let root = SysfsRoot::new(dir.join("sysfs/sys"));
    let snap = NvmlSnapshot::load(&dir.join("snapshot.json")).expect("fixture snapshot");
    let mut prober = Prober::new(
        Ok(GpuProber::new(Box::new(snap), ProbeOptions::default())),
        root.clone(),
        "bench".into(),
    );
    let full = prober.probe(SystemTime::UNIX_EPOCH);
    assert_eq!(full.nics.len(), 10);
    let mut base = full.clone();
    base.nics.clear();
    base.gpu_nic_affinity.clear();
    base.rail_pairing = Default::default();
    base.sources
        .retain(|s| matches!(s.source, Source::Nvml | Source::Fabric));

    c.bench_function("rdma sysfs probe (10 NICs)", |b| {
        b.iter(|| rdma::sysfs::probe(&root))
    });
    c.bench_function("rdma side of a probe (10 NICs, 8 GPUs)", |b| {
        b.iter(|| {
            let mut t = base.clone();
            rdma::fill(&root, &mut t);
            t
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
