use base64::Engine;

use super::*;
use crate::labels::DEFAULT_PREFIX;

fn names() -> Vec<Key> {
    DEFAULT_KEYS.to_vec()
}

fn cfg() -> MutationConfig {
    MutationConfig::new(
        DEFAULT_PREFIX,
        "topo.example.com",
        &names(),
        &[
            "network.example.com/leaf".into(),
            "fabric.example.com/spine=block".into(),
        ],
    )
    .unwrap()
}

fn node_key(key: Key) -> String {
    key.under(DEFAULT_PREFIX)
}

/// Node `gb-1` in a ready clique on leaf-3; node `cpu-1` without any topology label.
fn nodes() -> BTreeMap<String, BTreeMap<String, String>> {
    let gb: BTreeMap<String, String> = [
        (node_key(Key::NvlinkDomain), "c0ffee.1".to_string()),
        (node_key(Key::NvlinkCluster), "c0ffee".to_string()),
        (node_key(Key::RdmaLinkLayer), "infiniband".to_string()),
        (node_key(Key::GpuCount), "4".to_string()),
        ("network.example.com/leaf".to_string(), "leaf-3".to_string()),
    ]
    .into_iter()
    .collect();
    let cpu: BTreeMap<String, String> = [("kubernetes.io/os".to_string(), "linux".to_string())]
        .into_iter()
        .collect();
    [("gb-1".to_string(), gb), ("cpu-1".to_string(), cpu)]
        .into_iter()
        .collect()
}

fn binding(node: &str, labels: Option<Value>) -> Value {
    let mut meta = json!({"name": "p", "namespace": "ns", "uid": "pod-uid"});
    if let Some(l) = labels {
        meta["labels"] = l;
    }
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "req-1",
            "kind": {"group": "", "version": "v1", "kind": "Binding"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": "binding",
            "name": "p", "namespace": "ns", "operation": "CREATE",
            "object": {"apiVersion": "v1", "kind": "Binding", "metadata": meta,
                "target": {"kind": "Node", "name": node}},
        },
    })
}

fn pod(node: Option<&str>, labels: Value, operation: &str) -> Value {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "req-2",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "ns", "operation": operation,
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "labels": labels}, "spec": spec},
        },
    })
}

fn run(review_json: &Value) -> Reviewed {
    review(&serde_json::to_vec(review_json).unwrap(), &nodes(), &cfg()).unwrap()
}

/// The object after the response's patch, applied as the API server applies it.
fn patched(review_json: &Value, r: &Reviewed) -> Value {
    let mut obj = review_json["request"]["object"].clone();
    if let Some(p) = r.response["response"]["patch"].as_str() {
        assert_eq!(r.response["response"]["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut obj, &patch).unwrap();
    }
    obj
}

#[test]
fn config_maps_names_and_extra_keys_under_the_pod_prefix() {
    let c = cfg();
    let pairs: Vec<(&str, &str)> = c
        .rules()
        .iter()
        .map(|r| (r.node_key.as_str(), r.pod_key.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            (
                "nodetopo.io/nvlink.domain",
                "topo.example.com/nvlink.domain"
            ),
            (
                "nodetopo.io/nvlink.cluster",
                "topo.example.com/nvlink.cluster"
            ),
            (
                "nodetopo.io/rdma.link-layer",
                "topo.example.com/rdma.link-layer"
            ),
            ("network.example.com/leaf", "topo.example.com/leaf"),
            ("fabric.example.com/spine", "topo.example.com/block"),
        ]
    );
    assert!(c.copies("network.example.com/leaf"));
    assert!(!c.copies("nodetopo.io/gpu.count"));
}

#[test]
fn config_rejects_bad_keys_and_clashes() {
    let bad_prefix = MutationConfig::new(DEFAULT_PREFIX, "Not_A_Domain", &names(), &[]);
    assert!(
        matches!(bad_prefix, Err(WebhookError::Label(_))),
        "{bad_prefix:?}"
    );
    let bad_key = MutationConfig::new(DEFAULT_PREFIX, DEFAULT_PREFIX, &[], &["a/b/c".into()]);
    assert!(
        matches!(bad_key, Err(WebhookError::Label(_))),
        "{bad_key:?}"
    );
    let clash = MutationConfig::new(
        DEFAULT_PREFIX,
        DEFAULT_PREFIX,
        &names(),
        &["other.example.com/nvlink.domain".into()],
    );
    assert_eq!(
        clash.unwrap_err().to_string(),
        "two copied labels map to pod label nodetopo.io/nvlink.domain"
    );
}

#[test]
fn binding_gets_the_node_labels_that_exist() {
    let req = binding("gb-1", None);
    let r = run(&req);
    assert_eq!(r.kind, ObjectKind::Binding);
    assert_eq!(r.outcome, Outcome::Patched(1), "one op adds the whole map");
    assert_eq!(r.response["response"]["uid"], "req-1");
    assert_eq!(r.response["response"]["allowed"], true);
    let obj = patched(&req, &r);
    assert_eq!(
        obj["metadata"]["labels"],
        json!({
            "topo.example.com/nvlink.domain": "c0ffee.1",
            "topo.example.com/nvlink.cluster": "c0ffee",
            "topo.example.com/rdma.link-layer": "infiniband",
            "topo.example.com/leaf": "leaf-3",
        }),
        "gpu.count is not in the list; the spine label is not on the node"
    );
}

#[test]
fn existing_labels_are_kept_and_stale_values_replaced() {
    let req = binding(
        "gb-1",
        Some(json!({
            "topology.kubernetes.io/zone": "z1",
            "topo.example.com/nvlink.domain": "old.2",
            "topo.example.com/nvlink.cluster": "c0ffee",
        })),
    );
    let r = run(&req);
    // domain replaced, link layer and leaf added; the equal cluster value is no operation.
    assert_eq!(r.outcome, Outcome::Patched(3));
    let ops = base64::engine::general_purpose::STANDARD
        .decode(r.response["response"]["patch"].as_str().unwrap())
        .unwrap();
    let ops: Vec<Value> = serde_json::from_slice(&ops).unwrap();
    assert!(
        ops.iter()
            .any(|o| o["path"] == "/metadata/labels/topo.example.com~1nvlink.domain"),
        "{ops:?}"
    );
    let obj = patched(&req, &r);
    assert_eq!(
        obj["metadata"]["labels"]["topology.kubernetes.io/zone"],
        "z1"
    );
    assert_eq!(
        obj["metadata"]["labels"]["topo.example.com/nvlink.domain"],
        "c0ffee.1"
    );
    assert_eq!(obj["metadata"]["labels"]["topo.example.com/leaf"], "leaf-3");
}

#[test]
fn pod_created_on_a_node_is_patched_and_an_unbound_one_is_not() {
    let req = pod(Some("gb-1"), json!({"app": "vllm"}), "CREATE");
    let r = run(&req);
    assert_eq!(
        (r.kind, &r.outcome),
        (ObjectKind::Pod, &Outcome::Patched(4))
    );
    let obj = patched(&req, &r);
    assert_eq!(obj["metadata"]["labels"]["app"], "vllm");
    assert_eq!(
        obj["metadata"]["labels"]["topo.example.com/rdma.link-layer"],
        "infiniband"
    );

    let unbound = pod(None, json!({"app": "vllm"}), "CREATE");
    let r = run(&unbound);
    assert_eq!(r.outcome, Outcome::NotBound);
    assert!(r.response["response"].get("patch").is_none());
    assert_eq!(r.response["response"]["allowed"], true);
}

#[test]
fn unknown_nodes_other_operations_and_bare_nodes_pass_unchanged() {
    let r = run(&binding("gone-7", None));
    assert_eq!(r.outcome, Outcome::UnknownNode("gone-7".into()));
    assert!(r.response["response"].get("patch").is_none());

    let r = run(&binding("cpu-1", None));
    assert_eq!(r.outcome, Outcome::Unchanged);
    assert!(r.response["response"].get("patch").is_none());

    let r = run(&pod(Some("gb-1"), json!({}), "UPDATE"));
    assert_eq!((r.kind, r.outcome), (ObjectKind::Other, Outcome::Ignored));

    let mut status = binding("gb-1", None);
    status["request"]["subResource"] = json!("status");
    let r = run(&status);
    assert_eq!(r.outcome, Outcome::Ignored);
    assert_eq!(r.response["response"]["allowed"], true);
}

#[test]
fn response_echoes_the_review_version_and_bad_input_is_an_error() {
    let mut req = binding("gb-1", None);
    req["apiVersion"] = json!("admission.k8s.io/v1beta1");
    assert_eq!(run(&req).response["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(run(&req).response["kind"], "AdmissionReview");

    let e = review(b"{not json", &nodes(), &cfg()).unwrap_err();
    assert!(matches!(e, WebhookError::BadReview(_)), "{e:?}");
    let e = review(br#"{"kind":"AdmissionReview"}"#, &nodes(), &cfg()).unwrap_err();
    assert!(matches!(e, WebhookError::NoRequest), "{e:?}");
}

#[test]
fn label_patch_of_nothing_is_empty() {
    let add = BTreeMap::new();
    assert!(label_patch(None, &add).is_empty());
    assert!(label_patch(Some(&BTreeMap::new()), &add).is_empty());
}
