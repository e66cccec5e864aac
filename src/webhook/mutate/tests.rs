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

/// `cfg()` with llm-d (rack from the leaf label the nodes carry) and one pod key.
fn consumer_cfg() -> MutationConfig {
    let mut rules = crate::webhook::consumer::parse_consumer(
        "llm-d:rack=network.example.com/leaf",
        DEFAULT_PREFIX,
    )
    .unwrap();
    rules.push(
        crate::webhook::consumer::parse_pod_key("example.com/clique=nvlink-domain", DEFAULT_PREFIX)
            .unwrap(),
    );
    cfg().with_consumers(rules).unwrap()
}

fn labels_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

#[test]
fn consumer_keys_get_the_nodes_values_but_never_replace_the_pods_own() {
    let c = consumer_cfg();
    let gb = &nodes()["gb-1"];
    let d = c.decide("gb-1", gb, Some(&BTreeMap::new()));
    assert_eq!(
        d.labels["kubernetes.io/hostname"], "gb-1",
        "no hostname label: the name"
    );
    assert_eq!(d.labels["topology.kubernetes.io/rack"], "leaf-3");
    assert_eq!(d.labels["example.com/clique"], "c0ffee.1");
    assert_eq!(d.labels["topo.example.com/nvlink.domain"], "c0ffee.1");
    assert!(d.kept.is_empty() && d.withheld.is_empty());

    // The user's rack is kept and reported; an equal value is no conflict; nodetopo's own key
    // still gets the Node's value.
    let own = labels_of(&[
        ("topology.kubernetes.io/rack", "my-rack"),
        ("example.com/clique", "c0ffee.1"),
        ("topo.example.com/nvlink.domain", "stale.9"),
    ]);
    let d = c.decide("gb-1", gb, Some(&own));
    assert!(!d.labels.contains_key("topology.kubernetes.io/rack"));
    assert_eq!(
        d.kept,
        [Kept {
            consumer: Consumer::LlmD,
            key: "topology.kubernetes.io/rack".into(),
            pod_value: "my-rack".into(),
            node_value: "leaf-3".into(),
        }]
    );
    assert_eq!(d.labels["example.com/clique"], "c0ffee.1");
    assert_eq!(d.labels["topo.example.com/nvlink.domain"], "c0ffee.1");

    // The Pod's labels unknown: consumer keys are left out, nodetopo's own are written.
    let d = c.decide("gb-1", gb, None);
    assert_eq!(
        d.withheld,
        [Consumer::LlmD, Consumer::LlmD, Consumer::PodKey]
    );
    assert!(d.labels.keys().all(|k| k.starts_with("topo.example.com/")));
    assert_eq!(d.labels.len(), 4);

    // A Node without the rack's label: no rack, and nothing withheld for it.
    let cpu = &nodes()["cpu-1"];
    let d = c.decide("cpu-1", cpu, None);
    assert_eq!(
        d.withheld,
        [Consumer::LlmD],
        "only the hostname had a value"
    );
}

#[test]
fn consumers_not_enabled_write_nothing_of_theirs() {
    let d = cfg().decide("gb-1", &nodes()["gb-1"], Some(&BTreeMap::new()));
    assert!(
        d.labels.keys().all(|k| k.starts_with("topo.example.com/")),
        "{d:?}"
    );
    let req = pod(Some("gb-1"), json!({"app": "vllm"}), "CREATE");
    let obj = patched(&req, &run(&req));
    let keys: Vec<&String> = obj["metadata"]["labels"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert!(
        !keys.iter().any(|k| k.contains("kubernetes.io/")),
        "{keys:?}"
    );
}

#[test]
fn a_pod_created_on_a_node_keeps_its_own_consumer_value() {
    let c = consumer_cfg();
    let req = pod(
        Some("gb-1"),
        json!({"app": "vllm", "topology.kubernetes.io/rack": "mine"}),
        "CREATE",
    );
    let read = ReadReview::read(&serde_json::to_vec(&req).unwrap()).unwrap();
    assert_eq!(
        read.pod_to_look_up(&c),
        None,
        "a Pod's labels are in the review"
    );
    let r = read.answer(&nodes(), &c, None).unwrap();
    assert_eq!(r.kept.len(), 1);
    assert!(r.withheld.is_empty());
    let obj = patched(&req, &r);
    assert_eq!(
        obj["metadata"]["labels"]["topology.kubernetes.io/rack"],
        "mine"
    );
    assert_eq!(obj["metadata"]["labels"]["kubernetes.io/hostname"], "gb-1");
}

#[test]
fn a_binding_looks_its_pod_up_and_gets_consumer_keys() {
    let c = consumer_cfg();
    let req = binding("gb-1", None);
    let body = serde_json::to_vec(&req).unwrap();
    let read = ReadReview::read(&body).unwrap();
    assert_eq!(read.pod_to_look_up(&c), Some(("ns", "p")));
    assert_eq!(read.subject(), "ns/p");
    assert_eq!(
        ReadReview::read(&body).unwrap().pod_to_look_up(&cfg()),
        None,
        "no consumer: no look-up"
    );
    let pod_labels = labels_of(&[("app", "vllm"), ("example.com/clique", "theirs")]);
    let r = read.answer(&nodes(), &c, Some(&pod_labels)).unwrap();
    let obj = patched(&req, &r);
    let l = &obj["metadata"]["labels"];
    assert_eq!(l["topology.kubernetes.io/rack"], "leaf-3");
    assert_eq!(l["kubernetes.io/hostname"], "gb-1");
    assert!(
        l.get("example.com/clique").is_none(),
        "the Pod's own value stays: {l}"
    );
    assert_eq!(r.kept[0].key, "example.com/clique");

    // Looked up in vain: nodetopo's own keys only.
    let r = review(&body, &nodes(), &c).unwrap();
    assert_eq!(r.withheld.len(), 3);
    let obj = patched(&req, &r);
    assert!(
        obj["metadata"]["labels"]
            .get("topology.kubernetes.io/rack")
            .is_none()
    );
    assert_eq!(obj["metadata"]["labels"]["topo.example.com/leaf"], "leaf-3");
}

#[test]
fn a_consumer_key_cannot_take_a_copied_labels_pod_key() {
    let clash = crate::webhook::consumer::parse_pod_key(
        "topo.example.com/leaf=nvlink-domain",
        DEFAULT_PREFIX,
    )
    .unwrap();
    let e = cfg().with_consumers(vec![clash]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "two copied labels map to pod label topo.example.com/leaf"
    );
    let c = consumer_cfg();
    assert!(c.copies("nodetopo.io/nvlink.domain"));
    assert!(c.node_keys().contains("kubernetes.io/hostname"));
}
