//! Where the members of each group already run: a [`PlacementIndex`] fed by pod events.
//!
//! In a cluster the pod watcher turns bound pods into [`PodEvent`]s; tests and the debug
//! endpoint feed the same events, so the policy never knows where they came from.

use std::{
    collections::{BTreeMap, HashMap},
    sync::RwLock,
};

use k8s_openapi::api::core::v1::Pod;

use super::group::{GroupInfo, Role, group_of, pod_key};

/// A pod that is bound to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedPod {
    /// `<namespace>/<name>`.
    pub pod: String,
    /// The node it is bound to.
    pub node: String,
    /// Its group.
    pub group: GroupInfo,
    /// The GPUs it requests (`*/gpu` resources), which the node no longer has for others.
    pub gpus: u32,
}

/// A pod of a group that is not bound yet (pending, or held by a scheduling gate): the room its
/// group will need, which a counterpart group placed before it must leave nearby.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingPod {
    /// `<namespace>/<name>`.
    pub pod: String,
    /// Its group.
    pub group: GroupInfo,
    /// The GPUs it requests.
    pub gpus: u32,
}

/// A change in where pods run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodEvent {
    /// The pod is bound to a node (new, or moved).
    Placed(PlacedPod),
    /// The pod is in a group and waits to be bound.
    Waiting(WaitingPod),
    /// The pod is gone (deleted, or finished).
    Removed {
        /// `<namespace>/<name>`.
        pod: String,
    },
}

/// True while the pod has scheduling gates: it is not schedulable yet (Grove creates its pods
/// with [`super::group::grove::PODGANG_GATE`] until their PodGang exists), so it is not placed
/// and reserves nothing, whatever else its spec says.
pub fn scheduling_gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

impl PodEvent {
    /// The event a pod watcher derives from a pod object: `Placed` when it is bound and in a
    /// group and not [`scheduling_gated`], `Waiting` when it is in a group and not bound yet
    /// (gated or not: its group will need the room), `Removed` otherwise (finished and deleted
    /// pods free their place).
    pub fn from_pod(pod: &Pod) -> Option<PodEvent> {
        let key = pod_key(pod)?;
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let live = !finished && pod.metadata.deletion_timestamp.is_none();
        let gpus = gpu_request(pod);
        match (node, group_of(pod)) {
            (Some(node), Some(group)) if live && !scheduling_gated(pod) => {
                Some(PodEvent::Placed(PlacedPod {
                    pod: key,
                    node,
                    group,
                    gpus,
                }))
            }
            (None, Some(group)) if live => Some(PodEvent::Waiting(WaitingPod {
                pod: key,
                group,
                gpus,
            })),
            _ => Some(PodEvent::Removed { pod: key }),
        }
    }
}

/// The GPUs a pod requests: per container the larger of its `*/gpu` request and limit, summed
/// over the containers, or the largest init container's if that is more (as kube-scheduler
/// counts a pod's resources).
pub fn gpu_request(pod: &Pod) -> u32 {
    use k8s_openapi::api::core::v1::Container;
    let of = |c: &Container| -> u32 {
        let Some(r) = c.resources.as_ref() else {
            return 0;
        };
        r.requests
            .iter()
            .flatten()
            .chain(r.limits.iter().flatten())
            .filter(|(k, _)| k.ends_with("/gpu"))
            .filter_map(|(_, q)| q.0.parse::<u32>().ok())
            .max()
            .unwrap_or(0)
    };
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let main: u32 = spec.containers.iter().map(of).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(of)
        .max()
        .unwrap_or(0);
    main.max(init)
}

/// Read side of the placement index, as the policy sees it.
pub trait PlacementIndex: Send + Sync {
    /// Placed members of `group_id`, sorted by pod key.
    fn members(&self, group_id: &str) -> Vec<PlacedPod>;
    /// Placed pods of `deployment` with role `role`, sorted by pod key.
    fn with_role(&self, deployment: &str, role: Role) -> Vec<PlacedPod>;
    /// Applies one event.
    fn apply(&self, event: PodEvent);
    /// Replaces the whole content (after a full re-list).
    fn replace_all(&self, placed: Vec<PlacedPod>);
    /// Replaces the waiting pods (after a full re-list).
    fn replace_waiting(&self, _waiting: Vec<WaitingPod>) {}
    /// Waiting pods of `deployment` with role `role`, sorted by pod key (empty where not kept).
    fn waiting_with_role(&self, _deployment: &str, _role: Role) -> Vec<WaitingPod> {
        Vec::new()
    }
    /// GPUs requested by the group pods placed on each node that has any (empty where not
    /// kept): one pass for a whole request's candidates.
    fn gpus_by_node(&self) -> foldhash::HashMap<String, u32> {
        foldhash::HashMap::default()
    }
    /// The node where the last member of `group_id` ran before the group was left without
    /// placed members (a rolling replacement, a restart), within [`LAST_NODE_TTL`].
    fn last_node(&self, _group_id: &str) -> Option<String> {
        None
    }
    /// The nodes that `group_id`'s pods left within [`LEAVING_WINDOW`] (deleted or finished),
    /// with the GPUs each pod took there: kube-scheduler still counts a pod's resources until
    /// the pod object is gone, so right after a replacement its group's old nodes are not
    /// candidates yet.
    fn recently_left(&self, _group_id: &str) -> Vec<(String, u32)> {
        Vec::new()
    }
    /// Every placed pod, sorted by pod key (for the debug page; empty where not kept).
    fn all(&self) -> Vec<PlacedPod> {
        Vec::new()
    }
}

/// A node one of a group's pods left: the node, the pod's GPUs, and when.
type Left = (String, u32, std::time::Instant);

/// The in-memory index.
#[derive(Debug, Default)]
pub struct MemoryPlacementIndex {
    pods: RwLock<BTreeMap<String, PlacedPod>>,
    waiting: RwLock<BTreeMap<String, WaitingPod>>,
    /// group id -> the node its last removed member ran on, and when.
    last: RwLock<HashMap<String, (String, std::time::Instant)>>,
    /// group id -> the nodes its removed members ran on, their GPUs, and when.
    left: RwLock<HashMap<String, Vec<Left>>>,
}

/// How long a group's last node is remembered once its members are gone.
pub const LAST_NODE_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// How long the nodes a group's pods left count as soon free for that group: a pod being
/// deleted keeps its resources in kube-scheduler's view until its kubelet confirms its end
/// (the default grace period is 30 s).
pub const LEAVING_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

impl MemoryPlacementIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, PlacedPod>> {
        // A panic while holding the lock cannot leave the map half-written (single inserts).
        self.pods.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, PlacedPod>> {
        self.pods.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of placed pods.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when nothing is placed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pods per group (for the debug view).
    pub fn summary(&self) -> HashMap<String, Vec<(String, String)>> {
        let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for p in self.read().values() {
            out.entry(p.group.group_id.clone())
                .or_default()
                .push((p.pod.clone(), p.node.clone()));
        }
        out
    }
}

impl PlacementIndex for MemoryPlacementIndex {
    fn all(&self) -> Vec<PlacedPod> {
        self.read().values().cloned().collect()
    }

    fn members(&self, group_id: &str) -> Vec<PlacedPod> {
        self.read()
            .values()
            .filter(|p| p.group.group_id == group_id)
            .cloned()
            .collect()
    }

    fn with_role(&self, deployment: &str, role: Role) -> Vec<PlacedPod> {
        self.read()
            .values()
            .filter(|p| p.group.deployment == deployment && p.group.role == Some(role))
            .cloned()
            .collect()
    }

    fn apply(&self, event: PodEvent) {
        let mut pods = self.write();
        let mut waiting = self.waiting.write().unwrap_or_else(|e| e.into_inner());
        match event {
            PodEvent::Placed(p) => {
                waiting.remove(&p.pod);
                pods.insert(p.pod.clone(), p);
            }
            PodEvent::Waiting(w) => {
                pods.remove(&w.pod);
                waiting.insert(w.pod.clone(), w);
            }
            PodEvent::Removed { pod } => {
                waiting.remove(&pod);
                if let Some(p) = pods.remove(&pod) {
                    let now = std::time::Instant::now();
                    let mut last = self.last.write().unwrap_or_else(|e| e.into_inner());
                    last.retain(|_, (_, at)| now.duration_since(*at) < LAST_NODE_TTL);
                    let mut left = self.left.write().unwrap_or_else(|e| e.into_inner());
                    left.retain(|_, l| {
                        l.retain(|(_, _, at)| now.duration_since(*at) < LEAVING_WINDOW);
                        !l.is_empty()
                    });
                    left.entry(p.group.group_id.clone()).or_default().push((
                        p.node.clone(),
                        p.gpus,
                        now,
                    ));
                    last.insert(p.group.group_id, (p.node, now));
                }
            }
        }
    }

    fn replace_all(&self, placed: Vec<PlacedPod>) {
        let map = placed.into_iter().map(|p| (p.pod.clone(), p)).collect();
        *self.write() = map;
    }

    fn replace_waiting(&self, waiting: Vec<WaitingPod>) {
        let map = waiting.into_iter().map(|p| (p.pod.clone(), p)).collect();
        *self.waiting.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    fn waiting_with_role(&self, deployment: &str, role: Role) -> Vec<WaitingPod> {
        self.waiting
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|p| p.group.deployment == deployment && p.group.role == Some(role))
            .cloned()
            .collect()
    }

    fn last_node(&self, group_id: &str) -> Option<String> {
        self.last
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(group_id)
            .filter(|(_, at)| at.elapsed() < LAST_NODE_TTL)
            .map(|(node, _)| node.clone())
    }

    fn recently_left(&self, group_id: &str) -> Vec<(String, u32)> {
        self.left
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(group_id)
            .into_iter()
            .flatten()
            .filter(|(_, _, at)| at.elapsed() < LEAVING_WINDOW)
            .map(|(node, gpus, _)| (node.clone(), *gpus))
            .collect()
    }

    fn gpus_by_node(&self) -> foldhash::HashMap<String, u32> {
        let mut out = foldhash::HashMap::<String, u32>::default();
        for p in self.read().values().filter(|p| p.gpus > 0) {
            let e = out.entry(p.node.clone()).or_default();
            *e = e.saturating_add(p.gpus);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extender::group::{GroupKind, lws};
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};

    fn pod(name: &str, node: Option<&str>, role: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.labels = Some(
            [
                (lws::NAME.to_string(), "m".to_string()),
                ("llm-d.ai/role".to_string(), role.to_string()),
            ]
            .into(),
        );
        p.spec = Some(PodSpec {
            node_name: node.map(str::to_string),
            ..Default::default()
        });
        p
    }

    #[test]
    fn events_from_pods_feed_the_index() {
        let idx = MemoryPlacementIndex::new();
        idx.apply(PodEvent::from_pod(&pod("a", Some("n1"), "decode")).unwrap());
        idx.apply(PodEvent::from_pod(&pod("b", Some("n2"), "prefill")).unwrap());
        idx.apply(PodEvent::from_pod(&pod("c", None, "decode")).unwrap());
        assert_eq!(idx.len(), 2);
        // The unbound pod waits: its group's demand is known, it is no member placed anywhere.
        let w = idx.waiting_with_role("ns/lws:m", Role::Decode);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].pod, "ns/c");
        idx.apply(PodEvent::from_pod(&pod("c", Some("n3"), "decode")).unwrap());
        assert!(idx.waiting_with_role("ns/lws:m", Role::Decode).is_empty());
        idx.apply(PodEvent::Removed { pod: "ns/c".into() });
        // The group remembers where its last member ran.
        assert_eq!(idx.last_node("ns/lws:m/0").as_deref(), Some("n3"));
        let m = idx.members("ns/lws:m/0");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].group.kind, GroupKind::Lws);
        let d = idx.with_role("ns/lws:m", Role::Decode);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].node, "n1");

        let mut done = pod("a", Some("n1"), "decode");
        done.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        idx.apply(PodEvent::from_pod(&done).unwrap());
        assert!(idx.with_role("ns/lws:m", Role::Decode).is_empty());
        idx.replace_all(Vec::new());
        assert!(idx.is_empty());
    }

    /// Issue 22 (5): a gated pod is not placed, even with a node name (a Binding written
    /// around the gate, or a client that set both); lifting the gate places it.
    #[test]
    fn a_gated_pod_is_not_placed() {
        let idx = MemoryPlacementIndex::new();
        let mut gated = pod("g", Some("n1"), "decode");
        gated.spec.as_mut().unwrap().scheduling_gates =
            Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
                name: crate::extender::group::grove::PODGANG_GATE.into(),
            }]);
        assert!(scheduling_gated(&gated));
        idx.apply(PodEvent::from_pod(&gated).unwrap());
        assert!(idx.is_empty());
        gated.spec.as_mut().unwrap().scheduling_gates = Some(Vec::new());
        idx.apply(PodEvent::from_pod(&gated).unwrap());
        assert_eq!(idx.len(), 1);
    }
}
