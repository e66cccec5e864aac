//! Live NVML checks, for a machine with NVIDIA GPUs. They are `#[ignore]`d, so CI (no GPU)
//! reports them as ignored; run them with `NODETOPO_LIVE_NVML=1` and `--ignored`. Run with
//! `--ignored` but without the variable, they fail.
//!
//! Compares nodetopo's probe field by field with `nvidia-smi -q -x`, `nvidia-smi topo -m` and
//! pynvml (`tests/live/pynvml_facts.py`), checks that the NVSwitch P2P shortcut gives the same
//! answer as asking NVML, and that a recorded snapshot replays to the same topology.

mod common;

use std::{path::Path, process::Command, time::SystemTime};

use nodetopo::{
    model::{Connection, FabricState, MigMode, NodeTopology, P2pStatus, PlatformStatus},
    probe::{
        Prober,
        nvml::live::LiveNvml,
        nvml::prober::{GpuProber, ProbeOptions},
        nvml::snapshot::NvmlSnapshot,
        sysfs::SysfsRoot,
    },
};

/// These tests are `#[ignore]`d, so a normal run lists them as ignored. Asked for explicitly
/// (`--ignored`) without `NODETOPO_LIVE_NVML=1`, they fail rather than pass having checked
/// nothing.
fn require_live() {
    assert_eq!(
        std::env::var("NODETOPO_LIVE_NVML").as_deref(),
        Ok("1"),
        "live NVML test run without NODETOPO_LIVE_NVML=1: set it on a machine with NVIDIA GPUs \
         (a run without it would check nothing)"
    );
}

fn live_probe(options: ProbeOptions) -> NodeTopology {
    let nvml = LiveNvml::init(None).expect("NVML initialises");
    let mut p = Prober::new(
        Ok(GpuProber::new(Box::new(nvml), options)),
        SysfsRoot::default(),
        "live".into(),
    );
    p.probe(SystemTime::now())
}

fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
#[ignore = "live NVML: needs NVIDIA GPUs; run with NODETOPO_LIVE_NVML=1 and --run-ignored"]
fn live_probe_matches_nvidia_smi() {
    require_live();
    let t = live_probe(ProbeOptions::default());
    eprintln!("{}", nodetopo::render::table::render(&t));
    let xml = run("nvidia-smi", &["-q", "-x"]);
    let doc = common::nvidia_smi_doc(&xml);
    let root = doc.root_element();
    let text = common::xml_text;
    assert_eq!(
        t.driver.driver_version.as_deref(),
        Some(text(root, "driver_version").as_str())
    );
    assert_eq!(
        t.driver.cuda_driver_version.as_deref(),
        Some(text(root, "cuda_version").as_str())
    );
    let gpus: Vec<_> = root.children().filter(|c| c.has_tag_name("gpu")).collect();
    assert_eq!(gpus.len(), t.gpus.len(), "GPU count");
    for (g, x) in t.gpus.iter().zip(&gpus) {
        assert_eq!(g.name, text(*x, "product_name"));
        assert_eq!(g.uuid, text(*x, "uuid"));
        assert_eq!(
            g.serial.clone().unwrap_or_else(|| "N/A".into()),
            text(*x, "serial")
        );
        assert_eq!(x.attribute("id"), Some(g.pci_bus_id.as_str()));
        let fb = x
            .children()
            .find(|c| c.has_tag_name("fb_memory_usage"))
            .unwrap();
        assert_eq!(format!("{} MiB", g.memory_mib()), text(fb, "total"));
        if let Some(mig) = x.children().find(|c| c.has_tag_name("mig_mode")) {
            let want = match text(mig, "current_mig").as_str() {
                "Enabled" => MigMode::Enabled,
                "Disabled" => MigMode::Disabled,
                _ => MigMode::Unsupported,
            };
            assert_eq!(g.mig_mode, want);
        }
        // nvidia-smi -q prints the fabric as e.g. State "Completed", Status "Success",
        // ClusterUUID and CliqueId.
        if let Some(fab) = x.children().find(|c| c.has_tag_name("fabric")) {
            let f = g
                .fabric
                .as_ref()
                .expect("fabric info where nvidia-smi shows one");
            let state = text(fab, "state");
            if state == "Completed" {
                assert_eq!(
                    serde_json::to_value(f.registration).unwrap(),
                    serde_json::json!("completed")
                );
                assert_eq!(f.cluster_uuid, text(fab, "cluster_uuid").to_lowercase());
                assert_eq!(f.clique_id.to_string(), text(fab, "clique_id"));
            }
        }
    }
    assert!(
        t.sources.iter().all(|s| s.ok),
        "every source answers on real hardware: {:?}",
        t.sources
    );
    // Platform info answers on GB200/GB300 and is "not supported" elsewhere; it is never left
    // unasked on a live machine.
    for g in &t.gpus {
        eprintln!("GPU {} platform: {:?}", g.index, g.platform);
        assert!(
            matches!(
                g.platform.status,
                PlatformStatus::Ok | PlatformStatus::NotSupported
            ),
            "GPU {}: {:?}",
            g.index,
            g.platform
        );
    }

    // topo -m: GPU rows, one cell per GPU.
    let topo = run("nvidia-smi", &["topo", "-m"]);
    let n = t.gpus.len();
    let rows: Vec<Vec<String>> = topo
        .lines()
        .map(|l| l.replace('\u{1b}', ""))
        .filter(|l| l.starts_with("GPU"))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), n, "{topo}");
    for (a, row) in rows.iter().enumerate() {
        for b in 0..n {
            if a != b {
                assert_eq!(
                    t.pair(a as u32, b as u32).unwrap().cell(),
                    row[b + 1],
                    "GPU{a}->GPU{b}\n{topo}"
                );
            }
        }
    }
}

#[test]
#[ignore = "live NVML: needs NVIDIA GPUs; run with NODETOPO_LIVE_NVML=1 and --run-ignored"]
fn live_switch_shortcut_equals_asking_nvml() {
    require_live();
    let fast = live_probe(ProbeOptions::default());
    let full = live_probe(ProbeOptions {
        query_all_p2p: true,
    });
    assert_eq!(fast.gpu_pairs, full.gpu_pairs);
    assert!(
        full.gpu_pairs
            .iter()
            .all(|p| p.p2p_nvlink != P2pStatus::Error)
    );
}

#[test]
#[ignore = "live NVML: needs NVIDIA GPUs; run with NODETOPO_LIVE_NVML=1 and --run-ignored"]
fn live_probe_matches_pynvml() {
    require_live();
    // The test binary may run on another machine than it was built on: fall back to the path
    // relative to the working directory (the repository root).
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/live/pynvml_facts.py");
    let script = if built.exists() {
        built
    } else {
        Path::new("tests/live/pynvml_facts.py").to_path_buf()
    };
    let py: serde_json::Value =
        serde_json::from_str(&run("python3", &[script.to_str().unwrap()])).unwrap();
    let t = live_probe(ProbeOptions {
        query_all_p2p: true,
    });
    assert_eq!(t.driver.driver_version.as_deref(), py["driver"].as_str());
    let cuda = py["cuda"].as_i64().unwrap();
    assert_eq!(
        t.driver.cuda_driver_version,
        Some(format!("{}.{}", cuda / 1000, (cuda % 1000) / 10))
    );
    let pg = py["gpus"].as_array().unwrap();
    assert_eq!(pg.len(), t.gpus.len());
    for (g, p) in t.gpus.iter().zip(pg) {
        assert_eq!(g.name, p["name"]);
        assert_eq!(g.uuid, p["uuid"]);
        assert_eq!(g.pci_bus_id, p["bus_id"]);
        assert_eq!(g.memory_total_bytes, p["memory_total"].as_u64().unwrap());
        assert_eq!(
            [g.compute_major as u64, g.compute_minor as u64],
            [p["cc"][0].as_u64().unwrap(), p["cc"][1].as_u64().unwrap()]
        );
        match p["numa"].as_u64() {
            Some(n) => assert_eq!(g.numa_node, Some(n as i32)),
            None => assert!(
                p["numa"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("Not Supported")
            ),
        }
        let links = p["links"].as_array().unwrap();
        assert_eq!(g.nvlinks.len(), links.len(), "active NVLinks");
        for (l, pl) in g.nvlinks.iter().zip(links) {
            assert_eq!(u64::from(l.link), pl["link"].as_u64().unwrap());
            let rt = pl["remote_type"].as_u64();
            let want = match rt {
                Some(0) => "gpu",
                Some(1) => "ibmnpu",
                Some(2) => "switch",
                _ => "unknown",
            };
            assert_eq!(
                serde_json::to_value(l.remote_type).unwrap(),
                want,
                "link {}",
                l.link
            );
        }
        if let Some(f) = p["fabric"].as_object().filter(|f| !f.contains_key("error")) {
            let mine = g.fabric.as_ref().unwrap();
            assert_eq!(
                mine.cluster_uuid.replace('-', ""),
                f["cluster_uuid"].as_str().unwrap()
            );
            assert_eq!(u64::from(mine.clique_id), f["clique_id"].as_u64().unwrap());
            assert_eq!(u64::from(mine.status), f["status"].as_u64().unwrap());
        }
        // Platform info: the same answer, or "not supported" (the call or the hardware).
        let pp = &p["platform"];
        match pp["error"].as_str() {
            Some(e) if e.contains("Not Supported") || e.contains("Function Not Found") => {
                assert_eq!(g.platform.status, PlatformStatus::NotSupported, "{e}")
            }
            Some(e) => assert_eq!(g.platform.status, PlatformStatus::Error, "{e}"),
            None => {
                assert_eq!(g.platform.status, PlatformStatus::Ok);
                assert_eq!(
                    g.platform.chassis_serial,
                    nodetopo::probe::nvml::platform::chassis_serial(
                        pp["chassis_serial"].as_str().unwrap()
                    )
                );
                for (mine, key) in [
                    (g.platform.slot_number, "slot_number"),
                    (g.platform.tray_index, "tray_index"),
                    (g.platform.host_id, "host_id"),
                    (g.platform.module_id, "module_id"),
                ] {
                    assert_eq!(mine.map(u64::from), pp[key].as_u64(), "{key}");
                }
            }
        }
    }
    for p in py["pairs"].as_array().unwrap() {
        let (a, b) = (
            p["a"].as_u64().unwrap() as u32,
            p["b"].as_u64().unwrap() as u32,
        );
        let mine = t.pair(a, b).unwrap();
        let ok = p["p2p_nvlink"].as_u64() == Some(0);
        assert_eq!(mine.p2p_nvlink == P2pStatus::Ok, ok, "P2P {a}-{b}");
        let level = p["common_ancestor"].as_u64().unwrap();
        assert_eq!(
            mine.pcie,
            nodetopo::probe::nvml::prober::pcie_level(level as u32),
            "ancestor {a}-{b}"
        );
        assert_ne!(mine.pcie, Connection::Unknown);
    }
    // Expected on an HGX H200: no multi-node NVLink.
    if t.gpus.iter().all(|g| g.name.contains("H200")) {
        assert_eq!(t.fabric.state, FabricState::None, "{:?}", t.fabric);
    }
}

#[test]
#[ignore = "live NVML: needs NVIDIA GPUs; run with NODETOPO_LIVE_NVML=1 and --run-ignored"]
fn live_record_replays_to_the_same_topology() {
    require_live();
    let nvml = LiveNvml::init(None).unwrap();
    let snap = NvmlSnapshot::capture(&nvml, "live test");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.json");
    snap.save(&path).unwrap();
    let replayed = NvmlSnapshot::load(&path).unwrap();
    let options = ProbeOptions {
        query_all_p2p: true,
    };
    let mut live = Prober::new(
        Ok(GpuProber::new(Box::new(nvml), options)),
        SysfsRoot::default(),
        "n".into(),
    );
    let mut replay = Prober::new(
        Ok(GpuProber::new(Box::new(replayed), options)),
        SysfsRoot::default(),
        "n".into(),
    );
    let a = live.probe(SystemTime::now());
    let b = replay.probe(SystemTime::now());
    assert!(a.same_content(&b), "live:\n{a:#?}\nreplay:\n{b:#?}");
}
