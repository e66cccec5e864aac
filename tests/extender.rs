//! End to end: the real `nodetopo extender` binary fed by real agents (replayed GB200 trays over
//! gRPC) and by snapshot files, asked to place an LWS decode group and then a prefill group the
//! way kube-scheduler would, over 127.0.0.1.
//!
//! The synthetic cluster: two GB200 NVL72 racks (18 trays each, two cliques per rack, one
//! NVLink cluster per rack) on one InfiniBand subnet with one leaf block per rack, and eight
//! RoCE nodes. Four rack-A trays are real agents replaying the GB200 fixtures (one of them a
//! degraded fabric); the rest are snapshot files generated here.

mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use nodetopo::model::{Fabric, FabricState, Gpu, LinkLayer, Nic, NicPort, NodeTopology, PortState};
use serde_json::{Value, json};

const GB200: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gb200");
const LEAF: &str = "network.topology.nvidia.com/leaf";
const SUBNET: &str = "fe80:0000:0000:0000";
const DEADLINE: Duration = Duration::from_secs(30);

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the test knows about each node (the truth to check placements against).
#[derive(Debug, Clone)]
struct Truth {
    cluster: Option<String>,
    clique: Option<u32>,
    link_layer: LinkLayer,
    healthy: bool,
}

fn ib_nics(n: usize) -> Vec<Nic> {
    (0..n)
        .map(|i| Nic {
            name: format!("mlx5_{i}"),
            ports: vec![NicPort {
                port: 1,
                state: PortState::Active,
                link_layer: LinkLayer::Infiniband,
                rate_gbps: 400.0,
                subnet_prefix: SUBNET.into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect()
}

fn roce_nics(n: usize) -> Vec<Nic> {
    (0..n)
        .map(|i| Nic {
            name: format!("mlx5_{i}"),
            ports: vec![NicPort {
                port: 1,
                state: PortState::Active,
                link_layer: LinkLayer::Ethernet,
                rate_gbps: 400.0,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect()
}

/// The topology that the real probe derives from a GB200 fixture (its cluster UUID is the one
/// the agents will report).
fn probe_fixture(fixture: &str, sysfs: &Path) -> NodeTopology {
    let out = common::nodetopo()
        .args(["probe", "-o", "json", "--replay"])
        .arg(Path::new(GB200).join(fixture))
        .arg("--sysfs-root")
        .arg(sysfs)
        .stdout_ok();
    serde_json::from_str(&out).expect("probe json")
}

struct Cluster {
    dir: tempfile::TempDir,
    truth: BTreeMap<String, Truth>,
    agents_file: PathBuf,
    agents: BTreeMap<String, (Proc, String)>,
    sysfs: PathBuf,
}

/// Starts an agent replaying `fixture` for `node`, its gRPC server on `grpc` or, with `None`,
/// on a port the kernel picks, which the agent's own "agent listening" log line names. A port
/// picked here and bound later by the agent could be taken meanwhile, by another test's agent
/// among others, and the extender would then read that agent as this node's. Returns the agent
/// and its gRPC address.
fn spawn_agent(
    node: &str,
    fixture: &str,
    sysfs: &Path,
    dir: &Path,
    grpc: Option<&str>,
) -> (Proc, String) {
    let snap = dir.join(format!("{node}.nvml.json"));
    std::fs::copy(Path::new(GB200).join(fixture), &snap).unwrap();
    let mut child = common::nodetopo()
        .args([
            "--log-format",
            "json",
            "agent",
            "--no-kube",
            "--interval",
            "200ms",
            "--node-name",
            node,
        ])
        .arg("--replay")
        .arg(&snap)
        .arg("--sysfs-root")
        .arg(sysfs)
        .args(["--grpc-listen", grpc.unwrap_or("127.0.0.1:0")])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "nodetopo=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads the log to its end, so that the agent never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == "agent listening" {
                let addr = v["fields"]["grpc"].as_str().unwrap_or_default();
                let addr = addr.trim_start_matches("Some(").trim_end_matches(')');
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let proc_ = Proc(child);
    let addr = rx
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|e| panic!("{node}'s agent never said where it listens: {e}"));
    (proc_, addr)
}

/// Real agents for these rack-A trays: (node, fixture).
const REAL: [(&str, &str); 4] = [
    ("gb-a-00", "tray-a1.json"),
    ("gb-a-01", "tray-a2.json"),
    ("gb-a-08", "tray-degraded.json"),
    ("gb-a-09", "tray-b1.json"),
];

fn build_cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let sysfs = dir.path().join("sys");
    std::fs::create_dir_all(&sysfs).unwrap();
    let template = probe_fixture("tray-a1.json", &sysfs);
    let cluster_a = template
        .fabric
        .cluster_uuid
        .clone()
        .expect("fixture cluster");
    let cluster_b = "0b1c2d3e-5a6b-47c8-a9d0-e1f2a3b4c5d6".to_string();

    let mut truth = BTreeMap::new();
    let mut agents_yaml = serde_json::Map::new();
    let mut agents = BTreeMap::new();
    let ib_labels = |leaf: &str| {
        json!({
            LEAF: leaf,
            "nodetopo.io/rdma.link-layer": "infiniband",
            "nodetopo.io/rdma.ib-subnet": SUBNET.replace(':', "-"),
        })
    };
    for (rack, cluster, leaf) in [("a", &cluster_a, "leaf-1"), ("b", &cluster_b, "leaf-2")] {
        for tray in 0..18u32 {
            let node = format!("gb-{rack}-{tray:02}");
            let clique = if tray < 9 { 1 } else { 2 };
            let real = REAL.iter().find(|(n, _)| *n == node);
            let healthy = !matches!(real, Some((_, f)) if f.contains("degraded"));
            truth.insert(
                node.clone(),
                Truth {
                    cluster: Some(cluster.clone()),
                    clique: Some(clique),
                    link_layer: LinkLayer::Infiniband,
                    healthy,
                },
            );
            if let Some((_, fixture)) = real {
                let (p, grpc) = spawn_agent(&node, fixture, &sysfs, dir.path(), None);
                agents_yaml.insert(
                    node.clone(),
                    json!({"endpoint": grpc, "labels": ib_labels(leaf)}),
                );
                agents.insert(node, (p, grpc));
                continue;
            }
            let t = NodeTopology {
                node_name: node.clone(),
                revision: 1,
                gpus: template.gpus.clone(),
                fabric: Fabric {
                    state: FabricState::Ready,
                    reason: "synthetic".into(),
                    domain: Some(format!("{cluster}.{clique}")),
                    cluster_uuid: Some(cluster.clone()),
                    clique_id: Some(clique),
                },
                nics: ib_nics(4),
                ..Default::default()
            };
            let path = dir.path().join(format!("{node}.json"));
            std::fs::write(&path, serde_json::to_string(&t).unwrap()).unwrap();
            agents_yaml.insert(
                node,
                json!({"endpoint": format!("file:{}", path.display()), "labels": {LEAF: leaf}}),
            );
        }
    }
    for i in 0..8 {
        let node = format!("roce-{i:02}");
        truth.insert(
            node.clone(),
            Truth {
                cluster: None,
                clique: None,
                link_layer: LinkLayer::Ethernet,
                healthy: true,
            },
        );
        let t = NodeTopology {
            node_name: node.clone(),
            revision: 1,
            gpus: vec![Gpu::default(); 8],
            fabric: Fabric {
                state: FabricState::None,
                ..Default::default()
            },
            nics: roce_nics(8),
            ..Default::default()
        };
        let path = dir.path().join(format!("{node}.json"));
        std::fs::write(&path, serde_json::to_string(&t).unwrap()).unwrap();
        agents_yaml.insert(
            node,
            json!({"endpoint": format!("file:{}", path.display()), "labels": {LEAF: "roce-1"}}),
        );
    }
    let agents_file = dir.path().join("agents.json");
    std::fs::write(&agents_file, Value::Object(agents_yaml).to_string()).unwrap();
    Cluster {
        dir,
        truth,
        agents_file,
        agents,
        sysfs,
    }
}

/// Minimal HTTP/1.1 client (one request per connection).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the extender");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // axum answers small bodies with Content-Length; chunked only for streams, not used here.
    (status, rest.to_string())
}

fn post(addr: &str, path: &str, body: &Value) -> Value {
    let (status, text) = http(addr, "POST", path, &body.to_string());
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

struct Extender {
    _proc: Proc,
    addr: String,
}

fn start_extender(agents_file: &Path) -> Extender {
    let mut child = common::nodetopo()
        .args([
            "extender",
            "--no-kube",
            "--listen",
            "127.0.0.1:0",
            "--debug-placements",
        ])
        .arg("--agents")
        .arg(agents_file)
        .args([
            "--block-label",
            LEAF,
            "--backoff-base",
            "100ms",
            "--backoff-max",
            "400ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Extender {
        _proc: Proc(child),
        addr,
    }
}

fn view(addr: &str) -> BTreeMap<String, Value> {
    let (status, text) = http(addr, "GET", "/debug/view", "");
    assert_eq!(status, 200);
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap();
    rows.into_iter()
        .map(|r| (r["node"].as_str().unwrap_or_default().to_string(), r))
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pod(name: &str, lws: &str, role: &str, node: Option<&str>) -> Value {
    let mut p = json!({
        "metadata": {
            "name": name,
            "namespace": "serving",
            "labels": {
                "leaderworkerset.sigs.k8s.io/name": lws,
                "leaderworkerset.sigs.k8s.io/group-index": "0",
                "leaderworkerset.sigs.k8s.io/worker-index": name.rsplit('-').next().unwrap_or("0"),
                "llm-d.ai/role": role,
                "llm-d.ai/model": "llama",
            },
            "annotations": {"leaderworkerset.sigs.k8s.io/size": "4"},
        },
        "spec": {"containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": "4"}}}]},
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

/// Schedules one pod the way kube-scheduler does with `nodeCacheCapable: true`: filter, then
/// prioritize the survivors, then bind to the best (ties: first name). Returns the node and
/// the filter answer.
fn schedule(addr: &str, p: &Value, free: &[String]) -> (String, Value) {
    let args = json!({"Pod": p, "NodeNames": free});
    let filtered = post(addr, "/filter", &args);
    assert_eq!(filtered["Error"], "");
    let passed: Vec<String> = serde_json::from_value(filtered["NodeNames"].clone()).unwrap();
    assert!(
        passed.iter().all(|n| free.contains(n)),
        "filter output ⊆ input"
    );
    assert!(!passed.is_empty(), "no node passed: {filtered}");
    let scores = post(addr, "/prioritize", &json!({"Pod": p, "NodeNames": passed}));
    let mut best: Option<(i64, String)> = None;
    for h in scores.as_array().unwrap() {
        let score = h["Score"].as_i64().unwrap();
        assert!((0..=10).contains(&score));
        let host = h["Host"].as_str().unwrap().to_string();
        if best
            .as_ref()
            .is_none_or(|(s, n)| score > *s || (score == *s && host < *n))
        {
            best = Some((score, host));
        }
    }
    let node = best.unwrap().1;
    let mut bound = p.clone();
    bound["spec"]["nodeName"] = json!(node);
    let (status, text) = http(addr, "POST", "/debug/placed", &bound.to_string());
    assert_eq!(status, 204, "{text}");
    (node, filtered)
}

#[test]
fn places_decode_then_prefill_by_topology_and_falls_back_to_labels() {
    let mut c = build_cluster();
    let ext = start_extender(&c.agents_file);
    let addr = ext.addr.clone();
    let total = c.truth.len();
    wait_until("every node live", || {
        let v = view(&addr);
        v.len() == total && v.values().all(|r| r["freshness"] == "live")
    });
    // The agents' own data arrived over gRPC: the degraded tray says so.
    assert_eq!(view(&addr)["gb-a-08"]["facts"]["fabric_state"], "degraded");

    let mut free: Vec<String> = c.truth.keys().cloned().collect();
    let mut decode = Vec::new();
    for i in 0..4 {
        let p = pod(
            &format!("llama-decode-0-{i}"),
            "llama-decode",
            "decode",
            None,
        );
        let (node, filtered) = schedule(&addr, &p, &free);
        if i > 0 {
            // Once the group is on IB + MNNVL: no RoCE node, no other rack, no degraded tray.
            let failed = filtered["FailedAndUnresolvableNodes"].as_object().unwrap();
            for (n, t) in &c.truth {
                let bad = t.link_layer != LinkLayer::Infiniband
                    || t.cluster != c.truth[&decode[0]].cluster
                    || !t.healthy;
                if bad && free.contains(n) {
                    assert!(failed.contains_key(n), "{n} should fail: {filtered}");
                }
            }
            assert!(failed["roce-00"].as_str().unwrap().contains("link layer"));
            assert!(failed["gb-a-08"].as_str().unwrap().contains("degraded"));
        }
        free.retain(|n| *n != node);
        decode.push(node);
    }
    let t0 = &c.truth[&decode[0]];
    for n in &decode {
        let t = &c.truth[n];
        assert_eq!(t.link_layer, LinkLayer::Infiniband, "{decode:?}");
        assert_eq!(
            (&t.cluster, t.clique),
            (&t0.cluster, t0.clique),
            "one clique: {decode:?}"
        );
        assert!(t.healthy);
    }
    // The first choice was a real agent's tray, so gRPC data drove the placement.
    assert!(c.agents.contains_key(&decode[0]), "{decode:?}");

    let mut prefill = Vec::new();
    for i in 0..4 {
        let p = pod(
            &format!("llama-prefill-0-{i}"),
            "llama-prefill",
            "prefill",
            None,
        );
        let (node, _) = schedule(&addr, &p, &free);
        free.retain(|n| *n != node);
        prefill.push(node);
    }
    for n in &prefill {
        let t = &c.truth[n];
        assert_eq!(t.link_layer, LinkLayer::Infiniband, "{prefill:?}");
        assert_eq!(
            t.cluster, t0.cluster,
            "prefill in the decode NVLink cluster: {prefill:?}"
        );
        assert!(t.healthy);
    }

    // Agent disconnect: gb-a-09's agent dies; the node goes stale, and a request that carries
    // its Node object (with the agent's labels) is answered from those labels.
    let (proc_, grpc) = c.agents.remove("gb-a-09").unwrap();
    drop(proc_);
    wait_until("gb-a-09 stale", || {
        view(&addr)["gb-a-09"]["freshness"] == "stale"
    });
    let labels = json!({
        "nodetopo.io/gpu.count": "4",
        "nodetopo.io/nvlink.fabric": "ready",
        "nodetopo.io/nvlink.domain": format!("{}.2", t0.cluster.as_deref().unwrap()),
        "nodetopo.io/rdma.link-layer": "infiniband",
        LEAF: "leaf-1",
    });
    let args = json!({
        "Pod": pod("llama-decode-1-0", "llama-decode", "decode", None),
        "Nodes": {"items": [{"metadata": {"name": "gb-a-09", "labels": labels}}]},
    });
    let ex = post(&addr, "/debug/explain", &args);
    assert_eq!(ex["scores"][0]["freshness"], "labels-only", "{ex}");
    let f = post(&addr, "/filter", &args);
    assert_eq!(f["Nodes"]["items"][0]["metadata"]["name"], "gb-a-09", "{f}");

    // The agent comes back on the same port: the node is live again.
    let (p, grpc) = spawn_agent(
        "gb-a-09",
        "tray-b1.json",
        &c.sysfs,
        c.dir.path(),
        Some(&grpc),
    );
    c.agents.insert("gb-a-09".into(), (p, grpc));
    wait_until("gb-a-09 live again", || {
        view(&addr)["gb-a-09"]["freshness"] == "live"
    });
    let ex = post(&addr, "/debug/explain", &args);
    assert_eq!(ex["scores"][0]["freshness"], "live", "{ex}");
}

#[test]
fn malformed_and_unknown_over_the_wire() {
    let c = build_cluster();
    let ext = start_extender(&c.agents_file);
    let (status, text) = http(&ext.addr, "POST", "/filter", "{\"Pod\": 3");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("malformed"), "{text}");
    let r = post(
        &ext.addr,
        "/filter",
        &json!({"Pod": pod("x-0", "x", "decode", None), "NodeNames": ["nope"]}),
    );
    assert!(
        r["FailedAndUnresolvableNodes"]["nope"]
            .as_str()
            .unwrap()
            .contains("unknown node")
    );
    let (status, _) = http(&ext.addr, "GET", "/healthz", "");
    assert_eq!(status, 200);

    // A 50 MB body is read and answered (the default limit is sized for 5,000 kubelet-sized
    // Nodes); one byte over the limit is refused with 413; JSON nested 100,000 deep with 400;
    // 100,000 node names are all answered. The same process serves throughout.
    let pid = ext._proc.0.id();
    let body_of = |len: usize| {
        let head = format!(
            "{{\"Pod\": {}, \"NodeNames\": [\"",
            pod("x-0", "x", "decode", None)
        );
        let tail = "\"]}";
        format!(
            "{head}{}{tail}",
            "n".repeat(len.saturating_sub(head.len() + tail.len()))
        )
    };
    let big = body_of(50_000_000);
    let t = Instant::now();
    let (status, text) = http_lenient(&ext.addr, "/filter", big.as_bytes());
    eprintln!(
        "50 MB body: {status} in {:.2} s; extender RSS {} KiB",
        t.elapsed().as_secs_f64(),
        proc_rss_kib(pid)
    );
    assert_eq!(status, 200, "{}", &text[..text.len().min(300)]);
    assert!(
        text.contains("unknown node"),
        "{}",
        &text[..text.len().min(300)]
    );
    drop(big);
    let over = body_of(nodetopo::extender::server::DEFAULT_BODY_LIMIT + 1);
    let t = Instant::now();
    let (status, text) = http_lenient(&ext.addr, "/filter", over.as_bytes());
    eprintln!(
        "body one byte over the {} B limit: {status} in {:.2} s",
        nodetopo::extender::server::DEFAULT_BODY_LIMIT,
        t.elapsed().as_secs_f64()
    );
    assert_eq!(status, 413, "{text}");
    drop(over);
    let deep = format!(
        "{{\"Pod\": {}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (status, text) = http_lenient(&ext.addr, "/filter", deep.as_bytes());
    assert_eq!(status, 400, "{text}");
    let names: Vec<String> = (0..100_000).map(|i| format!("gone-{i}")).collect();
    let t = Instant::now();
    let r = post(
        &ext.addr,
        "/filter",
        &json!({"Pod": pod("x-0", "x", "decode", None), "NodeNames": names}),
    );
    let took = t.elapsed();
    let failed = r["FailedAndUnresolvableNodes"]
        .as_object()
        .map_or(0, |m| m.len())
        + r["FailedNodes"].as_object().map_or(0, |m| m.len());
    eprintln!(
        "100,000 node names: answered in {:.2} s, {failed} reasons named (none passed); extender RSS {} KiB",
        took.as_secs_f64(),
        proc_rss_kib(pid)
    );
    // None passes; the answer names at most FILTER_REASONS (64) reasons, by design.
    let passed = r["NodeNames"].as_array().map_or(0, Vec::len);
    assert_eq!(passed, 0, "{r}");
    assert_eq!(failed, nodetopo::extender::FILTER_REASONS);
    let (status, _) = http(&ext.addr, "GET", "/healthz", "");
    assert_eq!(status, 200);
    assert_eq!(ext._proc.0.id(), pid);
}

/// `VmRSS` of process `pid`, in KiB.
fn proc_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// POSTs `body` and reads the answer even when the server answers (and stops reading) before
/// the body is sent in full.
fn http_lenient(addr: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the extender");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut w = s.try_clone().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        for chunk in body.chunks(64 * 1024) {
            if w.write_all(chunk).is_err() {
                return;
            }
        }
    });
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let raw = String::from_utf8_lossy(&raw);
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, rest.to_string())
}
