//! Whole-binary tests of `nodetopo query env`: a real agent replaying the 8-GPU H100 InfiniBand
//! fixture, the pod's GPUs given the ways the device plugin and users give them, and the file
//! it writes sourced by `sh`, its values equal to `probe -o env --gpus` for the same selection.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use nodetopo::model::NodeTopology;

/// The variables `probe -o env` can set; the sourced file's values of these are compared.
const VARS: [&str; 9] = [
    "DEEP_EP_DEVICE_TO_HCA_MAPPING",
    "VLLM_GPU_NIC_PCIE_MAPPING",
    "VLLM_NIC_SELECTION_VARS",
    "UCX_NET_DEVICES",
    "NCCL_IB_HCA",
    "NVSHMEM_HCA_LIST",
    "NVSHMEM_HCA_PREFIX",
    "NCCL_IB_GID_INDEX",
    "NVSHMEM_IB_GID_INDEX",
];

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/h100x8-ib")
        .join(rel)
}

fn replay_args() -> Vec<String> {
    vec![
        "--replay".into(),
        fixture("snapshot.json").display().to_string(),
        "--sysfs-root".into(),
        fixture("sysfs/sys").display().to_string(),
    ]
}

/// A real agent on 127.0.0.1; killed on drop.
struct Agent {
    child: Child,
    port: u16,
}

impl Agent {
    fn start() -> Self {
        let port = common::free_port();
        let child = common::nodetopo()
            .args(["agent", "--no-kube", "--node-name", "h100-ib"])
            .args(replay_args())
            .arg(format!("--grpc-listen=127.0.0.1:{port}"))
            .arg(format!(
                "--metrics-listen=127.0.0.1:{}",
                common::free_port()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        Self { child, port }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nodetopo query env` as an init container runs it: HOST_IP and the device variables in its
/// environment, nothing else inherited that could steer it.
fn query_env(port: u16, file: &Path, vars: &[(&str, &str)], extra: &[&str]) -> Output {
    let mut c = common::nodetopo();
    c.args(["query", "env", "--agent-port", &port.to_string()])
        .arg("--file")
        .arg(file)
        .args(extra)
        .env_remove("NVIDIA_VISIBLE_DEVICES")
        .env_remove("CUDA_VISIBLE_DEVICES")
        .env("HOST_IP", "127.0.0.1");
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output()
}

/// Sources `file` in `sh -eu` and returns the values of [`VARS`] it set.
fn sourced(file: &Path) -> BTreeMap<String, String> {
    let script = format!(
        ". \"$1\" && for v in {}; do eval \"x=\\${{$v-unset}}\"; printf '%s=%s\\n' \"$v\" \"$x\"; done",
        VARS.join(" ")
    );
    let out = Command::new("sh")
        .args(["-eu", "-c", &script, "sh"])
        .arg(file)
        .env_clear()
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "sourcing {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(_, v)| *v != "unset")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What `probe -o env --gpus LIST` sets, sourced the same way.
fn probe_env(gpus: &str, dir: &Path) -> BTreeMap<String, String> {
    probe_env_for(gpus, "generic", dir)
}

/// What `probe -o env --gpus LIST --for CONSUMER` sets.
fn probe_env_for(gpus: &str, consumer: &str, dir: &Path) -> BTreeMap<String, String> {
    let out = common::nodetopo()
        .args(["probe", "-o", "env", "--gpus", gpus, "--for", consumer])
        .args(replay_args())
        .stdout_ok();
    let f = dir.join(format!("probe-{gpus}-{consumer}.env"));
    std::fs::write(&f, out).unwrap();
    sourced(&f)
}

#[test]
fn env_file_matches_probe_for_each_selection_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::nodetopo()
        .args(["probe", "-o", "json"])
        .args(replay_args())
        .stdout_ok();
    let topo: NodeTopology = serde_json::from_str(&out).unwrap();
    assert_eq!(topo.gpus.len(), 8);
    let uuid = |i: usize| topo.gpus[i].uuid.clone();
    let agent = Agent::start();

    // (NVIDIA_VISIBLE_DEVICES, CUDA_VISIBLE_DEVICES, the same selection for probe --gpus).
    let uuids_257 = format!("{},{},{}", uuid(7), uuid(2), uuid(5));
    let cases: Vec<(Option<String>, Option<String>, &str)> = vec![
        (Some("all".into()), None, "0,1,2,3,4,5,6,7"),
        // The device plugin's UUIDs, in any order: the container sees them in PCI order.
        (Some(format!("{},{}", uuid(5), uuid(2))), None, "2,5"),
        // CUDA_VISIBLE_DEVICES indexes the container's GPUs (2, 5, 7) and sets the order.
        (Some(uuids_257.clone()), Some("2,0".into()), "7,2"),
        (Some(uuids_257), Some("1,2,0".into()), "5,7,2"),
        (None, Some("6,1,4".into()), "6,1,4"),
        (None, Some(uuid(3)), "3"),
        (Some("4,0".into()), None, "0,4"),
    ];
    let mut distinct = std::collections::BTreeSet::new();
    for (i, (nvidia, cuda, probe_gpus)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("env-{i}"));
        let mut vars = Vec::new();
        if let Some(n) = nvidia {
            vars.push(("NVIDIA_VISIBLE_DEVICES", n.as_str()));
        }
        if let Some(c) = cuda {
            vars.push(("CUDA_VISIBLE_DEVICES", c.as_str()));
        }
        let out = query_env(agent.port, &file, &vars, &["--timeout", "20s"]);
        assert!(
            out.status.success(),
            "{vars:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("reordered"),
            "the agent's own hints, in CUDA order, are used"
        );
        let got = sourced(&file);
        let want = probe_env(probe_gpus, dir.path());
        assert!(got.contains_key("NCCL_IB_HCA"), "{vars:?}: {got:?}");
        assert_eq!(got, want, "{vars:?} against probe --gpus {probe_gpus}");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with(&format!("# nodetopo query env: node GPUs {probe_gpus} ")),
            "{text}"
        );
        distinct.insert(got["DEEP_EP_DEVICE_TO_HCA_MAPPING"].clone());
    }
    assert_eq!(
        distinct.len(),
        cases.len(),
        "every selection has its own mapping"
    );

    // --gpus overrides the variables, in the order given.
    let file = dir.path().join("env-flag");
    let out = query_env(
        agent.port,
        &file,
        &[("NVIDIA_VISIBLE_DEVICES", "all")],
        &["--timeout", "20s", "--gpus", &format!("{},1", uuid(6))],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sourced(&file), probe_env("6,1", dir.path()));

    // --for vllm: the vLLM variables, and none of the lists vLLM sets per worker (it would put
    // the worker's NIC in front of them and keep every other rail). The agent filters; probe
    // --for vllm gives the same.
    let file = dir.path().join("env-vllm");
    let out = query_env(
        agent.port,
        &file,
        &[("NVIDIA_VISIBLE_DEVICES", "all")],
        &["--timeout", "20s", "--gpus", "6,1", "--for", "vllm"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vllm = sourced(&file);
    let generic = probe_env("6,1", dir.path());
    for name in ["UCX_NET_DEVICES", "NCCL_IB_HCA", "NVSHMEM_HCA_LIST"] {
        assert!(generic.contains_key(name), "{name} for any launcher");
        assert!(!vllm.contains_key(name), "{name} for vLLM: {vllm:?}");
    }
    assert_eq!(
        vllm.get("VLLM_GPU_NIC_PCIE_MAPPING"),
        generic.get("VLLM_GPU_NIC_PCIE_MAPPING")
    );
    assert!(
        vllm["VLLM_NIC_SELECTION_VARS"].contains("NCCL_IB_HCA:1"),
        "{vllm:?}"
    );
    assert_eq!(
        vllm["DEEP_EP_DEVICE_TO_HCA_MAPPING"],
        generic["DEEP_EP_DEVICE_TO_HCA_MAPPING"]
    );
    assert_eq!(vllm, probe_env_for("6,1", "vllm", dir.path()));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("# for vLLM, left out"), "{text}");

    // A GPU the node does not have is an error, and no file is written.
    let file = dir.path().join("env-unknown");
    let out = query_env(
        agent.port,
        &file,
        &[("NVIDIA_VISIBLE_DEVICES", "GPU-nope")],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GPU-nope") && err.contains("0,1,2,3,4,5,6,7"),
        "{err}"
    );
    assert!(!file.exists());

    // A container without either variable got no GPU: an error, not every GPU's NICs.
    let out = query_env(agent.port, &file, &[], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("are unset") && err.contains("--gpus"), "{err}");
    assert!(!file.exists());
}

#[test]
fn unreachable_agent_fails_unless_optional() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let file = dir.path().join("env");
    let out = query_env(port, &file, &[], &["--timeout", "1s"]);
    assert!(!out.status.success(), "no agent listens on {port}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port} is unreachable")) && err.contains("--optional"),
        "{err}"
    );
    assert!(!file.exists(), "no file without --optional");

    let out = query_env(port, &file, &[], &["--timeout", "1s", "--optional"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));
    assert!(
        sourced(&file).is_empty(),
        "sources cleanly and sets nothing"
    );
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .starts_with("# nodetopo query env: no hints")
    );
}
