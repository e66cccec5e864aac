//! The extender under a real kube-scheduler: the shipped `KubeSchedulerConfiguration` (only its
//! `urlPrefix` pointed at 127.0.0.1), Nodes labelled by real agents and directly, the pods of a
//! wide-EP deployment with the labels their controllers set, and every placement read back from
//! the API server's bindings. Each scenario runs several rounds: kube-scheduler breaks ties at
//! random.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client, api::PostParams};
use serde_json::{Value, json};

use crate::{
    agents::{self, Agent, Machine},
    harness::{self, ControlPlane, NODETOPO, ROOT},
};

const NS: &str = "infer";
const UUID_A: &str = "4f1c2d3e-5a6b-47c8-a9d0-e1f2a3b4c5d6";
const UUID_B: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
const ROUNDS: usize = 3;

/// A process killed on drop.
pub(crate) struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        harness::terminate(&mut self.0, Duration::from_secs(5));
    }
}

/// The GB200 trays replayed by real agents (they label their own Nodes).
const AGENT_TRAYS: [Machine; 3] = [
    Machine {
        node: "gb-a1-1",
        snapshot: "gb200/tray-a1.json",
        sysfs: "gb200-tray/sysfs/sys",
    },
    Machine {
        node: "gb-a1-2",
        snapshot: "gb200/tray-a2.json",
        sysfs: "gb200-tray/sysfs/sys",
    },
    Machine {
        node: "gb-a1-degraded",
        snapshot: "gb200/tray-degraded.json",
        sysfs: "gb200-tray/sysfs/sys",
    },
];

fn tray(cluster: &str, clique: u32, fabric: &str) -> Labels {
    let mut l = vec![
        ("nodetopo.io/gpu.count".into(), "4".into()),
        ("nodetopo.io/gpu.product".into(), "NVIDIA-GB200".into()),
        ("nodetopo.io/nvlink.fabric".into(), fabric.into()),
        ("nodetopo.io/nvlink.cluster".into(), cluster.into()),
        ("nodetopo.io/rdma.link-layer".into(), "infiniband".into()),
        (
            "nodetopo.io/rdma.ib-subnet".into(),
            "fe80-0000-0000-0000".into(),
        ),
    ];
    if fabric == "ready" {
        l.push((
            "nodetopo.io/nvlink.domain".into(),
            format!("{cluster}.{clique}"),
        ));
    }
    l
}

fn hgx(link: &str, leaf: Option<&str>) -> Labels {
    let mut l = vec![
        ("nodetopo.io/gpu.count".into(), "8".into()),
        ("nodetopo.io/nvlink.fabric".into(), "none".into()),
        ("nodetopo.io/rdma.link-layer".into(), link.into()),
    ];
    if link == "infiniband" {
        l.push((
            "nodetopo.io/rdma.ib-subnet".into(),
            "fe80-0000-0000-0000".into(),
        ));
    }
    if let Some(leaf) = leaf {
        l.push(("network.example.com/leaf".into(), leaf.into()));
    }
    l
}

/// Node labels, as key-value pairs.
type Labels = Vec<(String, String)>;

/// Nodes set directly: name, labels, allocatable GPUs.
pub(crate) fn direct_nodes() -> Vec<(String, Labels, u32)> {
    let mut v = Vec::new();
    // Rack A, clique 1: two more trays beside the agents' two (four usable in all).
    for i in 3..=4 {
        v.push((format!("gb-a1-{i}"), tray(UUID_A, 1, "ready"), 4));
    }
    v.push(("gb-a1-pending".into(), tray(UUID_A, 1, "pending"), 4));
    for i in 1..=6 {
        v.push((format!("gb-a2-{i}"), tray(UUID_A, 2, "ready"), 4));
    }
    for i in 1..=5 {
        v.push((format!("gb-b1-{i}"), tray(UUID_B, 1, "ready"), 4));
    }
    for i in 1..=4 {
        v.push((format!("gb-b2-{i}"), tray(UUID_B, 2, "ready"), 4));
    }
    for i in 1..=4 {
        v.push((format!("ib-l1-{i}"), hgx("infiniband", Some("leaf-1")), 8));
    }
    for i in 1..=5 {
        v.push((format!("ib-l2-{i}"), hgx("infiniband", Some("leaf-2")), 8));
    }
    for i in 1..=3 {
        v.push((format!("roce-{i}"), hgx("ethernet", None), 8));
    }
    // A CPU node the agents never see.
    v.push(("cpu-1".into(), Vec::new(), 0));
    v
}

/// `nodetopo extender` in cluster mode (Node and Pod watch through the admin kubeconfig).
pub(crate) fn start_extender(cp: &ControlPlane) -> (Proc, u16) {
    let port = harness::free_port();
    let child = Command::new(NODETOPO)
        .args([
            "extender",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--block-label",
            "network.example.com/leaf",
            "--agent-port",
            &harness::free_port().to_string(),
        ])
        .env("KUBECONFIG", &cp.admin_kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn nodetopo extender");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "extender not listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (Proc(child), port)
}

/// kube-scheduler with the shipped configuration, its `urlPrefix` pointed at the extender on
/// 127.0.0.1, serving profile `scheduler_name`, with `ignorable` as given.
pub(crate) fn start_scheduler(
    cp: &ControlPlane,
    ext_port: u16,
    scheduler_name: &str,
    ignorable: bool,
) -> Proc {
    let shipped =
        std::fs::read_to_string(format!("{ROOT}/daemonset/extender/scheduler-config.yaml"))
            .expect("daemonset/extender/scheduler-config.yaml");
    let cm: Value = serde_yaml_ng::from_str(&shipped).unwrap();
    let mut cfg: Value =
        serde_yaml_ng::from_str(cm["data"]["scheduler-config.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(
        cfg["extenders"][0]["managedResources"][0]["name"], "nvidia.com/gpu",
        "the shipped configuration sends only GPU pods"
    );
    cfg["extenders"][0]["urlPrefix"] = json!(format!("http://127.0.0.1:{ext_port}/"));
    cfg["extenders"][0]["ignorable"] = json!(ignorable);
    cfg["clientConnection"] = json!({"kubeconfig": cp.admin_kubeconfig.display().to_string()});
    cfg["leaderElection"] = json!({"leaderElect": false});
    cfg["profiles"] = json!([{"schedulerName": scheduler_name}]);
    let path: PathBuf = cp
        .admin_kubeconfig
        .with_file_name(format!("{scheduler_name}.yaml"));
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let log = cp
        .admin_kubeconfig
        .with_file_name(format!("{scheduler_name}.log"));
    let child = Command::new(harness::bin("kube-scheduler"))
        .arg(format!("--config={}", path.display()))
        .arg("--secure-port=0")
        .arg("--v=2")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn kube-scheduler");
    Proc(child)
}

/// A pod of group `group` (LWS name, group index, size) with `gpus` GPUs; `extra` labels.
fn gpu_pod(
    name: &str,
    lws: &str,
    size: u32,
    gpus: u32,
    extra: &[(&str, &str)],
    scheduler: &str,
) -> Pod {
    let mut labels = serde_json::Map::new();
    labels.insert("leaderworkerset.sigs.k8s.io/name".into(), json!(lws));
    labels.insert("leaderworkerset.sigs.k8s.io/group-index".into(), json!("0"));
    for (k, v) in extra {
        labels.insert((*k).into(), json!(v));
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "labels": labels,
            "annotations": {"leaderworkerset.sigs.k8s.io/size": size.to_string()}},
        "spec": {
            "schedulerName": scheduler,
            "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
                "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}],
        },
    }))
    .unwrap()
}

/// Creates `pods` and waits until all are bound; returns pod → node.
async fn place(client: &Client, pods: &[Pod]) -> BTreeMap<String, String> {
    create_all(client, pods).await;
    let names: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    bound(client, &names, Duration::from_secs(60)).await
}

async fn create_all(client: &Client, pods: &[Pod]) {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    for p in pods {
        api.create(&PostParams::default(), p)
            .await
            .unwrap_or_else(|e| panic!("create pod {:?}: {e}", p.metadata.name));
    }
}

/// Waits until every pod named is bound; returns pod → node.
pub(crate) async fn bound(
    client: &Client,
    names: &[String],
    within: Duration,
) -> BTreeMap<String, String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    harness::eventually(within, &format!("pods {names:?} to be bound"), || async {
        let mut out = BTreeMap::new();
        for n in names {
            let p = api.get(n).await.ok()?;
            out.insert(n.clone(), p.spec?.node_name?);
        }
        Some(out)
    })
    .await
}

fn label<'a>(nodes: &'a BTreeMap<String, Node>, node: &str, key: &str) -> Option<&'a str> {
    nodes[node]
        .metadata
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn one<'a>(values: impl IntoIterator<Item = Option<&'a str>>, what: &str) -> &'a str {
    let set: BTreeSet<Option<&str>> = values.into_iter().collect();
    assert_eq!(set.len(), 1, "{what}: split over {set:?}");
    set.into_iter()
        .next()
        .unwrap()
        .unwrap_or_else(|| panic!("{what}: no value"))
}

#[tokio::test]
async fn groups_placed_by_the_real_scheduler() {
    let cp = ControlPlane::start(harness::Options::default());
    let admin = cp.admin().await;
    cp.kubectl(&["apply", "--server-side", "-k", &format!("{ROOT}/daemonset")]);
    cp.kubectl(&["create", "namespace", NS]);
    // No controller manager creates the namespace's default ServiceAccount.
    cp.kubectl(&["create", "serviceaccount", "default", "--namespace", NS]);

    // Real agents label three trays; the rest are labelled directly.
    let mut kept_agents = Vec::new();
    for m in &AGENT_TRAYS {
        harness::create_node(&admin, m.node, &[]).await;
        let kubeconfig = harness::agent_kubeconfig(&cp, &admin, m.node).await;
        kept_agents.push(Agent::start(m, &kubeconfig));
    }
    for (name, labels, gpus) in direct_nodes() {
        let l: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        harness::create_node_with(&admin, &name, &l, gpus).await;
    }
    for m in &AGENT_TRAYS {
        let want = agents::probe_labels(
            &agents::fixture(m.snapshot),
            &agents::fixture(m.sysfs),
            m.node,
        );
        agents::converge(&admin, m.node, &want, Duration::from_secs(30)).await;
    }
    let nodes = harness::nodes_by_name(&admin).await;
    // The agents are not needed once their labels are on the Nodes; they keep running anyway.

    let (extender, port) = start_extender(&cp);
    let _default = start_scheduler(&cp, port, "default-scheduler", true);
    let _strict = start_scheduler(&cp, port, "nodetopo-strict", false);

    for round in 0..ROUNDS {
        // 1. An LWS decode group of 4 GB200 pods, then its prefill group of 4.
        let decode: Vec<Pod> = (0..4)
            .map(|i| {
                gpu_pod(
                    &format!("m{round}-decode-0-{i}"),
                    &format!("m{round}-decode"),
                    4,
                    4,
                    &[],
                    "default-scheduler",
                )
            })
            .collect();
        let d = place(&admin, &decode).await;
        let prefill: Vec<Pod> = (0..4)
            .map(|i| {
                gpu_pod(
                    &format!("m{round}-prefill-0-{i}"),
                    &format!("m{round}-prefill"),
                    4,
                    4,
                    &[],
                    "default-scheduler",
                )
            })
            .collect();
        let p = place(&admin, &prefill).await;

        let dom = |m: &BTreeMap<String, String>, what: &str| {
            one(
                m.values()
                    .map(|n| label(&nodes, n, "nodetopo.io/nvlink.domain")),
                what,
            )
            .to_string()
        };
        let d_dom = dom(&d, "decode group");
        let p_dom = dom(&p, "prefill group");
        assert_ne!(
            d_dom, p_dom,
            "one pod per tray: two groups of 4 need two cliques"
        );
        let cluster = |dom: &str| dom.rsplit_once('.').unwrap().0.to_string();
        assert_eq!(
            cluster(&d_dom),
            cluster(&p_dom),
            "prefill lands in decode's NVLink cluster"
        );
        for n in d.values().chain(p.values()) {
            assert_eq!(
                label(&nodes, n, "nodetopo.io/nvlink.fabric"),
                Some("ready"),
                "{n}"
            );
            assert_eq!(
                label(&nodes, n, "nodetopo.io/rdma.link-layer"),
                Some("infiniband"),
                "{n}"
            );
        }
        eprintln!("round {round}: decode in {d_dom}, prefill in {p_dom}");

        // 2. A DisaggregatedSet-shaped pair on the InfiniBand HGX nodes, two pods per role.
        let mut ib = Vec::new();
        for role in ["prefill", "decode"] {
            for i in 0..2 {
                ib.push(gpu_pod(
                    &format!("ds{round}-{role}-{i}"),
                    &format!("ds{round}-{role}"),
                    2,
                    8,
                    &[
                        ("disaggregatedset.x-k8s.io/name", &format!("ds{round}")),
                        ("disaggregatedset.x-k8s.io/role", role),
                        ("disaggregatedset.x-k8s.io/slice", "0"),
                    ],
                    "default-scheduler",
                ));
            }
        }
        let (ib_prefill, ib_decode) = ib.split_at(2);
        let ip = place(&admin, ib_prefill).await;
        let id = place(&admin, ib_decode).await;
        let leaf = |m: &BTreeMap<String, String>, what: &str| {
            one(
                m.values()
                    .map(|n| label(&nodes, n, "network.example.com/leaf")),
                what,
            )
            .to_string()
        };
        eprintln!("round {round}: IB prefill on {ip:?}, decode on {id:?}");
        let (lp, ld) = (leaf(&ip, "IB prefill"), leaf(&id, "IB decode"));
        assert_eq!(
            lp, ld,
            "the IB decode group joins prefill's leaf, which still holds it"
        );
        for n in ip.values().chain(id.values()) {
            assert_eq!(
                label(&nodes, n, "nodetopo.io/rdma.link-layer"),
                Some("infiniband"),
                "{n}"
            );
        }

        // 3. A pod without GPUs is not sent to the extender and lands anywhere it fits.
        let cpu: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("web-{round}"), "namespace": NS},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.29",
                "resources": {"requests": {"cpu": "100m"}}}]},
        }))
        .unwrap();
        create_all(&admin, &[cpu]).await;
        bound(&admin, &[format!("web-{round}")], Duration::from_secs(30)).await;

        harness::delete_pods(&admin, NS).await;
    }

    // 4. The extender stops: the default profile (ignorable) still places GPU pods; the strict
    //    profile (not ignorable) leaves them pending with the extender's error.
    drop(extender);
    let loose = gpu_pod("after-stop-0", "after-stop", 1, 4, &[], "default-scheduler");
    let strict = gpu_pod("strict-0", "strict", 1, 4, &[], "nodetopo-strict");
    create_all(&admin, &[loose, strict]).await;
    bound(
        &admin,
        &["after-stop-0".to_string()],
        Duration::from_secs(60),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let msg = harness::eventually(
        Duration::from_secs(60),
        "the strict pod's scheduling failure",
        || async {
            let p = pods.get("strict-0").await.ok()?;
            assert!(
                p.spec.as_ref()?.node_name.is_none(),
                "the strict pod was bound without the extender"
            );
            p.status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")?
                .message
        },
    )
    .await;
    assert!(
        msg.contains("127.0.0.1") || msg.contains("extender"),
        "{msg}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = pods.get("strict-0").await.unwrap();
    assert!(p.spec.unwrap().node_name.is_none(), "still pending");
    drop(kept_agents);
}
