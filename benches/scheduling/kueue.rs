//! Kueue's topology-aware scheduling as a peer in the scheduling benchmark: the Kueue v0.17.0
//! manager (built from its Go module by `tests/e2e/build-kube.sh`, with the CRDs, conversion
//! patches, webhook manifests and manager configuration of the same module) run against the
//! benchmark's API server as on a cluster, adapted to loopback: leader election off, internal
//! certificate management off, the webhooks (and the CRDs' conversion webhook) served on
//! 127.0.0.1 with a certificate of the control plane's CA and registered by `url`.
//!
//! Objects: the Topology `nodetopo manifests topology --for kueue` writes for nodetopo's labels,
//! a ResourceFlavor of the GB200 trays naming it, a ClusterQueue with the whole fleet as quota
//! and a LocalQueue in the benchmark's namespace. Pods of a group carry Kueue's plain pod-group
//! metadata and require the NVLink clique level; Kueue gates them at creation, admits each group
//! as one Workload, assigns it nodes and ungates it, and a default kube-scheduler binds.
//!
//! Kueue's metrics endpoint reads its certificate from a fixed path (`/etc/kueue/metrics/certs`)
//! when internal certificate management is off; the manager runs in a private mount namespace
//! where an overlay over `/etc` holds it, so nothing is written outside the control plane's
//! folder. The visibility on-demand API server (a separate aggregated API, also with fixed
//! certificate paths, not on the admission path) is turned off with its feature gate.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::{
    Proc,
    harness::{self, ControlPlane},
};

/// Kueue v0.17.0's names (`pkg/controller/constants`, `pkg/controller/jobs/pod/constants`,
/// `apis/kueue/v1beta2/topology_types.go`).
pub const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
pub const POD_GROUP_NAME_LABEL: &str = "kueue.x-k8s.io/pod-group-name";
pub const POD_GROUP_TOTAL_COUNT: &str = "kueue.x-k8s.io/pod-group-total-count";
pub const REQUIRED_TOPOLOGY: &str = "kueue.x-k8s.io/podset-required-topology";
/// The LocalQueue of the benchmark's namespace.
pub const LOCAL_QUEUE: &str = "gpu";
const CLUSTER_QUEUE: &str = "gpu";
const FLAVOR: &str = "gb200";
/// Kueue's own namespace (as its default installation names it).
const KUEUE_NS: &str = "kueue-system";
/// The name prefix Kueue's default installation gives its objects.
const PREFIX: &str = "kueue-";
/// Feature gates: topology-aware scheduling (beta, on by default in v0.17.0; named to make the
/// dependency explicit) and the visibility API server off (see the module comment).
const FEATURE_GATES: &str = "TopologyAwareScheduling=true,VisibilityOnDemand=false";

/// The manager's folder from `build-kube.sh`.
fn dir() -> PathBuf {
    harness::bin_dir().join("kueue")
}

fn read_yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn apply(cp: &ControlPlane, docs: &[Value]) {
    let text: String = docs.iter().map(|d| format!("---\n{d}\n")).collect();
    let out = cp.kubectl_input(&["apply", "--server-side", "-f", "-"], &text);
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ca_bundle(cp: &ControlPlane) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(&cp.ca).unwrap())
}

fn workload_resource() -> ApiResource {
    ApiResource {
        group: "kueue.x-k8s.io".into(),
        version: "v1beta2".into(),
        api_version: "kueue.x-k8s.io/v1beta2".into(),
        kind: "Workload".into(),
        plural: "workloads".into(),
    }
}

/// Kueue installed against the benchmark's API server; the manager runs only during the Kueue
/// setup's runs (`start` .. `Running::stop`), so that it takes no CPU from the other setups.
pub struct Kueue {
    /// The webhook port, fixed for the whole benchmark: the CRDs' conversion webhook names it.
    port: u16,
    work: PathBuf,
    /// The Topology level of the NVLink clique, as `manifests topology --for kueue` writes it.
    pub clique_level: String,
    objects: Vec<Value>,
    started: usize,
}

/// A running manager with its webhooks registered.
pub struct Running {
    proc: Proc,
    names: Vec<(String, String)>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    /// Unregisters the webhooks (their failure policy is `Fail`), then stops the manager.
    pub fn stop(self, cp: &ControlPlane) {
        for (kind, name) in &self.names {
            cp.kubectl(&["delete", kind, name, "--ignore-not-found"]);
        }
        drop(self.proc);
    }
}

impl Kueue {
    /// Installs the CRDs (with their conversion webhook on 127.0.0.1), Kueue's namespace, and
    /// prepares the manager's folder; `topology` is the output of
    /// `nodetopo manifests topology --for kueue -o json`.
    pub fn install(cp: &ControlPlane, topology: Value, clique_label: &str) -> Kueue {
        let port = harness::free_port();
        let ca = ca_bundle(cp);
        // The conversion patches the module's CRD kustomization applies.
        let kustomization = &read_yaml_docs(&dir().join("crd-patches/kustomization.yaml"))[0];
        let mut conversions = std::collections::BTreeMap::new();
        for p in kustomization["patches"].as_array().unwrap() {
            let file = p["path"].as_str().unwrap().trim_start_matches("patches/");
            let patch = &read_yaml_docs(&dir().join("crd-patches").join(file))[0];
            let mut conversion = patch["spec"]["conversion"].clone();
            let path = conversion["webhook"]["clientConfig"]["service"]["path"]
                .as_str()
                .unwrap()
                .to_string();
            conversion["webhook"]["clientConfig"] = json!({
                "url": format!("https://127.0.0.1:{port}{path}"),
                "caBundle": ca,
            });
            conversions.insert(
                patch["metadata"]["name"].as_str().unwrap().to_string(),
                conversion,
            );
        }
        let mut crds = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir().join("crds"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            for mut crd in read_yaml_docs(&path) {
                let name = crd["metadata"]["name"].as_str().unwrap().to_string();
                if let Some(c) = conversions.remove(&name) {
                    crd["spec"]["conversion"] = c;
                }
                crds.push(crd);
            }
        }
        assert!(
            conversions.is_empty(),
            "patches for missing CRDs: {conversions:?}"
        );
        apply(cp, &crds);
        let names: Vec<String> = crds
            .iter()
            .map(|c| format!("crd/{}", c["metadata"]["name"].as_str().unwrap()))
            .collect();
        let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        args.extend(names.iter().map(String::as_str));
        cp.kubectl(&args);
        cp.kubectl(&["create", "namespace", KUEUE_NS]);

        let clique_level = topology["spec"]["levels"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["nodeLabel"].as_str())
            .find(|l| *l == clique_label)
            .unwrap_or_else(|| panic!("no {clique_label} level in {topology}"))
            .to_string();
        let topology_name = topology["metadata"]["name"].as_str().unwrap().to_string();
        let objects = vec![
            topology,
            json!({
                "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
                "metadata": {"name": FLAVOR},
                "spec": {"nodeLabels": {"nodetopo.io/gpu.product": "NVIDIA-GB200"},
                    "topologyName": topology_name},
            }),
            // The whole fleet's allocatable as quota (5,000 trays); held until a run starts.
            json!({
                "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
                "metadata": {"name": CLUSTER_QUEUE},
                "spec": {
                    "namespaceSelector": {},
                    "stopPolicy": "Hold",
                    "resourceGroups": [{
                        "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                        "flavors": [{"name": FLAVOR, "resources": [
                            {"name": "cpu", "nominalQuota": "720000"},
                            {"name": "memory", "nominalQuota": "4500000Gi"},
                            {"name": "nvidia.com/gpu", "nominalQuota": "20000"},
                        ]}],
                    }],
                },
            }),
            json!({
                "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                "metadata": {"name": LOCAL_QUEUE, "namespace": crate::NS},
                "spec": {"clusterQueue": CLUSTER_QUEUE},
            }),
        ];

        let work = cp.admin_kubeconfig.with_file_name("kueue");
        let certs = work.join("certs");
        // The overlay's upper layer: what the manager sees under /etc besides the real /etc.
        let metrics = work.join("etc-upper/kueue/metrics/certs");
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::create_dir_all(&metrics).unwrap();
        std::fs::create_dir_all(work.join("etc-work")).unwrap();
        let (crt, key) = cp.serving_cert("kueue-webhook");
        for d in [&certs, &metrics] {
            std::fs::copy(&crt, d.join("tls.crt")).unwrap();
            std::fs::copy(&key, d.join("tls.key")).unwrap();
        }
        Kueue {
            port,
            work,
            clique_level,
            objects,
            started: 0,
        }
    }

    /// The module's webhook configurations with its kustomization's namespace selectors, the
    /// default installation's name prefix, and each `clientConfig.service` replaced by a URL
    /// on 127.0.0.1 and the control plane's CA.
    fn webhook_configs(&self, cp: &ControlPlane) -> Vec<Value> {
        let ca = ca_bundle(cp);
        let kustomization = &read_yaml_docs(&dir().join("webhook/kustomization.yaml"))[0];
        let patches: Vec<Value> = kustomization["patches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| serde_yaml_ng::from_str(p["patch"].as_str().unwrap()).unwrap())
            .collect();
        let mut out = Vec::new();
        for mut v in read_yaml_docs(&dir().join("webhook/manifests.yaml")) {
            let (kind, name) = (v["kind"].clone(), v["metadata"]["name"].clone());
            for patch in patches
                .iter()
                .filter(|p| p["kind"] == kind && p["metadata"]["name"] == name)
            {
                for pw in patch["webhooks"].as_array().unwrap() {
                    let w = v["webhooks"]
                        .as_array_mut()
                        .unwrap()
                        .iter_mut()
                        .find(|w| w["name"] == pw["name"])
                        .unwrap_or_else(|| panic!("webhook {} in the manifests", pw["name"]));
                    for (k, val) in pw.as_object().unwrap() {
                        w[k] = val.clone();
                    }
                }
            }
            let name = format!("{PREFIX}{}", v["metadata"]["name"].as_str().unwrap());
            v["metadata"]["name"] = json!(name);
            for w in v["webhooks"].as_array_mut().unwrap() {
                let path = w["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap()
                    .to_string();
                w["clientConfig"] = json!({
                    "url": format!("https://127.0.0.1:{}{path}", self.port),
                    "caBundle": ca,
                });
            }
            out.push(v);
        }
        out
    }

    /// The module's manager configuration, adapted to loopback: leader election and internal
    /// certificate management off, webhooks on 127.0.0.1, metrics off, only the plain-pod
    /// integration, and the same client QPS and burst as kube-scheduler gets in every setup.
    fn config(&self, health: u16) -> Value {
        let mut cfg = read_yaml_docs(&dir().join("manager/controller_manager_config.yaml"))
            .pop()
            .unwrap();
        cfg["namespace"] = json!(KUEUE_NS);
        cfg["leaderElection"] = json!({"leaderElect": false});
        cfg["internalCertManagement"] = json!({"enable": false});
        cfg["webhook"] = json!({"port": self.port, "host": "127.0.0.1",
            "certDir": self.work.join("certs").display().to_string()});
        cfg["metrics"] = json!({"bindAddress": "0"});
        cfg["health"] = json!({"healthProbeBindAddress": format!("127.0.0.1:{health}")});
        cfg["clientConnection"] = json!({"qps": 5000, "burst": 5000});
        cfg["integrations"] = json!({"frameworks": ["pod"]});
        cfg
    }

    /// Starts the manager, waits until it is ready, registers its webhooks and (the first
    /// time) creates the Topology, ResourceFlavor, ClusterQueue and LocalQueue.
    pub fn start(&mut self, cp: &ControlPlane) -> Running {
        let health = harness::free_port();
        let cfg_path = self.work.join("config.yaml");
        std::fs::write(&cfg_path, self.config(health).to_string()).unwrap();
        let log_path = self.work.join(format!("manager-{}.log", self.started));
        let log = std::fs::File::create(&log_path).unwrap();
        let root = std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
        let mut cmd = Command::new("unshare");
        if !root {
            cmd.arg("--map-root-user");
        }
        // `unshare` and `sh` exec the manager: the child's pid is the manager's.
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "mount -t overlay overlay -o \"lowerdir=/etc,upperdir=$1,workdir=$2\" /etc \
                 && exec \"$3\" --config=\"$4\" --feature-gates=\"$5\"",
            )
            .arg("sh")
            .arg(self.work.join("etc-upper"))
            .arg(self.work.join("etc-work"))
            .arg(dir().join("kueue-manager"))
            .arg(&cfg_path)
            .arg(FEATURE_GATES)
            .env("KUBECONFIG", &cp.admin_kubeconfig)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        crate::die_with_parent(&mut cmd);
        let proc = Proc(cmd.spawn().expect("unshare"));
        self.started += 1;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ready(health) {
            assert!(
                Instant::now() < deadline,
                "the Kueue manager was not ready in 120 s:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let configs = self.webhook_configs(cp);
        let names = configs
            .iter()
            .map(|c| {
                (
                    c["kind"].as_str().unwrap().to_lowercase(),
                    c["metadata"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        apply(cp, &configs);
        if self.started == 1 {
            apply(cp, &self.objects);
        }
        Running { proc, names }
    }

    /// Waits until Kueue has made a Workload of every group (the pods exist and are gated).
    pub async fn wait_workloads(&self, client: &Client, n: usize) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), crate::NS, &workload_resource());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let have = api.list(&ListParams::default()).await.unwrap().items.len();
            if have == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{have} of {n} Workloads after 120 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sets the ClusterQueue's stop policy: `None` lets Kueue admit, `Hold` keeps the next
    /// run's Workloads pending until its start.
    pub async fn stop_policy(&self, client: &Client, policy: &str) {
        let cq = ApiResource {
            kind: "ClusterQueue".into(),
            plural: "clusterqueues".into(),
            ..workload_resource()
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &cq);
        api.patch(
            CLUSTER_QUEUE,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"stopPolicy": policy}})),
        )
        .await
        .unwrap();
    }

    /// Workloads by admission state: (admitted, pending), and the reasons pending ones give.
    pub async fn workload_states(&self, client: &Client) -> (usize, usize, Vec<String>) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), crate::NS, &workload_resource());
        let (mut admitted, mut pending, mut reasons) = (0, 0, Vec::new());
        for w in api.list(&ListParams::default()).await.unwrap().items {
            let conds = w.data["status"]["conditions"].as_array().cloned();
            let cond = |t: &str| {
                conds
                    .iter()
                    .flatten()
                    .find(|c| c["type"] == t && c["status"] == "True")
                    .cloned()
            };
            if cond("Admitted").is_some() {
                admitted += 1;
            } else {
                pending += 1;
                if let Some(c) = conds
                    .iter()
                    .flatten()
                    .find(|c| c["type"] == "QuotaReserved")
                {
                    reasons.push(c["message"].as_str().unwrap_or_default().to_string());
                }
            }
        }
        reasons.sort();
        reasons.dedup();
        (admitted, pending, reasons)
    }

    /// Ends the run's pod groups the way Kueue provides: deletes their Workloads (Kueue deletes
    /// the pods and drops their finalizers), and deletes the pods at once as a kubelet would
    /// once they stopped. Kueue makes a new Workload for a group whose pods still exist, and
    /// without kube-controller-manager's garbage collector nothing removes one whose pods are
    /// gone, so both are deleted until none is left.
    pub async fn delete_groups(&self, cp: &ControlPlane, client: &Client) {
        let workloads: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), crate::NS, &workload_resource());
        let pods: Api<Pod> = Api::namespaced(client.clone(), crate::NS);
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let w = workloads
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len();
            let p = pods.list(&ListParams::default()).await.unwrap().items.len();
            if w == 0 && p == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{w} Workloads and {p} pods left after 120 s"
            );
            if w > 0 {
                cp.kubectl(&[
                    "delete",
                    "workloads.kueue.x-k8s.io",
                    "--all",
                    "--namespace",
                    crate::NS,
                    "--wait=false",
                ]);
            }
            if p > 0 {
                pods.delete_collection(&now, &ListParams::default())
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

/// The manager's readiness endpoint answers 200 (webhook server started, caches synced).
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out.starts_with(b"HTTP/1.1 200")
}
