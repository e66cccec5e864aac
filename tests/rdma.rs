//! Whole-binary tests of the RDMA part of `nodetopo probe`: NICs, ports, PCIe affinity, rail
//! pairing, GPUDirect readiness and `-o env`, against the sysfs fixture trees.

mod common;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
};

use nodetopo::{
    model::{Connection, LinkLayer, Nic, NodeTopology, PortState, SourceStatus},
    probe::{pci, sysfs::SysfsRoot},
};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// `nodetopo ARGS`, the sysfs root and node name never taken from the caller's environment.
fn nodetopo(args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> common::NodetopoCmd {
    let mut c = common::nodetopo();
    c.args(args)
        .env_remove("NODETOPO_SYSFS_ROOT")
        .env("NODE_NAME", "test-node");
    c
}

fn probe_args(snapshot: Option<&str>, fixture_name: &str, output: &str) -> Vec<String> {
    let mut a = vec!["probe".to_string()];
    if let Some(s) = snapshot {
        a.push("--replay".into());
        a.push(fixture(s).display().to_string());
    }
    a.push("--sysfs-root".into());
    a.push(
        fixture(&format!("{fixture_name}/sysfs/sys"))
            .display()
            .to_string(),
    );
    a.push("-o".into());
    a.push(output.into());
    a
}

fn run_ok(args: &[String]) -> String {
    nodetopo(args).stdout_ok()
}

fn probe_json(snapshot: Option<&str>, fixture_name: &str) -> NodeTopology {
    let s = run_ok(&probe_args(snapshot, fixture_name, "json"));
    serde_json::from_str(&s).expect("valid JSON topology")
}

fn env_lines(snapshot: &str, fixture_name: &str, gpus: Option<&str>) -> Vec<(String, String)> {
    let mut a = probe_args(Some(snapshot), fixture_name, "env");
    if let Some(g) = gpus {
        a.push("--gpus".into());
        a.push(g.into());
    }
    parse_env(&run_ok(&a))
}

/// Parses `export K="V"` lines (what `source` would set); comments are skipped.
fn parse_env(s: &str) -> Vec<(String, String)> {
    s.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let rest = l.strip_prefix("export ").expect("export line");
            let (k, v) = rest.split_once('=').expect("K=V");
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .expect("quoted");
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn source<'a>(t: &'a NodeTopology, name: &str) -> &'a SourceStatus {
    t.sources
        .iter()
        .find(|s| s.source.as_str() == name)
        .unwrap_or_else(|| panic!("no {name} source in {:?}", t.sources))
}

fn nic<'a>(t: &'a NodeTopology, name: &str) -> &'a Nic {
    t.nics
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no NIC {name}"))
}

const H100: &str = "h100x8-ib/snapshot.json";
const H100_RAILS: [&str; 8] = [
    "mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3", "mlx5_6", "mlx5_7", "mlx5_8", "mlx5_9",
];

#[test]
fn h100_ib_nics_and_ports() {
    let t = probe_json(Some(H100), "h100x8-ib");
    assert!(source(&t, "rdma").ok, "{:?}", source(&t, "rdma"));
    assert!(source(&t, "sysfs-pci").ok, "{:?}", source(&t, "sysfs-pci"));
    let names: Vec<&str> = t.nics.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_7",
            "mlx5_8", "mlx5_9"
        ]
    );
    for r in H100_RAILS {
        let n = nic(&t, r);
        assert_eq!(n.ports.len(), 1);
        let p = &n.ports[0];
        assert_eq!(p.link_layer, LinkLayer::Infiniband, "{r}");
        assert_eq!(n.hca_type, "MT4129");
        assert!(n.netdevs[0].starts_with("ibp"), "{:?}", n.netdevs);
        assert_eq!(p.port_guid.len(), 19);
        assert_eq!(p.subnet_prefix, "fe80:0000:0000:0000");
        assert!(!n.virtual_function && !n.bonded);
        if r == "mlx5_7" {
            assert_eq!(p.state, PortState::Down);
            assert_eq!(p.phys_state.as_str(), "Polling");
        } else {
            assert_eq!(p.state, PortState::Active, "{r}");
            assert_eq!(p.phys_state.as_str(), "LinkUp");
            assert_eq!(p.rate_gbps, 400.0);
            assert_eq!(p.sm_lid, 1);
            assert!(p.lid >= 0x20, "{r}: lid {}", p.lid);
        }
    }
    // Node GUIDs are distinct.
    let mut guids: Vec<&str> = t.nics.iter().map(|n| n.node_guid.as_str()).collect();
    guids.sort_unstable();
    guids.dedup();
    assert_eq!(guids.len(), 10);
    // Storage NICs: Ethernet, RoCE GIDs with types and netdevs, NUMA 0 and 1.
    let s4 = nic(&t, "mlx5_4");
    let s5 = nic(&t, "mlx5_5");
    assert_eq!((s4.numa_node, s5.numa_node), (Some(0), Some(1)));
    assert_eq!(s4.ports[0].rate_gbps, 100.0);
    assert_eq!(s5.ports[0].rate_gbps, 200.0);
    let gids = &s4.ports[0].gids;
    assert_eq!(gids.len(), 4, "{gids:?}");
    assert_eq!(gids[3].gid_type.as_str(), "RoCE v2");
    assert_eq!(gids[3].netdev, s4.netdevs[0]);
    assert!(gids[3].gid.starts_with("0000:0000:0000:0000:0000:ffff:"));
}

#[test]
fn h100_ib_affinity_pairing_and_gpudirect() {
    let t = probe_json(Some(H100), "h100x8-ib");
    assert_eq!(t.gpus.len(), 8);
    assert_eq!(t.gpu_nic_affinity.len(), 80);
    for g in 0..8u32 {
        let row: Vec<_> = t.gpu_nic_affinity.iter().filter(|a| a.gpu == g).collect();
        let ranks: Vec<u32> = row.iter().map(|a| a.rank).collect();
        assert_eq!(ranks, (0..10).collect::<Vec<_>>());
        assert!(
            row.windows(2)
                .all(|w| w[0].connection.distance() <= w[1].connection.distance())
        );
        assert_eq!(row[0].nic, H100_RAILS[g as usize]);
        // NICs of the other socket are SYS; of the same socket NODE.
        let same_socket = |n: &str| nic(&t, n).numa_node == t.gpus[g as usize].numa_node;
        for a in &row[1..] {
            let want = if same_socket(&a.nic) {
                Connection::Node
            } else {
                Connection::Sys
            };
            assert_eq!(a.connection, want, "GPU {g} {}", a.nic);
        }
    }
    assert!(t.rail_pairing.rail_aligned);
    let pairs: Vec<(u32, &str, u32, Connection)> = t
        .rail_pairing
        .pairs
        .iter()
        .map(|p| (p.gpu, p.nic.as_str(), p.port, p.connection))
        .collect();
    for (g, p) in pairs.iter().enumerate() {
        let want = if g >= 6 {
            Connection::Pxb
        } else {
            Connection::Pix
        };
        assert_eq!(*p, (g as u32, H100_RAILS[g], 1, want));
    }
    assert!(t.gpudirect.ready);
    assert_eq!(t.gpudirect.method.as_str(), "nvidia_peermem");
    assert!(source(&t, "gpudirect").ok);
}

#[test]
fn h100_ib_env_hints() {
    let env = env_lines(H100, "h100x8-ib", None);
    let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "DEEP_EP_DEVICE_TO_HCA_MAPPING",
            "UCX_NET_DEVICES",
            "NCCL_IB_HCA",
            "NVSHMEM_HCA_LIST",
            "VLLM_GPU_NIC_PCIE_MAPPING",
            "VLLM_NIC_SELECTION_VARS"
        ]
    );
    // vLLM's mapping: each GPU's bus id = its rail NIC's PCI function, in sysfs form.
    let t = probe_json(Some(H100), "h100x8-ib");
    let want: Vec<String> = t
        .gpus
        .iter()
        .map(|g| {
            let gpu = pci::PciAddress::parse(&g.pci_bus_id).unwrap().to_string();
            let rail = nic(&t, H100_RAILS[g.index as usize]);
            format!("{gpu}={}", rail.pci_address)
        })
        .collect();
    assert_eq!(
        get(&env, "VLLM_GPU_NIC_PCIE_MAPPING"),
        Some(want.join(",").as_str())
    );
    assert!(want[0].starts_with("0000:1b:00.0="), "{want:?}");
    assert_eq!(
        get(&env, "VLLM_NIC_SELECTION_VARS"),
        Some("UCX_NET_DEVICES:1,NVSHMEM_HCA_LIST:1,NCCL_IB_HCA:1")
    );
    // The storage NICs are named as such, never listed as rails.
    let text = run_ok(&probe_args(Some(H100), "h100x8-ib", "env"));
    assert!(
        text.contains("# storage NICs, not rails: mlx5_4,mlx5_5"),
        "{text}"
    );
    assert!(!get(&env, "UCX_NET_DEVICES").unwrap().contains("mlx5_4"));
    let list: Vec<String> = H100_RAILS.iter().map(|n| format!("{n}:1")).collect();
    let mapping: Vec<String> = H100_RAILS
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{i}:{n}:1"))
        .collect();
    assert_eq!(
        get(&env, "DEEP_EP_DEVICE_TO_HCA_MAPPING"),
        Some(mapping.join(",").as_str())
    );
    assert_eq!(get(&env, "UCX_NET_DEVICES"), Some(list.join(",").as_str()));
    assert_eq!(
        get(&env, "NCCL_IB_HCA"),
        Some(format!("={}", list.join(",")).as_str())
    );
    assert_eq!(get(&env, "NVSHMEM_HCA_LIST"), Some(list.join(",").as_str()));

    // A selection renumbers CUDA ordinals and notes the port that is down.
    let args = {
        let mut a = probe_args(Some(H100), "h100x8-ib", "env");
        a.extend(["--gpus".into(), "4,5".into()]);
        a
    };
    let text = run_ok(&args);
    assert!(text.contains("# mlx5_7 port 1 is not active"), "{text}");
    let env = parse_env(&text);
    assert_eq!(
        get(&env, "DEEP_EP_DEVICE_TO_HCA_MAPPING"),
        Some("0:mlx5_6:1,1:mlx5_7:1")
    );
    assert_eq!(get(&env, "NCCL_IB_HCA"), Some("=mlx5_6:1,mlx5_7:1"));

    // By UUID.
    let t = probe_json(Some(H100), "h100x8-ib");
    let uuid = t.gpus[3].uuid.clone();
    let env = env_lines(H100, "h100x8-ib", Some(&uuid));
    assert_eq!(get(&env, "UCX_NET_DEVICES"), Some("mlx5_3:1"));
}

#[test]
fn unknown_gpu_is_an_error() {
    let mut a = probe_args(Some(H100), "h100x8-ib", "env");
    a.extend(["--gpus".into(), "0,9".into()]);
    let err = nodetopo(&a).stderr_err();
    assert!(err.contains("unknown GPU \"9\""), "{err}");

    let mut a = probe_args(Some(H100), "h100x8-ib", "json");
    a.extend(["--gpus".into(), "0".into()]);
    nodetopo(&a).stderr_err();
}

#[test]
fn h100_roce_and_bond() {
    let t = probe_json(Some(H100), "h100x8-roce");
    assert!(source(&t, "rdma").ok, "{:?}", source(&t, "rdma"));
    assert_eq!(t.nics.len(), 9);
    let bond = nic(&t, "mlx5_bond_0");
    assert!(bond.bonded && !bond.virtual_function);
    assert_eq!(bond.pci_address, "0000:5e:00.0");
    assert!(
        bond.ports[0]
            .gids
            .iter()
            .all(|g| g.netdev == "bond0" && !g.gid_type.as_str().is_empty())
    );
    for r in H100_RAILS {
        let n = nic(&t, r);
        let p = &n.ports[0];
        assert_eq!(p.link_layer, LinkLayer::Ethernet, "{r}");
        assert_eq!(p.lid, 0);
        let types: Vec<&str> = p.gids.iter().map(|g| g.gid_type.as_str()).collect();
        if r == "mlx5_7" {
            assert_eq!(types, ["IB/RoCE v1", "RoCE v2"]);
        } else {
            assert_eq!(types, ["IB/RoCE v1", "RoCE v2", "IB/RoCE v1", "RoCE v2"]);
        }
        assert!(p.gids.iter().all(|g| g.netdev == n.netdevs[0]));
    }
    assert!(t.rail_pairing.rail_aligned);
    assert!(t.rail_pairing.pairs.iter().all(|p| p.nic != "mlx5_bond_0"));
    // dma-buf: no nvidia_peermem, kernel 6.8 with nvidia and ib_uverbs.
    assert!(t.gpudirect.ready);
    assert_eq!(t.gpudirect.method.as_str(), "dma-buf");
    assert!(
        t.gpudirect.reason.contains("6.8.0"),
        "{}",
        t.gpudirect.reason
    );

    // GPU 5's rail (mlx5_7) is down and has no IPv4 GID, so no common GID index for all GPUs…
    let env = env_lines(H100, "h100x8-roce", None);
    assert_eq!(get(&env, "NCCL_IB_GID_INDEX"), None);
    // …but the GPUs of the first socket agree on index 3.
    let env = env_lines(H100, "h100x8-roce", Some("0,1,2,3"));
    assert_eq!(get(&env, "NCCL_IB_GID_INDEX"), Some("3"));
    assert_eq!(get(&env, "NVSHMEM_IB_GID_INDEX"), Some("3"));
}

#[test]
fn gb200_tray_pairs_within_each_domain() {
    let t = probe_json(Some("gb200-tray/snapshot.json"), "gb200-tray");
    assert_eq!(t.gpus.len(), 4);
    assert_eq!(t.nics.len(), 4);
    for (g, p) in t.rail_pairing.pairs.iter().enumerate() {
        assert_eq!(p.gpu, g as u32);
        assert_eq!(p.nic, format!("mlx5_{g}"));
        assert_eq!(p.connection, Connection::Phb);
        let n = nic(&t, &p.nic);
        assert_eq!(&n.pci_address[..4], &t.gpus[g].pci_bus_id[4..8]);
    }
    // Through the host bridge only: not rail-aligned by the PIX/PXB rule.
    assert!(!t.rail_pairing.rail_aligned);
    let c = |g: u32, n: &str| {
        t.gpu_nic_affinity
            .iter()
            .find(|a| a.gpu == g && a.nic == n)
            .map(|a| a.connection)
    };
    assert_eq!(c(0, "mlx5_1"), Some(Connection::Node));
    assert_eq!(c(0, "mlx5_2"), Some(Connection::Sys));
    assert_eq!(c(3, "mlx5_2"), Some(Connection::Node));
    assert!(source(&t, "sysfs-pci").ok, "{:?}", source(&t, "sysfs-pci"));
}

#[test]
fn broken_tree_reports_each_item_and_keeps_the_rest() {
    let t = probe_json(Some("h200x4-hgx/snapshot.json"), "broken");
    let rdma = source(&t, "rdma");
    assert!(!rdma.ok);
    for want in [
        "mlx5_1: node_guid: unparsable value \"zzzz:zzzz\"",
        "mlx5_1: fw_ver is missing",
        "mlx5_1 port 1: state: unparsable value \"\"",
        "mlx5_1 port 1: rate: unparsable value \"fast\"",
        "mlx5_2: cannot read board_id",
        "mlx5_2: cannot read hca_type",
        "mlx5_2: device/numa_node: unparsable value \"node0\"",
        "mlx5_2 port 1: sm_lid: unparsable value \"1\"",
        "mlx5_3: device link does not resolve (-> ../../../0000:00:1f.0)",
        "mlx5_5 port 1: gids/0: unparsable value \"fe80::1\"",
        "mlx5_5 port 1: gids/1: unparsable value \"not a gid\"",
        "mlx5_5: ports/bogus is not a port number",
    ] {
        assert!(
            rdma.error.contains(want),
            "missing {want:?} in {}",
            rdma.error
        );
    }
    assert!(!rdma.error.contains("mlx5_0"), "{}", rdma.error);
    assert!(!rdma.error.contains("mlx5_4"), "{}", rdma.error);
    assert_eq!(t.nics.len(), 6);
    // The healthy device is complete.
    let good = nic(&t, "mlx5_0");
    assert_eq!(good.pci_address, "0000:00:0a.0");
    assert_eq!(good.fw_version, "28.39.1002");
    assert_eq!(good.ports[0].state, PortState::Active);
    assert!(!good.virtual_function);
    // The VF is marked.
    let vf = nic(&t, "mlx5_4");
    assert!(vf.virtual_function);
    assert_eq!(vf.pci_address, "0000:00:0a.2");
    // Broken devices keep what could be read.
    let m1 = nic(&t, "mlx5_1");
    assert_eq!(m1.ports[0].state, PortState::Unknown);
    assert_eq!(m1.ports[0].link_layer, LinkLayer::Infiniband);
    assert_eq!(m1.hca_type, "MT4129");
    let m3 = nic(&t, "mlx5_3");
    assert!(m3.pci_address.is_empty());
    assert_eq!(m3.ports[0].rate_gbps, 400.0);
    let m5 = nic(&t, "mlx5_5");
    let idx: Vec<u32> = m5.ports[0].gids.iter().map(|g| g.index).collect();
    assert_eq!(idx, [2, 3]);
    let pci = source(&t, "sysfs-pci");
    assert!(!pci.ok && pci.error.contains("NIC mlx5_3: no PCI address"));
    // No modules in this tree: GPUDirect is not ready, and says why.
    assert!(!t.gpudirect.ready);
    assert!(
        t.gpudirect.reason.contains("nvidia"),
        "{}",
        t.gpudirect.reason
    );
    // Flat tree: every NIC is PHB from every GPU.
    assert!(
        t.gpu_nic_affinity
            .iter()
            .all(|a| a.connection == Connection::Phb)
    );
}

/// The PCI tree's GPU↔GPU classification agrees with NVML's common-ancestor answer.
fn check_gpu_pairs(snapshot: &str, fixture_name: &str, expect: &[Connection]) {
    let t = probe_json(Some(snapshot), fixture_name);
    let root = SysfsRoot::new(fixture(&format!("{fixture_name}/sysfs/sys")));
    let placement = pci::place(&root, &t.gpus, &[]);
    assert!(placement.errors.is_empty(), "{:?}", placement.errors);
    let tree = pci::gpu_pairs_from_tree(&placement);
    let n = t.gpus.len();
    assert_eq!(tree.len(), n * (n - 1));
    for (a, b, c) in &tree {
        let nvml = t.pair(*a, *b).expect("NVML pair").pcie;
        assert_eq!(*c, nvml, "GPU {a}-{b}");
        assert!(expect.contains(c), "GPU {a}-{b}: {c:?}");
    }
    assert!(pci::disagreements(&tree, &t.gpu_pairs).is_empty());
    assert!(source(&t, "sysfs-pci").ok);
}

#[test]
fn gpu_pairs_match_nvml_on_the_real_h200_capture() {
    check_gpu_pairs("h200x4-hgx/snapshot.json", "h200x4-hgx", &[Connection::Phb]);
}

#[test]
fn gpu_pairs_match_nvml_on_h100() {
    check_gpu_pairs(H100, "h100x8-ib", &[Connection::Node, Connection::Sys]);
}

#[test]
fn h200_capture_has_no_rdma() {
    let t = probe_json(Some("h200x4-hgx/snapshot.json"), "h200x4-hgx");
    assert!(t.nics.is_empty());
    assert!(source(&t, "rdma").ok);
    assert!(t.rail_pairing.pairs.is_empty() && !t.rail_pairing.rail_aligned);
    assert!(!t.gpudirect.ready);
    let text = run_ok(&probe_args(
        Some("h200x4-hgx/snapshot.json"),
        "h200x4-hgx",
        "env",
    ));
    assert!(parse_env(&text).is_empty());
    assert!(text.contains("no RDMA rail"), "{text}");
}

#[test]
fn this_machine_without_rdma() {
    let out = nodetopo(["probe", "--sysfs-root", "/sys", "-o", "json"]).stdout_ok();
    let t: NodeTopology = serde_json::from_str(&out).expect("JSON");
    let rdma = source(&t, "rdma");
    if !Path::new("/sys/class/infiniband").exists() {
        assert!(t.nics.is_empty());
        assert!(rdma.ok, "{rdma:?}");
    }
}

#[test]
fn table_and_dot_show_nics_and_affinity() {
    let table = run_ok(&probe_args(Some(H100), "h100x8-ib", "table"));
    let gpu6 = table
        .lines()
        .find(|l| l.starts_with("GPU6 "))
        .expect("matrix row for GPU6");
    assert_eq!(gpu6.matches("PXB").count(), 1, "{gpu6}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("mlx5_7 ") && l.contains("down")),
        "{table}"
    );
    let dot = run_ok(&probe_args(Some(H100), "h100x8-ib", "dot"));
    assert_eq!(dot.matches("shape=component").count(), 10);
    assert!(
        dot.contains("\"gpu0\" -- \"nic:mlx5_0\" [label=\"PIX\""),
        "{dot}"
    );
}
