//! Evaluates the shipped ValidatingAdmissionPolicy (`daemonset/admission-policy.yaml`) with a
//! real CEL engine against request-shaped objects, the way the API server does: match
//! conditions first, then the variables in order, then every validation. A validation that is
//! false or fails to evaluate denies the request (the policy's `failurePolicy` is `Fail`).

use std::collections::HashMap;

use cel::{Context, Program, Value as Cel};
use serde::Deserialize;
use serde_json::{Value, json};

const POLICY_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/daemonset/admission-policy.yaml"
);
const AGENT: &str = "system:serviceaccount:nodetopo:nodetopo-agent";
const CLAIM: &str = "authentication.kubernetes.io/node-name";

/// The policy's expressions, as shipped.
struct Policy {
    match_conditions: Vec<String>,
    variables: Vec<(String, String)>,
    validations: Vec<String>,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// The policy does not apply (a match condition is false).
    NotMatched,
    Allowed,
    /// Denied by the validation at this index.
    Denied(usize),
}

fn load_policy() -> Policy {
    let text = std::fs::read_to_string(POLICY_FILE).expect("policy file");
    let vap = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .expect("a ValidatingAdmissionPolicy");
    assert_eq!(vap["spec"]["failurePolicy"], "Fail");
    assert!(vap["spec"].get("paramKind").is_none(), "no params");
    let strings = |v: &Value, field: &str| -> Vec<String> {
        v.as_array()
            .expect("a list")
            .iter()
            .map(|e| e[field].as_str().expect("a string").to_string())
            .collect()
    };
    let spec = &vap["spec"];
    Policy {
        match_conditions: strings(&spec["matchConditions"], "expression"),
        variables: spec["variables"]
            .as_array()
            .expect("variables")
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_string(),
                    v["expression"].as_str().unwrap().to_string(),
                )
            })
            .collect(),
        validations: strings(&spec["validations"], "expression"),
    }
}

fn to_cel(v: &Value) -> Cel {
    cel::to_value(v).expect("JSON converts to CEL")
}

impl Policy {
    fn with_variable(mut self, name: &str, expression: &str) -> Self {
        let slot = self
            .variables
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("variable exists");
        slot.1 = expression.to_string();
        self
    }

    fn evaluate(&self, request: &Value, object: &Value, old_object: &Value) -> Outcome {
        let mut ctx = Context::default();
        ctx.add_variable_from_value("request", to_cel(request));
        ctx.add_variable_from_value("object", to_cel(object));
        ctx.add_variable_from_value("oldObject", to_cel(old_object));
        for expr in &self.match_conditions {
            let program = Program::compile(expr).expect("match condition compiles");
            match program.execute(&ctx) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => return Outcome::NotMatched,
                other => panic!("match condition {expr:?} gave {other:?}"),
            }
        }
        // Variables may refer to earlier ones, as in the API server; evaluate them in order.
        let mut vars: HashMap<String, Cel> = HashMap::new();
        for (name, expr) in &self.variables {
            ctx.add_variable_from_value("variables", vars.clone());
            let program = Program::compile(expr).expect("variable compiles");
            // An erroring variable makes every validation using it fail; keep it as an error.
            if let Ok(v) = program.execute(&ctx) {
                vars.insert(name.clone(), v);
            }
        }
        ctx.add_variable_from_value("variables", vars);
        for (i, expr) in self.validations.iter().enumerate() {
            let program = Program::compile(expr).expect("validation compiles");
            if !matches!(program.execute(&ctx), Ok(Cel::Bool(true))) {
                return Outcome::Denied(i);
            }
        }
        Outcome::Allowed
    }
}

fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "team": "inference",
                "nodetopo.io/gpu.count": "4",
                "nodetopo.io/nvlink.fabric": "none",
            },
            "annotations": { "node.alpha.kubernetes.io/ttl": "0" },
        },
        "spec": {
            "podCIDR": "10.0.1.0/24",
            "taints": [{ "key": "nvidia.com/gpu", "effect": "NoSchedule" }],
        },
        "status": { "nodeInfo": { "kubeletVersion": "v1.33.1" } },
    })
}

fn request(user: &str, node_name: Option<&str>, operation: &str) -> Value {
    let mut user_info = json!({ "username": user, "groups": ["system:serviceaccounts"] });
    if let Some(n) = node_name {
        user_info["extra"] =
            json!({ CLAIM: [n], "authentication.kubernetes.io/pod-name": ["nodetopo-agent-x"] });
    }
    json!({ "operation": operation, "userInfo": user_info, "name": "n1" })
}

fn agent_on(node_name: &str) -> Value {
    request(AGENT, Some(node_name), "UPDATE")
}

fn set_label(mut n: Value, k: &str, v: &str) -> Value {
    n["metadata"]["labels"][k] = json!(v);
    n
}

fn remove_label(mut n: Value, k: &str) -> Value {
    n["metadata"]["labels"].as_object_mut().unwrap().remove(k);
    n
}

#[test]
fn own_node_own_prefix_label_change_is_allowed() {
    let p = load_policy();
    let old = node("n1");
    let changed = set_label(old.clone(), "nodetopo.io/gpu.count", "8");
    assert_eq!(
        p.evaluate(&agent_on("n1"), &changed, &old),
        Outcome::Allowed
    );
    let added = set_label(old.clone(), "nodetopo.io/nvlink.domain", "abc.1");
    assert_eq!(p.evaluate(&agent_on("n1"), &added, &old), Outcome::Allowed);
    let removed = remove_label(old.clone(), "nodetopo.io/nvlink.fabric");
    assert_eq!(
        p.evaluate(&agent_on("n1"), &removed, &old),
        Outcome::Allowed
    );
    assert_eq!(p.evaluate(&agent_on("n1"), &old, &old), Outcome::Allowed);
}

#[test]
fn first_labels_on_a_node_without_labels_are_allowed() {
    let p = load_policy();
    let mut old = node("n1");
    old["metadata"].as_object_mut().unwrap().remove("labels");
    let mut new = old.clone();
    new["metadata"]["labels"] = json!({ "nodetopo.io/gpu.count": "4" });
    assert_eq!(p.evaluate(&agent_on("n1"), &new, &old), Outcome::Allowed);
}

#[test]
fn another_node_is_denied() {
    let p = load_policy();
    let old = node("n2");
    let changed = set_label(old.clone(), "nodetopo.io/gpu.count", "8");
    assert!(matches!(
        p.evaluate(&agent_on("n1"), &changed, &old),
        Outcome::Denied(2)
    ));
}

#[test]
fn foreign_labels_are_denied() {
    let p = load_policy();
    let old = node("n1");
    for new in [
        set_label(old.clone(), "team", "training"),
        set_label(old.clone(), "node-role.kubernetes.io/control-plane", ""),
        remove_label(old.clone(), "team"),
        // Look-alike prefixes are not the agent's.
        set_label(old.clone(), "nodetopo.io.example.com/x", "1"),
        set_label(old.clone(), "sub.nodetopo.io/x", "1"),
        set_label(old.clone(), "nodetopo.io", "1"),
        // Compatibility keys are off by default.
        set_label(old.clone(), "nvidia.com/gpu.clique", "abc.1"),
    ] {
        assert!(
            matches!(p.evaluate(&agent_on("n1"), &new, &old), Outcome::Denied(3)),
            "{}",
            new["metadata"]["labels"]
        );
    }
}

#[test]
fn enabled_compat_keys_are_allowed() {
    // The chart renders this variable from `compatLabels`.
    let p = load_policy().with_variable(
        "extraKeys",
        "['accelerator.topograph.run/domain', 'nvidia.com/gpu.clique']",
    );
    let old = node("n1");
    let new = set_label(old.clone(), "nvidia.com/gpu.clique", "abc.1");
    assert_eq!(p.evaluate(&agent_on("n1"), &new, &old), Outcome::Allowed);
    let foreign = set_label(old.clone(), "team", "x");
    assert!(matches!(
        p.evaluate(&agent_on("n1"), &foreign, &old),
        Outcome::Denied(3)
    ));
}

#[test]
fn annotation_changes_are_denied() {
    let p = load_policy();
    let old = node("n1");
    let mut changed = old.clone();
    changed["metadata"]["annotations"]["nodetopo.io/x"] = json!("1");
    assert!(matches!(
        p.evaluate(&agent_on("n1"), &changed, &old),
        Outcome::Denied(4)
    ));
    let mut dropped = old.clone();
    dropped["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    assert!(matches!(
        p.evaluate(&agent_on("n1"), &dropped, &old),
        Outcome::Denied(4)
    ));
}

#[test]
fn spec_and_taint_changes_are_denied() {
    let p = load_policy();
    let old = node("n1");
    let mut untainted = old.clone();
    untainted["spec"]["taints"] = json!([]);
    let mut cordoned = old.clone();
    cordoned["spec"]["unschedulable"] = json!(true);
    let mut cidr = old.clone();
    cidr["spec"]["podCIDR"] = json!("10.9.9.0/24");
    for new in [untainted, cordoned, cidr] {
        assert!(matches!(
            p.evaluate(&agent_on("n1"), &new, &old),
            Outcome::Denied(5)
        ));
    }
}

#[test]
fn finalizer_and_owner_changes_are_denied() {
    let p = load_policy();
    let old = node("n1");
    let mut fin = old.clone();
    fin["metadata"]["finalizers"] = json!(["example.com/keep"]);
    assert!(matches!(
        p.evaluate(&agent_on("n1"), &fin, &old),
        Outcome::Denied(6)
    ));
}

#[test]
fn missing_or_ambiguous_node_claim_is_denied() {
    let p = load_policy();
    let old = node("n1");
    let new = set_label(old.clone(), "nodetopo.io/gpu.count", "8");
    let no_extra = request(AGENT, None, "UPDATE");
    assert!(matches!(
        p.evaluate(&no_extra, &new, &old),
        Outcome::Denied(1)
    ));
    let mut other_extra = request(AGENT, None, "UPDATE");
    other_extra["userInfo"]["extra"] = json!({ "authentication.kubernetes.io/pod-name": ["x"] });
    assert!(matches!(
        p.evaluate(&other_extra, &new, &old),
        Outcome::Denied(1)
    ));
    let mut two = agent_on("n1");
    two["userInfo"]["extra"][CLAIM] = json!(["n1", "n2"]);
    assert!(matches!(p.evaluate(&two, &new, &old), Outcome::Denied(1)));
    let mut empty = agent_on("n1");
    empty["userInfo"]["extra"][CLAIM] = json!([""]);
    let mut nameless = new.clone();
    nameless["metadata"]["name"] = json!("");
    assert!(matches!(
        p.evaluate(&empty, &nameless, &old),
        Outcome::Denied(1)
    ));
}

#[test]
fn create_is_denied() {
    let p = load_policy();
    let new = node("n1");
    assert_eq!(
        p.evaluate(&request(AGENT, Some("n1"), "CREATE"), &new, &Value::Null),
        Outcome::Denied(0)
    );
}

#[test]
fn other_users_are_not_matched() {
    let p = load_policy();
    let old = node("n1");
    let new = set_label(old.clone(), "team", "training");
    for user in [
        "system:node:n1",
        "system:serviceaccount:other:nodetopo-agent",
        "system:serviceaccount:nodetopo:nodetopo-extender",
        "admin",
    ] {
        assert_eq!(
            p.evaluate(&request(user, Some("n1"), "UPDATE"), &new, &old),
            Outcome::NotMatched,
            "{user}"
        );
    }
}

#[test]
fn every_validation_can_deny_alone() {
    // Each validation is the one that fires for its own kind of violation, so none is dead.
    let p = load_policy();
    let old = node("n1");
    let mut fired = vec![false; p.validations.len()];
    let mut ann = old.clone();
    ann["metadata"]["annotations"]["a"] = json!("b");
    let mut spec = old.clone();
    spec["spec"]["unschedulable"] = json!(true);
    let mut fin = old.clone();
    fin["metadata"]["finalizers"] = json!(["x"]);
    let cases = [
        (
            request(AGENT, Some("n1"), "CREATE"),
            old.clone(),
            Value::Null,
        ),
        (request(AGENT, None, "UPDATE"), old.clone(), old.clone()),
        (agent_on("n2"), old.clone(), old.clone()),
        (
            agent_on("n1"),
            set_label(old.clone(), "team", "x"),
            old.clone(),
        ),
        (agent_on("n1"), ann, old.clone()),
        (agent_on("n1"), spec, old.clone()),
        (agent_on("n1"), fin, old.clone()),
    ];
    for (req, new, prev) in &cases {
        if let Outcome::Denied(i) = p.evaluate(req, new, prev) {
            fired[i] = true;
        }
    }
    assert!(
        fired.iter().all(|f| *f),
        "validations that never fired: {fired:?}"
    );
}
