//! The kube-scheduler extender wire format (`k8s.io/kube-scheduler/extender/v1`).
//!
//! The Go structs carry no json tags, so the JSON field names are the Go field names
//! (PascalCase). The pod is the k8s-openapi type; Nodes (full-Node mode) are kept as the JSON the
//! scheduler sent, with only their name and labels read ([`WireNode`]). Only the structs that the
//! filter and prioritize verbs use are modelled.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `v1.NodeList` as the extender handles it: each Node kept as the JSON the scheduler sent, with
/// the name and labels read out of it. The Nodes that pass go back verbatim, so no field of a
/// Node is decoded, rebuilt or lost on the way through.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeList {
    /// `apiVersion`, when sent.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    /// `kind`, when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The list's metadata, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Box<RawValue>>,
    /// The Nodes (`null` reads as none).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub items: Vec<WireNode>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<WireNode>, D::Error> {
    Ok(Option::<Vec<WireNode>>::deserialize(d)?.unwrap_or_default())
}

/// One Node of a full-Node request: its JSON, verbatim, and the two fields the extender reads.
#[derive(Debug, Clone)]
pub struct WireNode {
    /// `metadata.name`.
    pub name: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    raw: Box<RawValue>,
}

impl WireNode {
    /// A wire Node from a typed one (tests and tools that build requests).
    pub fn from_node(node: &Node) -> Result<Self, serde_json::Error> {
        let raw = serde_json::value::to_raw_value(node)?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: Box<RawValue>) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Lean {
            #[serde(default)]
            metadata: Option<LeanMeta>,
        }
        #[derive(Deserialize)]
        struct LeanMeta {
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            labels: Option<BTreeMap<String, String>>,
        }
        let lean: Lean = serde_json::from_str(raw.get())?;
        let (name, labels) = lean
            .metadata
            .map(|m| (m.name, m.labels.unwrap_or_default()))
            .unwrap_or_default();
        Ok(Self { name, labels, raw })
    }

    /// The Node as the scheduler sent it.
    pub fn json(&self) -> &str {
        self.raw.get()
    }
}

impl<'de> Deserialize<'de> for WireNode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Self::from_raw(raw).map_err(serde::de::Error::custom)
    }
}

impl Serialize for WireNode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

/// The highest score an extender may return for a host.
pub const MAX_EXTENDER_PRIORITY: i64 = 10;

/// What kube-scheduler sends to `filter` and `prioritize` (its `ExtenderArgs` type).
///
/// With `nodeCacheCapable: true` the scheduler fills `NodeNames`; otherwise it fills `Nodes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtenderRequest {
    /// The pod being scheduled.
    #[serde(rename = "Pod", default)]
    pub pod: Option<Pod>,
    /// Candidate nodes as full objects (`nodeCacheCapable: false`).
    #[serde(rename = "Nodes", default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeList>,
    /// Candidate node names (`nodeCacheCapable: true`).
    #[serde(rename = "NodeNames", default, skip_serializing_if = "Option::is_none")]
    pub node_names: Option<Vec<String>>,
}

impl ExtenderRequest {
    /// The candidate node names, in request order, whichever mode the request uses.
    pub fn candidate_names(&self) -> std::borrow::Cow<'_, [String]> {
        if let Some(names) = &self.node_names {
            return std::borrow::Cow::Borrowed(names.as_slice());
        }
        std::borrow::Cow::Owned(
            self.nodes
                .as_ref()
                .map(|l| l.items.iter().filter_map(|n| n.name.clone()).collect())
                .unwrap_or_default(),
        )
    }

    /// The labels of each full Node object in the request, by node name (empty in names-only
    /// mode).
    pub fn node_labels(&self) -> RequestLabels<'_> {
        let mut out = BTreeMap::new();
        if let Some(list) = &self.nodes {
            for n in &list.items {
                if let Some(name) = &n.name {
                    out.insert(name.as_str(), &n.labels);
                }
            }
        }
        out
    }
}

/// The labels of the Nodes in a full-Node request, by node name, borrowed from the request.
pub type RequestLabels<'a> = BTreeMap<&'a str, &'a BTreeMap<String, String>>;

/// Node name → why it failed.
pub type FailedNodesMap = BTreeMap<String, String>;

/// The answer to `filter`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtenderFilterResult {
    /// Nodes that passed, as full objects (when the request carried `Nodes`).
    #[serde(rename = "Nodes", default)]
    pub nodes: Option<NodeList>,
    /// Nodes that passed, by name (when the request carried `NodeNames`).
    #[serde(rename = "NodeNames", default)]
    pub node_names: Option<Vec<String>>,
    /// Nodes that failed, with a reason; preemption may help.
    #[serde(rename = "FailedNodes", default)]
    pub failed_nodes: FailedNodesMap,
    /// Nodes that failed, with a reason; preemption cannot help.
    #[serde(rename = "FailedAndUnresolvableNodes", default)]
    pub failed_and_unresolvable_nodes: FailedNodesMap,
    /// A request-level error; empty on success.
    #[serde(rename = "Error", default)]
    pub error: String,
}

/// One host's score from `prioritize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPriority {
    /// The node the score is for.
    #[serde(rename = "Host")]
    pub host: String,
    /// Score in `0..=MAX_EXTENDER_PRIORITY`.
    #[serde(rename = "Score")]
    pub score: i64,
}

/// The answer to `prioritize`.
pub type HostPriorityList = Vec<HostPriority>;

/// Keeps only the nodes named in `keep`, in their original order.
pub fn retain_nodes(list: &NodeList, keep: &std::collections::BTreeSet<String>) -> NodeList {
    NodeList {
        items: list
            .items
            .iter()
            .filter(|n| n.name.as_ref().is_some_and(|m| keep.contains(m)))
            .cloned()
            .collect(),
        metadata: list.metadata.clone(),
        api_version: list.api_version.clone(),
        kind: list.kind.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_only_args() {
        let j = r#"{"Pod":{"metadata":{"name":"p","namespace":"ns"}},"Nodes":null,"NodeNames":["a","b"]}"#;
        let a: ExtenderRequest = serde_json::from_str(j).unwrap();
        assert_eq!(a.candidate_names().as_ref(), ["a", "b"]);
        assert!(a.node_labels().is_empty());
    }

    #[test]
    fn parses_full_nodes_args() {
        let j = r#"{"Pod":{"metadata":{"name":"p"}},"Nodes":{"items":[{"metadata":{"name":"a","labels":{"x":"y"}}}]}}"#;
        let a: ExtenderRequest = serde_json::from_str(j).unwrap();
        assert_eq!(a.candidate_names().as_ref(), ["a"]);
        assert_eq!(a.node_labels()["a"]["x"], "y");
    }

    /// Kept Nodes go back byte for byte, fields nodetopo does not model included.
    #[test]
    fn kept_nodes_go_back_verbatim() {
        let node = r#"{"metadata":{"name":"a","labels":{"x":"y"},"uid":"u-1"},"status":{"images":[{"names":["i"],"sizeBytes":1}],"futureField":{"k":[1,2]}}}"#;
        let j = format!(
            r#"{{"Pod":{{}},"Nodes":{{"kind":"NodeList","apiVersion":"v1","metadata":{{"resourceVersion":"7"}},"items":[{node},{{"metadata":{{"name":"b"}}}}]}}}}"#
        );
        let a: ExtenderRequest = serde_json::from_str(&j).unwrap();
        let list = a.nodes.as_ref().unwrap();
        assert!(a.node_labels()["b"].is_empty());
        let kept = retain_nodes(list, &["a".to_string()].into());
        let out = serde_json::to_string(&kept).unwrap();
        assert_eq!(
            out,
            format!(
                r#"{{"apiVersion":"v1","kind":"NodeList","metadata":{{"resourceVersion":"7"}},"items":[{node}]}}"#
            )
        );
        // What kube-scheduler decodes it into.
        let typed: k8s_openapi::List<Node> = serde_json::from_str(&out).unwrap();
        assert_eq!(typed.items[0].metadata.uid.as_deref(), Some("u-1"));
    }

    #[test]
    fn null_and_missing_items_are_no_nodes_and_bad_labels_are_refused() {
        for j in [r#"{"Nodes":{"items":null}}"#, r#"{"Nodes":{}}"#] {
            let a: ExtenderRequest = serde_json::from_str(j).unwrap();
            assert!(a.nodes.unwrap().items.is_empty(), "{j}");
        }
        let err = serde_json::from_str::<ExtenderRequest>(
            r#"{"Nodes":{"items":[{"metadata":{"name":"a","labels":{"x":1}}}]}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        // A Node built in code round-trips through the wire form.
        let n: Node =
            serde_json::from_str(r#"{"metadata":{"name":"c","labels":{"k":"v"}}}"#).unwrap();
        let w = WireNode::from_node(&n).unwrap();
        assert_eq!(
            (w.name.as_deref(), w.labels["k"].as_str()),
            (Some("c"), "v")
        );
    }

    #[test]
    fn filter_result_uses_go_field_names() {
        let r = ExtenderFilterResult {
            node_names: Some(vec!["a".into()]),
            ..Default::default()
        };
        let s = serde_json::to_string(&r).unwrap();
        for k in [
            "\"Nodes\"",
            "\"NodeNames\"",
            "\"FailedNodes\"",
            "\"FailedAndUnresolvableNodes\"",
            "\"Error\"",
        ] {
            assert!(s.contains(k), "{s}");
        }
        let h = serde_json::to_string(&HostPriority {
            host: "a".into(),
            score: 3,
        })
        .unwrap();
        assert_eq!(h, r#"{"Host":"a","Score":3}"#);
    }
}
