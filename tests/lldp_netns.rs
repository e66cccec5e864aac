//! The LLDP module against a real peer: network namespaces joined by veth pairs, a real
//! `lldpd` in each "switch" namespace with the chassis and port IDs the test sets, and the real
//! `nodetopo lldp` run in the "node" namespace on the other ends. Traffic stays inside the
//! namespaces the test creates; every namespace and process is removed on the way out, also
//! when an assertion fails.
//!
//! Needs root (namespaces, and CAP_NET_RAW for the socket), `ip` (Debian `iproute2`) and lldpd
//! (Debian `lldpd`). Without them the tests are skipped as `common::require` says: they fail
//! under `CI` or `NODETOPO_REQUIRE_NETNS=1` (`.ci/run` sets it). An lldpd the package may
//! have started in the root namespace does not interfere: it neither sees these namespaces'
//! interfaces nor shares their control sockets.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;

const SWITCH_A_MAC: &str = "02:00:5e:10:00:07";
const SWITCH_B_MAC: &str = "02:00:5e:10:00:08";

/// Whether the tests can run here (root, `ip` and lldpd), as `common::require` decides; the
/// path of lldpd.
fn runnable() -> Option<PathBuf> {
    const WHY: &str = "the LLDP network namespace tests";
    const REQUIRE: &str = "NODETOPO_REQUIRE_NETNS";
    common::require(
        euid_is_root().then_some(()),
        "root (network namespaces and CAP_NET_RAW)",
        WHY,
        REQUIRE,
    )?;
    common::require_tool("ip", "iproute2", WHY, REQUIRE)?;
    common::require_tool("lldpd", "lldpd", WHY, REQUIRE)
}

fn euid_is_root() -> bool {
    // /proc/self/status: "Uid:\treal\teffective\t...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

static LAB_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Namespaces and processes of one test, removed on drop.
struct Lab {
    tag: String,
    dir: tempfile::TempDir,
    namespaces: Vec<String>,
    daemons: Vec<(String, Child)>,
    lldpd: PathBuf,
    /// The nodetopo binary the lab runs: the build's own, or a copy another user can reach.
    bin: PathBuf,
    /// The copy `bin` points into when staged; removed with the lab.
    staged: Option<OtherUsersCopy>,
}

impl Lab {
    fn new(lldpd: PathBuf) -> Self {
        let tag = format!(
            "{}{}",
            std::process::id() % 100_000,
            LAB_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        Self {
            tag,
            dir: tempfile::tempdir().expect("temp dir"),
            namespaces: vec![],
            daemons: vec![],
            lldpd,
            bin: PathBuf::from(common::NODETOPO),
            staged: None,
        }
    }

    /// Copies the binary and the fixtures `rels` (under `tests/fixtures`) where an unprivileged
    /// user can reach them, and runs that copy from now on; returns where each fixture went.
    /// The checkout may sit under a directory other users cannot enter (a `mktemp -d`, root's
    /// home), so the build's own paths are not used for runs as another user.
    fn stage_for_other_users(&mut self, rels: &[&str]) -> Vec<String> {
        let staged = OtherUsersCopy::new(Path::new(common::NODETOPO), rels);
        self.bin = staged.bin.clone();
        let paths = rels
            .iter()
            .map(|r| staged.fixture(r).to_str().unwrap().to_string())
            .collect();
        self.staged = Some(staged);
        paths
    }

    /// Creates a namespace `nt<role><tag>` with its loopback up.
    fn netns(&mut self, role: &str) -> String {
        let name = format!("nt{role}{}", self.tag);
        ip(&["netns", "add", &name]);
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// A veth pair `a` (in `ns_a`, MAC `mac_a` if given) – `b` (in `ns_b`), both up.
    fn veth(&self, ns_a: &str, a: &str, mac_a: Option<&str>, ns_b: &str, b: &str) {
        let mut args = vec!["link", "add", a, "netns", ns_a];
        if let Some(m) = mac_a {
            args.extend(["address", m]);
        }
        args.extend(["type", "veth", "peer", "name", b, "netns", ns_b]);
        ip(&args);
        ip(&["-n", ns_a, "link", "set", a, "up"]);
        ip(&["-n", ns_b, "link", "set", b, "up"]);
    }

    fn ctl_socket(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.sock"))
    }

    /// Starts lldpd in `ns` on `iface`, configured by `config` (lldpcli commands, run at start).
    fn lldpd(&mut self, name: &str, ns: &str, iface: &str, config: &str) {
        self.lldpd_on(name, ns, iface, iface, config);
    }

    /// Starts lldpd in `ns` on the interfaces `ifaces` (comma-separated), its chassis ID from
    /// `chassis_iface`'s MAC address unless `config` sets one.
    fn lldpd_on(&mut self, name: &str, ns: &str, ifaces: &str, chassis_iface: &str, config: &str) {
        let conf = self.dir.path().join(format!("{name}.conf"));
        std::fs::write(&conf, config).expect("write lldpd config");
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&self.lldpd)
            // Foreground; no kernel release or description (the frames are the test's own).
            .args([
                "-d",
                "-k",
                "-S",
                "nodetopo test switch",
                "-I",
                ifaces,
                "-C",
                chassis_iface,
            ])
            .arg("-u")
            .arg(self.ctl_socket(name))
            .arg("-p")
            .arg(self.dir.path().join(format!("{name}.pid")))
            .arg("-O")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start lldpd");
        self.daemons.push((name.to_string(), child));
    }

    /// `lldpcli -f json ARGS` against lldpd `name` in `ns`.
    fn lldpcli(&self, name: &str, ns: &str, args: &[&str]) -> Value {
        let out = run(Command::new("ip")
            .args(["netns", "exec", ns, "lldpcli", "-f", "json", "-u"])
            .arg(self.ctl_socket(name))
            .args(args));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "lldpcli {args:?}: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `lldpcli ARGS` (a configuration command) against lldpd `name`.
    fn configure(&self, name: &str, ns: &str, args: &[&str]) {
        run(Command::new("ip")
            .args(["netns", "exec", ns, "lldpcli", "-u"])
            .arg(self.ctl_socket(name))
            .args(args));
    }

    /// Waits until lldpd `name` answers and `ready` holds on its `show interfaces`.
    fn wait_lldpd(&self, name: &str, ns: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "lldpcli", "-f", "json", "-u"])
                .arg(self.ctl_socket(name))
                .args(["show", "interfaces"])
                .output()
                .expect("lldpcli runs");
            if out.status.success() {
                if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                    if ready(&v) {
                        return v;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "lldpd {name} not ready in 15 s; log:\n{}",
                std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `nodetopo ARGS` in `ns` (through `prefix`, e.g. setpriv, if given).
    fn nodetopo(&self, ns: &str, prefix: &[&str], args: &[&str]) -> (Output, Duration) {
        let started = Instant::now();
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(prefix)
            .arg(&self.bin)
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("nodetopo runs");
        (out, started.elapsed())
    }

    /// `nodetopo lldp -o json` in `ns`, parsed; panics unless it exits 0.
    fn lldp_json(&self, ns: &str, prefix: &[&str], netdevs: &str, wait: &str) -> (Value, Duration) {
        let (out, took) = self.nodetopo(
            ns,
            prefix,
            &["lldp", "--netdev", netdevs, "--wait", wait, "-o", "json"],
        );
        assert!(
            out.status.success(),
            "nodetopo lldp failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "nodetopo lldp output: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (v, took)
    }
}

impl Lab {
    /// A switch namespace running lldpd as `name` on `port`, cabled to `eth1` of a node
    /// namespace; returns both namespaces and what lldpd advertises, once it does so with the
    /// port ID subtype ifname.
    fn one_leaf(
        &mut self,
        port: &str,
        mac: &str,
        name: &str,
    ) -> (String, String, (String, String, String, String, String)) {
        let leaf = self.netns("sw");
        let node = self.netns("nd");
        self.veth(&leaf, port, Some(mac), &node, "eth1");
        self.lldpd("leaf", &leaf, port, &switch_config(name, port));
        let adv = advertised(
            &self.wait_lldpd("leaf", &leaf, |v| {
                v["lldp"]["interface"][port]["port"]["id"]["type"] == "ifname"
            }),
            port,
        );
        (leaf, node, adv)
    }

    /// Sends `signal` (`TERM`, `KILL`) to daemon `name` and waits for it to exit.
    fn stop(&mut self, name: &str, signal: &str) {
        let i = self
            .daemons
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no daemon {name}"));
        let (_, mut child) = self.daemons.remove(i);
        run(Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]));
        child.wait().expect("wait for the daemon");
    }

    /// Starts `nodetopo lldp --follow -o json` in `ns`; its lines arrive on the receiver with the
    /// time each was read. The process is stopped with the lab.
    fn follow(&mut self, ns: &str, netdev: &str, wait: &str) -> Follow {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(common::NODETOPO)
            .args([
                "lldp", "--netdev", netdev, "--wait", wait, "--follow", "-o", "json",
            ])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start nodetopo lldp --follow");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("--follow line {line:?}: {e}"));
                if tx.send((Instant::now(), v)).is_err() {
                    break;
                }
            }
        });
        self.daemons.push(("follow".into(), child));
        Follow { rx, seen: vec![] }
    }
}

/// The lines of a running `nodetopo lldp --follow`.
struct Follow {
    rx: std::sync::mpsc::Receiver<(Instant, Value)>,
    seen: Vec<Value>,
}

impl Follow {
    /// The next line for which `want` holds, within `timeout`, and when it was read; lines
    /// before it are kept for the failure message.
    fn until(&mut self, timeout: Duration, want: impl Fn(&Value) -> bool) -> (Instant, Value) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((at, v)) if want(&v) => return (at, v),
                Ok((_, v)) => self.seen.push(v),
                Err(e) => panic!(
                    "no expected line within {timeout:?} ({e}); lines: {:#?}",
                    self.seen
                ),
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (name, child) in &mut self.daemons {
            // `ip netns exec` execs lldpd, so the child is lldpd itself: SIGTERM lets it send
            // its shutdown LLDPDU and remove its socket; SIGKILL if it lingers.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if child.try_wait().ok().flatten().is_none() {
                eprintln!("lldpd {name} ignored SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The switch's configuration: system name, 1 s transmit interval (TTL 4 s), port ID = the
/// interface name, a port description.
fn switch_config(name: &str, port: &str) -> String {
    format!(
        "configure system hostname {name}\n\
         configure lldp tx-interval 1\n\
         configure lldp portidsubtype ifname\n\
         configure ports {port} lldp portdescription \"{name} {port}\"\n"
    )
}

/// lldpcli's name of a chassis or port ID type, as nodetopo names the subtype.
fn subtype_of_lldpcli(t: &str) -> &'static str {
    match t {
        "mac" => "mac_address",
        "ifname" => "interface_name",
        "local" => "locally_assigned",
        "ip" => "network_address",
        "ifalias" => "interface_alias",
        other => panic!("lldpcli ID type {other:?} not mapped by the test"),
    }
}

/// (chassis type, chassis value, port type, port value, ttl) of `iface` in lldpd's `show
/// interfaces` (what it advertises).
fn advertised(v: &Value, iface: &str) -> (String, String, String, String, String) {
    let i = &v["lldp"]["interface"][iface];
    let chassis = i["chassis"]
        .as_object()
        .and_then(|c| c.values().next())
        .unwrap_or_else(|| panic!("no chassis for {iface} in {v}"));
    let s = |x: &Value| {
        x.as_str()
            .unwrap_or_else(|| panic!("{x} in {v}"))
            .to_string()
    };
    (
        s(&chassis["id"]["type"]),
        s(&chassis["id"]["value"]),
        s(&i["port"]["id"]["type"]),
        s(&i["port"]["id"]["value"]),
        s(&i["ttl"]["ttl"]),
    )
}

fn assert_heard(status: &Value, adv: &(String, String, String, String, String)) {
    assert_eq!(status["status"], "current", "{status}");
    let n = &status["neighbor"];
    assert_eq!(
        n["chassis_id"]["subtype"],
        subtype_of_lldpcli(&adv.0),
        "{status}"
    );
    assert_eq!(n["chassis_id"]["value"], adv.1.as_str(), "{status}");
    assert_eq!(
        n["port_id"]["subtype"],
        subtype_of_lldpcli(&adv.2),
        "{status}"
    );
    assert_eq!(n["port_id"]["value"], adv.3.as_str(), "{status}");
    assert_eq!(n["ttl_s"].to_string(), adv.4, "{status}");
}

/// A node with two rails, each cabled to a different leaf (a rail-optimised fabric): each
/// netdev reports its own leaf's chassis and port, equal to what that lldpd advertises; a
/// reconfigured chassis ID (locally assigned) and port ID are heard as such.
#[test]
fn hears_each_leafs_chassis_and_port_from_real_lldpd() {
    let Some(lldpd) = runnable() else { return };
    let mut lab = Lab::new(lldpd);
    let leaf_a = lab.netns("sa");
    let leaf_b = lab.netns("sb");
    let node = lab.netns("nd");
    lab.veth(&leaf_a, "swp12", Some(SWITCH_A_MAC), &node, "eth1");
    lab.veth(&leaf_b, "swp3", Some(SWITCH_B_MAC), &node, "eth2");
    lab.lldpd("a", &leaf_a, "swp12", &switch_config("leaf-07", "swp12"));
    lab.lldpd("b", &leaf_b, "swp3", &switch_config("leaf-08", "swp3"));
    let port_is_ifname = |port: &'static str| {
        move |v: &Value| v["lldp"]["interface"][port]["port"]["id"]["type"] == "ifname"
    };
    let adv_a = advertised(
        &lab.wait_lldpd("a", &leaf_a, port_is_ifname("swp12")),
        "swp12",
    );
    let adv_b = advertised(
        &lab.wait_lldpd("b", &leaf_b, port_is_ifname("swp3")),
        "swp3",
    );
    // What the test configured is what lldpd advertises.
    assert_eq!(
        adv_a,
        (
            "mac".into(),
            SWITCH_A_MAC.into(),
            "ifname".into(),
            "swp12".into(),
            "4".into()
        )
    );
    assert_eq!((adv_b.1.as_str(), adv_b.3.as_str()), (SWITCH_B_MAC, "swp3"));
    // `show chassis` agrees on the chassis ID.
    let chassis = lab.lldpcli("a", &leaf_a, &["show", "chassis"]);
    assert_eq!(
        chassis["local-chassis"]["chassis"]["leaf-07"]["id"]["value"],
        SWITCH_A_MAC
    );

    let (v, took) = lab.lldp_json(&node, &[], "eth1,eth2", "20s");
    assert_heard(&v["eth1"], &adv_a);
    assert_heard(&v["eth2"], &adv_b);
    assert_eq!(v["eth1"]["neighbor"]["system_name"], "leaf-07");
    assert_eq!(v["eth1"]["neighbor"]["port_description"], "leaf-07 swp12");
    assert_eq!(v["eth2"]["neighbor"]["system_name"], "leaf-08");
    assert_eq!(v["eth1"]["source"], SWITCH_A_MAC);
    // The command returns once both are heard (1 s transmit interval), not at the end of the wait.
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // The operator sets the chassis ID and a locally assigned port ID.
    lab.configure(
        "a",
        &leaf_a,
        &["configure", "system", "chassisid", "leaf-07.pod2"],
    );
    lab.configure(
        "a",
        &leaf_a,
        &[
            "configure",
            "ports",
            "swp12",
            "lldp",
            "portidsubtype",
            "local",
            "Ethernet1/12",
        ],
    );
    let adv_a = advertised(
        &lab.wait_lldpd("a", &leaf_a, |v| {
            v["lldp"]["interface"]["swp12"]["port"]["id"]["value"] == "Ethernet1/12"
                && v["lldp"]["interface"]["swp12"]["chassis"]["leaf-07"]["id"]["value"]
                    == "leaf-07.pod2"
        }),
        "swp12",
    );
    assert_eq!(adv_a.0, "local");
    // lldpd sends at once on a change, and every second after: wait for the next one.
    std::thread::sleep(Duration::from_millis(1500));
    let (v, _) = lab.lldp_json(&node, &[], "eth1", "20s");
    assert_heard(&v["eth1"], &adv_a);
    assert_eq!(v["eth1"]["neighbor"]["chassis_id"]["value"], "leaf-07.pod2");
    assert_eq!(v["eth1"]["neighbor"]["port_id"]["value"], "Ethernet1/12");
}

/// A local lldpd on the node, sending on the same netdev: its own frames are not taken for the
/// switch's, and it still hears the switch (the kernel gives both sockets a copy).
#[test]
fn a_local_lldpd_on_the_node_does_not_hide_or_replace_the_switch() {
    let Some(lldpd) = runnable() else { return };
    let mut lab = Lab::new(lldpd);
    let leaf = lab.netns("sw");
    let node = lab.netns("nd");
    lab.veth(&leaf, "swp1", Some(SWITCH_A_MAC), &node, "eth1");
    lab.lldpd("leaf", &leaf, "swp1", &switch_config("leaf-01", "swp1"));
    // The node's lldpd sends every second too, with its own chassis ID.
    lab.lldpd(
        "node",
        &node,
        "eth1",
        "configure system hostname gpu-node-a\n\
         configure system chassisid gpu-node-a\n\
         configure lldp tx-interval 1\n",
    );
    let adv = advertised(
        &lab.wait_lldpd("leaf", &leaf, |v| {
            v["lldp"]["interface"]["swp1"]["port"]["id"]["type"] == "ifname"
        }),
        "swp1",
    );
    // The node's lldpd has heard the switch, so it is sending and receiving.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n = lab.lldpcli("node", &node, &["show", "neighbors"]);
        if n["lldp"]["interface"]["eth1"]["chassis"]["leaf-01"]["id"]["value"] == SWITCH_A_MAC {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node lldpd never heard the switch: {n}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Both send every second; the one frame the command waits for is the switch's (a socket
    // bound to the LLDP ethertype is never given the host's outgoing frames).
    let (v, _) = lab.lldp_json(&node, &[], "eth1", "3s");
    assert_heard(&v["eth1"], &adv);
    assert_ne!(v["eth1"]["neighbor"]["chassis_id"]["value"], "gpu-node-a");
}

/// With no LLDP sender the command answers "no frame yet" when the wait ends, not later; a
/// missing netdev is its own status.
#[test]
fn no_sender_gives_no_frame_within_the_wait() {
    let Some(lldpd) = runnable() else { return };
    let mut lab = Lab::new(lldpd);
    let peer = lab.netns("pe");
    let node = lab.netns("nd");
    lab.veth(&peer, "eth0", None, &node, "eth1");
    let (v, took) = lab.lldp_json(&node, &[], "eth1,nosuch0", "2s");
    assert_eq!(v["eth1"], serde_json::json!({"status": "no-frame-yet"}));
    assert_eq!(v["nosuch0"]["status"], "failed", "{v}");
    assert_eq!(v["nosuch0"]["kind"], "no-such-netdev", "{v}");
    assert!(took >= Duration::from_secs(2), "returned after {took:?}");
    assert!(took < Duration::from_secs(5), "returned after {took:?}");
    // Text output says the same.
    let (out, _) = lab.nodetopo(&node, &[], &["lldp", "--netdev", "eth1", "--wait", "1s"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "eth1: no-frame-yet\n");
}

/// What the socket needs: a non-root user without capabilities is refused with a clear
/// status; the same user with CAP_NET_RAW (ambient, so it survives exec) hears the switch.
#[test]
fn cap_net_raw_is_what_the_socket_needs() {
    let Some(lldpd) = runnable() else { return };
    let mut lab = Lab::new(lldpd);
    let (_leaf, node, adv) = lab.one_leaf("swp5", SWITCH_B_MAC, "leaf-05");
    lab.stage_for_other_users(&[]);
    // The chart's user, no capabilities.
    let unprivileged = [
        "setpriv",
        "--reuid=65532",
        "--regid=65532",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    let (v, took) = lab.lldp_json(&node, &unprivileged, "eth1", "5s");
    assert_eq!(v["eth1"]["status"], "failed", "{v}");
    assert_eq!(v["eth1"]["kind"], "permission-denied", "{v}");
    let msg = v["eth1"]["message"].as_str().unwrap();
    assert!(msg.contains("CAP_NET_RAW"), "{msg}");
    // A refusal settles at once: no waiting for frames that cannot come.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // The same user with only CAP_NET_RAW.
    let net_raw = [
        "setpriv",
        "--reuid=65532",
        "--regid=65532",
        "--clear-groups",
        "--inh-caps=-all,+net_raw",
        "--ambient-caps=-all,+net_raw",
        "--bounding-set=-all,+net_raw",
    ];
    let (v, _) = lab.lldp_json(&node, &net_raw, "eth1", "20s");
    assert_heard(&v["eth1"], &adv);
}

/// A copy of the binary and of some fixtures in a fresh directory that every user can enter
/// and read, under the first of `$TMPDIR`, `/tmp`, `/var/tmp` and `/dev/shm` whose every
/// ancestor other users may search; removed on drop.
struct OtherUsersCopy {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl OtherUsersCopy {
    fn new(bin: &Path, fixtures: &[&str]) -> Self {
        let candidates = [
            std::env::temp_dir(),
            PathBuf::from("/tmp"),
            PathBuf::from("/var/tmp"),
            PathBuf::from("/dev/shm"),
        ];
        let base = candidates
            .iter()
            .find(|d| d.is_dir() && searchable_by_others(d))
            .unwrap_or_else(|| {
                panic!("none of {candidates:?} can be entered by other users; nowhere to put a copy of the binary for the unprivileged run")
            });
        let dir = tempfile::Builder::new()
            .prefix("nodetopo-other-user-")
            .tempdir_in(base)
            .expect("staging dir");
        let bin_copy = dir.path().join("nodetopo");
        std::fs::copy(bin, &bin_copy)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", bin.display(), bin_copy.display()));
        for rel in fixtures {
            let to = dir.path().join("fixtures").join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).expect("fixture dir");
            // `cp -a` keeps the sysfs captures' symlinks as links.
            run(Command::new("cp").arg("-a").arg(fixture(rel)).arg(&to));
        }
        // The temp dir is 0700 and the checkout's modes depend on the user's umask: open up
        // the copy only (directories and executables searchable, everything readable).
        run(Command::new("chmod").arg("-R").arg("a+rX").arg(dir.path()));
        let copy = Self { dir, bin: bin_copy };
        assert!(
            searchable_by_others(&copy.bin),
            "{} is still not reachable by other users",
            copy.bin.display()
        );
        copy
    }

    fn fixture(&self, rel: &str) -> PathBuf {
        self.dir.path().join("fixtures").join(rel)
    }
}

/// Whether every directory above `path` (and `path` itself, if a directory) lets other users
/// through.
fn searchable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors()
        .filter(|p| p.is_dir())
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// The watcher over time, in the real binary: a neighbour heard, its TTL running out when the
/// switch's port goes down (no frame, no shutdown), the next switch identity replacing it when
/// the port comes back, and a shutdown LLDPDU expiring it at once.
#[test]
fn follows_ttl_expiry_a_replaced_neighbour_and_a_shutdown() {
    let Some(lldpd) = runnable() else { return };
    let mut lab = Lab::new(lldpd);
    let (leaf, node, adv) = lab.one_leaf("swp7", SWITCH_A_MAC, "leaf-07");
    assert_eq!(adv.4, "4", "TTL of a 1 s transmit interval");
    let mut f = lab.follow(&node, "eth1", "60s");
    let chassis = |v: &Value| {
        v["neighbor"]["chassis_id"]["value"]
            .as_str()
            .map(str::to_string)
    };
    let (_, v) = f.until(Duration::from_secs(10), |v| v["status"] == "current");
    assert_heard(&v, &adv);
    assert_eq!(v["netdev"], "eth1");

    // The switch's port goes down: no more frames. The answer expires when its 4 s TTL has run
    // out since the last frame (sent at most 1 s before), and is kept as the last known one.
    ip(&["-n", &leaf, "link", "set", "swp7", "down"]);
    let down = Instant::now();
    let (at, v) = f.until(Duration::from_secs(10), |v| v["status"] != "current");
    let after = at - down;
    assert_eq!(v["status"], "expired", "{v}");
    assert_eq!(chassis(&v).as_deref(), Some(SWITCH_A_MAC));
    assert!(
        after >= Duration::from_millis(2500) && after <= Duration::from_millis(5500),
        "expired {after:?} after the port went down"
    );

    // Another identity on the same switch port: the fresh frame replaces the old answer.
    lab.configure(
        "leaf",
        &leaf,
        &["configure", "system", "chassisid", "leaf-09"],
    );
    ip(&["-n", &leaf, "link", "set", "swp7", "up"]);
    let (_, v) = f.until(Duration::from_secs(15), |v| v["status"] == "current");
    assert_eq!(chassis(&v).as_deref(), Some("leaf-09"), "{v}");
    assert_eq!(v["neighbor"]["chassis_id"]["subtype"], "locally_assigned");

    // lldpd stopping sends a shutdown LLDPDU (TTL 0): expired at once, not after the TTL.
    let stop = Instant::now();
    lab.stop("leaf", "TERM");
    let (at, v) = f.until(Duration::from_secs(5), |v| v["status"] != "current");
    assert_eq!(v["status"], "expired", "{v}");
    assert_eq!(v["neighbor"]["ttl_s"], 0, "{v}");
    assert_eq!(chassis(&v).as_deref(), Some("leaf-09"));
    assert!(
        at - stop < Duration::from_millis(2500),
        "took {:?}",
        at - stop
    );
}

/// The rails of the h100x8-roce sysfs fixture (`gen_sysfs.py`): RDMA device and netdev. mlx5_7's
/// port is DOWN there; the others are ACTIVE.
const FIXTURE_RAILS: [(&str, &str); 8] = [
    ("mlx5_0", "enp28s0np0"),
    ("mlx5_1", "enp46s0np0"),
    ("mlx5_2", "enp64s0np0"),
    ("mlx5_3", "enp81s0np0"),
    ("mlx5_6", "enp158s0np0"),
    ("mlx5_7", "enp175s0np0"),
    ("mlx5_8", "enp196s0np0"),
    ("mlx5_9", "enp212s0np0"),
];
const FIXTURE_DOWN_RAIL: &str = "mlx5_7";
/// The fixture's bonded storage NIC and the netdev of its PCI function.
const FIXTURE_STORAGE: (&str, &str) = ("mlx5_bond_0", "enp94s0f0np0");
const LEAF_MAC: &str = "02:00:5e:10:00:21";
const STORAGE_SWITCH_MAC: &str = "02:00:5e:10:00:31";

/// lldpcli's JSON with the interfaces as one object: with more than one interface it lists them
/// as an array of one-key objects.
fn interfaces_as_object(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(list) = v["lldp"]["interface"].as_array() {
        let merged: serde_json::Map<String, Value> = list
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|o| o.clone())
            .collect();
        v["lldp"]["interface"] = Value::Object(merged);
    }
    v
}

/// The text of a log line without its terminal colours.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn fixture(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
        .to_str()
        .unwrap()
        .to_string()
}

/// The real `nodetopo probe` on a recorded node (the h100x8-roce sysfs fixture and its NVML
/// snapshot) whose netdevs exist, by name, as veths in the "node" namespace: every rail is
/// cabled to one leaf switch running lldpd, the storage NIC to another. The active rails report
/// the leaf's chassis ID and their own switch port, the node's `roce.leaf` label is the chassis
/// ID spelled as a label value (or its name from `--fabric-names`), and neither the down rail
/// nor the storage NIC is listened on, though both hear LLDP.
#[test]
fn probe_publishes_the_roce_leaf_of_a_recorded_node_from_real_lldpd() {
    let Some(lldpd) = runnable() else { return };
    let mut lab = Lab::new(lldpd);
    let (leaf, storage, node, swps) = cable_fixture_node(&mut lab);
    start_fixture_switches(&mut lab, &leaf, &storage, &swps);
    let all_ifname = |v: &Value| {
        let v = interfaces_as_object(v);
        (1..=FIXTURE_RAILS.len())
            .all(|i| v["lldp"]["interface"][format!("swp{i}")]["port"]["id"]["type"] == "ifname")
    };
    let shown = interfaces_as_object(&lab.wait_lldpd("leaf", &leaf, all_ifname));
    for swp in &swps {
        let adv = advertised(&shown, swp);
        assert_eq!((adv.0.as_str(), adv.1.as_str()), ("mac", LEAF_MAC), "{swp}");
        assert_eq!(adv.3, *swp);
    }
    lab.wait_lldpd("storage", &storage, |v| {
        v["lldp"]["interface"]["sw0"]["port"]["id"]["type"] == "ifname"
    });

    let probe = |extra: &[&str]| {
        let snapshot = fixture("h100x8-ib/snapshot.json");
        let sysfs = fixture("h100x8-roce/sysfs/sys");
        let mut args = vec![
            "-v",
            "probe",
            "--node-name",
            "gpu-node-1",
            "--replay",
            &snapshot,
            "--sysfs-root",
            &sysfs,
            "--lldp-wait",
            "20s",
        ];
        args.extend_from_slice(extra);
        let (out, took) = lab.nodetopo(&node, &[], &args);
        let stderr = strip_ansi(&String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "nodetopo probe failed: {stderr}");
        (String::from_utf8(out.stdout).unwrap(), stderr, took)
    };

    // The default mode (auto) listens: the process has CAP_NET_RAW and the netdevs exist.
    let (json, stderr, took) = probe(&["-o", "json"]);
    let t: Value = serde_json::from_str(&json).expect("probe -o json");
    // The first wait ends when every listened port has heard (1 s interval), not at its bound.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let nics = t["nics"].as_array().expect("nics");
    let nic = |name: &str| {
        nics.iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("no NIC {name} in {json}"))
    };
    for (i, (rdma, netdev)) in FIXTURE_RAILS.iter().enumerate() {
        let n = nic(rdma);
        assert_eq!(n["role"], "compute", "{n}");
        assert_eq!(n["netdevs"][0], *netdev);
        let nb = &n["ports"][0]["neighbor"];
        if *rdma == FIXTURE_DOWN_RAIL {
            assert_eq!(nb["status"], "not-active", "{n}");
            assert!(nb.get("leaf_id").is_none(), "{n}");
            continue;
        }
        assert_eq!(nb["status"], "ok", "{n}");
        assert_eq!(nb["leaf_id"], LEAF_MAC, "{n}");
        assert_eq!(nb["leaf_port"], format!("swp{}", i + 1), "{n}");
    }
    let s = nic(FIXTURE_STORAGE.0);
    assert_eq!(s["role"], "storage", "{s}");
    assert!(s["ports"][0].get("neighbor").is_none(), "storage: {s}");
    let label_leaf = LEAF_MAC.replace(':', "-");
    assert_eq!(
        t["network"]["roce"]["leaf"],
        label_leaf.as_str(),
        "{}",
        t["network"]
    );
    // Every active rail on the one leaf: each its rail, and not rail-optimised.
    let want: BTreeMap<String, String> = FIXTURE_RAILS
        .iter()
        .filter(|(rdma, _)| *rdma != FIXTURE_DOWN_RAIL)
        .map(|(rdma, _)| (rdma.to_string(), label_leaf.clone()))
        .collect();
    assert_eq!(roce_rails(&t), want, "{}", t["network"]);
    assert_eq!(
        t["network"]["roce"]["rail_optimised"], false,
        "{}",
        t["network"]
    );
    let lldp = t["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "lldp")
        .unwrap_or_else(|| panic!("no lldp source: {}", t["sources"]));
    assert_eq!(lldp["ok"], true, "{lldp}");
    // What was listened on: the active rails' netdevs, neither the down rail's nor storage's.
    let listened = stderr
        .lines()
        .find(|l| l.contains("lldp: first wait over"))
        .unwrap_or_else(|| panic!("no first-wait line: {stderr}"));
    for (rdma, netdev) in FIXTURE_RAILS {
        assert_eq!(
            listened.contains(netdev),
            rdma != FIXTURE_DOWN_RAIL,
            "{netdev}: {listened}"
        );
    }
    assert!(!listened.contains(FIXTURE_STORAGE.1), "{listened}");
    assert!(listened.contains("settled=true"), "{listened}");

    // The labels (the label contract's list for this node), and the leaf's name from a mapping
    // file keyed by the chassis ID as read.
    let (labels, _, _) = probe(&["-o", "labels"]);
    assert!(
        labels.contains(&format!("nodetopo.io/roce.leaf={label_leaf}\n")),
        "{labels}"
    );
    common::label_list_contract(
        "lldp-h100x8-roce",
        "nodetopo probe -o labels on the h100x8-roce fixture, its rails cabled to lldpd (tests/lldp_netns.rs)",
        &labels,
    );
    let names = lab.dir.path().join("names.yaml");
    std::fs::write(&names, format!("names:\n  \"{LEAF_MAC}\": rack-21\n")).unwrap();
    let (labels, _, _) = probe(&["-o", "labels", "--fabric-names", names.to_str().unwrap()]);
    assert!(
        labels.contains("nodetopo.io/roce.leaf=rack-21\n"),
        "{labels}"
    );
    // The agent (one shot, no Kubernetes) publishes the same label with its default wait.
    let (out, _) = lab.nodetopo(
        &node,
        &[],
        &[
            "agent",
            "--oneshot",
            "--no-kube",
            "--node-name",
            "gpu-node-1",
            "--replay",
            &fixture("h100x8-ib/snapshot.json"),
            "--sysfs-root",
            &fixture("h100x8-roce/sysfs/sys"),
            "--lldp",
            "on",
        ],
    );
    let agent_labels = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        agent_labels.contains(&format!("nodetopo.io/roce.leaf={label_leaf}\n")),
        "{agent_labels}"
    );
    // Off: nothing listened on, no leaf.
    let (labels, stderr, _) = probe(&["-o", "labels", "--lldp", "off"]);
    assert!(!labels.contains("roce.leaf"), "{labels}");
    assert!(!stderr.contains("lldp: first wait"), "{stderr}");
}

/// Each RoCE compute port's rail, by NIC name (the fixture's NICs have one port each).
fn roce_rails(t: &Value) -> BTreeMap<String, String> {
    t["network"]["roce"]["rails"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            assert_eq!(r["port"], 1, "{r}");
            (
                r["nic"].as_str().unwrap().to_string(),
                r["rail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A rail-optimised RoCE node: the h100x8-roce fixture's rails each cabled to a leaf of its own
/// (eight namespaces, each with lldpd and its own chassis MAC). Each active rail's rail is its
/// leaf's chassis ID (label spelling), the node is rail-optimised (`roce.rail-optimised=true`),
/// a `--fabric-names` file's `rails:` names the rails, and `probe -o env --gpus` gives the
/// selected GPUs' rails in `NODETOPO_RAILS`.
#[test]
fn a_rail_optimised_roce_node_names_each_rail_from_real_lldpd() {
    let Some(lldpd) = runnable() else { return };
    let mut lab = Lab::new(lldpd);
    let node = lab.netns("nd");
    let storage = lab.netns("st");
    let mac = |i: usize| format!("02:00:5e:10:01:{:02x}", i + 1);
    let mut leaves = Vec::new();
    for (i, (_, netdev)) in FIXTURE_RAILS.iter().enumerate() {
        let leaf = lab.netns(&format!("l{i}"));
        lab.veth(&leaf, "swp1", Some(&mac(i)), &node, netdev);
        lab.lldpd(
            &format!("leaf{i}"),
            &leaf,
            "swp1",
            &switch_config(&format!("leaf-{i}"), "swp1"),
        );
        leaves.push(leaf);
    }
    lab.veth(
        &storage,
        "sw0",
        Some(STORAGE_SWITCH_MAC),
        &node,
        FIXTURE_STORAGE.1,
    );
    lab.lldpd("storage", &storage, "sw0", &switch_config("stor-01", "sw0"));
    for (i, leaf) in leaves.iter().enumerate() {
        lab.wait_lldpd(&format!("leaf{i}"), leaf, |v| {
            v["lldp"]["interface"]["swp1"]["port"]["id"]["type"] == "ifname"
        });
    }
    let probe = |extra: &[&str]| {
        let snapshot = fixture("h100x8-ib/snapshot.json");
        let sysfs = fixture("h100x8-roce/sysfs/sys");
        let mut args = vec![
            "probe",
            "--node-name",
            "gpu-node-2",
            "--replay",
            &snapshot,
            "--sysfs-root",
            &sysfs,
            "--lldp-wait",
            "20s",
        ];
        args.extend_from_slice(extra);
        let (out, _) = lab.nodetopo(&node, &[], &args);
        assert!(
            out.status.success(),
            "nodetopo probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let t: Value = serde_json::from_str(&probe(&["-o", "json"])).expect("probe -o json");
    let want: BTreeMap<String, String> = FIXTURE_RAILS
        .iter()
        .enumerate()
        .filter(|(_, (rdma, _))| *rdma != FIXTURE_DOWN_RAIL)
        .map(|(i, (rdma, _))| (rdma.to_string(), mac(i).replace(':', "-")))
        .collect();
    assert_eq!(roce_rails(&t), want, "{}", t["network"]);
    assert_eq!(
        t["network"]["roce"]["rail_optimised"], true,
        "{}",
        t["network"]
    );
    assert!(
        t["network"]["roce"].get("leaf").is_none(),
        "{}",
        t["network"]
    );
    let labels = probe(&["-o", "labels"]);
    assert!(
        labels.contains("nodetopo.io/roce.rail-optimised=true\n"),
        "{labels}"
    );

    // Rails named by the mapping file, and the rails of two GPUs in the env hints.
    let names = lab.dir.path().join("rails.yaml");
    let mut text = String::from("rails:\n");
    for i in 0..FIXTURE_RAILS.len() {
        text.push_str(&format!("  \"{}\": rail-{i}\n", mac(i)));
    }
    std::fs::write(&names, text).unwrap();
    let names = names.to_str().unwrap();
    let t: Value = serde_json::from_str(&probe(&["-o", "json", "--fabric-names", names]))
        .expect("probe -o json");
    let named = roce_rails(&t);
    for (i, (rdma, _)) in FIXTURE_RAILS.iter().enumerate() {
        if *rdma != FIXTURE_DOWN_RAIL {
            assert_eq!(named[*rdma], format!("rail-{i}"), "{}", t["network"]);
        }
    }
    // The rail of each GPU's NIC, from the topology's own pairing.
    let rail_of_gpu = |g: u64| {
        let nic = t["rail_pairing"]["gpu_rails"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["gpu"] == g)
            .unwrap_or_else(|| panic!("GPU {g}: {}", t["rail_pairing"]))["nic"]
            .as_str()
            .unwrap()
            .to_string();
        named.get(&nic).cloned()
    };
    let env = probe(&["-o", "env", "--gpus", "1,0", "--fabric-names", names]);
    let mut want: Vec<String> = [1, 0].iter().filter_map(|g| rail_of_gpu(*g)).collect();
    assert_eq!(want.len(), 2, "GPUs 0 and 1 are on active rails: {env}");
    want.sort();
    assert!(
        env.contains(&format!("export NODETOPO_RAILS=\"{}\"\n", want.join(","))),
        "{env}"
    );
}

/// The "node" namespace with every netdev of the h100x8-roce fixture's rails and its storage NIC
/// as a veth: the rails to `swp1`.. in a "leaf" namespace (swp1 with the MAC `LEAF_MAC`), the
/// storage NIC to `sw0` in a "storage switch" namespace. Returns (leaf, storage, node, swps).
fn cable_fixture_node(lab: &mut Lab) -> (String, String, String, Vec<String>) {
    let leaf = lab.netns("lf");
    let storage = lab.netns("st");
    let node = lab.netns("nd");
    let mut swps = Vec::new();
    for (i, (_, netdev)) in FIXTURE_RAILS.iter().enumerate() {
        let swp = format!("swp{}", i + 1);
        let mac = (i == 0).then_some(LEAF_MAC);
        lab.veth(&leaf, &swp, mac, &node, netdev);
        swps.push(swp);
    }
    lab.veth(
        &storage,
        "sw0",
        Some(STORAGE_SWITCH_MAC),
        &node,
        FIXTURE_STORAGE.1,
    );
    (leaf, storage, node, swps)
}

/// lldpd on every leaf port (chassis ID: swp1's MAC, port ID: the interface name, 1 s interval)
/// and on the storage switch.
fn start_fixture_switches(lab: &mut Lab, leaf: &str, storage: &str, swps: &[String]) {
    let config = "configure system hostname leaf-21\n\
                  configure lldp tx-interval 1\n\
                  configure lldp portidsubtype ifname\n";
    lab.lldpd_on("leaf", leaf, &swps.join(","), "swp1", config);
    lab.lldpd("storage", storage, "sw0", &switch_config("stor-01", "sw0"));
}

/// The agent in the "node" namespace of [`cable_fixture_node`], replaying the fixture, with
/// LLDP on and a probe interval of an hour (only a changed LLDP answer triggers a probe), gRPC
/// and metrics on 127.0.0.1 of that namespace.
fn start_fixture_agent(lab: &mut Lab, node: &str, grpc: u16, metrics: u16) {
    let child = Command::new("ip")
        .args(["netns", "exec", node])
        .arg(common::NODETOPO)
        .args([
            "agent",
            "--no-kube",
            "--node-name",
            "gpu-node-1",
            "--replay",
            &fixture("h100x8-ib/snapshot.json"),
            "--sysfs-root",
            &fixture("h100x8-roce/sysfs/sys"),
            "--grpc-listen",
            &format!("127.0.0.1:{grpc}"),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics}"),
            "--interval",
            "1h",
            "--lldp",
            "on",
            "--lldp-wait",
            "1s",
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the agent");
    lab.daemons.push(("agent".into(), child));
}

/// The agent publishes at once, and the RoCE leaf follows when the frames arrive: the agent
/// starts before the switch sends anything, with a probe interval of an hour, so only the probe
/// that an LLDP answer's change triggers can publish the leaf. When the switch stops, the last
/// answer is kept, marked expired.
#[test]
fn the_agent_publishes_the_roce_leaf_when_the_first_frames_arrive() {
    let Some(lldpd) = runnable() else { return };
    let mut lab = Lab::new(lldpd);
    let (leaf, storage, node, swps) = cable_fixture_node(&mut lab);
    start_fixture_agent(&mut lab, &node, 19750, 19751);
    let get = |lab: &Lab| -> Option<Value> {
        let (out, _) = lab.nodetopo(
            &node,
            &[],
            &[
                "query",
                "--endpoint",
                "127.0.0.1:19750",
                "-o",
                "json",
                "get",
            ],
        );
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("query -o json"))
    };
    let poll = |lab: &Lab, what: &str, want: &dyn Fn(&Value) -> bool| -> (Value, Instant) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = get(lab).filter(|v| want(v)) {
                return (v, Instant::now());
            }
            assert!(Instant::now() < deadline, "{what}: not within 20 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // The first probe, published after its 1 s wait: the rails heard nothing yet.
    let (first, _) = poll(&lab, "first publication", &|v| {
        v["revision"].as_u64() > Some(0)
    });
    assert!(first["network"]["roce"].get("leaf").is_none(), "{first}");
    let rail = first["nics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "mlx5_0")
        .unwrap();
    assert_eq!(
        rail["ports"][0]["neighbor"]["status"], "no-frame-yet",
        "{rail}"
    );
    // The switches start; the leaf follows, an hour before the next scheduled probe.
    let started = Instant::now();
    start_fixture_switches(&mut lab, &leaf, &storage, &swps);
    let label_leaf = LEAF_MAC.replace(':', "-");
    let (v, at) = poll(&lab, "the RoCE leaf", &|v| {
        v["network"]["roce"]["leaf"] == label_leaf.as_str()
    });
    assert!(at - started < Duration::from_secs(15), "{:?}", at - started);
    eprintln!(
        "the RoCE leaf was published {:?} after lldpd started",
        at - started
    );
    assert!(v["revision"].as_u64() > first["revision"].as_u64(), "{v}");
    let lldp = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "lldp")
        .unwrap();
    assert_eq!(lldp["ok"], true, "{lldp}");

    // The leaf stops (its shutdown LLDPDU expires every answer at once): the agent probes again,
    // the ports keep the last known leaf as `expired`, and so does the node.
    lab.stop("leaf", "TERM");
    let stopped = Instant::now();
    let (v, at) = poll(&lab, "expired ports", &|v| {
        v["nics"].as_array().is_some_and(|nics| {
            nics.iter()
                .any(|n| n["name"] == "mlx5_0" && n["ports"][0]["neighbor"]["status"] == "expired")
        })
    });
    let rail = v["nics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "mlx5_0")
        .unwrap();
    eprintln!(
        "the ports read expired {:?} after lldpd stopped",
        at - stopped
    );
    let nb = &rail["ports"][0]["neighbor"];
    assert_eq!(nb["leaf_id"], LEAF_MAC, "{nb}");
    assert_eq!(nb["leaf_port"], "swp1", "{nb}");
    assert!(
        nb["detail"]
            .as_str()
            .is_some_and(|d| d.contains("last known answer kept")),
        "{nb}"
    );
    assert_eq!(
        v["network"]["roce"]["leaf"],
        label_leaf.as_str(),
        "{}",
        v["network"]
    );
    let lldp = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "lldp")
        .unwrap();
    assert_eq!(lldp["ok"], false, "{lldp}");
    assert!(
        lldp["error"]
            .as_str()
            .is_some_and(|e| e.contains("expired")),
        "{lldp}"
    );
}

/// The probe under the chart's two users: its default one (65532, no capability), where `auto`
/// listens on nothing and reports no `lldp` source while `on` reports `no-access` on every active
/// rail; and its `agent.lldp.enabled` one (user 0 with every capability but NET_RAW dropped),
/// which publishes the leaf.
#[test]
fn the_charts_users_without_and_with_net_raw() {
    let Some(lldpd) = runnable() else { return };
    let mut lab = Lab::new(lldpd);
    let (leaf, storage, node, swps) = cable_fixture_node(&mut lab);
    start_fixture_switches(&mut lab, &leaf, &storage, &swps);
    lab.wait_lldpd("leaf", &leaf, |v| {
        interfaces_as_object(v)["lldp"]["interface"]["swp1"]["port"]["id"]["type"] == "ifname"
    });
    // The whole capture: the probe also reads `<root>/../proc`.
    let staged = lab.stage_for_other_users(&["h100x8-ib/snapshot.json", "h100x8-roce/sysfs"]);
    let (snapshot, sysfs) = (&staged[0], format!("{}/sys", staged[1]));
    let probe = |prefix: &[&str], mode: &str| -> Value {
        let (out, _) = lab.nodetopo(
            &node,
            prefix,
            &[
                "probe",
                "-o",
                "json",
                "--replay",
                snapshot,
                "--sysfs-root",
                &sysfs,
                "--lldp",
                mode,
                "--lldp-wait",
                "20s",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let lldp_source = |t: &Value| {
        t["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["source"] == "lldp")
            .cloned()
    };
    let rail_status = |t: &Value| {
        t["nics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "mlx5_0")
            .map(|n| n["ports"][0]["neighbor"]["status"].clone())
            .unwrap()
    };
    let chart_default = [
        "setpriv",
        "--reuid=65532",
        "--regid=65532",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    let t = probe(&chart_default, "auto");
    assert!(lldp_source(&t).is_none(), "{:?}", lldp_source(&t));
    assert_eq!(rail_status(&t), Value::Null);
    assert!(t["network"]["roce"].get("leaf").is_none());
    let t = probe(&chart_default, "on");
    assert_eq!(rail_status(&t), "no-access");
    let s = lldp_source(&t).unwrap();
    assert_eq!(s["ok"], false);
    assert!(s["error"].as_str().unwrap().contains("CAP_NET_RAW"), "{s}");
    // The chart's LLDP setup: user 0, only NET_RAW left.
    let chart_lldp = [
        "setpriv",
        "--reuid=0",
        "--regid=65532",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all,+net_raw",
    ];
    let t = probe(&chart_lldp, "on");
    assert_eq!(rail_status(&t), "ok");
    assert_eq!(
        t["network"]["roce"]["leaf"],
        LEAF_MAC.replace(':', "-").as_str()
    );
}

/// A switch whose identity changes on every frame (here: its chassis ID, every second, on all
/// eight rails) does not make the agent probe on every frame: the LLDP-triggered probes back
/// off (1 s, 2 s, 4 s, ...) while the answers keep changing. Before the backoff, each change
/// was probed 1 s after it, every 1-2 s.
#[test]
fn a_neighbour_that_changes_on_every_frame_is_probed_less_and_less_often() {
    let Some(lldpd) = runnable() else { return };
    let mut lab = Lab::new(lldpd);
    let (leaf, storage, node, swps) = cable_fixture_node(&mut lab);
    start_fixture_agent(&mut lab, &node, 19760, 19761);
    // Probes so far: the agent's own count of lldp probes (one per probe pass).
    let probes = || -> Option<u64> {
        let out = Command::new("ip")
            .args(["netns", "exec", &node, "curl", "-sf"])
            .arg("http://127.0.0.1:19761/metrics")
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        text.lines()
            .find(|l| l.starts_with("nodetopo_probe_duration_seconds_count{source=\"lldp\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while probes().is_none_or(|n| n < 1) {
        assert!(Instant::now() < deadline, "no first probe within 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    start_fixture_switches(&mut lab, &leaf, &storage, &swps);
    // The first frames are one change; let their probe happen.
    std::thread::sleep(Duration::from_secs(3));
    let before = probes().expect("metrics");
    let flap = Duration::from_secs(20);
    let started = Instant::now();
    let mut changes = 0;
    while started.elapsed() < flap {
        changes += 1;
        lab.configure(
            "leaf",
            &leaf,
            &[
                "configure",
                "system",
                "chassisid",
                &format!("flap-{changes}"),
            ],
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let during = probes().expect("metrics") - before;
    eprintln!("{changes} chassis IDs in {flap:?}: {during} LLDP-triggered probes");
    // Paced: waits of 1, 2, 4 and 8 s (plus a frame each) fit in 20 s, so at most 5 probes;
    // unpaced, one every 1-2 s. At least one: the changes are still followed.
    assert!(
        (1..=6).contains(&during),
        "{during} probes for {changes} changes in {flap:?}"
    );
}
