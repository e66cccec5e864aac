//! Scheduling throughput with a real kube-scheduler (a bench binary; figures in BENCHMARKS.md).
//!
//! One control plane (etcd and kube-apiserver on 127.0.0.1, from tests/e2e/build-kube.sh),
//! 5,000 GB200-tray Nodes (4 GPUs, NVL72 racks of 18 trays in two cliques of 9, nodetopo
//! labels), and two workloads per run: 1,000 GPU pods in 125 LeaderWorkerSet groups of 8, then
//! 1,000 plain CPU pods (100m, no group). Each phase creates its pods, then starts a
//! kube-scheduler and times from its start until every pod is bound (seen by a watch on the
//! API server). Runs alternate between the setups, so all see the same machine state:
//! kube-scheduler alone (defaults, the reference; and scoring every node), kube-scheduler
//! calling `nodetopo extender` (release build, names-only mode, Node and Pod watches), its own
//! topology-aware PodGroups (alpha), and Kueue v0.17.0's topology-aware scheduling over
//! nodetopo's labels (`kueue` module). Then the extender's filter and prioritize are timed over
//! HTTP as kube-scheduler calls them, at 5,000 nodes.
//!
//! Per group, "placed" is the time from the phase's start to the group's last member bound;
//! "schedulable to bound" starts instead at the moment its first member could be scheduled by
//! kube-scheduler (the phase's start, or for Kueue the removal of its last scheduling gate).
//! Resident memory of each process is read at the end of each run.
//!
//! Run: `cargo bench --locked --features e2e --bench scheduling` (NODETOPO_KUBE_BIN as for the
//! end-to-end suite; RUNS=N rounds, default 2; SETUPS=0,4 picks setups by index).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/e2e/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "scheduling/kueue.rs"]
mod kueue;

use std::{
    collections::{BTreeMap, HashMap},
    io::{Read, Write},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use harness::ControlPlane;

/// The nodetopo binary: `NODETOPO_BIN`, or the one cargo built beside this bench.
fn nodetopo() -> std::path::PathBuf {
    std::env::var_os("NODETOPO_BIN").map_or_else(|| harness::NODETOPO.into(), Into::into)
}
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

const NODES: usize = 5_000;
const GROUPS: usize = 125;
const GROUP_SIZE: usize = 8;
/// Plain CPU pods per run (100m each, no group, no queue).
const CPU_PODS: usize = 1_000;
/// Longest a phase may take before the run is recorded as failed.
const PHASE_LIMIT: Duration = Duration::from_secs(300);
/// The node label of the NVLink clique, the level every group must stay within.
const CLIQUE_LABEL: &str = "nodetopo.io/nvlink.domain";
pub const NS: &str = "bench";
/// The alpha and beta gates of kube-scheduler's own topology-aware workload scheduling.
const NATIVE_GATES: &str = "GenericWorkload=true,TopologyAwareWorkloadScheduling=true";

pub struct Proc(Child);

/// Makes the child die with the benchmark, even on SIGKILL.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

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
                // The kubelet's hostname label too: Kueue's lowest topology level.
                let mut labels = node_labels(i);
                labels["kubernetes.io/hostname"] = json!(name);
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": labels},
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

fn pod(run: usize, group: usize, index: usize, setup: Setup, clique_level: &str) -> Pod {
    let lws = format!("r{run}-m{group}-decode");
    let mut v = json!({
        "metadata": {"name": format!("{lws}-0-{index}"), "namespace": NS,
            "labels": {
                "leaderworkerset.sigs.k8s.io/name": lws,
                "leaderworkerset.sigs.k8s.io/group-index": "0",
                "leaderworkerset.sigs.k8s.io/worker-index": index.to_string(),
            },
            "annotations": {"leaderworkerset.sigs.k8s.io/size": GROUP_SIZE.to_string()}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
            "resources": {"limits": {"nvidia.com/gpu": "4"}}}]},
    });
    if setup == Setup::Pinned {
        // Every fourth clique of the fleet, a different one per group: each has 9 free trays.
        let clique = common::fleet_node_labels(group * 4 * 9)[CLIQUE_LABEL].clone();
        v["spec"]["nodeSelector"] = json!({CLIQUE_LABEL: clique});
    }
    if setup == Setup::Kueue {
        // A plain pod group: one Workload of 8 pods, all in one NVLink clique.
        let m = &mut v["metadata"];
        m["labels"][kueue::QUEUE_LABEL] = json!(kueue::LOCAL_QUEUE);
        m["labels"][kueue::POD_GROUP_NAME_LABEL] = json!(lws);
        m["annotations"][kueue::POD_GROUP_TOTAL_COUNT] = json!(GROUP_SIZE.to_string());
        m["annotations"][kueue::REQUIRED_TOPOLOGY] = json!(clique_level);
    }
    serde_json::from_value(v).unwrap()
}

/// A plain CPU pod: 100m, no GPU, no group labels, no queue.
fn cpu_pod(run: usize, index: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("r{run}-cpu-{index}"), "namespace": NS,
            "labels": {"app": "cpu-bench"}},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m"}}}]},
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
fn pod_json(run: usize, group: usize, index: usize) -> serde_json::Value {
    let mut v = serde_json::to_value(pod(run, group, index, Setup::Native, "")).unwrap();
    v["spec"]["schedulingGroup"] = json!({"podGroupName": format!("r{run}-m{group}-decode")});
    v
}

async fn create_pods(
    cp: &ControlPlane,
    client: &Client,
    run: usize,
    setup: Setup,
    clique_level: &str,
) {
    use futures::StreamExt;
    if setup == Setup::Native {
        let docs: String = (0..GROUPS)
            .flat_map(|g| (0..GROUP_SIZE).map(move |i| format!("---\n{}\n", pod_json(run, g, i))))
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
                api.create(&PostParams::default(), &pod(run, g, i, setup, clique_level))
                    .await
                    .unwrap();
            }
        })
        .await;
}

async fn create_cpu_pods(client: &Client, run: usize) {
    use futures::StreamExt;
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    futures::stream::iter(0..CPU_PODS)
        .for_each_concurrent(16, |i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &cpu_pod(run, i))
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

/// Groups whose pods sit in more than one clique (unbound pods are not counted).
async fn split_groups(client: &Client) -> usize {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut by_group: BTreeMap<String, std::collections::BTreeSet<usize>> = Default::default();
    for p in api.list(&ListParams::default()).await.unwrap().items {
        let g = p.metadata.labels.unwrap()["leaderworkerset.sigs.k8s.io/name"].clone();
        let Some(node) = p.spec.unwrap().node_name else {
            continue;
        };
        let i: usize = node[3..].parse().unwrap();
        by_group.entry(g).or_default().insert(i / 9);
    }
    by_group.values().filter(|c| c.len() > 1).count()
}

/// When the pod watch first saw each pod of the current phase schedulable (no scheduling
/// gates) and bound.
#[derive(Default)]
struct Seen {
    /// Only pods whose names start with this are recorded.
    prefix: String,
    pods: HashMap<String, PodTimes>,
}

/// (first seen schedulable, first seen bound).
type PodTimes = (Option<Instant>, Option<Instant>);

type Watched = Arc<Mutex<Seen>>;

/// Watches the namespace's pods for the whole benchmark.
fn watch_pods(client: &Client) -> Watched {
    use futures::StreamExt;
    let seen: Watched = Default::default();
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let out = seen.clone();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(
            watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
        );
        while let Some(ev) = events.next().await {
            let Ok(p) = ev else { continue };
            let now = Instant::now();
            let name = p.metadata.name.clone().unwrap_or_default();
            let spec = p.spec.as_ref();
            let gated = spec
                .and_then(|s| s.scheduling_gates.as_ref())
                .is_some_and(|g| !g.is_empty());
            let bound = spec.and_then(|s| s.node_name.as_ref()).is_some();
            let mut s = out.lock().unwrap();
            if s.prefix.is_empty() || !name.starts_with(&s.prefix) {
                continue;
            }
            let e = s.pods.entry(name).or_default();
            if !gated && e.0.is_none() {
                e.0 = Some(now);
            }
            if bound && e.1.is_none() {
                e.1 = Some(now);
            }
        }
    });
    seen
}

/// One phase's outcome.
struct Phase {
    /// Seconds from the phase's start until every pod was bound; None if not within the limit.
    took: Option<f64>,
    bound: usize,
    /// Per group: (start to last member bound, first member schedulable to last member bound).
    groups: Vec<(Duration, Duration)>,
    /// kube-scheduler's resident memory when the phase ended.
    scheduler_rss: f64,
    /// When the last pod became schedulable (for Kueue: its last gate removed), from the start.
    last_schedulable: Duration,
    /// When the first pod was bound, from the start (kube-scheduler's start-up in every setup).
    first_bound: Duration,
}

/// Starts `sched` (already spawned at `start`), waits until the watch has seen `n` pods of the
/// phase bound or the limit passes, and reads the per-pod times.
async fn wait_bound(seen: &Watched, n: usize, start: Instant, sched: &Proc) -> Phase {
    let took = loop {
        let bound = seen
            .lock()
            .unwrap()
            .pods
            .values()
            .filter(|t| t.1.is_some())
            .count();
        if bound == n {
            break Some(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > PHASE_LIMIT {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let scheduler_rss = rss_mib(sched.0.id());
    let s = seen.lock().unwrap();
    let mut by_group: BTreeMap<&str, Vec<PodTimes>> = BTreeMap::new();
    for (name, t) in &s.pods {
        // r{run}-m{group}-decode-0-{index}: the group is the name up to the last two dashes.
        let group = name.rsplitn(3, '-').nth(2).unwrap_or(name);
        by_group.entry(group).or_default().push(*t);
    }
    let groups = by_group
        .values()
        .filter(|m| m.len() == GROUP_SIZE && m.iter().all(|t| t.1.is_some()))
        .map(|m| {
            let last = m.iter().filter_map(|t| t.1).max().unwrap();
            let first = m
                .iter()
                .filter_map(|t| t.0)
                .min()
                .map_or(start, |f| f.max(start));
            (last - start, last.saturating_duration_since(first))
        })
        .collect();
    let bound = s.pods.values().filter(|t| t.1.is_some()).count();
    let last_schedulable = s
        .pods
        .values()
        .filter_map(|t| t.0)
        .max()
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(start));
    let first_bound = s
        .pods
        .values()
        .filter_map(|t| t.1)
        .min()
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(start));
    Phase {
        took,
        bound,
        groups,
        scheduler_rss,
        last_schedulable,
        first_bound,
    }
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
    /// Kueue v0.17.0 topology-aware scheduling over nodetopo's labels (`kueue` module): Kueue
    /// admits each group as a plain pod group requiring one NVLink clique, assigns its nodes
    /// and ungates it; kube-scheduler with its defaults binds. CPU pods carry no queue label
    /// and are not queued.
    Kueue,
    /// The chart with its webhook: two profiles (default-scheduler with the default sampling,
    /// the group profile scoring every node), the extender, and the real `nodetopo webhook`
    /// moving each group pod to the group profile at creation (`POST /route`).
    Routed,
    /// The pinning candidate, as its best case: each group's pods are created with a
    /// `nodeSelector` on one NVLink clique, the one a pinning controller would have chosen
    /// (here the bench chooses a free clique per group), and kube-scheduler keeps its defaults;
    /// no extender. What it would cost to choose and write the pin is not in it.
    Pinned,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Alone => "kube-scheduler alone (defaults)",
            Setup::AloneAllNodes => "kube-scheduler alone, percentageOfNodesToScore 100",
            Setup::Extender => "kube-scheduler + nodetopo extender (shipped configuration)",
            Setup::Native => "kube-scheduler, native topology-aware PodGroups (alpha gates)",
            Setup::Kueue => "Kueue v0.17.0 topology-aware scheduling + kube-scheduler (defaults)",
            Setup::Routed => {
                "kube-scheduler + nodetopo extender, two profiles, webhook routing (the chart with webhook.enabled)"
            }
            Setup::Pinned => "kube-scheduler (defaults), pods pinned to a clique by nodeSelector",
        }
    }
}

fn scheduler(cp: &ControlPlane, setup: Setup, ext_port: u16, tag: &str) -> Proc {
    let mut cfg = match setup {
        Setup::Alone | Setup::Native | Setup::Kueue | Setup::Pinned => json!({
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
        }),
        Setup::AloneAllNodes => json!({
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "percentageOfNodesToScore": 100,
        }),
        Setup::Routed => {
            let mut cfg = chart_routing(cp).0;
            cfg["extenders"][0]["urlPrefix"] = json!(format!("http://127.0.0.1:{ext_port}/"));
            cfg
        }
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
    let mut cmd = Command::new(harness::bin("kube-scheduler"));
    cmd.arg(format!("--config={}", path.display()))
        .arg("--secure-port=0")
        .args((setup == Setup::Native).then_some(format!("--feature-gates={NATIVE_GATES}")))
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    die_with_parent(&mut cmd);
    Proc(cmd.spawn().unwrap())
}

fn extender(cp: &ControlPlane) -> (Proc, u16) {
    let port = harness::free_port();
    let mut cmd = Command::new(nodetopo());
    cmd.args(["extender", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--block-label", "network.example.com/leaf"])
        .args(["--agent-port", &harness::free_port().to_string()])
        .env("KUBECONFIG", &cp.admin_kubeconfig)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    die_with_parent(&mut cmd);
    let child = cmd.spawn().unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    (Proc(child), port)
}

/// The chart rendered with the extender and the webhook: its two-profile scheduler
/// configuration, its MutatingWebhookConfiguration with only the routing webhook, and the
/// webhook Deployment's arguments.
fn chart_routing(cp: &ControlPlane) -> (serde_json::Value, serde_json::Value, Vec<String>) {
    let out = cp.helm(&[
        "template",
        "nodetopo",
        &format!("{}/charts/nodetopo", harness::ROOT),
        "--namespace",
        "nodetopo",
        "--set",
        "extender.enabled=true",
        "--set",
        "webhook.enabled=true",
    ]);
    let objs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&out)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &serde_json::Value| v.is_object())
        .collect();
    let component = |o: &serde_json::Value, c: &str| {
        o["metadata"]["labels"]["app.kubernetes.io/component"] == c
    };
    let cm = objs
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["data"]["scheduler-config.yaml"].is_string())
        .expect("the scheduler configuration");
    let cfg =
        serde_yaml_ng::from_str(cm["data"]["scheduler-config.yaml"].as_str().unwrap()).unwrap();
    let mut mwc = objs
        .iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .expect("the webhook configuration")
        .clone();
    let hooks: Vec<serde_json::Value> = mwc["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["clientConfig"]["service"]["path"] == "/route")
        .cloned()
        .collect();
    mwc["webhooks"] = json!(hooks);
    let deploy = objs
        .iter()
        .find(|o| o["kind"] == "Deployment" && component(o, "webhook"))
        .expect("the webhook Deployment");
    let args = harness::chart_args_for_loopback(deploy);
    (cfg, mwc, args)
}

/// `nodetopo webhook` with the chart's arguments on 127.0.0.1, and its routing webhook
/// configuration (registered only while a routed run creates pods).
struct RouteWebhook {
    proc: Proc,
    config: serde_json::Value,
}

impl RouteWebhook {
    fn start(cp: &ControlPlane) -> Self {
        let (_, mut config, args) = chart_routing(cp);
        let (crt, key) = cp.serving_cert("bench-webhook");
        let port = harness::free_port();
        let mut cmd = Command::new(nodetopo());
        cmd.args(&args)
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!(
                "--metrics-listen=127.0.0.1:{}",
                harness::free_port()
            ))
            .arg(format!("--tls-cert={}", crt.display()))
            .arg(format!("--tls-key={}", key.display()))
            .env("KUBECONFIG", &cp.admin_kubeconfig)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        die_with_parent(&mut cmd);
        let proc = Proc(cmd.spawn().unwrap());
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(50));
        }
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&cp.ca).unwrap());
        for w in config["webhooks"].as_array_mut().unwrap() {
            w["clientConfig"] =
                json!({"url": format!("https://127.0.0.1:{port}/route"), "caBundle": ca});
        }
        Self { proc, config }
    }

    /// Registers (or removes) the routing webhook and waits until the API server applies it.
    async fn set(&self, cp: &ControlPlane, on: bool) {
        if on {
            let out = cp.kubectl_input(&["apply", "-f", "-"], &self.config.to_string());
            assert!(out.status.success(), "{out:?}");
        } else {
            cp.kubectl(&[
                "delete",
                "mutatingwebhookconfiguration",
                self.config["metadata"]["name"].as_str().unwrap(),
            ]);
        }
        let probe = serde_json::to_string(&pod(98, 0, 0, Setup::Alone, "")).unwrap();
        loop {
            let out = cp.kubectl_input(
                &[
                    "create",
                    "--dry-run=server",
                    "-o",
                    "jsonpath={.spec.schedulerName}",
                    "-f",
                    "-",
                ],
                &probe,
            );
            let routed = String::from_utf8_lossy(&out.stdout) != "default-scheduler";
            if out.status.success() && routed == on {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
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

/// One run of one setup.
struct Run {
    setup: Setup,
    gpu: Phase,
    split: usize,
    cpu: Phase,
    /// Resident memory (MiB) at the end of the run: kube-scheduler (the larger of its two
    /// phases), the extender, the Kueue manager.
    rss: Vec<(&'static str, f64)>,
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
    let all = [
        Setup::Alone,
        Setup::AloneAllNodes,
        Setup::Extender,
        Setup::Native,
        Setup::Kueue,
        Setup::Routed,
        Setup::Pinned,
    ];
    // SETUPS=0,4 picks some (indices into the list above).
    let setups: Vec<Setup> = match std::env::var("SETUPS") {
        Ok(v) => v
            .split(',')
            .filter_map(|i| all.get(i.trim().parse::<usize>().ok()?).copied())
            .collect(),
        Err(_) => all.to_vec(),
    };
    assert!(!setups.is_empty(), "SETUPS names no setup");
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
    let mut kueue = setups.contains(&Setup::Kueue).then(|| {
        let out = Command::new(nodetopo())
            .args(["manifests", "topology", "--for", "kueue", "-o", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let topology: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        kueue::Kueue::install(&cp, topology, CLIQUE_LABEL)
    });
    let clique_level = kueue
        .as_ref()
        .map(|k| k.clique_level.clone())
        .unwrap_or_default();
    let route = setups
        .contains(&Setup::Routed)
        .then(|| RouteWebhook::start(&cp));
    let seen = watch_pods(&client);
    // Let the Node watch fill the view.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut results: Vec<Run> = Vec::new();
    for run in 0..runs * setups.len() {
        let setup = setups[run % setups.len()];
        let kueue_run = match (&mut kueue, setup) {
            (Some(k), Setup::Kueue) => Some(k.start(&cp)),
            _ => None,
        };

        // GPU groups.
        {
            let mut s = seen.lock().unwrap();
            s.prefix = format!("r{run}-m");
            s.pods.clear();
        }
        if setup == Setup::Native {
            create_pod_groups(&cp, run);
        }
        if let (Some(r), Setup::Routed) = (&route, setup) {
            r.set(&cp, true).await;
        }
        create_pods(&cp, &client, run, setup, &clique_level).await;
        if let Some(k) = kueue_run.as_ref().and(kueue.as_ref()) {
            k.wait_workloads(&client, GROUPS).await;
        }
        let start = Instant::now();
        let sched = scheduler(&cp, setup, port, &format!("{run}-gpu"));
        if let Some(k) = kueue_run.as_ref().and(kueue.as_ref()) {
            k.stop_policy(&client, "None").await;
        }
        let gpu = wait_bound(&seen, GROUPS * GROUP_SIZE, start, &sched).await;
        drop(sched);
        let split = split_groups(&client).await;
        let (bound, total) = bound_count(&client).await;
        match gpu.took {
            Some(took) => eprintln!(
                "run {run}: {}: GPU groups: {took:.1} s (first pod bound after {:.1} s), {:.0} pods/s, {split} of {GROUPS} groups split over cliques",
                setup.name(),
                gpu.first_bound.as_secs_f64(),
                (GROUPS * GROUP_SIZE) as f64 / took
            ),
            None => eprintln!(
                "run {run}: {}: GPU groups: FAILED, {bound} of {total} pods bound after {} s",
                setup.name(),
                PHASE_LIMIT.as_secs()
            ),
        }
        if let Some(k) = kueue_run.as_ref().and(kueue.as_ref()) {
            let (admitted, pending, reasons) = k.workload_states(&client).await;
            eprintln!(
                "  Kueue: {admitted} Workloads admitted, {pending} pending {reasons:?}; last pod ungated {:.1} s after the start",
                gpu.last_schedulable.as_secs_f64()
            );
            k.stop_policy(&client, "Hold").await;
            k.delete_groups(&cp, &client).await;
        }
        harness::delete_pods(&client, NS).await;

        // Plain CPU pods.
        {
            let mut s = seen.lock().unwrap();
            s.prefix = format!("r{run}-cpu-");
            s.pods.clear();
        }
        create_cpu_pods(&client, run).await;
        let start = Instant::now();
        let sched = scheduler(&cp, setup, port, &format!("{run}-cpu"));
        let cpu = wait_bound(&seen, CPU_PODS, start, &sched).await;
        drop(sched);
        match cpu.took {
            Some(took) => eprintln!(
                "run {run}: {}: CPU pods: {took:.1} s (first pod bound after {:.1} s), {:.0} pods/s",
                setup.name(),
                cpu.first_bound.as_secs_f64(),
                CPU_PODS as f64 / took
            ),
            None => eprintln!(
                "run {run}: {}: CPU pods: FAILED, {} of {CPU_PODS} bound after {} s",
                setup.name(),
                cpu.bound,
                PHASE_LIMIT.as_secs()
            ),
        }
        let mut rss = vec![("kube-scheduler", gpu.scheduler_rss.max(cpu.scheduler_rss))];
        if matches!(setup, Setup::Extender | Setup::Routed) {
            rss.push(("extender", rss_mib(ext.0.id())));
        }
        if let (Some(r), Setup::Routed) = (&route, setup) {
            rss.push(("webhook", rss_mib(r.proc.0.id())));
            r.set(&cp, false).await;
        }
        if let Some(r) = &kueue_run {
            rss.push(("Kueue manager", rss_mib(r.pid())));
        }
        harness::delete_pods(&client, NS).await;
        if let Some(r) = kueue_run {
            r.stop(&cp);
        }
        results.push(Run {
            setup,
            gpu,
            split,
            cpu,
            rss,
        });
    }

    // Extender calls over HTTP at 5,000 nodes, as kube-scheduler sends them (names only), for
    // the first member of a new group (domain choice over every node).
    let names: Vec<String> = (0..NODES).map(node_name).collect();
    let body =
        serde_json::to_vec(&json!({"Pod": pod(99, 0, 0, Setup::Extender, ""), "NodeNames": names}))
            .unwrap();
    let mut filter = Vec::new();
    let mut prioritize = Vec::new();
    for _ in 0..200 {
        filter.push(post(port, "/filter", &body));
        prioritize.push(post(port, "/prioritize", &body));
    }
    print_report(&setups, &results);
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
    println!(
        "extender resident memory with {NODES} nodes in the view: {:.1} MiB",
        rss_mib(ext.0.id())
    );
}

fn print_report(setups: &[Setup], results: &[Run]) {
    let rate = |p: &Phase, n: usize| p.took.map(|t| n as f64 / t);
    let each = |v: Vec<Option<f64>>| -> String {
        v.iter()
            .map(|r| r.map_or("failed".to_string(), |r| format!("{r:.0}")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mean = |v: &[Option<f64>]| -> Option<f64> {
        let ok: Vec<f64> = v.iter().flatten().copied().collect();
        (ok.len() == v.len() && !ok.is_empty()).then(|| ok.iter().sum::<f64>() / ok.len() as f64)
    };
    let ms = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    println!(
        "| setup | GPU group pods/s, each run (mean) | CPU pods/s, each run (mean) | first pod bound after, GPU / CPU phase (mean) | group placed from the start, p50 / max | first member schedulable to last bound, p50 / max | groups split over cliques | resident memory at the end of a run, MiB (largest of the runs) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut means = Vec::new();
    for &setup in setups {
        let of: Vec<&Run> = results.iter().filter(|r| r.setup == setup).collect();
        let gpu: Vec<Option<f64>> = of
            .iter()
            .map(|r| rate(&r.gpu, GROUPS * GROUP_SIZE))
            .collect();
        let cpu: Vec<Option<f64>> = of.iter().map(|r| rate(&r.cpu, CPU_PODS)).collect();
        let mut placed: Vec<Duration> = of
            .iter()
            .flat_map(|r| r.gpu.groups.iter().map(|g| g.0))
            .collect();
        let mut span: Vec<Duration> = of
            .iter()
            .flat_map(|r| r.gpu.groups.iter().map(|g| g.1))
            .collect();
        let whole = |v: &mut Vec<Duration>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                let max = *v.iter().max().unwrap();
                format!("{} / {}", ms(pct(v, 0.5)), ms(max))
            }
        };
        let split: Vec<String> = of
            .iter()
            .map(|r| {
                if r.gpu.took.is_some() {
                    format!("{}/{GROUPS}", r.split)
                } else {
                    format!(
                        "{}/{GROUPS} ({} of {} pods bound)",
                        r.split,
                        r.gpu.bound,
                        GROUPS * GROUP_SIZE
                    )
                }
            })
            .collect();
        let mut rss: Vec<(&str, f64)> = Vec::new();
        for r in &of {
            for &(p, m) in &r.rss {
                match rss.iter_mut().find(|e| e.0 == p) {
                    Some(e) => e.1 = e.1.max(m),
                    None => rss.push((p, m)),
                }
            }
        }
        let rss: Vec<String> = rss.iter().map(|(p, m)| format!("{p} {m:.0}")).collect();
        let avg = |f: &dyn Fn(&Run) -> Duration| {
            of.iter().map(|r| f(r).as_secs_f64()).sum::<f64>() / of.len().max(1) as f64
        };
        let first = format!(
            "{:.1} s / {:.1} s",
            avg(&|r| r.gpu.first_bound),
            avg(&|r| r.cpu.first_bound)
        );
        let (gm, cm) = (mean(&gpu), mean(&cpu));
        means.push((setup, gm, cm));
        let m = |v: Option<f64>| v.map_or(String::new(), |v| format!(" ({v:.0})"));
        println!(
            "| {} | {}{} | {}{} | {first} | {} | {} | {} | {} |",
            setup.name(),
            each(gpu),
            m(gm),
            each(cpu),
            m(cm),
            whole(&mut placed),
            whole(&mut span),
            split.join(", "),
            rss.join(", ")
        );
    }
    let reference = means.iter().find(|m| m.0 == Setup::Alone).copied();
    if let Some((_, Some(rg), Some(rc))) = reference {
        println!();
        for (setup, g, c) in &means {
            let f =
                |v: &Option<f64>, r: f64| v.map_or("-".to_string(), |v| format!("{:.2}", v / r));
            println!(
                "{} / kube-scheduler alone with defaults: GPU groups {}, CPU pods {}",
                setup.name(),
                f(g, rg),
                f(c, rc)
            );
        }
    }
}
