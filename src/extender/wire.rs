//! The kube-scheduler extender wire format (`k8s.io/kube-scheduler/extender/v1`).
//!
//! The Go structs carry no json tags, so the JSON field names are the Go field names
//! (PascalCase). Pods and nodes are the k8s-openapi types. Only the structs that the filter and
//! prioritize verbs use are modelled.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde::{Deserialize, Serialize};

/// `v1.NodeList`.
pub type NodeList = k8s_openapi::List<Node>;

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
                .map(|l| {
                    l.items
                        .iter()
                        .filter_map(|n| n.metadata.name.clone())
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// The labels of each full Node object in the request (empty in names-only mode).
    pub fn node_labels(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        if let Some(list) = &self.nodes {
            for n in &list.items {
                if let Some(name) = &n.metadata.name {
                    out.insert(name.clone(), n.metadata.labels.clone().unwrap_or_default());
                }
            }
        }
        out
    }
}

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
    /// Node name.
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
            .filter(|n: &&Node| n.metadata.name.as_ref().is_some_and(|m| keep.contains(m)))
            .cloned()
            .collect(),
        metadata: list.metadata.clone(),
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
