//! nodetopo at 5,000 to 50,000 nodes (a bench binary; figures in BENCHMARKS.md).
//!
//! **Node steps.** One control plane (etcd and kube-apiserver on 127.0.0.1, from
//! tests/e2e/build-kube.sh) is filled with Nodes in steps (`STEPS`, default
//! 5000,10000,20000,35000,45000,50000). Each Node is a GB200 tray of an NVL72 rack (18 trays, two
//! cliques of 9, one NVLink cluster per rack; 8 racks share an InfiniBand scalable unit, 4 units
//! a spine block) carrying the labels the agent writes for such a tray (taken from `nodetopo
//! probe -o labels` on the repository's GB200 fixture, with each node's cluster, clique, `ib.su`
//! and `ib.block`), and what a kubelet, GPU feature discovery and node feature discovery leave on
//! a real Node: 121 labels, annotations, capacity and allocatable with `nvidia.com/gpu`, four
//! conditions, addresses, node info, runtime handlers and the kubelet's 50-image list (19 KB of
//! JSON a Node; managed fields are the API server's own). At each step:
//! - the creates (concurrent, one POST a Node with its status) and their rate;
//! - kube-apiserver and etcd resident memory;
//! - a fresh `nodetopo extender` (release build, names-only mode, its Node and Pod watches as
//!   shipped): time until its view holds every Node, its resident memory (and peak), CPU time;
//!   the same for a reference extender binary (`NODETOPO_BIN_REF`), when given, and its calls;
//! - a fresh `nodetopo webhook` (its metadata-only Node watch and store): time until it holds
//!   every Node, its resident memory (and peak); the same for the webhook of the reference binary
//!   (`NODETOPO_BIN_REF`), when given, started and measured just before it;
//! - `filter` over HTTP with every node name for the first member of a new GPU group (a new
//!   LeaderWorkerSet group of 8 pods × 4 GPUs each call, so each call chooses a domain over all
//!   nodes; a `-decode` group, whose prefill counterpart the extender keeps room for, then a
//!   group without a role), with `prioritize` after each decode filter as kube-scheduler sends it
//!   (the nodes that passed) and with every node name (the worst case): p50/p99 over `CALLS`
//!   calls each (default 200), one new loopback connection per call, and the extender's CPU time
//!   per call (its threads' scheduler time), which other load on the machine does not inflate.
//!
//! Every figure is fitted against the node count (least squares: a base plus a cost per node).
//! If the control plane cannot hold a step within `MEM_BUDGET_GIB` (default 12: the sum of this
//! benchmark's processes) or the machine's available memory, it is stopped and the remaining
//! steps run against a second control plane holding the same Nodes without the kubelet's bulk
//! (labels, capacity, conditions, addresses only): the extender and webhook keep the same data
//! from either, only their sync reads less.
//!
//! The Nodes carry no InternalIP: the shipped extender dials `InternalIP:--agent-port` of every
//! Node, and nothing would answer for them here.
//!
//! **Agent fan-in.** Then, against the last step's Nodes, `AGENTS` (default
//! 0,1000,5000,10000,19000) simulated agents, each the agent's own gRPC `TopologyService`
//! (`nodetopo::api::TopologyApi`, health and reflection left out) on a port of its own on
//! 127.0.0.1 (10000 and up), 7,000 to a child process of this benchmark, serving its node's
//! topology (the GB200 fixture's probe output with the node's cluster, clique, scalable unit and
//! block). The extender gets them through `--agents FILE` (node → `127.0.0.1:PORT`); in a
//! cluster it finds the same endpoints through the Node watch, and runs the same connector and
//! watch task per node. It holds one connection per agent, so its open-file limit bounds the
//! count (20,000 here, and not raisable). Measured: the time from the extender's start until
//! every agent's Watch was answered and until the extender's view shows every agent's node live,
//! and its resident memory, against the same extender without agents (`0`).
//!
//! Run: `cargo bench --locked --features e2e --bench scale` (NODETOPO_KUBE_BIN as for the
//! end-to-end suite; `NODETOPO_BIN` names another nodetopo binary; `CALLS`, `MEM_BUDGET_GIB`,
//! `CREATE_CONCURRENCY` as above; `NODETOPO_BIN_REF`, a second nodetopo binary whose extender
//! and webhook are measured beside the first's at each step for sync and memory, and its
//! extender over HTTP with `REF_CALLS` calls each (default 30; 0 leaves them out); `PAUSE_S`,
//! seconds to keep each extender running after its figures, to look into it).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use harness::{ControlPlane, NODETOPO};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client, api::PostParams};
use nodetopo::{
    api::{Published, TopologyApi},
    model::NodeTopology,
    proto::v1::{
        self as pb,
        topology_service_server::{TopologyService, TopologyServiceServer},
    },
};
use serde_json::{Value, json};

use common::fleet_node_name as node_name;

/// The nodetopo binary: `NODETOPO_BIN`, else the one Cargo built (a copy made right after the
/// build keeps a build from another checkout sharing the target folder out of the run).
fn nodetopo_bin() -> std::path::PathBuf {
    std::env::var_os("NODETOPO_BIN")
        .map(Into::into)
        .unwrap_or_else(|| NODETOPO.into())
}

/// Trays per NVL72 rack, trays per clique.
const RACK: usize = 18;
const CLIQUE: usize = 9;
/// Racks per InfiniBand scalable unit, units per spine block.
const SU_RACKS: usize = 8;
const BLOCK_SUS: usize = 4;
/// The ClusterUUID of the fixture, replaced by each rack's.
const FIXTURE_UUID: &str = "4f1c2d3e-5a6b-47c8-a9d0-e1f2a3b4c5d6";
const MIB: f64 = 1024.0 * 1024.0;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        harness::terminate(&mut self.0, Duration::from_secs(5));
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

fn env_list(key: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(key) {
        Ok(v) => v
            .split(',')
            .filter_map(|s| s.trim().replace('_', "").parse().ok())
            .collect(),
        Err(_) => default.to_vec(),
    }
}

fn env_num<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A small integer mix, so that generated IDs look spread out.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where fleet node `i` sits.
struct Place {
    cluster: String,
    clique: usize,
    su: String,
    block: String,
}

fn place(i: usize) -> Place {
    let rack = i / RACK;
    let su = rack / SU_RACKS;
    let block = su / BLOCK_SUS;
    let h = mix(rack as u64);
    Place {
        cluster: format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            h >> 32,
            (h >> 16) & 0xffff,
            h & 0xfff,
            (h >> 20) & 0xfff,
            rack
        ),
        clique: (i % RACK) / CLIQUE + 1,
        su: format!("{:010x}", mix(1 << 40 | su as u64) & 0xff_ffff_ffff),
        block: format!("{:010x}", mix(2 << 40 | block as u64) & 0xff_ffff_ffff),
    }
}

/// The agent's labels and topology for the fleet, from `nodetopo probe` on the GB200 fixture.
struct Fleet {
    /// The agent's labels of the fixture tray.
    agent_labels: Vec<(String, String)>,
    /// The fixture tray's topology as JSON.
    topology: String,
}

impl Fleet {
    fn probe() -> Self {
        let run = |format: &str| {
            let out = Command::new(nodetopo_bin())
                .args(["probe", "-o", format, "--node-name", "gb-00000"])
                .args(["--lldp", "off", "--ib-smp", "off"])
                .arg("--replay")
                .arg(format!(
                    "{}/tests/fixtures/gb200/tray-a1.json",
                    harness::ROOT
                ))
                .arg("--sysfs-root")
                .arg(format!(
                    "{}/tests/fixtures/gb200-tray/sysfs/sys",
                    harness::ROOT
                ))
                .stderr(Stdio::null())
                .output()
                .expect("run nodetopo probe");
            assert!(out.status.success(), "nodetopo probe -o {format} failed");
            String::from_utf8(out.stdout).expect("UTF-8")
        };
        let agent_labels: Vec<(String, String)> = run("labels")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(
            agent_labels
                .iter()
                .any(|(k, v)| k == "nodetopo.io/nvlink.fabric" && v == "ready"),
            "the fixture tray is on a ready NVLink fabric: {agent_labels:?}"
        );
        Self {
            agent_labels,
            topology: run("json"),
        }
    }

    /// The labels the agent writes on node `i`: the fixture's, with its rack's cluster and its
    /// clique, and the InfiniBand scalable unit and spine block of a rail-optimised fabric (every
    /// tray's rails go to different leaves, so `ib.leaf` is not written).
    fn agent_labels(&self, i: usize) -> BTreeMap<String, String> {
        let p = place(i);
        let mut out: BTreeMap<String, String> = self
            .agent_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.replace(FIXTURE_UUID, &p.cluster)))
            .collect();
        out.insert(
            "nodetopo.io/nvlink.domain".into(),
            format!("{}.{}", p.cluster, p.clique),
        );
        out.insert("nodetopo.io/ib.su".into(), p.su);
        out.insert("nodetopo.io/ib.block".into(), p.block);
        out
    }

    /// Node `i`'s topology as its agent serves it.
    fn topology(&self, i: usize) -> NodeTopology {
        let p = place(i);
        let text = self
            .topology
            .replace(FIXTURE_UUID, &p.cluster)
            .replace("\"clique_id\": 1", &format!("\"clique_id\": {}", p.clique))
            .replace("\"gb-00000\"", &format!("\"{}\"", node_name(i)))
            .replace(
                &format!("{FIXTURE_UUID}.1"),
                &format!("{}.{}", p.cluster, p.clique),
            );
        let mut t: NodeTopology = serde_json::from_str(&text).expect("the probe's topology");
        t.revision = 1;
        t.network.infiniband.su = Some(p.su);
        t.network.infiniband.block = Some(p.block);
        t
    }

    /// Every label of node `i`: the agent's, the kubelet's, GPU feature discovery's and the GPU
    /// operator's, and node feature discovery's (with its CPU feature flags of a Grace CPU).
    fn all_labels(&self, i: usize) -> BTreeMap<String, String> {
        let name = node_name(i);
        let p = place(i);
        let mut l = self.agent_labels(i);
        let mut put = |k: &str, v: &str| {
            l.insert(k.to_string(), v.to_string());
        };
        for (k, v) in [
            ("beta.kubernetes.io/arch", "arm64"),
            ("beta.kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "arm64"),
            ("kubernetes.io/os", "linux"),
            ("node.kubernetes.io/instance-type", "gb200-nvl72-tray"),
            ("topology.kubernetes.io/region", "region-1"),
            ("topology.kubernetes.io/zone", "region-1a"),
            ("nvidia.com/cuda.driver-version.full", "580.95.05"),
            ("nvidia.com/cuda.driver-version.major", "580"),
            ("nvidia.com/cuda.driver-version.minor", "95"),
            ("nvidia.com/cuda.driver-version.revision", "05"),
            ("nvidia.com/cuda.driver.major", "580"),
            ("nvidia.com/cuda.driver.minor", "95"),
            ("nvidia.com/cuda.driver.rev", "05"),
            ("nvidia.com/cuda.runtime-version.full", "13.0"),
            ("nvidia.com/cuda.runtime-version.major", "13"),
            ("nvidia.com/cuda.runtime-version.minor", "0"),
            ("nvidia.com/cuda.runtime.major", "13"),
            ("nvidia.com/cuda.runtime.minor", "0"),
            ("nvidia.com/gfd.timestamp", "1764583200"),
            ("nvidia.com/gpu.compute.major", "10"),
            ("nvidia.com/gpu.compute.minor", "0"),
            ("nvidia.com/gpu.count", "4"),
            ("nvidia.com/gpu.family", "blackwell"),
            ("nvidia.com/gpu.machine", "GB200-NVL72"),
            ("nvidia.com/gpu.memory", "189471"),
            ("nvidia.com/gpu.mode", "compute"),
            ("nvidia.com/gpu.present", "true"),
            ("nvidia.com/gpu.product", "NVIDIA-GB200"),
            ("nvidia.com/gpu.replicas", "1"),
            ("nvidia.com/gpu.sharing-strategy", "none"),
            ("nvidia.com/mig.capable", "true"),
            ("nvidia.com/mig.strategy", "single"),
            ("nvidia.com/mps.capable", "false"),
            ("nvidia.com/vgpu.present", "false"),
            ("nvidia.com/gpu.deploy.container-toolkit", "true"),
            ("nvidia.com/gpu.deploy.dcgm", "true"),
            ("nvidia.com/gpu.deploy.dcgm-exporter", "true"),
            ("nvidia.com/gpu.deploy.device-plugin", "true"),
            ("nvidia.com/gpu.deploy.driver", "pre-installed"),
            ("nvidia.com/gpu.deploy.gpu-feature-discovery", "true"),
            ("nvidia.com/gpu.deploy.mig-manager", "true"),
            ("nvidia.com/gpu.deploy.node-status-exporter", "true"),
            ("nvidia.com/gpu.deploy.operator-validator", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.ASIMD", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.ASIMDDP", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.ASIMDFHM", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.ASIMDHP", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.ASIMDRDM", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.ATOMICS", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.BF16", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.CPUID", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.DCPODP", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.DCPOP", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.FCMA", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.FLAGM", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.FLAGM2", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.FP", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.FPHP", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.FRINT", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.I8MM", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.ILRCPC", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.JSCVT", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.LRCPC", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.PACA", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.PACG", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.SB", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.SHA3", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.SHA512", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.SM3", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.SM4", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.SVE", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.SVE2", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.SVEBF16", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.SVEI8MM", "true"),
            ("feature.node.kubernetes.io/cpu-cpuid.USCAT", "true"),
            (
                "feature.node.kubernetes.io/cpu-hardware_multithreading",
                "false",
            ),
            ("feature.node.kubernetes.io/cpu-model.family", "0"),
            ("feature.node.kubernetes.io/cpu-model.id", "3407"),
            ("feature.node.kubernetes.io/cpu-model.vendor_id", "ARM"),
            ("feature.node.kubernetes.io/kernel-config.NO_HZ", "true"),
            (
                "feature.node.kubernetes.io/kernel-config.NO_HZ_FULL",
                "true",
            ),
            (
                "feature.node.kubernetes.io/kernel-version.full",
                "6.8.0-1021-nvidia-64k",
            ),
            ("feature.node.kubernetes.io/kernel-version.major", "6"),
            ("feature.node.kubernetes.io/kernel-version.minor", "8"),
            ("feature.node.kubernetes.io/kernel-version.revision", "0"),
            ("feature.node.kubernetes.io/memory-numa", "true"),
            ("feature.node.kubernetes.io/pci-10de.present", "true"),
            ("feature.node.kubernetes.io/pci-15b3.present", "true"),
            ("feature.node.kubernetes.io/pci-15b3.sriov.capable", "true"),
            ("feature.node.kubernetes.io/rdma.available", "true"),
            ("feature.node.kubernetes.io/rdma.capable", "true"),
            (
                "feature.node.kubernetes.io/storage-nonrotationaldisk",
                "true",
            ),
            ("feature.node.kubernetes.io/system-os_release.ID", "ubuntu"),
            (
                "feature.node.kubernetes.io/system-os_release.VERSION_ID",
                "24.04",
            ),
            (
                "feature.node.kubernetes.io/system-os_release.VERSION_ID.major",
                "24",
            ),
            (
                "feature.node.kubernetes.io/system-os_release.VERSION_ID.minor",
                "04",
            ),
        ] {
            put(k, v);
        }
        put("kubernetes.io/hostname", &name);
        put(
            "nvidia.com/gpu.clique",
            &format!("{}.{}", p.cluster, p.clique),
        );
        l
    }

    /// Node `i` as a kubelet, GPU feature discovery, node feature discovery and a CSI driver
    /// leave it (`kubelet`), or only its labels, capacity, conditions and addresses (`lean`).
    fn node(&self, i: usize, lean: bool) -> Value {
        let name = node_name(i);
        let labels = self.all_labels(i);
        let condition = |t: &str, status: &str, reason: &str, msg: &str| {
            json!({"type": t, "status": status, "reason": reason, "message": msg,
                   "lastHeartbeatTime": "2026-12-07T10:00:00Z",
                   "lastTransitionTime": "2026-11-20T08:00:00Z"})
        };
        let resources = |cpu: &str, memory: &str, disk: &str| {
            json!({"cpu": cpu, "ephemeral-storage": disk, "hugepages-16Gi": "0",
                   "hugepages-2Mi": "0", "hugepages-512Mi": "0", "memory": memory,
                   "nvidia.com/gpu": "4", "pods": "110"})
        };
        let mut status = json!({
            "capacity": resources("144", "1980000000Ki", "3750000000Ki"),
            "allocatable": resources("142", "1970000000Ki", "3450000000Ki"),
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "Hostname", "address": name}],
        });
        if lean {
            return json!({"metadata": {"name": name, "labels": labels}, "spec": {},
                          "status": status});
        }
        let nfd: Vec<&str> = labels
            .keys()
            .filter_map(|k| k.strip_prefix("feature.node.kubernetes.io/"))
            .collect();
        let images: Vec<Value> = (0..50)
            .map(|k| {
                json!({
                    "names": [
                        format!("registry.example.com/inference/image-{k:02}@sha256:{:016x}{:016x}{:016x}{:016x}",
                            mix(k), mix(k + 100), mix(k + 200), mix(k + 300)),
                        format!("registry.example.com/inference/image-{k:02}:v1.{k}.0"),
                    ],
                    "sizeBytes": 1_000_000_000u64 + k * 37_000_000,
                })
            })
            .collect();
        let s = status.as_object_mut().expect("an object");
        s.insert(
            "daemonEndpoints".into(),
            json!({"kubeletEndpoint": {"Port": 10250}}),
        );
        s.insert(
            "nodeInfo".into(),
            json!({
                "machineID": format!("{:016x}{:016x}", mix(i as u64), mix(!(i as u64))),
                "systemUUID": format!("{:08x}-aaaa-4bbb-8ccc-{:012x}", mix(i as u64) >> 32, i),
                "bootID": format!("{:08x}-0000-4000-8000-{:012x}", mix(3 << 40 | i as u64) >> 32, i),
                "kernelVersion": "6.8.0-1021-nvidia-64k", "osImage": "Ubuntu 24.04.3 LTS",
                "containerRuntimeVersion": "containerd://2.1.4", "kubeletVersion": "v1.34.1",
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "arm64",
            }),
        );
        s.insert("images".into(), Value::Array(images));
        s.insert(
            "runtimeHandlers".into(),
            json!([
                {"name": "nvidia", "features": {"recursiveReadOnlyMounts": true, "userNamespaces": true}},
                {"name": "runc", "features": {"recursiveReadOnlyMounts": true, "userNamespaces": true}},
                {"name": "", "features": {"recursiveReadOnlyMounts": true, "userNamespaces": true}},
            ]),
        );
        s.insert("features".into(), json!({"supplementalGroupsPolicy": true}));
        json!({
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                    "csi.volume.kubernetes.io/nodeid": format!("{{\"csi.example.com\":\"{name}\"}}"),
                    "nfd.node.kubernetes.io/feature-labels": nfd.join(","),
                    "nvidia.com/gpu-driver-upgrade-enabled": "true",
                    "nvidia.com/gpu-driver-upgrade-state": "upgrade-done",
                },
            },
            "spec": {
                "podCIDR": format!("10.{}.{}.0/24", 64 + i / 256 / 256, (i / 256) % 256),
                "podCIDRs": [format!("10.{}.{}.0/24", 64 + i / 256 / 256, (i / 256) % 256)],
                "providerID": format!("metal://region-1a/{name}"),
            },
            "status": status,
        })
    }
}

/// Creates fleet Nodes `from..to`, `concurrency` at a time, each in one POST with its status.
async fn create_nodes(
    client: &Client,
    fleet: &Fleet,
    from: usize,
    to: usize,
    lean: bool,
    concurrency: usize,
) {
    use futures::StreamExt;
    let api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(from..to)
        .for_each_concurrent(concurrency, |i| {
            let api = api.clone();
            let node: Node = serde_json::from_value(fleet.node(i, lean)).expect("a Node");
            async move {
                for attempt in 0.. {
                    match api.create(&PostParams::default(), &node).await {
                        Ok(_) => return,
                        Err(kube::Error::Api(e)) if e.code == 409 => return,
                        Err(e) if attempt < 5 => {
                            eprintln!("create {}: {e}; again", node_name(i));
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => panic!("create {}: {e}", node_name(i)),
                    }
                }
            }
        })
        .await;
}

/// `/proc/PID/status` field `key` (kB), in MiB.
fn status_mib(pid: u32, key: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

fn hwm_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// User + system CPU seconds of a process.
fn cpu_s(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = s.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |k: usize| f.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // Fields 14 and 15 of stat (utime, stime); `rest` starts at field 3.
    (ticks(11) + ticks(12)) / hz
}

/// CPU time of every thread of a process, ns (the scheduler's own count, not clock ticks).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| {
            let t = t.ok()?;
            let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            s.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// The pid of this process's child named `comm` (etcd, kube-apiserver).
fn child_pid(comm: &str) -> u32 {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some((head, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            head.ends_with(&format!("({comm}"))
                && rest.split_whitespace().nth(1) == Some(me.as_str())
        })
        .unwrap_or_else(|| panic!("no child process {comm}"))
}

/// `MemAvailable` of the machine, MiB.
fn mem_available_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One POST over a fresh loopback connection; the round trip and the answer's body.
fn post(port: u16, path: &str, body: &[u8]) -> (Duration, Vec<u8>) {
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("write");
    s.write_all(body).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let took = t0.elapsed();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{path}: {}",
        String::from_utf8_lossy(&out[..out.len().min(300)])
    );
    let at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    (took, out.split_off(at))
}

fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The first member of LeaderWorkerSet group `lws` (8 pods of 4 GPUs).
fn group_pod(lws: &str) -> Value {
    json!({
        "metadata": {"name": format!("{lws}-0"), "namespace": "bench",
            "labels": {
                "leaderworkerset.sigs.k8s.io/name": lws,
                "leaderworkerset.sigs.k8s.io/group-index": "0",
                "leaderworkerset.sigs.k8s.io/worker-index": "0",
            },
            "annotations": {"leaderworkerset.sigs.k8s.io/size": "8"}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
            "resources": {"limits": {"nvidia.com/gpu": "4"}}}]},
    })
}

fn names_body(pod: &Value, names: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({"Pod": pod, "NodeNames": names})).expect("encode")
}

/// A running extender: the process and its port.
struct Ext {
    proc: Proc,
    port: u16,
    started: Instant,
}

fn start_extender(
    cp: &ControlPlane,
    bin: &std::path::Path,
    agents: Option<&std::path::Path>,
) -> Ext {
    let port = harness::free_port();
    let started = Instant::now();
    let mut cmd = Command::new(bin);
    cmd.args(["extender", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--agent-port", &harness::free_port().to_string()])
        .env("KUBECONFIG", &cp.admin_kubeconfig)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(a) = agents {
        cmd.arg("--agents").arg(a);
    }
    die_with_parent(&mut cmd);
    let child = cmd.spawn().expect("start the extender");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ext {
        proc: Proc(child),
        port,
        started,
    }
}

/// Waits until the extender's view knows `last` (the last Node of the list, which the Node
/// watch applies last); the time since its start.
async fn extender_synced(ext: &Ext, last: &str) -> Duration {
    let body = names_body(&group_pod("sync-probe"), &[last.to_string()]);
    loop {
        let (_, answer) = post(ext.port, "/debug/explain", &body);
        let v: Value = serde_json::from_slice(&answer).expect("an explanation");
        let unknown = v["rejected"][last]
            .as_str()
            .is_some_and(|r| r.starts_with("unknown node"));
        if !unknown {
            return ext.started.elapsed();
        }
        assert!(
            ext.started.elapsed() < Duration::from_secs(900),
            "the extender never saw {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With `PAUSE_S`, keeps the extender running that long after its figures (to look into it).
async fn pause(ext: &Ext) {
    let secs: u64 = env_num("PAUSE_S", 0);
    if secs > 0 {
        eprintln!("  extender pid {} kept for {secs} s", ext.proc.pid());
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
}

struct Webhook {
    proc: Proc,
    metrics: u16,
    started: Instant,
}

fn start_webhook(
    cp: &ControlPlane,
    bin: &std::path::Path,
    cert: &(std::path::PathBuf, std::path::PathBuf),
) -> Webhook {
    let (port, metrics) = (harness::free_port(), harness::free_port());
    let started = Instant::now();
    let mut cmd = Command::new(bin);
    cmd.args(["webhook"])
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--metrics-listen=127.0.0.1:{metrics}"))
        .arg(format!("--tls-cert={}", cert.0.display()))
        .arg(format!("--tls-key={}", cert.1.display()))
        .env("KUBECONFIG", &cp.admin_kubeconfig)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    die_with_parent(&mut cmd);
    let child = cmd.spawn().expect("start the webhook");
    Webhook {
        proc: Proc(child),
        metrics,
        started,
    }
}

async fn webhook_synced(w: &Webhook, nodes: usize) -> Duration {
    let want = format!("nodetopo_webhook_nodes {nodes}\n");
    loop {
        if http_get(w.metrics, "/metrics").contains(&want) {
            return w.started.elapsed();
        }
        assert!(
            w.started.elapsed() < Duration::from_secs(900),
            "the webhook never held {nodes} nodes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

/// Least squares `y = a + b x`: (a, b, r²).
fn fit(points: &[(f64, f64)]) -> (f64, f64, f64) {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx == 0.0 {
        return (my, 0.0, 0.0);
    }
    let b = sxy / sxx;
    let a = my - b * mx;
    let r2 = if syy == 0.0 {
        1.0
    } else {
        sxy * sxy / (sxx * syy)
    };
    (a, b, r2)
}

/// One node step's figures.
#[derive(Default, Clone)]
struct Step {
    nodes: usize,
    lean: bool,
    create_s: f64,
    create_rate: f64,
    apiserver_mib: f64,
    apiserver_after_mib: f64,
    apiserver_peak_mib: f64,
    etcd_mib: f64,
    ext_sync_s: f64,
    ext_sync_cpu_s: f64,
    ext_rss_mib: f64,
    ext_hwm_mib: f64,
    ext_rss_after_mib: f64,
    ref_sync_s: f64,
    ref_rss_mib: f64,
    ref_hwm_mib: f64,
    hook_sync_s: f64,
    hook_rss_mib: f64,
    hook_hwm_mib: f64,
    ref_hook_sync_s: f64,
    ref_hook_rss_mib: f64,
    ref_hook_hwm_mib: f64,
    filter: (f64, f64),
    filter_alone: (f64, f64),
    prio_passed: (f64, f64),
    prio_all: (f64, f64),
    passed: usize,
    /// Mean CPU ms of the extender per call: filter (decode group), prioritize (passed),
    /// prioritize (every name), filter (no role).
    cpu_ms: [f64; 4],
    /// The same four for the reference binary (`REF_CALLS` calls each), when it is given.
    ref_calls: Option<Box<Step>>,
    body_kib: f64,
    load: String,
}

/// One `filter` call for `pod` over `names`; its time and the names that passed.
fn filter(port: u16, pod: &Value, names: &[String]) -> (Duration, Vec<u8>, Vec<String>) {
    let body = names_body(pod, names);
    let (t, answer) = post(port, "/filter", &body);
    let v: Value = serde_json::from_slice(&answer).expect("a filter result");
    let passed: Vec<String> = serde_json::from_value(v["NodeNames"].clone()).expect("NodeNames");
    assert!(
        (1..=RACK).contains(&passed.len()),
        "a first member passes the nodes of one domain, not {}: {}",
        passed.len(),
        v["Error"]
    );
    (t, body, passed)
}

/// Times `calls` filter calls, each for the first member of a new decode group, with
/// `prioritize` after each; then `calls` filter calls for new groups without a role.
async fn time_calls(ext: &Ext, names: &[String], calls: usize, s: &mut Step) {
    let (mut f, mut pp, mut pa, mut alone) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // CPU time the extender spent on each verb, in all.
    let mut cpu = [0u64; 4];
    let pid = ext.proc.pid();
    let timed = |cpu: &mut u64, call: &mut dyn FnMut() -> Duration| {
        let c0 = cpu_ns(pid);
        let t = call();
        *cpu += cpu_ns(pid) - c0;
        t
    };
    let warm = 3;
    for k in 0..calls + warm {
        let pod = group_pod(&format!("s{}-m{k}-decode", names.len()));
        let mut out = None;
        let mut c = [0u64; 3];
        let t = timed(&mut c[0], &mut || {
            let (t, body, passed) = filter(ext.port, &pod, names);
            out = Some((body, passed));
            t
        });
        let (body, passed) = out.expect("a filter answer");
        s.body_kib = body.len() as f64 / 1024.0;
        s.passed = passed.len();
        let tp = timed(&mut c[1], &mut || {
            post(ext.port, "/prioritize", &names_body(&pod, &passed)).0
        });
        let ta = timed(&mut c[2], &mut || post(ext.port, "/prioritize", &body).0);
        if k >= warm {
            f.push(t);
            pp.push(tp);
            pa.push(ta);
            cpu[0] += c[0];
            cpu[1] += c[1];
            cpu[2] += c[2];
        }
    }
    for k in 0..calls + warm {
        let pod = group_pod(&format!("s{}-g{k}", names.len()));
        let mut c = 0;
        let t = timed(&mut c, &mut || filter(ext.port, &pod, names).0);
        if k >= warm {
            alone.push(t);
            cpu[3] += c;
        }
    }
    s.filter = (pct(&mut f, 0.5), pct(&mut f, 0.99));
    s.prio_passed = (pct(&mut pp, 0.5), pct(&mut pp, 0.99));
    s.prio_all = (pct(&mut pa, 0.5), pct(&mut pa, 0.99));
    s.filter_alone = (pct(&mut alone, 0.5), pct(&mut alone, 0.99));
    s.cpu_ms = cpu.map(|c| c as f64 / 1e6 / calls as f64);
}

/// The agent's topology service; prints `answered` for each Watch it answers.
struct CountedApi {
    inner: TopologyApi,
}

#[tonic::async_trait]
impl TopologyService for CountedApi {
    async fn get_node_topology(
        &self,
        req: tonic::Request<pb::GetNodeTopologyRequest>,
    ) -> Result<tonic::Response<pb::GetNodeTopologyResponse>, tonic::Status> {
        self.inner.get_node_topology(req).await
    }

    type WatchNodeTopologyStream = <TopologyApi as TopologyService>::WatchNodeTopologyStream;

    async fn watch_node_topology(
        &self,
        req: tonic::Request<pb::WatchNodeTopologyRequest>,
    ) -> Result<tonic::Response<Self::WatchNodeTopologyStream>, tonic::Status> {
        let out = self.inner.watch_node_topology(req).await;
        if out.is_ok() {
            println!("answered");
        }
        out
    }

    async fn get_placement_hints(
        &self,
        req: tonic::Request<pb::GetPlacementHintsRequest>,
    ) -> Result<tonic::Response<pb::GetPlacementHintsResponse>, tonic::Status> {
        self.inner.get_placement_hints(req).await
    }
}

/// Agents per simulating process: each holds a listener and a connection per agent, and a
/// process may hold 20,000 files here.
const AGENTS_PER_PROCESS: usize = 7_000;
/// Each simulating process binds ports in its own range of this width, from 10000 up.
const PORT_RANGE: u16 = 7_500;

/// Serves agents `from..to` on ports from `ports` up, in this process (a child of the
/// benchmark, started with `--serve-agents FROM TO PORTS TOPOLOGY_FILE`): prints `agent NODE
/// ADDRESS` for each, then `ready`, then `answered` for each Watch answered, and runs until it is
/// killed.
fn serve_agents(args: &[String]) {
    let num = |i: usize| -> usize { args[i].parse().expect("a number") };
    let (from, to, ports) = (num(0), num(1), num(2));
    let fleet = Fleet {
        agent_labels: Vec::new(),
        topology: std::fs::read_to_string(&args[3]).expect("the topology file"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let mut port = u16::try_from(ports).expect("a port");
        let end = port.saturating_add(PORT_RANGE).min(32_768);
        let mut out = String::new();
        let mut servers = Vec::new();
        for i in from..to {
            let listener = loop {
                assert!(port < end, "no free port in {ports}..{end} for agent {i}");
                let p = port;
                port += 1;
                if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", p)).await {
                    break l;
                }
            };
            let addr = listener.local_addr().expect("an address");
            out.push_str(&format!("agent {} {addr}\n", node_name(i)));
            servers.push((listener, fleet.topology(i)));
        }
        out.push_str("ready\n");
        std::io::stdout().write_all(out.as_bytes()).expect("stdout");
        for (listener, topology) in servers {
            let (tx, rx) = tokio::sync::watch::channel(Arc::new(Published::new(topology)));
            let api = CountedApi {
                inner: TopologyApi::new(rx, 16, Arc::new(())),
            };
            tokio::spawn(async move {
                // The sender lives as long as the agent: a closed channel ends its watches.
                let _tx = tx;
                let _ = tonic::transport::Server::builder()
                    .http2_keepalive_interval(Some(Duration::from_secs(30)))
                    .http2_keepalive_timeout(Some(Duration::from_secs(10)))
                    .add_service(TopologyServiceServer::new(api))
                    .serve_with_incoming(
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                    )
                    .await;
            });
        }
        std::future::pending::<()>().await;
    });
}

/// Simulated agents in child processes.
struct Agents {
    procs: Vec<Proc>,
    /// The `--agents` file's text: node → `127.0.0.1:PORT`.
    file: String,
    /// Watches answered so far.
    watches: Arc<AtomicUsize>,
}

impl Agents {
    fn rss_mib(&self) -> f64 {
        self.procs.iter().map(|p| rss_mib(p.pid())).sum::<f64>() + 0.0
    }
}

/// Starts `n` simulated agents (nodes `0..n`), [`AGENTS_PER_PROCESS`] to a process.
fn start_agents(topology_file: &std::path::Path, n: usize) -> Agents {
    let watches = Arc::new(AtomicUsize::new(0));
    let mut procs = Vec::new();
    let mut file = String::new();
    let exe = std::env::current_exe().expect("this benchmark's path");
    for (k, from) in (0..n).step_by(AGENTS_PER_PROCESS).enumerate() {
        let to = (from + AGENTS_PER_PROCESS).min(n);
        let ports = 10_000 + usize::from(PORT_RANGE) * k;
        let mut cmd = Command::new(&exe);
        cmd.arg("--serve-agents")
            .args([from, to, ports].map(|v| v.to_string()))
            .arg(topology_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("start simulated agents");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let counter = watches.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut ready = Some(tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line == "answered" {
                    counter.fetch_add(1, Ordering::Relaxed);
                } else if line == "ready" {
                    ready.take();
                } else if let Some(tx) = &ready {
                    let _ = tx.send(line);
                }
            }
        });
        for line in rx {
            let mut w = line.split_whitespace().skip(1);
            let (node, addr) = (w.next().expect("a node"), w.next().expect("an address"));
            file.push_str(&format!("{node}: \"{addr}\"\n"));
        }
        assert_eq!(
            file.lines().count(),
            to,
            "the simulated agents {from}..{to} did not start"
        );
        procs.push(Proc(child));
    }
    Agents {
        procs,
        file,
        watches,
    }
}

/// Kills the child with SIGKILL when this benchmark dies, however it dies.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[derive(Default)]
struct AgentRow {
    agents: usize,
    watches_s: f64,
    live_s: f64,
    list_s: f64,
    rss_mib: f64,
    hwm_mib: f64,
    cpu_s: f64,
    sim_mib_delta: f64,
}

/// This process's open-file limit (the extender inherits it and holds one connection per agent).
fn nofile_limit() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return usize::MAX;
    }
    usize::try_from(r.rlim_cur).unwrap_or(usize::MAX)
}

fn print_fit(what: &str, unit_per: &str, scale: f64, points: &[(f64, f64)], at: f64) {
    if points.len() < 2 {
        println!("- {what}: one point, no fit");
        return;
    }
    let (a, b, r2) = fit(points);
    println!(
        "- {what}: {a:.2} + {:.3} {unit_per} (r² {r2:.3}); at {at:.0}: {:.1}",
        b * scale,
        a + b * at
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes bench binaries; there is nothing to list.
    }
    if let Some(i) = args.iter().position(|a| a == "--serve-agents") {
        serve_agents(&args[i + 1..]);
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(bench());
}

async fn bench() {
    let steps = env_list("STEPS", &[5_000, 10_000, 20_000, 35_000, 45_000, 50_000]);
    let agent_steps = env_list("AGENTS", &[0, 1_000, 5_000, 10_000, 19_000]);
    let calls: usize = env_num("CALLS", 200);
    // Calls to the reference extender at each step (0: sync and memory only).
    let ref_calls: usize = env_num("REF_CALLS", 30);
    let budget_mib: f64 = env_num("MEM_BUDGET_GIB", 12.0) * 1024.0;
    let concurrency: usize = env_num("CREATE_CONCURRENCY", 32);
    let bin = nodetopo_bin();
    // The binary to compare with: its extender and webhook are measured beside this one's at
    // each step (sync and memory).
    let reference = std::env::var_os("NODETOPO_BIN_REF").map(std::path::PathBuf::from);
    let fleet = Fleet::probe();
    let sample = serde_json::to_vec(&fleet.node(0, false)).expect("encode");
    let sample_lean = serde_json::to_vec(&fleet.node(0, true)).expect("encode");
    eprintln!(
        "a Node: {} labels ({} the agent's), {} B of JSON as sent ({} B lean)",
        fleet.all_labels(0).len(),
        fleet.agent_labels(0).len(),
        sample.len(),
        sample_lean.len()
    );
    eprintln!(
        "machine: {} MiB available, load {}",
        mem_available_mib(),
        load_average()
    );

    let start_cp = || {
        ControlPlane::start(harness::Options {
            // Nodes are created Ready and untainted, as the node lifecycle controller leaves
            // them once their kubelet reports; no controller runs here.
            apiserver_args: &["--disable-admission-plugins=TaintNodesByCondition"],
            ..harness::Options::default()
        })
    };
    let mut cp = start_cp();
    let mut client = cp.admin().await;
    let mut cert = cp.serving_cert("webhook");
    let (mut api_pid, mut etcd_pid) = (child_pid("kube-apiserver"), child_pid("etcd"));
    let mut lean = false;
    let mut created = 0usize;
    let mut rows: Vec<Step> = Vec::new();
    // Control-plane MiB per node (a guess before the first step).
    let per_node_mib = 0.2f64;
    for &n in &steps {
        // Will the control plane hold this step beside the extender and webhook? Its peak so
        // far (the API server's grows when it serves the lists), scaled to this step.
        let cp_now = rss_mib(api_pid) + rss_mib(etcd_pid);
        let cp_peak = hwm_mib(api_pid) + hwm_mib(etcd_pid);
        let projected = if created == 0 {
            cp_now + per_node_mib * n as f64
        } else {
            cp_peak * n as f64 / created as f64
        };
        let others = 1024.0;
        let avail = mem_available_mib() + cp_now;
        if !lean && (projected + others > budget_mib || projected + others + 1024.0 > avail) {
            eprintln!(
                "{n} nodes: the control plane would need about {projected:.0} MiB \
                 (budget {budget_mib:.0} MiB, available {avail:.0} MiB): continuing on a \
                 second control plane with lean Nodes"
            );
            drop(cp);
            lean = true;
            created = 0;
            cp = start_cp();
            client = cp.admin().await;
            cert = cp.serving_cert("webhook");
            api_pid = child_pid("kube-apiserver");
            etcd_pid = child_pid("etcd");
        }
        let mut s = Step {
            nodes: n,
            lean,
            ..Step::default()
        };
        let t0 = Instant::now();
        create_nodes(&client, &fleet, created, n, lean, concurrency).await;
        s.create_s = t0.elapsed().as_secs_f64();
        s.create_rate = (n - created) as f64 / s.create_s;
        created = n;
        tokio::time::sleep(Duration::from_secs(2)).await;
        s.apiserver_mib = rss_mib(api_pid);
        s.etcd_mib = rss_mib(etcd_pid);
        eprintln!(
            "{n} nodes created in {:.1} s ({:.0}/s); kube-apiserver {:.0} MiB, etcd {:.0} MiB; \
             {:.0} MiB available; load {}",
            s.create_s,
            s.create_rate,
            s.apiserver_mib,
            s.etcd_mib,
            mem_available_mib(),
            load_average()
        );
        let names: Vec<String> = (0..n).map(node_name).collect();
        let last = names.iter().max().expect("nodes").clone();

        if let Some(bin) = &reference {
            let ext = start_extender(&cp, bin, None);
            s.ref_sync_s = extender_synced(&ext, &last).await.as_secs_f64();
            tokio::time::sleep(Duration::from_secs(2)).await;
            s.ref_rss_mib = rss_mib(ext.proc.pid());
            s.ref_hwm_mib = hwm_mib(ext.proc.pid());
            eprintln!(
                "  reference extender: view full in {:.1} s, {:.1} MiB (peak {:.1})",
                s.ref_sync_s, s.ref_rss_mib, s.ref_hwm_mib
            );
            if ref_calls > 0 {
                let mut r = Step::default();
                time_calls(&ext, &names, ref_calls, &mut r).await;
                eprintln!(
                    "  reference filter p50 {:.2} ms p99 {:.2} ms (no role: {:.2} / {:.2}); \
                     prioritize (all) p99 {:.2} ms; CPU ms a call {:.1} / {:.1} / {:.1} / {:.1}",
                    r.filter.0,
                    r.filter.1,
                    r.filter_alone.0,
                    r.filter_alone.1,
                    r.prio_all.1,
                    r.cpu_ms[0],
                    r.cpu_ms[3],
                    r.cpu_ms[1],
                    r.cpu_ms[2]
                );
                s.ref_calls = Some(Box::new(r));
            }
        }
        let ext = start_extender(&cp, &bin, None);
        s.ext_sync_s = extender_synced(&ext, &last).await.as_secs_f64();
        s.ext_sync_cpu_s = cpu_s(ext.proc.pid());
        tokio::time::sleep(Duration::from_secs(2)).await;
        s.ext_rss_mib = rss_mib(ext.proc.pid());
        s.ext_hwm_mib = hwm_mib(ext.proc.pid());
        eprintln!(
            "  extender: view full in {:.1} s ({:.1} CPU s), {:.1} MiB (peak {:.1})",
            s.ext_sync_s, s.ext_sync_cpu_s, s.ext_rss_mib, s.ext_hwm_mib
        );

        if let Some(bin) = &reference {
            let hook = start_webhook(&cp, bin, &cert);
            s.ref_hook_sync_s = webhook_synced(&hook, n).await.as_secs_f64();
            tokio::time::sleep(Duration::from_secs(2)).await;
            s.ref_hook_rss_mib = rss_mib(hook.proc.pid());
            s.ref_hook_hwm_mib = hwm_mib(hook.proc.pid());
            eprintln!(
                "  reference webhook: {n} nodes in {:.1} s, {:.1} MiB (peak {:.1})",
                s.ref_hook_sync_s, s.ref_hook_rss_mib, s.ref_hook_hwm_mib
            );
        }
        let hook = start_webhook(&cp, &bin, &cert);
        s.hook_sync_s = webhook_synced(&hook, n).await.as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        s.hook_rss_mib = rss_mib(hook.proc.pid());
        s.hook_hwm_mib = hwm_mib(hook.proc.pid());
        // The control plane once it has served the lists.
        s.apiserver_after_mib = rss_mib(api_pid);
        s.apiserver_peak_mib = hwm_mib(api_pid);
        eprintln!(
            "  webhook: {n} nodes in {:.1} s, {:.1} MiB (peak {:.1})",
            s.hook_sync_s, s.hook_rss_mib, s.hook_hwm_mib
        );

        time_calls(&ext, &names, calls, &mut s).await;
        s.ext_rss_after_mib = rss_mib(ext.proc.pid());
        s.ext_hwm_mib = s.ext_hwm_mib.max(hwm_mib(ext.proc.pid()));
        s.load = load_average();
        eprintln!(
            "  filter p50 {:.2} ms p99 {:.2} ms (no role: {:.2} / {:.2}); prioritize (passed) \
             p99 {:.2} ms, (all) p99 {:.2} ms; extender CPU ms a call {:.1} / {:.1} / {:.1} / {:.1}; \
             extender {:.1} MiB after the calls; load {}",
            s.filter.0,
            s.filter.1,
            s.filter_alone.0,
            s.filter_alone.1,
            s.prio_passed.1,
            s.prio_all.1,
            s.cpu_ms[0],
            s.cpu_ms[3],
            s.cpu_ms[1],
            s.cpu_ms[2],
            s.ext_rss_after_mib,
            s.load
        );
        pause(&ext).await;
        drop(hook);
        drop(ext);
        rows.push(s);
    }

    // Agent fan-in against the last step's Nodes.
    let nodes_now = created;
    let last = (0..nodes_now).map(node_name).max().expect("nodes");
    let dir = tempfile::tempdir().expect("a temp dir");
    let topology_file = dir.path().join("topology.json");
    std::fs::write(&topology_file, &fleet.topology).expect("write the topology");
    let mut agent_rows: Vec<AgentRow> = Vec::new();
    // The extender holds a connection per agent besides its own few files.
    let most = nofile_limit().saturating_sub(500);
    // The API server's peak: its heap grows again when the extender lists the Nodes.
    let cp_mib = hwm_mib(child_pid("kube-apiserver")) + rss_mib(child_pid("etcd"));
    for &n in &agent_steps {
        let n = n.min(nodes_now);
        // The extender and the simulated agents take about 60 and 80 KiB an agent.
        let projected = cp_mib + 512.0 + n as f64 * 140.0 / 1024.0;
        if projected > budget_mib {
            eprintln!(
                "{n} agents: about {projected:.0} MiB with the control plane, over the budget; skipped"
            );
            continue;
        }
        if n > most {
            eprintln!(
                "{n} agents: more than the extender's open-file limit here allows ({}); skipped",
                nofile_limit()
            );
            continue;
        }
        let agents = start_agents(&topology_file, n);
        let (file, watches) = (&agents.file, &agents.watches);
        let path = dir.path().join(format!("agents-{n}.yaml"));
        std::fs::write(&path, file).expect("write the agents file");
        if env_num::<u64>("PAUSE_S", 0) > 0 {
            eprintln!(
                "  agents file {}, kubeconfig {}",
                path.display(),
                cp.admin_kubeconfig.display()
            );
        }
        let mut r = AgentRow {
            agents: n,
            ..AgentRow::default()
        };
        let ext = start_extender(&cp, &bin, (n > 0).then_some(path.as_path()));
        loop {
            if watches.load(Ordering::Relaxed) >= n {
                r.watches_s = ext.started.elapsed().as_secs_f64();
                break;
            }
            assert!(
                ext.started.elapsed() < Duration::from_secs(600),
                "{} of {n} watches after 600 s",
                watches.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        r.list_s = extender_synced(&ext, &last).await.as_secs_f64();
        loop {
            let port = ext.port;
            let view =
                tokio::task::spawn_blocking(move || http_get(port, "/debug/view?format=json"))
                    .await
                    .expect("the view");
            let live = view.matches("\"freshness\":\"live\"").count();
            if live >= n {
                r.live_s = ext.started.elapsed().as_secs_f64();
                break;
            }
            assert!(
                ext.started.elapsed() < Duration::from_secs(600),
                "{live} of {n} agents live after 600 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        r.rss_mib = rss_mib(ext.proc.pid());
        r.hwm_mib = hwm_mib(ext.proc.pid());
        r.cpu_s = cpu_s(ext.proc.pid());
        r.sim_mib_delta = agents.rss_mib();
        eprintln!(
            "{n} agents, {nodes_now} nodes: watches answered {:.1} s, all live {:.1} s, \
             node list {:.1} s after start; extender {:.1} MiB (peak {:.1}), {:.1} CPU s; \
             the simulated agents {:.0} MiB; load {}",
            r.watches_s,
            r.live_s,
            r.list_s,
            r.rss_mib,
            r.hwm_mib,
            r.cpu_s,
            r.sim_mib_delta,
            load_average()
        );
        pause(&ext).await;
        drop(ext);
        drop(agents);
        agent_rows.push(r);
    }
    drop(cp);

    // Report.
    let kind = |s: &Step| if s.lean { "lean" } else { "kubelet-sized" };
    println!("\n### Control plane\n");
    println!(
        "| nodes | Nodes | created in s (Nodes/s) | kube-apiserver MiB after the creates / after the lists / peak | etcd MiB | load after the step |"
    );
    println!("|---:|---|---:|---:|---:|---|");
    for s in &rows {
        println!(
            "| {} | {} | {:.1} ({:.0}) | {:.0} / {:.0} / {:.0} | {:.0} | {} |",
            s.nodes,
            kind(s),
            s.create_s,
            s.create_rate,
            s.apiserver_mib,
            s.apiserver_after_mib,
            s.apiserver_peak_mib,
            s.etcd_mib,
            s.load
        );
    }
    println!("\n### Extender and webhook: sync and memory\n");
    println!(
        "| nodes | extender: view full s (CPU s) | extender MiB (peak) | extender MiB after the calls | reference extender: view full s | reference MiB (peak) | webhook: every Node held s | webhook MiB (peak) | reference webhook: every Node held s | reference webhook MiB (peak) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &rows {
        println!(
            "| {} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.1} | {:.1} | {:.1} ({:.1}) | {:.1} | {:.1} ({:.1}) | {:.1} | {:.1} ({:.1}) |",
            s.nodes,
            s.ext_sync_s,
            s.ext_sync_cpu_s,
            s.ext_rss_mib,
            s.ext_hwm_mib,
            s.ext_rss_after_mib,
            s.ref_sync_s,
            s.ref_rss_mib,
            s.ref_hwm_mib,
            s.hook_sync_s,
            s.hook_rss_mib,
            s.hook_hwm_mib,
            s.ref_hook_sync_s,
            s.ref_hook_rss_mib,
            s.ref_hook_hwm_mib
        );
    }
    println!("\n### Extender over HTTP ({calls} calls each, after 3 warm-up)\n");
    println!(
        "| nodes | request KiB | filter, first member of a decode group: p50 / p99 ms (extender CPU ms a call) | filter, first member of a group without a role | prioritize, the nodes that passed | prioritize, every name | nodes passed |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for s in &rows {
        println!(
            "| {} | {:.0} | {:.2} / {:.2} ({:.1}) | {:.2} / {:.2} ({:.1}) | {:.2} / {:.2} ({:.1}) | {:.2} / {:.2} ({:.1}) | {} |",
            s.nodes,
            s.body_kib,
            s.filter.0,
            s.filter.1,
            s.cpu_ms[0],
            s.filter_alone.0,
            s.filter_alone.1,
            s.cpu_ms[3],
            s.prio_passed.0,
            s.prio_passed.1,
            s.cpu_ms[1],
            s.prio_all.0,
            s.prio_all.1,
            s.cpu_ms[2],
            s.passed
        );
    }
    if rows.iter().any(|s| s.ref_calls.is_some()) {
        println!(
            "\nThe reference extender (`NODETOPO_BIN_REF`, {ref_calls} calls each, same steps):\n"
        );
        println!(
            "| nodes | filter, first member of a decode group: p50 / p99 ms (extender CPU ms a call) | filter, first member of a group without a role | prioritize, the nodes that passed | prioritize, every name |"
        );
        println!("|---:|---:|---:|---:|---:|");
        for (n, r) in rows
            .iter()
            .filter_map(|s| s.ref_calls.as_ref().map(|r| (s.nodes, r)))
        {
            println!(
                "| {n} | {:.2} / {:.2} ({:.1}) | {:.2} / {:.2} ({:.1}) | {:.2} / {:.2} ({:.1}) | {:.2} / {:.2} ({:.1}) |",
                r.filter.0,
                r.filter.1,
                r.cpu_ms[0],
                r.filter_alone.0,
                r.filter_alone.1,
                r.cpu_ms[3],
                r.prio_passed.0,
                r.prio_passed.1,
                r.cpu_ms[1],
                r.prio_all.0,
                r.prio_all.1,
                r.cpu_ms[2]
            );
        }
    }
    let pts = |f: &dyn Fn(&Step) -> f64, only_full: bool| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|s| !only_full || !s.lean)
            .map(|s| (s.nodes as f64, f(s)))
            .collect()
    };
    let at = 50_000.0;
    println!("\nFits against the node count n (least squares over the steps), value at {at:.0}:");
    // A slope in MiB per node times MIB is bytes per node.
    let per_node_bytes = MIB;
    print_fit(
        "extender MiB after sync (kubelet-sized Nodes) = MiB +",
        "B/node",
        per_node_bytes,
        &pts(&|s| s.ext_rss_mib, true),
        at,
    );
    print_fit(
        "extender MiB after the calls (kubelet-sized Nodes) = MiB +",
        "B/node",
        per_node_bytes,
        &pts(&|s| s.ext_rss_after_mib, true),
        at,
    );
    print_fit(
        "extender peak MiB (kubelet-sized Nodes) = MiB +",
        "B/node",
        per_node_bytes,
        &pts(&|s| s.ext_hwm_mib, true),
        at,
    );
    print_fit(
        "webhook MiB (kubelet-sized Nodes) = MiB +",
        "B/node",
        per_node_bytes,
        &pts(&|s| s.hook_rss_mib, true),
        at,
    );
    print_fit(
        "kube-apiserver MiB (kubelet-sized Nodes) = MiB +",
        "B/node",
        per_node_bytes,
        &pts(&|s| s.apiserver_mib, true),
        at,
    );
    print_fit(
        "kube-apiserver peak MiB (kubelet-sized Nodes) = MiB +",
        "B/node",
        per_node_bytes,
        &pts(&|s| s.apiserver_peak_mib, true),
        at,
    );
    print_fit(
        "etcd MiB (kubelet-sized Nodes) = MiB +",
        "B/node",
        per_node_bytes,
        &pts(&|s| s.etcd_mib, true),
        at,
    );
    let cp_pts = pts(&|s| s.apiserver_peak_mib + s.etcd_mib, true);
    if cp_pts.len() >= 2 {
        let (a, b, _) = fit(&cp_pts);
        println!(
            "- kube-apiserver (peak) + etcd within the budget ({:.1} GiB) less 1 GiB for the rest: about {:.0} kubelet-sized Nodes",
            budget_mib / 1024.0,
            (budget_mib - 1024.0 - a) / b
        );
    }
    if rows.iter().any(|s| s.ref_rss_mib > 0.0) {
        print_fit(
            "reference extender MiB after sync (kubelet-sized Nodes) = MiB +",
            "B/node",
            per_node_bytes,
            &pts(&|s| s.ref_rss_mib, true),
            at,
        );
        print_fit(
            "reference webhook MiB (kubelet-sized Nodes) = MiB +",
            "B/node",
            per_node_bytes,
            &pts(&|s| s.ref_hook_rss_mib, true),
            at,
        );
    }
    print_fit(
        "extender CPU ms per filter call (decode group) = ms +",
        "ms per 1,000 nodes",
        1e3,
        &pts(&|s| s.cpu_ms[0], false),
        at,
    );
    print_fit(
        "extender CPU ms per filter call (no role) = ms +",
        "ms per 1,000 nodes",
        1e3,
        &pts(&|s| s.cpu_ms[3], false),
        at,
    );
    print_fit(
        "extender CPU ms per prioritize call (every name) = ms +",
        "ms per 1,000 nodes",
        1e3,
        &pts(&|s| s.cpu_ms[2], false),
        at,
    );
    print_fit(
        "filter (group without a role) p99 ms = ms +",
        "ms per 1,000 nodes",
        1e3,
        &pts(&|s| s.filter_alone.1, false),
        at,
    );
    print_fit(
        "filter p50 ms = ms +",
        "ms per 1,000 nodes",
        1e3,
        &pts(&|s| s.filter.0, false),
        at,
    );
    print_fit(
        "filter p99 ms = ms +",
        "ms per 1,000 nodes",
        1e3,
        &pts(&|s| s.filter.1, false),
        at,
    );
    print_fit(
        "prioritize (passed nodes) p99 ms = ms +",
        "ms per 1,000 nodes",
        1e3,
        &pts(&|s| s.prio_passed.1, false),
        at,
    );
    print_fit(
        "prioritize (all names) p99 ms = ms +",
        "ms per 1,000 nodes",
        1e3,
        &pts(&|s| s.prio_all.1, false),
        at,
    );
    print_fit(
        "extender sync s (kubelet-sized Nodes) = s +",
        "s per 1,000 nodes",
        1e3,
        &pts(&|s| s.ext_sync_s, true),
        at,
    );
    print_fit(
        "webhook sync s (kubelet-sized Nodes) = s +",
        "s per 1,000 nodes",
        1e3,
        &pts(&|s| s.hook_sync_s, true),
        at,
    );
    if rows.iter().any(|s| s.ref_hook_sync_s > 0.0) {
        print_fit(
            "reference webhook sync s (kubelet-sized Nodes) = s +",
            "s per 1,000 nodes",
            1e3,
            &pts(&|s| s.ref_hook_sync_s, true),
            at,
        );
    }

    println!("\n### Agent fan-in ({nodes_now} Nodes in the API server)\n");
    println!(
        "| agents | watches answered s | all agents live in the view s | node list read s | extender MiB (peak) | extender CPU s | simulated agents' processes MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &agent_rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} ({:.1}) | {:.1} | {:.0} |",
            r.agents,
            r.watches_s,
            r.live_s,
            r.list_s,
            r.rss_mib,
            r.hwm_mib,
            r.cpu_s,
            r.sim_mib_delta
        );
    }
    let apts = |f: &dyn Fn(&AgentRow) -> f64| -> Vec<(f64, f64)> {
        agent_rows.iter().map(|r| (r.agents as f64, f(r))).collect()
    };
    println!("\nFits against the agent count a:");
    print_fit(
        "extender MiB = MiB +",
        "B/agent",
        MIB,
        &apts(&|r| r.rss_mib),
        at,
    );
    print_fit(
        "all agents live s = s +",
        "s per 1,000 agents",
        1e3,
        &apts(&|r| r.live_s),
        at,
    );
    print_fit(
        "simulated agents MiB = MiB +",
        "B/agent",
        MIB,
        &apts(&|r| r.sim_mib_delta),
        at,
    );
}
