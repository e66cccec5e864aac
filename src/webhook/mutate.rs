//! The mutation decision, without I/O: which Node labels a bound Pod gets, and the
//! `AdmissionReview` answer that adds them.
//!
//! [`review`] reads an `AdmissionReview` request, finds the Node the object is bound to (the
//! Binding's `target.name`, or a Pod's `spec.nodeName`), looks its labels up through
//! [`NodeLabels`], and answers with a JSON patch that adds the configured labels under the
//! pod-side keys. It always allows the request: a missing Node, an unbound Pod or an object of
//! another kind is passed through unchanged.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{WebhookError, review};
use crate::labels::{Key, LabelKey};

/// The agent's labels that are copied by default.
pub const DEFAULT_KEYS: [Key; 3] = [Key::NvlinkDomain, Key::NvlinkCluster, Key::RdmaLinkLayer];

/// One label the webhook copies: the Node's key and the key it gets on the Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRule {
    /// Label key on the Node.
    pub node_key: String,
    /// Label key on the Pod (and the Binding).
    pub pod_key: String,
}

/// Which Node labels are copied, and under which keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutationConfig {
    rules: Vec<CopyRule>,
}

impl MutationConfig {
    /// Copies `<node_prefix>/<key>` to `<pod_prefix>/<key>` for each of `keys`, and each of
    /// `extra` (a full Node label key such as a fabric's leaf or block label, optionally
    /// followed by `=NAME`) to `<pod_prefix>/NAME`, where NAME defaults to the key's name part.
    pub fn new(
        node_prefix: &str,
        pod_prefix: &str,
        keys: &[Key],
        extra: &[String],
    ) -> Result<Self, WebhookError> {
        let mut rules = Vec::with_capacity(keys.len() + extra.len());
        for key in keys {
            let node_key = key.label_key(node_prefix)?;
            let pod_key = key.label_key(pod_prefix)?;
            rules.push(CopyRule {
                node_key: node_key.to_string(),
                pod_key: pod_key.to_string(),
            });
        }
        for spec in extra {
            let (key, name) = match spec.split_once('=') {
                Some((k, n)) => (k, Some(n)),
                None => (spec.as_str(), None),
            };
            let node_key = LabelKey::parse(key)?;
            let pod_key = LabelKey::new(Some(pod_prefix), name.unwrap_or(node_key.name()))?;
            rules.push(CopyRule {
                node_key: node_key.to_string(),
                pod_key: pod_key.to_string(),
            });
        }
        for (i, r) in rules.iter().enumerate() {
            if rules[..i].iter().any(|o| o.pod_key == r.pod_key) {
                return Err(WebhookError::DuplicatePodKey(r.pod_key.clone()));
            }
        }
        Ok(Self { rules })
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> &[CopyRule] {
        &self.rules
    }

    /// True when `node_key` is a Node label the webhook copies.
    pub fn copies(&self, node_key: &str) -> bool {
        self.rules.iter().any(|r| r.node_key == node_key)
    }

    /// The Pod labels for a Node with `node_labels`: each rule whose Node label is present.
    pub fn pod_labels(&self, node_labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        self.rules
            .iter()
            .filter_map(|r| {
                node_labels
                    .get(&r.node_key)
                    .map(|v| (r.pod_key.clone(), v.clone()))
            })
            .collect()
    }
}

/// Node labels by Node name: the webhook's view of the cluster.
pub trait NodeLabels {
    /// The labels of Node `name`, or `None` when the Node is not known.
    fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>>;
}

impl NodeLabels for BTreeMap<String, BTreeMap<String, String>> {
    fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.get(name).cloned()
    }
}

/// JSON patch operations that make `existing` hold every entry of `add` (values replaced where
/// they differ). Empty when nothing changes.
pub fn label_patch(
    existing: Option<&BTreeMap<String, String>>,
    add: &BTreeMap<String, String>,
) -> Vec<Value> {
    match existing {
        None => {
            if add.is_empty() {
                Vec::new()
            } else {
                vec![json!({"op": "add", "path": "/metadata/labels", "value": add})]
            }
        }
        Some(have) => add
            .iter()
            .filter(|(k, v)| have.get(*k) != Some(*v))
            .map(|(k, v)| {
                let escaped = k.replace('~', "~0").replace('/', "~1");
                json!({"op": "add", "path": format!("/metadata/labels/{escaped}"), "value": v})
            })
            .collect(),
    }
}

/// What kind of object a review was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A `pods/binding` CREATE (kube-scheduler binding a Pod).
    Binding,
    /// A Pod CREATE.
    Pod,
    /// Anything else (passed through).
    Other,
}

impl ObjectKind {
    /// `binding`, `pod` or `other`, for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Binding => "binding",
            Self::Pod => "pod",
            Self::Other => "other",
        }
    }
}

/// What the webhook did with one review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Labels were added (the number of patch operations).
    Patched(usize),
    /// The Node is known, but nothing was to be added.
    Unchanged,
    /// The Node is not (yet) in the webhook's view.
    UnknownNode(String),
    /// A Pod created without `spec.nodeName`, or a Binding without a target.
    NotBound,
    /// Another kind, subresource or operation.
    Ignored,
}

impl Outcome {
    /// `patched`, `unchanged`, `unknown_node`, `not_bound` or `ignored`, for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Patched(_) => "patched",
            Self::Unchanged => "unchanged",
            Self::UnknownNode(_) => "unknown_node",
            Self::NotBound => "not_bound",
            Self::Ignored => "ignored",
        }
    }
}

/// The answer to one review.
#[derive(Debug, Clone, PartialEq)]
pub struct Reviewed {
    /// The kind of object.
    pub kind: ObjectKind,
    /// What was decided.
    pub outcome: Outcome,
    /// The `AdmissionReview` response, as JSON.
    pub response: Value,
}

#[derive(Deserialize)]
struct Object {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    target: Option<Target>,
    #[serde(default)]
    spec: Option<PodSpec>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct Target {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    node_name: Option<String>,
}

/// Answers the `AdmissionReview` in `body`: always allowed, with a JSON patch that adds the
/// Node's labels when the object is a Binding (on `pods/binding` CREATE) or a Pod created with
/// `spec.nodeName` set.
pub fn review(
    body: &[u8],
    nodes: &(impl NodeLabels + ?Sized),
    cfg: &MutationConfig,
) -> Result<Reviewed, WebhookError> {
    let (api_version, req) = review::read::<Object>(body)?;
    let kind = if req.is_pod_create("binding") {
        ObjectKind::Binding
    } else if req.is_pod_create("") {
        ObjectKind::Pod
    } else {
        ObjectKind::Other
    };
    let node = req.object.as_ref().and_then(|o| match kind {
        ObjectKind::Binding => o
            .target
            .as_ref()
            .filter(|t| t.kind.as_deref().is_none_or(|k| k == "Node"))
            .map(|t| t.name.as_str()),
        ObjectKind::Pod => o.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        ObjectKind::Other => None,
    });
    let node = node.filter(|n| !n.is_empty());
    let (outcome, patch) = match (kind, node) {
        (ObjectKind::Other, _) => (Outcome::Ignored, Vec::new()),
        (_, None) => (Outcome::NotBound, Vec::new()),
        (_, Some(node)) => match nodes.node_labels(node) {
            None => (Outcome::UnknownNode(node.to_string()), Vec::new()),
            Some(labels) => {
                let add = cfg.pod_labels(&labels);
                let existing = req.object.as_ref().and_then(|o| o.metadata.labels.as_ref());
                let patch = label_patch(existing, &add);
                if patch.is_empty() {
                    (Outcome::Unchanged, patch)
                } else {
                    (Outcome::Patched(patch.len()), patch)
                }
            }
        },
    };
    let response = review::answer(api_version.as_deref(), &req.uid, &patch)?;
    Ok(Reviewed {
        kind,
        outcome,
        response,
    })
}

#[cfg(test)]
mod tests;
