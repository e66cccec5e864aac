//! The SMP prober against the ibsim InfiniBand simulator (the `umad` feature).
//!
//! For each topology file in `tests/fixtures/ibsim/`: `ibsim` simulates the fabric, `opensm`
//! (under `libumad2sim.so`) brings the ports to ACTIVE, and the real `nodetopo probe -o json
//! --ib-smp only` runs as every simulated host (`SIM_HOST`). Each host's leaf, su and block are
//! checked against what the file says (parsed here), and every port's leaf and leaf port
//! against `ibnetdiscover` run under the simulator on the same fabric. So is each port's rail
//! (the leaf it is cabled to) and whether the host is rail-optimised (every port on a leaf of its
//! own), also with the rails named by a `--fabric-names` file. The SMPs each side sent
//! are counted from ibsim's own log, and the times measured, for BENCHMARKS.md.
//!
//! Needs Debian's `ibsim-utils`, `libumad2sim0`, `infiniband-diags` and `opensm`; without them
//! the tests are skipped as `common::require` says: they fail under `CI` or
//! `NODETOPO_REQUIRE_IBSIM=1` (`.ci/run` sets it).
#![cfg(feature = "umad")]

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nodetopo::labels::{Key, syntax::short_hash};
use serde_json::Value;

mod common;

/// One node of a topology file.
#[derive(Debug, Clone)]
struct Node {
    switch: bool,
    guid: u64,
    ports: u8,
    /// Port to (peer name, peer port).
    links: BTreeMap<u8, (String, u8)>,
}

/// A parsed topology file.
#[derive(Debug)]
struct Net {
    nodes: BTreeMap<String, Node>,
    /// ibsim console commands to send once the fabric runs.
    console: Vec<String>,
    /// Console commands to send once every host's ports are ACTIVE.
    after_sm: Vec<String>,
    /// Switches that drop every NodeInfo (`Error "<name>" 100 17`, after the SM).
    silent: BTreeSet<String>,
}

fn quoted(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start().strip_prefix('"')?;
    let end = s.find('"')?;
    Some((&s[..end], &s[end + 1..]))
}

fn bracketed(s: &str) -> Option<(u8, &str)> {
    let s = s.trim_start().strip_prefix('[')?;
    let end = s.find(']')?;
    Some((s[..end].parse().ok()?, &s[end + 1..]))
}

impl Net {
    fn parse(text: &str) -> Net {
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        let mut console = Vec::new();
        let mut after_sm = Vec::new();
        let mut guid = None;
        let mut current: Option<String> = None;
        for line in text.lines() {
            let line = line.trim_end();
            if let Some(cmd) = line.strip_prefix("# console:") {
                console.push(cmd.trim().to_string());
                continue;
            }
            if let Some(cmd) = line.strip_prefix("# console-after-sm:") {
                after_sm.push(cmd.trim().to_string());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((_, v)) = line.split_once("guid=") {
                guid = Some(u64::from_str_radix(v.trim().trim_start_matches("0x"), 16).unwrap());
                continue;
            }
            if line.starts_with("Switch") || line.starts_with("Hca") {
                let switch = line.starts_with("Switch");
                let rest = line.split_once(char::is_whitespace).unwrap().1.trim_start();
                let (ports, rest) = rest.split_once(char::is_whitespace).unwrap();
                let (name, _) = quoted(rest).unwrap();
                nodes.insert(
                    name.to_string(),
                    Node {
                        switch,
                        guid: guid.take().expect("every node has a guid line"),
                        ports: ports.parse().unwrap(),
                        links: BTreeMap::new(),
                    },
                );
                current = Some(name.to_string());
                continue;
            }
            let (port, rest) = bracketed(line).unwrap_or_else(|| panic!("bad line {line:?}"));
            let (peer, rest) = quoted(rest).unwrap();
            let (peer_port, _) = bracketed(rest).unwrap();
            let me = current.clone().expect("a port line inside a node");
            nodes
                .get_mut(&me)
                .unwrap()
                .links
                .insert(port, (peer.to_string(), peer_port));
        }
        let silent = after_sm
            .iter()
            .filter_map(|c| c.strip_prefix("Error"))
            .filter(|rest| rest.trim_end().ends_with(" 100 17"))
            .filter_map(|rest| quoted(rest).map(|(n, _)| n.to_string()))
            .collect();
        let mut net = Net {
            nodes,
            console,
            after_sm,
            silent,
        };
        for cmd in net.console.clone() {
            if let Some(rest) = cmd.strip_prefix("Unlink") {
                let (name, rest) = quoted(rest).unwrap();
                let (port, _) = bracketed(rest).unwrap();
                let (peer, peer_port) = net
                    .nodes
                    .get_mut(name)
                    .unwrap()
                    .links
                    .remove(&port)
                    .unwrap();
                net.nodes.get_mut(&peer).unwrap().links.remove(&peer_port);
            }
        }
        net
    }

    fn hosts(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter().filter(|(_, n)| !n.switch)
    }

    fn guid(&self, name: &str) -> String {
        format!("0x{:016x}", self.nodes[name].guid)
    }

    /// What a host should find: per port, the leaf GUID and leaf port; and leaf, su, block.
    fn expect(&self, host: &str) -> Expected {
        let h = &self.nodes[host];
        let mut ports = BTreeMap::new();
        let mut uplinks = BTreeSet::new();
        let mut timeouts = BTreeSet::new();
        for (&p, (peer, peer_port)) in &h.links {
            assert!(
                self.nodes[peer].switch,
                "the fixtures cable hosts to switches"
            );
            ports.insert(p, (self.guid(peer), peer_port.to_string()));
            if self.silent.contains(peer) {
                timeouts.insert(p);
            }
            for (far, _) in self.nodes[peer].links.values() {
                if self.nodes[far].switch && far != peer {
                    uplinks.insert(self.guid(far));
                    if self.silent.contains(far) {
                        timeouts.insert(p);
                    }
                }
            }
        }
        let leaves: BTreeSet<String> = ports.values().map(|(l, _)| l.clone()).collect();
        if !timeouts.is_empty() {
            return Expected {
                leaf: None,
                su: None,
                block: None,
                rail_optimised: None,
                ports,
                timeouts,
                num_ports: h.ports,
            };
        }
        Expected {
            timeouts,
            rail_optimised: (ports.len() >= 2).then_some(leaves.len() == ports.len()),
            leaf: (leaves.len() == 1).then(|| leaves.iter().next().unwrap().clone()),
            su: (!leaves.is_empty()).then(|| short_hash(leaves.iter().map(String::as_str))),
            block: (!uplinks.is_empty()).then(|| short_hash(uplinks.iter().map(String::as_str))),
            ports,
            num_ports: h.ports,
        }
    }
}

#[derive(Debug)]
struct Expected {
    leaf: Option<String>,
    su: Option<String>,
    block: Option<String>,
    /// Every cabled port on a leaf of its own; unknown with fewer than two, or a timeout.
    rail_optimised: Option<bool>,
    ports: BTreeMap<u8, (String, String)>,
    /// Ports whose queries the fabric drops.
    timeouts: BTreeSet<u8>,
    num_ports: u8,
}

/// The simulator's programs, or why they are missing.
struct Tools {
    ibsim: PathBuf,
    opensm: PathBuf,
    ibnetdiscover: PathBuf,
    preload: PathBuf,
}

fn tools() -> Option<Tools> {
    let found = (|| {
        let run = std::fs::read_to_string(common::which("ibsim-run")?).ok()?;
        let preload = run
            .lines()
            .find_map(|l| l.strip_prefix("sim_so="))
            .map(PathBuf::from)
            .filter(|p| p.is_file())?;
        Some(Tools {
            ibsim: common::which("ibsim")?,
            opensm: common::which("opensm")?,
            ibnetdiscover: common::which("ibnetdiscover")?,
            preload,
        })
    })();
    common::require(
        found,
        "ibsim, ibsim-run's libumad2sim.so, opensm and ibnetdiscover (Debian packages \
         ibsim-utils libumad2sim0 opensm infiniband-diags)",
        "the SMP prober against the InfiniBand simulator",
        "NODETOPO_REQUIRE_IBSIM",
    )
}

/// A running simulator with an SM, stopped on drop.
struct Sim {
    dir: tempfile::TempDir,
    sock: String,
    ibsim: Child,
    console: std::process::ChildStdin,
    opensm: Option<Child>,
    preload: PathBuf,
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(sm) = &mut self.opensm {
            let _ = sm.kill();
            let _ = sm.wait();
        }
        let _ = self.ibsim.kill();
        let _ = self.ibsim.wait();
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ibsim")
        .join(name)
}

impl Sim {
    fn start(t: &Tools, file: &str, net: &Net) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let sock = format!("nodetopo-{}-{}", std::process::id(), file.replace('.', "-"));
        let log = std::fs::File::create(dir.path().join("ibsim.log")).unwrap();
        let mut ibsim = Command::new(&t.ibsim)
            .args(["-s", "-v"])
            .arg(fixture(file))
            .env("IBSIM_SOCKNAME", &sock)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting ibsim");
        let mut stdin = ibsim.stdin.take().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        for cmd in &net.console {
            writeln!(stdin, "{cmd}").unwrap();
        }
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        Sim {
            dir,
            sock,
            ibsim,
            console: stdin,
            opensm: None,
            preload: t.preload.clone(),
        }
    }

    /// opensm as `host`, with the subnet prefix `prefix` (`0x` and 16 hex digits) when given,
    /// else its default.
    fn start_sm(&mut self, t: &Tools, host: &str, prefix: Option<&str>) {
        let d = self.dir.path();
        let out = std::fs::File::create(d.join("opensm.out")).unwrap();
        let mut sm = self.cmd(&t.opensm, host);
        if let Some(prefix) = prefix {
            let conf = d.join("opensm.conf");
            std::fs::write(&conf, format!("subnet_prefix {prefix}\n")).unwrap();
            sm.arg("-F").arg(conf);
        }
        self.opensm = Some(
            // `-s 0`: one sweep, no periodic ones, so that ibsim's log counts only the
            // probes' SMPs once the fabric is up.
            sm.args(["-s", "0"])
                .arg("-f")
                .arg(d.join("opensm.log"))
                .env("OSM_TMP_DIR", d)
                .env("OSM_CACHE_DIR", d)
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("starting opensm"),
        );
    }

    fn cmd(&self, program: &Path, host: &str) -> Command {
        let mut c = Command::new(program);
        c.env("IBSIM_SOCKNAME", &self.sock)
            .env("SIM_HOST", host)
            .env("LD_PRELOAD", &self.preload)
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path());
        c
    }

    /// SMPs the simulator has answered so far.
    fn answered(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("ibsim.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("replying"))
            .count()
    }

    /// Runs `cmd` to completion within 60 s; its stdout, stderr and wall time.
    fn run(&self, mut cmd: Command) -> (String, String, Duration) {
        let start = Instant::now();
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let watchdog = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // The process we spawned, by its id.
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            true
        });
        let out = child.wait_with_output().unwrap();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(!watchdog.join().unwrap(), "{cmd:?} hung for 60 s");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            start.elapsed(),
        )
    }

    /// `nodetopo probe -o json --ib-smp only` as `host`: the topology, the SMPs the simulator
    /// answered for it, the queries the probe says it sent and its wall time.
    fn probe(&self, host: &str) -> Probe {
        let before = self.answered();
        let mut c = self.cmd(Path::new(common::NODETOPO), host);
        c.args([
            "-v",
            "--log-format",
            "json",
            "probe",
            "-o",
            "json",
            "--ib-smp",
            "only",
            "--sysfs-root",
        ])
        .arg(self.dir.path().join("no-sysfs"));
        let (out, err, wall) = self.run(c);
        let topo: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("probe as {host}: {e}\nstdout: {out}\nstderr: {err}"));
        let mut sent = None;
        let mut smp_time = Duration::ZERO;
        for l in err.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(l)
                && v["fields"]["message"] == "ib-smp: leaves looked for"
            {
                let f = &v["fields"];
                sent = Some(f["queries"].as_u64().unwrap() + f["local_queries"].as_u64().unwrap());
                smp_time = Duration::from_micros(f["took_us"].as_u64().unwrap());
            }
        }
        // ibsim logs asynchronously; give it a moment to catch up.
        std::thread::sleep(Duration::from_millis(100));
        Probe {
            topo,
            answered: self.answered() - before,
            sent: sent.unwrap_or(0),
            smp_time,
            wall,
        }
    }

    /// Waits until opensm has brought `host`'s linked ports to ACTIVE.
    fn wait_active(&self, host: &str, linked: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p = self.probe(host);
            let active = ports(&p.topo)
                .iter()
                .filter(|p| p["state"] == "active")
                .count();
            if active >= linked {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "opensm never brought {host} up: {}",
                p.topo
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

struct Probe {
    topo: Value,
    answered: usize,
    sent: u64,
    /// The probe's own time for the leaf queries (the `ib-smp` pass).
    smp_time: Duration,
    wall: Duration,
}

fn ports(t: &Value) -> Vec<Value> {
    t["nics"]
        .as_array()
        .map(|n| {
            n.iter()
                .flat_map(|n| n["ports"].as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// Each port's rail from `network.infiniband.rails`, by port number (every host here has one
/// adapter).
fn port_rails(t: &Value) -> BTreeMap<u8, String> {
    let rails = t["network"]["infiniband"]["rails"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: BTreeSet<&str> = rails.iter().filter_map(|r| r["nic"].as_str()).collect();
    assert!(names.len() <= 1, "one adapter per host: {t}");
    rails
        .iter()
        .map(|r| {
            (
                u8::try_from(r["port"].as_u64().unwrap()).unwrap(),
                r["rail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Where every host port cabled to a leaf has the same port number k (a rail-optimised file),
/// names that leaf `rail-k` in a `--fabric-names` file's `rails:` and checks that every host's
/// port k is then on `rail-k`, across scalable units, with the leaf label left to `names:`.
fn named_rails(sim: &Sim, net: &Net) {
    if net
        .hosts()
        .any(|(h, _)| net.expect(h).rail_optimised != Some(true))
    {
        return;
    }
    let mut rail_of_leaf: BTreeMap<&str, BTreeSet<u8>> = BTreeMap::new();
    for (_, h) in net.hosts() {
        for (&p, (leaf, _)) in &h.links {
            rail_of_leaf.entry(leaf.as_str()).or_default().insert(p);
        }
    }
    if rail_of_leaf.values().any(|ports| ports.len() != 1) {
        return;
    }
    let mut names = String::from("rails:\n");
    for (leaf, ports) in &rail_of_leaf {
        let k = ports.iter().next().unwrap();
        names.push_str(&format!("  \"{}\": rail-{k}\n", net.guid(leaf)));
    }
    let file = sim.dir.path().join("names.yaml");
    std::fs::write(&file, &names).unwrap();
    for (host, h) in net.hosts() {
        let mut c = sim.cmd(Path::new(common::NODETOPO), host);
        c.args(["probe", "-o", "json", "--ib-smp", "only", "--fabric-names"])
            .arg(&file)
            .arg("--sysfs-root")
            .arg(sim.dir.path().join("no-sysfs"));
        let (out, err, _) = sim.run(c);
        let t: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {err}"));
        let want: BTreeMap<u8, String> =
            h.links.keys().map(|k| (*k, format!("rail-{k}"))).collect();
        assert_eq!(port_rails(&t), want, "{host} named rails ({names}): {t}");
        assert_eq!(t["network"]["infiniband"]["rail_optimised"], true, "{host}");
    }
}

fn opt(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// ibnetdiscover's view: (CA GUID, port) to (switch GUID, switch port).
fn ibnetdiscover_links(text: &str) -> BTreeMap<(String, u8), (String, String)> {
    let mut out = BTreeMap::new();
    let mut ca: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("Ca") || line.starts_with("Switch") {
            // `Ca	2 "H-0000000000c00010"		# "Hca1"`
            ca = line
                .starts_with("Ca")
                .then(|| line.find('"').and_then(|i| quoted(&line[i..])))
                .flatten()
                .map(|(id, _)| format!("0x{}", id.trim_start_matches("H-").to_ascii_lowercase()));
            continue;
        }
        // `[1](c00011) 	"S-0000000000b00001"[1]		# ...`
        let (Some(c), Some((port, rest))) = (&ca, bracketed(line)) else {
            continue;
        };
        let Some(q) = rest.find('"') else { continue };
        if let Some((peer, rest)) = quoted(&rest[q..])
            && let Some((peer_port, _)) = bracketed(rest)
            && let Some(sw) = peer.strip_prefix("S-")
        {
            out.insert(
                (c.clone(), port),
                (
                    format!("0x{}", sw.to_ascii_lowercase()),
                    peer_port.to_string(),
                ),
            );
        }
    }
    out
}

/// The whole check of one topology file, with the label lists of `lists` (host, list name),
/// under a subnet manager with the subnet prefix `prefix` (else opensm's default).
fn check(file: &str, sm_host: &str, prefix: Option<&str>, lists: &[(&str, &str)]) {
    let Some(t) = tools() else { return };
    let net = Net::parse(&std::fs::read_to_string(fixture(file)).unwrap());
    let mut sim = Sim::start(&t, file, &net);

    // Before any subnet manager: every port is INIT, reported as such, and nothing is labelled.
    let p = sim.probe(sm_host);
    let ps = ports(&p.topo);
    assert!(!ps.is_empty(), "{}", p.topo);
    for port in &ps {
        if port["state"] == "init" {
            assert_eq!(port["neighbor"]["status"], "no-sm", "{port}");
        }
    }
    assert!(
        p.topo["network"]["infiniband"]["su"].is_null(),
        "{}",
        p.topo
    );

    sim.start_sm(&t, sm_host, prefix);
    sim.wait_active(sm_host, net.nodes[sm_host].links.len());
    for (host, node) in net.hosts() {
        sim.wait_active(host, node.links.len());
    }

    let disc_before = sim.answered();
    let mut disc = sim.cmd(&t.ibnetdiscover, sm_host);
    disc.arg("-g");
    let (disc_out, disc_err, disc_wall) = sim.run(disc);
    std::thread::sleep(Duration::from_millis(100));
    let disc_smps = sim.answered() - disc_before;
    let discovered = ibnetdiscover_links(&disc_out);
    assert!(
        !discovered.is_empty(),
        "ibnetdiscover: {disc_out}\n{disc_err}"
    );
    for cmd in &net.after_sm {
        writeln!(sim.console, "{cmd}").unwrap();
        sim.console.flush().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));

    let mut per_node = Vec::new();
    for (host, node) in net.hosts() {
        let want = net.expect(host);
        let p = sim.probe(host);
        let ib = &p.topo["network"]["infiniband"];
        assert_eq!(opt(&ib["leaf"]), want.leaf, "{host} leaf: {}", p.topo);
        assert_eq!(opt(&ib["su"]), want.su, "{host} su: {}", p.topo);
        assert_eq!(opt(&ib["block"]), want.block, "{host} block: {}", p.topo);
        assert_eq!(
            ib["rail_optimised"].as_bool(),
            want.rail_optimised,
            "{host} rail-optimised: {}",
            p.topo
        );
        // Each port's rail is the leaf the file cables it to; a port that timed out or is not
        // cabled has none.
        let rails = port_rails(&p.topo);
        let want_rails: BTreeMap<u8, String> = want
            .ports
            .iter()
            .filter(|(n, _)| !want.timeouts.contains(n))
            .map(|(n, (leaf, _))| (*n, leaf.clone()))
            .collect();
        assert_eq!(rails, want_rails, "{host} rails: {}", p.topo);
        let ps = ports(&p.topo);
        assert_eq!(ps.len(), usize::from(want.num_ports), "{host}: {}", p.topo);
        for port in &ps {
            let n = u8::try_from(port["port"].as_u64().unwrap()).unwrap();
            let nb = &port["neighbor"];
            match want.ports.get(&n) {
                Some(_) if want.timeouts.contains(&n) => {
                    assert_eq!(nb["status"], "timeout", "{host} port {n}: {port}");
                    let ib = p.topo["sources"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|s| s["source"] == "ib-smp")
                        .unwrap();
                    assert_eq!(ib["ok"], false, "{ib}");
                    // Bounded: 3 attempts of 200 ms per query, a few queries at most.
                    assert!(p.wall < Duration::from_secs(10), "{host}: {:?}", p.wall);
                }
                Some((leaf, leaf_port)) => {
                    assert_eq!(nb["status"], "ok", "{host} port {n}: {port}");
                    assert_eq!(nb["leaf_id"], leaf.as_str(), "{host} port {n}");
                    assert_eq!(nb["leaf_port"], leaf_port.as_str(), "{host} port {n}");
                    // The same cable as the central sweep saw.
                    let ca = format!("0x{:016x}", node.guid);
                    assert_eq!(
                        discovered.get(&(ca, n)),
                        Some(&(leaf.clone(), leaf_port.clone())),
                        "{host} port {n}: ibnetdiscover disagrees"
                    );
                }
                None => assert_eq!(nb["status"], "not-active", "{host} port {n}: {port}"),
            }
        }
        let labels = {
            let mut c = sim.cmd(Path::new(common::NODETOPO), host);
            c.args(["probe", "-o", "labels", "--ib-smp", "only", "--sysfs-root"])
                .arg(sim.dir.path().join("no-sysfs"));
            sim.run(c).0
        };
        let has = |k: Key, v: &Option<String>| {
            let key = k.under(nodetopo::labels::DEFAULT_PREFIX);
            match v {
                Some(v) => labels.contains(&format!("{key}={v}\n")),
                None => !labels.contains(&format!("{key}=")),
            }
        };
        assert!(has(Key::IbLeaf, &want.leaf), "{host}: {labels}");
        assert!(has(Key::IbSu, &want.su), "{host}: {labels}");
        assert!(has(Key::IbBlock, &want.block), "{host}: {labels}");
        assert!(
            has(
                Key::IbRailOptimised,
                &want.rail_optimised.map(|b| b.to_string())
            ),
            "{host}: {labels}"
        );
        // A configured subnet prefix is the label; the default (opensm's) names no subnet: none.
        let subnet = prefix.map(|p| {
            let hex = p.trim_start_matches("0x");
            format!(
                "{}-{}-{}-{}",
                &hex[..4],
                &hex[4..8],
                &hex[8..12],
                &hex[12..]
            )
        });
        assert!(has(Key::RdmaIbSubnet, &subnet), "{host}: {labels}");
        if let Some((_, list)) = lists.iter().find(|(h, _)| h == host) {
            common::label_list_contract(
                list,
                "nodetopo probe -o labels --ib-smp only, under ibsim",
                &labels,
            );
        }
        per_node.push((host.clone(), p.sent, p.answered, p.wall, p.smp_time));
    }
    let hosts = per_node.len();
    let sent: u64 = per_node.iter().map(|x| x.1).sum();
    let answered: usize = per_node.iter().map(|x| x.2).sum();
    let wall: Duration = per_node.iter().map(|x| x.3).sum();
    let smp: Duration = per_node.iter().map(|x| x.4).sum();
    let report = format!(
        "{file}: {} switches, {hosts} hosts | per node: {:.1} SMPs sent, {:.1} answered by ibsim, \
         {:.2} ms in the leaf queries, {:.0} ms per probe process (max {} SMPs) | ibnetdiscover \
         from {sm_host}: {disc_smps} SMPs answered, {} ms\n",
        net.nodes.len() - hosts,
        sent as f64 / hosts as f64,
        answered as f64 / hosts as f64,
        smp.as_secs_f64() * 1000.0 / hosts as f64,
        wall.as_secs_f64() * 1000.0 / hosts as f64,
        per_node.iter().map(|x| x.1).max().unwrap_or(0),
        disc_wall.as_millis(),
    );
    eprint!("{report}");
    named_rails(&sim, &net);
    if let Some(path) = std::env::var_os("NODETOPO_IBSIM_REPORT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(report.as_bytes()).unwrap();
    }
    drop(sim);
}

#[test]
fn fat_tree() {
    check(
        "fat-tree.net",
        "Hca8",
        None,
        &[
            ("Hca1", "ibsim-fat-tree-hca1"),
            ("Hca5", "ibsim-fat-tree-hca5"),
        ],
    );
}

#[test]
fn rail_optimised() {
    // A subnet manager with a prefix of its own: the one fabric here whose rdma.ib-subnet is set.
    check(
        "rail-optimised.net",
        "Hca8",
        Some("0xfe80000000000007"),
        &[("Hca1", "ibsim-rail-optimised-hca1")],
    );
}

#[test]
fn broken() {
    check("broken.net", "Hca4", None, &[("Hca2", "ibsim-broken-hca2")]);
}

#[test]
fn fixtures_parse() {
    let net = Net::parse(&std::fs::read_to_string(fixture("fat-tree.net")).unwrap());
    assert_eq!(net.nodes.values().filter(|n| n.switch).count(), 6);
    assert_eq!(net.hosts().count(), 8);
    assert!(net.expect("Hca5").leaf.is_none());
    assert_eq!(net.expect("Hca5").su, net.expect("Hca6").su);
    let rail = Net::parse(&std::fs::read_to_string(fixture("rail-optimised.net")).unwrap());
    for (h, _) in rail.hosts() {
        assert!(
            rail.expect(h).leaf.is_none(),
            "{h}: every port on its own leaf"
        );
        assert_eq!(rail.expect(h).rail_optimised, Some(true), "{h}");
    }
    // The fat tree: hosts with both ports on one leaf are not rail-optimised; a host with one
    // port tells nothing; Hca5 and Hca6 are cabled like rail-optimised hosts (a port on each of
    // Leaf3 and Leaf4), which is all a node can see of its own.
    let rail_opt = |h: &str| net.expect(h).rail_optimised;
    assert_eq!(rail_opt("Hca1"), Some(false));
    assert_eq!(rail_opt("Hca3"), Some(false));
    assert_eq!(rail_opt("Hca2"), None);
    assert_eq!(rail_opt("Hca5"), Some(true));
    assert_ne!(rail.expect("Hca1").block, rail.expect("Hca5").block);
    let broken = Net::parse(&std::fs::read_to_string(fixture("broken.net")).unwrap());
    assert_eq!(broken.console, ["Unlink \"Hca2\"[2]"]);
    assert!(broken.silent.contains("Leaf3"));
    assert_eq!(broken.expect("Hca5").timeouts.len(), 1);
    assert!(broken.expect("Hca5").su.is_none());
    assert!(broken.expect("Hca4").timeouts.is_empty());
    assert_eq!(broken.expect("Hca2").ports.len(), 1);
}
