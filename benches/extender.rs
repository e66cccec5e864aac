//! Extender benchmark (a bench binary; its figures go into BENCHMARKS.md).
//!
//! - filter + prioritize for one pod over 5,000 nodes in names-only mode, the pod's group
//!   half-placed and its counterpart role placed (criterion; the median is the p50);
//! - memory of 5,000 node topologies in the view: JSON size, and the resident-set growth while
//!   building the view (Linux `/proc/self/statm`).

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use nodetopo::{
    extender::{
        Extender,
        group::group_of,
        placement::{MemoryPlacementIndex, PlacedPod, PlacementIndex, PodEvent},
        policy::Weights,
        view::{ClusterView, LabelConfig, SharedView, ViewEvent},
        wire::ExtenderArgs,
    },
    model::{Fabric, FabricState, Gpu, LinkLayer, Nic, NicPort, NodeTopology, PortState},
};

const NODES: usize = 5_000;

fn topology(i: usize) -> NodeTopology {
    let rack = i / 18;
    NodeTopology {
        node_name: format!("node-{i:05}"),
        revision: 1,
        gpus: (0..4)
            .map(|g| Gpu {
                index: g,
                uuid: format!("GPU-{i:05}-{g}"),
                name: "NVIDIA GB200".into(),
                memory_total_bytes: 186 << 30,
                compute_major: 10,
                ..Default::default()
            })
            .collect(),
        fabric: Fabric {
            state: FabricState::Ready,
            reason: "4 GPUs registered in one clique".into(),
            domain: Some(format!("cluster-{rack:04}.{}", (i % 18) / 9)),
            cluster_uuid: Some(format!("cluster-{rack:04}")),
            clique_id: Some(u32::try_from((i % 18) / 9).unwrap_or(0)),
        },
        nics: (0..4)
            .map(|n| Nic {
                name: format!("mlx5_{n}"),
                ports: vec![NicPort {
                    port: 1,
                    state: PortState::Active,
                    link_layer: LinkLayer::Infiniband,
                    rate_gbps: 400.0,
                    subnet_prefix: "fe80:0000:0000:0000".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn pod(name: &str, lws: &str, role: &str, node: Option<&str>) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name, "namespace": "bench",
            "labels": {
                "leaderworkerset.sigs.k8s.io/name": lws,
                "leaderworkerset.sigs.k8s.io/group-index": "0",
                "llm-d.ai/role": role, "llm-d.ai/model": "m",
            },
            "annotations": {"leaderworkerset.sigs.k8s.io/size": "8"},
        },
        "spec": {"containers": [], "nodeName": node},
    }))
    .unwrap_or_default()
}

fn setup() -> (Extender, ExtenderArgs) {
    let topologies: Vec<NodeTopology> = (0..NODES).map(topology).collect();
    let json_bytes: usize = topologies
        .iter()
        .map(|t| serde_json::to_vec(t).map(|v| v.len()).unwrap_or(0))
        .sum();
    let before = rss_bytes();
    let view = SharedView::new(ClusterView::new(LabelConfig {
        prefix: "nodetopo.io".into(),
        block_label: Some("leaf".into()),
    }));
    for (i, t) in topologies.into_iter().enumerate() {
        let node = t.node_name.clone();
        view.apply(ViewEvent::Labels {
            node: node.clone(),
            labels: [("leaf".to_string(), format!("leaf-{}", i / 180))].into(),
        });
        view.apply(ViewEvent::Topology {
            node,
            topology: Arc::new(t),
        });
    }
    let after = rss_bytes();
    eprintln!(
        "memory: {NODES} topologies, JSON {:.1} MiB ({} B/node); view RSS growth {}",
        json_bytes as f64 / (1 << 20) as f64,
        json_bytes / NODES,
        match (before, after) {
            (Some(b), Some(a)) =>
                format!("{:.1} MiB", a.saturating_sub(b) as f64 / (1 << 20) as f64),
            _ => "n/a".into(),
        }
    );
    let placements = Arc::new(MemoryPlacementIndex::new());
    for (i, node) in [
        (0, "node-00100"),
        (1, "node-00101"),
        (2, "node-00102"),
        (3, "node-00103"),
    ] {
        let p = pod(&format!("d-{i}"), "m-decode", "decode", Some(node));
        if let Some(ev) = PodEvent::from_pod(&p) {
            placements.apply(ev);
        }
    }
    let prefill = pod("p-0", "m-prefill", "prefill", Some("node-00200"));
    if let Some(g) = group_of(&prefill) {
        placements.apply(PodEvent::Placed(PlacedPod {
            pod: "bench/p-0".into(),
            node: "node-00200".into(),
            group: g,
        }));
    }
    let ext = Extender {
        view,
        placements,
        weights: Weights::default(),
    };
    let args = ExtenderArgs {
        pod: Some(pod("d-4", "m-decode", "decode", None)),
        nodes: None,
        node_names: Some((0..NODES).map(|i| format!("node-{i:05}")).collect()),
    };
    (ext, args)
}

fn bench(c: &mut Criterion) {
    let (ext, args) = setup();
    let (f, _) = ext.filter(&args);
    eprintln!(
        "filter keeps {} of {NODES} (MNNVL group: its own rack only)",
        f.node_names.as_ref().map_or(0, Vec::len)
    );
    c.bench_function("filter+prioritize 5000 nodes (names only)", |b| {
        b.iter(|| {
            let f = ext.filter(black_box(&args));
            let p = ext.prioritize(black_box(&args));
            black_box((f, p))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
