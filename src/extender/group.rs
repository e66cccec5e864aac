//! Which pod group a pod belongs to, its role and the group's size, read from the labels and
//! annotations that the workload controllers set (LeaderWorkerSet, Grove, DisaggregatedSet,
//! llm-d). Pure: a pod's metadata in, a [`GroupInfo`] out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

/// LeaderWorkerSet keys.
pub mod lws {
    /// The LeaderWorkerSet name.
    pub const NAME: &str = "leaderworkerset.sigs.k8s.io/name";
    /// The group (replica) index.
    pub const GROUP_INDEX: &str = "leaderworkerset.sigs.k8s.io/group-index";
    /// The unique group key.
    pub const GROUP_KEY: &str = "leaderworkerset.sigs.k8s.io/group-key";
    /// The index of the pod inside its group (0 = leader).
    pub const WORKER_INDEX: &str = "leaderworkerset.sigs.k8s.io/worker-index";
    /// Annotation: pods per group.
    pub const SIZE: &str = "leaderworkerset.sigs.k8s.io/size";
}

/// Grove keys.
pub mod grove {
    /// The PodGang.
    pub const PODGANG: &str = "grove.io/podgang";
    /// The PodClique.
    pub const PODCLIQUE: &str = "grove.io/podclique";
    /// The PodCliqueSet replica index.
    pub const REPLICA_INDEX: &str = "grove.io/podcliqueset-replica-index";
}

/// DisaggregatedSet keys.
pub mod dset {
    /// The DisaggregatedSet name.
    pub const NAME: &str = "disaggregatedset.x-k8s.io/name";
    /// The role (`prefill`, `decode`).
    pub const ROLE: &str = "disaggregatedset.x-k8s.io/role";
    /// The slice index.
    pub const SLICE: &str = "disaggregatedset.x-k8s.io/slice";
}

/// llm-d keys.
pub mod llmd {
    /// `prefill` or `decode`.
    pub const ROLE: &str = "llm-d.ai/role";
    /// The model, shared by the prefill and decode halves of one deployment.
    pub const MODEL: &str = "llm-d.ai/model";
}

/// Common instance label, used to pair prefill with decode when nothing better is present.
pub const INSTANCE: &str = "app.kubernetes.io/instance";

/// The controller family that formed the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupKind {
    /// LeaderWorkerSet.
    Lws,
    /// Grove PodGang / PodClique.
    Grove,
    /// DisaggregatedSet.
    DisaggregatedSet,
    /// llm-d role label only.
    LlmD,
}

/// A disaggregated-serving role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Prefill.
    Prefill,
    /// Decode.
    Decode,
}

impl Role {
    /// The role that exchanges KV cache with this one.
    pub fn counterpart(self) -> Role {
        match self {
            Role::Prefill => Role::Decode,
            Role::Decode => Role::Prefill,
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s.to_ascii_lowercase().as_str() {
            "prefill" | "prefiller" => Some(Role::Prefill),
            "decode" | "decoder" => Some(Role::Decode),
            _ => None,
        }
    }

    /// A role guessed from a name such as `llama-prefill` (last resort).
    fn from_name(name: &str) -> Option<Role> {
        let n = name.to_ascii_lowercase();
        if n.contains("prefill") {
            Some(Role::Prefill)
        } else if n.contains("decode") {
            Some(Role::Decode)
        } else {
            None
        }
    }
}

/// A pod's group membership.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct GroupInfo {
    /// Which controller formed the group.
    pub kind: GroupKind,
    /// Unique group id (namespace-qualified); members of one group want to be close.
    pub group_id: String,
    /// The deployment id (namespace-qualified) that pairs prefill and decode groups.
    pub deployment: String,
    /// Prefill or decode, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Pods in the group, when the controller says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
}

/// `<namespace>/<name>` of a pod (`default` namespace when unset).
pub fn pod_key(pod: &Pod) -> Option<String> {
    let name = pod.metadata.name.as_deref()?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    Some(format!("{ns}/{name}"))
}

fn strip_role_suffix(name: &str) -> &str {
    for suffix in ["-prefill", "-decode", "-prefiller", "-decoder"] {
        if let Some(s) = name.strip_suffix(suffix) {
            return s;
        }
    }
    name
}

/// The group of a pod, from its labels and annotations; `None` for a pod in no known group.
pub fn group_of(pod: &Pod) -> Option<GroupInfo> {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    group_from_maps(ns, labels, annotations)
}

/// [`group_of`] over plain maps (what the pod watcher and tests hold).
pub fn group_from_maps(
    ns: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Option<GroupInfo> {
    let l = |k: &str| labels.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let pod = PodLabels {
        ns,
        l: &l,
        size: annotations
            .get(lws::SIZE)
            .or_else(|| labels.get(lws::SIZE))
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|s| *s > 0),
        explicit_role: l(llmd::ROLE)
            .and_then(Role::parse)
            .or_else(|| l(dset::ROLE).and_then(Role::parse)),
        // A deployment key shared by the prefill and decode halves.
        pairing: l(dset::NAME)
            .map(|n| format!("ds:{n}"))
            .or_else(|| l(llmd::MODEL).map(|m| format!("model:{m}")))
            .or_else(|| l(INSTANCE).map(|i| format!("instance:{i}"))),
    };
    pod.disaggregated_set()
        .or_else(|| pod.lws())
        .or_else(|| pod.grove())
        .or_else(|| pod.llm_d())
}

/// What every group kind reads from one pod's labels.
struct PodLabels<'a> {
    ns: &'a str,
    l: &'a dyn Fn(&str) -> Option<&'a str>,
    size: Option<u32>,
    explicit_role: Option<Role>,
    pairing: Option<String>,
}

fn role_name(r: Role) -> &'static str {
    if r == Role::Prefill {
        "prefill"
    } else {
        "decode"
    }
}

impl PodLabels<'_> {
    fn disaggregated_set(&self) -> Option<GroupInfo> {
        let (ns, l) = (self.ns, self.l);
        let name = l(dset::NAME)?;
        let role = self.explicit_role;
        let slice = l(dset::SLICE).unwrap_or("0");
        let role_s = role.map_or("any", role_name);
        // A DisaggregatedSet slice may itself be an LWS group; its index refines the group.
        let sub = l(lws::GROUP_KEY)
            .or_else(|| l(lws::GROUP_INDEX))
            .map(|g| format!("/{g}"))
            .unwrap_or_default();
        Some(GroupInfo {
            kind: GroupKind::DisaggregatedSet,
            group_id: format!("{ns}/ds:{name}/{role_s}/{slice}{sub}"),
            deployment: format!("{ns}/ds:{name}"),
            role,
            size: self.size,
        })
    }

    fn lws(&self) -> Option<GroupInfo> {
        let (ns, l) = (self.ns, self.l);
        let name = l(lws::NAME)?;
        let group = l(lws::GROUP_KEY)
            .or_else(|| l(lws::GROUP_INDEX))
            .unwrap_or("0");
        let role = self.explicit_role.or_else(|| Role::from_name(name));
        let deployment = self
            .pairing
            .clone()
            .unwrap_or_else(|| format!("lws:{}", strip_role_suffix(name)));
        Some(GroupInfo {
            kind: GroupKind::Lws,
            group_id: format!("{ns}/lws:{name}/{group}"),
            deployment: format!("{ns}/{deployment}"),
            role,
            size: self.size,
        })
    }

    fn grove(&self) -> Option<GroupInfo> {
        let (ns, l) = (self.ns, self.l);
        let gang = l(grove::PODGANG)?;
        let clique = l(grove::PODCLIQUE).unwrap_or("");
        Some(GroupInfo {
            kind: GroupKind::Grove,
            group_id: format!("{ns}/grove:{gang}/{clique}"),
            // The PodGang holds all cliques of one replica: prefill and decode pair inside it.
            deployment: format!("{ns}/grove:{gang}"),
            role: self.explicit_role.or_else(|| Role::from_name(clique)),
            size: self.size,
        })
    }

    fn llm_d(&self) -> Option<GroupInfo> {
        let ns = self.ns;
        let role = (self.l)(llmd::ROLE).and_then(Role::parse)?;
        let deployment = self.pairing.clone().unwrap_or_else(|| "llm-d".to_string());
        Some(GroupInfo {
            kind: GroupKind::LlmD,
            group_id: format!("{ns}/{deployment}/{}", role_name(role)),
            deployment: format!("{ns}/{deployment}"),
            role: Some(role),
            size: self.size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(l: &[(&str, &str)]) -> BTreeMap<String, String> {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn lws_group_with_size_and_role_from_llmd() {
        let g = group_from_maps(
            "inf",
            &maps(&[
                (lws::NAME, "llama-decode"),
                (lws::GROUP_INDEX, "2"),
                (lws::WORKER_INDEX, "1"),
                (llmd::ROLE, "decode"),
            ]),
            &maps(&[(lws::SIZE, "4")]),
        )
        .unwrap();
        assert_eq!(g.kind, GroupKind::Lws);
        assert_eq!(g.group_id, "inf/lws:llama-decode/2");
        assert_eq!(g.deployment, "inf/lws:llama");
        assert_eq!(g.role, Some(Role::Decode));
        assert_eq!(g.size, Some(4));
    }

    #[test]
    fn lws_group_key_wins_and_role_from_name() {
        let g = group_from_maps(
            "ns",
            &maps(&[
                (lws::NAME, "m-prefill"),
                (lws::GROUP_INDEX, "0"),
                (lws::GROUP_KEY, "abc"),
                (INSTANCE, "m"),
            ]),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(g.group_id, "ns/lws:m-prefill/abc");
        assert_eq!(g.deployment, "ns/instance:m");
        assert_eq!(g.role, Some(Role::Prefill));
        assert_eq!(g.size, None);
    }

    #[test]
    fn grove_clique_in_gang() {
        let g = group_from_maps(
            "ns",
            &maps(&[
                (grove::PODGANG, "svc-0"),
                (grove::PODCLIQUE, "svc-0-decode"),
                (grove::REPLICA_INDEX, "0"),
            ]),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(g.kind, GroupKind::Grove);
        assert_eq!(g.group_id, "ns/grove:svc-0/svc-0-decode");
        assert_eq!(g.deployment, "ns/grove:svc-0");
        assert_eq!(g.role, Some(Role::Decode));
    }

    #[test]
    fn disaggregated_set_roles_share_a_deployment() {
        let p = group_from_maps(
            "ns",
            &maps(&[
                (dset::NAME, "ds"),
                (dset::ROLE, "prefill"),
                (dset::SLICE, "1"),
            ]),
            &BTreeMap::new(),
        )
        .unwrap();
        let d = group_from_maps(
            "ns",
            &maps(&[
                (dset::NAME, "ds"),
                (dset::ROLE, "decode"),
                (dset::SLICE, "1"),
            ]),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(p.deployment, d.deployment);
        assert_ne!(p.group_id, d.group_id);
        assert_eq!(p.role.map(Role::counterpart), d.role);
    }

    #[test]
    fn llmd_role_only_and_no_group() {
        let g = group_from_maps(
            "ns",
            &maps(&[(llmd::ROLE, "prefill"), (llmd::MODEL, "llama")]),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(g.kind, GroupKind::LlmD);
        assert_eq!(g.deployment, "ns/model:llama");
        assert!(group_from_maps("ns", &maps(&[("app", "x")]), &BTreeMap::new()).is_none());
        assert!(
            group_from_maps("ns", &maps(&[(llmd::ROLE, "router")]), &BTreeMap::new()).is_none()
        );
    }

    #[test]
    fn pod_without_metadata_is_no_group() {
        assert!(group_of(&Pod::default()).is_none());
        assert!(pod_key(&Pod::default()).is_none());
    }
}
