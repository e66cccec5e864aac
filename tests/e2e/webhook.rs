//! `nodetopo webhook` under a real kube-apiserver and kube-scheduler: the chart's RBAC, arguments
//! and MutatingWebhookConfiguration (only `clientConfig` pointed at `https://127.0.0.1:PORT`),
//! Pods bound by the real scheduler and read back with their Node's topology labels, a Pod
//! outside the namespace selector untouched, admission latency from both sides, and binding
//! that still succeeds with the webhook stopped (`failurePolicy: Ignore`).

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    process::{Child, Command, Stdio},
    time::Duration,
};

use base64::Engine;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client, api::PostParams};
use serde_json::{Value, json};

use crate::harness::{self, ControlPlane, NODETOPO, ROOT};

/// The namespace that opts in, one that does not, and the webhook's own.
const NS_ON: &str = "topo";
const NS_OFF: &str = "plain";
const NS_WEBHOOK: &str = "nodetopo";
const PREFIX: &str = "nodetopo.io";
const LEAF: &str = "network.example.com/leaf";
const CLUSTER: &str = "4f1c2d3e-5a6b-47c8-a9d0-e1f2a3b4c5d6";

/// A process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        harness::terminate(&mut self.0, Duration::from_secs(5));
    }
}

/// Node labels, as key-value pairs.
type Labels = Vec<(String, String)>;

/// Nodes: three GB200 trays (two cliques, two leaves) and a RoCE node without NVLink labels.
fn nodes() -> Vec<(&'static str, Labels, u32)> {
    let tray = |clique: u32, leaf: &str| {
        vec![
            (format!("{PREFIX}/gpu.count"), "4".to_string()),
            (format!("{PREFIX}/nvlink.fabric"), "ready".to_string()),
            (format!("{PREFIX}/nvlink.cluster"), CLUSTER.to_string()),
            (
                format!("{PREFIX}/nvlink.domain"),
                format!("{CLUSTER}.{clique}"),
            ),
            (
                format!("{PREFIX}/rdma.link-layer"),
                "infiniband".to_string(),
            ),
            (LEAF.to_string(), leaf.to_string()),
        ]
    };
    vec![
        ("gb-1", tray(1, "leaf-1"), 4),
        ("gb-2", tray(1, "leaf-1"), 4),
        ("gb-3", tray(2, "leaf-2"), 4),
        (
            "roce-1",
            vec![
                (format!("{PREFIX}/gpu.count"), "8".to_string()),
                (format!("{PREFIX}/rdma.link-layer"), "ethernet".to_string()),
            ],
            8,
        ),
    ]
}

/// Node label → Pod label, as the chart configures the webhook below.
fn copied() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = ["nvlink.domain", "nvlink.cluster", "rdma.link-layer"]
        .iter()
        .map(|n| (format!("{PREFIX}/{n}"), format!("{PREFIX}/{n}")))
        .collect();
    v.push((LEAF.to_string(), format!("{PREFIX}/leaf")));
    v
}

/// The chart rendered with the webhook on and the leaf label copied.
fn chart(cp: &ControlPlane) -> Vec<Value> {
    chart_with(cp, &[])
}

/// [`chart`] with more `helm template` arguments.
fn chart_with(cp: &ControlPlane, more: &[&str]) -> Vec<Value> {
    let root = format!("{ROOT}/charts/nodetopo");
    let leaf = format!("webhook.blockLabels={{{LEAF}}}");
    let mut args = vec![
        "template",
        "nodetopo",
        &root,
        "--namespace",
        NS_WEBHOOK,
        "--set",
        "webhook.enabled=true",
        "--set",
        &leaf,
    ];
    args.extend_from_slice(more);
    let out = cp.helm(&args);
    serde_yaml_ng::Deserializer::from_str(&out)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn is_webhook(o: &Value) -> bool {
    o["metadata"]["labels"]["app.kubernetes.io/component"] == "webhook"
}

fn gpu_pod(name: &str, ns: &str, gpus: u32) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "vllm"}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
            "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]},
    }))
    .unwrap()
}

fn labels(p: &Pod) -> BTreeMap<String, String> {
    p.metadata.labels.clone().unwrap_or_default()
}

/// The labels under the pod-side prefix.
fn topo_labels(p: &Pod) -> BTreeMap<String, String> {
    labels(p)
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{PREFIX}/")))
        .collect()
}

/// What a Pod on `node` should carry.
fn expected(node: &Node) -> BTreeMap<String, String> {
    let l = node.metadata.labels.clone().unwrap_or_default();
    copied()
        .into_iter()
        .filter_map(|(nk, pk)| l.get(&nk).map(|v| (pk, v.clone())))
        .collect()
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let code = buf.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    (code, body.to_string())
}

/// The value of series `name{labels...}` (every label given must match) in Prometheus text.
fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && want
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse().ok())?
        })
        .next()
}

/// The smallest bucket bound holding at least `q` of the observations of histogram `name`.
fn quantile_bound(text: &str, name: &str, want: &[(&str, &str)], q: f64) -> Option<f64> {
    let count = sample(text, &format!("{name}_count"), want)?;
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .filter(|l| {
            want.iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit_once(' ')?.1.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
        .into_iter()
        .find(|(_, c)| *c >= q * count)
        .map(|(le, _)| le)
}

/// Applies the chart's MutatingWebhookConfiguration (from `objs`) with its clientConfig pointed
/// at the webhook on `https://127.0.0.1:PORT/mutate`; the chart ships it with failurePolicy
/// Ignore.
fn install_mutating_webhook(cp: &ControlPlane, objs: &[Value], port: u16) {
    let mut mwc = objs
        .iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .expect("the MutatingWebhookConfiguration")
        .clone();
    let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&cp.ca).unwrap());
    for w in mwc["webhooks"].as_array_mut().unwrap() {
        assert_eq!(w["failurePolicy"], "Ignore");
        w["clientConfig"] =
            json!({"url": format!("https://127.0.0.1:{port}/mutate"), "caBundle": ca});
    }
    let out = cp.kubectl_input(
        &["apply", "-f", "-"],
        &serde_yaml_ng::to_string(&mwc).unwrap(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates Pods on gb-3 (`NAME-1`, `NAME-2`, ...) until one comes back mutated, and returns it:
/// the API server loads a new webhook configuration asynchronously, so the first Pods may pass
/// before it does.
async fn first_mutated_pod(pods_on: &Api<Pod>, name: &str) -> Pod {
    let mut attempt = 0;
    harness::eventually(
        Duration::from_secs(30),
        "a Pod created on gb-3 to be mutated",
        || {
            attempt += 1;
            let pods_on = pods_on.clone();
            let name = format!("{name}-{attempt}");
            async move {
                let mut p = gpu_pod(&name, NS_ON, 0);
                p.spec.as_mut().unwrap().node_name = Some("gb-3".into());
                let p = pods_on.create(&PostParams::default(), &p).await.unwrap();
                (!topo_labels(&p).is_empty()).then_some(p)
            }
        },
    )
    .await
}

/// kube-scheduler with a default profile (no extender), on the admin kubeconfig.
fn start_scheduler(cp: &ControlPlane) -> Proc {
    let cfg = json!({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": cp.admin_kubeconfig.display().to_string()},
        "leaderElection": {"leaderElect": false},
        "profiles": [{"schedulerName": "default-scheduler"}],
    });
    let path = cp.admin_kubeconfig.with_file_name("webhook-scheduler.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let log =
        std::fs::File::create(cp.admin_kubeconfig.with_file_name("kube-scheduler.log")).unwrap();
    let child = Command::new(harness::bin("kube-scheduler"))
        .arg(format!("--config={}", path.display()))
        .arg("--secure-port=0")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn kube-scheduler");
    Proc(child)
}

async fn bound(client: &Client, ns: &str, names: &[String]) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    harness::eventually(
        Duration::from_secs(60),
        &format!("pods {names:?} to be bound"),
        || async {
            let mut out = Vec::new();
            for n in names {
                let p = api.get(n).await.ok()?;
                p.spec.as_ref()?.node_name.as_ref()?;
                out.push(p);
            }
            Some(out)
        },
    )
    .await
}

/// The YAML blocks of docs/guide.md that run `nodetopo query env`.
fn readme_env_examples() -> Vec<Value> {
    let readme = std::fs::read_to_string(format!("{ROOT}/docs/guide.md")).unwrap();
    readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|x| x.0))
        .filter(|b| b.contains(r#"args: ["query", "env""#))
        .map(|b| serde_yaml_ng::from_str(b).unwrap())
        .collect()
}

/// The guide's pod specs for `query env` (a Pod, and a LeaderWorkerSet's templates made into
/// Pods) pass the API server's strict validation, share the env file through an emptyDir, and
/// source the file the init container writes.
#[tokio::test]
async fn readme_env_pod_specs_are_valid() {
    let examples = readme_env_examples();
    assert_eq!(examples.len(), 2, "a Pod and a LeaderWorkerSet");
    let mut pods = vec![examples[0].clone()];
    assert_eq!(examples[1]["kind"], "LeaderWorkerSet");
    for t in ["leaderTemplate", "workerTemplate"] {
        let tpl = &examples[1]["spec"]["leaderWorkerTemplate"][t];
        pods.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("lws-{}", t.to_lowercase())}, "spec": tpl["spec"]}));
    }
    let cp = ControlPlane::start(harness::Options::default());
    cp.kubectl(&[
        "create",
        "serviceaccount",
        "default",
        "--namespace",
        "default",
    ]);
    for pod in &pods {
        let spec = &pod["spec"];
        let init = &spec["initContainers"][0];
        let args: Vec<&str> = init["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let file = args[args.iter().position(|a| *a == "--file").unwrap() + 1];
        let main = &spec["containers"][0];
        let cmd = main["command"][2].as_str().unwrap();
        assert!(cmd.starts_with(&format!(". {file} && exec ")), "{cmd}");
        assert_eq!(
            init["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            "status.hostIP"
        );
        assert_eq!(
            init["resources"]["limits"]["nvidia.com/gpu"],
            main["resources"]["limits"]["nvidia.com/gpu"],
            "the init container asks for the main container's GPUs"
        );
        let vol = spec["volumes"][0]["name"].as_str().unwrap();
        assert!(spec["volumes"][0]["emptyDir"].is_object());
        for c in [init, main] {
            assert_eq!(c["volumeMounts"][0]["name"], vol);
            assert!(file.starts_with(c["volumeMounts"][0]["mountPath"].as_str().unwrap()));
        }
        let out = cp.kubectl_input(
            &["create", "--dry-run=server", "--validate=strict", "-f", "-"],
            &serde_json::to_string(pod).unwrap(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn scheduled_pods_carry_their_nodes_topology_labels() {
    let cp = ControlPlane::start(harness::Options::default());
    let admin = cp.admin().await;
    for ns in [NS_ON, NS_OFF, NS_WEBHOOK] {
        cp.kubectl(&["create", "namespace", ns]);
        // No controller manager creates the namespaces' default ServiceAccounts.
        cp.kubectl(&["create", "serviceaccount", "default", "--namespace", ns]);
    }
    cp.kubectl(&[
        "label",
        "namespace",
        NS_ON,
        &format!("{PREFIX}/pod-topology=enabled"),
    ]);
    for (name, l, gpus) in nodes() {
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        harness::create_node_with(&admin, name, &l, gpus).await;
    }
    let node_objs = harness::nodes_by_name(&admin).await;

    // The chart's webhook objects: its RBAC is nodes get/list/watch and nothing else.
    let objs = chart(&cp);
    let role = objs
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && is_webhook(o))
        .expect("the webhook's ClusterRole");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}])
    );
    let rbac: Vec<&Value> = objs
        .iter()
        .filter(|o| {
            is_webhook(o)
                && ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]
                    .contains(&o["kind"].as_str().unwrap())
        })
        .collect();
    assert_eq!(rbac.len(), 3);
    let rbac_yaml: String = rbac
        .iter()
        .map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).unwrap()))
        .collect();
    let out = cp.kubectl_input(&["apply", "-f", "-"], &rbac_yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = harness::sa_token(&admin, NS_WEBHOOK, "nodetopo-webhook", None).await;
    let kubeconfig = cp.kubeconfig_for("webhook", &token);

    // The webhook with the chart's arguments, its listeners and certificate moved to the test's.
    let deploy = objs
        .iter()
        .find(|o| o["kind"] == "Deployment" && is_webhook(o))
        .expect("the webhook's Deployment");
    let chart_args: Vec<String> = harness::chart_args_for_loopback(deploy);
    assert_eq!(chart_args[0], "webhook");
    assert!(
        chart_args.contains(&format!("--block-label={LEAF}")),
        "{chart_args:?}"
    );
    let (crt, key) = cp.serving_cert("webhook");
    let (port, metrics) = (harness::free_port(), harness::free_port());
    let start = || {
        let child = Command::new(NODETOPO)
            .args(&chart_args)
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--metrics-listen=127.0.0.1:{metrics}"))
            .arg(format!("--tls-cert={}", crt.display()))
            .arg(format!("--tls-key={}", key.display()))
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nodetopo webhook");
        Proc(child)
    };
    let webhook = start();
    harness::eventually(Duration::from_secs(30), "the webhook's /readyz", || async {
        (http_get(metrics, "/readyz").0 == 200).then_some(())
    })
    .await;

    // The chart's MutatingWebhookConfiguration, clientConfig pointed at 127.0.0.1. A Pod
    // created with spec.nodeName is mutated on CREATE.
    install_mutating_webhook(&cp, &objs, port);
    let pods_on: Api<Pod> = Api::namespaced(admin.clone(), NS_ON);
    let direct = first_mutated_pod(&pods_on, "direct").await;
    assert_eq!(topo_labels(&direct), expected(&node_objs["gb-3"]));
    assert_eq!(labels(&direct)["app"], "vllm", "the Pod's own labels stay");
    harness::delete_pods(&admin, NS_ON).await;

    // The real scheduler binds 4-GPU Pods onto every slot: one per tray, two on the RoCE node.
    let _scheduler = start_scheduler(&cp);
    let on: Vec<String> = (0..4).map(|i| format!("gpu-{i}")).collect();
    for n in &on {
        pods_on
            .create(&PostParams::default(), &gpu_pod(n, NS_ON, 4))
            .await
            .unwrap();
    }
    let pods_off: Api<Pod> = Api::namespaced(admin.clone(), NS_OFF);
    let outside = gpu_pod("outside", NS_OFF, 4);
    pods_off
        .create(&PostParams::default(), &outside)
        .await
        .unwrap();
    let placed = bound(&admin, NS_ON, &on).await;
    let mut seen_nodes = Vec::new();
    for p in &placed {
        let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
        let want = expected(&node_objs[&node]);
        assert!(!want.is_empty(), "every node has a copied label");
        assert_eq!(
            topo_labels(p),
            want,
            "{} on {node}: exactly the copied labels, under the pod prefix",
            p.metadata.name.as_deref().unwrap()
        );
        assert_eq!(labels(p)["app"], "vllm");
        seen_nodes.push(node);
    }
    seen_nodes.sort();
    eprintln!("bound on {seen_nodes:?}");
    let out = bound(&admin, NS_OFF, &["outside".to_string()]).await;
    assert_eq!(
        labels(&out[0]),
        labels(&outside),
        "a Pod outside the namespace selector is untouched"
    );

    // Latency: the API server's own measure of the webhook call, and the webhook's.
    let api_metrics = cp.kubectl(&["get", "--raw", "/metrics"]);
    let sel = [("name", "binding.webhook.nodetopo.io"), ("type", "admit")];
    let calls = sample(
        &api_metrics,
        "apiserver_admission_webhook_admission_duration_seconds_count",
        &sel,
    )
    .expect("the API server measured the binding webhook");
    let sum = sample(
        &api_metrics,
        "apiserver_admission_webhook_admission_duration_seconds_sum",
        &sel,
    )
    .unwrap();
    assert!(calls >= 4.0, "{calls} binding calls for 4 bound Pods");
    let mean_ms = sum / calls * 1e3;
    eprintln!("API server: {calls} binding webhook calls, mean {mean_ms:.2} ms");
    assert!(mean_ms < 500.0, "mean binding webhook call {mean_ms} ms");
    let own = http_get(metrics, "/metrics").1;
    let binding = [("kind", "binding")];
    let reviewed = sample(
        &own,
        "nodetopo_webhook_admission_duration_seconds_count",
        &binding,
    )
    .expect("the webhook's own histogram");
    assert!(reviewed >= 4.0, "{reviewed}");
    assert_eq!(
        sample(
            &own,
            "nodetopo_webhook_reviews_total",
            &[("kind", "binding"), ("outcome", "patched")]
        ),
        Some(4.0),
        "{own}"
    );
    let p99 = quantile_bound(
        &own,
        "nodetopo_webhook_admission_duration_seconds",
        &binding,
        0.99,
    )
    .unwrap();
    eprintln!(
        "webhook: {reviewed} binding reviews, p99 ≤ {} ms",
        p99 * 1e3
    );
    assert!(p99 <= 0.01, "p99 of the webhook's own handling {p99} s");
    assert_eq!(
        sample(&own, "nodetopo_webhook_nodes", &[]),
        Some(4.0),
        "{own}"
    );

    // The webhook stops: Pods are still bound (failurePolicy Ignore), without the labels.
    drop(webhook);
    harness::delete_pods(&admin, NS_ON).await;
    pods_on
        .create(&PostParams::default(), &gpu_pod("after-stop", NS_ON, 4))
        .await
        .unwrap();
    let p = bound(&admin, NS_ON, &["after-stop".to_string()]).await;
    assert!(topo_labels(&p[0]).is_empty(), "{:?}", labels(&p[0]));

    // And it starts again: the next binding is mutated once more.
    let _webhook = start();
    harness::eventually(Duration::from_secs(30), "the webhook's /readyz", || async {
        (http_get(metrics, "/readyz").0 == 200).then_some(())
    })
    .await;
    pods_on
        .create(&PostParams::default(), &gpu_pod("restarted", NS_ON, 4))
        .await
        .unwrap();
    let p = bound(&admin, NS_ON, &["restarted".to_string()]).await;
    let node = p[0].spec.as_ref().unwrap().node_name.clone().unwrap();
    assert_eq!(topo_labels(&p[0]), expected(&node_objs[&node]));
}

/// Consumer keys: the labels of Pods bound by kube-scheduler with `llm-d` and a `--pod-key` on
/// (and Dynamo off), then with `dynamo` alone. A Pod that sets a consumer key itself keeps it.
#[tokio::test]
async fn scheduled_pods_carry_the_consumer_keys_that_are_on() {
    const HOSTNAME: &str = "kubernetes.io/hostname";
    const RACK: &str = "topology.kubernetes.io/rack";
    const ZONE: &str = "topology.kubernetes.io/zone";
    const DYNAMO: &str = "nvidia.com/dynamo-topology.";
    const OWN_KEY: &str = "example.com/leaf";
    let cp = ControlPlane::start(harness::Options::default());
    let admin = cp.admin().await;
    for ns in [NS_ON, NS_WEBHOOK] {
        cp.kubectl(&["create", "namespace", ns]);
        cp.kubectl(&["create", "serviceaccount", "default", "--namespace", ns]);
    }
    cp.kubectl(&[
        "label",
        "namespace",
        NS_ON,
        &format!("{PREFIX}/pod-topology=enabled"),
    ]);
    // gb-1's hostname label differs from its name; every node is in zone z1.
    for (name, mut l, gpus) in nodes() {
        if name == "gb-1" {
            l.push((HOSTNAME.to_string(), "gb-1.example.com".to_string()));
        }
        l.push((ZONE.to_string(), "z1".to_string()));
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        harness::create_node_with(&admin, name, &l, gpus).await;
    }
    let node_objs = harness::nodes_by_name(&admin).await;
    let node_label = |node: &str, key: &str| -> Option<String> {
        node_objs[node].metadata.labels.as_ref()?.get(key).cloned()
    };

    // llm-d (its rack from the clique, the default) and one key of our own; Dynamo not named.
    let objs = chart_with(
        &cp,
        &[
            "--set",
            "webhook.consumers={llm-d}",
            "--set",
            &format!("webhook.podKeys={{{OWN_KEY}={LEAF}}}"),
        ],
    );
    let role = objs
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && is_webhook(o))
        .expect("the webhook's ClusterRole");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        ]),
        "consumer keys add pods get, to read a binding's Pod"
    );
    let rbac_yaml: String = objs
        .iter()
        .filter(|o| {
            is_webhook(o)
                && ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]
                    .contains(&o["kind"].as_str().unwrap())
        })
        .map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).unwrap()))
        .collect();
    let out = cp.kubectl_input(&["apply", "-f", "-"], &rbac_yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = harness::sa_token(&admin, NS_WEBHOOK, "nodetopo-webhook", None).await;
    let kubeconfig = cp.kubeconfig_for("webhook", &token);
    let deploy = objs
        .iter()
        .find(|o| o["kind"] == "Deployment" && is_webhook(o))
        .expect("the webhook's Deployment");
    let chart_args = harness::chart_args_for_loopback(deploy);
    assert!(
        chart_args.contains(&"--consumer=llm-d".to_string()),
        "{chart_args:?}"
    );
    assert!(
        chart_args.contains(&format!("--pod-key={OWN_KEY}={LEAF}")),
        "{chart_args:?}"
    );
    let (crt, key) = cp.serving_cert("webhook");
    let (port, metrics) = (harness::free_port(), harness::free_port());
    let start = |args: &[String]| {
        let child = Command::new(NODETOPO)
            .args(args)
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--metrics-listen=127.0.0.1:{metrics}"))
            .arg(format!("--tls-cert={}", crt.display()))
            .arg(format!("--tls-key={}", key.display()))
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nodetopo webhook");
        Proc(child)
    };
    let ready = || {
        harness::eventually(Duration::from_secs(30), "the webhook's /readyz", || async {
            (http_get(metrics, "/readyz").0 == 200).then_some(())
        })
    };
    let webhook = start(&chart_args);
    ready().await;
    install_mutating_webhook(&cp, &objs, port);
    // Wait until a Pod created on a node is mutated before the scheduler starts binding.
    let pods_on: Api<Pod> = Api::namespaced(admin.clone(), NS_ON);
    first_mutated_pod(&pods_on, "probe").await;
    harness::delete_pods(&admin, NS_ON).await;

    // Four 4-GPU Pods bound by the real scheduler; one sets its own rack, on a tray (a node
    // with a clique, so that the Node has a rack of its own to differ from).
    let _scheduler = start_scheduler(&cp);
    let names: Vec<String> = (0..4).map(|i| format!("llm-{i}")).collect();
    for n in &names {
        let mut p = gpu_pod(n, NS_ON, 4);
        if n == "llm-0" {
            p.metadata
                .labels
                .get_or_insert_default()
                .insert(RACK.to_string(), "my-rack".to_string());
            p.spec.as_mut().unwrap().node_selector = Some(
                [(format!("{PREFIX}/nvlink.fabric"), "ready".to_string())]
                    .into_iter()
                    .collect(),
            );
        }
        pods_on.create(&PostParams::default(), &p).await.unwrap();
        if n == "llm-0" {
            // Bound before the others are made, so that they cannot take every tray first.
            bound(&admin, NS_ON, std::slice::from_ref(n)).await;
        }
    }
    let placed = bound(&admin, NS_ON, &names).await;
    for p in &placed {
        let name = p.metadata.name.clone().unwrap();
        let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
        let l = labels(p);
        let host = node_label(&node, HOSTNAME).unwrap_or_else(|| node.clone());
        assert_eq!(l.get(HOSTNAME), Some(&host), "{name} on {node}: {l:?}");
        let rack = if name == "llm-0" {
            assert!(node.starts_with("gb-"), "{node}");
            Some("my-rack".to_string())
        } else {
            node_label(&node, &format!("{PREFIX}/nvlink.domain"))
        };
        assert_eq!(l.get(RACK), rack.as_ref(), "{name} on {node}: {l:?}");
        assert_eq!(
            l.get(OWN_KEY),
            node_label(&node, LEAF).as_ref(),
            "{name} on {node}"
        );
        assert!(
            !l.keys().any(|k| k.starts_with(DYNAMO)),
            "Dynamo is not on: {l:?}"
        );
        assert_eq!(topo_labels(p), expected(&node_objs[&node]), "{name}");
    }
    let own = http_get(metrics, "/metrics").1;
    assert_eq!(
        sample(
            &own,
            "nodetopo_webhook_consumer_keys_kept_total",
            &[("consumer", "llm-d")]
        ),
        Some(1.0),
        "{own}"
    );
    assert_eq!(
        sample(&own, "nodetopo_webhook_consumer_keys_withheld_total", &[]),
        None,
        "every binding's Pod was read: {own}"
    );
    // Each binding now reads its Pod: the webhook's own time for it, for the record.
    let p99 = quantile_bound(
        &own,
        "nodetopo_webhook_admission_duration_seconds",
        &[("kind", "binding")],
        0.99,
    )
    .unwrap();
    let sel = [("kind", "binding")];
    let n = sample(
        &own,
        "nodetopo_webhook_admission_duration_seconds_count",
        &sel,
    )
    .unwrap();
    let sum = sample(
        &own,
        "nodetopo_webhook_admission_duration_seconds_sum",
        &sel,
    )
    .unwrap();
    eprintln!(
        "webhook with consumer keys: {n} bindings, mean {:.2} ms, p99 <= {} ms",
        sum / n * 1e3,
        p99 * 1e3
    );
    // Bounded by the look-up's timeout (1 s), whatever the load on the machine.
    assert!(p99 <= 1.0, "p99 of a binding with its Pod read: {p99} s");
    // One more, alone, on the connections the first ones opened.
    pods_on
        .create(&PostParams::default(), &gpu_pod("llm-4", NS_ON, 4))
        .await
        .unwrap();
    bound(&admin, NS_ON, &["llm-4".to_string()]).await;
    let own = http_get(metrics, "/metrics").1;
    let n5 = sample(
        &own,
        "nodetopo_webhook_admission_duration_seconds_count",
        &sel,
    )
    .unwrap();
    let sum5 = sample(
        &own,
        "nodetopo_webhook_admission_duration_seconds_sum",
        &sel,
    )
    .unwrap();
    eprintln!(
        "webhook with consumer keys: a binding alone took {:.2} ms",
        (sum5 - sum) / (n5 - n) * 1e3
    );

    // Dynamo alone: its keys with the node's values, and none of llm-d's or ours.
    drop(webhook);
    harness::delete_pods(&admin, NS_ON).await;
    let mut dynamo_args: Vec<String> = chart_args
        .iter()
        .filter(|a| !a.starts_with("--consumer=") && !a.starts_with("--pod-key="))
        .cloned()
        .collect();
    dynamo_args.push("--consumer=dynamo".to_string());
    let _webhook = start(&dynamo_args);
    ready().await;
    let names: Vec<String> = (0..3).map(|i| format!("dyn-{i}")).collect();
    for n in &names {
        pods_on
            .create(&PostParams::default(), &gpu_pod(n, NS_ON, 4))
            .await
            .unwrap();
    }
    let mut saw_clique = false;
    for p in bound(&admin, NS_ON, &names).await {
        let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
        let l = labels(&p);
        let dynamo: BTreeMap<&str, &str> = l
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(DYNAMO)?, v.as_str())))
            .collect();
        let mut want: BTreeMap<&str, String> = BTreeMap::new();
        want.insert("zone", "z1".to_string());
        want.insert(
            "host",
            node_label(&node, HOSTNAME).unwrap_or_else(|| node.clone()),
        );
        for (domain, key) in [("rack", "nvlink.cluster"), ("clique", "nvlink.domain")] {
            if let Some(v) = node_label(&node, &format!("{PREFIX}/{key}")) {
                want.insert(domain, v);
            }
        }
        saw_clique |= want.contains_key("clique");
        let want: BTreeMap<&str, &str> = want.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(dynamo, want, "{node}: {l:?}");
        assert!(!l.contains_key(RACK) && !l.contains_key(HOSTNAME) && !l.contains_key(OWN_KEY));
        assert_eq!(topo_labels(&p), expected(&node_objs[&node]));
    }
    assert!(saw_clique, "a Pod landed on a GB200 tray");
}
