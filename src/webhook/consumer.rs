//! Consumer keys: Node facts written on the Pod under the keys another program reads from its
//! own Pod, opt-in per consumer.
//!
//! - **llm-d** (its router's topology extractor reads the Pod's labels, with no Node access):
//!   `kubernetes.io/hostname` (the Node's hostname label, else its name) and
//!   `topology.kubernetes.io/rack` from a source the operator chooses (`rack=`, default the
//!   NVLink clique). Zone and region are left to Kubernetes' own `PodTopologyLabels` admission.
//! - **Dynamo** (its operator projects `nvidia.com/dynamo-topology.<domain>` Pod labels into
//!   files that the worker waits for): one key per domain, with nodetopo's Grove domain names by
//!   default (`block`, `su`, `rack`, `clique`, `roce-leaf`, `host`) plus `zone` and `region`;
//!   `DOMAIN=SOURCE` adds or changes one, `DOMAIN=none` drops one.
//! - **`--pod-key POD_KEY=SOURCE`**: any other key.
//!
//! A consumer key that the Pod already carries with another value is the user's: it is kept,
//! never overwritten, and reported ([`super::mutate::Kept`]). Parsing and the decision are pure.

use std::collections::BTreeMap;

use super::WebhookError;
use crate::labels::{
    Key, LabelKey, LabelValue,
    keys::{DYNAMO_TOPOLOGY_PREFIX, HOSTNAME, RACK, REGION, ZONE},
};

/// Who reads a consumer key, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Consumer {
    /// llm-d's router (`--consumer llm-d`).
    LlmD,
    /// NVIDIA Dynamo (`--consumer dynamo`).
    Dynamo,
    /// A key of the operator's own (`--pod-key`).
    PodKey,
}

impl Consumer {
    /// `llm-d`, `dynamo` or `pod-key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LlmD => "llm-d",
            Self::Dynamo => "dynamo",
            Self::PodKey => "pod-key",
        }
    }
}

/// Where a consumer key's value comes from: the first of `labels` that the Node has, else,
/// when `node_name` is set, the Node's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Node label keys, in order of preference.
    pub labels: Vec<String>,
    /// Fall back to the Node's name.
    pub node_name: bool,
}

impl Source {
    /// Parses a source: `nvlink-domain` (the clique), `nvlink-cluster`, `leaf` (the InfiniBand
    /// leaf, else the RoCE leaf), `host` (the hostname label, else the Node's name), or a Node
    /// label key. Named sources are under the agent's label prefix `prefix`.
    pub fn parse(s: &str, prefix: &str) -> Result<Self, WebhookError> {
        let under = |k: Key| k.label_key(prefix).map(|k| k.to_string());
        let (labels, node_name) = match s.trim() {
            "nvlink-domain" => (vec![under(Key::NvlinkDomain)?], false),
            "nvlink-cluster" => (vec![under(Key::NvlinkCluster)?], false),
            "leaf" => (vec![under(Key::IbLeaf)?, under(Key::RoceLeaf)?], false),
            "host" => (vec![HOSTNAME.to_string()], true),
            "" => return Err(WebhookError::Consumer(s.to_string(), "an empty source")),
            key => (vec![LabelKey::parse(key)?.to_string()], false),
        };
        Ok(Self { labels, node_name })
    }

    fn label(key: &str) -> Self {
        Self {
            labels: vec![key.to_string()],
            node_name: false,
        }
    }

    /// The value for Node `node` with `labels`, if there is one.
    pub fn value<'a>(
        &'a self,
        node: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> Option<&'a str> {
        self.labels
            .iter()
            .find_map(|k| labels.get(k).map(String::as_str))
            // A Node name can be longer than a label value may be (253 characters against 63):
            // such a name is no value, since a Binding with it would be refused.
            .or_else(|| (self.node_name && LabelValue::new(node).is_ok()).then_some(node))
            .filter(|v| !v.is_empty())
    }
}

/// One consumer key: who reads it, the key on the Pod and where its value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRule {
    /// Who reads it.
    pub consumer: Consumer,
    /// The key on the Pod (and the Binding).
    pub pod_key: String,
    /// Where the value comes from.
    pub source: Source,
}

/// The llm-d rack source when `rack=` is not given: the NVLink clique, the set of GPUs that a
/// KV-cache transfer can cross over NVLink.
pub const LLM_D_DEFAULT_RACK: &str = "nvlink-domain";

/// Dynamo's domains by default: nodetopo's Grove domain names (`manifests topology --for grove`)
/// and Kubernetes' zone and region.
fn dynamo_defaults(prefix: &str) -> Result<Vec<(String, Source)>, WebhookError> {
    let under = |k: Key| -> Result<Source, WebhookError> {
        Ok(Source::label(&k.label_key(prefix)?.to_string()))
    };
    Ok(vec![
        ("region".to_string(), Source::label(REGION)),
        ("zone".to_string(), Source::label(ZONE)),
        ("block".to_string(), under(Key::IbBlock)?),
        ("su".to_string(), under(Key::IbSu)?),
        ("rack".to_string(), under(Key::NvlinkCluster)?),
        ("clique".to_string(), under(Key::NvlinkDomain)?),
        ("roce-leaf".to_string(), under(Key::RoceLeaf)?),
        ("host".to_string(), Source::parse("host", prefix)?),
    ])
}

/// A Dynamo domain name as its operator spells it: `[a-z][a-z0-9-]*`.
fn is_domain(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_lowercase())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// Parses one `--consumer NAME[:OPTION=VALUE,...]` into its rules, sources under `prefix`.
///
/// - `llm-d[:rack=SOURCE]`;
/// - `dynamo[:DOMAIN=SOURCE|none,...]`.
pub fn parse_consumer(spec: &str, prefix: &str) -> Result<Vec<ConsumerRule>, WebhookError> {
    let bad = |why: &'static str| WebhookError::Consumer(spec.to_string(), why);
    let (name, opts) = match spec.trim().split_once(':') {
        Some((n, o)) => (n.trim(), o),
        None => (spec.trim(), ""),
    };
    let mut options = Vec::new();
    for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let (k, v) = opt
            .split_once('=')
            .ok_or_else(|| bad("an option without `=`"))?;
        options.push((k.trim(), v.trim()));
    }
    match name {
        "llm-d" => {
            let mut rack = LLM_D_DEFAULT_RACK;
            for (k, v) in options {
                match k {
                    "rack" => rack = v,
                    _ => return Err(bad("an option llm-d does not have (it has rack=)")),
                }
            }
            Ok(vec![
                ConsumerRule {
                    consumer: Consumer::LlmD,
                    pod_key: HOSTNAME.to_string(),
                    source: Source::parse("host", prefix)?,
                },
                ConsumerRule {
                    consumer: Consumer::LlmD,
                    pod_key: RACK.to_string(),
                    source: Source::parse(rack, prefix)?,
                },
            ])
        }
        "dynamo" => {
            let mut domains = dynamo_defaults(prefix)?;
            for (domain, v) in options {
                if !is_domain(domain) {
                    return Err(bad("a Dynamo domain that is not [a-z][a-z0-9-]*"));
                }
                domains.retain(|(d, _)| d != domain);
                if v != "none" {
                    domains.push((domain.to_string(), Source::parse(v, prefix)?));
                }
            }
            domains
                .into_iter()
                .map(|(domain, source)| {
                    let pod_key = LabelKey::parse(&format!("{DYNAMO_TOPOLOGY_PREFIX}{domain}"))?;
                    Ok::<_, WebhookError>(ConsumerRule {
                        consumer: Consumer::Dynamo,
                        pod_key: pod_key.to_string(),
                        source,
                    })
                })
                .collect()
        }
        _ => Err(bad("an unknown consumer (llm-d or dynamo)")),
    }
}

/// Parses one `--pod-key POD_KEY=SOURCE`.
pub fn parse_pod_key(spec: &str, prefix: &str) -> Result<ConsumerRule, WebhookError> {
    let (pod_key, source) = spec
        .split_once('=')
        .ok_or_else(|| WebhookError::Consumer(spec.to_string(), "no `=` between the two keys"))?;
    Ok(ConsumerRule {
        consumer: Consumer::PodKey,
        pod_key: LabelKey::parse(pod_key.trim())?.to_string(),
        source: Source::parse(source, prefix)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::DEFAULT_PREFIX;

    fn keys(rules: &[ConsumerRule]) -> Vec<(&str, Vec<&str>, bool)> {
        rules
            .iter()
            .map(|r| {
                (
                    r.pod_key.as_str(),
                    r.source.labels.iter().map(String::as_str).collect(),
                    r.source.node_name,
                )
            })
            .collect()
    }

    #[test]
    fn llm_d_gets_the_host_and_a_rack_of_the_operators_choice() {
        let r = parse_consumer("llm-d", DEFAULT_PREFIX).unwrap();
        assert_eq!(
            keys(&r),
            [
                (
                    "kubernetes.io/hostname",
                    vec!["kubernetes.io/hostname"],
                    true
                ),
                (
                    "topology.kubernetes.io/rack",
                    vec!["nodetopo.io/nvlink.domain"],
                    false
                ),
            ]
        );
        assert!(r.iter().all(|r| r.consumer == Consumer::LlmD));
        let leaf = parse_consumer("llm-d:rack=leaf", "topo.example.com").unwrap();
        assert_eq!(
            leaf[1].source.labels,
            ["topo.example.com/ib.leaf", "topo.example.com/roce.leaf"]
        );
        let cluster = parse_consumer(" llm-d : rack = nvlink-cluster ", DEFAULT_PREFIX).unwrap();
        assert_eq!(cluster[1].source.labels, ["nodetopo.io/nvlink.cluster"]);
        let own = parse_consumer("llm-d:rack=network.example.com/leaf", DEFAULT_PREFIX).unwrap();
        assert_eq!(own[1].source.labels, ["network.example.com/leaf"]);
    }

    #[test]
    fn dynamo_gets_nodetopos_grove_domains_and_options_change_them() {
        let r = parse_consumer("dynamo", DEFAULT_PREFIX).unwrap();
        let got: Vec<(&str, &str)> = r
            .iter()
            .map(|r| (r.pod_key.as_str(), r.source.labels[0].as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "nvidia.com/dynamo-topology.region",
                    "topology.kubernetes.io/region"
                ),
                (
                    "nvidia.com/dynamo-topology.zone",
                    "topology.kubernetes.io/zone"
                ),
                ("nvidia.com/dynamo-topology.block", "nodetopo.io/ib.block"),
                ("nvidia.com/dynamo-topology.su", "nodetopo.io/ib.su"),
                (
                    "nvidia.com/dynamo-topology.rack",
                    "nodetopo.io/nvlink.cluster"
                ),
                (
                    "nvidia.com/dynamo-topology.clique",
                    "nodetopo.io/nvlink.domain"
                ),
                (
                    "nvidia.com/dynamo-topology.roce-leaf",
                    "nodetopo.io/roce.leaf"
                ),
                ("nvidia.com/dynamo-topology.host", "kubernetes.io/hostname"),
            ]
        );
        assert!(r[7].source.node_name, "host falls back to the Node's name");
        let r = parse_consumer(
            "dynamo:rack=nvlink-domain,clique=none,leaf=network.example.com/leaf",
            DEFAULT_PREFIX,
        )
        .unwrap();
        let rack = r
            .iter()
            .find(|r| r.pod_key == "nvidia.com/dynamo-topology.rack")
            .unwrap();
        assert_eq!(rack.source.labels, ["nodetopo.io/nvlink.domain"]);
        assert!(!r.iter().any(|r| r.pod_key.ends_with(".clique")));
        assert_eq!(r.last().unwrap().pod_key, "nvidia.com/dynamo-topology.leaf");
    }

    #[test]
    fn bad_specs_are_errors_that_say_why() {
        for (spec, why) in [
            ("vllm", "an unknown consumer"),
            ("llm-d:zone=leaf", "an option llm-d does not have"),
            ("llm-d:rack", "an option without"),
            ("dynamo:Rack=leaf", "a Dynamo domain"),
            ("llm-d:rack=", "an empty source"),
        ] {
            let e = parse_consumer(spec, DEFAULT_PREFIX).unwrap_err();
            assert!(e.to_string().contains(why), "{spec}: {e}");
        }
        assert!(matches!(
            parse_consumer("llm-d:rack=a/b/c", DEFAULT_PREFIX),
            Err(WebhookError::Label(_))
        ));
        // The domain makes the key's name part too long.
        let long = format!("dynamo:{}=leaf", "d".repeat(60));
        assert!(matches!(
            parse_consumer(&long, DEFAULT_PREFIX),
            Err(WebhookError::Label(_))
        ));
    }

    #[test]
    fn pod_keys_take_a_key_or_a_named_source() {
        let r = parse_pod_key("example.com/rack=leaf", DEFAULT_PREFIX).unwrap();
        assert_eq!(r.consumer, Consumer::PodKey);
        assert_eq!(r.pod_key, "example.com/rack");
        assert_eq!(r.source.labels.len(), 2);
        let r =
            parse_pod_key("example.com/block=fabric.example.com/block", DEFAULT_PREFIX).unwrap();
        assert_eq!(r.source.labels, ["fabric.example.com/block"]);
        assert!(parse_pod_key("example.com/rack", DEFAULT_PREFIX).is_err());
        assert!(parse_pod_key("bad key=leaf", DEFAULT_PREFIX).is_err());
    }

    #[test]
    fn a_source_takes_the_first_label_then_the_node_name() {
        let labels: BTreeMap<String, String> = [
            ("nodetopo.io/roce.leaf".to_string(), "sw-1".to_string()),
            ("empty.example.com/x".to_string(), String::new()),
        ]
        .into_iter()
        .collect();
        let leaf = Source::parse("leaf", DEFAULT_PREFIX).unwrap();
        assert_eq!(leaf.value("n1", &labels), Some("sw-1"));
        let host = Source::parse("host", DEFAULT_PREFIX).unwrap();
        assert_eq!(host.value("n1", &labels), Some("n1"));
        let mut named = labels.clone();
        named.insert(HOSTNAME.to_string(), "n1.example.com".to_string());
        assert_eq!(host.value("n1", &named), Some("n1.example.com"));
        let long = format!("{}.example.com", "n".repeat(60));
        assert_eq!(
            host.value(&long, &labels),
            None,
            "too long for a label value"
        );
        let clique = Source::parse("nvlink-domain", DEFAULT_PREFIX).unwrap();
        assert_eq!(clique.value("n1", &labels), None);
        let empty = Source::parse("empty.example.com/x", DEFAULT_PREFIX).unwrap();
        assert_eq!(
            empty.value("n1", &labels),
            None,
            "an empty value is no value"
        );
    }
}
