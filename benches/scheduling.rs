//! Scheduling throughput with a real kube-scheduler (a bench binary; figures in BENCHMARKS.md).
//!
//! One control plane (etcd and kube-apiserver on 127.0.0.1, from tests/e2e/build-kube.sh),
//! 5,000 GB200-tray Nodes (4 GPUs, NVL72 racks of 18 trays in two cliques of 9, nodetopo
//! labels), and 1,000 GPU pods in 125 LeaderWorkerSet groups of 8. Each run creates the pods,
//! then starts a kube-scheduler and times from its start until every pod is bound, read from the
//! API server. Runs alternate between kube-scheduler alone (the reference) and kube-scheduler
//! calling `nodetopo extender` (release build, names-only mode, Node and Pod watches), so both
//! see the same machine state. Then the extender's filter and prioritize are timed over HTTP as
//! kube-scheduler calls them, at 5,000 nodes, and the extender's resident memory is read.
//!
//! Run: `cargo bench --locked --features e2e --bench scheduling` (NODETOPO_KUBE_BIN as for the
//! end-to-end suite; RUNS=N pairs, default 2).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::{
    io::{Read, Write},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use harness::{ControlPlane, NODETOPO};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

const NODES: usize = 5_000;
const GROUPS: usize = 125;
const GROUP_SIZE: usize = 8;
const NS: &str = "bench";
/// The alpha and beta gates of kube-scheduler's own topology-aware workload scheduling.
const NATIVE_GATES: &str = "GenericWorkload=true,TopologyAwareWorkloadScheduling=true";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        harness::terminate(&mut self.0, Duration::from_secs(5));
    }
}

use common::{fleet_node_labels as node_labels, fleet_node_name as node_name};

async fn create_nodes(client: &Client) {
    use futures::StreamExt;
    let api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..NODES)
        .for_each_concurrent(32, |i| {
            let api = api.clone();
            async move {
                let name = node_name(i);
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": node_labels(i)},
                    "spec": {},
                }))
                .unwrap();
                api.create(&PostParams::default(), &node).await.unwrap();
                let status = json!({"status": {
                    "capacity": {"cpu": "144", "memory": "900Gi", "pods": "110", "nvidia.com/gpu": "4"},
                    "allocatable": {"cpu": "144", "memory": "900Gi", "pods": "110", "nvidia.com/gpu": "4"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "bench", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                }});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .unwrap();
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"spec": {"taints": null}})),
                )
                .await
                .unwrap();
            }
        })
        .await;
}

fn pod(run: usize, group: usize, index: usize, _native: bool) -> Pod {
    let lws = format!("r{run}-m{group}-decode");
    serde_json::from_value(json!({
        "metadata": {"name": format!("{lws}-0-{index}"), "namespace": NS,
            "labels": {
                "leaderworkerset.sigs.k8s.io/name": lws,
                "leaderworkerset.sigs.k8s.io/group-index": "0",
                "leaderworkerset.sigs.k8s.io/worker-index": index.to_string(),
            },
            "annotations": {"leaderworkerset.sigs.k8s.io/size": GROUP_SIZE.to_string()}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
            "resources": {"limits": {"nvidia.com/gpu": "4"}}}]},
    }))
    .unwrap()
}

/// The PodGroup of each group: all 8 pods or none (gang), in one `nodetopo.io/nvlink.domain`.
fn create_pod_groups(cp: &ControlPlane, run: usize) {
    let docs: String = (0..GROUPS)
        .map(|g| {
            let v = json!({
                "apiVersion": "scheduling.k8s.io/v1beta1", "kind": "PodGroup",
                "metadata": {"name": format!("r{run}-m{g}-decode"), "namespace": NS},
                "spec": {
                    "schedulingPolicy": {"gang": {"minCount": GROUP_SIZE}},
                    "schedulingConstraints": {"topology": [{"key": "nodetopo.io/nvlink.domain"}]},
                },
            });
            format!("---\n{v}\n")
        })
        .collect();
    let out = cp.kubectl_input(&["apply", "--server-side", "-f", "-"], &docs);
    assert!(
        out.status.success(),
        "PodGroups refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pods of every group as JSON (k8s-openapi's `Pod` predates `spec.schedulingGroup`, so the
/// native setup's pods are sent as they are written here).
fn pod_json(run: usize, group: usize, index: usize, native: bool) -> serde_json::Value {
    let mut v = serde_json::to_value(pod(run, group, index, false)).unwrap();
    if native {
        v["spec"]["schedulingGroup"] = json!({"podGroupName": format!("r{run}-m{group}-decode")});
    }
    v
}

async fn create_pods(cp: &ControlPlane, client: &Client, run: usize, native: bool) {
    use futures::StreamExt;
    if native {
        let docs: String = (0..GROUPS)
            .flat_map(|g| {
                (0..GROUP_SIZE).map(move |i| format!("---\n{}\n", pod_json(run, g, i, true)))
            })
            .collect();
        let out = cp.kubectl_input(&["create", "-f", "-"], &docs);
        assert!(
            out.status.success(),
            "pods refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    // Group by group, in order, as the LWS controller creates them.
    futures::stream::iter((0..GROUPS).flat_map(|g| (0..GROUP_SIZE).map(move |i| (g, i))))
        .for_each_concurrent(16, |(g, i)| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &pod(run, g, i, native))
                    .await
                    .unwrap();
            }
        })
        .await;
}

async fn bound_count(client: &Client) -> (usize, usize) {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let list = api.list(&ListParams::default()).await.unwrap();
    let bound = list
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .count();
    (bound, list.items.len())
}

/// Pods whose group sits in more than one clique.
async fn split_groups(client: &Client) -> usize {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut by_group: std::collections::BTreeMap<String, std::collections::BTreeSet<usize>> =
        Default::default();
    for p in api.list(&ListParams::default()).await.unwrap().items {
        let g = p.metadata.labels.unwrap()["leaderworkerset.sigs.k8s.io/name"].clone();
        let node = p.spec.unwrap().node_name.unwrap();
        let i: usize = node[3..].parse().unwrap();
        by_group.entry(g).or_default().insert(i / 9);
    }
    by_group.values().filter(|c| c.len() > 1).count()
}

/// What kube-scheduler runs with.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    /// Stock defaults: kube-scheduler stops filtering at an adaptive sample of the nodes.
    Alone,
    /// Every feasible node scored, as the shipped extender configuration sets.
    AloneAllNodes,
    /// The shipped configuration: the extender, managedResources, percentageOfNodesToScore 100.
    Extender,
    /// No extender: kube-scheduler's own topology-aware workload scheduling (alpha in 1.37:
    /// feature gates GenericWorkload and TopologyAwareWorkloadScheduling), one PodGroup per
    /// group with the gang policy and the topology key `nodetopo.io/nvlink.domain`.
    Native,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Alone => "kube-scheduler alone (defaults)",
            Setup::AloneAllNodes => "kube-scheduler alone, percentageOfNodesToScore 100",
            Setup::Extender => "kube-scheduler + nodetopo extender (shipped configuration)",
            Setup::Native => "kube-scheduler, native topology-aware PodGroups (alpha gates)",
        }
    }
}

fn scheduler(cp: &ControlPlane, setup: Setup, ext_port: u16, tag: &str) -> Proc {
    let mut cfg = match setup {
        Setup::Alone | Setup::Native => json!({
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
        }),
        Setup::AloneAllNodes => json!({
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "percentageOfNodesToScore": 100,
        }),
        Setup::Extender => {
            let shipped = std::fs::read_to_string(format!(
                "{}/daemonset/extender/scheduler-config.yaml",
                harness::ROOT
            ))
            .unwrap();
            let cm: serde_json::Value = serde_yaml_ng::from_str(&shipped).unwrap();
            let mut cfg: serde_json::Value =
                serde_yaml_ng::from_str(cm["data"]["scheduler-config.yaml"].as_str().unwrap())
                    .unwrap();
            cfg["extenders"][0]["urlPrefix"] = json!(format!("http://127.0.0.1:{ext_port}/"));
            cfg
        }
    };
    // The same generous client limits in every setup, so the API client is not the bound.
    cfg["clientConnection"] = json!({"kubeconfig": cp.admin_kubeconfig.display().to_string(),
        "qps": 5000, "burst": 5000});
    cfg["leaderElection"] = json!({"leaderElect": false});
    let path = cp
        .admin_kubeconfig
        .with_file_name(format!("sched-{tag}.yaml"));
    std::fs::write(&path, cfg.to_string()).unwrap();
    let log = std::fs::File::create(
        cp.admin_kubeconfig
            .with_file_name(format!("sched-{tag}.log")),
    )
    .unwrap();
    Proc(
        Command::new(harness::bin("kube-scheduler"))
            .arg(format!("--config={}", path.display()))
            .arg("--secure-port=0")
            .args((setup == Setup::Native).then_some(format!("--feature-gates={NATIVE_GATES}")))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn extender(cp: &ControlPlane) -> (Proc, u16) {
    let port = harness::free_port();
    let child = Command::new(NODETOPO)
        .args(["extender", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--block-label", "network.example.com/leaf"])
        .args(["--agent-port", &harness::free_port().to_string()])
        .env("KUBECONFIG", &cp.admin_kubeconfig)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    (Proc(child), port)
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// One POST over a fresh loopback connection, as kube-scheduler's HTTP client would on a cold
/// connection; returns the round trip.
fn post(port: u16, path: &str, body: &[u8]) -> Duration {
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out[..out.len().min(200)])
    );
    t0.elapsed()
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes bench binaries; there is nothing to list.
    }
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let cp = ControlPlane::start(harness::Options {
        apiserver_args: &[
            "--feature-gates=GenericWorkload=true,TopologyAwareWorkloadScheduling=true",
            "--runtime-config=scheduling.k8s.io/v1beta1=true",
        ],
        ..harness::Options::default()
    });
    let client = cp.admin().await;
    cp.kubectl(&["create", "namespace", NS]);
    cp.kubectl(&["create", "serviceaccount", "default", "--namespace", NS]);
    let t0 = Instant::now();
    create_nodes(&client).await;
    eprintln!(
        "{NODES} nodes created in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let (ext, port) = extender(&cp);
    // Let the Node watch fill the view.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = [
        Setup::Alone,
        Setup::AloneAllNodes,
        Setup::Extender,
        Setup::Native,
    ];
    // SETUPS=0,3 picks some (indices into the list above).
    let setups: Vec<Setup> = match std::env::var("SETUPS") {
        Ok(v) => v
            .split(',')
            .filter_map(|i| all.get(i.parse::<usize>().ok()?).copied())
            .collect(),
        Err(_) => all.to_vec(),
    };
    let mut results: Vec<(Setup, f64, usize)> = Vec::new();
    for run in 0..runs * setups.len() {
        let setup = setups[run % setups.len()];
        let native = setup == Setup::Native;
        if native {
            create_pod_groups(&cp, run);
        }
        create_pods(&cp, &client, run, native).await;
        let start = Instant::now();
        let sched = scheduler(&cp, setup, port, &format!("{run}"));
        loop {
            let (b, n) = bound_count(&client).await;
            if b == n {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "run {run}: {b}/{n} bound"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = start.elapsed().as_secs_f64();
        drop(sched);
        let split = split_groups(&client).await;
        let rate = (GROUPS * GROUP_SIZE) as f64 / took;
        eprintln!(
            "run {run}: {}: {took:.1} s, {rate:.0} pods/s, {split} of {GROUPS} groups split over cliques",
            setup.name()
        );
        results.push((setup, rate, split));
        harness::delete_pods(&client, NS).await;
    }

    // Extender calls over HTTP at 5,000 nodes, as kube-scheduler sends them (names only), for
    // the first member of a new group (domain choice over every node).
    let names: Vec<String> = (0..NODES).map(node_name).collect();
    let body =
        serde_json::to_vec(&json!({"Pod": pod(99, 0, 0, false), "NodeNames": names})).unwrap();
    let mut filter = Vec::new();
    let mut prioritize = Vec::new();
    for _ in 0..200 {
        filter.push(post(port, "/filter", &body));
        prioritize.push(post(port, "/prioritize", &body));
    }
    let rss = rss_mib(ext.0.id());
    println!("| setup | pods/s, each run | mean pods/s | groups split over cliques, each run |");
    println!("|---|---|---:|---|");
    let mean = |n: Setup| {
        let v: Vec<f64> = results.iter().filter(|r| r.0 == n).map(|r| r.1).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    for &setup in &setups {
        let of = || results.iter().filter(move |r| r.0 == setup);
        let rates: Vec<String> = of().map(|r| format!("{:.0}", r.1)).collect();
        let split: Vec<String> = of().map(|r| format!("{}/{GROUPS}", r.2)).collect();
        println!(
            "| {} | {} | {:.0} | {} |",
            setup.name(),
            rates.join(", "),
            mean(setup),
            split.join(", ")
        );
    }
    for reference in [Setup::Alone, Setup::AloneAllNodes] {
        let ratio = mean(Setup::Extender) / mean(reference);
        println!(
            "\nwith the extender / {}: {ratio:.2} ({:.0} % cost)",
            reference.name(),
            (1.0 - ratio) * 100.0
        );
    }
    println!(
        "filter over HTTP, {NODES} nodes: p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut filter, 0.5).as_secs_f64() * 1e3,
        pct(&mut filter, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "prioritize over HTTP, {NODES} nodes: p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut prioritize, 0.5).as_secs_f64() * 1e3,
        pct(&mut prioritize, 0.99).as_secs_f64() * 1e3
    );
    println!("extender resident memory with {NODES} nodes in the view: {rss:.1} MiB");
}
