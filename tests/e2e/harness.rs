//! A real control plane for one test: etcd and kube-apiserver (and, on request, the
//! kube-controller-manager's admission-policy status controller) on loopback with free ports,
//! an admin kubeconfig, pod-bound service-account tokens, and clean-up on drop, panics included.
//!
//! The binaries come from `tests/e2e/build-kube.sh` (run on first use, or named by
//! `NODETOPO_KUBE_BIN`).

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{Node, Pod, ServiceAccount},
};
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;
use tempfile::TempDir;

/// The repository root.
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub use crate::common::NODETOPO;
/// Longest wait for the API server to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The folder with kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, helm, etcd
/// and `crds/`: `NODETOPO_KUBE_BIN`, or what `build-kube.sh` builds (once per test process).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("NODETOPO_KUBE_BIN") {
            return PathBuf::from(d);
        }
        let out = Command::new("bash")
            .arg(Path::new(ROOT).join("tests/e2e/build-kube.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/e2e/build-kube.sh");
        assert!(out.status.success(), "tests/e2e/build-kube.sh failed");
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 path");
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("build-kube.sh prints its folder")
                .trim(),
        )
    })
}

/// A path to binary `name` of the control plane.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The CRD file `NAME-VERSION.yaml` that build-kube.sh fetched from its project's module.
pub fn crd(name: &str) -> PathBuf {
    let dir = bin_dir().join("crds");
    let prefix = format!("{name}-");
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".yaml"))
        })
        .unwrap_or_else(|| panic!("no {name} CRD in {}", dir.display()))
}

pub use crate::common::free_port;

/// A child process that dies with the test thread that started it, even on SIGKILL of the
/// test binary.
pub fn spawn(cmd: &mut Command, log: &Path) -> Child {
    let log = fs::File::create(log).expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()))
}

/// A chart Deployment's container arguments without the listen and TLS flags, which a test
/// replaces with its own (127.0.0.1 and the test CA's certificate).
pub fn chart_args_for_loopback(deployment: &serde_json::Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("a string argument").to_string())
        .filter(|a| {
            ![
                "--listen=",
                "--metrics-listen=",
                "--tls-cert=",
                "--tls-key=",
            ]
            .iter()
            .any(|f| a.starts_with(f))
        })
        .collect()
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL. Returns the exit status.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    if let Ok(Some(s)) = child.try_wait() {
        return Some(s);
    }
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
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

/// What to start beside etcd and kube-apiserver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The kube-controller-manager with only the ValidatingAdmissionPolicy status controller,
    /// which fills `status.typeChecking`.
    pub policy_status_controller: bool,
    /// Extra kube-apiserver flags (feature gates, runtime config).
    pub apiserver_args: &'static [&'static str],
    /// Nodes whose kubelet will run: each gets a static token of `system:node:<name>` in the
    /// `system:nodes` group (the Node authorizer's identity), see [`ControlPlane::node_token`].
    pub kubelet_nodes: &'static [&'static str],
}

/// A running etcd + kube-apiserver; everything is stopped and removed on drop.
pub struct ControlPlane {
    dir: TempDir,
    procs: Vec<(&'static str, Child)>,
    /// How each process was started (program and arguments), to start it again.
    commands: Vec<(&'static str, PathBuf, Vec<std::ffi::OsString>)>,
    etcd_port: u16,
    restarts: u32,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    /// The CA that signed the API server's serving certificate.
    pub ca: PathBuf,
    /// kubeconfig of an admin (`system:masters`).
    pub admin_kubeconfig: PathBuf,
    /// Audit log (JSON lines) of every request by a service account.
    pub audit_log: PathBuf,
    /// Time from the first process start to `/readyz`.
    pub started_in: Duration,
    /// Static tokens of [`Options::kubelet_nodes`], by node name.
    node_tokens: Vec<(&'static str, String)>,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the server is ready.
    pub fn start(opts: Options) -> Self {
        let t0 = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("nodetopo-e2e-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path().to_path_buf();
        let ca = d.join("ca.crt");
        make_pki(&d);
        let admin_token = format!("admin-{:016x}", rand_u64());
        let mut tokens = format!("{admin_token},e2e-admin,e2e-admin-uid,\"system:masters\"\n");
        let node_tokens: Vec<(&'static str, String)> = opts
            .kubelet_nodes
            .iter()
            .map(|n| (*n, format!("kubelet-{:016x}", rand_u64())))
            .collect();
        for (node, token) in &node_tokens {
            tokens.push_str(&format!(
                "{token},system:node:{node},kubelet-{node},\"system:nodes\"\n"
            ));
        }
        fs::write(d.join("tokens.csv"), tokens).unwrap();
        fs::write(d.join("audit-policy.yaml"), AUDIT_POLICY).unwrap();

        let mut cp = ControlPlane {
            dir,
            procs: Vec::new(),
            commands: Vec::new(),
            etcd_port: 0,
            restarts: 0,
            server: String::new(),
            ca: ca.clone(),
            admin_kubeconfig: d.join("admin.kubeconfig"),
            audit_log: d.join("audit.log"),
            started_in: Duration::ZERO,
            node_tokens,
        };

        let (client_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd_cmd = Command::new(bin("etcd"));
        let etcd = spawn(
            etcd_cmd
                .arg("--name=e2e")
                .arg(format!("--data-dir={}", d.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=e2e={peer_url}"))
                .arg("--unsafe-no-fsync")
                .arg("--log-level=warn"),
            &d.join("etcd.log"),
        );
        cp.remember("etcd", &etcd_cmd);
        cp.procs.push(("etcd", etcd));
        cp.etcd_port = client_port;
        cp.wait_etcd(client_port);

        let port = free_port();
        cp.server = format!("https://127.0.0.1:{port}");
        let file_flag = |flag: &str, file: &str| format!("{flag}={}", d.join(file).display());
        let mut apiserver_cmd = Command::new(bin("kube-apiserver"));
        let apiserver = spawn(
            apiserver_cmd
                .arg(format!("--etcd-servers={etcd_url}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--secure-port={port}"))
                .arg(format!("--cert-dir={}", d.join("certs").display()))
                .arg(file_flag("--tls-cert-file", "server.crt"))
                .arg(file_flag("--tls-private-key-file", "server.key"))
                .arg(format!("--client-ca-file={}", ca.display()))
                .arg(file_flag("--token-auth-file", "tokens.csv"))
                .arg("--authorization-mode=Node,RBAC")
                .arg(file_flag("--service-account-key-file", "sa.pub"))
                .arg(file_flag("--service-account-signing-key-file", "sa.key"))
                .arg(format!("--service-account-issuer={}", cp.server))
                .arg("--service-cluster-ip-range=10.96.0.0/16")
                .arg(format!(
                    "--audit-policy-file={}",
                    d.join("audit-policy.yaml").display()
                ))
                .arg(format!("--audit-log-path={}", cp.audit_log.display()))
                .arg("--audit-log-format=json")
                .arg("--audit-log-mode=blocking")
                // Loopback only: no endpoint reconciler (it refuses 127.0.0.1).
                .arg("--endpoint-reconciler-type=none")
                .arg("--profiling=false")
                .arg("--v=1")
                .args(opts.apiserver_args),
            &d.join("kube-apiserver.log"),
        );
        cp.remember("kube-apiserver", &apiserver_cmd);
        cp.procs.push(("kube-apiserver", apiserver));
        write_kubeconfig(&cp.admin_kubeconfig, &cp.server, &ca, &admin_token);
        cp.wait_ready();

        if opts.policy_status_controller {
            let kcm = spawn(
                Command::new(bin("kube-controller-manager"))
                    .arg(format!("--kubeconfig={}", cp.admin_kubeconfig.display()))
                    .arg("--controllers=validatingadmissionpolicy-status-controller")
                    .arg("--leader-elect=false")
                    .arg("--secure-port=0")
                    .arg("--use-service-account-credentials=false"),
                &d.join("kube-controller-manager.log"),
            );
            cp.procs.push(("kube-controller-manager", kcm));
        }
        cp.started_in = t0.elapsed();
        eprintln!(
            "control plane at {} ready in {:.1} s ({})",
            cp.server,
            cp.started_in.as_secs_f64(),
            d.display()
        );
        cp
    }

    fn remember(&mut self, name: &'static str, cmd: &Command) {
        let args = cmd.get_args().map(|a| a.to_os_string()).collect();
        self.commands
            .push((name, PathBuf::from(cmd.get_program()), args));
    }

    /// Stops process `name` (`etcd` or `kube-apiserver`): SIGTERM, then SIGKILL after 5 s.
    pub fn stop_process(&mut self, name: &str) {
        let i = self
            .procs
            .iter()
            .position(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no running {name}"));
        let (_, mut child) = self.procs.remove(i);
        terminate(&mut child, Duration::from_secs(5));
    }

    /// Starts process `name` again with the arguments it first had (etcd keeps its data
    /// directory), and waits until it serves.
    pub fn start_process_again(&mut self, name: &'static str) {
        let (_, program, args) = self
            .commands
            .iter()
            .find(|(n, ..)| *n == name)
            .unwrap_or_else(|| panic!("{name} was never started"))
            .clone();
        self.restarts += 1;
        let log = self
            .dir
            .path()
            .join(format!("{name}-restart-{}.log", self.restarts));
        let child = spawn(Command::new(program).args(args), &log);
        self.procs.push((name, child));
        match name {
            "etcd" => self.wait_etcd(self.etcd_port),
            _ => self.wait_ready(),
        }
    }

    /// The last `n` lines of process `name`'s log.
    fn log_tail(&self, name: &str, n: usize) -> String {
        let log =
            fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn check_alive(&mut self) {
        let exited = self
            .procs
            .iter_mut()
            .find_map(|(name, child)| child.try_wait().ok().flatten().map(|s| (*name, s)));
        if let Some((name, status)) = exited {
            panic!("{name} exited ({status}):\n{}", self.log_tail(name, 30));
        }
    }

    fn wait_etcd(&mut self, port: u16) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(
                    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                );
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.contains("\"health\":\"true\"") {
                    return;
                }
            }
            self.check_alive();
            assert!(Instant::now() < deadline, "etcd not healthy in time");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = self
                .kubectl_cmd()
                .args(["get", "--raw", "/readyz"])
                .output()
                .expect("run kubectl");
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return;
            }
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready in time: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `kubectl` with the admin kubeconfig, not yet run.
    pub fn kubectl_cmd(&self) -> Command {
        let mut c = Command::new(bin("kubectl"));
        c.env("KUBECONFIG", &self.admin_kubeconfig)
            .env("HOME", self.dir.path());
        c
    }

    /// Runs `kubectl ARGS` as admin; panics unless it succeeds. Returns standard output.
    pub fn kubectl(&self, args: &[&str]) -> String {
        String::from_utf8(run_ok(self.kubectl_cmd().args(args)).stdout).expect("UTF-8")
    }

    /// Runs `kubectl ARGS` as admin with `input` on its standard input; returns its output,
    /// success or not.
    pub fn kubectl_input(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .kubectl_cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write kubectl's input");
        child.wait_with_output().expect("kubectl output")
    }

    /// `helm` with the admin kubeconfig and this control plane's own helm folders, not yet run.
    pub fn helm_cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(bin("helm"));
        c.env("KUBECONFIG", &self.admin_kubeconfig)
            .env("HELM_CACHE_HOME", d.join("helm/cache"))
            .env("HELM_CONFIG_HOME", d.join("helm/config"))
            .env("HELM_DATA_HOME", d.join("helm/data"));
        c
    }

    /// Runs `helm ARGS`; panics unless it succeeds. Returns standard output.
    pub fn helm(&self, args: &[&str]) -> String {
        String::from_utf8(run_ok(self.helm_cmd().args(args)).stdout).expect("UTF-8")
    }

    /// A client from the kubeconfig at `path`.
    pub async fn client_from(path: &Path) -> Client {
        let kc = Kubeconfig::read_from(path).expect("kubeconfig");
        let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig is usable");
        Client::try_from(cfg).expect("client")
    }

    /// An admin client.
    pub async fn admin(&self) -> Client {
        Self::client_from(&self.admin_kubeconfig).await
    }

    /// The kubelet's static token for `node` (one of [`Options::kubelet_nodes`]).
    pub fn node_token(&self, node: &str) -> &str {
        self.node_tokens
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, t)| t.as_str())
            .unwrap_or_else(|| panic!("{node} is not in Options::kubelet_nodes"))
    }

    /// Writes a kubeconfig for `token` and returns its path.
    pub fn kubeconfig_for(&self, name: &str, token: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.kubeconfig"));
        write_kubeconfig(&p, &self.server, &self.ca, token);
        p
    }

    /// A serving certificate for 127.0.0.1 signed by the API server's CA ([`Self::ca`]), for a
    /// webhook that the API server calls: the certificate and key paths.
    pub fn serving_cert(&self, name: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        sign_serving_cert(d, name, name, "IP:127.0.0.1");
        (d.join(format!("{name}.crt")), d.join(format!("{name}.key")))
    }

    /// A client certificate for `cn` in `system:masters`, signed by [`Self::ca`] (which the
    /// API server and a kubelet of the tests trust): the certificate and key paths.
    pub fn client_cert(&self, cn: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        let (crt, key) = (
            d.join(format!("{cn}.client.crt")),
            d.join(format!("{cn}.client.key")),
        );
        if !crt.exists() {
            sign_cert(
                d,
                &format!("{cn}.client"),
                &format!("/O=system:masters/CN={cn}"),
                None,
            );
        }
        (crt, key)
    }

    /// Requests written to the audit log by `user`, as (verb, resource, name, response code).
    pub fn audited(&self, user: &str) -> Vec<AuditEntry> {
        let text = fs::read_to_string(&self.audit_log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["stage"] == "ResponseComplete" && v["user"]["username"] == user)
            .map(|v| AuditEntry {
                verb: v["verb"].as_str().unwrap_or_default().to_string(),
                resource: v["objectRef"]["resource"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                name: v["objectRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                code: v["responseStatus"]["code"].as_u64().unwrap_or_default(),
            })
            .collect()
    }
}

/// One audited request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub verb: String,
    pub resource: String,
    pub name: String,
    pub code: u64,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Reverse order: the controller manager and API server before etcd.
        while let Some((_, mut child)) = self.procs.pop() {
            terminate(&mut child, Duration::from_secs(5));
        }
        if std::thread::panicking() {
            for name in ["kube-apiserver", "etcd", "kube-controller-manager"] {
                eprintln!("--- last lines of {name}.log:\n{}", self.log_tail(name, 15));
            }
        }
        // The TempDir field removes the data dirs after this.
    }
}

/// Only service accounts' requests are audited: the agents' writes are counted from there.
const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: [\"system:serviceaccounts\"]
  - level: None
";

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

/// A CA, a serving certificate for 127.0.0.1 signed by it, and a service-account key pair.
fn make_pki(d: &Path) {
    let ossl = |args: &[&str]| {
        run_ok(Command::new("openssl").current_dir(d).args(args));
    };
    ossl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ca.key",
    ]);
    ossl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-sha256",
        "-days",
        "2",
        "-subj",
        "/CN=nodetopo-e2e-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        "ca.crt",
    ]);
    sign_serving_cert(d, "server", "kube-apiserver", "IP:127.0.0.1,DNS:localhost");
    ossl(&["genrsa", "-out", "sa.key", "2048"]);
    ossl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
}

/// `<name>.key` and `<name>.crt` in `d`: an ECDSA serving certificate for `san`, signed by the
/// CA there (`ca.crt`, `ca.key`).
fn sign_serving_cert(d: &Path, name: &str, cn: &str, san: &str) {
    sign_cert(d, name, &format!("/CN={cn}"), Some(san));
}

/// `<name>.key` and `<name>.crt` in `d`, signed by the CA there, for `subject`: a serving
/// certificate for `san`, or a client certificate without one.
fn sign_cert(d: &Path, name: &str, subject: &str, san: Option<&str>) {
    let ossl = |args: &[&str]| {
        run_ok(Command::new("openssl").current_dir(d).args(args));
    };
    let (key, csr, crt, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    ossl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &key,
    ]);
    ossl(&["req", "-new", "-key", &key, "-subj", subject, "-out", &csr]);
    fs::write(
        d.join(&ext),
        match san {
            Some(san) => format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth\nsubjectAltName={san}\n"
            ),
            None => "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                     extendedKeyUsage=clientAuth\n"
                .to_string(),
        },
    )
    .unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        &ext,
        "-out",
        &crt,
    ]);
}

fn write_kubeconfig(path: &Path, server: &str, ca: &Path, token: &str) {
    let kc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {
            "server": server, "certificate-authority": ca.display().to_string()}}],
        "users": [{"name": "e2e", "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
        "current-context": "e2e",
    });
    fs::write(path, serde_json::to_string_pretty(&kc).unwrap()).unwrap();
}

/// Creates a ready GPU Node `name` with `labels`, as a kubelet would register it.
/// Every Node, by name, as the server returns them.
pub async fn nodes_by_name(client: &Client) -> std::collections::BTreeMap<String, Node> {
    Api::<Node>::all(client.clone())
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| (n.metadata.name.clone().unwrap(), n))
        .collect()
}

pub async fn create_node(client: &Client, name: &str, labels: &[(&str, &str)]) -> Node {
    create_node_with(client, name, labels, 4).await
}

/// [`create_node`] with `gpus` allocatable `nvidia.com/gpu`.
pub async fn create_node_with(
    client: &Client,
    name: &str,
    labels: &[(&str, &str)],
    gpus: u32,
) -> Node {
    let api: Api<Node> = Api::all(client.clone());
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
    }))
    .unwrap();
    api.create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("create node {name}: {e}"));
    let gpus = gpus.to_string();
    let status = json!({"status": {
        "capacity": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": gpus},
        "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": gpus},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "e2e", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }});
    api.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&status),
    )
    .await
    .unwrap_or_else(|e| panic!("patch node {name} status: {e}"));
    // The TaintNodesByCondition admission plugin gives a new Node the not-ready taint; the node
    // lifecycle controller would lift it once the kubelet reports Ready. No controller runs here.
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&json!({"spec": {"taints": null}})),
    )
    .await
    .unwrap_or_else(|e| panic!("untaint node {name}: {e}"))
}

/// Creates a Pod in `ns` under service account `sa`, already bound to `node`.
pub async fn create_bound_pod(client: &Client, ns: &str, sa: &str, name: &str, node: &str) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "serviceAccountName": sa,
            "nodeName": node,
            "containers": [{"name": "agent", "image": "ghcr.io/nodetopo/nodetopo:0.1.0"}],
        },
    }))
    .unwrap();
    api.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("create pod {ns}/{name}: {e}"))
}

/// A service-account token for `sa`, bound to `pod` when given (which gives it the node-name
/// claim of the Node the Pod is bound to).
pub async fn sa_token(client: &Client, ns: &str, sa: &str, pod: Option<&Pod>) -> String {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let req = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            bound_object_ref: pod.map(|p| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: p.metadata.name.clone(),
                uid: p.metadata.uid.clone(),
            }),
        },
        status: None,
    };
    let tr = api
        .create_token_request(sa, &PostParams::default(), &req)
        .await
        .unwrap_or_else(|e| panic!("token request for {ns}/{sa}: {e}"));
    tr.status.expect("token request status").token
}

/// A kubeconfig for the nodetopo agent on `node`: a Pod bound to the Node under the agent's
/// ServiceAccount (from `daemonset/`), and a token bound to that Pod.
pub async fn agent_kubeconfig(cp: &ControlPlane, admin: &Client, node: &str) -> PathBuf {
    let pod = create_bound_pod(
        admin,
        "nodetopo",
        "nodetopo-agent",
        &format!("agent-{node}"),
        node,
    )
    .await;
    let token = sa_token(admin, "nodetopo", "nodetopo-agent", Some(&pod)).await;
    cp.kubeconfig_for(node, &token)
}

/// Deletes every Pod in `ns` at once (no kubelet runs to finish them) and waits until none is
/// left.
pub async fn delete_pods(client: &Client, ns: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dp = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..kube::api::DeleteParams::default()
    };
    api.delete_collection(&dp, &kube::api::ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete pods in {ns}: {e}"));
    eventually(Duration::from_secs(60), "pods to be gone", || async {
        api.list(&kube::api::ListParams::default())
            .await
            .ok()
            .filter(|l| l.items.is_empty())
            .map(|_| ())
    })
    .await;
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
