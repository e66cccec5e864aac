//! Admission latency and memory of `nodetopo webhook` at 5,000 Nodes (a bench binary; figures
//! in BENCHMARKS.md).
//!
//! One control plane (etcd and kube-apiserver on 127.0.0.1, from tests/e2e/build-kube.sh),
//! 5,000 GB200-tray Nodes with nodetopo labels, and the webhook (release build) reading them
//! through its reflector. Then:
//! - direct: `POST /mutate` of a Binding review and of a Pod review over one kept-alive TLS
//!   connection, interleaved with `GET /healthz` on the same connection (the reference: the same
//!   TLS, HTTP and server path without the review);
//! - through the API server: Bindings posted as kube-scheduler posts them, alternating between a
//!   namespace the webhook selects and one it does not (the reference: the API server's own
//!   binding path, without the webhook call);
//! - the webhook's resident memory.
//!
//! Run: `cargo bench --locked --features e2e --bench webhook` (NODETOPO_KUBE_BIN as for the
//! end-to-end suite; N=requests per direct series, default 20000; BINDINGS=per namespace,
//! default 300).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine;
use harness::{ControlPlane, NODETOPO};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client, api::PostParams};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsConnector, client::TlsStream};

const NODES: usize = 5_000;
const NS_ON: &str = "bench-on";
const NS_OFF: &str = "bench-off";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        harness::terminate(&mut self.0, Duration::from_secs(5));
    }
}

use common::fleet_node_name as node_name;

/// The fleet's labels plus what a kubelet and the driver add.
fn node_labels(i: usize) -> Value {
    let mut l = common::fleet_node_labels(i);
    let m = l.as_object_mut().expect("an object");
    m.insert("kubernetes.io/hostname".into(), node_name(i).into());
    m.insert("kubernetes.io/os".into(), "linux".into());
    m.insert("nodetopo.io/gpu.driver".into(), "580.159.04".into());
    l
}

async fn create_nodes(client: &Client) {
    use futures::StreamExt;
    let api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..NODES)
        .for_each_concurrent(32, |i| {
            let api = api.clone();
            async move {
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": node_name(i), "labels": node_labels(i),
                        "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                            "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
                    "spec": {},
                }))
                .unwrap();
                api.create(&PostParams::default(), &node).await.unwrap();
            }
        })
        .await;
}

/// The serving certificate's CA as a rustls client trusts it.
fn connector(ca: &std::path::Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

/// One HTTP/1.1 exchange on a kept-alive TLS connection; returns the round trip and the body.
async fn exchange(
    s: &mut TlsStream<tokio::net::TcpStream>,
    method: &str,
    path: &str,
    body: &[u8],
) -> (Duration, Vec<u8>) {
    let t0 = Instant::now();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).await.unwrap();
    s.flush().await.unwrap();
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let (head_end, len) = loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("content-length");
            break (i + 4, len);
        }
    };
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    (t0.elapsed(), buf[head_end..head_end + len].to_vec())
}

fn binding_review(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("b-{i}"),
            "kind": {"group": "", "version": "v1", "kind": "Binding"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": "binding",
            "requestKind": {"group": "", "version": "v1", "kind": "Binding"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "requestSubResource": "binding",
            "name": format!("decode-{i}"), "namespace": NS_ON, "operation": "CREATE",
            "userInfo": {"username": "system:kube-scheduler", "groups": ["system:authenticated"]},
            "object": {"kind": "Binding", "apiVersion": "v1",
                "metadata": {"name": format!("decode-{i}"), "namespace": NS_ON,
                    "uid": "0f5c3a7e-7f0e-4e8e-9a59-8d3c1c2b7a11",
                    "creationTimestamp": null},
                "target": {"kind": "Node", "name": node_name(i % NODES)}},
            "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }))
    .unwrap()
}

/// A vLLM decode pod shaped like an LWS worker (a few KiB of spec).
fn pod_json(name: &str, ns: &str, node: Option<&str>) -> Value {
    let env: Vec<Value> = (0..20)
        .map(|k| json!({"name": format!("VLLM_SETTING_{k}"), "value": format!("value-{k}")}))
        .collect();
    let mut spec = json!({
        "schedulerName": "bench-none",
        "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
            "command": ["sh", "-c", ". /nodetopo/env && exec vllm serve model --tensor-parallel-size 4"],
            "env": env,
            "resources": {"limits": {"nvidia.com/gpu": "4"}, "requests": {"cpu": "16", "memory": "200Gi"}},
            "volumeMounts": [{"name": "nodetopo", "mountPath": "/nodetopo"}]}],
        "volumes": [{"name": "nodetopo", "emptyDir": {}}],
    });
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {
            "leaderworkerset.sigs.k8s.io/name": "decode",
            "leaderworkerset.sigs.k8s.io/group-index": "0",
            "leaderworkerset.sigs.k8s.io/worker-index": "1",
            "llm-d.ai/role": "decode"}},
        "spec": spec,
    })
}

fn pod_review(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("p-{i}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NS_ON, "operation": "CREATE",
            "object": pod_json(&format!("direct-{i}"), NS_ON, Some(&node_name(i % NODES))),
        },
    }))
    .unwrap()
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn series(p: &mut [Duration]) -> String {
    let (p50, p99) = (pct(p, 0.5), pct(p, 0.99));
    format!(
        "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(p50),
        ms(p99),
        ms(*p.last().unwrap())
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes bench binaries; there is nothing to list.
    }
    let env_n = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (n, bindings) = (env_n("N", 20_000), env_n("BINDINGS", 300));
    let cp = ControlPlane::start(harness::Options::default());
    let client = cp.admin().await;
    for ns in [NS_ON, NS_OFF] {
        cp.kubectl(&["create", "namespace", ns]);
        cp.kubectl(&["create", "serviceaccount", "default", "--namespace", ns]);
    }
    cp.kubectl(&[
        "label",
        "namespace",
        NS_ON,
        "nodetopo.io/pod-topology=enabled",
    ]);
    let (crt, key) = cp.serving_cert("webhook");
    let (port, metrics) = (harness::free_port(), harness::free_port());
    let start = || {
        Proc(
            Command::new(NODETOPO)
                .args(["webhook", "--block-label", "network.example.com/leaf"])
                .arg(format!("--listen=127.0.0.1:{port}"))
                .arg(format!("--metrics-listen=127.0.0.1:{metrics}"))
                .arg(format!("--tls-cert={}", crt.display()))
                .arg(format!("--tls-key={}", key.display()))
                .env("KUBECONFIG", &cp.admin_kubeconfig)
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        )
    };
    // The reference for memory: the same process with no Node to hold.
    let empty = start();
    while !http_get(metrics, "/readyz").starts_with("HTTP/1.1 200") {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_empty = rss_mib(empty.0.id());
    drop(empty);

    let t0 = Instant::now();
    create_nodes(&client).await;
    eprintln!(
        "{NODES} nodes created in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let webhook = start();
    let t0 = Instant::now();
    loop {
        if http_get(metrics, "/metrics").contains(&format!("nodetopo_webhook_nodes {NODES}")) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "reflector not full"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "reflector holds {NODES} nodes {:.1} s after start",
        t0.elapsed().as_secs_f64()
    );
    let rss_idle = rss_mib(webhook.0.id());

    // Direct: one kept-alive TLS connection, as the API server's client keeps one.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut tls = connector(&cp.ca)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let reviews: Vec<Vec<u8>> = (0..1000).map(binding_review).collect();
    let pods: Vec<Vec<u8>> = (0..1000).map(pod_review).collect();
    // Every answer patches: check one.
    let (_, body) = exchange(&mut tls, "POST", "/mutate", &reviews[7]).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    let patch = base64::engine::general_purpose::STANDARD
        .decode(v["response"]["patch"].as_str().expect("a patch"))
        .unwrap();
    assert!(String::from_utf8_lossy(&patch).contains("leaf-0"));
    for i in 0..2000 {
        exchange(&mut tls, "POST", "/mutate", &reviews[i % 1000]).await;
    }
    let (mut b, mut p, mut h) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        b.push(
            exchange(&mut tls, "POST", "/mutate", &reviews[i % 1000])
                .await
                .0,
        );
        p.push(
            exchange(&mut tls, "POST", "/mutate", &pods[i % 1000])
                .await
                .0,
        );
        h.push(exchange(&mut tls, "GET", "/healthz", b"").await.0);
    }

    // Through the API server: the chart's MutatingWebhookConfiguration, pointed at 127.0.0.1.
    let rendered = cp.helm(&[
        "template",
        "nodetopo",
        &format!("{}/charts/nodetopo", harness::ROOT),
        "--namespace",
        "nodetopo",
        "--set",
        "webhook.enabled=true",
    ]);
    let mut mwc: Value = serde_yaml_ng::Deserializer::from_str(&rendered)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&cp.ca).unwrap());
    for w in mwc["webhooks"].as_array_mut().unwrap() {
        w["clientConfig"] =
            json!({"url": format!("https://127.0.0.1:{port}/mutate"), "caBundle": ca});
    }
    let out = cp.kubectl_input(&["apply", "-f", "-"], &serde_json::to_string(&mwc).unwrap());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The API server loads it asynchronously: wait until a Pod created on a Node is mutated.
    let probe: Api<Pod> = Api::namespaced(client.clone(), NS_ON);
    for attempt in 0.. {
        let name = format!("probe-{attempt}");
        let pod: Pod = serde_json::from_value(pod_json(&name, NS_ON, Some(&node_name(0)))).unwrap();
        let got = probe.create(&PostParams::default(), &pod).await.unwrap();
        if got
            .metadata
            .labels
            .is_some_and(|l| l.contains_key("nodetopo.io/nvlink.domain"))
        {
            break;
        }
        assert!(attempt < 300, "the webhook configuration never took effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bindings as kube-scheduler posts them.
    let mut on_t = Vec::new();
    let mut off_t = Vec::new();
    for ns in [NS_ON, NS_OFF] {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        for i in 0..bindings {
            let pod: Pod = serde_json::from_value(pod_json(&format!("w-{i}"), ns, None)).unwrap();
            api.create(&PostParams::default(), &pod).await.unwrap();
        }
    }
    // Warm both paths (connections, caches) before timing.
    let bind = |ns: &'static str, i: usize| {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        async move {
            let name = format!("w-{i}");
            let body = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": ns},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node_name(i * 7 % NODES)},
            });
            let t0 = Instant::now();
            let _: Value = api
                .create_subresource("binding", &name, &PostParams::default(), &body)
                .await
                .unwrap();
            t0.elapsed()
        }
    };
    for i in 0..bindings {
        on_t.push(bind(NS_ON, i).await);
        off_t.push(bind(NS_OFF, i).await);
    }
    let warm = bindings.min(20);
    let (mut on_t, mut off_t) = (on_t.split_off(warm), off_t.split_off(warm));
    let api_on: Api<Pod> = Api::namespaced(client.clone(), NS_ON);
    let api_off: Api<Pod> = Api::namespaced(client.clone(), NS_OFF);
    let sample_on = api_on.get("w-3").await.unwrap();
    let sample_off = api_off.get("w-3").await.unwrap();
    let l_on = sample_on.metadata.labels.unwrap_or_default();
    let l_off = sample_off.metadata.labels.unwrap_or_default();
    assert_eq!(
        l_on.get("nodetopo.io/nvlink.domain"),
        node_labels(21)["nodetopo.io/nvlink.domain"]
            .as_str()
            .map(String::from)
            .as_ref()
    );
    assert_eq!(
        l_on.get("nodetopo.io/leaf").map(String::as_str),
        Some("leaf-0")
    );
    assert!(!l_off.contains_key("nodetopo.io/nvlink.domain"));

    let rss = rss_mib(webhook.0.id());
    let own = http_get(metrics, "/metrics");
    let api_metrics = cp.kubectl(&["get", "--raw", "/metrics"]);
    let webhook_mean = {
        let pick = |name: &str| {
            api_metrics
                .lines()
                .find(|l| {
                    l.starts_with(name)
                        && l.contains("name=\"binding.webhook.nodetopo.io\"")
                        && l.contains("type=\"admit\"")
                })
                .and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        };
        let s = pick("apiserver_admission_webhook_admission_duration_seconds_sum");
        let c = pick("apiserver_admission_webhook_admission_duration_seconds_count");
        s.zip(c).map(|(s, c)| (s / c * 1e3, c))
    };
    drop(webhook);

    let (b99, h99, p99) = (pct(&mut b, 0.99), pct(&mut h, 0.99), pct(&mut p, 0.99));
    println!(
        "direct, {n} requests each, one kept-alive TLS connection, {NODES} nodes in the reflector:"
    );
    println!("  POST /mutate, Binding review: {}", series(&mut b));
    println!(
        "  POST /mutate, Pod review ({} B): {}",
        pods[0].len(),
        series(&mut p)
    );
    println!("  GET /healthz (reference): {}", series(&mut h));
    println!(
        "  p99 Binding / reference: {:.2}; Pod / reference: {:.2}; p99 Binding - reference: {:.3} ms",
        b99.as_secs_f64() / h99.as_secs_f64(),
        p99.as_secs_f64() / h99.as_secs_f64(),
        ms(b99.saturating_sub(h99))
    );
    let (on99, off99) = (pct(&mut on_t, 0.99), pct(&mut off_t, 0.99));
    println!(
        "through the API server, {} bindings per namespace (after {warm} warm-up each):",
        on_t.len()
    );
    println!(
        "  selected namespace (webhook called): {}",
        series(&mut on_t)
    );
    println!("  other namespace (reference): {}", series(&mut off_t));
    println!(
        "  p50 ratio {:.2}, p99 ratio {:.2}",
        pct(&mut on_t, 0.5).as_secs_f64() / pct(&mut off_t, 0.5).as_secs_f64(),
        on99.as_secs_f64() / off99.as_secs_f64()
    );
    if let Some((mean, count)) = webhook_mean {
        println!("  API server's webhook call duration: mean {mean:.3} ms over {count} calls");
    }
    let own_count = own
        .lines()
        .find(|l| {
            l.starts_with("nodetopo_webhook_admission_duration_seconds_count{kind=\"binding\"}")
        })
        .unwrap_or("")
        .to_string();
    println!("  webhook's own: {own_count}");
    println!(
        "webhook resident memory, {NODES} nodes in the reflector: {rss_idle:.1} MiB after the list, {rss:.1} MiB after the runs; no node (reference): {rss_empty:.1} MiB"
    );
}
