//! Real `nodetopo agent` processes, one per Node, each with a token bound to a Pod on its Node,
//! labelling their own Nodes on a real API server through the shipped `daemonset/` RBAC and
//! admission policy.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Event, Node};
use kube::{Api, Client, api::ListParams};
use tempfile::TempDir;

use crate::harness::{self, ControlPlane, NODETOPO, ROOT};

/// The agents' user, as the API server sees its service-account token.
pub const AGENT_USER: &str = "system:serviceaccount:nodetopo:nodetopo-agent";
/// Probe interval of the agents under test.
const INTERVAL: Duration = Duration::from_millis(250);
/// Slack on top of one interval for "within one interval": the probe, the write and the read.
const SLACK: Duration = Duration::from_secs(4);
const PREFIX: &str = "nodetopo.io/";

pub fn fixture(p: &str) -> PathBuf {
    Path::new(ROOT).join("tests/fixtures").join(p)
}

/// One replayed machine.
pub struct Machine {
    pub node: &'static str,
    pub snapshot: &'static str,
    pub sysfs: &'static str,
}

pub const MACHINES: [Machine; 3] = [
    Machine {
        node: "h200-0",
        snapshot: "h200x4-hgx/snapshot.json",
        sysfs: "h200x4-hgx/sysfs/sys",
    },
    Machine {
        node: "gb200-a1",
        snapshot: "gb200/tray-a1.json",
        sysfs: "gb200-tray/sysfs/sys",
    },
    Machine {
        node: "h100-ib-0",
        snapshot: "h100x8-ib/snapshot.json",
        sysfs: "h100x8-ib/sysfs/sys",
    },
];

/// A running agent; killed on drop.
pub struct Agent {
    child: Child,
    snapshot: PathBuf,
    args: Vec<std::ffi::OsString>,
    kubeconfig: PathBuf,
    log: Option<PathBuf>,
    _dir: TempDir,
}

impl Agent {
    pub fn start(m: &Machine, kubeconfig: &Path) -> Self {
        Self::start_with(m, kubeconfig, &[], None)
    }

    /// [`Self::start`] with flags `set` (a flag already given gets the new value, others are
    /// added) and the agent's standard error written to `log` instead of the test's.
    pub fn start_with(
        m: &Machine,
        kubeconfig: &Path,
        set: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join("snapshot.json");
        std::fs::copy(fixture(m.snapshot), &snapshot).unwrap();
        let mut args: Vec<std::ffi::OsString> = vec![
            "agent".into(),
            "--node-name".into(),
            m.node.into(),
            "--interval".into(),
            format!("{}ms", INTERVAL.as_millis()).into(),
            "--grpc-listen".into(),
            format!("127.0.0.1:{}", harness::free_port()).into(),
            "--metrics-listen".into(),
            format!("127.0.0.1:{}", harness::free_port()).into(),
            "--kube-timeout".into(),
            "5s".into(),
            "--replay".into(),
        ];
        args.push(snapshot.clone().into());
        args.push("--sysfs-root".into());
        args.push(fixture(m.sysfs).into());
        for (flag, value) in set {
            match args.iter().position(|a| a == *flag) {
                Some(i) => args[i + 1] = (*value).into(),
                None => args.extend([(*flag).into(), (*value).into()]),
            }
        }
        let log = log.map(Path::to_path_buf);
        let child = Self::spawn(&args, kubeconfig, log.as_deref());
        Self {
            child,
            snapshot,
            args,
            kubeconfig: kubeconfig.to_path_buf(),
            log,
            _dir: dir,
        }
    }

    fn spawn(args: &[std::ffi::OsString], kubeconfig: &Path, log: Option<&Path>) -> Child {
        let stderr = match log {
            Some(p) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .expect("agent log file"),
            ),
            None => Stdio::inherit(),
        };
        Command::new(NODETOPO)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn nodetopo agent")
    }

    /// The agent's resident set size in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Open file descriptors of the agent (entries of `/proc/PID/fd`).
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("/proc/PID/fd")
            .count()
    }

    /// The agent's metrics address (`127.0.0.1:PORT`).
    pub fn metrics_addr(&self) -> String {
        let i = self
            .args
            .iter()
            .position(|a| a == "--metrics-listen")
            .expect("--metrics-listen");
        self.args[i + 1].to_string_lossy().into_owned()
    }

    /// The replayed snapshot file.
    pub fn snapshot(&self) -> &Path {
        &self.snapshot
    }

    /// The process id (the same id before and after a fault: no restart happened).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Rewrites the replayed snapshot with driver version `from` replaced by `to`, atomically:
    /// a real change of the node's labels.
    pub fn change_driver(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.snapshot).unwrap();
        assert!(text.contains(from), "{from} not in the snapshot");
        let tmp = self.snapshot.with_extension("new");
        std::fs::write(&tmp, text.replace(from, to)).unwrap();
        std::fs::rename(&tmp, &self.snapshot).unwrap();
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        harness::terminate(&mut self.child, Duration::from_secs(15)).expect("agent exit status")
    }

    /// Starts the same agent again (same flags, same snapshot file).
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.args, &self.kubeconfig, self.log.as_deref());
    }

    /// Replaces the replayed snapshot with `fixture`, atomically.
    fn replay(&self, fixture_path: &str) {
        let tmp = self.snapshot.with_extension("new");
        std::fs::copy(fixture(fixture_path), &tmp).unwrap();
        std::fs::rename(&tmp, &self.snapshot).unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `KEY: N kB` field of `/proc/PID/status`, in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// The labels `nodetopo probe` derives from the same replayed facts: what the Node must carry.
pub fn probe_labels(snapshot: &Path, sysfs: &Path, node: &str) -> BTreeMap<String, String> {
    let out = Command::new(NODETOPO)
        .args(["probe", "-o", "labels", "--node-name", node, "--replay"])
        .arg(snapshot)
        .arg("--sysfs-root")
        .arg(sysfs)
        .output()
        .expect("run nodetopo probe");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn own_labels(node: &Node) -> BTreeMap<String, String> {
    node.metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .collect()
}

pub async fn get(client: &Client, name: &str) -> Node {
    Api::<Node>::all(client.clone())
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get node {name}: {e}"))
}

fn rv(node: &Node) -> String {
    node.metadata.resource_version.clone().unwrap()
}

/// Waits until Node `name` carries exactly `want` under the prefix.
pub async fn converge(
    client: &Client,
    name: &str,
    want: &BTreeMap<String, String>,
    within: Duration,
) -> Node {
    let what = format!("labels of {name} to equal {want:?}");
    harness::eventually(within, &what, || async {
        let n = get(client, name).await;
        (own_labels(&n) == *want).then_some(n)
    })
    .await
}

/// Writes (anything but get/list/watch) by the agents on Node `name`, from the audit log.
pub fn node_writes(cp: &ControlPlane, name: &str) -> usize {
    cp.audited(AGENT_USER)
        .iter()
        .filter(|e| e.resource == "nodes" && e.name == name)
        .filter(|e| !matches!(e.verb.as_str(), "get" | "list" | "watch"))
        .count()
}

/// Writes to Node `name` since `before`, once the audit log shows at least one. A write is
/// visible to readers before kube-apiserver appends its `ResponseComplete` audit line, so a
/// count taken the moment the labels converge can miss it; this waits up to 10 s for it.
pub async fn node_writes_since(cp: &ControlPlane, name: &str, before: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = node_writes(cp, name).saturating_sub(before);
        if n > 0 || std::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every request by the agents on Node `name`, from the audit log.
fn node_requests(cp: &ControlPlane, name: &str) -> usize {
    cp.audited(AGENT_USER)
        .iter()
        .filter(|e| e.resource == "nodes" && e.name == name)
        .count()
}

#[tokio::test]
async fn agents_label_their_own_nodes() {
    let cp = ControlPlane::start(harness::Options::default());
    let admin = cp.admin().await;
    cp.kubectl(&["apply", "--server-side", "-k", &format!("{ROOT}/daemonset")]);

    // Nodes as kubelets register them, with a label owned by another manager, plus a stale
    // nodetopo label that the agent does not own and must leave alone.
    let mut kubeconfigs = Vec::new();
    for m in &MACHINES {
        harness::create_node(
            &admin,
            m.node,
            &[
                ("example.com/rack", "r7"),
                ("nvidia.com/gpu.present", "true"),
            ],
        )
        .await;
        kubeconfigs.push(harness::agent_kubeconfig(&cp, &admin, m.node).await);
    }

    let mut agents: Vec<Agent> = MACHINES
        .iter()
        .zip(&kubeconfigs)
        .map(|(m, kc)| Agent::start(m, kc))
        .collect();

    // 1. Every Node converges to the labels of its own facts.
    let mut want = Vec::new();
    for m in &MACHINES {
        let w = probe_labels(&fixture(m.snapshot), &fixture(m.sysfs), m.node);
        assert!(
            w.len() > 5,
            "{}: too few labels to be a test: {w:?}",
            m.node
        );
        let n = converge(&admin, m.node, &w, Duration::from_secs(30)).await;
        let labels = n.metadata.labels.clone().unwrap();
        assert_eq!(
            labels["example.com/rack"], "r7",
            "another manager's label stays"
        );
        assert_eq!(labels["nvidia.com/gpu.present"], "true");
        let owned =
            nodetopo::agent::labeler::applied_labels(&n, nodetopo::agent::labeler::FIELD_MANAGER)
                .expect("field manager nodetopo owns labels");
        assert_eq!(owned, w, "{}: nodetopo owns exactly its labels", m.node);
        let admin_owned = n
            .metadata
            .managed_fields
            .as_ref()
            .unwrap()
            .iter()
            .filter(|f| f.manager.as_deref() != Some("nodetopo"))
            .any(|f| {
                serde_json::to_string(&f.fields_v1)
                    .unwrap()
                    .contains("example.com/rack")
            });
        assert!(admin_owned, "the rack label keeps its own manager");
        want.push(w);
    }
    // Facts that differ by machine, checked independently of the probe.
    assert_eq!(want[0]["nodetopo.io/gpu.count"], "4");
    assert_eq!(want[0]["nodetopo.io/nvlink.fabric"], "none");
    assert!(!want[0].contains_key("nodetopo.io/nvlink.domain"));
    assert_eq!(
        want[1]["nodetopo.io/nvlink.domain"],
        "4f1c2d3e-5a6b-47c8-a9d0-e1f2a3b4c5d6.1"
    );
    assert_eq!(want[2]["nodetopo.io/gpu.count"], "8");
    // The 8 InfiniBand rails (one port down), not the 2 Ethernet storage NICs.
    assert_eq!(want[2]["nodetopo.io/rdma.count"], "7");
    assert_eq!(want[2]["nodetopo.io/rdma.link-layer"], "infiniband");
    assert_eq!(want[2]["nodetopo.io/rdma.rate-gbps"], "400");
    assert_eq!(want[2]["nodetopo.io/rdma.gpus-per-rail"], "1");

    // 2. No hardware change over many intervals: not one write, the resourceVersions stay.
    let before: Vec<String> = {
        let mut v = Vec::new();
        for m in &MACHINES {
            v.push(rv(&get(&admin, m.node).await));
        }
        v
    };
    let writes_before: Vec<usize> = MACHINES.iter().map(|m| node_writes(&cp, m.node)).collect();
    // NODETOPO_E2E_STEADY_SECS lengthens the window for the writes-per-hour figure.
    let window = Duration::from_secs(
        std::env::var("NODETOPO_E2E_STEADY_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(6),
    );
    let requests_before: usize = MACHINES.iter().map(|m| node_requests(&cp, m.node)).sum();
    let all_before = cp.audited(AGENT_USER).len();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let steady = t0.elapsed();
    for (i, m) in MACHINES.iter().enumerate() {
        assert_eq!(
            rv(&get(&admin, m.node).await),
            before[i],
            "{}: resourceVersion moved",
            m.node
        );
        assert_eq!(
            node_writes(&cp, m.node),
            writes_before[i],
            "{}: the agent wrote in steady state",
            m.node
        );
    }
    let requests: usize = MACHINES.iter().map(|m| node_requests(&cp, m.node)).sum();
    let all = cp.audited(AGENT_USER).len();
    assert_eq!(
        requests, requests_before,
        "the agents read or wrote Nodes in steady state"
    );
    let probes = (steady.as_secs_f64() / INTERVAL.as_secs_f64()) as u64 * MACHINES.len() as u64;
    eprintln!(
        "steady state: {} agents, {:.1} s, about {probes} probes: 0 node writes, {} API requests \
         of any kind (0 writes/hour)",
        MACHINES.len(),
        steady.as_secs_f64(),
        all - all_before
    );

    // 3. The replayed facts change: the label follows within one interval, and the key whose
    //    fact disappeared is removed. The fabric change is recorded as an Event on the Node.
    let gb = &MACHINES[1];
    let pending = probe_labels(
        &fixture("gb200/tray-pending.json"),
        &fixture(gb.sysfs),
        gb.node,
    );
    assert_eq!(pending["nodetopo.io/nvlink.fabric"], "pending");
    assert!(!pending.contains_key("nodetopo.io/nvlink.domain"));
    let t0 = Instant::now();
    agents[1].replay("gb200/tray-pending.json");
    let n = converge(&admin, gb.node, &pending, INTERVAL + SLACK).await;
    eprintln!("label change visible after {:?}", t0.elapsed());
    assert!(
        !n.metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key("nodetopo.io/nvlink.domain"),
        "the domain label is removed"
    );
    assert_eq!(
        n.metadata.labels.as_ref().unwrap()["example.com/rack"],
        "r7"
    );
    let events: Api<Event> = Api::namespaced(admin.clone(), "default");
    let ev = harness::eventually(Duration::from_secs(10), "the fabric Event", || async {
        let list = events
            .list(&ListParams::default().fields(&format!(
                "involvedObject.kind=Node,involvedObject.name={}",
                gb.node
            )))
            .await
            .unwrap();
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("NVLinkFabricChanged"))
    })
    .await;
    let msg = ev.message.unwrap_or_default();
    assert!(msg.contains("ready") && msg.contains("pending"), "{msg}");

    // 4. SIGTERM: the agent exits cleanly and the labels stay. A restart with the same facts
    //    reads the Node once and writes nothing.
    let h200 = &MACHINES[0];
    let rv_before = rv(&get(&admin, h200.node).await);
    let writes = node_writes(&cp, h200.node);
    let status = agents[0].stop();
    assert!(status.success(), "agent exit status {status}");
    tokio::time::sleep(INTERVAL * 2).await;
    let n = get(&admin, h200.node).await;
    assert_eq!(own_labels(&n), want[0], "labels stay after SIGTERM");
    let requests = node_requests(&cp, h200.node);
    agents[0].restart();
    harness::eventually(
        Duration::from_secs(20),
        "the restarted agent's first request",
        || async { (node_requests(&cp, h200.node) > requests).then_some(()) },
    )
    .await;
    tokio::time::sleep(INTERVAL * 8).await;
    assert_eq!(
        node_writes(&cp, h200.node),
        writes,
        "the restart wrote to the Node"
    );
    assert_eq!(rv(&get(&admin, h200.node).await), rv_before);

    // Nothing was refused along the way: every agent request was allowed.
    let refused: Vec<_> = cp
        .audited(AGENT_USER)
        .into_iter()
        .filter(|e| e.code >= 400)
        .collect();
    assert!(refused.is_empty(), "agent requests refused: {refused:?}");
    drop(agents);
}
