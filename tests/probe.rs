//! Whole-binary tests of `nodetopo probe` over recorded NVML snapshots and sysfs fixtures.

mod common;

use std::path::{Path, PathBuf};

use nodetopo::model::{
    Connection, FabricRegistration, FabricState, GpuFamily, MigMode, NeighborStatus, NicRole,
    NodeTopology, P2pStatus, Source,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn nodetopo(args: &[&str]) -> common::NodetopoCmd {
    let mut c = common::nodetopo();
    c.args(args)
        // Never pick up a real driver on a developer machine: these tests are about replay.
        .env("NODETOPO_NVML_LIB", "/nonexistent/libnvidia-ml.so.1")
        .env_remove("NODE_NAME");
    c
}

fn replay_json(snapshot: &Path, sysfs: &Path) -> NodeTopology {
    let o = nodetopo(&[
        "probe",
        "-o",
        "json",
        "--node-name",
        "test-node",
        "--replay",
        snapshot.to_str().unwrap(),
        "--sysfs-root",
        sysfs.to_str().unwrap(),
    ])
    .stdout_ok();
    serde_json::from_str(&o).expect("probe -o json parses as the model")
}

fn gb200(name: &str) -> NodeTopology {
    replay_json(
        &fixtures().join(format!("gb200/{name}.json")),
        Path::new("/nonexistent-sysfs"),
    )
}

#[test]
fn no_nvml_reports_zero_gpus_and_exits_zero() {
    let o = nodetopo(&["probe", "-o", "json"]).stdout_ok();
    let t: NodeTopology = serde_json::from_str(&o).unwrap();
    assert!(t.gpus.is_empty());
    assert_eq!(t.fabric.state, FabricState::None);
    let nvml = t
        .sources
        .iter()
        .find(|s| s.source.as_str() == "nvml")
        .unwrap();
    assert!(!nvml.ok);
    assert!(
        nvml.error.contains("NVML is not available") && nvml.error.contains("libnvidia-ml"),
        "status says why: {}",
        nvml.error
    );
    // The table view says it too, and still exits 0.
    let table = nodetopo(&["probe"]).stdout_ok();
    assert!(table.contains("GPUs:    0"), "{table}");
    assert!(table.contains("NVML is not available"), "{table}");
}

/// Checks a replayed real capture field by field against `nvidia-smi -q -x` and `topo -m` of
/// the same machine.
fn check_against_vendor_tools(dir: &str) -> NodeTopology {
    let dir = fixtures().join(dir);
    let t = replay_json(&dir.join("snapshot.json"), &dir.join("sysfs/sys"));
    assert_eq!(t.node_name, "test-node");

    let xml = std::fs::read_to_string(dir.join("nvidia-smi-q.xml")).unwrap();
    let doc = common::nvidia_smi_doc(&xml);
    let root = doc.root_element();
    let text = common::xml_text;
    assert_eq!(t.driver.driver_version, Some(text(root, "driver_version")));
    assert_eq!(
        t.driver.cuda_driver_version,
        Some(text(root, "cuda_version"))
    );
    let xml_gpus: Vec<_> = root.children().filter(|c| c.has_tag_name("gpu")).collect();
    assert_eq!(xml_gpus.len(), t.gpus.len());
    for (g, x) in t.gpus.iter().zip(&xml_gpus) {
        assert_eq!(g.name, text(*x, "product_name"));
        assert_eq!(g.uuid, text(*x, "uuid"));
        assert_eq!(g.serial.as_deref(), Some(text(*x, "serial").as_str()));
        assert_eq!(x.attribute("id"), Some(g.pci_bus_id.as_str()));
        let fb = x
            .children()
            .find(|c| c.has_tag_name("fb_memory_usage"))
            .unwrap();
        assert_eq!(format!("{} MiB", g.memory_mib()), text(fb, "total"));
        let mig = x.children().find(|c| c.has_tag_name("mig_mode")).unwrap();
        assert_eq!(text(mig, "current_mig"), "Disabled");
        assert_eq!(g.mig_mode, MigMode::Disabled);
        assert_eq!(g.family, GpuFamily::Hopper);
        assert_eq!((g.compute_major, g.compute_minor), (9, 0));
        // NVML answers "not supported" for NUMA and sysfs says -1: unknown, not an error.
        assert_eq!(g.numa_node, None);
    }
    assert!(t.sources.iter().all(|s| s.ok), "{:?}", t.sources);

    // The matrix against `nvidia-smi topo -m` (GPU rows; then CPU affinity).
    let topo = std::fs::read_to_string(dir.join("nvidia-smi-topo-m.txt")).unwrap();
    let rows: Vec<Vec<&str>> = topo
        .lines()
        .filter(|l| l.starts_with("GPU"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let n = t.gpus.len();
    assert_eq!(rows.len(), n);
    for (a, row) in rows.iter().enumerate() {
        for b in 0..n {
            let want = row[b + 1];
            if a == b {
                assert_eq!(want, "X");
                continue;
            }
            let pair = t.pair(a as u32, b as u32).unwrap();
            assert_eq!(pair.cell(), want, "GPU{a} -> GPU{b}");
            assert_eq!(pair.p2p_nvlink, P2pStatus::Ok);
            assert_eq!(
                pair.pcie,
                Connection::Phb,
                "common ancestor 30 is the host bridge"
            );
        }
        assert_eq!(row[n + 1], t.gpus[a].cpu_affinity, "CPU affinity column");
    }
    // No multi-node NVLink on these machines.
    assert_eq!(t.fabric.state, FabricState::None);
    assert_eq!(t.fabric.domain, None);
    t
}

#[test]
fn h200x4_capture_matches_the_vendor_tools() {
    let t = check_against_vendor_tools("h200x4-hgx");
    assert_eq!(t.gpus.len(), 4);
    for g in &t.gpus {
        assert_eq!(g.cpu_affinity, "0-63");
        assert_eq!(g.nvlinks.len(), 18);
        assert!(g.nvlinks.iter().all(|l| l.version == "4.0"));
        // HGX H200: COMPLETED with an all-zero ClusterUUID is "no MNNVL".
        let f = g.fabric.as_ref().expect("fabric info recorded");
        assert_eq!(f.registration, FabricRegistration::Completed);
        assert_eq!(f.cluster_uuid, "00000000-0000-0000-0000-000000000000");
    }
}

#[test]
fn h200x1_recorded_snapshot_matches_the_vendor_tools() {
    // Recorded with `nodetopo probe --record` on a 1-GPU H200 virtual machine: no NVLink
    // (NVML answers "not supported" for link 0) and fabric state NOT_SUPPORTED.
    let t = check_against_vendor_tools("h200x1");
    assert_eq!(t.gpus.len(), 1);
    let g = &t.gpus[0];
    assert!(g.nvlinks.is_empty());
    assert_eq!(g.cpu_affinity, "0-15");
    assert_eq!(
        g.fabric.as_ref().map(|f| f.registration),
        Some(FabricRegistration::NotSupported)
    );
    assert!(t.gpu_pairs.is_empty());
}

#[test]
fn h200_table_shows_the_matrix() {
    let dir = fixtures().join("h200x4-hgx");
    let out = nodetopo(&[
        "probe",
        "--replay",
        dir.join("snapshot.json").to_str().unwrap(),
        "--sysfs-root",
        dir.join("sysfs/sys").to_str().unwrap(),
    ])
    .stdout_ok();
    let matrix_row = out
        .lines()
        .find(|l| l.starts_with("GPU2 "))
        .unwrap_or_else(|| panic!("no GPU2 matrix row in\n{out}"));
    assert_eq!(
        matrix_row.split_whitespace().collect::<Vec<_>>(),
        ["GPU2", "NV18", "NV18", "X", "NV18", "0-63", "N/A"]
    );
    assert!(out.contains("Fabric:  none"), "{out}");
}

#[test]
fn yaml_and_json_agree() {
    let dir = fixtures().join("h200x4-hgx");
    let common = [
        "--node-name",
        "n",
        "--replay",
        dir.join("snapshot.json")
            .to_str()
            .unwrap()
            .to_string()
            .leak(),
        "--sysfs-root",
        dir.join("sysfs/sys").to_str().unwrap().to_string().leak(),
    ];
    let json = nodetopo(&[&["probe", "-o", "json"], &common[..]].concat()).stdout_ok();
    let yaml = nodetopo(&[&["probe", "-o", "yaml"], &common[..]].concat()).stdout_ok();
    let mut a: NodeTopology = serde_json::from_str(&json).unwrap();
    let mut b: NodeTopology = serde_yaml_ng::from_str(&yaml).unwrap();
    a.probe_time = None;
    b.probe_time = None;
    assert_eq!(a, b);
}

#[test]
fn gb200_trays_in_one_clique_share_a_domain() {
    let a1 = gb200("tray-a1");
    let a2 = gb200("tray-a2");
    let b1 = gb200("tray-b1");
    for t in [&a1, &a2, &b1] {
        assert_eq!(t.fabric.state, FabricState::Ready, "{:?}", t.fabric);
        assert_eq!(t.gpus.len(), 4);
        assert!(t.gpus.iter().all(|g| g.family == GpuFamily::Blackwell));
        assert!(
            t.gpus
                .iter()
                .all(|g| g.nvlinks.iter().all(|l| l.version == "5.0"))
        );
    }
    assert_ne!(a1.gpus[0].uuid, a2.gpus[0].uuid, "different trays");
    assert_eq!(a1.fabric.domain, a2.fabric.domain);
    assert_ne!(a1.fabric.domain, b1.fabric.domain, "another clique");
    assert_eq!(a1.fabric.cluster_uuid, b1.fabric.cluster_uuid, "same rack");
    let domain = a1.fabric.domain.as_deref().unwrap();
    let (cluster, clique) = domain.rsplit_once('.').unwrap();
    assert_eq!(clique, "1");
    assert_eq!(Some(cluster), a1.fabric.cluster_uuid.as_deref());
    assert_eq!(cluster.len(), 36, "canonical UUID form");
    // Pairs across the two Grace CPUs are SYS on PCIe, but NVLink all-to-all.
    let p = a1.pair(0, 3).unwrap();
    assert_eq!(p.pcie, Connection::Sys);
    assert_eq!(p.cell(), "NV18");
}

#[test]
fn gb200_transitional_and_broken_fabrics_have_no_domain() {
    let cases = [
        ("tray-pending", FabricState::Pending, "GPU 2"),
        ("tray-inconsistent", FabricState::Inconsistent, "GPU 3"),
        ("tray-degraded", FabricState::Degraded, "degraded-bandwidth"),
    ];
    for (name, state, reason) in cases {
        let t = gb200(name);
        assert_eq!(t.fabric.state, state, "{name}: {:?}", t.fabric);
        assert_eq!(t.fabric.domain, None, "{name}");
        assert!(
            t.fabric.reason.contains(reason),
            "{name}: {}",
            t.fabric.reason
        );
        assert_eq!(t.gpus.len(), 4, "{name}: GPUs are still reported");
    }
}

#[test]
fn dot_draws_the_domain_and_switch() {
    let out = nodetopo(&[
        "probe",
        "-o",
        "dot",
        "--replay",
        fixtures().join("gb200/tray-a1.json").to_str().unwrap(),
    ])
    .stdout_ok();
    assert!(out.starts_with("graph "), "{out}");
    assert!(out.contains("subgraph cluster_domain"), "{out}");
    assert!(
        out.contains("\"nvswitch\" -- \"gpu3\" [label=\"NV18\""),
        "{out}"
    );
    assert_eq!(out.matches("shape=box3d").count(), 4);
    // Braces balance.
    assert_eq!(out.matches('{').count(), out.matches('}').count());
}

#[test]
fn a_failing_gpu_is_reported_and_the_rest_survive() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(fixtures().join("h200x4-hgx/snapshot.json")).unwrap();
    let mut snap: serde_json::Value = serde_json::from_str(&src).unwrap();
    snap["devices"][1]["identity"] =
        serde_json::json!({"Err": {"kind": "gpu-lost", "message": "GPU is lost"}});
    snap["devices"][2]["fabric"] =
        serde_json::json!({"Err": {"kind": "other", "message": "Unknown Error"}});
    let path = dir.path().join("snap.json");
    std::fs::write(&path, snap.to_string()).unwrap();
    let t = replay_json(&path, Path::new("/nonexistent"));
    assert_eq!(
        t.gpus.iter().map(|g| g.index).collect::<Vec<_>>(),
        [0, 2, 3]
    );
    let nvml = t
        .sources
        .iter()
        .find(|s| s.source.as_str() == "nvml")
        .unwrap();
    assert!(
        !nvml.ok && nvml.error.contains("GPU 1: GPU is lost"),
        "{nvml:?}"
    );
    let fabric = t
        .sources
        .iter()
        .find(|s| s.source.as_str() == "fabric")
        .unwrap();
    assert!(
        !fabric.ok && fabric.error.contains("Unknown Error"),
        "{fabric:?}"
    );
    assert_eq!(t.fabric.state, FabricState::Error);
    assert_eq!(t.gpu_pairs.len(), 6, "pairs among the 3 GPUs left");
}

#[test]
fn bad_snapshots_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{ not json").unwrap();
    let future = dir.path().join("future.json");
    std::fs::write(&future, r#"{"format": 99}"#).unwrap();
    let missing = dir.path().join("missing.json");
    for (path, needle) in [
        (&garbage, "is not valid"),
        (&future, "format 99"),
        (&missing, "No such file"),
    ] {
        let err = nodetopo(&["probe", "--replay", path.to_str().unwrap()]).stderr_err();
        assert!(
            err.contains(needle) && err.contains(path.file_name().unwrap().to_str().unwrap()),
            "{path:?}: {err}"
        );
    }
}

#[test]
fn record_without_nvml_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap.json");
    let err = nodetopo(&["probe", "--record", out.to_str().unwrap()]).stderr_err();
    assert!(err.contains("cannot record"), "{err}");
    assert!(!out.exists());
}

#[test]
fn compat_labels_follow_the_strict_domain_only() {
    let labels = |snapshot: &str, compat: &str| {
        nodetopo(&[
            "probe",
            "-o",
            "labels",
            "--compat-labels",
            compat,
            "--replay",
            fixtures().join(snapshot).to_str().unwrap(),
        ])
        .stdout_ok()
    };
    let ready = labels("gb200/tray-a1.json", "topograph,gfd-clique");
    let domain = "4f1c2d3e-5a6b-47c8-a9d0-e1f2a3b4c5d6.1";
    assert!(
        ready.contains(&format!("nodetopo.io/nvlink.domain={domain}\n")),
        "{ready}"
    );
    assert!(
        ready.contains(&format!("accelerator.topograph.run/domain={domain}\n")),
        "{ready}"
    );
    assert!(
        ready.contains(&format!("nvidia.com/gpu.clique={domain}\n")),
        "{ready}"
    );
    // Off by default.
    let default = labels("gb200/tray-a1.json", "");
    assert!(
        !default.contains("topograph") && !default.contains("nvidia.com/"),
        "{default}"
    );
    // No strict domain (pending registration): no compatibility label either.
    let pending = labels("gb200/tray-pending.json", "topograph,gfd-clique");
    assert!(
        !pending.contains("domain=") && !pending.contains("gpu.clique"),
        "{pending}"
    );
    assert!(
        pending.contains("nodetopo.io/nvlink.fabric=pending"),
        "{pending}"
    );
}

#[test]
fn ib_subnet_label_only_for_one_infiniband_subnet() {
    let labels = |sysfs: &str| {
        nodetopo(&[
            "probe",
            "-o",
            "labels",
            "--replay",
            fixtures().join("h100x8-ib/snapshot.json").to_str().unwrap(),
            "--sysfs-root",
            fixtures().join(sysfs).to_str().unwrap(),
        ])
        .stdout_ok()
    };
    let ib = labels("h100x8-ib/sysfs/sys");
    // The fixture's ports keep the default prefix, which names no subnet.
    assert!(
        ib.contains("nodetopo.io/rdma.link-layer=infiniband\n") && !ib.contains("rdma.ib-subnet"),
        "{ib}"
    );
    let roce = labels("h100x8-roce/sysfs/sys");
    assert!(
        !roce.contains("rdma.ib-subnet"),
        "RoCE has no IB subnet: {roce}"
    );
    assert!(
        roce.contains("nodetopo.io/rdma.link-layer=ethernet\n"),
        "{roce}"
    );
}

#[test]
fn fabric_flags_are_checked() {
    let snap = fixtures().join("h200x1/snapshot.json");
    let snap = snap.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("names.yaml");
    std::fs::write(&bad, "names:\n  \"0x0000000000b00001\": \"rack 12\"\n").unwrap();
    for (args, want) in [
        (
            vec!["--fabric-names", "/nonexistent/names.yaml"],
            "--fabric-names",
        ),
        (vec!["--fabric-names", bad.to_str().unwrap()], "rack 12"),
        (vec!["--ib-smp-timeout", "0s"], "--ib-smp-timeout"),
        (vec!["--ib-smp-retries", "99"], "--ib-smp-retries"),
        (vec!["--lldp-wait", "10m"], "--lldp-wait"),
        (vec!["--lldp", "sometimes"], "--lldp"),
    ] {
        let mut all = vec!["probe", "--replay", snap, "--sysfs-root", "/nonexistent"];
        all.extend(args.iter().copied());
        let err = nodetopo(&all).stderr_err();
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "names:\n  \"0x0000000000b00001\": rack-12\n").unwrap();
    nodetopo(&[
        "probe",
        "--replay",
        snap,
        "--sysfs-root",
        "/nonexistent",
        "--fabric-names",
        good.to_str().unwrap(),
        "--ib-smp",
        "off",
        "-o",
        "json",
    ])
    .output_ok();
}

/// LLDP on a recorded node (the h100x8-roce sysfs tree) whose netdevs do not exist here: `auto`
/// listens on none and reports no `lldp` source; `on` reports each active rail port (not the
/// storage NIC, not the down rail), at once, and places no leaf. The real peer is in
/// tests/lldp_netns.rs.
#[test]
fn lldp_on_a_recorded_node_without_its_netdevs() {
    let run = |mode: &str| -> (NodeTopology, std::time::Duration) {
        let started = std::time::Instant::now();
        let o = nodetopo(&[
            "probe",
            "-o",
            "json",
            "--replay",
            fixtures().join("h100x8-ib/snapshot.json").to_str().unwrap(),
            "--sysfs-root",
            fixtures().join("h100x8-roce/sysfs/sys").to_str().unwrap(),
            "--lldp",
            mode,
        ])
        .stdout_ok();
        (serde_json::from_str(&o).unwrap(), started.elapsed())
    };
    let (auto, _) = run("auto");
    assert!(auto.sources.iter().all(|s| s.source != Source::Lldp));
    assert!(
        auto.nics
            .iter()
            .flat_map(|n| &n.ports)
            .all(|p| p.neighbor.is_none())
    );
    let (on, took) = run("on");
    // Every socket fails at once (no such netdev, or no CAP_NET_RAW): no wait.
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    let lldp = on
        .sources
        .iter()
        .find(|s| s.source == Source::Lldp)
        .unwrap();
    assert!(!lldp.ok, "{lldp:?}");
    for n in &on.nics {
        let nb = n.ports[0].neighbor.as_ref();
        match (n.name.as_str(), n.role) {
            ("mlx5_bond_0", _) => assert!(nb.is_none(), "storage: {nb:?}"),
            ("mlx5_7", _) => assert_eq!(nb.unwrap().status, NeighborStatus::NotActive),
            (_, NicRole::Compute) => {
                let nb = nb.unwrap();
                assert!(
                    matches!(nb.status, NeighborStatus::Error | NeighborStatus::NoAccess),
                    "{}: {nb:?}",
                    n.name
                );
                assert!(nb.detail.contains(&n.netdevs[0]), "{nb:?}");
            }
            _ => panic!("unexpected NIC {}", n.name),
        }
    }
    assert!(on.network.roce.leaf.is_none());
    assert!(!on.network.roce.reason.is_empty());
}

/// A flag given twice takes the last value (the chart's arguments, then `extraArgs`): the
/// agent and the probe start instead of refusing the repeat.
#[test]
fn a_flag_given_twice_takes_the_last_value() {
    let sysfs = fixtures().join("h100x8-roce/sysfs/sys");
    let lldp_probed = |modes: &[&str]| {
        let mut args = vec!["probe", "-o", "json", "--lldp-wait", "100ms"];
        args.extend(modes.iter().map(|m| m.to_owned()));
        args.extend(["--sysfs-root", sysfs.to_str().unwrap()]);
        let t: NodeTopology = serde_json::from_str(&nodetopo(&args).stdout_ok()).unwrap();
        t.sources
            .iter()
            .any(|s| s.source == nodetopo::model::Source::Lldp)
    };
    assert!(!lldp_probed(&["--lldp=on", "--lldp=off"]));
    assert!(lldp_probed(&["--lldp=off", "--lldp=on"]));
    nodetopo(&[
        "agent",
        "--no-kube",
        "--oneshot",
        "--lldp=on",
        "--lldp=off",
        "--sysfs-root",
        sysfs.to_str().unwrap(),
    ])
    .output_ok();
}

/// `--for` with a consumer nodetopo does not know is refused, naming the ones it knows.
#[test]
fn an_unknown_consumer_is_refused_with_the_choices() {
    let err = nodetopo(&["probe", "-o", "env", "--for", "sglang"]).stderr_err();
    assert!(
        err.contains("sglang") && err.contains("generic") && err.contains("vllm"),
        "{err}"
    );
    // Only with -o env.
    let err = nodetopo(&["probe", "-o", "json", "--for", "vllm"]).stderr_err();
    assert!(err.contains("--for needs -o env"), "{err}");
}
