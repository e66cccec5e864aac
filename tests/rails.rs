//! Rail classification through the whole binary: NIC roles (compute, storage, virtual), the
//! `rdma.*` labels over the compute rails, GPUs sharing a rail, the `--nic-role` override, and
//! the roles in every output format, on the sysfs fixture trees.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use nodetopo::model::{NicRole, NodeTopology};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// `nodetopo probe --replay <name>/snapshot.json --sysfs-root <name>/sysfs/sys -o <output>`.
fn probe(name: &str, output: &str, extra: &[&str]) -> String {
    common::nodetopo()
        .arg("probe")
        .arg("--replay")
        .arg(fixture(&format!("{name}/snapshot.json")))
        .arg("--sysfs-root")
        .arg(fixture(&format!("{name}/sysfs/sys")))
        .args(["-o", output])
        .args(extra)
        .env_remove("NODETOPO_SYSFS_ROOT")
        .env("NODE_NAME", "test-node")
        .stdout_ok()
}

fn topo(name: &str, extra: &[&str]) -> NodeTopology {
    serde_json::from_str(&probe(name, "json", extra)).expect("JSON topology")
}

fn labels(name: &str, extra: &[&str]) -> BTreeMap<String, String> {
    probe(name, "labels", extra)
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("key=value");
            (
                k.trim_start_matches("nodetopo.io/").to_string(),
                v.to_string(),
            )
        })
        .collect()
}

fn roles(t: &NodeTopology) -> BTreeMap<&str, NicRole> {
    t.nics.iter().map(|n| (n.name.as_str(), n.role)).collect()
}

fn with_role(t: &NodeTopology, role: NicRole) -> Vec<&str> {
    t.nics
        .iter()
        .filter(|n| n.role == role)
        .map(|n| n.name.as_str())
        .collect()
}

#[test]
fn mixed_node_labels_describe_the_infiniband_rails_not_the_storage_nics() {
    let t = topo("h100x8-ib", &[]);
    assert_eq!(with_role(&t, NicRole::Storage), ["mlx5_4", "mlx5_5"]);
    let compute = with_role(&t, NicRole::Compute);
    assert_eq!(compute.len(), 8);
    assert!(!compute.contains(&"mlx5_4") && !compute.contains(&"mlx5_5"));
    assert_eq!(t.rail_pairing.gpus_per_rail, 1);
    assert_eq!(t.rail_pairing.gpu_rails, t.rail_pairing.pairs);

    let l = labels("h100x8-ib", &[]);
    assert_eq!(l["rdma.link-layer"], "infiniband");
    // The rails are NDR (400); the storage NICs are 100 and 200 Gb/s Ethernet.
    assert_eq!(l["rdma.rate-gbps"], "400");
    // Eight rails, one of them down.
    assert_eq!(l["rdma.count"], "7");
    assert_eq!(l["rdma.gpus-per-rail"], "1");
    assert_eq!(l["rdma.rail-aligned"], "true");
}

#[test]
fn two_gpus_behind_one_switch_share_its_nic() {
    let t = topo("hgx-shared-nic", &[]);
    assert_eq!(t.gpus.len(), 4);
    let r = roles(&t);
    assert_eq!(r["mlx5_0"], NicRole::Compute);
    assert_eq!(r["mlx5_1"], NicRole::Compute);
    assert_eq!(r["mlx5_2"], NicRole::Storage);
    let rails: Vec<(u32, &str)> = t
        .rail_pairing
        .gpu_rails
        .iter()
        .map(|p| (p.gpu, p.nic.as_str()))
        .collect();
    assert_eq!(
        rails,
        [(0, "mlx5_0"), (1, "mlx5_0"), (2, "mlx5_1"), (3, "mlx5_1")]
    );
    assert!(
        t.rail_pairing.pairs.iter().all(|p| p.nic != "mlx5_2"),
        "the storage NIC is never a GPU's pair: {:?}",
        t.rail_pairing.pairs
    );
    assert_eq!(t.rail_pairing.gpus_per_rail, 2);
    assert!(!t.rail_pairing.rail_aligned);

    let l = labels("hgx-shared-nic", &[]);
    assert_eq!(l["rdma.gpus-per-rail"], "2");
    assert_eq!(l["rdma.rail-aligned"], "false");
    assert_eq!(l["rdma.link-layer"], "infiniband");
    assert_eq!(l["rdma.count"], "2");

    let env = probe("hgx-shared-nic", "env", &[]);
    assert!(
        env.contains(
            "export DEEP_EP_DEVICE_TO_HCA_MAPPING=\"0:mlx5_0:1,1:mlx5_0:1,2:mlx5_1:1,3:mlx5_1:1\""
        ),
        "{env}"
    );
    assert!(env.contains("# GPUs 0,1 share rail mlx5_0"), "{env}");
    assert!(env.contains("# storage NICs, not rails: mlx5_2"), "{env}");
}

#[test]
fn virtual_functions_are_never_rails() {
    let t = topo("hgx-sriov", &[]);
    assert_eq!(t.nics.len(), 13);
    assert_eq!(
        with_role(&t, NicRole::Compute),
        ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"]
    );
    assert_eq!(with_role(&t, NicRole::Storage), ["mlx5_4"]);
    let vfs = with_role(&t, NicRole::Virtual);
    assert_eq!(vfs.len(), 8);
    assert!(
        t.nics
            .iter()
            .all(|n| n.virtual_function == (n.role == NicRole::Virtual))
    );
    // The VFs sit on the PF's device, as close to the GPU as the PF: still not rails.
    let vf_pix = t
        .gpu_nic_affinity
        .iter()
        .filter(|a| vfs.contains(&a.nic.as_str()) && a.connection.as_str() == "PIX")
        .count();
    assert_eq!(vf_pix, 8);
    for p in &t.rail_pairing.gpu_rails {
        assert_eq!(p.nic, format!("mlx5_{}", p.gpu));
    }
    assert!(t.rail_pairing.rail_aligned);
    let l = labels("hgx-sriov", &[]);
    assert_eq!(l["rdma.link-layer"], "ethernet");
    assert_eq!(l["rdma.count"], "4", "VF and storage ports are not counted");
    assert_eq!(l["rdma.gpus-per-rail"], "1");
}

#[test]
fn nic_role_flag_overrides_the_derived_roles() {
    // Name the storage NIC by netdev and one rail by PCI address (any accepted form).
    let t = topo("h100x8-ib", &[]);
    let mlx5_0 = t.nics.iter().find(|n| n.name == "mlx5_0").unwrap();
    let addr = mlx5_0.pci_address.clone();
    let args = [
        "--nic-role",
        "compute=enp94s0f0np0",
        "--nic-role",
        &format!("storage={addr}"),
    ];
    let t = topo("h100x8-ib", &args);
    let r = roles(&t);
    assert_eq!(r["mlx5_4"], NicRole::Compute);
    assert_eq!(r["mlx5_0"], NicRole::Storage);
    assert!(
        t.nics
            .iter()
            .find(|n| n.name == "mlx5_0")
            .unwrap()
            .role_overridden
    );
    assert!(t.rail_pairing.gpu_rails.iter().all(|p| p.nic != "mlx5_0"));
    let l = labels("h100x8-ib", &args);
    assert_eq!(l["rdma.link-layer"], "mixed");
    assert_eq!(l["rdma.rate-gbps"], "100");

    let err = common::nodetopo()
        .args(["probe", "-o", "json", "--nic-role", "rails=mlx5_0"])
        .stderr_err();
    assert!(err.contains("not a role"), "{err}");
}

#[test]
fn roles_show_in_the_table_and_the_picture() {
    let table = probe("hgx-shared-nic", "table", &[]);
    let row = |nic: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{nic} ")))
            .unwrap_or_else(|| panic!("no {nic} row in\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("mlx5_0")[1], "compute");
    assert_eq!(row("mlx5_0").last(), Some(&"0,1"));
    assert_eq!(row("mlx5_2")[1], "storage");
    let dot = probe("hgx-shared-nic", "dot", &[]);
    assert!(dot.contains("storage"), "{dot}");
    assert!(dot.contains("compute"), "{dot}");
}

#[test]
fn gb200_memory_numa_nodes_do_not_mislead_the_distances() {
    // Each GPU function says NUMA node 2-5 (its memory); the CPUs and NICs are on 0 and 1.
    let t = topo("gb200-numa", &[]);
    for g in &t.gpus {
        assert_eq!(g.numa_node, Some(2 + g.index as i32), "GPU {}", g.index);
    }
    // Distances are those of the same tray with honest NUMA facts: taken from the root ports.
    let honest = topo("gb200-tray", &[]);
    let rows = |t: &NodeTopology| {
        t.gpu_nic_affinity
            .iter()
            .map(|a| (a.gpu, a.nic.clone(), a.connection))
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&t), rows(&honest));
    let c = |g: u32, n: &str| {
        t.gpu_nic_affinity
            .iter()
            .find(|a| a.gpu == g && a.nic == n)
            .unwrap()
            .connection
            .as_str()
    };
    assert_eq!(c(0, "mlx5_0"), "PHB");
    assert_eq!(c(0, "mlx5_1"), "NODE", "same Grace, not SYS");
    assert_eq!(c(0, "mlx5_2"), "SYS");
    let pairs: Vec<(u32, &str)> = t
        .rail_pairing
        .pairs
        .iter()
        .map(|p| (p.gpu, p.nic.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [(0, "mlx5_0"), (1, "mlx5_1"), (2, "mlx5_2"), (3, "mlx5_3")]
    );
    assert!(source_ok(&t, "sysfs-pci"), "{:?}", t.sources);
}

fn source_ok(t: &NodeTopology, name: &str) -> bool {
    t.sources.iter().any(|s| s.source.as_str() == name && s.ok)
}

#[test]
fn connectx8_data_direct_pairs_by_the_data_direct_path() {
    let t = topo("cx8-data-direct", &[]);
    let pairs: Vec<(u32, &str, &str)> = t
        .rail_pairing
        .pairs
        .iter()
        .map(|p| (p.gpu, p.nic.as_str(), p.connection.as_str()))
        .collect();
    assert_eq!(pairs, [(0, "mlx5_0", "PIX"), (1, "mlx5_1", "PIX")]);
    assert!(t.rail_pairing.rail_aligned);
    assert!(source_ok(&t, "sysfs-pci"), "{:?}", t.sources);

    // The same tree without the VPD ids: the NIC functions sit on their own root complexes,
    // so every GPU-NIC distance is NODE and nothing is rail-aligned.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("cx8");
    let ok = Command::new("cp")
        .arg("-a")
        .arg(fixture("cx8-data-direct"))
        .arg(&copy)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut removed = 0;
    let devices = copy.join("sysfs/sys/bus/pci/devices");
    for e in std::fs::read_dir(&devices).unwrap() {
        let vpd = e.unwrap().path().join("vpd");
        if vpd.exists() {
            std::fs::remove_file(vpd).unwrap();
            removed += 1;
        }
    }
    assert_eq!(removed, 4);
    let out = common::nodetopo()
        .arg("probe")
        .arg("--replay")
        .arg(copy.join("snapshot.json"))
        .arg("--sysfs-root")
        .arg(copy.join("sysfs/sys"))
        .args(["-o", "json"])
        .stdout_ok();
    let naive: NodeTopology = serde_json::from_str(&out).unwrap();
    assert!(
        naive
            .gpu_nic_affinity
            .iter()
            .all(|a| a.connection.as_str() == "NODE"),
        "{:?}",
        naive.gpu_nic_affinity
    );
    assert!(!naive.rail_pairing.rail_aligned);
}
