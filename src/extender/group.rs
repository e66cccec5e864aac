//! Which pod group a pod belongs to, its role and the group's size, read from the labels and
//! annotations that the workload controllers set (LeaderWorkerSet, Grove, DisaggregatedSet,
//! llm-d). Pure: a pod's metadata in, a [`GroupInfo`] out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

/// Label and annotation keys the LeaderWorkerSet controller puts on its pods.
pub mod lws {
    /// The name of the LeaderWorkerSet the pod belongs to.
    pub const NAME: &str = "leaderworkerset.sigs.k8s.io/name";
    /// The group (replica) index.
    pub const GROUP_INDEX: &str = "leaderworkerset.sigs.k8s.io/group-index";
    /// A key unique to one group (replica); preferred over the group index.
    pub const GROUP_KEY: &str = "leaderworkerset.sigs.k8s.io/group-key";
    /// The index of the pod inside its group (0 = leader).
    pub const WORKER_INDEX: &str = "leaderworkerset.sigs.k8s.io/worker-index";
    /// Annotation: pods per group.
    pub const SIZE: &str = "leaderworkerset.sigs.k8s.io/size";
}

/// Keys Grove puts on its pods: labels, a scheduling gate and a container env var.
pub mod grove {
    /// The PodGang (the set of pods scheduled together) the pod belongs to.
    pub const PODGANG: &str = "grove.io/podgang";
    /// The PodClique (a set of pods of one template) the pod is in.
    pub const PODCLIQUE: &str = "grove.io/podclique";
    /// The index of the PodCliqueSet replica the pod belongs to.
    pub const REPLICA_INDEX: &str = "grove.io/podcliqueset-replica-index";
    /// The PodCliqueScalingGroup (its full name, `<pcs>-<pcs replica>-<scaling group>`).
    pub const SCALING_GROUP: &str = "grove.io/podcliquescalinggroup";
    /// The replica index inside the PodCliqueScalingGroup.
    pub const SCALING_GROUP_REPLICA_INDEX: &str = "grove.io/podcliquescalinggroup-replica-index";
    /// The pod's index inside its PodClique.
    pub const PODCLIQUE_POD_INDEX: &str = "grove.io/podclique-pod-index";
    /// On the pods of a scaled scaling-group replica (at or above `minAvailable`, in a PodGang
    /// of its own): the PodGang of its PodCliqueSet replica.
    pub const BASE_PODGANG: &str = "grove.io/base-podgang";
    /// The PodCliqueSet name (Grove sets the common `part-of` label to it).
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    /// The scheduling gate Grove's pods are created with, lifted once their PodGang exists.
    pub const PODGANG_GATE: &str = "grove.io/podgang-pending-creation";
    /// Container env var: the pods of one scaling-group replica (its cliques' replicas summed).
    pub const TEMPLATE_NUM_PODS_ENV: &str = "GROVE_PCSG_TEMPLATE_NUM_PODS";
}

/// Label keys that DisaggregatedSet puts on its pods.
pub mod dset {
    /// The name of the DisaggregatedSet the pod belongs to.
    pub const NAME: &str = "disaggregatedset.x-k8s.io/name";
    /// The role (`prefill`, `decode`).
    pub const ROLE: &str = "disaggregatedset.x-k8s.io/role";
    /// The slice index; one slice is one complete set of roles (no such label before v0.10).
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
    /// One LeaderWorkerSet group: a leader pod and its workers.
    Lws,
    /// A Grove PodCliqueScalingGroup replica, or a PodClique outside any scaling group.
    Grove,
    /// The pods of one role in one slice of a DisaggregatedSet.
    DisaggregatedSet,
    /// llm-d role label only.
    LlmD,
}

/// A pod's part in disaggregated LLM serving, where prefill and decode run on separate pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, strum::Display)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    /// Prefill: processes the prompt and hands the KV cache to a decode pod.
    Prefill,
    /// Decode: generates the output tokens from the KV cache it receives.
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
    group_from_parts(ns, labels, annotations, |name| container_env(pod, name))
}

/// [`group_of`] over plain maps (what the pod watcher and tests hold), for a pod without
/// container env; see [`group_from_parts`].
pub fn group_from_maps(
    ns: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Option<GroupInfo> {
    group_from_parts(ns, labels, annotations, |_| None)
}

/// The pod's containers, then its init containers.
pub(crate) fn containers(
    pod: &Pod,
) -> impl Iterator<Item = &k8s_openapi::api::core::v1::Container> {
    pod.spec.iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    })
}

/// The value of env var `name` of the pod's first container that sets it literally (a value
/// taken from a field or a secret is not known before the pod runs).
fn container_env<'p>(pod: &'p Pod, name: &str) -> Option<&'p str> {
    containers(pod)
        .flat_map(|c| c.env.iter().flatten())
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

fn positive(s: &str) -> Option<u32> {
    s.trim().parse::<u32>().ok().filter(|n| *n > 0)
}

/// The deployment key of a DisaggregatedSet: one slice (v0.10, `slice` label) is one complete
/// set of roles; without the label (v0.9) the whole set pairs.
fn dset_deployment(name: &str, slice: Option<&str>) -> String {
    match slice {
        Some(s) => format!("ds:{name}/slice:{s}"),
        None => format!("ds:{name}"),
    }
}

/// [`group_from_maps`] with the pod's container env (`env(name)`: the literal value of env var
/// `name`), where Grove puts the size of a scaling-group replica.
pub fn group_from_parts<'e>(
    ns: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    env: impl Fn(&str) -> Option<&'e str>,
) -> Option<GroupInfo> {
    let l = |k: &str| labels.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let pod = PodLabels {
        ns,
        l: &l,
        size: annotations
            .get(lws::SIZE)
            .or_else(|| labels.get(lws::SIZE))
            .and_then(|s| positive(s)),
        grove_size: env(grove::TEMPLATE_NUM_PODS_ENV).and_then(positive),
        explicit_role: l(llmd::ROLE)
            .and_then(Role::parse)
            .or_else(|| l(dset::ROLE).and_then(Role::parse)),
        // A deployment key shared by the prefill and decode halves.
        pairing: l(dset::NAME)
            .map(|n| dset_deployment(n, l(dset::SLICE)))
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
    /// Pods in a Grove scaling-group replica ([`grove::TEMPLATE_NUM_PODS_ENV`]).
    grove_size: Option<u32>,
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
        let slice = l(dset::SLICE);
        let deployment = dset_deployment(name, slice);
        let slice = slice.unwrap_or("0");
        let role_s = role.map_or("any", role_name);
        // A DisaggregatedSet slice may itself be an LWS group; its index refines the group.
        let sub = l(lws::GROUP_KEY)
            .or_else(|| l(lws::GROUP_INDEX))
            .map(|g| format!("/{g}"))
            .unwrap_or_default();
        Some(GroupInfo {
            kind: GroupKind::DisaggregatedSet,
            group_id: format!("{ns}/ds:{name}/{role_s}/{slice}{sub}"),
            deployment: format!("{ns}/{deployment}"),
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

    /// A Grove pod. A replica of a PodCliqueScalingGroup (its leader and worker PodCliques) is
    /// one group, sized by [`grove::TEMPLATE_NUM_PODS_ENV`]; a PodClique outside any scaling
    /// group is a group of its own. Prefill and decode pair inside one PodCliqueSet replica,
    /// whose PodGang is the base of the scaled ones. The role is the explicit one, else read
    /// from the scaling group's or the clique's own name, never the PodCliqueSet's.
    fn grove(&self) -> Option<GroupInfo> {
        let (ns, l) = (self.ns, self.l);
        let gang = l(grove::PODGANG)?;
        let clique = l(grove::PODCLIQUE).unwrap_or("");
        let base = l(grove::BASE_PODGANG).unwrap_or(gang);
        // Grove's names start with `<podcliqueset>-<replica>-`; what follows is the user's.
        let own = |full: &str| -> Option<String> {
            let prefix = format!("{}-{}-", l(grove::PART_OF)?, l(grove::REPLICA_INDEX)?);
            full.strip_prefix(&prefix).map(str::to_string)
        };
        let (group_id, named, size) = match (
            l(grove::SCALING_GROUP),
            l(grove::SCALING_GROUP_REPLICA_INDEX),
        ) {
            (Some(pcsg), Some(k)) => (
                format!("{ns}/grove:{pcsg}/{k}"),
                own(pcsg),
                self.size.or(self.grove_size),
            ),
            _ => (
                format!("{ns}/grove:{gang}/{clique}"),
                own(clique),
                self.size,
            ),
        };
        let role = self
            .explicit_role
            .or_else(|| named.as_deref().and_then(Role::from_name))
            // Without the PodCliqueSet's labels the names cannot be split: the full one is all
            // there is.
            .or_else(|| named.is_none().then(|| Role::from_name(clique)).flatten());
        Some(GroupInfo {
            kind: GroupKind::Grove,
            group_id,
            deployment: format!("{ns}/grove:{base}"),
            role,
            size,
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

    /// The labels Grove's operator puts on a pod of a PodCliqueScalingGroup replica
    /// (`operator/internal/controller/podclique/components/pod/pod.go` `getLabels` over the
    /// PodClique's labels from `.../podcliquescalinggroup/components/podclique/podclique.go`).
    fn grove_pcsg_pod(
        pcs: &str,
        pcsg: &str,
        pcsg_replica: u32,
        min_available: u32,
        clique: &str,
    ) -> BTreeMap<String, String> {
        let pcsg_fqn = format!("{pcs}-0-{pcsg}");
        let base = format!("{pcs}-0");
        let gang = if pcsg_replica < min_available {
            base.clone()
        } else {
            format!("{pcsg_fqn}-{}", pcsg_replica - min_available)
        };
        let mut m = maps(&[
            ("app.kubernetes.io/managed-by", "grove-operator"),
            ("app.kubernetes.io/part-of", pcs),
            ("app.kubernetes.io/component", "pcsg-podclique"),
            (
                grove::PODCLIQUE,
                &format!("{pcsg_fqn}-{pcsg_replica}-{clique}"),
            ),
            (grove::PODGANG, &gang),
            (grove::REPLICA_INDEX, "0"),
            (grove::SCALING_GROUP, &pcsg_fqn),
            (
                grove::SCALING_GROUP_REPLICA_INDEX,
                &pcsg_replica.to_string(),
            ),
            (grove::PODCLIQUE_POD_INDEX, "0"),
        ]);
        if gang != base {
            m.insert(grove::BASE_PODGANG.into(), base);
        }
        m
    }

    fn grove_group(labels: &BTreeMap<String, String>, env_size: Option<&str>) -> GroupInfo {
        group_from_parts("ns", labels, &BTreeMap::new(), |k| {
            (k == grove::TEMPLATE_NUM_PODS_ENV)
                .then_some(env_size)
                .flatten()
        })
        .unwrap()
    }

    /// Issue 22 (1): the leader and worker PodCliques of one scaling-group replica are one group;
    /// another replica is another group.
    #[test]
    fn grove_scaling_group_replica_is_one_group() {
        let leader = grove_group(&grove_pcsg_pod("svc", "prefill", 0, 1, "pleader"), None);
        let worker = grove_group(&grove_pcsg_pod("svc", "prefill", 0, 1, "pworker"), None);
        let other = grove_group(&grove_pcsg_pod("svc", "prefill", 1, 1, "pworker"), None);
        assert_eq!(leader.kind, GroupKind::Grove);
        assert_eq!(leader.group_id, worker.group_id);
        assert_ne!(leader.group_id, other.group_id);
    }

    /// Issue 22 (2): a scaled replica (own PodGang, `grove.io/base-podgang`) pairs with the
    /// decode of its PodCliqueSet replica; another PodCliqueSet replica does not.
    #[test]
    fn grove_scaled_replica_pairs_with_its_decode() {
        let scaled = grove_group(&grove_pcsg_pod("svc", "prefill", 2, 1, "pleader"), None);
        let decode = grove_group(&grove_pcsg_pod("svc", "decode", 0, 1, "dleader"), None);
        assert_eq!(scaled.deployment, decode.deployment);
        let mut other = grove_pcsg_pod("svc", "decode", 0, 1, "dleader");
        other.insert(grove::REPLICA_INDEX.into(), "1".into());
        other.insert(grove::PODGANG.into(), "svc-1".into());
        other.insert(grove::SCALING_GROUP.into(), "svc-1-decode".into());
        assert_ne!(grove_group(&other, None).deployment, scaled.deployment);
    }

    /// Issue 22 (3): the size of a scaling-group replica comes from the env var Grove sets;
    /// a value that is not a positive number leaves it unknown.
    #[test]
    fn grove_size_from_template_num_pods_env() {
        let l = grove_pcsg_pod("svc", "prefill", 0, 1, "pworker");
        assert_eq!(grove_group(&l, Some("5")).size, Some(5));
        assert_eq!(grove_group(&l, Some("five")).size, None);
        assert_eq!(grove_group(&l, Some("0")).size, None);
        assert_eq!(grove_group(&l, None).size, None);
    }

    /// Issue 22 (4): the role comes from the scaling group's own name, never from the
    /// PodCliqueSet's; an explicit `llm-d.ai/role` (set on the clique template) wins.
    #[test]
    fn grove_role_from_scaling_group_not_set_name() {
        let d = grove_group(
            &grove_pcsg_pod("prefill-svc", "decode", 0, 1, "dleader"),
            None,
        );
        assert_eq!(d.role, Some(Role::Decode));
        let p = grove_group(
            &grove_pcsg_pod("decode-svc", "prefill", 0, 1, "pworker"),
            None,
        );
        assert_eq!(p.role, Some(Role::Prefill));
        // Names that say nothing: no role, unless the user names it.
        let mut l = grove_pcsg_pod("decode-svc", "sga", 0, 1, "leader");
        assert_eq!(grove_group(&l, None).role, None);
        l.insert(llmd::ROLE.into(), "prefill".into());
        assert_eq!(grove_group(&l, None).role, Some(Role::Prefill));
        // A clique outside any scaling group: its template name.
        let solo = maps(&[
            ("app.kubernetes.io/part-of", "prefill-svc"),
            (grove::PODCLIQUE, "prefill-svc-0-decode"),
            (grove::PODGANG, "prefill-svc-0"),
            (grove::REPLICA_INDEX, "0"),
        ]);
        assert_eq!(grove_group(&solo, None).role, Some(Role::Decode));
    }

    /// Issue 22 (8): DisaggregatedSet v0.10 pairs inside a slice; v0.9 (no slice) by name.
    #[test]
    fn disaggregated_set_pairs_within_a_slice() {
        let g = |role: &str, slice: Option<&str>| {
            let mut l = maps(&[(dset::NAME, "ds"), (dset::ROLE, role)]);
            if let Some(s) = slice {
                l.insert(dset::SLICE.into(), s.into());
            }
            group_from_maps("ns", &l, &BTreeMap::new()).unwrap()
        };
        assert_eq!(
            g("prefill", Some("0")).deployment,
            g("decode", Some("0")).deployment
        );
        assert_ne!(
            g("prefill", Some("0")).deployment,
            g("decode", Some("1")).deployment
        );
        assert_eq!(g("prefill", None).deployment, g("decode", None).deployment);
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
