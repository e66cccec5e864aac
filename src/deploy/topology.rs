//! Topology objects for the schedulers users already run, built from the level list nodetopo
//! labels.
//!
//! Levels go from broad to narrow: with `--fabric infiniband`, `<prefix>/ib.block` (the spine
//! block) and `<prefix>/ib.su` (the scalable unit); then `<prefix>/nvlink.cluster` (the
//! multi-node NVLink rack), `<prefix>/nvlink.domain` (the clique), an optional block or leaf
//! label the user names, with `--fabric roce` `<prefix>/roce.leaf`, and
//! `kubernetes.io/hostname`. Each scheduler gets the same list in its own object:
//!
//! | scheduler | object |
//! |---|---|
//! | Kueue | `kueue.x-k8s.io/v1beta2` `Topology`, `spec.levels[].nodeLabel` |
//! | KAI | `kai.scheduler/v1alpha1` `Topology`, `spec.levels[].nodeLabel` |
//! | Grove | `grove.io/v1alpha1` `ClusterTopologyBinding`, `spec.levels[].{domain,key}` |
//! | Volcano | the `label` source of HyperNode discovery in the controller's ConfigMap |

use serde_json::{Value, json};

use super::DeployError;
use crate::labels::{DEFAULT_PREFIX, Key, LabelError, LabelKey, is_dns_subdomain, keys::HOSTNAME};

/// The default name of generated objects.
pub const DEFAULT_NAME: &str = "nodetopo";
/// The ConfigMap that Volcano's controller reads its configuration from.
pub const VOLCANO_CONFIGMAP: &str = "volcano-controller-configmap";
/// The namespace Volcano installs into by default.
pub const VOLCANO_NAMESPACE: &str = "volcano-system";
/// The key of Volcano's controller configuration inside its ConfigMap.
pub const VOLCANO_CONFIG_KEY: &str = "volcano-controller.conf";
/// Grove's limit on a level key's length (its CRD's `maxLength`).
pub const GROVE_KEY_MAX: usize = 63;

/// A scheduler that reads topology levels from an object of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheduler {
    /// Kueue topology-aware scheduling.
    Kueue,
    /// NVIDIA KAI Scheduler.
    Kai,
    /// Grove (its `ClusterTopologyBinding`).
    Grove,
    /// Volcano's label-based HyperNode discovery.
    Volcano,
}

/// Which of the agent's fabric placement labels become levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FabricLevels {
    /// None: only the NVLink levels, the block label and the host.
    #[default]
    None,
    /// InfiniBand: `ib.block` and `ib.su` above the NVLink levels.
    Infiniband,
    /// RoCE: `roce.leaf` just above the host.
    Roce,
}

/// What the level list is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelOptions {
    /// The agent's label prefix (`--label-prefix`).
    pub label_prefix: String,
    /// A block or leaf label between the NVLink clique and the host, if the cluster has one.
    pub block_label: Option<String>,
    /// The agent's fabric placement labels to use as levels.
    pub fabric: FabricLevels,
}

impl Default for LevelOptions {
    fn default() -> Self {
        Self {
            label_prefix: DEFAULT_PREFIX.to_string(),
            block_label: None,
            fabric: FabricLevels::None,
        }
    }
}

/// One topology level: a node label key and the Grove domain name it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyLevel {
    /// The node label key.
    pub node_label: String,
    /// Grove's name for the level (`^[a-z][a-z0-9-]*$`).
    pub domain: &'static str,
}

/// The levels, broad to narrow, with every key checked against Kubernetes' label rules.
pub fn levels(opts: &LevelOptions) -> Result<Vec<TopologyLevel>, DeployError> {
    let prefix = opts.label_prefix.trim_end_matches('/');
    if !is_dns_subdomain(prefix) {
        return Err(DeployError::InvalidLabelKey(LabelError::Prefix(
            opts.label_prefix.clone(),
        )));
    }
    let mut out = Vec::new();
    if opts.fabric == FabricLevels::Infiniband {
        out.push(TopologyLevel {
            node_label: Key::IbBlock.under(prefix),
            domain: "block",
        });
        out.push(TopologyLevel {
            node_label: Key::IbSu.under(prefix),
            domain: "su",
        });
    }
    out.push(TopologyLevel {
        node_label: Key::NvlinkCluster.under(prefix),
        domain: "rack",
    });
    out.push(TopologyLevel {
        node_label: Key::NvlinkDomain.under(prefix),
        domain: "clique",
    });
    if let Some(block) = opts.block_label.as_deref().filter(|b| !b.is_empty()) {
        out.push(TopologyLevel {
            node_label: block.to_string(),
            domain: "leaf",
        });
    }
    if opts.fabric == FabricLevels::Roce {
        out.push(TopologyLevel {
            node_label: Key::RoceLeaf.under(prefix),
            domain: "roce-leaf",
        });
    }
    out.push(TopologyLevel {
        node_label: HOSTNAME.to_string(),
        domain: "host",
    });
    for (i, l) in out.iter().enumerate() {
        LabelKey::parse(&l.node_label).map_err(DeployError::InvalidLabelKey)?;
        if out[..i].iter().any(|p| p.node_label == l.node_label) {
            return Err(DeployError::DuplicateLevel(l.node_label.clone()));
        }
    }
    Ok(out)
}

/// The object `scheduler` reads, named `name`, for `levels`.
pub fn topology_object(
    scheduler: Scheduler,
    name: &str,
    levels: &[TopologyLevel],
) -> Result<Value, DeployError> {
    if !is_dns_subdomain(name) {
        return Err(DeployError::InvalidName(name.to_string()));
    }
    let labels = json!({ "app.kubernetes.io/managed-by": "nodetopo" });
    let node_labels: Vec<Value> = levels
        .iter()
        .map(|l| json!({ "nodeLabel": l.node_label }))
        .collect();
    Ok(match scheduler {
        Scheduler::Kueue => json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "Topology",
            "metadata": { "name": name, "labels": labels },
            "spec": { "levels": node_labels },
        }),
        Scheduler::Kai => json!({
            "apiVersion": "kai.scheduler/v1alpha1",
            "kind": "Topology",
            "metadata": { "name": name, "labels": labels },
            "spec": { "levels": node_labels },
        }),
        Scheduler::Grove => {
            if let Some(l) = levels.iter().find(|l| l.node_label.len() > GROVE_KEY_MAX) {
                return Err(DeployError::KeyTooLong {
                    key: l.node_label.clone(),
                    len: l.node_label.len(),
                    project: "Grove",
                    max: GROVE_KEY_MAX,
                });
            }
            let grove_levels: Vec<Value> = levels
                .iter()
                .map(|l| json!({ "domain": l.domain, "key": l.node_label }))
                .collect();
            json!({
                "apiVersion": "grove.io/v1alpha1",
                "kind": "ClusterTopologyBinding",
                "metadata": { "name": name, "labels": labels },
                "spec": { "levels": grove_levels },
            })
        }
        Scheduler::Volcano => {
            let config = json!({
                "networkTopologyDiscovery": [{
                    "source": "label",
                    "enabled": true,
                    "interval": "10m",
                    "config": { "networkTopologyTypes": { name: node_labels } },
                }],
            });
            let text = serde_yaml_ng::to_string(&config).expect("JSON values always serialize");
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": VOLCANO_CONFIGMAP,
                    "namespace": VOLCANO_NAMESPACE,
                    "labels": labels,
                },
                "data": { VOLCANO_CONFIG_KEY: text },
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        k.sort_unstable();
        k
    }

    fn default_levels() -> Vec<TopologyLevel> {
        levels(&LevelOptions::default()).unwrap()
    }

    #[test]
    fn levels_broad_to_narrow() {
        let l = default_levels();
        let keys: Vec<&str> = l.iter().map(|l| l.node_label.as_str()).collect();
        assert_eq!(
            keys,
            [
                "nodetopo.io/nvlink.cluster",
                "nodetopo.io/nvlink.domain",
                "kubernetes.io/hostname"
            ]
        );
        let with_block = levels(&LevelOptions {
            label_prefix: "example.com/".into(),
            block_label: Some("network.example.com/leaf".into()),
            fabric: FabricLevels::None,
        })
        .unwrap();
        let ib = levels(&LevelOptions {
            fabric: FabricLevels::Infiniband,
            ..LevelOptions::default()
        })
        .unwrap();
        let keys: Vec<&str> = ib.iter().map(|l| l.node_label.as_str()).collect();
        assert_eq!(
            keys,
            [
                "nodetopo.io/ib.block",
                "nodetopo.io/ib.su",
                "nodetopo.io/nvlink.cluster",
                "nodetopo.io/nvlink.domain",
                "kubernetes.io/hostname"
            ]
        );
        let roce = levels(&LevelOptions {
            block_label: Some("network.example.com/leaf".into()),
            fabric: FabricLevels::Roce,
            ..LevelOptions::default()
        })
        .unwrap();
        assert_eq!(roce[3].node_label, "nodetopo.io/roce.leaf");
        assert_eq!(roce[4].node_label, HOSTNAME);
        let domains: Vec<&str> = roce.iter().map(|l| l.domain).collect();
        let mut distinct = domains.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), domains.len(), "{domains:?}");
        assert_eq!(with_block.len(), 4);
        assert_eq!(with_block[0].node_label, "example.com/nvlink.cluster");
        assert_eq!(with_block[2].node_label, "network.example.com/leaf");
        assert_eq!(with_block[3].node_label, HOSTNAME);
    }

    #[test]
    fn bad_options_rejected() {
        let bad_prefix = LevelOptions {
            label_prefix: "Not A Prefix".into(),
            ..LevelOptions::default()
        };
        assert!(levels(&bad_prefix).is_err());
        let bad_block = LevelOptions {
            block_label: Some("leaf label".into()),
            ..LevelOptions::default()
        };
        assert!(levels(&bad_block).is_err());
        let dup = LevelOptions {
            block_label: Some(HOSTNAME.into()),
            ..LevelOptions::default()
        };
        assert!(levels(&dup).is_err());
        assert_eq!(
            topology_object(Scheduler::Kueue, "Bad_Name", &default_levels()),
            Err(DeployError::InvalidName("Bad_Name".into()))
        );
    }

    // Field names below are those of each project's published CRD (facts, not copies):
    // Kueue `Topology` v1beta2 and KAI `Topology` v1alpha1 have `spec.levels[].nodeLabel`;
    // Grove's `ClusterTopologyBinding` has `spec.levels[].domain` (pattern `^[a-z][a-z0-9-]*$`)
    // and `spec.levels[].key` (a label key of at most 63 characters).

    #[test]
    fn kueue_fields() {
        let v = topology_object(Scheduler::Kueue, "nodetopo", &default_levels()).unwrap();
        assert_eq!(v["apiVersion"], "kueue.x-k8s.io/v1beta2");
        assert_eq!(v["kind"], "Topology");
        assert_eq!(keys(&v["spec"]), ["levels"]);
        for l in v["spec"]["levels"].as_array().unwrap() {
            assert_eq!(keys(l), ["nodeLabel"]);
        }
        assert_eq!(v["spec"]["levels"][2]["nodeLabel"], HOSTNAME);
        assert!(v["metadata"].get("namespace").is_none(), "cluster-scoped");
    }

    #[test]
    fn kai_fields() {
        let v = topology_object(Scheduler::Kai, "gb200", &default_levels()).unwrap();
        assert_eq!(v["apiVersion"], "kai.scheduler/v1alpha1");
        assert_eq!(v["kind"], "Topology");
        assert_eq!(v["metadata"]["name"], "gb200");
        assert_eq!(keys(&v["spec"]), ["levels"]);
        let levels = v["spec"]["levels"].as_array().unwrap();
        assert_eq!(levels.len(), 3);
        for l in levels {
            assert_eq!(keys(l), ["nodeLabel"]);
        }
        assert!(v["metadata"].get("namespace").is_none(), "cluster-scoped");
    }

    #[test]
    fn grove_fields() {
        let lv = levels(&LevelOptions {
            block_label: Some("network.example.com/leaf".into()),
            ..LevelOptions::default()
        })
        .unwrap();
        let v = topology_object(Scheduler::Grove, "nodetopo", &lv).unwrap();
        assert_eq!(v["apiVersion"], "grove.io/v1alpha1");
        assert_eq!(v["kind"], "ClusterTopologyBinding");
        assert_eq!(keys(&v["spec"]), ["levels"]);
        let levels = v["spec"]["levels"].as_array().unwrap();
        let domains: Vec<&str> = levels
            .iter()
            .map(|l| l["domain"].as_str().unwrap())
            .collect();
        assert_eq!(domains, ["rack", "clique", "leaf", "host"]);
        for l in levels {
            assert_eq!(keys(l), ["domain", "key"]);
            let d = l["domain"].as_str().unwrap();
            assert!(d.starts_with(|c: char| c.is_ascii_lowercase()));
            assert!(
                d.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
            let k = l["key"].as_str().unwrap();
            assert!(k.len() <= GROVE_KEY_MAX);
            LabelKey::parse(k).unwrap();
        }
        let long = levels_with_prefix(&format!("{}.example.com", "a".repeat(50)));
        assert!(matches!(
            topology_object(Scheduler::Grove, "nodetopo", &long),
            Err(DeployError::KeyTooLong { .. })
        ));
    }

    fn levels_with_prefix(prefix: &str) -> Vec<TopologyLevel> {
        levels(&LevelOptions {
            label_prefix: prefix.into(),
            ..LevelOptions::default()
        })
        .unwrap()
    }

    #[test]
    fn volcano_config() {
        let v = topology_object(Scheduler::Volcano, "nodetopo", &default_levels()).unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "ConfigMap");
        assert_eq!(v["metadata"]["name"], VOLCANO_CONFIGMAP);
        assert_eq!(v["metadata"]["namespace"], VOLCANO_NAMESPACE);
        let text = v["data"][VOLCANO_CONFIG_KEY].as_str().unwrap();
        let conf: Value = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(keys(&conf), ["networkTopologyDiscovery"]);
        let source = &conf["networkTopologyDiscovery"][0];
        assert_eq!(keys(source), ["config", "enabled", "interval", "source"]);
        assert_eq!(source["source"], "label");
        assert_eq!(source["enabled"], true);
        let types = &source["config"]["networkTopologyTypes"];
        let list = types["nodetopo"].as_array().unwrap();
        for l in list {
            assert_eq!(keys(l), ["nodeLabel"]);
        }
        // Volcano builds HyperNodes bottom-up and needs the host label last.
        assert_eq!(list.last().unwrap()["nodeLabel"], HOSTNAME);
    }
}
