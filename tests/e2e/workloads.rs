//! Wide-EP deployments as users create them: LeaderWorkerSet and DisaggregatedSet objects whose
//! pods are made by the real LeaderWorkerSet manager (v0.9.0, built from its Go module by
//! `build-kube.sh`, CRDs and webhook manifests from the same module), the StatefulSets under
//! them by kube-controller-manager's StatefulSet controller, and every pod placed by a real
//! kube-scheduler with the shipped configuration calling `nodetopo extender`.
//!
//! The manager runs as on a cluster, adapted to loopback: leader election off, its internal
//! certificate management off, its webhooks served on 127.0.0.1 with a certificate of the
//! harness's CA and registered by `url`. No kubelet runs: pods stay Pending once bound, and a
//! test that needs a group Ready (a rolling update) marks its pods Running and Ready itself, as
//! a kubelet would.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::harness::{self, ControlPlane, ROOT};

/// A process killed on drop.
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        harness::terminate(&mut self.0, Duration::from_secs(5));
    }
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Proc {
    let f = std::fs::File::create(log).expect("log file");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    Proc(child)
}

/// The LeaderWorkerSet manager's folder: the binary, `crds/` and `webhook/`.
fn lws_dir() -> PathBuf {
    harness::bin_dir().join("lws")
}

/// kube-controller-manager with what pods of a workload controller need: StatefulSets, the
/// garbage collector (deletion), namespaces' default ServiceAccounts and root CA.
pub fn start_controller_manager(cp: &ControlPlane) -> Proc {
    start_controller_manager_with(
        cp,
        "statefulset-controller,garbage-collector-controller,serviceaccount-controller,\
         root-ca-certificate-publisher-controller,namespace-controller",
        "kcm-workloads.log",
    )
}

/// kube-controller-manager running `controllers` (its `--controllers` list), logging to `log` in
/// the control plane's folder.
pub fn start_controller_manager_with(cp: &ControlPlane, controllers: &str, log: &str) -> Proc {
    spawn_logged(
        Command::new(harness::bin("kube-controller-manager"))
            .arg(format!("--kubeconfig={}", cp.admin_kubeconfig.display()))
            .arg(format!("--controllers={controllers}"))
            .arg(format!("--root-ca-file={}", cp.ca.display()))
            .arg("--leader-elect=false")
            .arg("--secure-port=0")
            .arg("--use-service-account-credentials=false"),
        &cp.admin_kubeconfig.with_file_name(log),
    )
}

/// The webhook configurations of the module, with its kustomize patches applied (the pod
/// webhooks only for pods of a LeaderWorkerSet) and each `clientConfig.service` replaced by a
/// URL on 127.0.0.1 and the test CA.
fn webhook_configs(port: u16, ca: &Path) -> Vec<Value> {
    use base64::Engine as _;
    let dir = lws_dir().join("webhook");
    let text = std::fs::read_to_string(dir.join("manifests.yaml")).expect("webhook manifests");
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(ca).unwrap());
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if v.is_null() {
            continue;
        }
        let patch = match v["kind"].as_str() {
            Some("MutatingWebhookConfiguration") => "mutating-patch.yaml",
            _ => "validating-patch.yaml",
        };
        let ops: Vec<Value> =
            serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join(patch)).unwrap()).unwrap();
        for op in ops {
            assert_eq!(op["op"], "replace", "{op}");
            let path = op["path"].as_str().unwrap();
            *v.pointer_mut(path)
                .unwrap_or_else(|| panic!("{path} in {patch}")) = op["value"].clone();
        }
        for w in v["webhooks"].as_array_mut().unwrap() {
            let path = w["clientConfig"]["service"]["path"]
                .as_str()
                .unwrap()
                .to_string();
            w["clientConfig"] = json!({
                "url": format!("https://127.0.0.1:{port}{path}"),
                "caBundle": ca_b64,
            });
        }
        out.push(v);
    }
    out
}

/// The LeaderWorkerSet manager with its CRDs and webhooks installed; returns once its webhook
/// server answers.
pub fn start_lws_manager(cp: &ControlPlane) -> Proc {
    cp.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        lws_dir().join("crds").to_str().unwrap(),
    ]);
    let dir = cp.admin_kubeconfig.with_file_name("lws-manager");
    std::fs::create_dir_all(&dir).unwrap();
    let (crt, key) = cp.serving_cert("lws-webhook");
    std::fs::copy(&crt, dir.join("tls.crt")).unwrap();
    std::fs::copy(&key, dir.join("tls.key")).unwrap();
    let (port, health) = (harness::free_port(), harness::free_port());
    let config = format!(
        "apiVersion: config.lws.x-k8s.io/v1alpha1\nkind: Configuration\n\
         leaderElection:\n  leaderElect: false\n\
         internalCertManagement:\n  enable: false\n\
         webhook:\n  port: {port}\n  host: 127.0.0.1\n  certDir: {}\n\
         metrics:\n  bindAddress: \"0\"\n\
         health:\n  healthProbeBindAddress: 127.0.0.1:{health}\n",
        dir.display()
    );
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    let proc = spawn_logged(
        Command::new(lws_dir().join("lws-manager"))
            .arg(format!("--config={}", dir.join("config.yaml").display()))
            .env("KUBECONFIG", &cp.admin_kubeconfig),
        &dir.join("manager.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the LeaderWorkerSet manager's webhook did not listen in 60 s:\n{}",
            std::fs::read_to_string(dir.join("manager.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for cfg in webhook_configs(port, &cp.ca) {
        let out = cp.kubectl_input(&["apply", "-f", "-"], &cfg.to_string());
        assert!(out.status.success(), "{out:?}");
    }
    proc
}

/// A control plane with nodetopo's objects, kube-controller-manager's workload controllers and
/// the LeaderWorkerSet manager (stopped when the returned processes are dropped).
async fn with_workload_controllers() -> (ControlPlane, Client, [Proc; 2]) {
    let cp = ControlPlane::start(harness::Options::default());
    let client = cp.admin().await;
    cp.kubectl(&["apply", "--server-side", "-k", &format!("{ROOT}/daemonset")]);
    let kcm = start_controller_manager(&cp);
    let lws = start_lws_manager(&cp);
    (cp, client, [kcm, lws])
}

/// An 8-GPU HGX H100 node on InfiniBand, in scalable unit `su` of spine block `block`, with the
/// labels nodetopo's agent publishes there and a real node's allocatable resources.
pub async fn create_hgx(client: &Client, name: &str, block: usize, su: usize) {
    let labels = [
        ("nodetopo.io/gpu.count", "8".to_string()),
        ("nodetopo.io/gpu.product", "NVIDIA-H100-80GB-HBM3".into()),
        ("nodetopo.io/nvlink.fabric", "none".into()),
        ("nodetopo.io/rdma.link-layer", "infiniband".into()),
        ("nodetopo.io/rdma.ib-subnet", "fe80-0000-0000-0000".into()),
        ("nodetopo.io/ib.su", format!("b{block}-su{su}")),
        ("nodetopo.io/ib.block", format!("b{block}")),
    ];
    create_node(client, name, &labels, 8).await;
}

/// A Ready node with `labels`, `gpus` GPUs and the CPU, memory and disk of an HGX server.
pub async fn create_node(client: &Client, name: &str, labels: &[(&str, String)], gpus: u32) {
    let api: Api<Node> = Api::all(client.clone());
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .chain([("kubernetes.io/hostname".to_string(), json!(name))])
        .collect();
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
    }))
    .unwrap();
    api.create(&PostParams::default(), &node).await.unwrap();
    let res = json!({"cpu": "224", "memory": "2Ti", "ephemeral-storage": "28Ti",
        "pods": "110", "nvidia.com/gpu": gpus.to_string()});
    let status = json!({"status": {"capacity": res, "allocatable": res,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "e2e", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"taints": null}})),
    )
    .await
    .unwrap();
}

/// A pod that occupies the `gpus` GPUs of a node (another team's job), bound directly.
async fn occupy(client: &Client, ns: &str, node: &str, gpus: u32) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("busy-{node}"), "namespace": ns},
        "spec": {"nodeName": node, "containers": [{"name": "train", "image": "pytorch:2.9",
            "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

/// The llm-d wide-EP pod template: vLLM with 8 GPUs, 32 CPUs, 512Gi memory and 1Ti ephemeral
/// storage, `llm-d.ai/role` and `llm-d.ai/model` labels, no `schedulerName`.
fn vllm_template(role: &str, model: &str) -> Value {
    json!({
        "metadata": {"labels": {"llm-d.ai/role": role, "llm-d.ai/model": model,
            "llm-d.ai/inferenceServing": "true"}},
        "spec": {"containers": [{
            "name": "vllm",
            "image": "ghcr.io/llm-d/llm-d-cuda:v0.3.0",
            "args": ["--model", "deepseek-ai/DeepSeek-R1-0528", "--data-parallel-size", "16"],
            "resources": {
                "limits": {"nvidia.com/gpu": "8", "cpu": "32", "memory": "512Gi",
                    "ephemeral-storage": "1Ti"},
                "requests": {"nvidia.com/gpu": "8", "cpu": "32", "memory": "512Gi",
                    "ephemeral-storage": "1Ti"},
            },
        }]},
    })
}

/// A LeaderWorkerSet of `replicas` groups of `size` pods from `template`.
fn lws(name: &str, replicas: u32, size: u32, template: &Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "leaderWorkerTemplate": {
                "size": size,
                "leaderTemplate": template,
                "workerTemplate": template,
            },
        },
    })
}

/// Applies `obj` in `ns` (server-side, as a user's `kubectl apply`).
fn apply(cp: &ControlPlane, ns: &str, obj: &Value) {
    let out = cp.kubectl_input(
        &["apply", "--server-side", "-n", ns, "-f", "-"],
        &obj.to_string(),
    );
    assert!(
        out.status.success(),
        "apply {}: {}",
        obj["metadata"]["name"],
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pods of `ns` with a LeaderWorkerSet group key: group key → (pod → node, if bound).
async fn groups(client: &Client, ns: &str) -> BTreeMap<String, BTreeMap<String, Option<String>>> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("leaderworkerset.sigs.k8s.io/group-key"))
        .await
        .unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
    for p in pods.items {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let labels = p.metadata.labels.clone().unwrap_or_default();
        let key = format!(
            "{}/{}",
            labels["leaderworkerset.sigs.k8s.io/name"],
            labels["leaderworkerset.sigs.k8s.io/group-key"]
        );
        out.entry(key).or_default().insert(
            p.metadata.name.clone().unwrap(),
            p.spec.and_then(|s| s.node_name),
        );
    }
    out
}

/// Waits until `ns` has `pods` group pods, all bound; returns group → nodes and how long it took.
async fn all_bound(
    client: &Client,
    ns: &str,
    pods: usize,
    within: Duration,
) -> (BTreeMap<String, Vec<String>>, Duration) {
    let t0 = Instant::now();
    let out = harness::eventually(within, &format!("{pods} pods bound in {ns}"), || async {
        let g = groups(client, ns).await;
        let n: usize = g.values().map(BTreeMap::len).sum();
        if n != pods {
            return None;
        }
        let mut out = BTreeMap::new();
        for (k, members) in g {
            let nodes: Option<Vec<String>> = members.into_values().collect();
            out.insert(k, nodes?);
        }
        Some(out)
    })
    .await;
    (out, t0.elapsed())
}

/// The scalable unit (`ib.su`) of each node.
async fn su_of(client: &Client) -> BTreeMap<String, String> {
    harness::nodes_by_name(client)
        .await
        .into_iter()
        .filter_map(|(n, node)| {
            let su = node.metadata.labels?.get("nodetopo.io/ib.su")?.clone();
            Some((n, su))
        })
        .collect()
}

/// Deletes every LeaderWorkerSet and DisaggregatedSet in `ns` and waits until the garbage
/// collector has removed their StatefulSets and pods. Pods bound to a node wait for its kubelet
/// to confirm their end; none runs here, so they are removed at once, as the kubelet would.
async fn delete_workloads(cp: &ControlPlane, client: &Client, ns: &str) {
    cp.kubectl(&[
        "delete",
        "leaderworkersets,disaggregatedsets",
        "--all",
        "-n",
        ns,
        "--wait=false",
    ]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(client.clone(), ns);
    let dp = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    harness::eventually(Duration::from_secs(90), "the workloads' pods gone", || {
        let (pods, sts, dp) = (pods.clone(), sts.clone(), dp.clone());
        async move {
            let _ = pods.delete_collection(&dp, &ListParams::default()).await;
            let p = pods.list(&ListParams::default()).await.ok()?.items.len();
            let s = sts.list(&ListParams::default()).await.ok()?.items.len();
            (p == 0 && s == 0).then_some(())
        }
    })
    .await;
}

/// What a kubelet does for the pods bound to its node, for the tests that need it until a real
/// kubelet runs in this suite: it reports each bound pod Running and Ready, and confirms the
/// end of a pod being deleted (without it a deleted pod stays Terminating for ever, and a
/// scale-down or rolling update never finishes). Stopped on drop.
struct KubeletStandIn(tokio::task::JoinHandle<()>);

impl KubeletStandIn {
    fn start(client: &Client) -> Self {
        let pods: Api<Pod> = Api::all(client.clone());
        Self(tokio::spawn(async move {
            let gone = kube::api::DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            let conditions: Vec<Value> =
                ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
                    .iter()
                    .map(|t| {
                        json!({"type": t, "status": "True",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"})
                    })
                    .collect();
            loop {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    for p in list.items {
                        let (Some(ns), Some(name)) = (&p.metadata.namespace, &p.metadata.name)
                        else {
                            continue;
                        };
                        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                        let api: Api<Pod> = Api::namespaced(pods.clone().into_client(), ns);
                        if p.metadata.deletion_timestamp.is_some() {
                            let _ = api.delete(name, &gone).await;
                        } else if bound && !running(&p) {
                            let _ = api
                                .patch_status(
                                    name,
                                    &PatchParams::default(),
                                    &Patch::Merge(&json!({"status": {"phase": "Running",
                                        "startTime": "2026-01-01T00:00:00Z",
                                        "conditions": conditions}})),
                                )
                                .await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }))
    }
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

impl Drop for KubeletStandIn {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// kube-scheduler without the extender: the reference.
pub fn start_plain_scheduler(cp: &ControlPlane) -> Proc {
    let cfg = json!({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": cp.admin_kubeconfig.display().to_string()},
        "leaderElection": {"leaderElect": false},
        "profiles": [{"schedulerName": "default-scheduler"}],
    });
    let path = cp.admin_kubeconfig.with_file_name("plain-scheduler.yaml");
    std::fs::write(&path, cfg.to_string()).unwrap();
    spawn_logged(
        Command::new(harness::bin("kube-scheduler"))
            .arg(format!("--config={}", path.display()))
            .arg("--secure-port=0"),
        &cp.admin_kubeconfig.with_file_name("plain-scheduler.log"),
    )
}

/// The chart with the extender and the webhook (`helm template`), as objects.
fn chart_with_routing(cp: &ControlPlane) -> Vec<Value> {
    let out = cp.helm(&[
        "template",
        "nodetopo",
        &format!("{ROOT}/charts/nodetopo"),
        "--namespace",
        "nodetopo",
        "--set",
        "extender.enabled=true",
        "--set",
        "webhook.enabled=true",
    ]);
    serde_yaml_ng::Deserializer::from_str(&out)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &Value| v.is_object())
        .collect()
}

/// The shipped scheduling with the webhook's routing, from the chart's own objects: `nodetopo
/// webhook` with the chart's arguments (listeners and certificate moved to 127.0.0.1 and the
/// test CA), the chart's MutatingWebhookConfiguration pointed at it, and kube-scheduler with the
/// chart's two-profile configuration calling `nodetopo extender`.
pub struct RoutedScheduling {
    _scheduler: Proc,
    _webhook: Proc,
    _extender: crate::scheduler::Proc,
    /// The profile the webhook gives group pods.
    pub group_profile: String,
}

pub fn start_routed_scheduling(cp: &ControlPlane) -> RoutedScheduling {
    let objs = chart_with_routing(cp);
    let component =
        |o: &Value, c: &str| o["metadata"]["labels"]["app.kubernetes.io/component"] == c;
    let (extender, ext_port) = crate::scheduler::start_extender(cp);

    let deploy = objs
        .iter()
        .find(|o| o["kind"] == "Deployment" && component(o, "webhook"))
        .expect("the webhook's Deployment");
    let args: Vec<String> = harness::chart_args_for_loopback(deploy);
    let (crt, key) = cp.serving_cert("route-webhook");
    let port = harness::free_port();
    let webhook = spawn_logged(
        Command::new(harness::NODETOPO)
            .args(&args)
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!(
                "--metrics-listen=127.0.0.1:{}",
                harness::free_port()
            ))
            .arg(format!("--tls-cert={}", crt.display()))
            .arg(format!("--tls-key={}", key.display()))
            .env("KUBECONFIG", &cp.admin_kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "warn"),
        &cp.admin_kubeconfig.with_file_name("route-webhook.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the webhook did not listen in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut mwc = objs
        .iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .expect("the chart's MutatingWebhookConfiguration")
        .clone();
    let ca = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        std::fs::read(&cp.ca).unwrap(),
    );
    let mut routes = 0;
    for w in mwc["webhooks"].as_array_mut().unwrap() {
        let path = w["clientConfig"]["service"]["path"]
            .as_str()
            .unwrap()
            .to_string();
        routes += usize::from(path == "/route");
        w["clientConfig"] =
            json!({"url": format!("https://127.0.0.1:{port}{path}"), "caBundle": ca});
    }
    assert_eq!(routes, 1, "the chart registers the routing webhook once");
    let out = cp.kubectl_input(&["apply", "-f", "-"], &mwc.to_string());
    assert!(out.status.success(), "{out:?}");

    let cm = objs
        .iter()
        .find(|o| {
            o["kind"] == "ConfigMap"
                && component(o, "extender")
                && o["data"]["scheduler-config.yaml"].is_string()
        })
        .expect("the chart's scheduler configuration");
    let mut cfg: Value =
        serde_yaml_ng::from_str(cm["data"]["scheduler-config.yaml"].as_str().unwrap()).unwrap();
    let group_profile = cfg["profiles"][1]["schedulerName"]
        .as_str()
        .expect("a second profile for the groups")
        .to_string();
    assert_eq!(cfg["profiles"][0]["schedulerName"], "default-scheduler");
    assert!(
        cfg["profiles"][0]["percentageOfNodesToScore"].is_null(),
        "{cfg}"
    );
    assert!(cfg["percentageOfNodesToScore"].is_null(), "{cfg}");
    cfg["extenders"][0]["urlPrefix"] = json!(format!("http://127.0.0.1:{ext_port}/"));
    cfg["clientConnection"] = json!({"kubeconfig": cp.admin_kubeconfig.display().to_string()});
    cfg["leaderElection"] = json!({"leaderElect": false});
    let path = cp.admin_kubeconfig.with_file_name("routed-scheduler.yaml");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let scheduler = spawn_logged(
        Command::new(harness::bin("kube-scheduler"))
            .arg(format!("--config={}", path.display()))
            .arg("--secure-port=0"),
        &cp.admin_kubeconfig.with_file_name("routed-scheduler.log"),
    );
    RoutedScheduling {
        _scheduler: scheduler,
        _webhook: webhook,
        _extender: extender,
        group_profile,
    }
}

/// One fragmented InfiniBand fleet: 2 spine blocks × 3 scalable units × 4 HGX nodes, some nodes
/// busy with other jobs. Seeded: which scalable units are tight (exactly 2 free nodes: one group
/// fits, not a pair) and which two have room for a decode and a prefill group (4 free).
fn fleet(seed: u64) -> Vec<(usize, usize, usize)> {
    // (block, su, free nodes); the two roomy scalable units move with the seed.
    let roomy: BTreeSet<usize> = [(seed % 6) as usize, ((seed + 3) % 6) as usize].into();
    (0..6)
        .map(|i| (i / 3, i % 3, if roomy.contains(&i) { 4 } else { 2 }))
        .collect()
}

struct Outcome {
    took: Duration,
    groups: usize,
    split: usize,
    pairs_apart: usize,
}

/// Creates the fleet, then a prefill and a decode LeaderWorkerSet (`size: 2`, llm-d's wide-EP
/// shape) in `ns`, and measures until every pod is bound.
async fn wide_ep_round(
    cp: &ControlPlane,
    client: &Client,
    ns: &str,
    model: &str,
) -> (BTreeMap<String, Vec<String>>, Outcome) {
    cp.kubectl(&["create", "namespace", ns]);
    wait_default_sa(client, ns).await;
    let t0 = Instant::now();
    for role in ["decode", "prefill"] {
        apply(
            cp,
            ns,
            &lws(
                &format!("{model}-{role}"),
                1,
                2,
                &vllm_template(role, model),
                json!({}),
            ),
        );
    }
    let (placed, _) = all_bound(client, ns, 4, Duration::from_secs(120)).await;
    let took = t0.elapsed();
    let sus = su_of(client).await;
    let su_set =
        |nodes: &[String]| -> BTreeSet<String> { nodes.iter().map(|n| sus[n].clone()).collect() };
    let split = placed.values().filter(|n| su_set(n).len() > 1).count();
    let all: Vec<String> = placed.values().flatten().cloned().collect();
    let pairs_apart = usize::from(su_set(&all).len() > 1);
    let out = Outcome {
        took,
        groups: placed.len(),
        split,
        pairs_apart,
    };
    (placed, out)
}

/// The llm-d wide-EP shape on a fragmented InfiniBand fleet, with the extender and with
/// kube-scheduler alone, several seeds: every LeaderWorkerSet group (`group-key`, set by the
/// manager's pod webhook) lands in one scalable unit, and prefill joins its decode's scalable
/// unit wherever one has room for both; deletion frees the room.
#[tokio::test]
async fn wide_ep_leaderworkersets_placed_through_the_extender() {
    let (cp, client, _controllers) = with_workload_controllers().await;
    cp.kubectl(&["create", "namespace", "other-jobs"]);
    wait_default_sa(&client, "other-jobs").await;
    let mut nodes = Vec::new();
    for b in 0..2 {
        for s in 0..3 {
            for i in 0..4 {
                let name = format!("hgx-b{b}-su{s}-{i}");
                create_hgx(&client, &name, b, s).await;
                nodes.push((b, s, i, name));
            }
        }
    }

    let mut rows = Vec::new();
    for (mode, seeds) in [
        ("kube-scheduler alone", 0..3u64),
        ("nodetopo extender", 0..3u64),
        (ROUTED, 3..5u64),
    ] {
        let mut routed = None;
        let (sched, _ext) = if mode == "nodetopo extender" {
            let (ext, port) = crate::scheduler::start_extender(&cp);
            let s = crate::scheduler::start_scheduler(&cp, port, "default-scheduler", true);
            (Box::new(s) as Box<dyn std::any::Any>, Some(ext))
        } else if mode == ROUTED {
            let r = start_routed_scheduling(&cp);
            routed = Some(r.group_profile.clone());
            (Box::new(r) as Box<dyn std::any::Any>, None)
        } else {
            (
                Box::new(start_plain_scheduler(&cp)) as Box<dyn std::any::Any>,
                None,
            )
        };
        for seed in seeds {
            // Busy nodes for this seed: all but the free ones of each scalable unit.
            let free = fleet(seed);
            for (b, s, i, name) in &nodes {
                let f = free.iter().find(|x| x.0 == *b && x.1 == *s).unwrap().2;
                if *i >= f {
                    occupy(&client, "other-jobs", name, 8).await;
                }
            }
            let tag = match (&_ext, &routed) {
                (Some(_), _) => "x",
                (None, Some(_)) => "r",
                (None, None) => "k",
            };
            let ns = format!("ep-{tag}{seed}");
            if routed.is_some() {
                // The API server loads a new webhook configuration asynchronously.
                wait_for_routing(&cp).await;
            }
            let (placed, o) = wide_ep_round(&cp, &client, &ns, &format!("r1-{tag}{seed}")).await;
            if let Some(profile) = &routed {
                assert_scheduled_by(&client, &ns, profile, &cp).await;
            }
            eprintln!(
                "{mode}, seed {seed}: {} groups bound in {:.2} s, {} split, pair apart: {}; {placed:?}",
                o.groups,
                o.took.as_secs_f64(),
                o.split,
                o.pairs_apart
            );
            if _ext.is_some() || routed.is_some() {
                assert_eq!(o.split, 0, "seed {seed}: a group was split: {placed:?}");
                assert_eq!(
                    o.pairs_apart, 0,
                    "seed {seed}: two scalable units have room for both groups, yet prefill \
                     and decode were placed apart: {placed:?}"
                );
            }
            rows.push((mode, seed, o));
            // Deletion: the LeaderWorkerSets go, the garbage collector removes their
            // StatefulSets and pods, and the other jobs free their nodes for the next seed.
            delete_workloads(&cp, &client, &ns).await;
            harness::delete_pods(&client, "other-jobs").await;
        }
        drop(sched);
    }
    let summary: Vec<String> = rows
        .iter()
        .map(|(m, s, o)| {
            format!(
                "{m} seed {s}: {:.2} s, {} of {} groups split, pair apart {}",
                o.took.as_secs_f64(),
                o.split,
                o.groups,
                o.pairs_apart
            )
        })
        .collect();
    eprintln!("WIDE-EP SUMMARY\n{}", summary.join("\n"));
}

/// The wide-EP test's mode with the chart's two profiles and the webhook's routing.
const ROUTED: &str = "nodetopo extender, two profiles, webhook routing";

/// Waits until a probe pod of an llm-d group asking for a GPU is routed on creation (dry run:
/// nothing is stored), i.e. the API server calls the routing webhook. (A LeaderWorkerSet pod
/// written by hand would be refused by the manager's own webhook.)
pub async fn wait_for_routing(cp: &ControlPlane) {
    // A pod needs its ServiceAccount, which no controller may have made here.
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": "default"}});
    let out = cp.kubectl_input(&["apply", "-f", "-"], &sa.to_string());
    assert!(out.status.success(), "{out:?}");
    let probe = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "route-probe-", "namespace": "default",
            "labels": {"llm-d.ai/role": "decode", "llm-d.ai/model": "probe"}},
        "spec": {"containers": [{"name": "c", "image": "vllm",
            "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}});
    let deadline = Instant::now() + Duration::from_secs(30);
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
            &probe.to_string(),
        );
        let name = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && name != "default-scheduler" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the routing webhook did not answer in 30 s: {name} {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(cp.admin_kubeconfig.with_file_name("route-webhook.log"))
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every group pod in `ns` was created with (and bound by) `profile`; a CPU pod and a GPU pod in
/// no group, created in `ns` as well, keep `default-scheduler` and are bound by it.
async fn assert_scheduled_by(client: &Client, ns: &str, profile: &str, _cp: &ControlPlane) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for p in pods.list(&ListParams::default()).await.unwrap() {
        let name = p.spec.as_ref().and_then(|s| s.scheduler_name.clone());
        assert_eq!(
            name.as_deref(),
            Some(profile),
            "{} was not routed to the group profile",
            p.metadata.name.unwrap_or_default()
        );
    }
    for (name, limits) in [
        ("plain-cpu", json!({"cpu": "1"})),
        ("plain-gpu", json!({"nvidia.com/gpu": "1"})),
    ] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"limits": limits}}]},
        }))
        .unwrap();
        let created = pods.create(&PostParams::default(), &pod).await.unwrap();
        assert_eq!(
            created
                .spec
                .as_ref()
                .and_then(|s| s.scheduler_name.as_deref()),
            Some("default-scheduler"),
            "{name} is not a group member: it keeps the default profile"
        );
        harness::eventually(Duration::from_secs(60), &format!("{name} bound"), || {
            let pods = pods.clone();
            async move { pods.get(name).await.ok()?.spec?.node_name.map(|_| ()) }
        })
        .await;
    }
}

/// The same deployment through one DisaggregatedSet (`prefill` and `decode` roles) on a free
/// InfiniBand fleet, then its decode role scaled up and down again; a LeaderWorkerSet pair
/// whose decode template changes (a rolling replacement); and a LeaderWorkerSet with
/// `exclusive-topology` on the scalable-unit label, whose workers the manager creates only after
/// their leader is bound and pins to its domain.
#[tokio::test]
async fn disaggregatedset_scale_up_and_exclusive_topology() {
    let (cp, client, _controllers) = with_workload_controllers().await;
    for b in 0..2 {
        for s in 0..3 {
            for i in 0..4 {
                create_hgx(&client, &format!("hgx-b{b}-su{s}-{i}"), b, s).await;
            }
        }
    }
    let (_ext, port) = crate::scheduler::start_extender(&cp);
    let _sched = crate::scheduler::start_scheduler(&cp, port, "default-scheduler", true);
    let sus = su_of(&client).await;
    let su_set =
        |nodes: &[String]| -> BTreeSet<String> { nodes.iter().map(|n| sus[n].clone()).collect() };

    let ns = "ds";
    cp.kubectl(&["create", "namespace", ns]);
    wait_default_sa(&client, ns).await;
    let role = |name: &str, replicas: u32| {
        json!({"name": name, "spec": {"replicas": replicas, "leaderWorkerTemplate": {
            "size": 2,
            "leaderTemplate": vllm_template(name, "r1-ds"),
            "workerTemplate": vllm_template(name, "r1-ds"),
        }}})
    };
    let ds = |decode: u32| {
        json!({
            "apiVersion": "disaggregatedset.x-k8s.io/v1",
            "kind": "DisaggregatedSet",
            "metadata": {"name": "r1"},
            "spec": {"roles": [role("prefill", 1), role("decode", decode)]},
        })
    };
    apply(&cp, ns, &ds(1));
    let (placed, took) = all_bound(&client, ns, 4, Duration::from_secs(120)).await;
    eprintln!(
        "DisaggregatedSet bound in {:.2} s: {placed:?}",
        took.as_secs_f64()
    );

    for (g, nodes) in &placed {
        assert_eq!(su_set(nodes).len(), 1, "group {g} split: {placed:?}");
    }
    let all: Vec<String> = placed.values().flatten().cloned().collect();
    assert_eq!(
        su_set(&all).len(),
        1,
        "prefill joins decode's scalable unit, which has room: {placed:?}"
    );
    // The pods carry what nodetopo pairs them by, set by the controllers themselves.
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    for p in &pods.items {
        let l = p.metadata.labels.as_ref().unwrap();
        assert_eq!(l["disaggregatedset.x-k8s.io/name"], "r1", "{l:?}");
        assert!(
            l.contains_key("leaderworkerset.sigs.k8s.io/group-key"),
            "{l:?}"
        );
    }

    // Scale decode up: the new group is kept in one scalable unit, the old ones stay put.
    apply(&cp, ns, &ds(2));
    let (scaled, _) = all_bound(&client, ns, 6, Duration::from_secs(120)).await;
    for (g, nodes) in &scaled {
        assert_eq!(
            su_set(nodes).len(),
            1,
            "group {g} split after scale-up: {scaled:?}"
        );
        if let Some(before) = placed.get(g) {
            let mut a = before.clone();
            let mut b = nodes.clone();
            a.sort();
            b.sort();
            assert_eq!(a, b, "group {g} moved on scale-up");
        }
    }
    // Scale decode back down: the newest group goes, the rest stay put. (A scale-down ends
    // only once the pods' kubelet confirms their end: the stand-in does that from here on, and
    // reports the pods Running and Ready, which the rolling update below waits for.)
    let _kubelet = KubeletStandIn::start(&client);
    apply(&cp, ns, &ds(1));
    let (down, _) = all_bound(&client, ns, 4, Duration::from_secs(120)).await;
    for (g, nodes) in &down {
        let mut a = scaled[g].clone();
        let mut b = nodes.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "group {g} moved on scale-down");
    }
    delete_workloads(&cp, &client, ns).await;

    // A template change of a LeaderWorkerSet pair: the manager replaces the decode groups one
    // at a time (each new group once the previous one is Ready); every replacement is kept in
    // one scalable unit, its group's, beside its prefill group.
    let ns = "roll";
    cp.kubectl(&["create", "namespace", ns]);
    wait_default_sa(&client, ns).await;
    let decode = |v: &str| {
        let mut t = vllm_template("decode", "r1-roll");
        t["spec"]["containers"][0]["env"] = json!([{"name": "VLLM_REVISION", "value": v}]);
        lws("r1-decode", 2, 2, &t, json!({}))
    };
    apply(&cp, ns, &decode("1"));
    apply(
        &cp,
        ns,
        &lws(
            "r1-prefill",
            1,
            2,
            &vllm_template("prefill", "r1-roll"),
            json!({}),
        ),
    );
    let (before, _) = all_bound(&client, ns, 6, Duration::from_secs(120)).await;
    apply(&cp, ns, &decode("2"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    harness::eventually(
        Duration::from_secs(180),
        "the decode groups replaced",
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels("llm-d.ai/role=decode"))
                    .await
                    .ok()?;
                let new = list
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| {
                        p.spec.as_ref().is_some_and(|s| {
                            s.node_name.is_some()
                                && s.containers[0].env.iter().flatten().any(|e| {
                                    e.name == "VLLM_REVISION" && e.value.as_deref() == Some("2")
                                })
                        })
                    })
                    .count();
                (new == 4 && list.items.len() == 4).then_some(())
            }
        },
    )
    .await;
    let (rolled, _) = all_bound(&client, ns, 6, Duration::from_secs(60)).await;
    eprintln!("after the rolling update: {rolled:?}");
    for (g, nodes) in &rolled {
        assert_eq!(
            su_set(nodes).len(),
            1,
            "group {g} split after the update: {rolled:?}"
        );
        // The replaced group is back in its scalable unit (the group key stays).
        assert_eq!(
            before.get(g).map(|n| su_set(n)),
            Some(su_set(nodes)),
            "group {g} left its scalable unit: {before:?} -> {rolled:?}"
        );
    }
    let prefill_su: Vec<_> = rolled
        .iter()
        .filter(|(g, _)| g.starts_with("r1-prefill/"))
        .flat_map(|(_, n)| su_set(n))
        .collect();
    assert!(
        rolled
            .iter()
            .filter(|(g, _)| g.starts_with("r1-decode/"))
            .any(|(_, n)| su_set(n).iter().all(|s| prefill_su.contains(s))),
        "no replaced decode group beside its prefill group: {rolled:?}"
    );
    delete_workloads(&cp, &client, ns).await;
    drop(_kubelet);

    // exclusive-topology: each group gets a scalable unit to itself.
    let ns = "excl";
    cp.kubectl(&["create", "namespace", ns]);
    wait_default_sa(&client, ns).await;
    apply(
        &cp,
        ns,
        &lws(
            "r1-decode",
            2,
            2,
            &vllm_template("decode", "r1-excl"),
            json!({"leaderworkerset.sigs.k8s.io/exclusive-topology": "nodetopo.io/ib.su"}),
        ),
    );
    let (excl, took) = all_bound(&client, ns, 4, Duration::from_secs(120)).await;
    eprintln!(
        "exclusive-topology groups bound in {:.2} s: {excl:?}",
        took.as_secs_f64()
    );
    let mut seen = BTreeSet::new();
    for (g, nodes) in &excl {
        let s = su_set(nodes);
        assert_eq!(s.len(), 1, "group {g} split: {excl:?}");
        assert!(
            seen.insert(s.into_iter().next().unwrap()),
            "two groups share a scalable unit: {excl:?}"
        );
    }
    // The workers were pinned to their leader's domain by the manager.
    let workers = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("leaderworkerset.sigs.k8s.io/worker-index=1"))
        .await
        .unwrap();
    for w in workers.items {
        let sel = w.spec.unwrap().node_selector.unwrap_or_default();
        assert!(sel.contains_key("nodetopo.io/ib.su"), "{sel:?}");
    }
}

async fn wait_default_sa(client: &Client, ns: &str) {
    harness::eventually(
        Duration::from_secs(30),
        "the default ServiceAccount",
        || {
            let sa =
                Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns);
            async move { sa.get("default").await.ok() }
        },
    )
    .await;
}

/// A GB200 tray (4 GPUs) in clique `clique` of NVL72 rack `rack`, its fabric `fabric`.
async fn create_tray(client: &Client, name: &str, rack: &str, clique: u32, fabric: &str) {
    let mut labels = vec![
        ("nodetopo.io/gpu.count", "4".to_string()),
        ("nodetopo.io/gpu.product", "NVIDIA-GB200".into()),
        ("nodetopo.io/nvlink.fabric", fabric.into()),
        ("nodetopo.io/nvlink.cluster", rack.into()),
        ("nodetopo.io/rdma.link-layer", "infiniband".into()),
        ("nodetopo.io/rdma.ib-subnet", "fe80-0000-0000-0000".into()),
    ];
    if fabric == "ready" {
        labels.push(("nodetopo.io/nvlink.domain", format!("{rack}.{clique}")));
    }
    create_node(client, name, &labels, 4).await;
}

/// The GB200 shape: 4-GPU pods, a decode LeaderWorkerSet of groups of 8 and a prefill one of
/// groups of 2, on two NVL72 racks of two cliques each, some trays `degraded` or `pending` and
/// some busy with other jobs: every group lands in one clique of ready trays, and a prefill
/// group in its decode's rack.
#[tokio::test]
async fn gb200_decode_and_prefill_groups_from_the_real_controllers() {
    const RACK_A: &str = "4f1c2d3e-5a6b-47c8-a9d0-e1f2a3b4c5d6";
    const RACK_B: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    let (cp, client, _controllers) = with_workload_controllers().await;
    cp.kubectl(&["create", "namespace", "other-jobs"]);
    wait_default_sa(&client, "other-jobs").await;
    // Rack A: clique 1 has 9 trays, 5 of them busy (4 free); clique 2 has 9 free. Rack B:
    // clique 1 has 8 free, clique 2 has 2 free; one degraded and one pending tray in each rack.
    for (rack, tag, clique, trays, busy) in [
        (RACK_A, "a", 1, 9, 5),
        (RACK_A, "a", 2, 9, 0),
        (RACK_B, "b", 1, 8, 0),
        (RACK_B, "b", 2, 9, 7),
    ] {
        for i in 0..trays {
            let name = format!("gb-{tag}{clique}-{i}");
            create_tray(&client, &name, rack, clique, "ready").await;
            if i < busy {
                occupy(&client, "other-jobs", &name, 4).await;
            }
        }
    }
    for (rack, tag) in [(RACK_A, "a"), (RACK_B, "b")] {
        create_tray(&client, &format!("gb-{tag}-degraded"), rack, 1, "degraded").await;
        create_tray(&client, &format!("gb-{tag}-pending"), rack, 1, "pending").await;
    }
    let (_ext, port) = crate::scheduler::start_extender(&cp);
    let _sched = crate::scheduler::start_scheduler(&cp, port, "default-scheduler", true);
    let nodes = harness::nodes_by_name(&client).await;
    let label =
        |n: &str, k: &str| -> Option<String> { nodes[n].metadata.labels.as_ref()?.get(k).cloned() };

    let ns = "gb";
    cp.kubectl(&["create", "namespace", ns]);
    wait_default_sa(&client, ns).await;
    let template = |role: &str| {
        let mut t = vllm_template(role, "r1-gb");
        t["spec"]["containers"][0]["resources"] = json!({
            "limits": {"nvidia.com/gpu": "4", "cpu": "32", "memory": "256Gi"},
            "requests": {"nvidia.com/gpu": "4", "cpu": "32", "memory": "256Gi"},
        });
        t
    };
    apply(
        &cp,
        ns,
        &lws("r1-decode", 1, 8, &template("decode"), json!({})),
    );
    apply(
        &cp,
        ns,
        &lws("r1-prefill", 2, 2, &template("prefill"), json!({})),
    );
    let (placed, took) = all_bound(&client, ns, 12, Duration::from_secs(120)).await;
    eprintln!(
        "GB200 groups bound in {:.2} s: {placed:?}",
        took.as_secs_f64()
    );
    let mut decode_rack = None;
    let mut prefill_racks = BTreeSet::new();
    for (g, members) in &placed {
        let cliques: BTreeSet<Option<String>> = members
            .iter()
            .map(|n| label(n, "nodetopo.io/nvlink.domain"))
            .collect();
        assert_eq!(
            cliques.len(),
            1,
            "group {g} over several cliques: {placed:?}"
        );
        assert!(
            cliques.iter().all(Option::is_some),
            "group {g} on a tray that is not ready"
        );
        let rack = label(&members[0], "nodetopo.io/nvlink.cluster");
        if g.starts_with("r1-decode/") {
            decode_rack = rack;
        } else {
            prefill_racks.insert(rack);
        }
    }
    assert!(decode_rack.is_some());
    // The first prefill group joins the decode's rack. (The second one may not: which of the
    // prefill pods the pod watch shows when the decode group picks its clique is a race with
    // the StatefulSet controller; see the README.)
    assert!(
        prefill_racks.contains(&decode_rack),
        "no prefill group in the decode group's rack: {placed:?}"
    );
}
