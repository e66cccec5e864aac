//! The chart's agent on a real node (`node.rs`: containerd, runc, kubelet), from the image the
//! Dockerfile describes (`image.rs`), installed by helm as a user installs it:
//! - the agent pod Running and Ready, its labels on the Node written with the token the kubelet
//!   minted for the pod (the own-node admission policy's node claim), non-root, a read-only root
//!   filesystem, no capabilities, no privilege escalation and seccomp inside the container, and
//!   liveness and readiness as the kubelet's prober reports them with NVML absent;
//! - a `helm upgrade` that changes the pod template, and a deleted pod: the labels are never
//!   absent while the DaemonSet replaces the pod, and the agent exits on the kubelet's SIGTERM
//!   with status 0 well within its grace period;
//! - the per-pod environment: a GPU device plugin registered with the kubelet hands the pod GPUs
//!   by UUID as NVIDIA's does, and the guide's Pod spec (the `query env` init container, the
//!   main container sourcing its file) sees exactly what `probe -o env --gpus` gives for them,
//!   from an agent replaying the same fixture.
//!
//! Pods reach the API server and the agent at 127.0.0.1 (no CNI network, no kube-proxy here):
//! the agent gets `KUBERNETES_SERVICE_HOST`/`PORT` through `agent.extraEnv` and listens on
//! 127.0.0.1 (`agent.listenAddress`), and the guide's Pod runs on the host network with
//! `HOST_IP` set to 127.0.0.1.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, WatchEvent, WatchParams},
};
use serde_json::{Value, json};

use crate::harness::{self, NODETOPO, ROOT, eventually};
use crate::image;
use crate::node::{self, NODE, NodeCluster};

const NS: &str = "nodetopo";
const PREFIX: &str = "nodetopo.io/";

/// The image the chart names by default: `image.repository` and the chart's appVersion.
fn chart_image() -> String {
    let chart = std::fs::read_to_string(Path::new(ROOT).join("charts/nodetopo/Chart.yaml"))
        .expect("Chart.yaml");
    let app = chart
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .expect("appVersion")
        .trim()
        .trim_matches('"');
    format!("ghcr.io/nodetopo/nodetopo:{app}")
}

/// The Node's labels under the agent's prefix.
async fn agent_labels(client: &Client) -> BTreeMap<String, String> {
    Api::<Node>::all(client.clone())
        .get(NODE)
        .await
        .map(|n| {
            n.metadata
                .labels
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| k.starts_with(PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

/// The cluster prepared as the GPU operator and node feature discovery would leave it: the
/// Node labelled as having an NVIDIA PCI device, and the `nvidia` RuntimeClass.
async fn gpu_node_setup(c: &NodeCluster) {
    Api::<Node>::all(c.client.clone())
        .patch(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {
                "feature.node.kubernetes.io/pci-10de.present": "true"}}})),
        )
        .await
        .expect("label the node");
    let out = c.cp.kubectl_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                "metadata": {"name": "nvidia"}, "handler": "nvidia"})
        .to_string(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `helm install` of the chart with the defaults and what this node needs (see the module
/// docs), plus `extra` (`--set`-style arguments). Returns the agent's (gRPC, metrics) ports.
fn helm_install(c: &NodeCluster, extra: &[String]) -> (u16, u16) {
    let (grpc, metrics) = (harness::free_port(), harness::free_port());
    let api_port = c.cp.server.rsplit(':').next().expect("port").to_string();
    let env = json!([
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": api_port},
    ]);
    let chart = Path::new(ROOT).join("charts/nodetopo");
    let mut args: Vec<String> = [
        "install",
        "nodetopo",
        chart.to_str().unwrap(),
        "--namespace",
        NS,
        "--create-namespace",
        "--set",
        "agent.listenAddress=127.0.0.1",
    ]
    .map(String::from)
    .to_vec();
    args.extend([
        "--set".into(),
        format!("agent.grpcPort={grpc}"),
        "--set".into(),
        format!("agent.metricsPort={metrics}"),
        "--set-json".into(),
        format!("agent.extraEnv={env}"),
    ]);
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.cp.helm(&args);
    (grpc, metrics)
}

fn condition(p: &Pod, kind: &str) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// The agent pods (not being deleted).
async fn agent_pods(client: &Client) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels("app.kubernetes.io/component=agent"))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Waits for one Ready agent pod other than `not` (a pod name); returns it.
async fn ready_agent(c: &NodeCluster, not: Option<&str>, timeout: Duration) -> Pod {
    let client = c.client.clone();
    eventually(timeout, "a Ready agent pod", || {
        let client = client.clone();
        async move {
            agent_pods(&client)
                .await
                .into_iter()
                .find(|p| condition(p, "Ready") && p.metadata.name.as_deref() != not)
        }
    })
    .await
}

/// The runtime's ID of a pod's container `name`.
fn container_id(pod: &Pod, name: &str) -> String {
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .and_then(|c| c.container_id.clone())
        .expect("container id");
    id.trim_start_matches("containerd://").to_string()
}

/// The host PID of a pod's container `name`, from containerd.
fn container_pid(c: &NodeCluster, pod: &Pod, name: &str) -> u32 {
    let id = container_id(pod, name);
    let id = id.as_str();
    let out = c
        .node
        .ctr()
        .args(["tasks", "ls"])
        .output()
        .expect("ctr tasks ls");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f[1].parse().expect("pid"))
        })
        .unwrap_or_else(|| panic!("no task {id} in ctr tasks ls"))
}

/// `Field:` of `/proc/PID/status`.
fn proc_status(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("process status")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The options of mount point `at` in `/proc/PID/mountinfo` (the process's own view).
fn mount_options(pid: u32, at: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .expect("mountinfo")
        .lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4) == Some(&at)).then(|| f[5].to_string())
        })
        .unwrap_or_else(|| panic!("no mount at {at} in /proc/{pid}/mountinfo"))
}

/// The kubelet's counts of probe results for the agent container: (probe type, result) → n.
fn probe_results(c: &NodeCluster, pod: &str) -> BTreeMap<(String, String), f64> {
    let text = c.node.kubelet_get(&c.cp, "/metrics/probes");
    text.lines()
        .filter(|l| l.starts_with("prober_probe_total{") && l.contains(&format!("pod=\"{pod}\"")))
        .filter_map(|l| {
            let label = |k: &str| {
                let at = l.find(&format!("{k}=\""))? + k.len() + 2;
                Some(l[at..at + l[at..].find('"')?].to_string())
            };
            let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some(((label("probe_type")?, label("result")?), n))
        })
        .collect()
}

/// The kubelet's working-set bytes of the agent container (`/metrics/resource`).
fn working_set(c: &NodeCluster, pod: &str) -> Option<f64> {
    let text = c.node.kubelet_get(&c.cp, "/metrics/resource");
    text.lines()
        .find(|l| {
            l.starts_with("container_memory_working_set_bytes{")
                && l.contains("container=\"agent\"")
                && l.contains(&format!("pod=\"{pod}\""))
        })
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// Audit entries of the agent's Node writes: (verb, response code, user.extra).
fn agent_node_writes(c: &NodeCluster) -> Vec<(String, u64, Value)> {
    let user = format!("system:serviceaccount:{NS}:nodetopo-agent");
    std::fs::read_to_string(&c.cp.audit_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["stage"] == "ResponseComplete"
                && v["user"]["username"] == user.as_str()
                && v["objectRef"]["resource"] == "nodes"
                && matches!(v["verb"].as_str(), Some("patch" | "update"))
        })
        .map(|v| {
            (
                v["verb"].as_str().unwrap_or_default().to_string(),
                v["responseStatus"]["code"].as_u64().unwrap_or_default(),
                v["user"]["extra"].clone(),
            )
        })
        .collect()
}

/// Warning events in `ns` (reason: message), but `MissingClusterDNS`.
async fn warning_events(c: &NodeCluster, ns: &str) -> Vec<String> {
    Api::<Event>::namespaced(c.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.reason.as_deref() != Some("MissingClusterDNS"))
        .map(|e| {
            format!(
                "{} {}: {}",
                e.involved_object.name.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            )
        })
        .collect()
}

/// Polls the Node's agent labels until stopped: the fewest seen and the number of polls.
fn watch_labels(client: &Client) -> (Arc<AtomicBool>, tokio::task::JoinHandle<(usize, usize)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (client, flag) = (client.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let (mut fewest, mut polls) = (usize::MAX, 0);
        while !flag.load(Ordering::Relaxed) {
            let n = agent_labels(&client).await.len();
            fewest = fewest.min(n);
            polls += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (fewest, polls)
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_agent_on_a_real_kubelet() {
    if !node::available("chart_agent_on_a_real_kubelet") {
        return;
    }
    let tag = chart_image();
    let agent_image = image::agent_image(&tag);
    let c = NodeCluster::start(&[agent_image]).await;
    gpu_node_setup(&c).await;

    let installed = Instant::now();
    let (_, metrics_port) = helm_install(&c, &[]);
    let labels = eventually(
        Duration::from_secs(120),
        "the agent's labels on the Node",
        || {
            let client = c.client.clone();
            async move { Some(agent_labels(&client).await).filter(|l| !l.is_empty()) }
        },
    )
    .await;
    let labelled_in = installed.elapsed();
    let pod = ready_agent(&c, None, Duration::from_secs(120)).await;
    let ready_in = installed.elapsed();
    let pod_name = pod.metadata.name.clone().unwrap();
    eprintln!(
        "node bring-up (containerd start to Node Ready) {:.1} s; helm install -> Node labelled \
         in {:.1} s, agent pod Ready in {:.1} s; labels {labels:?}",
        c.node_ready_in.as_secs_f64(),
        labelled_in.as_secs_f64(),
        ready_in.as_secs_f64()
    );
    // This machine has no GPU and no NVML: the agent still publishes what sysfs shows.
    assert_eq!(
        labels.get("nodetopo.io/rdma.count").map(String::as_str),
        Some("0")
    );

    // Written with the token the kubelet minted for this pod: the API server saw the pod's and
    // the node's claims, and the own-node policy let the write through.
    let writes = agent_node_writes(&c);
    let ok: Vec<&Value> = writes
        .iter()
        .filter(|(_, code, _)| *code == 200)
        .map(|(_, _, extra)| extra)
        .collect();
    assert!(
        !ok.is_empty(),
        "no successful Node write by the agent: {writes:?}"
    );
    for extra in &ok {
        assert_eq!(
            extra["authentication.kubernetes.io/node-name"],
            json!([NODE]),
            "{extra}"
        );
        assert_eq!(
            extra["authentication.kubernetes.io/pod-name"],
            json!([pod_name]),
            "{extra}"
        );
    }

    // Run by the runtime the chart's RuntimeClass names (containerd's `nvidia` handler).
    let id = container_id(&pod, "agent");
    assert!(
        c.node
            .dir()
            .join("containerd/state/runc-nvidia/k8s.io")
            .join(&id)
            .exists(),
        "container {id} was not run by the nvidia handler"
    );

    // Inside the container, as the kernel sees it.
    let pid = container_pid(&c, &pod, "agent");
    assert_eq!(proc_status(pid, "Uid"), "65532 65532 65532 65532");
    assert_eq!(proc_status(pid, "Gid"), "65532 65532 65532 65532");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(proc_status(pid, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    assert_eq!(
        proc_status(pid, "Seccomp"),
        "2",
        "RuntimeDefault seccomp filter"
    );
    for at in ["/", "/host-sys"] {
        let opts = mount_options(pid, at);
        assert!(opts.split(',').any(|o| o == "ro"), "{at} mounted {opts}");
    }
    let env = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let env = String::from_utf8_lossy(&env);
    assert!(
        env.split('\0').any(|e| e == format!("NODE_NAME={NODE}")),
        "{env}"
    );

    // NVML is absent here: the kubelet's prober still finds the agent live and ready.
    let probes = eventually(
        Duration::from_secs(90),
        "a liveness and a readiness probe",
        || {
            let r = probe_results(&c, &pod_name);
            let seen = |t: &str| r.get(&(t.to_string(), "successful".to_string())).copied();
            std::future::ready(
                (seen("Liveness").is_some_and(|n| n >= 1.0)
                    && seen("Readiness").is_some_and(|n| n >= 1.0))
                .then_some(r),
            )
        },
    )
    .await;
    let failed: f64 = probes
        .iter()
        .filter(|((_, result), _)| result != "successful")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(failed, 0.0, "probe results {probes:?}");
    let readyz = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{metrics_port}/readyz"))
        .output()
        .expect("curl");
    eprintln!(
        "agent /readyz without NVML: {}",
        String::from_utf8_lossy(&readyz.stdout)
    );
    let log = c.node.container_log(NS, &pod_name, "agent").join("\n");
    assert!(
        log.to_lowercase().contains("nvml"),
        "the agent says NVML is missing:\n{log}"
    );
    let memory = eventually(
        Duration::from_secs(60),
        "the kubelet's memory figure",
        || std::future::ready(working_set(&c, &pod_name)),
    )
    .await;
    eprintln!(
        "agent container working set (kubelet /metrics/resource): {:.1} MiB; the process's \
         VmRSS (kernel): {}; probes {probes:?}",
        memory / 1048576.0,
        proc_status(pid, "VmRSS")
    );

    // A changed pod template: the DaemonSet replaces the pod; the labels stay throughout.
    let (stop, watcher) = watch_labels(&c.client);
    c.cp.helm(&[
        "upgrade",
        "nodetopo",
        Path::new(ROOT).join("charts/nodetopo").to_str().unwrap(),
        "--namespace",
        NS,
        "--reuse-values",
        "--set",
        "agent.interval=30s",
    ]);
    let replaced = ready_agent(&c, Some(&pod_name), Duration::from_secs(120)).await;
    let replaced_name = replaced.metadata.name.clone().unwrap();
    let args = replaced.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap_or_default();
    assert!(args.contains(&"--interval=30s".to_string()), "{args:?}");

    // A deleted pod: SIGTERM from the kubelet, exit 0 well inside the grace period. A watch
    // sees every status the kubelet writes before the pod is gone.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    let wp = WatchParams::default()
        .fields(&format!("metadata.name={replaced_name}"))
        .timeout(90);
    let mut events = pods
        .watch(&wp, "0")
        .await
        .expect("watch the agent pod")
        .boxed();
    let deleted = Instant::now();
    pods.delete(&replaced_name, &DeleteParams::default())
        .await
        .expect("delete the agent pod");
    let mut exit = None;
    while let Some(ev) = events.try_next().await.expect("pod watch") {
        let (p, gone) = match ev {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => (p, false),
            WatchEvent::Deleted(p) => (p, true),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("pod watch: {e:?}"),
        };
        if let Some(t) = p
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|cs| cs.into_iter().find(|c| c.name == "agent"))
            .and_then(|c| c.state)
            .and_then(|s| s.terminated)
        {
            exit = Some(t.exit_code);
        }
        if gone {
            break;
        }
    }
    let gone_in = deleted.elapsed();
    let third = ready_agent(&c, Some(&replaced_name), Duration::from_secs(120)).await;
    stop.store(true, Ordering::Relaxed);
    let (fewest, polls) = watcher.await.expect("label watcher");
    eprintln!(
        "pod deletion: gone in {:.1} s (grace 30 s), exit {exit:?}; labels polled {polls} times \
         through an upgrade and a deletion, fewest seen {fewest} of {}",
        gone_in.as_secs_f64(),
        labels.len()
    );
    // Exit status 0 is the agent's own exit on SIGTERM (a SIGKILL at the end of the grace
    // period would be 137), and the pod is gone before that period ends.
    assert!(
        gone_in < Duration::from_secs(30),
        "the agent took {gone_in:?} to stop"
    );
    assert_eq!(exit, Some(0), "the agent's exit status on SIGTERM");
    assert_eq!(
        fewest,
        labels.len(),
        "labels went missing while the pod was replaced"
    );
    assert_eq!(agent_labels(&c.client).await, labels);
    assert!(third.metadata.name.is_some());

    // Nothing the kubelet or the controllers warned about but the missing cluster DNS of this
    // test cluster (`dnsPolicy: ClusterFirstWithHostNet` with no DNS Service to point at) and a
    // readiness probe that came before a slow first probe finished (503, "first probe not
    // done"; it keeps the pod unready, as it should). No probe may find the port closed.
    let (early, warnings): (Vec<String>, Vec<String>) =
        warning_events(&c, NS).await.into_iter().partition(|w| {
            w.contains("Readiness probe failed: HTTP probe failed with statuscode: 503")
        });
    eprintln!(
        "readiness probes before the first probe finished: {}",
        early.len()
    );
    assert!(warnings.is_empty(), "warning events: {warnings:#?}");

    for line in c.node.kubelet_complaints("pod=\"nodetopo/") {
        eprintln!("kubelet: {line}");
    }
    let teardown = c.stop();
    eprintln!("node teardown in {:.1} s", teardown.took.as_secs_f64());
    assert!(teardown.leftovers.is_empty(), "{:#?}", teardown.leftovers);
}

/// The Pod spec for the per-pod environment in docs/guide.md, as YAML.
fn readme_pod() -> Value {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("docs/guide.md")).expect("README");
    let section = &readme[readme
        .find("## Per-pod RDMA environment")
        .expect("the query env section")..];
    let block = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a yaml block in the query env section");
    let pod: Value = serde_yaml_ng::from_str(block).expect("README Pod spec is YAML");
    assert_eq!(pod["kind"], "Pod", "{block}");
    pod
}

/// A copy of fixture `rel` (under tests/fixtures) that the agent's user (65532) can read
/// through a hostPath volume, whatever the checkout's location and modes.
fn world_readable_fixture(rel: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("nodetopo-fixture-")
        .tempdir_in("/tmp")
        .expect("fixture copy");
    let from = Path::new(ROOT).join("tests/fixtures").join(rel);
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(status.success());
    let status = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(dir.path())
        .status()
        .expect("chmod");
    assert!(status.success());
    dir
}

/// The fixture's GPUs as (NVML index, UUID).
fn fixture_gpus(snapshot: &Path) -> Vec<(u32, String)> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(snapshot).expect("snapshot")).expect("JSON");
    v["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| {
            (
                d["index"].as_u64().expect("index") as u32,
                d["identity"]["Ok"]["uuid"]
                    .as_str()
                    .expect("uuid")
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_query_env_pod_on_a_real_kubelet() {
    if !node::available("readme_query_env_pod_on_a_real_kubelet") {
        return;
    }
    const FIXTURE: &str = "h100x8-ib";
    let fixture = world_readable_fixture(FIXTURE);
    let snapshot = fixture.path().join("snapshot.json");
    let gpus = fixture_gpus(&snapshot);
    let tag = chart_image();
    let c = NodeCluster::start(&[image::agent_image(&tag)]).await;
    gpu_node_setup(&c).await;

    // The device plugin registers nvidia.com/gpu with the kubelet: one device per fixture GPU.
    let uuids: Vec<&str> = gpus.iter().map(|(_, u)| u.as_str()).collect();
    let plugin = c.node.host_process(
        "gpu-device-plugin",
        Command::new(node::nodetest_bin("gpu-device-plugin"))
            .arg(format!("--devices={}", uuids.join(","))),
    );
    let nodes: Api<Node> = Api::all(c.client.clone());
    eventually(
        Duration::from_secs(60),
        "nvidia.com/gpu allocatable",
        || {
            let nodes = nodes.clone();
            let want = gpus.len().to_string();
            async move {
                let n = nodes.get(NODE).await.ok()?;
                let a = n.status?.allocatable?;
                (a.get("nvidia.com/gpu")?.0 == want).then_some(())
            }
        },
    )
    .await;

    // The agent replays the same fixture: its sysfs tree and NVML snapshot.
    let fixture_dir = fixture.path().display().to_string();
    let volumes =
        json!([{"name": "fixture", "hostPath": {"path": fixture_dir, "type": "Directory"}}]);
    let mounts = json!([{"name": "fixture", "mountPath": "/fixture", "readOnly": true}]);
    let (grpc, _) = helm_install(
        &c,
        &[
            "--set".into(),
            format!("agent.sysfsHostPath={}/sysfs/sys", fixture_dir),
            "--set".into(),
            "agent.extraArgs={--replay=/fixture/snapshot.json}".into(),
            "--set-json".into(),
            format!("agent.extraVolumes={volumes}"),
            "--set-json".into(),
            format!("agent.extraVolumeMounts={mounts}"),
        ],
    );
    ready_agent(&c, None, Duration::from_secs(120)).await;

    // The README's Pod, adapted to this node only where it must be: the host network (no CNI
    // network here), HOST_IP and the agent's port (the agent listens on 127.0.0.1:grpc), a main
    // container image with a shell (the agent image) that prints what it sourced, 2 GPUs.
    let mut pod = readme_pod();
    let ns = "inference";
    c.cp.kubectl(&["create", "namespace", ns]);
    pod["metadata"]["namespace"] = json!(ns);
    pod["spec"]["hostNetwork"] = json!(true);
    pod["spec"]["restartPolicy"] = json!("Never");
    let init = &mut pod["spec"]["initContainers"][0];
    init["imagePullPolicy"] = json!("IfNotPresent");
    init["args"]
        .as_array_mut()
        .unwrap()
        .push(json!(format!("--agent-port={grpc}")));
    init["env"] = json!([{"name": "HOST_IP", "value": "127.0.0.1"}]);
    init["resources"]["limits"]["nvidia.com/gpu"] = json!(2);
    let main = &mut pod["spec"]["containers"][0];
    main["image"] = json!(tag);
    main["imagePullPolicy"] = json!("IfNotPresent");
    main["command"] = json!([
        "sh",
        "-c",
        ". /nodetopo/env && echo '--- file' && cat /nodetopo/env && echo '--- env' && env"
    ]);
    main["resources"]["limits"]["nvidia.com/gpu"] = json!(2);
    let name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let out = c.cp.kubectl_input(&["apply", "-f", "-"], &pod.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let done = eventually(Duration::from_secs(120), "the README pod to finish", || {
        let pods = pods.clone();
        let name = name.clone();
        async move {
            let p = pods.get(&name).await.ok()?;
            let phase = p.status.as_ref()?.phase.clone()?;
            matches!(phase.as_str(), "Succeeded" | "Failed").then_some(p)
        }
    })
    .await;
    let main_log = c.node.container_log(ns, &name, "vllm");
    let init_log = c.node.container_log(ns, &name, "nodetopo-env");
    assert_eq!(
        done.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded"),
        "init container:\n{}\nmain container:\n{}",
        init_log.join("\n"),
        main_log.join("\n")
    );
    let file: Vec<&str> = main_log
        .iter()
        .skip_while(|l| *l != "--- file")
        .skip(1)
        .take_while(|l| *l != "--- env")
        .map(String::as_str)
        .collect();
    let env: BTreeMap<&str, &str> = main_log
        .iter()
        .skip_while(|l| *l != "--- env")
        .skip(1)
        .filter_map(|l| l.split_once('='))
        .collect();

    // The GPUs the kubelet gave the pod, through the device plugin, in CUDA (PCI) order.
    let visible = env
        .get("NVIDIA_VISIBLE_DEVICES")
        .expect("NVIDIA_VISIBLE_DEVICES in the main container");
    let given: BTreeSet<&str> = visible.split(',').collect();
    assert_eq!(given.len(), 2, "{visible}");
    let mut indices: Vec<u32> = gpus
        .iter()
        .filter(|(_, u)| given.contains(u.as_str()))
        .map(|(i, _)| *i)
        .collect();
    indices.sort_unstable();
    let list = indices
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let expected = Command::new(NODETOPO)
        .args(["probe", "-o", "env", "--gpus", &list, "--sysfs-root"])
        .arg(fixture.path().join("sysfs/sys"))
        .arg("--replay")
        .arg(&snapshot)
        .output()
        .expect("probe -o env");
    assert!(
        expected.status.success(),
        "{}",
        String::from_utf8_lossy(&expected.stderr)
    );
    let expected = String::from_utf8(expected.stdout).expect("UTF-8");
    let exports: Vec<&str> = expected
        .lines()
        .filter(|l| l.starts_with("export "))
        .collect();
    assert!(
        exports.iter().any(|l| l.starts_with("export NCCL_IB_HCA=")),
        "the fixture gives these GPUs rails:\n{expected}"
    );
    let file_exports: Vec<&str> = file
        .iter()
        .copied()
        .filter(|l| l.starts_with("export "))
        .collect();
    assert_eq!(
        file_exports, exports,
        "the env file against probe -o env --gpus {list}"
    );
    for line in &exports {
        let (k, v) = line["export ".len()..].split_once('=').expect("K=V");
        assert_eq!(
            env.get(k).copied(),
            Some(v.trim_matches('"')),
            "{k} in the main container"
        );
    }
    eprintln!(
        "README pod: GPUs {list} ({visible}); {} variables from the agent, as probe gives them",
        exports.len()
    );

    // A crash: the kubelet and containerd SIGKILLed, the agent's containers and their shims
    // left running; the clean-up still leaves nothing.
    drop(plugin);
    let teardown = c.kill();
    assert!(teardown.leftovers.is_empty(), "{:#?}", teardown.leftovers);
}
