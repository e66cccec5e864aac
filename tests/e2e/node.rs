//! A real node beside the control plane: containerd 2.4 (built by `build-kube.sh`), Debian's
//! runc and kubelet v1.37.2 on this machine, registered with the test's API server as
//! [`NODE`], its images loaded from docker-archives without a registry.
//!
//! What a machine like the CI's needs, and this harness does:
//! - containerd's CRI plugin with `restrict_oom_score_adj` (root here lacks CAP_SYS_RESOURCE:
//!   without it runc cannot set the sandbox's `oom_score_adj` and every sandbox fails), its
//!   root, state, socket and `/opt` under the run's folder, NRI off (a fixed socket path), a
//!   `runc` and an `nvidia` runtime (the chart's `runtimeClassName: nvidia`) that both run runc;
//! - a kubelet on cgroup v1 (`failCgroupV1: false`, the cgroupfs driver, swap allowed), its
//!   servers on 127.0.0.1 and free ports, authenticated by a static `system:node:` token;
//! - no network plugin: a loopback-only CNI configuration makes the runtime's network ready,
//!   so only host-network pods run, and those reach the API server at 127.0.0.1 only (no
//!   kube-proxy);
//! - kube-controller-manager's node-lifecycle controller (lifts the `not-ready` taint), the
//!   DaemonSet, garbage-collector, ServiceAccount and root-CA controllers, and kube-scheduler.
//!
//! One kubelet per machine: some of its paths ignore `--root-dir`
//! (`/var/lib/kubelet/device-plugins`, `/var/log/pods`, `/var/log/containers`), the shims'
//! sockets live in `/run/containerd`, and the `kubepods` cgroups have fixed names. Node tests
//! therefore hold a process-wide lock (and a file lock across processes), and the kubelet
//! changes three host sysctls that cannot be turned off (`vm.overcommit_memory`,
//! `kernel.panic`, `kernel.panic_on_oops`): they are saved first and restored at teardown.
//! Teardown stops the kubelet and containerd, then `node-leftovers.sh --clean` kills the shims
//! and containers, unmounts, removes the cgroups and the fixed paths; a check after it must
//! find nothing.
//!
//! A machine that cannot run a node (not root, no overlayfs, no runc, no mmdebstrap) skips these
//! tests with a message, except under `CI` or `NODETOPO_REQUIRE_NODE=1`, where that fails them.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use serde_json::json;
use tempfile::TempDir;

use crate::harness::{self, ControlPlane, ROOT, spawn};
use crate::workloads::{self, Proc};

/// The node's name.
pub const NODE: &str = "nodetopo-node";
/// The sandbox image containerd pins; the node tests load their own under this name.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// The host sysctls the kubelet sets on start, restored at teardown.
const SYSCTLS: [&str; 3] = [
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
];

static ONE_NODE: Mutex<()> = Mutex::new(());

/// The right to run this machine's one kubelet, held by a [`RealNode`].
pub struct NodeLock {
    _guard: MutexGuard<'static, ()>,
}

/// Waits until no other test of this process runs a node.
pub fn lock() -> NodeLock {
    NodeLock {
        _guard: ONE_NODE.lock().unwrap_or_else(|e| e.into_inner()),
    }
}

/// Why this machine cannot run a node, if it cannot.
fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (containerd and the kubelet need it)".into());
    }
    let has_overlay =
        || fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("\toverlay\n"));
    if !has_overlay() {
        let _ = Command::new("modprobe").arg("overlay").status();
        if !has_overlay() {
            return Some("no overlay filesystem (containerd's overlayfs snapshotter)".into());
        }
    }
    if runc().is_none() {
        return Some("no runc on PATH (Debian package runc)".into());
    }
    if find_on_path("mmdebstrap").is_none() {
        return Some("no mmdebstrap on PATH (Debian package mmdebstrap; the agent image)".into());
    }
    None
}

/// Whether node tests can run here. Outside CI a machine that cannot says why and the test
/// returns early; under `CI` it fails.
pub fn available(test: &str) -> bool {
    match unavailable() {
        None => true,
        Some(why)
            if std::env::var_os("CI").is_some()
                || std::env::var_os("NODETOPO_REQUIRE_NODE").is_some_and(|v| v == "1") =>
        {
            panic!("{test}: this CI machine cannot run a node: {why}")
        }
        Some(why) => {
            eprintln!("SKIPPED {test}: this machine cannot run a node: {why}");
            false
        }
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
        })
}

fn runc() -> Option<PathBuf> {
    find_on_path("runc")
}

/// containerd, its shim and ctr.
fn containerd_dir() -> PathBuf {
    harness::bin_dir().join("containerd")
}

/// The node tests' own programs: `pause`, `gpu-device-plugin`.
pub fn nodetest_bin(name: &str) -> PathBuf {
    harness::bin_dir().join("nodetest").join(name)
}

fn leftovers_script() -> PathBuf {
    Path::new(ROOT).join("tests/e2e/node-leftovers.sh")
}

/// What `node-leftovers.sh` finds (after cleaning, with `clean`): one line per leftover.
fn leftovers(clean: bool) -> Vec<String> {
    let mut cmd = Command::new("bash");
    cmd.arg(leftovers_script());
    if clean {
        cmd.arg("--clean");
    }
    let out = cmd.output().expect("run node-leftovers.sh");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("left behind: "))
        .map(str::to_string)
        .collect()
}

fn read_sysctl(name: &str) -> String {
    fs::read_to_string(Path::new("/proc/sys").join(name))
        .unwrap_or_else(|e| panic!("read sysctl {name}: {e}"))
        .trim()
        .to_string()
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What teardown found.
#[derive(Debug)]
pub struct Teardown {
    /// `node-leftovers.sh`'s findings after the clean-up, and any sysctl not restored.
    pub leftovers: Vec<String>,
    /// From stopping the kubelet to a clean machine.
    pub took: Duration,
}

/// containerd and a kubelet registered as [`NODE`]; stopped and cleaned up on drop.
pub struct RealNode {
    dir: TempDir,
    containerd: Option<Child>,
    kubelet: Option<Child>,
    sysctls: Vec<(&'static str, String)>,
    /// containerd's socket.
    pub socket: PathBuf,
    /// Where the kubelet writes container logs (`<namespace>_<pod>_<uid>/<container>/0.log`).
    pub pod_logs: PathBuf,
    /// The kubelet's HTTPS port on 127.0.0.1.
    pub kubelet_port: u16,
    /// Time from containerd's start to the kubelet started (images loaded).
    pub started_in: Duration,
    t0: Instant,
    stopped: bool,
    _lock: NodeLock,
}

impl RealNode {
    /// Starts containerd, loads the docker-archives `images` (and the pause image), and starts
    /// the kubelet against `cp`, which must list [`NODE`] in `kubelet_nodes`. Waiting for the
    /// Node to be Ready is [`RealNode::wait_ready`].
    pub fn start(cp: &ControlPlane, images: &[PathBuf], lock: NodeLock) -> Self {
        let stale = leftovers(false);
        assert!(
            stale.is_empty(),
            "this machine has a node's leftovers (a crashed run, or a kubelet of its own):\n{}\n\
             On a machine whose only kubelet is the tests', `bash tests/e2e/node-leftovers.sh \
             --clean` removes them.",
            stale.join("\n")
        );
        let sysctls = SYSCTLS.iter().map(|s| (*s, read_sysctl(s))).collect();
        let t0 = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("nodetopo-node-")
            .tempdir()
            .expect("node dir");
        let d = dir.path().to_path_buf();
        let runc = runc().expect("runc");
        let socket = d.join("containerd/containerd.sock");
        for sub in [
            "containerd",
            "cni/bin",
            "cni/net.d",
            "pod-logs",
            "kubelet-root",
        ] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        fs::write(
            d.join("cni/net.d/10-hostnet-only.conflist"),
            r#"{"cniVersion":"1.0.0","name":"hostnet-only","plugins":[{"type":"loopback"}]}"#,
        )
        .unwrap();
        let runtime = |name: &str| {
            format!(
                "    [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.{name}]\n      \
                 runtime_type = \"io.containerd.runc.v2\"\n      \
                 [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.{name}.options]\n        \
                 BinaryName = \"{runc}\"\n        SystemdCgroup = false\n        \
                 Root = \"{state}/runc-{name}\"\n",
                runc = runc.display(),
                state = d.join("containerd/state").display(),
            )
        };
        let config = format!(
            r#"version = 3
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
{runc_runtime}{nvidia_runtime}  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{d}/cni/bin"]
    conf_dir = "{d}/cni/net.d"
"#,
            d = d.display(),
            socket = socket.display(),
            runc_runtime = runtime("runc"),
            nvidia_runtime = runtime("nvidia"),
        );
        fs::write(d.join("containerd/config.toml"), config).unwrap();
        // The shim is found on PATH: ours first.
        let path = std::env::join_paths(std::iter::once(containerd_dir()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .unwrap();
        let containerd = spawn(
            Command::new(containerd_dir().join("containerd"))
                .arg("--config")
                .arg(d.join("containerd/config.toml"))
                .arg("--log-level=warn")
                .env("PATH", &path),
            &d.join("containerd.log"),
        );
        let mut node = RealNode {
            dir,
            containerd: Some(containerd),
            kubelet: None,
            sysctls,
            socket,
            pod_logs: d.join("pod-logs"),
            kubelet_port: 0,
            started_in: Duration::ZERO,
            t0,
            stopped: false,
            _lock: lock,
        };
        node.wait_containerd();
        let pause = crate::image::pause_image(&nodetest_bin("pause"), PAUSE_IMAGE);
        for image in std::iter::once(&pause).chain(images) {
            run_ok(node.ctr().args(["images", "import"]).arg(image));
        }

        let kubelet_port = harness::free_port();
        let kubeconfig = cp.kubeconfig_for("kubelet", cp.node_token(NODE));
        let kubelet_config = json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": false,
            "failSwapOn": false,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": format!("unix://{}", node.socket.display()),
            "address": "127.0.0.1",
            "port": kubelet_port,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": harness::free_port(),
            "readOnlyPort": 0,
            "authentication": {
                "anonymous": {"enabled": false},
                "webhook": {"enabled": false},
                "x509": {"clientCAFile": cp.ca.display().to_string()},
            },
            "authorization": {"mode": "AlwaysAllow"},
            // true makes the kubelet refuse to start on this machine's kernel defaults; false
            // makes it change three sysctls, which teardown restores.
            "protectKernelDefaults": false,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            // The images were loaded by hand and cannot be pulled again: never collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "nodeStatusUpdateFrequency": "5s",
            "podLogsDir": node.pod_logs.display().to_string(),
            "volumePluginDir": d.join("volume-plugins").display().to_string(),
            "rotateCertificates": false,
            "serializeImagePulls": false,
        });
        fs::write(d.join("kubelet.yaml"), kubelet_config.to_string()).unwrap();
        let kubelet = spawn(
            Command::new(harness::bin("kubelet"))
                .arg(format!("--config={}", d.join("kubelet.yaml").display()))
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg(format!("--root-dir={}", d.join("kubelet-root").display()))
                .arg(format!(
                    "--cert-dir={}",
                    d.join("kubelet-root/pki").display()
                ))
                .arg(format!("--hostname-override={NODE}"))
                .arg("--v=2")
                .env("PATH", &path),
            &d.join("kubelet.log"),
        );
        node.kubelet = Some(kubelet);
        node.kubelet_port = kubelet_port;
        node.started_in = t0.elapsed();
        node
    }

    /// Starts `cmd` on the host beside the kubelet (a device plugin), logging to `<name>.log`
    /// in the node's folder; stopped when the returned handle drops.
    pub fn host_process(&self, name: &str, cmd: &mut Command) -> HostProcess {
        HostProcess(spawn(cmd, &self.dir().join(format!("{name}.log"))))
    }

    /// `ctr` on this node's containerd, in the CRI's namespace.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new(containerd_dir().join("ctr"));
        c.arg("--address").arg(&self.socket).args(["-n", "k8s.io"]);
        c
    }

    /// This run's folder (logs: `containerd.log`, `kubelet.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn wait_containerd(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.socket.exists()
                && self
                    .ctr()
                    .arg("version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            {
                return;
            }
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "containerd did not serve in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self, name: &str, n: usize) -> String {
        let log = fs::read_to_string(self.dir().join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Panics (with its log) when containerd or the kubelet has exited.
    pub fn check_alive(&mut self) {
        let exited = [
            ("containerd", &mut self.containerd),
            ("kubelet", &mut self.kubelet),
        ]
        .into_iter()
        .find_map(|(name, child)| Some((name, child.as_mut()?.try_wait().ok()??)));
        if let Some((name, status)) = exited {
            panic!("{name} exited ({status}):\n{}", self.log_tail(name, 40));
        }
    }

    /// Waits until the Node is Ready without the `not-ready` taint; returns the time from
    /// containerd's start.
    pub async fn wait_ready(&mut self, client: &Client) -> Duration {
        let api: Api<Node> = Api::all(client.clone());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(n) = api.get(NODE).await {
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let tainted = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| t.iter().any(|t| t.key.starts_with("node.kubernetes.io/")));
                if ready && !tainted {
                    return self.t0.elapsed();
                }
            }
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "node {NODE} not Ready and untainted in 120 s; kubelet log:\n{}",
                self.log_tail("kubelet", 40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A container's log as the kubelet wrote it (CRI format: time, stream, tag, text), the
    /// text of every line; empty when there is none yet.
    pub fn container_log(&self, ns: &str, pod: &str, container: &str) -> Vec<String> {
        let Ok(dirs) = fs::read_dir(&self.pod_logs) else {
            return Vec::new();
        };
        let prefix = format!("{ns}_{pod}_");
        let mut files: Vec<PathBuf> = dirs
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .flat_map(|e| fs::read_dir(e.path().join(container)).into_iter().flatten())
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        files.sort();
        files
            .iter()
            .flat_map(|f| {
                fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// GET `path` from the kubelet's HTTPS server as a client of the control plane's CA
    /// (`system:masters`); the body.
    pub fn kubelet_get(&self, cp: &ControlPlane, path: &str) -> String {
        let (crt, key) = cp.client_cert("kubelet-reader");
        let out = run_ok(
            Command::new("curl")
                .args(["-sS", "--fail", "-k", "--max-time", "10", "--cert"])
                .arg(crt)
                .arg("--key")
                .arg(key)
                .arg(format!("https://127.0.0.1:{}{path}", self.kubelet_port)),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the kubelet and containerd, removes everything they left, restores the sysctls,
    /// and reports what a check then still finds.
    pub fn stop(mut self) -> Teardown {
        self.teardown(libc::SIGTERM)
    }

    /// [`RealNode::stop`] after a crash: the kubelet and containerd SIGKILLed at once, their
    /// shims and containers left running for the clean-up to find.
    pub fn kill(mut self) -> Teardown {
        self.teardown(libc::SIGKILL)
    }

    /// Lines of the kubelet's log at warning or error level that contain `needle`.
    pub fn kubelet_complaints(&self, needle: &str) -> Vec<String> {
        fs::read_to_string(self.dir().join("kubelet.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| (l.starts_with('W') || l.starts_with('E')) && l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    fn teardown(&mut self, signal: libc::c_int) -> Teardown {
        self.stopped = true;
        let t0 = Instant::now();
        // Both at once; SIGKILL after 5 s.
        let mut children: Vec<Child> = [self.kubelet.take(), self.containerd.take()]
            .into_iter()
            .flatten()
            .collect();
        for c in &children {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe {
                libc::kill(c.id() as libc::pid_t, signal);
            }
        }
        for c in &mut children {
            harness::terminate(c, Duration::from_secs(5).saturating_sub(t0.elapsed()));
        }
        let mut left = leftovers(true);
        for (name, before) in &self.sysctls {
            let _ = fs::write(Path::new("/proc/sys").join(name), before);
            let now = read_sysctl(name);
            if &now != before {
                left.push(format!("left behind: sysctl {name} = {now}, was {before}"));
            }
        }
        Teardown {
            leftovers: left,
            took: t0.elapsed(),
        }
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in ["kubelet", "containerd"] {
                eprintln!("--- last lines of {name}.log:\n{}", self.log_tail(name, 25));
            }
        }
        if !self.stopped {
            let t = self.teardown(libc::SIGTERM);
            if !t.leftovers.is_empty() {
                eprintln!("node teardown left:\n{}", t.leftovers.join("\n"));
            }
        }
    }
}

/// A host process of a node test; SIGTERM (SIGKILL after 5 s) on drop.
pub struct HostProcess(Child);

impl Drop for HostProcess {
    fn drop(&mut self) {
        harness::terminate(&mut self.0, Duration::from_secs(5));
    }
}

/// A control plane with the controllers and scheduler a node needs, and the node, Ready.
/// Fields drop in order: the node first, the control plane last.
pub struct NodeCluster {
    pub node: RealNode,
    _scheduler: Proc,
    _kcm: Proc,
    pub client: Client,
    pub cp: ControlPlane,
    /// Time from containerd's start to the Node Ready and untainted.
    pub node_ready_in: Duration,
}

impl NodeCluster {
    /// Starts everything, with `images` loaded into the node.
    pub async fn start(images: &[PathBuf]) -> Self {
        // Before the control plane: a test waiting for the node starts nothing yet.
        let lock = lock();
        let cp = ControlPlane::start(harness::Options {
            kubelet_nodes: &[NODE],
            ..harness::Options::default()
        });
        let client = cp.admin().await;
        let kcm = workloads::start_controller_manager_with(
            &cp,
            "node-lifecycle-controller,daemonset-controller,garbage-collector-controller,\
             serviceaccount-controller,root-ca-certificate-publisher-controller,\
             namespace-controller",
            "kcm-node.log",
        );
        let scheduler = workloads::start_plain_scheduler(&cp);
        let mut node = RealNode::start(&cp, images, lock);
        let node_ready_in = node.wait_ready(&client).await;
        eprintln!(
            "node {NODE} Ready in {:.1} s (containerd and kubelet started in {:.1} s; {})",
            node_ready_in.as_secs_f64(),
            node.started_in.as_secs_f64(),
            node.dir().display()
        );
        NodeCluster {
            node,
            _scheduler: scheduler,
            _kcm: kcm,
            client,
            cp,
            node_ready_in,
        }
    }

    /// Tears the node down while the control plane still runs, then the rest.
    pub fn stop(self) -> Teardown {
        let Self { node, .. } = self;
        node.stop()
    }

    /// [`NodeCluster::stop`] with the node's processes SIGKILLed ([`RealNode::kill`]).
    pub fn kill(self) -> Teardown {
        let Self { node, .. } = self;
        node.kill()
    }
}
