//! The physical rack from NVML's platform info, replayed from GB200 snapshots
//! (`tests/fixtures/gen_gb200.py`): per-GPU facts in JSON, the rack labels only where every GPU
//! agrees, "not supported" as an answer rather than a failure, and snapshots recorded before the
//! query existed still loading.

mod common;

use std::path::{Path, PathBuf};

use nodetopo::model::{FabricState, NodeTopology, PlatformStatus, Source};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gb200")
        .join(format!("{name}.json"))
}

fn probe(name: &str, output: &str) -> String {
    common::nodetopo()
        .args([
            "probe",
            "-o",
            output,
            "--node-name",
            "rack-node",
            "--replay",
        ])
        .arg(fixture(name))
        .args(["--sysfs-root", "/nonexistent-sysfs"])
        .env("NODETOPO_NVML_LIB", "/nonexistent/libnvidia-ml.so.1")
        .env_remove("NODE_NAME")
        .env_remove("NODETOPO_SYSFS_ROOT")
        .stdout_ok()
}

fn json(name: &str) -> NodeTopology {
    serde_json::from_str(&probe(name, "json")).expect("probe -o json parses as the model")
}

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels
        .lines()
        .find_map(|l| l.strip_prefix(&format!("nodetopo.io/{key}=")))
}

fn nvml_ok(t: &NodeTopology) -> bool {
    t.sources.iter().any(|s| s.source == Source::Nvml && s.ok)
}

#[test]
fn replay_gives_the_rack_and_tray() {
    let t = json("tray-a1");
    assert!(nvml_ok(&t), "{:?}", t.sources);
    for (i, g) in t.gpus.iter().enumerate() {
        let p = &g.platform;
        assert_eq!(p.status, PlatformStatus::Ok, "GPU {i}");
        assert_eq!(p.api_version, 2);
        assert_eq!(p.chassis_serial.as_deref(), Some("1821325190123"));
        assert_eq!((p.tray_index, p.slot_number), (Some(0), Some(0)));
        assert_eq!((p.host_id, p.module_id), (Some(0), Some(i as u32 + 1)));
        assert!(p.ib_guid.as_deref().is_some_and(|g| g.starts_with("0x")));
    }
    let labels = probe("tray-a1", "labels");
    assert_eq!(label(&labels, "rack.serial"), Some("1821325190123"));
    assert_eq!(label(&labels, "rack.tray"), Some("0"));
    let table = probe("tray-a1", "table");
    assert!(table.contains("Rack:    1821325190123 tray 0"), "{table}");
}

#[test]
fn the_rack_is_not_the_nvlink_partition() {
    // Tray 9 of the same rack sits in another clique: another NVLink domain, the same rack.
    let a1 = json("tray-a1");
    let b1 = json("tray-b1");
    assert_eq!(b1.fabric.state, FabricState::Ready);
    assert_ne!(a1.fabric.domain, b1.fabric.domain);
    let (la, lb) = (probe("tray-a1", "labels"), probe("tray-b1", "labels"));
    assert_eq!(label(&la, "rack.serial"), label(&lb, "rack.serial"));
    assert_eq!(label(&lb, "rack.tray"), Some("9"));
    assert_eq!(b1.gpus[0].platform.slot_number, Some(18));
}

#[test]
fn gpus_that_disagree_give_no_rack() {
    let t = json("tray-rack-mixed");
    assert!(
        t.gpus
            .iter()
            .all(|g| g.platform.status == PlatformStatus::Ok)
    );
    assert_eq!(
        t.gpus[3].platform.chassis_serial.as_deref(),
        Some("1821325190456")
    );
    assert!(t.rack().is_none());
    let labels = probe("tray-rack-mixed", "labels");
    assert_eq!(label(&labels, "rack.serial"), None, "{labels}");
    assert_eq!(label(&labels, "rack.tray"), None, "{labels}");
    // The rest of the node is still labelled.
    assert_eq!(label(&labels, "nvlink.fabric"), Some("ready"));
    let table = probe("tray-rack-mixed", "table");
    assert!(table.contains("GPUs name different chassis"), "{table}");
}

#[test]
fn not_supported_is_not_an_error() {
    let t = json("tray-no-platform");
    // No sysfs tree here, so only the NVML sources count.
    assert!(
        t.sources
            .iter()
            .filter(|s| matches!(s.source, Source::Nvml | Source::Fabric))
            .all(|s| s.ok),
        "no failed NVML source: {:?}",
        t.sources
    );
    for g in &t.gpus {
        assert_eq!(g.platform.status, PlatformStatus::NotSupported);
        assert!(g.platform.chassis_serial.is_none());
    }
    let labels = probe("tray-no-platform", "labels");
    assert_eq!(label(&labels, "rack.serial"), None);
    assert!(label(&labels, "nvlink.domain").is_some(), "{labels}");
    // The status per GPU is in the JSON a user compares across machines.
    let text = probe("tray-no-platform", "json");
    assert_eq!(
        text.matches("\"status\": \"not-supported\"").count(),
        4,
        "{text}"
    );
}

#[test]
fn old_snapshots_still_load_with_the_rack_unknown() {
    // Written before platform info was asked: no `platform` field in the snapshot.
    let raw = std::fs::read_to_string(fixture("tray-pending")).unwrap();
    assert!(!raw.contains("\"platform\""));
    let t = json("tray-pending");
    assert_eq!(t.fabric.state, FabricState::Pending);
    assert!(nvml_ok(&t), "{:?}", t.sources);
    assert!(
        t.gpus
            .iter()
            .all(|g| g.platform.status == PlatformStatus::Unknown)
    );
    let labels = probe("tray-pending", "labels");
    assert_eq!(label(&labels, "rack.serial"), None);
    let text = probe("tray-pending", "json");
    assert!(text.contains("\"status\": \"unknown\""), "{text}");
}

#[test]
fn yaml_and_json_carry_the_same_platform() {
    let mut a = json("tray-a1");
    let mut b: NodeTopology = serde_yaml_ng::from_str(&probe("tray-a1", "yaml")).unwrap();
    a.probe_time = None;
    b.probe_time = None;
    assert_eq!(a, b);
    assert_eq!(b.gpus[2].platform.module_id, Some(3));
}
