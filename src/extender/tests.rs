//! Group placement through the whole extender (view, placements, reservations, filter and
//! prioritize), driven the way kube-scheduler drives it: candidates that still have room, the
//! best score wins with random tie-breaks, and a bound pod shows up in the pod watch only later.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;
use crate::extender::{
    placed::{MemoryPlacementIndex, PlacedPod, PodEvent},
    view::{ClusterView, ViewEvent},
};

const UUID_A: &str = "4f1c2d3e-5a6b-47c8-a9d0-e1f2a3b4c5d6";

/// Labels of a GB200 tray in clique `clique` of NVLink cluster `cluster`, on leaf `leaf`.
fn tray(cluster: &str, clique: u32, leaf: &str) -> BTreeMap<String, String> {
    [
        ("nodetopo.io/gpu.count", "4".to_string()),
        ("nodetopo.io/nvlink.fabric", "ready".into()),
        ("nodetopo.io/nvlink.cluster", cluster.into()),
        ("nodetopo.io/nvlink.domain", format!("{cluster}.{clique}")),
        ("nodetopo.io/rdma.link-layer", "infiniband".into()),
        ("nodetopo.io/rdma.ib-subnet", "fe80-0000-0000-0000".into()),
        ("leaf", leaf.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Labels of an 8-GPU InfiniBand node (no multi-node NVLink) on leaf `leaf`.
fn hgx(leaf: &str) -> BTreeMap<String, String> {
    [
        ("nodetopo.io/gpu.count", "8"),
        ("nodetopo.io/nvlink.fabric", "none"),
        ("nodetopo.io/rdma.link-layer", "infiniband"),
        ("nodetopo.io/rdma.ib-subnet", "fe80-0000-0000-0000"),
        ("leaf", leaf),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `count` trays `<prefix>1..` in clique `clique`, known to the view by their labels.
fn trays(ext: &Extender, prefix: &str, clique: u32, count: usize) -> Vec<String> {
    let names: Vec<String> = (1..=count).map(|i| format!("{prefix}{i}")).collect();
    for n in &names {
        ext.view.apply(ViewEvent::Labels {
            node: n.clone(),
            labels: tray(UUID_A, clique, "l1"),
        });
    }
    names
}

fn extender() -> (Extender, Arc<MemoryPlacementIndex>) {
    let view = SharedView::new(ClusterView::new(view::LabelKeys {
        prefix: "nodetopo.io".into(),
        block_label: Some("leaf".into()),
    }));
    let placements = Arc::new(MemoryPlacementIndex::new());
    (
        Extender::new(view, placements.clone(), Weights::default()),
        placements,
    )
}

/// Pod `index` of LWS group `group` of LeaderWorkerSet `lws` (size `size`), asking for 4 GPUs.
fn lws_pod(lws: &str, group: u32, index: u32, size: u32) -> Pod {
    lws_pod_gpus(lws, group, index, size, 4)
}

/// [`lws_pod`] asking for `gpus` GPUs.
fn lws_pod_gpus(lws: &str, group: u32, index: u32, size: u32, gpus: u32) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": format!("{lws}-{group}-{index}"), "namespace": "ns",
            "labels": {
                "leaderworkerset.sigs.k8s.io/name": lws,
                "leaderworkerset.sigs.k8s.io/group-index": group.to_string(),
                "leaderworkerset.sigs.k8s.io/worker-index": index.to_string(),
            },
            "annotations": {"leaderworkerset.sigs.k8s.io/size": size.to_string()},
        },
        "spec": {"containers": [{"name": "w",
            "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]},
    }))
    .unwrap()
}

fn names_args(pod: &Pod, nodes: &[String]) -> ExtenderRequest {
    ExtenderRequest {
        pod: Some(pod.clone()),
        nodes: None,
        node_names: Some(nodes.to_vec()),
    }
}

fn full_args(pod: &Pod, nodes: &[(String, BTreeMap<String, String>)]) -> ExtenderRequest {
    let items: Vec<serde_json::Value> = nodes
        .iter()
        .map(|(n, l)| serde_json::json!({"metadata": {"name": n, "labels": l}}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "Pod": pod, "Nodes": {"items": items},
    }))
    .unwrap()
}

fn kept(ext: &Extender, args: &ExtenderRequest) -> Vec<String> {
    let (r, _) = ext.filter(args);
    match (r.node_names, r.nodes) {
        (Some(n), _) => n,
        (None, Some(list)) => list.items.into_iter().filter_map(|n| n.name).collect(),
        (None, None) => Vec::new(),
    }
}

fn place(placements: &MemoryPlacementIndex, pod: &Pod, node: &str) {
    placements.apply(PodEvent::Placed(PlacedPod {
        pod: group::pod_key(pod).unwrap(),
        node: node.into(),
        group: group::group_of(pod).unwrap(),
        gpus: crate::extender::placed::gpu_request(pod),
    }));
}

/// Fault 1: in full-Node mode a member whose node has filled up (so kube-scheduler no longer
/// lists it) must keep its group together.
#[test]
fn a_member_on_a_full_node_still_holds_its_group() {
    let (ext, placements) = extender();
    let nodes: Vec<(String, BTreeMap<String, String>)> = vec![
        ("a1".into(), tray(UUID_A, 1, "l1")),
        ("a2".into(), tray(UUID_A, 1, "l1")),
        ("b1".into(), tray(UUID_A, 2, "l2")),
        ("b2".into(), tray(UUID_A, 2, "l2")),
        ("b3".into(), tray(UUID_A, 2, "l2")),
    ];
    let p0 = lws_pod("decode", 0, 0, 2);
    let first = kept(&ext, &full_args(&p0, &nodes));
    assert_eq!(
        first,
        ["a1", "a2"],
        "the only clique that fits the group tightly"
    );
    place(&placements, &p0, "a1");
    // a1 is full now: kube-scheduler leaves it out of the next request.
    let p1 = lws_pod("decode", 0, 1, 2);
    let rest: Vec<_> = nodes.iter().filter(|(n, _)| n != "a1").cloned().collect();
    let (r, ex) = ext.filter(&full_args(&p1, &rest));
    assert_eq!(
        ex.context.members.len(),
        1,
        "the member on a1 is still known"
    );
    let kept: Vec<String> = r
        .nodes
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.name)
        .collect();
    assert_eq!(kept, ["a2"]);
    assert!(r.failed_and_unresolvable_nodes["b1"].contains("outside clique"));
}

/// kube-scheduler binds in the background and places the next member at once: before the pod
/// watch shows the first member, the group's reservation keeps the second in the same domain,
/// and another group does not count that room as free.
#[test]
fn reservation_bridges_the_pod_watch_delay() {
    let (ext, placements) = extender();
    let names: Vec<String> = (1..=3)
        .map(|i| format!("a{i}"))
        .chain((1..=2).map(|i| format!("b{i}")))
        .collect();
    for n in &names {
        let clique = if n.starts_with('a') { 1 } else { 2 };
        ext.view.apply(ViewEvent::Labels {
            node: n.clone(),
            labels: tray(UUID_A, clique, "l1"),
        });
    }
    let g0 = |i| lws_pod("decode", 0, i, 2);
    // Best fit: clique 2 holds exactly 2.
    assert_eq!(kept(&ext, &names_args(&g0(0), &names)), ["b1", "b2"]);
    // b1 taken, the watch has not shown it yet. A single-pod group would fit b2 best, but b2
    // is held for the decode group's second member: it goes to clique 1.
    let left: Vec<String> = names.iter().filter(|n| *n != "b1").cloned().collect();
    let single = lws_pod("prefill", 0, 0, 1);
    assert_eq!(kept(&ext, &names_args(&single, &left)), ["a1", "a2", "a3"]);
    // The decode group's second member joins the first.
    assert_eq!(kept(&ext, &names_args(&g0(1), &left)), ["b2"]);
    assert!(
        ext.reservations
            .held("other", placements.as_ref(), Instant::now())
            .is_empty(),
        "every member passed"
    );
}

#[derive(Debug, Clone)]
struct Cluster {
    /// Free nodes per clique (the cliques of one NVLink cluster) or per leaf.
    free: Vec<u32>,
    nvlink: bool,
    size: u32,
    seed: u64,
    /// Chance that a bound member is visible to the pod watch before the next member.
    visible: f64,
}

fn arb_cluster() -> impl Strategy<Value = Cluster> {
    (
        proptest::collection::vec(0u32..6, 2..7),
        any::<bool>(),
        2u32..6,
        any::<u64>(),
        prop_oneof![Just(0.0), Just(0.5), Just(1.0)],
    )
        .prop_map(|(free, nvlink, size, seed, visible)| Cluster {
            free,
            nvlink,
            size,
            seed,
            visible,
        })
}

/// One scheduling cycle as kube-scheduler runs it: the free nodes as candidates, filter, then
/// prioritize, the best score wins with a random tie-break; the node chosen is taken from
/// `free`. `None` when no node is left.
fn schedule(
    ext: &Extender,
    pod: &Pod,
    free: &mut BTreeSet<String>,
    rng: &mut StdRng,
) -> Option<String> {
    let cands: Vec<String> = free.iter().cloned().collect();
    let keep = kept(ext, &names_args(pod, &cands));
    let (scores, _) = ext.prioritize(&names_args(pod, &keep));
    let best = scores.iter().map(|h| h.score).max()?;
    let top: Vec<&String> = scores
        .iter()
        .filter(|h| h.score == best)
        .map(|h| &h.host)
        .collect();
    let node = top[rng.random_range(0..top.len())].clone();
    free.remove(&node);
    Some(node)
}

/// Places a group of `c.size` pods as kube-scheduler would: each pod's candidates are the free
/// nodes, filter then prioritize, the best score wins with a random tie-break. A decode group
/// already runs in the first domain, so that counterpart closeness pulls the new group there.
fn place_group(c: &Cluster) -> (Vec<usize>, BTreeMap<String, usize>) {
    let (ext, placements) = extender();
    let mut rng = StdRng::seed_from_u64(c.seed);
    let mut domain_of = BTreeMap::new();
    let mut free: BTreeSet<String> = BTreeSet::new();
    for (d, n) in c.free.iter().enumerate() {
        // One busy node per domain runs the decode group's pods (domain 0 only).
        for i in 0..=*n {
            let name = format!("d{d}-n{i}");
            let labels = if c.nvlink {
                tray(UUID_A, u32::try_from(d).unwrap() + 1, "l1")
            } else {
                hgx(&format!("leaf{d}"))
            };
            ext.view.apply(ViewEvent::Labels {
                node: name.clone(),
                labels,
            });
            domain_of.insert(name.clone(), d);
            if i == 0 {
                if d == 0 {
                    place(&placements, &lws_pod("m-decode", 0, 0, 1), &name);
                }
            } else {
                free.insert(name);
            }
        }
    }
    let mut chosen = Vec::new();
    let mut pending: Vec<(Pod, String)> = Vec::new();
    // Whole-node pods: each free node takes one.
    let gpus = if c.nvlink { 4 } else { 8 };
    for i in 0..c.size {
        let pod = lws_pod_gpus("m-prefill", 0, i, c.size, gpus);
        let Some(node) = schedule(&ext, &pod, &mut free, &mut rng) else {
            break;
        };
        chosen.push(domain_of[&node]);
        pending.push((pod, node));
        // The watch delivers some bindings before the next pod, some later.
        pending.retain(|(p, n)| {
            if rng.random_bool(c.visible) {
                place(&placements, p, n);
                false
            } else {
                true
            }
        });
    }
    (chosen, domain_of)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Fault 2: with fragmented free capacity, a group whose size fits in some domain is never
    /// split, whatever the counterpart pull and the watch delay.
    #[test]
    fn a_group_that_fits_a_domain_is_never_split(c in arb_cluster()) {
        let fits = c.free.iter().any(|n| *n >= c.size);
        let (chosen, _) = place_group(&c);
        if fits {
            prop_assert_eq!(chosen.len(), c.size as usize);
            let first = chosen[0];
            prop_assert!(chosen.iter().all(|d| *d == first), "split: {:?} for {:?}", chosen, c);
            prop_assert!(c.free[first] >= c.size, "a domain too small was chosen: {:?}", c);
        }
    }
}

/// A group whose members were all seen placed no longer holds room, even after its pods are
/// deleted: the next group may use the domain.
#[test]
fn a_complete_group_releases_its_reservation() {
    let (ext, placements) = extender();
    let names = trays(&ext, "b", 2, 2);
    let g = |i| lws_pod("decode", 0, i, 2);
    assert_eq!(kept(&ext, &names_args(&g(0), &names)), ["b1", "b2"]);
    place(&placements, &g(0), "b1");
    assert_eq!(kept(&ext, &names_args(&g(1), &names[1..])), ["b2"]);
    assert!(
        ext.reservations
            .held("other", placements.as_ref(), Instant::now())
            .is_empty(),
        "the last member admitted holds no more room"
    );
    place(&placements, &g(1), "b2");
    let h = lws_pod("prefill", 0, 0, 2);
    // The domain is full of decode.
    assert!(kept(&ext, &names_args(&h, &[])).is_empty());
    for i in 0..2 {
        placements.apply(PodEvent::Removed {
            pod: group::pod_key(&g(i)).unwrap(),
        });
    }
    assert_eq!(kept(&ext, &names_args(&h, &names)), ["b1", "b2"]);
}

/// Issue 22 (5): a pod still behind a scheduling gate (Grove's, until its PodGang exists)
/// reserves no domain when asked about; once ungated, it does.
#[test]
fn a_gated_pod_reserves_nothing() {
    let (ext, _placements) = extender();
    let names = trays(&ext, "b", 2, 2);
    let mut p = lws_pod("decode", 0, 0, 2);
    p.spec.as_mut().unwrap().scheduling_gates =
        Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
            name: crate::extender::group::grove::PODGANG_GATE.into(),
        }]);
    assert_eq!(kept(&ext, &names_args(&p, &names)), ["b1", "b2"]);
    assert!(ext.reservations.is_empty(), "a gated pod reserved a domain");
    p.spec.as_mut().unwrap().scheduling_gates = None;
    assert_eq!(kept(&ext, &names_args(&p, &names)), ["b1", "b2"]);
    assert_eq!(ext.reservations.len(), 1);
}

/// Members that passed the filter but are not in the pod watch yet (and may already be deleted
/// again) hold no room once every member has passed.
#[test]
fn a_reservation_ends_when_every_member_passed_the_filter() {
    let (ext, placements) = extender();
    let names = trays(&ext, "b", 2, 2);
    let g = |i| lws_pod("decode", 0, i, 2);
    assert_eq!(kept(&ext, &names_args(&g(0), &names)), ["b1", "b2"]);
    assert_eq!(ext.reservations.len(), 1);
    // Filtered again (a retry) is the same pod: still one member to come.
    assert_eq!(kept(&ext, &names_args(&g(0), &names)), ["b1", "b2"]);
    assert_eq!(ext.reservations.len(), 1);
    assert_eq!(kept(&ext, &names_args(&g(1), &names[1..])), ["b2"]);
    assert!(
        ext.reservations
            .held("other", placements.as_ref(), Instant::now())
            .is_empty()
    );
    // Both pods were deleted before the watch showed them: the room is free for the next group.
    let h = lws_pod("prefill", 0, 0, 2);
    assert_eq!(kept(&ext, &names_args(&h, &names)), ["b1", "b2"]);
}

/// A filter answer names at most FILTER_REASONS rejected nodes; the rest are counted.
#[test]
fn filter_reasons_are_bounded() {
    let (ext, _) = extender();
    let names: Vec<String> = (0..200).map(|i| format!("n{i:03}")).collect();
    for (i, n) in names.iter().enumerate() {
        ext.view.apply(ViewEvent::Labels {
            node: n.clone(),
            labels: tray(UUID_A, u32::try_from(i / 10).unwrap(), "l1"),
        });
    }
    let p = lws_pod("decode", 0, 0, 10);
    let (r, ex) = ext.filter(&names_args(&p, &names));
    assert_eq!(r.node_names.unwrap().len(), 10, "one clique of 10");
    assert_eq!(r.failed_and_unresolvable_nodes.len(), FILTER_REASONS);
    assert_eq!(ex.rejected_more, 190 - FILTER_REASONS);
    assert_eq!(ext.evaluate(&names_args(&p, &names)).rejected.len(), 190);
}

/// Labels of an 8-GPU InfiniBand node in scalable unit `su` of spine block `block`, as the
/// agent publishes them from SMP.
fn ib_su(block: usize, su: usize) -> BTreeMap<String, String> {
    [
        ("nodetopo.io/gpu.count", "8".to_string()),
        ("nodetopo.io/nvlink.fabric", "none".into()),
        ("nodetopo.io/rdma.link-layer", "infiniband".into()),
        ("nodetopo.io/rdma.ib-subnet", "fe80-0000-0000-0000".into()),
        ("nodetopo.io/ib.su", format!("b{block}-su{su}")),
        ("nodetopo.io/ib.block", format!("b{block}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Room in GPUs: a group of four 4-GPU pods fits two free 8-GPU nodes of one scalable unit,
/// so it is kept there rather than spread over the spine block where four nodes are free.
#[test]
fn room_is_counted_in_gpus_not_nodes() {
    let (ext, _placements) = extender();
    let mut cands = Vec::new();
    for (su, free) in [(0, 2), (1, 1), (2, 1)] {
        for i in 0..free {
            let name = format!("su{su}-n{i}");
            ext.view.apply(ViewEvent::Labels {
                node: name.clone(),
                labels: ib_su(0, su),
            });
            cands.push(name);
        }
    }
    let pod = lws_pod_gpus("m-decode", 0, 0, 4, 4);
    let (r, ex) = ext.filter(&names_args(&pod, &cands));
    assert_eq!(
        r.node_names.unwrap(),
        vec!["su0-n0", "su0-n1"],
        "the scalable unit with room for 4 pods"
    );
    match ex.domain {
        Some(GroupDomain::Chosen { domain, room, .. }) => {
            assert_eq!(domain.level, policy::Level::Leaf);
            assert_eq!(room, 4, "two 8-GPU nodes take four 4-GPU pods");
        }
        other => panic!("{other:?}"),
    }
}

/// A fragmented InfiniBand fleet: spine blocks of scalable units, each with some free 8-GPU
/// nodes.
#[derive(Debug, Clone)]
struct Fleet {
    /// Free nodes per scalable unit, per block.
    free: Vec<Vec<usize>>,
    decode: u32,
    prefill: u32,
    seed: u64,
    visible: f64,
}

fn arb_fleet() -> impl Strategy<Value = Fleet> {
    (
        proptest::collection::vec(proptest::collection::vec(0usize..5, 1..4), 1..4),
        1u32..5,
        1u32..5,
        any::<u64>(),
        prop_oneof![Just(0.0), Just(1.0)],
    )
        .prop_map(|(free, decode, prefill, seed, visible)| Fleet {
            free,
            decode,
            prefill,
            seed,
            visible,
        })
}

/// Places a decode group and then its prefill group of whole-node pods, both created (waiting
/// in the pod watch) before the first is scheduled, as kube-scheduler would: each pod's
/// candidates are the free nodes, filter then prioritize, random tie-breaks. Returns the
/// `(block, su)` of each decode and each prefill pod.
type Spots = Vec<(usize, usize)>;

fn place_pair(f: &Fleet) -> (Spots, Spots) {
    let (ext, placements) = extender();
    let mut rng = StdRng::seed_from_u64(f.seed);
    let mut where_: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (b, sus) in f.free.iter().enumerate() {
        for (s, n) in sus.iter().enumerate() {
            for i in 0..*n {
                let name = format!("b{b}-su{s}-n{i}");
                ext.view.apply(ViewEvent::Labels {
                    node: name.clone(),
                    labels: ib_su(b, s),
                });
                where_.insert(name, (b, s));
            }
        }
    }
    let mut free: BTreeSet<String> = where_.keys().cloned().collect();
    let pods = |lws: &str, size: u32| -> Vec<Pod> {
        (0..size)
            .map(|i| lws_pod_gpus(lws, 0, i, size, 8))
            .collect()
    };
    let decode = pods("m-decode", f.decode);
    let prefill = pods("m-prefill", f.prefill);
    for p in decode.iter().chain(&prefill) {
        placements.apply(PodEvent::from_pod(p).unwrap());
    }
    let mut out = (Vec::new(), Vec::new());
    for (role, group) in [(0, &decode), (1, &prefill)] {
        for pod in group {
            let Some(node) = schedule(&ext, pod, &mut free, &mut rng) else {
                break;
            };
            if rng.random_bool(f.visible) {
                place(&placements, pod, &node);
            }
            let at = where_[&node];
            if role == 0 {
                out.0.push(at);
            } else {
                out.1.push(at);
            }
        }
    }
    out
}

/// The tightest level (0: scalable unit, 1: spine block, 2: fabric) at which some domain holds
/// `size` nodes, or 3.
fn own_level(free: &[Vec<usize>], size: usize) -> usize {
    if free.iter().flatten().any(|n| *n >= size) {
        0
    } else if free.iter().any(|b| b.iter().sum::<usize>() >= size) {
        1
    } else if free.iter().flatten().sum::<usize>() >= size {
        2
    } else {
        3
    }
}

/// Where both groups fit a scalable unit of their own: the tightest level (0: one scalable unit,
/// 1: one spine block, 2: the fabric) at which one domain holds the decode group in one
/// scalable unit and the prefill group in one scalable unit beside it.
fn pair_level(free: &[Vec<usize>], decode: usize, prefill: usize) -> usize {
    if free.iter().flatten().any(|n| *n >= decode + prefill) {
        return 0;
    }
    let block = free.iter().any(|b| {
        b.iter().enumerate().any(|(i, n)| {
            *n >= decode && b.iter().enumerate().any(|(j, m)| j != i && *m >= prefill)
        })
    });
    if block { 1 } else { 2 }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The deployment, not only the group: the decode group is kept at its own tightest level
    /// (one scalable unit, else one spine block, wherever one holds it), and whenever one domain
    /// at a level holds it there together with its prefill group (each in a scalable unit of
    /// its own), both land inside that level.
    #[test]
    fn decode_and_prefill_land_within_the_tightest_level_that_holds_both(f in arb_fleet()) {
        let (d_size, p_size) = (f.decode as usize, f.prefill as usize);
        let total: usize = f.free.iter().flatten().sum();
        prop_assume!(total >= d_size + p_size);
        let (d, p) = place_pair(&f);
        prop_assert_eq!(d.len() + p.len(), d_size + p_size, "every pod placed: {:?}", f);
        let same = |g: &[&(usize, usize)], level: usize| match level {
            0 => g.iter().all(|x| *x == g[0]),
            1 => g.iter().all(|x| x.0 == g[0].0),
            _ => true,
        };
        let decode: Vec<&(usize, usize)> = d.iter().collect();
        let own = own_level(&f.free, d_size);
        prop_assert!(same(&decode, own), "decode split below level {}: {:?} for {:?}", own, d, f);
        // Where both groups can each have a scalable unit of their own, they get one, inside
        // the tightest level that holds both that way.
        if own == 0 && own_level(&f.free, p_size) == 0 {
            let all: Vec<&(usize, usize)> = d.iter().chain(&p).collect();
            let level = pair_level(&f.free, d_size, p_size);
            prop_assert!(same(&all, level), "the pair left level {}: {:?} + {:?} for {:?}", level, d, p, f);
        }
    }
}

/// A group replaced as a whole (a LeaderWorkerSet rolling update deletes a group's pods and
/// makes them again under the same group key) goes back to the domain it ran in, although
/// another one fits more tightly.
#[test]
fn a_replaced_group_returns_to_its_domain() {
    let (ext, placements) = extender();
    let mut names = trays(&ext, "a", 1, 2);
    names.extend(trays(&ext, "b", 2, 3));
    let g = |i| lws_pod("decode", 0, i, 2);
    place(&placements, &g(0), "b1");
    place(&placements, &g(1), "b2");
    for i in 0..2 {
        placements.apply(PodEvent::Removed {
            pod: group::pod_key(&g(i)).unwrap(),
        });
    }
    assert_eq!(kept(&ext, &names_args(&g(0), &names)), ["b1", "b2", "b3"]);
    // A new group of the same size takes the tighter clique.
    let other = lws_pod("other", 0, 0, 2);
    assert_eq!(kept(&ext, &names_args(&other, &names)), ["a1", "a2"]);
}

/// A group replaced as a whole while its old pods are still leaving: kube-scheduler still counts
/// them, so their nodes are not candidates yet. The new group waits for its own domain instead
/// of moving to another one with room now (the rolling-update race of the end-to-end test),
/// and its second member waits beside the first rather than splitting.
#[test]
fn a_replaced_group_waits_for_its_leaving_pods() {
    let (ext, placements) = extender();
    let su0: Vec<String> = (0..4).map(|i| format!("su0-{i}")).collect();
    let su1: Vec<String> = (0..4).map(|i| format!("su1-{i}")).collect();
    for n in &su0 {
        ext.view.apply(ViewEvent::Labels {
            node: n.clone(),
            labels: hgx("leaf-0"),
        });
    }
    for n in &su1 {
        ext.view.apply(ViewEvent::Labels {
            node: n.clone(),
            labels: hgx("leaf-1"),
        });
    }
    let g = |i| lws_pod_gpus("decode", 0, i, 2, 8);
    place(&placements, &g(0), "su0-1");
    place(&placements, &g(1), "su0-3");
    for i in 0..2 {
        placements.apply(PodEvent::Removed {
            pod: group::pod_key(&g(i)).unwrap(),
        });
    }
    // su0-0 and su0-2 are taken by other pods, su0-3 still holds the leaving worker: su0 has
    // one candidate now, su1 has four.
    let candidates: Vec<String> = ["su0-1", "su1-0", "su1-1", "su1-2", "su1-3"]
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(kept(&ext, &names_args(&g(0), &candidates)), ["su0-1"]);
    // The leader is placed there; the worker waits for su0-3 rather than leaving the leaf.
    place(&placements, &g(0), "su0-1");
    let worker: Vec<String> = ["su1-0", "su1-1"].iter().map(ToString::to_string).collect();
    assert!(kept(&ext, &names_args(&g(1), &worker)).is_empty());
    let freed: Vec<String> = ["su0-3", "su1-0"].iter().map(ToString::to_string).collect();
    assert_eq!(kept(&ext, &names_args(&g(1), &freed)), ["su0-3"]);
    // A group that never ran there is not held back.
    let other = lws_pod_gpus("other", 0, 0, 2, 8);
    assert_eq!(
        kept(&ext, &names_args(&other, &candidates)),
        ["su1-0", "su1-1", "su1-2", "su1-3"]
    );
}
