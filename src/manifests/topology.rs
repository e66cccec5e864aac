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
//!
//! Two schedulers need more than the list:
//!
//! - Grove's KAI backend creates a KAI `Topology` named after the binding, owns it, and stops at
//!   start-up when a `Topology` of that name has another owner. The binding's default name
//!   ([`GROVE_DEFAULT_NAME`]) therefore differs from the KAI object's ([`DEFAULT_NAME`]), and
//!   [`ObjectOptions::kai_topology`] binds Grove to nodetopo's KAI object instead
//!   (`spec.schedulerTopologyBindings`), so that Grove only checks it for drift.
//! - Volcano's label discovery walks each topology type's labels from the narrowest up and stops
//!   at the first one a node lacks, and it shares one HyperNode per label value among all types.
//!   One chain of every level would leave HGX nodes (no `nvlink.domain`) out of every HyperNode,
//!   fabric levels included; chains that repeat a label at different depths would give one
//!   HyperNode members of two kinds. So each family of levels whose labels come and go together
//!   gets a type of its own (see [`volcano_types`]).

use serde_json::{Value, json};

use super::DeployError;
use crate::labels::{DEFAULT_PREFIX, Key, LabelError, LabelKey, is_dns_subdomain, keys::HOSTNAME};

/// The default name of generated objects (for Volcano: the prefix of its topology types).
pub const DEFAULT_NAME: &str = "nodetopo";
/// The default name of Grove's `ClusterTopologyBinding`. Grove's KAI backend creates a KAI
/// `Topology` of the binding's name and refuses to start while another owner holds that name, so
/// it must not be [`DEFAULT_NAME`], the KAI object's default.
pub const GROVE_DEFAULT_NAME: &str = "nodetopo-grove";
/// Grove's name for its KAI scheduler backend (`schedulerTopologyBindings[].schedulerName`).
pub const GROVE_KAI_BACKEND: &str = "kai-scheduler";
/// Volcano's limit on a network topology type's name: label discovery skips a longer one.
pub const VOLCANO_TYPE_MAX: usize = 20;
/// The ConfigMap that Volcano's controller reads its configuration from.
pub const VOLCANO_CONFIGMAP: &str = "volcano-controller-configmap";
/// The namespace Volcano installs into by default.
pub const VOLCANO_NAMESPACE: &str = "volcano-system";
/// The key of Volcano's controller configuration inside its ConfigMap.
pub const VOLCANO_CONFIG_KEY: &str = "volcano-controller.conf";
/// Grove's limit on a level key's length (its CRD's `maxLength`).
pub const GROVE_KEY_MAX: usize = 63;

/// A scheduler that reads topology levels from an object of its own.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::EnumMessage,
)]
#[strum(serialize_all = "kebab-case")]
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

impl Scheduler {
    /// The name an object gets when none is given.
    pub fn default_name(self) -> &'static str {
        match self {
            Self::Grove => GROVE_DEFAULT_NAME,
            Self::Kueue | Self::Kai | Self::Volcano => DEFAULT_NAME,
        }
    }

    /// The project's own spelling, for messages.
    fn product_name(self) -> &'static str {
        match self {
            Self::Kueue => "Kueue",
            Self::Kai => "KAI",
            Self::Grove => "Grove",
            Self::Volcano => "Volcano",
        }
    }
}

/// What a generated object says beyond its levels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectOptions {
    /// Grove only: the KAI `Topology` (nodetopo's own, from [`Scheduler::Kai`]) that Grove's KAI
    /// backend uses. Grove then only checks it for drift against the binding's levels, where it
    /// would otherwise create and own a `Topology` named after the binding.
    pub kai_topology: Option<String>,
    /// Volcano only: how the levels become topology types.
    pub volcano_types: VolcanoTypes,
}

/// How Volcano's label discovery gets the levels.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::EnumMessage,
)]
#[strum(serialize_all = "kebab-case")]
pub enum VolcanoTypes {
    /// A type per family of levels (`<name>-nvlink`, `<name>-ib`, `<name>-leaf`,
    /// `<name>-roce`): every node is in the HyperNodes of the labels it carries, and tiers are
    /// counted within each type.
    #[default]
    PerFamily,
    /// One type `<name>` of every level: one tree with a tier per level, but a node lacking a
    /// level (an HGX node's `nvlink.domain`) is in no HyperNode at all, for clusters where every
    /// node carries every level.
    Single,
}

/// Which of the agent's fabric placement labels become levels.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::EnumMessage,
)]
#[strum(serialize_all = "kebab-case")]
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
    topology_object_with(scheduler, name, levels, &ObjectOptions::default())
}

/// [`topology_object`] with the options that only some schedulers' objects have.
pub fn topology_object_with(
    scheduler: Scheduler,
    name: &str,
    levels: &[TopologyLevel],
    opts: &ObjectOptions,
) -> Result<Value, DeployError> {
    check_options(scheduler, name, opts)?;
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
        Scheduler::Grove => grove_binding(name, levels, opts, labels)?,
        Scheduler::Volcano => volcano_config(name, levels, opts, labels)?,
    })
}

/// The name is a DNS subdomain, and each option is given only for the scheduler that reads it.
fn check_options(
    scheduler: Scheduler,
    name: &str,
    opts: &ObjectOptions,
) -> Result<(), DeployError> {
    if !is_dns_subdomain(name) {
        return Err(DeployError::InvalidName(name.to_string()));
    }
    if let Some(kai) = &opts.kai_topology {
        if scheduler != Scheduler::Grove {
            return Err(DeployError::NotForScheduler {
                option: "a KAI Topology binding",
                only: "Grove's ClusterTopologyBinding",
                scheduler: scheduler.product_name(),
            });
        }
        if !is_dns_subdomain(kai) {
            return Err(DeployError::InvalidName(kai.clone()));
        }
    }
    if opts.volcano_types != VolcanoTypes::default() && scheduler != Scheduler::Volcano {
        return Err(DeployError::NotForScheduler {
            option: "the Volcano type layout",
            only: "Volcano's discovery configuration",
            scheduler: scheduler.product_name(),
        });
    }
    Ok(())
}

/// Grove's `ClusterTopologyBinding`: a domain and key per level (each key within Grove's
/// length limit), and the KAI Topology it binds to, if any.
fn grove_binding(
    name: &str,
    levels: &[TopologyLevel],
    opts: &ObjectOptions,
    labels: Value,
) -> Result<Value, DeployError> {
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
    let mut spec = json!({ "levels": grove_levels });
    if let Some(kai) = &opts.kai_topology {
        spec["schedulerTopologyBindings"] = json!([{
            "schedulerName": GROVE_KAI_BACKEND,
            "topologyReference": kai,
        }]);
    }
    Ok(json!({
        "apiVersion": "grove.io/v1alpha1",
        "kind": "ClusterTopologyBinding",
        "metadata": { "name": name, "labels": labels },
        "spec": spec,
    }))
}

/// Volcano's controller ConfigMap: label discovery of the levels as its topology types.
fn volcano_config(
    name: &str,
    levels: &[TopologyLevel],
    opts: &ObjectOptions,
    labels: Value,
) -> Result<Value, DeployError> {
    let types: serde_json::Map<String, Value> = volcano_types(name, levels, opts.volcano_types)?
        .into_iter()
        .map(|(t, chain)| {
            let list = chain
                .iter()
                .map(|l| json!({ "nodeLabel": l.node_label }))
                .collect();
            (t, Value::Array(list))
        })
        .collect();
    let config = json!({
        "networkTopologyDiscovery": [{
            "source": "label",
            "enabled": true,
            "interval": "10m",
            "config": { "networkTopologyTypes": types },
        }],
    });
    let text = serde_yaml_ng::to_string(&config).expect("JSON values always serialize");
    Ok(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": VOLCANO_CONFIGMAP,
            "namespace": VOLCANO_NAMESPACE,
            "labels": labels,
        },
        "data": { VOLCANO_CONFIG_KEY: text },
    }))
}

/// The family a level belongs to: labels of one family come and go together, narrow before
/// broad (a node with `nvlink.domain` has `nvlink.cluster`, one with `ib.block` has `ib.su`).
fn family(level: &TopologyLevel) -> &'static str {
    match level.domain {
        "block" | "su" => "ib",
        "rack" | "clique" => "nvlink",
        "roce-leaf" => "roce",
        other => other,
    }
}

/// Volcano's topology types for `levels`: one per family of levels, named `<name>-<family>`
/// (`nvlink`, `ib`, `leaf` for the block label, `roce`), each broad to narrow and ending with the
/// host level, which Volcano requires last and does not read.
///
/// A node then lands in the HyperNodes of every family whose narrowest label it carries: an HGX
/// node in its InfiniBand unit and its leaf although it has no NVLink levels, a GB200 tray whose
/// fabric is not ready (no `nvlink.domain`) in its fabric levels but in no NVLink HyperNode. Each
/// label key sits in exactly one type, so no HyperNode gets members of two depths. Tiers are
/// numbered within a type: tier 1 is the clique, the scalable unit and the leaf alike.
///
/// Refuses a type name that Volcano would skip (longer than [`VOLCANO_TYPE_MAX`]).
///
/// With [`VolcanoTypes::Single`], one type named `name` of every level instead.
pub fn volcano_types<'a>(
    name: &str,
    levels: &'a [TopologyLevel],
    layout: VolcanoTypes,
) -> Result<Vec<(String, Vec<&'a TopologyLevel>)>, DeployError> {
    let Some((host, above)) = levels
        .split_last()
        .filter(|(h, _)| h.node_label == HOSTNAME)
    else {
        return Err(DeployError::HostNotLast);
    };
    let mut types: Vec<(String, Vec<&TopologyLevel>)> = Vec::new();
    for level in above {
        let type_name = match layout {
            VolcanoTypes::PerFamily => format!("{name}-{}", family(level)),
            VolcanoTypes::Single => name.to_string(),
        };
        match types.iter_mut().find(|(t, _)| *t == type_name) {
            Some((_, chain)) => chain.push(level),
            None => types.push((type_name, vec![level])),
        }
    }
    for (type_name, chain) in &mut types {
        if type_name.len() > VOLCANO_TYPE_MAX {
            return Err(DeployError::NameTooLong {
                what: "Volcano network topology type",
                name: type_name.clone(),
                len: type_name.len(),
                project: "Volcano",
                max: VOLCANO_TYPE_MAX,
            });
        }
        chain.push(host);
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

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
    fn grove_and_kai_defaults_do_not_collide() {
        // Grove's KAI backend creates a KAI Topology named after each binding that lists no
        // `kai-scheduler` entry in `spec.schedulerTopologyBindings`, and exits at start-up when a
        // Topology of that name has another owner (Grove's operator/internal/scheduler/kai).
        let lv = default_levels();
        let kai = topology_object(Scheduler::Kai, Scheduler::Kai.default_name(), &lv).unwrap();
        let grove =
            topology_object(Scheduler::Grove, Scheduler::Grove.default_name(), &lv).unwrap();
        assert!(grove["spec"].get("schedulerTopologyBindings").is_none());
        let grove_owned = &grove["metadata"]["name"];
        assert_ne!(
            grove_owned, &kai["metadata"]["name"],
            "Grove would not start"
        );
        assert_eq!(Scheduler::Grove.default_name(), GROVE_DEFAULT_NAME);
        for s in [Scheduler::Kueue, Scheduler::Kai, Scheduler::Volcano] {
            assert_eq!(s.default_name(), DEFAULT_NAME);
        }
    }

    #[test]
    fn grove_binds_nodetopo_kai_topology() {
        let lv = levels(&LevelOptions {
            fabric: FabricLevels::Infiniband,
            ..LevelOptions::default()
        })
        .unwrap();
        let kai = topology_object(Scheduler::Kai, "nodetopo", &lv).unwrap();
        let bound = ObjectOptions {
            kai_topology: Some("nodetopo".into()),
            ..ObjectOptions::default()
        };
        // The same name as the KAI object is fine once bound: Grove leaves a bound Topology
        // alone and only compares its levels with the binding's.
        let grove = topology_object_with(Scheduler::Grove, "nodetopo", &lv, &bound).unwrap();
        assert_eq!(
            keys(&grove["spec"]),
            ["levels", "schedulerTopologyBindings"]
        );
        assert_eq!(
            grove["spec"]["schedulerTopologyBindings"],
            json!([{ "schedulerName": "kai-scheduler", "topologyReference": "nodetopo" }])
        );
        // Grove's drift check: the KAI levels' nodeLabel, in order, equal the binding's keys.
        let kai_labels: Vec<&Value> = kai["spec"]["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l["nodeLabel"])
            .collect();
        let grove_keys: Vec<&Value> = grove["spec"]["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l["key"])
            .collect();
        assert_eq!(kai_labels, grove_keys);

        for s in [Scheduler::Kueue, Scheduler::Kai, Scheduler::Volcano] {
            let err = topology_object_with(s, "nodetopo", &lv, &bound).unwrap_err();
            assert!(
                matches!(err, DeployError::NotForScheduler { .. }),
                "{s:?}: {err}"
            );
            assert!(err.to_string().contains("only to Grove"), "{err}");
        }
        let bad = ObjectOptions {
            kai_topology: Some("Not_A_Name".into()),
            ..ObjectOptions::default()
        };
        assert_eq!(
            topology_object_with(Scheduler::Grove, "nodetopo", &lv, &bad),
            Err(DeployError::InvalidName("Not_A_Name".into()))
        );
    }

    /// A model of Volcano's label discovery, after its `label` discoverer: each type's labels
    /// without the last one (the host, never read), narrowest first; for every node and type,
    /// walk up while the node carries the label; one HyperNode per label key and value, shared
    /// by every type; its tier is the label's position in the type; its member is the node at the
    /// first step, else the HyperNode of the step below. Types are visited in `order` (Volcano
    /// ranges over a Go map, so in no fixed order).
    #[derive(Debug, Default)]
    struct HyperNode {
        tiers: BTreeSet<usize>,
        nodes: BTreeSet<String>,
        children: BTreeSet<(String, String)>,
    }

    type Discovered = BTreeMap<(String, String), HyperNode>;

    fn volcano_types_of(object: &Value) -> Vec<(String, Vec<String>)> {
        let text = object["data"][VOLCANO_CONFIG_KEY].as_str().unwrap();
        let conf: Value = serde_yaml_ng::from_str(text).unwrap();
        conf["networkTopologyDiscovery"][0]["config"]["networkTopologyTypes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(t, list)| {
                let labels = list
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["nodeLabel"].as_str().unwrap().to_string())
                    .collect();
                (t.clone(), labels)
            })
            .collect()
    }

    fn discover(
        types: &[(String, Vec<String>)],
        nodes: &[(&str, BTreeMap<String, String>)],
        reverse: bool,
    ) -> Discovered {
        let mut order: Vec<&(String, Vec<String>)> = types.iter().collect();
        if reverse {
            order.reverse();
        }
        let mut hns = Discovered::new();
        for (node, labels) in nodes {
            for (type_name, list) in &order {
                // Volcano skips a type whose name is too long, with a log line only.
                if type_name.len() > VOLCANO_TYPE_MAX {
                    continue;
                }
                let mut below: Option<(String, String)> = None;
                for (i, key) in list[..list.len() - 1].iter().rev().enumerate() {
                    let Some(value) = labels.get(key) else { break };
                    let id = (key.clone(), value.clone());
                    let hn = hns.entry(id.clone()).or_default();
                    hn.tiers.insert(i + 1);
                    match below.take() {
                        None => hn.nodes.insert(node.to_string()),
                        Some(child) => hn.children.insert(child),
                    };
                    below = Some(id);
                }
            }
        }
        hns
    }

    /// The nodes under a HyperNode, as Volcano's scheduler counts them.
    fn real_nodes(hns: &Discovered, id: &(String, String)) -> BTreeSet<String> {
        let hn = &hns[id];
        let mut out = hn.nodes.clone();
        for c in &hn.children {
            out.extend(real_nodes(hns, c));
        }
        out
    }

    /// What makes a discovery wrong: a HyperNode at two tiers or with members of two kinds (a
    /// tier-1 HyperNode lists nodes, a higher one HyperNodes), a HyperNode with two parents, a
    /// node missing from the HyperNode of a level label it carries. An NVLink level needs the
    /// fabric ready (`nvlink.domain` present): a tray without it is in no NVLink HyperNode.
    fn faults(
        hns: &Discovered,
        nodes: &[(&str, BTreeMap<String, String>)],
        lv: &[TopologyLevel],
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut parents: BTreeMap<&(String, String), Vec<&(String, String)>> = BTreeMap::new();
        for (id, hn) in hns {
            if hn.tiers.len() != 1 {
                out.push(format!("{id:?} at tiers {:?}", hn.tiers));
            }
            let tier = *hn.tiers.first().unwrap();
            if (tier == 1 && !hn.children.is_empty()) || (tier > 1 && !hn.nodes.is_empty()) {
                out.push(format!("{id:?} (tier {tier}) mixes nodes and HyperNodes"));
            }
            for c in &hn.children {
                parents.entry(c).or_default().push(id);
            }
        }
        for (child, ps) in parents {
            if ps.len() > 1 {
                out.push(format!("{child:?} has parents {ps:?}"));
            }
        }
        let domain = Key::NvlinkDomain.under(DEFAULT_PREFIX);
        for (node, labels) in nodes {
            for l in lv.iter().filter(|l| l.node_label != HOSTNAME) {
                let Some(value) = labels.get(&l.node_label) else {
                    continue;
                };
                if family(l) == "nvlink" && !labels.contains_key(&domain) {
                    continue;
                }
                let id = (l.node_label.clone(), value.clone());
                if !hns.contains_key(&id) || !real_nodes(hns, &id).contains(*node) {
                    out.push(format!("{node} is in no HyperNode of {id:?}"));
                }
            }
        }
        out
    }

    /// Every kind of node the agent labels: GB200 trays with a ready and a pending fabric, HGX
    /// nodes (no NVLink levels) in the same scalable unit, one without the block label, one whose
    /// leaf is unknown (no `ib.*`).
    fn mixed_cluster() -> Vec<(&'static str, BTreeMap<String, String>)> {
        let k = |key: Key| key.under(DEFAULT_PREFIX);
        let node = |name: &'static str, pairs: &[(String, &str)]| {
            let mut m: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
            m.insert(HOSTNAME.into(), name.into());
            (name, m)
        };
        let leaf = "network.example.com/leaf".to_string();
        vec![
            node(
                "gb200-a",
                &[
                    (k(Key::IbBlock), "b1"),
                    (k(Key::IbSu), "su1"),
                    (k(Key::NvlinkCluster), "u1"),
                    (k(Key::NvlinkDomain), "u1.1"),
                    (leaf.clone(), "l1"),
                ],
            ),
            node(
                "gb200-b",
                &[
                    (k(Key::IbBlock), "b1"),
                    (k(Key::IbSu), "su1"),
                    (k(Key::NvlinkCluster), "u1"),
                    (k(Key::NvlinkDomain), "u1.1"),
                ],
            ),
            node(
                "gb200-pending",
                &[
                    (k(Key::IbBlock), "b1"),
                    (k(Key::IbSu), "su1"),
                    (k(Key::NvlinkCluster), "u1"),
                    (leaf.clone(), "l1"),
                ],
            ),
            node(
                "hgx-a",
                &[
                    (k(Key::IbBlock), "b1"),
                    (k(Key::IbSu), "su1"),
                    (leaf.clone(), "l2"),
                ],
            ),
            node("hgx-b", &[(k(Key::IbBlock), "b1"), (k(Key::IbSu), "su2")]),
            node("hgx-unknown-leaf", &[]),
        ]
    }

    fn ib_levels_with_block() -> Vec<TopologyLevel> {
        levels(&LevelOptions {
            block_label: Some("network.example.com/leaf".into()),
            fabric: FabricLevels::Infiniband,
            ..LevelOptions::default()
        })
        .unwrap()
    }

    #[test]
    fn volcano_places_every_node_class() {
        let nodes = mixed_cluster();
        for lv in [
            ib_levels_with_block(),
            default_levels(),
            levels(&LevelOptions {
                block_label: Some("network.example.com/leaf".into()),
                fabric: FabricLevels::Roce,
                ..LevelOptions::default()
            })
            .unwrap(),
        ] {
            let v = topology_object(Scheduler::Volcano, "nodetopo", &lv).unwrap();
            let types = volcano_types_of(&v);
            for reverse in [false, true] {
                let hns = discover(&types, &nodes, reverse);
                let f = faults(&hns, &nodes, &lv);
                assert!(f.is_empty(), "{types:?}\n{f:#?}");
            }
        }
        // The HGX nodes keep their InfiniBand levels: both scalable units and the block.
        let lv = ib_levels_with_block();
        let types =
            volcano_types_of(&topology_object(Scheduler::Volcano, "nodetopo", &lv).unwrap());
        let hns = discover(&types, &nodes, false);
        let block = (Key::IbBlock.under(DEFAULT_PREFIX), "b1".to_string());
        let all: BTreeSet<String> = nodes
            .iter()
            .filter(|(n, _)| *n != "hgx-unknown-leaf")
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(real_nodes(&hns, &block), all);
    }

    #[test]
    fn volcano_model_finds_the_old_and_the_naive_layouts_wrong() {
        let nodes = mixed_cluster();
        let lv = ib_levels_with_block();
        let chain = |ls: &[&TopologyLevel]| -> Vec<String> {
            ls.iter().map(|l| l.node_label.clone()).collect()
        };
        // One chain of every level (nodetopo before, now `VolcanoTypes::Single`): the HGX nodes
        // and the pending tray fall into no HyperNode, their InfiniBand levels with them.
        let single = ObjectOptions {
            volcano_types: VolcanoTypes::Single,
            ..ObjectOptions::default()
        };
        let v = topology_object_with(Scheduler::Volcano, "nodetopo", &lv, &single).unwrap();
        let one = volcano_types_of(&v);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].0, "nodetopo");
        assert_eq!(one[0].1.len(), lv.len());
        let f = faults(&discover(&one, &nodes, false), &nodes, &lv);
        assert!(
            f.iter().any(|f| f.starts_with("hgx-a is in no HyperNode")),
            "{f:#?}"
        );
        // ... while nodes that carry every level get one tree, a tier per level.
        let full = [nodes[0].clone()];
        assert!(faults(&discover(&one, &full, false), &full, &lv).is_empty());
        let all: Vec<&TopologyLevel> = lv.iter().collect();
        // A chain per node class sharing the fabric labels: a GB200 tray walks the short chain
        // too and lands straight in the scalable unit, whose other members are racks.
        let short: Vec<&TopologyLevel> = lv
            .iter()
            .filter(|l| family(l) != "nvlink" && l.domain != "leaf")
            .collect();
        let naive = vec![
            ("nodetopo".to_string(), chain(&all)),
            ("nodetopo-hgx".to_string(), chain(&short)),
        ];
        for reverse in [false, true] {
            let f = faults(&discover(&naive, &nodes, reverse), &nodes, &lv);
            assert!(
                f.iter()
                    .any(|f| f.contains("mixes") || f.contains("at tiers")),
                "{f:#?}"
            );
        }
    }

    #[test]
    fn volcano_refuses_a_type_name_it_would_skip() {
        let lv = ib_levels_with_block();
        // `<name>-nvlink` is the longest type name: 13 characters of name are the most.
        let fits = "a".repeat(13);
        let v = topology_object(Scheduler::Volcano, &fits, &lv).unwrap();
        for (t, _) in volcano_types_of(&v) {
            assert!(t.len() <= VOLCANO_TYPE_MAX, "{t}");
            assert!(t.starts_with(&fits));
        }
        let long = "a".repeat(14);
        let err = topology_object(Scheduler::Volcano, &long, &lv).unwrap_err();
        assert_eq!(
            err,
            DeployError::NameTooLong {
                what: "Volcano network topology type",
                name: format!("{long}-nvlink"),
                len: 21,
                project: "Volcano",
                max: VOLCANO_TYPE_MAX,
            }
        );
        assert!(err.to_string().contains("skips"), "{err}");
        // Without the NVLink family's suffix the limit is reached later, never silently.
        let roce = levels(&LevelOptions {
            fabric: FabricLevels::Roce,
            ..LevelOptions::default()
        })
        .unwrap();
        assert!(topology_object(Scheduler::Volcano, &long, &roce).is_err());
    }

    #[test]
    fn volcano_layout_only_for_volcano() {
        let single = ObjectOptions {
            volcano_types: VolcanoTypes::Single,
            ..ObjectOptions::default()
        };
        let err = topology_object_with(Scheduler::Kai, "nodetopo", &default_levels(), &single)
            .unwrap_err();
        assert!(matches!(err, DeployError::NotForScheduler { .. }), "{err}");
        let long = "a".repeat(21);
        assert!(matches!(
            topology_object_with(Scheduler::Volcano, &long, &default_levels(), &single),
            Err(DeployError::NameTooLong { .. })
        ));
        assert!(
            topology_object_with(
                Scheduler::Volcano,
                &"a".repeat(20),
                &default_levels(),
                &single
            )
            .is_ok()
        );
    }

    #[test]
    fn volcano_needs_the_host_last() {
        let mut lv = default_levels();
        lv.pop();
        assert_eq!(
            topology_object(Scheduler::Volcano, "nodetopo", &lv),
            Err(DeployError::HostNotLast)
        );
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
        assert_eq!(keys(types), ["nodetopo-nvlink"]);
        let list = types["nodetopo-nvlink"].as_array().unwrap();
        for l in list {
            assert_eq!(keys(l), ["nodeLabel"]);
        }
        // Volcano builds HyperNodes bottom-up and needs the host label last.
        assert_eq!(list.last().unwrap()["nodeLabel"], HOSTNAME);
        let all = topology_object(Scheduler::Volcano, "nodetopo", &ib_levels_with_block()).unwrap();
        let types = volcano_types_of(&all);
        let names: BTreeSet<&str> = types.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            names,
            BTreeSet::from(["nodetopo-ib", "nodetopo-leaf", "nodetopo-nvlink"])
        );
        for (_, list) in &types {
            assert_eq!(list.last().unwrap(), HOSTNAME);
            assert_eq!(list.iter().filter(|l| *l == HOSTNAME).count(), 1);
        }
    }
}
