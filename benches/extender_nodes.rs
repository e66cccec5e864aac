//! Extender in full-Node mode: kube-scheduler without `nodeCacheCapable` sends every candidate
//! as a whole Node object and expects the Nodes that pass back as whole objects.
//!
//! A bench binary (its figures go into BENCHMARKS.md). The extender's router is served on
//! 127.0.0.1 by axum on a 2-worker runtime, as `nodetopo extender` runs; each call is one
//! HTTP/1.1 POST of `filter` on a new connection, timed from connect to the last byte of the
//! answer. Two fleets of 5,000 GB200-tray Nodes carrying nodetopo's labels:
//! - **lean**: name and labels only (about 0.6 KB a Node);
//! - **kubelet-sized**: what a kubelet and its neighbours leave on a real Node (labels,
//!   annotations, managed fields, conditions, addresses, capacity, node info, an image list),
//!   about 15 KB a Node.
//!
//! References, measured in the same run on the same request bytes, in process:
//! - **floor**: reading the JSON once without building anything (`serde::de::IgnoredAny`);
//! - **typed**: decoding the Nodes into k8s-openapi `Node`s and encoding the kept ones again,
//!   which is what the extender did before it kept Nodes as raw JSON.
//!
//! Environment: `CALLS` (default 40) calls per fleet; `FLEETS` (default `lean,kubelet-sized`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    io::{Read, Write},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Node, Pod};
use nodetopo::extender::{
    Extender,
    placed::MemoryPlacementIndex,
    policy::Weights,
    server::{ServerConfig, router},
    view::{ClusterView, LabelKeys, SharedView},
    wire::ExtenderRequest,
};
use serde_json::{Value, json};

use common::{fleet_node_labels, fleet_node_name};

const NODES: usize = 5_000;

fn pod() -> Value {
    json!({
        "metadata": {
            "name": "decode-0", "namespace": "bench",
            "labels": {
                "leaderworkerset.sigs.k8s.io/name": "m-decode",
                "leaderworkerset.sigs.k8s.io/group-index": "0",
                "llm-d.ai/role": "decode", "llm-d.ai/model": "m",
            },
            "annotations": {"leaderworkerset.sigs.k8s.io/size": "8"},
        },
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
            "resources": {"limits": {"nvidia.com/gpu": "4"}}}]},
    })
}

fn lean_node(i: usize) -> Value {
    json!({"metadata": {"name": fleet_node_name(i), "labels": fleet_node_labels(i)}})
}

/// A Node as a kubelet, GPU feature discovery, a CSI driver and the node controller leave it.
fn kubelet_node(i: usize) -> Value {
    let name = fleet_node_name(i);
    let mut labels = fleet_node_labels(i);
    let extra = labels.as_object_mut().expect("labels are an object");
    for (k, v) in [
        ("beta.kubernetes.io/arch", "arm64"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "arm64"),
        ("kubernetes.io/os", "linux"),
        ("node.kubernetes.io/instance-type", "gb200-nvl72-tray"),
        ("topology.kubernetes.io/region", "region-1"),
        ("topology.kubernetes.io/zone", "region-1a"),
        ("nvidia.com/cuda.driver-version.full", "580.95.05"),
        ("nvidia.com/cuda.runtime-version.full", "13.0"),
        ("nvidia.com/gpu.product", "NVIDIA-GB200"),
        ("nvidia.com/gpu.memory", "189471"),
        ("nvidia.com/gpu.count", "4"),
        ("nvidia.com/gpu.family", "blackwell"),
        ("nvidia.com/gpu.compute.major", "10"),
        ("nvidia.com/gpu.compute.minor", "0"),
        (
            "nvidia.com/gpu.clique",
            "5d1e2c3b-0000-4000-8000-000000000000.32766",
        ),
        ("nvidia.com/mig.capable", "true"),
        ("nvidia.com/gpu.present", "true"),
        ("nvidia.com/gpu.deploy.driver", "pre-installed"),
        ("nvidia.com/gpu.deploy.device-plugin", "true"),
        ("nvidia.com/gpu.deploy.gpu-feature-discovery", "true"),
        ("nvidia.com/gpu.deploy.dcgm-exporter", "true"),
        ("feature.node.kubernetes.io/rdma.available", "true"),
        ("feature.node.kubernetes.io/pci-15b3.present", "true"),
        ("feature.node.kubernetes.io/cpu-model.vendor_id", "ARM"),
        (
            "feature.node.kubernetes.io/kernel-version.full",
            "6.8.0-1021-nvidia-64k",
        ),
    ] {
        extra.insert(k.into(), v.into());
    }
    extra.insert("kubernetes.io/hostname".into(), name.clone().into());
    let images: Vec<Value> = (0..50)
        .map(|k| {
            json!({
                "names": [
                    format!("registry.example.com/inference/image-{k:02}@sha256:{:064x}", k * 7919 + 13),
                    format!("registry.example.com/inference/image-{k:02}:v1.{k}.0"),
                ],
                "sizeBytes": 1_000_000_000u64 + k as u64 * 37_000_000,
            })
        })
        .collect();
    let condition = |t: &str, status: &str, reason: &str, msg: &str| {
        json!({"type": t, "status": status, "reason": reason, "message": msg,
               "lastHeartbeatTime": "2026-12-01T10:00:00Z",
               "lastTransitionTime": "2026-11-20T08:00:00Z"})
    };
    let managed = |manager: &str, fields: Value| {
        json!({"manager": manager, "operation": "Update", "apiVersion": "v1",
               "time": "2026-12-01T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields})
    };
    json!({
        "metadata": {
            "name": name,
            "uid": format!("{i:08x}-1111-4222-8333-444455556666"),
            "resourceVersion": format!("{}", 100_000 + i),
            "creationTimestamp": "2026-11-20T08:00:00Z",
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "csi.volume.kubernetes.io/nodeid": format!("{{\"csi.example.com\":\"{name}\"}}"),
                "nfd.node.kubernetes.io/feature-labels": "cpu-model.vendor_id,kernel-version.full,pci-15b3.present,rdma.available",
                "nvidia.com/gpu-driver-upgrade-enabled": "true",
            },
            "managedFields": [
                managed("kubelet", json!({"f:metadata": {"f:annotations": {".": {},
                    "f:node.alpha.kubernetes.io/ttl": {}, "f:volumes.kubernetes.io/controller-managed-attach-detach": {}},
                    "f:labels": {".": {}, "f:beta.kubernetes.io/arch": {}, "f:beta.kubernetes.io/os": {},
                    "f:kubernetes.io/arch": {}, "f:kubernetes.io/hostname": {}, "f:kubernetes.io/os": {}}}})),
                managed("kubelet", json!({"f:status": {"f:allocatable": {"f:cpu": {}, "f:memory": {},
                    "f:nvidia.com/gpu": {}}, "f:capacity": {"f:cpu": {}, "f:memory": {}, "f:nvidia.com/gpu": {}},
                    "f:conditions": {"k:{\"type\":\"DiskPressure\"}": {"f:lastHeartbeatTime": {}},
                    "k:{\"type\":\"MemoryPressure\"}": {"f:lastHeartbeatTime": {}},
                    "k:{\"type\":\"PIDPressure\"}": {"f:lastHeartbeatTime": {}},
                    "k:{\"type\":\"Ready\"}": {"f:lastHeartbeatTime": {}, "f:message": {}, "f:reason": {}, "f:status": {}}},
                    "f:images": {}, "f:nodeInfo": {"f:bootID": {}, "f:kernelVersion": {}}}})),
                managed("nodetopo", json!({"f:metadata": {"f:labels": {"f:nodetopo.io/gpu.count": {},
                    "f:nodetopo.io/gpu.product": {}, "f:nodetopo.io/nvlink.cluster": {},
                    "f:nodetopo.io/nvlink.domain": {}, "f:nodetopo.io/nvlink.fabric": {},
                    "f:nodetopo.io/rdma.ib-subnet": {}, "f:nodetopo.io/rdma.link-layer": {}}}})),
                managed("gpu-feature-discovery", json!({"f:metadata": {"f:labels": {
                    "f:nvidia.com/cuda.driver-version.full": {}, "f:nvidia.com/gpu.product": {},
                    "f:nvidia.com/gpu.memory": {}, "f:nvidia.com/gpu.count": {}, "f:nvidia.com/gpu.family": {},
                    "f:nvidia.com/gpu.clique": {}, "f:nvidia.com/mig.capable": {}}}})),
            ],
        },
        "spec": {
            "podCIDR": format!("10.{}.{}.0/24", i / 256, i % 256),
            "podCIDRs": [format!("10.{}.{}.0/24", i / 256, i % 256)],
            "providerID": format!("metal://region-1a/{name}"),
        },
        "status": {
            "capacity": {"cpu": "144", "ephemeral-storage": "3750000000Ki", "hugepages-2Mi": "0",
                         "memory": "1980000000Ki", "nvidia.com/gpu": "4", "pods": "110"},
            "allocatable": {"cpu": "142", "ephemeral-storage": "3450000000Ki", "hugepages-2Mi": "0",
                            "memory": "1970000000Ki", "nvidia.com/gpu": "4", "pods": "110"},
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": format!("10.200.{}.{}", i / 256, i % 256)},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": format!("{:032x}", i * 104_729), "systemUUID": format!("{i:08x}-aaaa-4bbb-8ccc-ddddeeeeffff"),
                "bootID": format!("{i:08x}-0000-4000-8000-000000000001"), "kernelVersion": "6.8.0-1021-nvidia-64k",
                "osImage": "Ubuntu 24.04.3 LTS", "containerRuntimeVersion": "containerd://2.1.4",
                "kubeletVersion": "v1.34.1", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "arm64"},
            "images": images,
        },
    })
}

fn request(nodes: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"Pod": pod(), "Nodes": {"metadata": {}, "items": nodes}}))
        .expect("encode the request")
}

/// One `filter` call on a new connection: (time, status line, body length).
fn post(port: u16, body: &[u8]) -> (Duration, String, usize) {
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    write!(
        s,
        "POST /filter HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("write the head");
    // The server may answer (413) before the whole body is sent.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let took = t0.elapsed();
    let status = String::from_utf8_lossy(&out[..out.len().min(40)])
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    (took, status, out.len())
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median of `n` runs of `f`.
fn median(n: usize, mut f: impl FnMut()) -> Duration {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    pct(&mut v, 0.5)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes bench binaries; there is nothing to list.
    }
    let calls: usize = std::env::var("CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let fleets = std::env::var("FLEETS").unwrap_or_else(|_| "lean,kubelet-sized".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let view = SharedView::new(ClusterView::new(LabelKeys {
        prefix: "nodetopo.io".into(),
        block_label: Some("network.example.com/leaf".into()),
    }));
    let ext = Extender::new(
        view,
        Arc::new(MemoryPlacementIndex::new()),
        Weights::default(),
    );
    let cfg = ServerConfig::default();
    let limit = cfg.body_limit;
    let app = router(ext.clone(), cfg);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    rt.spawn(async move { axum::serve(listener, app).await });
    println!(
        "extender full-Node mode, {NODES} Nodes per request, body limit {:.0} MiB, {calls} calls per fleet",
        limit as f64 / (1 << 20) as f64
    );
    for (fleet, make) in [
        ("lean", lean_node as fn(usize) -> Value),
        ("kubelet-sized", kubelet_node),
    ] {
        if !fleets.split(',').any(|f| f == fleet) {
            continue;
        }
        let body = request((0..NODES).map(make).collect());
        let per_node = body.len() / NODES;
        // Warm-up, and the answer's size.
        let (_, status, answer) = post(port, &body);
        if !status.contains("200") {
            println!(
                "{fleet}: request {:.1} MiB ({per_node} B/Node): answered `{status}`",
                body.len() as f64 / (1 << 20) as f64
            );
            continue;
        }
        let mut lat: Vec<Duration> = (0..calls)
            .map(|_| {
                let (t, status, _) = post(port, &body);
                assert!(status.contains("200"), "{status}");
                t
            })
            .collect();
        let floor = median(calls.min(20), || {
            let _: serde::de::IgnoredAny =
                serde_json::from_slice(std::hint::black_box(&body)).expect("valid JSON");
        });
        let typed = median(calls.min(20), || {
            #[derive(serde::Deserialize)]
            struct Args {
                #[serde(rename = "Pod")]
                _pod: Pod,
                #[serde(rename = "Nodes")]
                nodes: k8s_openapi::List<Node>,
            }
            let a: Args = serde_json::from_slice(std::hint::black_box(&body)).expect("typed");
            let kept: Vec<&Node> = a.nodes.items.iter().take(18).collect();
            std::hint::black_box(serde_json::to_vec(&kept).expect("encode"));
        });
        // The extender's own two steps, in process: reading the request, then the filter.
        let parse = median(calls.min(20), || {
            let a: ExtenderRequest =
                serde_json::from_slice(std::hint::black_box(&body)).expect("request");
            std::hint::black_box(a);
        });
        let args: ExtenderRequest = serde_json::from_slice(&body).expect("request");
        let filter = median(calls.min(20), || {
            std::hint::black_box(ext.filter(std::hint::black_box(&args)));
        });
        let answer_encode = median(calls.min(20), || {
            let (r, _) = ext.filter(&args);
            std::hint::black_box(serde_json::to_vec(&r).expect("encode"));
        });
        println!(
            "{fleet}: in process: read the request {:.2} ms, filter {:.2} ms, filter + encode the answer {:.2} ms",
            ms(parse),
            ms(filter),
            ms(answer_encode)
        );
        let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
        println!(
            "{fleet}: request {:.1} MiB ({per_node} B/Node), answer {answer} B: filter over HTTP p50 {:.2} ms p99 {:.2} ms; \
             in process: floor (read the JSON once) {:.2} ms, typed k8s-openapi decode + re-encode {:.2} ms; \
             p50 / floor {:.2}, p50 / typed {:.2}",
            body.len() as f64 / (1 << 20) as f64,
            ms(p50),
            ms(p99),
            ms(floor),
            ms(typed),
            p50.as_secs_f64() / floor.as_secs_f64(),
            p50.as_secs_f64() / typed.as_secs_f64(),
        );
    }
}
