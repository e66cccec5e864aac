//! Extender benchmark (a bench binary; its figures go into BENCHMARKS.md).
//!
//! - filter + prioritize for one pod over 5,000 nodes in names-only mode, the pod's group
//!   half-placed and its counterpart role placed (criterion; the median is the p50);
//! - memory of 5,000 node topologies in the view: JSON size, and the resident-set growth while
//!   building the view (Linux `/proc/self/statm`);
//! - how long a change in one agent takes to reach the extender's view: a real agent
//!   (`nodetopo agent --no-kube --interval 100ms`, replaying a GB200 tray) on 127.0.0.1, the
//!   extender's gRPC watcher in process, the agent's snapshot edited 20 times.

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use nodetopo::{
    extender::{
        Extender,
        group::group_of,
        placed::{MemoryPlacementIndex, PlacedPod, PlacementIndex, PodEvent},
        policy::Weights,
        view::{ClusterView, LabelKeys, SharedView, ViewEvent},
        wire::ExtenderRequest,
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

fn setup() -> (Extender, ExtenderRequest) {
    let topologies: Vec<NodeTopology> = (0..NODES).map(topology).collect();
    let json_bytes: usize = topologies
        .iter()
        .map(|t| serde_json::to_vec(t).map(|v| v.len()).unwrap_or(0))
        .sum();
    let before = rss_bytes();
    let view = SharedView::new(ClusterView::new(LabelKeys {
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
            gpus: 8,
        }));
    }
    let ext = Extender::new(view, placements, Weights::default());
    let args = ExtenderRequest {
        pod: Some(pod("d-4", "m-decode", "decode", None)),
        nodes: None,
        node_names: Some((0..NODES).map(|i| format!("node-{i:05}")).collect()),
    };
    (ext, args)
}

/// Pod `name` of LWS `lws` (size 8, 4 GPUs), with `role` when given, unbound.
fn gpu_pod(name: &str, lws: &str, role: Option<&str>) -> Pod {
    let mut labels = serde_json::json!({
        "leaderworkerset.sigs.k8s.io/name": lws,
        "leaderworkerset.sigs.k8s.io/group-index": "0",
        "llm-d.ai/model": "w",
    });
    if let Some(r) = role {
        labels["llm-d.ai/role"] = r.into();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "bench", "labels": labels,
            "annotations": {"leaderworkerset.sigs.k8s.io/size": "8"}},
        "spec": {"containers": [{"name": "vllm",
            "resources": {"limits": {"nvidia.com/gpu": "4"}}}]},
    }))
    .unwrap_or_default()
}

/// The first member of a group, where the domain is chosen: with its counterpart's 8 pods
/// waiting in the pod watch (the deployment placed as a whole), and, as the reference in the
/// same run, a group with no role (the group alone).
fn first_member(c: &mut Criterion) {
    let (ext, _) = setup();
    for i in 0..8 {
        if let Some(ev) =
            PodEvent::from_pod(&gpu_pod(&format!("wp-{i}"), "w-prefill", Some("prefill")))
        {
            ext.placements.apply(ev);
        }
    }
    let names: Vec<String> = (0..NODES).map(|i| format!("node-{i:05}")).collect();
    for (label, pod) in [
        (
            "first member, counterpart waiting (5000 nodes)",
            gpu_pod("wd-0", "w-decode", Some("decode")),
        ),
        (
            "first member, no counterpart (5000 nodes)",
            gpu_pod("solo-0", "solo", None),
        ),
    ] {
        let args = ExtenderRequest {
            pod: Some(pod),
            nodes: None,
            node_names: Some(names.clone()),
        };
        // prioritize reserves nothing, so every iteration chooses anew.
        let (_, ex) = ext.prioritize(&args);
        eprintln!(
            "{label}: domain {:?}",
            ex.domain.as_ref().map(|d| d.domain().to_string())
        );
        c.bench_function(label, |b| {
            b.iter(|| black_box(ext.prioritize(black_box(&args))))
        });
    }
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

/// Agent change → view latency; printed, not a criterion measurement.
fn agent_latency(_c: &mut Criterion) {
    match measure_agent_latency() {
        Ok(mut ms) => {
            ms.sort_by(f64::total_cmp);
            let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
            eprintln!(
                "agent change -> view ({} changes, agent probe interval 100 ms): median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
                ms.len(),
                at(0.5),
                at(0.9),
                at(1.0)
            );
        }
        Err(e) => eprintln!("agent latency not measured: {e}"),
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn measure_agent_latency() -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    use std::time::{Duration, Instant};

    use nodetopo::extender::{grpc::GrpcConnector, source::watch_agent};

    let dir = tempfile::tempdir()?;
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gb200/tray-a1.json"
    );
    let base: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture)?)?;
    let snap = dir.path().join("snap.json");
    std::fs::write(&snap, base.to_string())?;
    let sysfs = dir.path().join("sys");
    std::fs::create_dir_all(&sysfs)?;
    let grpc = format!("127.0.0.1:{}", free_port()?);
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nodetopo"))
        .args([
            "agent",
            "--no-kube",
            "--interval",
            "100ms",
            "--node-name",
            "lat",
        ])
        .arg("--replay")
        .arg(&snap)
        .arg("--sysfs-root")
        .arg(&sysfs)
        .args(["--grpc-listen", &grpc, "--metrics-listen", &metrics])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let view = SharedView::new(ClusterView::new(LabelKeys {
        prefix: "nodetopo.io".into(),
        block_label: None,
    }));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let _guard = rt.enter();
    let task = rt.spawn(watch_agent(
        "lat".into(),
        grpc,
        Arc::new(GrpcConnector::default()),
        view.clone(),
        nodetopo::backoff::Backoff::fixed(Duration::from_millis(50), Duration::from_millis(200)),
        stop_rx,
    ));
    let driver = |v: &SharedView| {
        v.read(|v| {
            v.entry("lat")
                .and_then(|e| e.topology.as_ref())
                .and_then(|t| t.driver.driver_version.clone())
        })
    };
    let wait = |want: &str, limit: Duration| {
        let t0 = Instant::now();
        while driver(&view).as_deref() != Some(want) {
            if t0.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        Some(t0.elapsed())
    };
    let mut out = Vec::new();
    let first = base["driver_version"]["Ok"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if wait(&first, Duration::from_secs(30)).is_none() {
        let _ = child.kill();
        return Err("the agent's first topology never arrived".into());
    }
    for i in 0..20 {
        let want = format!("999.{i}.0");
        let mut v = base.clone();
        v["driver_version"]["Ok"] = serde_json::Value::String(want.clone());
        let tmp = dir.path().join("snap.tmp");
        std::fs::write(&tmp, v.to_string())?;
        let t0 = Instant::now();
        std::fs::rename(&tmp, &snap)?;
        match wait(&want, Duration::from_secs(10)) {
            Some(_) => out.push(t0.elapsed().as_secs_f64() * 1e3),
            None => break,
        }
    }
    let _ = stop_tx.send(true);
    let _ = rt.block_on(task);
    let _ = child.kill();
    let _ = child.wait();
    if out.is_empty() {
        return Err("no change reached the view".into());
    }
    Ok(out)
}

/// Node labels of GB200 tray `i` as the agent writes them: NVL72 racks of 18 trays (two cliques
/// of 9), 8 racks to an InfiniBand scalable unit, 4 units to a spine block.
fn gb200_labels(i: usize) -> std::collections::BTreeMap<String, String> {
    let rack = i / 18;
    let su = rack / 8;
    let cluster = format!("4f1c2d3e-5a6b-47c8-a9d0-{rack:012x}");
    [
        ("gpu.count", "4".to_string()),
        ("nvlink.fabric", "ready".to_string()),
        ("nvlink.cluster", cluster.clone()),
        ("nvlink.domain", format!("{cluster}.{}", (i % 18) / 9 + 1)),
        ("rdma.link-layer", "infiniband".to_string()),
        ("rdma.ib-subnet", "fe80-0000-0000-0000".to_string()),
        ("ib.su", format!("{:010x}", 0x10_0000_0000_u64 + su as u64)),
        (
            "ib.block",
            format!("{:010x}", 0x20_0000_0000_u64 + (su / 4) as u64),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (format!("nodetopo.io/{k}"), v))
    .collect()
}

/// The first member of a new group on every call, over `SCALE_NODES` (default 50,000) nodes
/// known by their labels (names-only mode, as a cluster's extender sees kubelet Nodes): `filter`
/// for a `-decode` group (room kept for its prefill counterpart, not seen yet) and for a group
/// without a role, then `prioritize` with every name. Printed p50/p99 over `SCALE_CALLS`
/// (default 30) calls each; reservations of earlier calls stay, as in the HTTP benchmark.
fn first_member_at_scale(_c: &mut Criterion) {
    use std::time::Instant;
    let nodes: usize = std::env::var("SCALE_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let calls: usize = std::env::var("SCALE_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    if nodes == 0 {
        return;
    }
    let view = SharedView::new(ClusterView::new(LabelKeys {
        prefix: "nodetopo.io".into(),
        block_label: None,
    }));
    for i in 0..nodes {
        view.apply(ViewEvent::Labels {
            node: format!("gb-{i:05}"),
            labels: gb200_labels(i),
        });
    }
    let ext = Extender::new(
        view,
        Arc::new(MemoryPlacementIndex::new()),
        Weights::default(),
    );
    let names: Vec<String> = (0..nodes).map(|i| format!("gb-{i:05}")).collect();
    // This thread's CPU time, which other load on the machine does not inflate.
    let cpu_ms = || {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid timespec for the call to write.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
    };
    let quantiles = |label: &str, mut ms: Vec<f64>, cpu: f64| {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        eprintln!(
            "{label} ({nodes} nodes): p50 {:.2} ms, p99 {:.2} ms, CPU {:.2} ms a call",
            at(0.5),
            at(0.99),
            cpu / ms.len() as f64
        );
    };
    for (label, role) in [
        ("filter, first member of a decode group", Some("decode")),
        ("filter, first member of a group without a role", None),
    ] {
        let mut ms = Vec::with_capacity(calls);
        let mut domain = None;
        let cpu0 = cpu_ms();
        for c in 0..calls {
            let lws = match role {
                Some(_) => format!("g{c}-decode"),
                None => format!("g{c}"),
            };
            let args = ExtenderRequest {
                pod: Some(gpu_pod(&format!("{lws}-0"), &lws, role)),
                nodes: None,
                node_names: Some(names.clone()),
            };
            let t = Instant::now();
            let (f, ex) = ext.filter(black_box(&args));
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            domain = ex.domain.map(|d| d.domain().to_string());
            black_box(f);
        }
        let cpu = cpu_ms() - cpu0;
        eprintln!("{label}: last domain {domain:?}");
        quantiles(label, ms, cpu);
    }
    let args = ExtenderRequest {
        pod: Some(gpu_pod("solo-x", "solo-x", None)),
        nodes: None,
        node_names: Some(names.clone()),
    };
    let mut ms = Vec::with_capacity(calls);
    let cpu0 = cpu_ms();
    for _ in 0..calls {
        let t = Instant::now();
        black_box(ext.prioritize(black_box(&args)));
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    quantiles("prioritize, every name, new group", ms, cpu_ms() - cpu0);
}

criterion_group!(
    benches,
    bench,
    first_member,
    first_member_at_scale,
    agent_latency
);
criterion_main!(benches);
