//! The mutation decision, without I/O: which Node labels a bound Pod gets, and the
//! `AdmissionReview` answer that adds them.
//!
//! [`review`] reads an `AdmissionReview` request, finds the Node the object is bound to (the
//! Binding's `target.name`, or a Pod's `spec.nodeName`), looks its labels up through
//! [`NodeLabels`], and answers with a JSON patch that adds the configured labels under the
//! pod-side keys. It always allows the request: a missing Node, an unbound Pod or an object of
//! another kind is passed through unchanged.
//!
//! Consumer keys ([`super::consumer`]) follow one more rule: a value the Pod already has under
//! such a key is the user's and is kept. A Binding does not carry its Pod's labels, so for a
//! binding the caller looks them up first ([`ReadReview::pod_to_look_up`]) and passes them to
//! [`ReadReview::answer`]; when they are unknown, consumer keys are left out.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    WebhookError,
    consumer::{Consumer, ConsumerRule},
    review,
};
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
    consumers: Vec<ConsumerRule>,
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
        let cfg = Self {
            rules,
            consumers: Vec::new(),
        };
        cfg.check_pod_keys()?;
        Ok(cfg)
    }

    /// Also writes `consumers`' keys (see [`super::consumer`]). A Pod key may be written by one
    /// rule only.
    pub fn with_consumers(mut self, consumers: Vec<ConsumerRule>) -> Result<Self, WebhookError> {
        self.consumers = consumers;
        self.check_pod_keys()?;
        Ok(self)
    }

    fn check_pod_keys(&self) -> Result<(), WebhookError> {
        let keys: Vec<&str> = self
            .rules
            .iter()
            .map(|r| r.pod_key.as_str())
            .chain(self.consumers.iter().map(|r| r.pod_key.as_str()))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].contains(k) {
                return Err(WebhookError::DuplicatePodKey((*k).to_string()));
            }
        }
        Ok(())
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> &[CopyRule] {
        &self.rules
    }

    /// The consumer keys, in the order given.
    pub fn consumers(&self) -> &[ConsumerRule] {
        &self.consumers
    }

    /// True when `node_key` is a Node label the webhook copies.
    pub fn copies(&self, node_key: &str) -> bool {
        self.node_keys().contains(node_key)
    }

    /// Every Node label that some rule or consumer key reads: what the Node store keeps.
    pub fn node_keys(&self) -> std::collections::BTreeSet<String> {
        self.rules
            .iter()
            .map(|r| r.node_key.clone())
            .chain(
                self.consumers
                    .iter()
                    .flat_map(|c| c.source.labels.iter().cloned()),
            )
            .collect()
    }

    /// The labels for a Pod bound to Node `node` with `node_labels`. `pod_labels` are the
    /// Pod's own labels, `None` when they are not known (a Binding whose Pod could not be read).
    ///
    /// nodetopo's own keys always get the Node's value. A consumer key gets it unless the Pod
    /// already has another value there (kept, and reported in [`Decision::kept`]), or the Pod's
    /// labels are unknown (left out, reported in [`Decision::withheld`]).
    pub fn decide(
        &self,
        node: &str,
        node_labels: &BTreeMap<String, String>,
        pod_labels: Option<&BTreeMap<String, String>>,
    ) -> Decision {
        let mut d = Decision {
            labels: self.pod_labels(node_labels),
            ..Decision::default()
        };
        for c in &self.consumers {
            let Some(value) = c.source.value(node, node_labels) else {
                continue;
            };
            match pod_labels.map(|p| p.get(&c.pod_key)) {
                None => d.withheld.push(c.consumer),
                Some(Some(have)) if have != value => d.kept.push(Kept {
                    consumer: c.consumer,
                    key: c.pod_key.clone(),
                    pod_value: have.clone(),
                    node_value: value.to_string(),
                }),
                Some(_) => {
                    d.labels.insert(c.pod_key.clone(), value.to_string());
                }
            }
        }
        d
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

/// What [`MutationConfig::decide`] decided for one Pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// The labels to write.
    pub labels: BTreeMap<String, String>,
    /// Consumer keys where the Pod's own value was kept.
    pub kept: Vec<Kept>,
    /// Consumer keys left out because the Pod's labels were not known, one entry per key.
    pub withheld: Vec<Consumer>,
}

/// A consumer key whose value on the Pod differs from the Node's: the Pod's is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Who reads the key.
    pub consumer: Consumer,
    /// The Pod label key.
    pub key: String,
    /// The value the Pod has (kept).
    pub pod_value: String,
    /// The Node's value (not written).
    pub node_value: String,
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
    /// Consumer keys where the Pod's own value was kept.
    pub kept: Vec<Kept>,
    /// Consumer keys left out because the Pod's labels were not known.
    pub withheld: Vec<Consumer>,
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
    name: Option<String>,
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

/// A review read from its body, before the answer: [`review`] in two steps, so that the caller
/// can look a binding's Pod up in between.
pub struct ReadReview {
    api_version: Option<String>,
    req: review::Request<Object>,
    kind: ObjectKind,
}

impl ReadReview {
    /// Reads the `AdmissionReview` in `body`.
    pub fn read(body: &[u8]) -> Result<Self, WebhookError> {
        let (api_version, req) = review::read::<Object>(body)?;
        let kind = if req.is_pod_create("binding") {
            ObjectKind::Binding
        } else if req.is_pod_create("") {
            ObjectKind::Pod
        } else {
            ObjectKind::Other
        };
        Ok(Self {
            api_version,
            req,
            kind,
        })
    }

    /// The kind of object.
    pub fn kind(&self) -> ObjectKind {
        self.kind
    }

    /// `namespace/name` of the Pod the review is about, as far as the review says, for logs.
    pub fn subject(&self) -> String {
        let name = self
            .req
            .name
            .as_deref()
            .or_else(|| self.req.object.as_ref()?.metadata.name.as_deref())
            .unwrap_or("");
        format!("{}/{name}", self.req.namespace.as_deref().unwrap_or(""))
    }

    fn node(&self) -> Option<&str> {
        let o = self.req.object.as_ref()?;
        let node = match self.kind {
            ObjectKind::Binding => o
                .target
                .as_ref()
                .filter(|t| t.kind.as_deref().is_none_or(|k| k == "Node"))
                .map(|t| t.name.as_str()),
            ObjectKind::Pod => o.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            ObjectKind::Other => None,
        };
        node.filter(|n| !n.is_empty())
    }

    /// The Pod (namespace, name) whose labels [`Self::answer`] needs: a binding, when consumer
    /// keys are configured. `None` when no look-up is needed.
    pub fn pod_to_look_up(&self, cfg: &MutationConfig) -> Option<(&str, &str)> {
        if self.kind != ObjectKind::Binding || cfg.consumers().is_empty() || self.node().is_none() {
            return None;
        }
        let ns = self.req.namespace.as_deref()?;
        let name = self
            .req
            .name
            .as_deref()
            .or_else(|| self.req.object.as_ref()?.metadata.name.as_deref())?;
        Some((ns, name))
    }

    /// The answer: always allowed, with a JSON patch that adds the Node's labels when the
    /// object is a Binding (on `pods/binding` CREATE) or a Pod created with `spec.nodeName`
    /// set. `bound_pod_labels`: for a binding, the labels of its Pod as looked up (`None`:
    /// unknown); ignored for a Pod, whose labels are in the review.
    pub fn answer(
        self,
        nodes: &(impl NodeLabels + ?Sized),
        cfg: &MutationConfig,
        bound_pod_labels: Option<&BTreeMap<String, String>>,
    ) -> Result<Reviewed, WebhookError> {
        let existing = self
            .req
            .object
            .as_ref()
            .and_then(|o| o.metadata.labels.as_ref());
        let pod_labels = match self.kind {
            ObjectKind::Pod => Some(existing.unwrap_or(&EMPTY)),
            _ => bound_pod_labels,
        };
        let (mut kept, mut withheld) = (Vec::new(), Vec::new());
        let (outcome, patch) = match (self.kind, self.node()) {
            (ObjectKind::Other, _) => (Outcome::Ignored, Vec::new()),
            (_, None) => (Outcome::NotBound, Vec::new()),
            (_, Some(node)) => match nodes.node_labels(node) {
                None => (Outcome::UnknownNode(node.to_string()), Vec::new()),
                Some(labels) => {
                    let d = cfg.decide(node, &labels, pod_labels);
                    kept = d.kept;
                    withheld = d.withheld;
                    let patch = label_patch(existing, &d.labels);
                    if patch.is_empty() {
                        (Outcome::Unchanged, patch)
                    } else {
                        (Outcome::Patched(patch.len()), patch)
                    }
                }
            },
        };
        let response = review::answer(self.api_version.as_deref(), &self.req.uid, &patch)?;
        Ok(Reviewed {
            kind: self.kind,
            outcome,
            kept,
            withheld,
            response,
        })
    }
}

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

/// Answers the `AdmissionReview` in `body` without looking anything up: [`ReadReview::read`]
/// then [`ReadReview::answer`], a binding's Pod labels unknown (so consumer keys are left out of
/// bindings).
pub fn review(
    body: &[u8],
    nodes: &(impl NodeLabels + ?Sized),
    cfg: &MutationConfig,
) -> Result<Reviewed, WebhookError> {
    ReadReview::read(body)?.answer(nodes, cfg, None)
}

#[cfg(test)]
mod tests;
