use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;

use super::*;
use crate::{
    extender::{
        facts::NodeFacts,
        group::{group_of, lws},
        placed::{MemoryPlacementIndex, PlacedPod, PlacementIndex},
        view::{ClusterView, LabelKeys, ViewEvent},
        wire::MAX_EXTENDER_PRIORITY,
    },
    model::{FabricState, LinkLayer},
};

fn ib(subnet: &str) -> NodeFacts {
    NodeFacts {
        gpu_count: 4,
        fabric_state: FabricState::None,
        link_layer: Some(LinkLayer::Infiniband),
        ib_subnets: vec![subnet.into()],
        ..Default::default()
    }
}

fn nvl(cluster: &str, clique: u32, state: FabricState) -> NodeFacts {
    NodeFacts {
        fabric_state: state,
        cluster_uuid: Some(cluster.into()),
        clique_id: Some(clique),
        ..ib("s1")
    }
}

fn roce() -> NodeFacts {
    NodeFacts {
        gpu_count: 8,
        link_layer: Some(LinkLayer::Ethernet),
        ..Default::default()
    }
}

fn peer(node: &str, facts: NodeFacts) -> PeerFacts {
    PeerFacts {
        pod: format!("ns/{node}-pod"),
        node: node.into(),
        facts,
    }
}

fn ctx(members: Vec<PeerFacts>) -> PodContext {
    PodContext {
        group: None,
        requires_gpu: true,
        requests_gpu: true,
        requires_rdma: true,
        members,
        counterparts: Vec::new(),
        remaining: Some(2),
        gpus: 4,
        previous: None,
        counterpart_waiting: Vec::new(),
    }
}

#[test]
fn rejects_unknown_and_gpu_less_and_rdma_less_nodes() {
    let c = ctx(Vec::new());
    assert!(
        filter_node(&c, None)
            .unwrap_err()
            .to_string()
            .contains("no topology")
    );
    let no_gpu = NodeFacts {
        gpu_count: 0,
        ..ib("s1")
    };
    assert!(
        filter_node(&c, Some(&no_gpu))
            .unwrap_err()
            .to_string()
            .contains("no GPUs")
    );
    let no_rdma = NodeFacts {
        link_layer: None,
        ..ib("s1")
    };
    assert!(
        filter_node(&c, Some(&no_rdma))
            .unwrap_err()
            .to_string()
            .contains("no active RDMA")
    );
    assert!(filter_node(&c, Some(&ib("s1"))).is_ok());
}

#[test]
fn rejects_other_link_layer_and_other_subnet() {
    let c = ctx(vec![peer("a", ib("s1"))]);
    assert!(
        filter_node(&c, Some(&roce()))
            .unwrap_err()
            .to_string()
            .contains("link layer ethernet")
    );
    assert!(
        filter_node(&c, Some(&ib("s2")))
            .unwrap_err()
            .to_string()
            .contains("subnet")
    );
    assert!(filter_node(&c, Some(&ib("s1"))).is_ok());
}

#[test]
fn mnnvl_group_stays_in_its_cluster_and_on_healthy_fabric() {
    let c = ctx(vec![peer("a", nvl("u1", 0, FabricState::Ready))]);
    assert_eq!(c.mnnvl_cluster(), Some("u1"));
    assert!(
        filter_node(&c, Some(&nvl("u2", 0, FabricState::Ready)))
            .unwrap_err()
            .to_string()
            .contains("outside the group's NVLink cluster u1")
    );
    for bad in [
        FabricState::Pending,
        FabricState::Degraded,
        FabricState::Inconsistent,
    ] {
        let e = filter_node(&c, Some(&nvl("u1", 1, bad)))
            .unwrap_err()
            .to_string();
        assert!(e.contains(bad.as_str()), "{e}");
    }
    assert!(filter_node(&c, Some(&nvl("u1", 1, FabricState::Ready))).is_ok());
    // A non-MNNVL group does not care about fabric state.
    let c = ctx(vec![peer("a", ib("s1"))]);
    assert!(filter_node(&c, Some(&nvl("u1", 1, FabricState::Degraded))).is_ok());
}

#[test]
fn proximity_levels() {
    let a = nvl("u", 0, FabricState::Ready);
    assert_eq!(
        proximity(&a, &nvl("u", 0, FabricState::Ready)),
        Level::Clique
    );
    assert_eq!(
        proximity(&a, &nvl("u", 1, FabricState::Ready)),
        Level::Cluster
    );
    let blk = |b: &str, s: &str| NodeFacts {
        block: Some(b.into()),
        ..ib(s)
    };
    assert_eq!(proximity(&blk("l1", "s1"), &blk("l1", "s1")), Level::Block);
    assert_eq!(proximity(&blk("l1", "s1"), &blk("l2", "s1")), Level::Fabric);
    assert_eq!(proximity(&blk("l1", "s1"), &blk("l1", "s2")), Level::None);
    assert_eq!(proximity(&ib("s1"), &roce()), Level::None);
    // The same scalable unit beats the same block; a spine block alone is a block.
    let su = |l: &str, b: &str| NodeFacts {
        leaf: Some(format!("ib-su:{l}")),
        block: Some(format!("ib:{b}")),
        ..ib("s1")
    };
    assert_eq!(proximity(&su("u1", "b1"), &su("u1", "b1")), Level::Leaf);
    assert_eq!(proximity(&su("u1", "b1"), &su("u2", "b1")), Level::Block);
    assert_eq!(proximity(&su("u1", "b1"), &su("u2", "b2")), Level::Fabric);
    let mut other_fabric = su("u1", "b1");
    other_fabric.ib_subnets = vec!["s2".into()];
    assert_eq!(proximity(&su("u1", "b1"), &other_fabric), Level::None);
    assert_eq!(
        domain_key(&su("u1", "b1"), Level::Leaf),
        domain_key(&su("u1", "b2"), Level::Leaf)
    );
    assert_ne!(
        domain_key(&su("u1", "b1"), Level::Block),
        domain_key(&su("u1", "b2"), Level::Block)
    );
}

#[test]
fn scores_prefer_clique_then_cluster_and_counterpart_is_smaller() {
    let w = Weights::default();
    w.validate().unwrap();
    let facts = [
        nvl("u", 0, FabricState::Ready),
        nvl("u", 1, FabricState::Ready),
        ib("s1"),
    ];
    let cands: Vec<Candidate<'_>> = ["same-clique", "same-cluster", "fabric"]
        .iter()
        .zip(facts.iter())
        .map(|(n, f)| Candidate::new(n, Some(f), None, 0))
        .collect();
    let mut c = ctx(vec![peer("m", nvl("u", 0, FabricState::Ready))]);
    c.remaining = None;
    let s = score_nodes(&c, &cands, &w);
    assert!(s[0].score > s[1].score && s[1].score > s[2].score, "{s:?}");

    // Members in clique 0, the counterpart role in clique 1: the group wins.
    let mut both = ctx(vec![peer("m", nvl("u", 0, FabricState::Ready))]);
    both.remaining = None;
    both.counterparts = vec![peer("p", nvl("u", 1, FabricState::Ready))];
    let t = score_nodes(&both, &cands, &w);
    assert!(t[0].score > t[1].score, "{t:?}");
    assert!(t[1].counterpart > t[0].counterpart);
}

#[test]
fn capacity_prefers_a_clique_with_room() {
    // Clique 0 has one candidate, clique 1 has three; three pods remain.
    let f0 = nvl("u", 0, FabricState::Ready);
    let f1 = nvl("u", 1, FabricState::Ready);
    let cands = vec![
        Candidate::new("a", Some(&f0), None, 0),
        Candidate::new("b", Some(&f1), None, 0),
        Candidate::new("c", Some(&f1), None, 0),
        Candidate::new("d", Some(&f1), None, 0),
    ];
    let mut c = ctx(Vec::new());
    c.remaining = Some(3);
    let s = score_nodes(&c, &cands, &Weights::default());
    assert_eq!(s[0].capacity_level, Level::Cluster);
    assert_eq!(s[1].capacity_level, Level::Clique);
    assert!(s[1].score > s[0].score);
}

#[test]
fn weights_are_checked() {
    let bad = Weights {
        counterpart: 7.0,
        ..Default::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(WeightsError::CounterpartTooLarge { .. })
    ));
    let bad = Weights {
        level_block: 0.9,
        ..Default::default()
    };
    assert_eq!(bad.validate(), Err(WeightsError::LevelOrder));
    let bad = Weights {
        capacity: -1.0,
        ..Default::default()
    };
    assert!(matches!(bad.validate(), Err(WeightsError::Negative { .. })));
    let bad = Weights {
        within_group: 0.0,
        counterpart: 0.0,
        capacity: 0.0,
        ..Default::default()
    };
    assert_eq!(bad.validate(), Err(WeightsError::AllZero));
}

#[test]
fn pod_context_from_index_and_view() {
    let mut view = ClusterView::new(LabelKeys {
        prefix: "nodetopo.io".into(),
        block_label: None,
    });
    let labels: BTreeMap<String, String> = [
        ("nodetopo.io/gpu.count", "4"),
        ("nodetopo.io/nvlink.fabric", "ready"),
        ("nodetopo.io/nvlink.domain", "u.0"),
        ("nodetopo.io/rdma.link-layer", "infiniband"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    view.apply(ViewEvent::Labels {
        node: "n1".into(),
        labels,
    });
    let mut pod = Pod::default();
    pod.metadata.name = Some("w-1".into());
    pod.metadata.namespace = Some("ns".into());
    pod.metadata.labels = Some(
        [
            (lws::NAME.to_string(), "d".to_string()),
            (lws::GROUP_INDEX.to_string(), "0".to_string()),
        ]
        .into(),
    );
    pod.metadata.annotations = Some([(lws::SIZE.to_string(), "4".to_string())].into());
    let group = group_of(&pod).unwrap();
    let idx = MemoryPlacementIndex::new();
    idx.apply(crate::extender::placed::PodEvent::Placed(PlacedPod {
        pod: "ns/w-0".into(),
        node: "n1".into(),
        group: group.clone(),
        gpus: 4,
    }));
    let c = pod_context(&pod, &view, &idx, &BTreeMap::new());
    assert_eq!(c.members.len(), 1);
    assert_eq!(c.remaining, Some(3));
    assert!(c.requires_gpu && c.requires_rdma);
    assert_eq!(c.mnnvl_cluster(), Some("u"));
}

fn arb_facts() -> impl Strategy<Value = Option<NodeFacts>> {
    proptest::option::weighted(
        0.9,
        (
            0u32..3,
            0u32..3,
            0u32..4,
            0usize..7,
            proptest::option::of(0u32..3),
            proptest::option::of(0u32..2),
        )
            .prop_map(|(gpus, ll, subnet, state, clique, block)| {
                let states: Vec<FabricState> =
                    <FabricState as strum::IntoEnumIterator>::iter().collect();
                NodeFacts {
                    gpu_count: gpus * 4,
                    fabric_state: states[state],
                    cluster_uuid: clique.map(|c| format!("u{}", c / 2)),
                    clique_id: clique,
                    link_layer: match ll {
                        0 => None,
                        1 => Some(LinkLayer::Infiniband),
                        _ => Some(LinkLayer::Ethernet),
                    },
                    ib_subnets: if ll == 1 {
                        vec![format!("s{subnet}")]
                    } else {
                        Vec::new()
                    },
                    leaf: block
                        .filter(|b| b % 2 == 0)
                        .map(|b| format!("ib-su:{}", b / 2)),
                    block: block.map(|b| format!("leaf{b}")),
                }
            }),
    )
}

fn arb_weights() -> impl Strategy<Value = Weights> {
    (0.0f64..10.0, 0.0f64..1.0, 0.0f64..10.0, 0.0f64..1.0).prop_map(|(wg, cp, cap, lv)| Weights {
        within_group: wg + 0.01,
        counterpart: (wg + 0.01) * cp,
        capacity: cap,
        level_clique: 1.0,
        level_cluster: 0.5 + lv / 2.0,
        level_leaf: 0.5,
        level_block: 0.5,
        level_fabric: lv / 2.0,
    })
}

proptest! {
    #[test]
    fn scores_in_range_filter_is_subset_and_deterministic(
        nodes in proptest::collection::vec(arb_facts(), 0..40),
        members in proptest::collection::vec(arb_facts(), 0..4),
        counterparts in proptest::collection::vec(arb_facts(), 0..3),
        remaining in proptest::option::of(1u32..10),
        w in arb_weights(),
    ) {
        prop_assert!(w.validate().is_ok());
        let c = PodContext {
            group: None,
            requires_gpu: true,
            requests_gpu: true,
            requires_rdma: remaining.unwrap_or(1) > 1,
            members: members.into_iter().flatten().enumerate().map(|(i, f)| peer(&format!("m{i}"), f)).collect(),
            counterparts: counterparts.into_iter().flatten().enumerate().map(|(i, f)| peer(&format!("c{i}"), f)).collect(),
            remaining,
            gpus: 4,
            previous: None,
            counterpart_waiting: Vec::new(),
        };
        let names: Vec<String> = (0..nodes.len()).map(|i| format!("n{i}")).collect();
        let passed: Vec<Candidate<'_>> = names.iter().zip(nodes.iter())
            .filter(|(_, f)| filter_node(&c, f.as_ref()).is_ok())
            .map(|(n, f)| Candidate::new(n, f.as_ref(), None, 0))
            .collect();
        prop_assert!(passed.len() <= nodes.len());
        for p in &passed {
            prop_assert!(names.iter().any(|n| n == p.name));
        }
        let a = score_nodes(&c, &passed, &w);
        let b = score_nodes(&c, &passed, &w);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.len(), passed.len());
        for s in &a {
            prop_assert!((0..=MAX_EXTENDER_PRIORITY).contains(&s.score));
        }
    }
}

proptest! {
    /// The domain chosen for a group does not depend on the candidates' order (the room count
    /// runs over hashed classes of alike nodes; ties go to the smallest key), and holds the
    /// group: its room (counted over the candidates inside the pair's anchor, when there is
    /// one) takes every remaining pod and is no more than its candidates take.
    #[test]
    fn chosen_domain_ignores_candidate_order_and_holds_the_group(
        nodes in proptest::collection::vec(arb_facts(), 1..40),
        pods in 1u32..6,
        gpus in 0u32..5,
        waiting in proptest::option::of(1u32..6),
        guessed in any::<bool>(),
    ) {
        let names: Vec<String> = (0..nodes.len()).map(|i| format!("n{i}")).collect();
        let cands: Vec<Candidate<'_>> = names.iter().zip(nodes.iter())
            .map(|(n, f)| Candidate::new(n, f.as_ref(), None, 0))
            .collect();
        let mut reversed = cands.clone();
        reversed.reverse();
        let need = Demand { pods, gpus_per_pod: gpus };
        let cp = Counterpart {
            waiting: waiting.map(|p| Demand { pods: p, gpus_per_pod: gpus }),
            guessed,
            ..Counterpart::default()
        };
        let a = choose_domain(need, cp, &cands, &[]);
        let b = choose_domain(need, cp, &reversed, &[]);
        prop_assert_eq!(&a, &b);
        if let Some(GroupDomain::Chosen { domain, room, .. }) = &a {
            let inside: u32 = cands
                .iter()
                .filter_map(|c| c.facts)
                .filter(|f| domain.contains(f))
                .map(|f| f.gpu_count.checked_div(gpus).unwrap_or(1).max(1))
                .sum();
            prop_assert!(*room >= pods && *room <= inside, "{domain}: room {room}, inside {inside}");
        }
    }
}
