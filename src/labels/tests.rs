//! Unit and property tests of the label policy.

use proptest::prelude::*;

use super::*;
use crate::model::{
    Connection, DriverInfo, Fabric, Gpu, GpuPair, Nic, NicPort, NvLink, NvLinkRemoteType,
    P2pStatus, Source, SourceStatus,
};

fn key(name: &str) -> LabelKey {
    LabelKey::new(Some(DEFAULT_PREFIX), name).unwrap()
}

fn get<'a>(l: &'a Labels, name: &str) -> Option<&'a str> {
    l.get(&key(name)).map(LabelValue::as_str)
}

fn h200(index: u32) -> Gpu {
    Gpu {
        index,
        uuid: format!("GPU-{index}"),
        name: "NVIDIA H200".into(),
        memory_total_bytes: 143_771 * 1024 * 1024,
        compute_major: 9,
        compute_minor: 0,
        family: GpuFamily::Hopper,
        nvlinks: (0..18)
            .map(|link| NvLink {
                link,
                version: "4.0".into(),
                remote_type: NvLinkRemoteType::Switch,
                remote_pci_bus_id: None,
            })
            .collect(),
        ..Gpu::default()
    }
}

fn two_gpu_node() -> NodeTopology {
    let pair = |a, b| GpuPair {
        a,
        b,
        connection: Connection::NvLink,
        nvlink_count: 18,
        p2p_nvlink: P2pStatus::Ok,
        pcie: Connection::Sys,
    };
    NodeTopology {
        driver: DriverInfo {
            driver_version: Some("580.159.04".into()),
            cuda_driver_version: Some("13.0".into()),
            nvml_version: None,
        },
        gpus: vec![h200(0), h200(1)],
        gpu_pairs: vec![pair(0, 1), pair(1, 0)],
        fabric: Fabric {
            state: FabricState::None,
            ..Fabric::default()
        },
        sources: vec![
            SourceStatus::ok(Source::Nvml),
            SourceStatus::ok(Source::Fabric),
        ],
        ..NodeTopology::default()
    }
}

#[test]
fn h200_node_labels() {
    let l = desired_labels(&two_gpu_node(), &LabelConfig::default());
    assert_eq!(get(&l, "gpu.count"), Some("2"));
    assert_eq!(get(&l, "gpu.product"), Some("NVIDIA-H200"));
    assert_eq!(get(&l, "gpu.memory-mib"), Some("143771"));
    assert_eq!(get(&l, "gpu.family"), Some("hopper"));
    assert_eq!(get(&l, "gpu.compute"), Some("9.0"));
    assert_eq!(get(&l, "gpu.driver"), Some("580.159.04"));
    assert_eq!(get(&l, "cuda.driver"), Some("13.0"));
    assert_eq!(get(&l, "nvlink.links"), Some("18"));
    assert_eq!(get(&l, "nvlink.switch"), Some("true"));
    assert_eq!(get(&l, "nvlink.all-to-all"), Some("true"));
    assert_eq!(get(&l, "nvlink.fabric"), Some("none"));
    // Unknown facts are omitted, never given a placeholder.
    assert_eq!(get(&l, "nvlink.domain"), None);
    assert_eq!(get(&l, "nvlink.cluster"), None);
    assert_eq!(get(&l, "rdma.count"), None);
    assert_eq!(
        render(&l).lines().next(),
        Some("nodetopo.io/cuda.driver=13.0")
    );
}

#[test]
fn no_nvml_means_no_gpu_count() {
    let t = NodeTopology {
        fabric: Fabric {
            state: FabricState::None,
            ..Fabric::default()
        },
        sources: vec![
            SourceStatus::failed(Source::Nvml, "not installed"),
            SourceStatus::failed(Source::Fabric, "not probed: no NVML"),
        ],
        ..NodeTopology::default()
    };
    assert!(desired_labels(&t, &LabelConfig::default()).is_empty());
}

#[test]
fn stale_data_keeps_its_labels() {
    let good = two_gpu_node();
    let mut stale = good.clone();
    stale.sources = vec![
        SourceStatus {
            stale: true,
            ..SourceStatus::failed(Source::Nvml, "driver gone")
        },
        SourceStatus {
            stale: true,
            ..SourceStatus::failed(Source::Fabric, "not probed: no NVML")
        },
    ];
    let c = LabelConfig::default();
    assert_eq!(desired_labels(&stale, &c), desired_labels(&good, &c));
}

#[test]
fn domain_only_when_ready() {
    let mut t = two_gpu_node();
    t.fabric = Fabric {
        state: FabricState::Ready,
        reason: String::new(),
        domain: Some("8f2a1c3e-0000-4000-8000-000000000001.32766".into()),
        cluster_uuid: Some("8f2a1c3e-0000-4000-8000-000000000001".into()),
        clique_id: Some(32766),
    };
    let l = desired_labels(&t, &LabelConfig::default());
    assert_eq!(
        get(&l, "nvlink.domain"),
        Some("8f2a1c3e-0000-4000-8000-000000000001.32766")
    );
    t.fabric.state = FabricState::Degraded;
    let l = desired_labels(&t, &LabelConfig::default());
    assert_eq!(get(&l, "nvlink.domain"), None);
    assert_eq!(get(&l, "nvlink.fabric"), Some("degraded"));
}

#[test]
fn rdma_facts() {
    let mut t = two_gpu_node();
    let port = |ll, rate| NicPort {
        port: 1,
        state: PortState::Active,
        link_layer: ll,
        rate_gbps: rate,
        ..NicPort::default()
    };
    t.nics = vec![
        Nic {
            name: "mlx5_0".into(),
            ports: vec![port(LinkLayer::Infiniband, 400.0)],
            ..Nic::default()
        },
        Nic {
            name: "mlx5_1".into(),
            ports: vec![port(LinkLayer::Ethernet, 200.0)],
            ..Nic::default()
        },
    ];
    let l = desired_labels(&t, &LabelConfig::default());
    assert_eq!(get(&l, "rdma.count"), Some("2"));
    assert_eq!(get(&l, "rdma.link-layer"), Some("mixed"));
    assert_eq!(get(&l, "rdma.rate-gbps"), Some("200"));
    assert_eq!(get(&l, "rdma.gpudirect"), Some("false"));
    assert_eq!(get(&l, "rdma.rail-aligned"), Some("false"));

    // Failed sources without kept data: unknown, so no key.
    t.sources.push(SourceStatus::failed(Source::Gpudirect, "x"));
    t.sources.push(SourceStatus::failed(Source::SysfsPci, "y"));
    let l = desired_labels(&t, &LabelConfig::default());
    assert_eq!(get(&l, "rdma.gpudirect"), None);
    assert_eq!(get(&l, "rdma.rail-aligned"), None);
    assert_eq!(get(&l, "rdma.count"), Some("2"));
}

#[test]
fn sanitize_examples() {
    let s = |x: &str| LabelValue::sanitize(x).map(|v| v.as_str().to_string());
    assert_eq!(s("NVIDIA H200").as_deref(), Some("NVIDIA-H200"));
    assert_eq!(s("  (weird) ").as_deref(), Some("weird"));
    assert_eq!(s("--").as_deref(), None);
    assert_eq!(s(&"a".repeat(100)).map(|v| v.len()), Some(63));
    assert_eq!(
        s(&format!("{}-b", "a".repeat(62))).as_deref(),
        Some(&*"a".repeat(62))
    );
}

#[test]
fn key_and_prefix_checks() {
    assert!(LabelKey::parse("nodetopo.io/gpu.count").is_ok());
    assert!(LabelKey::parse("gpu.count").is_ok());
    assert!(LabelKey::parse("Nodetopo.io/x").is_err());
    assert!(LabelKey::parse("a/-x").is_err());
    assert!(LabelKey::parse(&format!("a/{}", "x".repeat(64))).is_err());
    assert!(LabelConfig::new("example.com").is_ok());
    assert!(LabelConfig::new("example..com").is_err());
    assert!(LabelConfig::new("").is_err());
    assert!(LabelValue::new("").is_ok());
    assert!(LabelValue::new("a b").is_err());
}

/// An independent check of Kubernetes label syntax, written without the module's helpers.
fn k8s_valid(key: &str, value: &str) -> bool {
    fn name_ok(n: &str) -> bool {
        let chars: Vec<char> = n.chars().collect();
        !chars.is_empty()
            && chars.len() <= 63
            && chars[0].is_ascii_alphanumeric()
            && chars[chars.len() - 1].is_ascii_alphanumeric()
            && chars
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
    }
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let prefix_ok = prefix.is_empty()
        || (prefix.len() <= 253
            && prefix.split('.').all(|p| {
                !p.is_empty()
                    && p.len() <= 63
                    && p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !p.starts_with('-')
                    && !p.ends_with('-')
            }));
    prefix_ok && name_ok(name) && (value.is_empty() || name_ok(value))
}

fn arb_nic() -> impl Strategy<Value = Nic> {
    (
        ".{0,20}",
        prop::collection::vec((0u8..6, 0u8..3, prop::num::f64::ANY), 0..3),
    )
        .prop_map(|(name, ports)| Nic {
            name,
            ports: ports
                .into_iter()
                .map(|(s, ll, rate)| NicPort {
                    port: 1,
                    state: [
                        PortState::Unknown,
                        PortState::Down,
                        PortState::Init,
                        PortState::Armed,
                        PortState::Active,
                        PortState::ActiveDefer,
                    ][s as usize],
                    link_layer: [
                        LinkLayer::Unknown,
                        LinkLayer::Infiniband,
                        LinkLayer::Ethernet,
                    ][ll as usize],
                    rate_gbps: rate,
                    ..NicPort::default()
                })
                .collect(),
            ..Nic::default()
        })
}

proptest! {
    #[test]
    fn every_label_is_valid(
        names in prop::collection::vec(any::<String>(), 0..4),
        driver in proptest::option::of(any::<String>()),
        cuda in proptest::option::of(".{0,80}"),
        domain in proptest::option::of(any::<String>()),
        cluster in proptest::option::of(".{0,300}"),
        nics in prop::collection::vec(arb_nic(), 0..4),
        mem in any::<u64>(),
        cc in (any::<u32>(), any::<u32>()),
    ) {
        let t = NodeTopology {
            driver: DriverInfo { driver_version: driver, cuda_driver_version: cuda, nvml_version: None },
            gpus: names.iter().enumerate().map(|(i, n)| Gpu {
                index: i as u32,
                name: n.clone(),
                memory_total_bytes: mem,
                compute_major: cc.0,
                compute_minor: cc.1,
                ..Gpu::default()
            }).collect(),
            fabric: Fabric {
                state: FabricState::Ready,
                domain,
                cluster_uuid: cluster,
                ..Fabric::default()
            },
            nics,
            sources: vec![SourceStatus::ok(Source::Nvml), SourceStatus::ok(Source::Fabric), SourceStatus::ok(Source::Rdma)],
            ..NodeTopology::default()
        };
        for prefix in [DEFAULT_PREFIX, "a", "x-1.example.com"] {
            let labels = desired_labels(&t, &LabelConfig::new(prefix).unwrap());
            for (k, v) in &labels {
                let (k, v) = (k.to_string(), v.to_string());
                prop_assert!(k8s_valid(&k, &v), "{k}={v}");
            }
        }
    }

    #[test]
    fn sanitize_is_valid_or_none(s in any::<String>()) {
        if let Some(v) = LabelValue::sanitize(&s) {
            prop_assert!(k8s_valid("k", v.as_str()));
            prop_assert!(LabelValue::new(v.as_str()).is_ok());
        }
    }

    #[test]
    fn parsed_keys_are_valid(s in "[a-z0-9.-]{0,20}/[A-Za-z0-9._-]{0,70}") {
        if let Ok(k) = LabelKey::parse(&s) {
            prop_assert!(k8s_valid(&k.to_string(), ""));
        }
    }
}

/// The fabric placement labels, from ports filled as the SMP prober (InfiniBand) and the LLDP
/// prober (RoCE: a chassis ID and a port ID per port) fill them.
#[test]
fn fabric_placement_labels_from_port_neighbours() {
    use crate::model::{LinkLayer, NicRole, PortNeighbor, PortState};
    let port = |n: u32, ll: LinkLayer, leaf: &str, port: &str, up: &[&str]| NicPort {
        port: n,
        state: PortState::Active,
        link_layer: ll,
        neighbor: Some(PortNeighbor {
            uplink_ids: up.iter().map(|s| s.to_string()).collect(),
            ..PortNeighbor::found(leaf, port)
        }),
        ..NicPort::default()
    };
    let mut t = two_gpu_node();
    t.nics = vec![
        Nic {
            name: "mlx5_0".into(),
            role: NicRole::Compute,
            ports: vec![port(
                1,
                LinkLayer::Infiniband,
                "0x0000000000b00001",
                "3",
                &["0x0000000000a00001"],
            )],
            ..Nic::default()
        },
        Nic {
            name: "mlx5_1".into(),
            role: NicRole::Compute,
            ports: vec![port(
                1,
                LinkLayer::Ethernet,
                "aa:bb:cc:dd:ee:01",
                "swp12",
                &[],
            )],
            ..Nic::default()
        },
    ];
    let names =
        crate::probe::network::FabricNames::parse("names:\n  \"aa:bb:cc:dd:ee:01\": rack-12\n")
            .unwrap();
    t.network = crate::probe::network::place(&t.nics, &names);
    let l = desired_labels(&t, &LabelConfig::default());
    assert_eq!(get(&l, "ib.leaf"), Some("0x0000000000b00001"));
    assert_eq!(
        get(&l, "ib.su"),
        Some(crate::labels::syntax::short_hash(["0x0000000000b00001"]).as_str())
    );
    assert_eq!(
        get(&l, "ib.block"),
        Some(crate::labels::syntax::short_hash(["0x0000000000a00001"]).as_str())
    );
    assert_eq!(get(&l, "roce.leaf"), Some("rack-12"));
    for (k, v) in &l {
        assert!(k8s_valid(&k.to_string(), v.as_str()), "{k}={v}");
    }
    // Without the mapping the chassis ID is spelled as a label value.
    t.network = crate::probe::network::place(&t.nics, &Default::default());
    let l = desired_labels(&t, &LabelConfig::default());
    assert_eq!(get(&l, "roce.leaf"), Some("aa-bb-cc-dd-ee-01"));
    // Nothing found: no key at all.
    t.network = Default::default();
    let l = desired_labels(&t, &LabelConfig::default());
    assert!(get(&l, "ib.leaf").is_none() && get(&l, "roce.leaf").is_none());
}

/// A node with two active InfiniBand compute ports on the subnet prefixes given.
fn ib_node(prefixes: [&str; 2]) -> NodeTopology {
    use crate::model::NicRole;
    let mut t = two_gpu_node();
    t.sources.push(SourceStatus::ok(Source::Rdma));
    t.nics = prefixes
        .iter()
        .enumerate()
        .map(|(i, prefix)| Nic {
            name: format!("mlx5_{i}"),
            role: NicRole::Compute,
            ports: vec![NicPort {
                port: 1,
                state: PortState::Active,
                link_layer: LinkLayer::Infiniband,
                subnet_prefix: (*prefix).into(),
                ..NicPort::default()
            }],
            ..Nic::default()
        })
        .collect();
    t
}

#[test]
fn the_default_subnet_prefix_writes_no_ib_subnet() {
    let subnet = |prefixes| {
        get(
            &desired_labels(&ib_node(prefixes), &LabelConfig::default()),
            "rdma.ib-subnet",
        )
        .map(str::to_string)
    };
    assert_eq!(
        subnet(["fe80:0000:0000:0007", "fe80:0000:0000:0007"]).as_deref(),
        Some("fe80-0000-0000-0007")
    );
    // Most fabrics keep the default: it tells none from another.
    assert_eq!(subnet(["fe80:0000:0000:0000", "fe80:0000:0000:0000"]), None);
    // Two subnets, one of them the default: several subnets, no value.
    assert_eq!(subnet(["fe80:0000:0000:0000", "fe80:0000:0000:0007"]), None);
    // A port whose prefix was not read does not count.
    assert_eq!(
        subnet(["", "fe80:0000:0000:0007"]).as_deref(),
        Some("fe80-0000-0000-0007")
    );
    assert_eq!(subnet(["", "fe80:0000:0000:0000"]), None);
}

#[test]
fn rail_optimised_per_fabric() {
    let mut t = ib_node(["fe80:0000:0000:0000"; 2]);
    let leaf = |l: &str| {
        Some(crate::model::PortNeighbor::found(
            format!("0x0000000000b0000{l}"),
            "1",
        ))
    };
    t.nics[0].ports[0].neighbor = leaf("1");
    t.nics[1].ports[0].neighbor = leaf("2");
    t.network = crate::probe::network::place(&t.nics, &Default::default());
    let l = desired_labels(&t, &LabelConfig::default());
    assert_eq!(get(&l, "ib.rail-optimised"), Some("true"));
    assert_eq!(get(&l, "roce.rail-optimised"), None);
    t.nics[1].ports[0].neighbor = leaf("1");
    t.network = crate::probe::network::place(&t.nics, &Default::default());
    let l = desired_labels(&t, &LabelConfig::default());
    assert_eq!(get(&l, "ib.rail-optimised"), Some("false"));
    // One placed port: unknown, no key.
    t.nics[1].ports[0].neighbor = None;
    t.network = crate::probe::network::place(&t.nics, &Default::default());
    let l = desired_labels(&t, &LabelConfig::default());
    assert_eq!(get(&l, "ib.rail-optimised"), None);
}

fn on_rack(serial: Option<&str>, tray: u32) -> crate::model::GpuPlatform {
    crate::model::GpuPlatform {
        status: crate::model::PlatformStatus::Ok,
        chassis_serial: serial.map(str::to_string),
        tray_index: Some(tray),
        slot_number: Some(tray + 2),
        host_id: Some(0),
        module_id: Some(1),
        ..Default::default()
    }
}

#[test]
fn rack_labels_only_where_every_gpu_agrees() {
    let mut t = two_gpu_node();
    // Unknown (not asked): no key.
    let l = desired_labels(&t, &LabelConfig::default());
    assert!(get(&l, "rack.serial").is_none() && get(&l, "rack.tray").is_none());

    t.gpus[0].platform = on_rack(Some("1821325190123"), 3);
    t.gpus[1].platform = on_rack(Some("1821325190123"), 3);
    let l = desired_labels(&t, &LabelConfig::default());
    assert_eq!(get(&l, "rack.serial"), Some("1821325190123"));
    assert_eq!(get(&l, "rack.tray"), Some("3"));

    // Trays differ: the rack stays, the tray goes.
    t.gpus[1].platform = on_rack(Some("1821325190123"), 4);
    let l = desired_labels(&t, &LabelConfig::default());
    assert_eq!(get(&l, "rack.serial"), Some("1821325190123"));
    assert!(get(&l, "rack.tray").is_none());

    // Another chassis, or one GPU without an answer: neither key.
    t.gpus[1].platform = on_rack(Some("1821325190999"), 3);
    let l = desired_labels(&t, &LabelConfig::default());
    assert!(get(&l, "rack.serial").is_none() && get(&l, "rack.tray").is_none());
    for other in [
        crate::model::GpuPlatform {
            status: crate::model::PlatformStatus::NotSupported,
            ..Default::default()
        },
        crate::model::GpuPlatform {
            status: crate::model::PlatformStatus::Error,
            ..Default::default()
        },
        on_rack(None, 3),
    ] {
        t.gpus[1].platform = other;
        let l = desired_labels(&t, &LabelConfig::default());
        assert!(get(&l, "rack.serial").is_none(), "{l:?}");
    }
}

#[test]
fn rack_serial_is_spelled_as_a_label_value() {
    let mut t = two_gpu_node();
    for g in &mut t.gpus {
        g.platform = on_rack(Some(" RACK 7/A:b "), 0);
    }
    let l = desired_labels(&t, &LabelConfig::default());
    assert_eq!(get(&l, "rack.serial"), Some("RACK-7-A-b"));
    assert_eq!(get(&l, "rack.tray"), Some("0"));
    for g in &mut t.gpus {
        g.platform = on_rack(Some("::"), 0);
    }
    let l = desired_labels(&t, &LabelConfig::default());
    let v = get(&l, "rack.serial").unwrap();
    assert!(v.starts_with("id-"), "{v}");
    for (k, v) in &l {
        assert!(k8s_valid(&k.to_string(), v.as_str()), "{k}={v}");
    }
}
