//! Helpers shared by the whole-binary tests.
//!
//! # Running the binary
//!
//! [`nodetopo()`] is the one way a test runs the built `nodetopo`: a small builder over
//! [`std::process::Command`] whose [`NodetopoCmd::stdout_ok`] and [`NodetopoCmd::stderr_err`]
//! assert the exit status and put the command line and stderr in the failure message. Where
//! the binary must run under another program (`ip netns exec`, a simulator's environment),
//! [`NODETOPO`] is its path.
//!
//! # Missing tools
//!
//! Some tests need a program the machine may lack (Graphviz `dot`, Chromium, lldpd, the ibsim
//! simulator) or root. They ask [`require_tool`] (or [`require`], for what is not one program
//! on the PATH), which decides the same way everywhere:
//! - present: the test runs;
//! - absent on a developer machine: it prints `skipped: <why> needs <what>` and the test
//!   returns early, passing;
//! - absent where it is required: the test fails with that message. It is required under `CI`
//!   (set and not empty) and where the variable the test names, `NODETOPO_REQUIRE_<AREA>`, is
//!   `1`. `.ci/run` sets every one of those variables for the tools it installs, so there a
//!   missing tool is a failure, never a silent pass.
//!
//! The variables: `NODETOPO_REQUIRE_GRAPHVIZ` (tests/pictures.rs), `NODETOPO_REQUIRE_CHROMIUM`
//! (tests/cluster_page.rs), `NODETOPO_REQUIRE_IBSIM` (tests/ibsim.rs), `NODETOPO_REQUIRE_NETNS`
//! (tests/lldp_netns.rs) and, with the same rule in its own harness, `NODETOPO_REQUIRE_NODE`
//! (tests/e2e/node.rs).
#![allow(dead_code)]

use std::{
    ffi::OsStr,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
};

/// The nodetopo binary under test.
pub const NODETOPO: &str = env!("CARGO_BIN_EXE_nodetopo");

/// A command line for the binary under test; see [`nodetopo()`].
pub struct NodetopoCmd {
    cmd: Command,
}

/// `nodetopo` with no arguments yet, its environment inherited.
pub fn nodetopo() -> NodetopoCmd {
    NodetopoCmd {
        cmd: Command::new(NODETOPO),
    }
}

impl NodetopoCmd {
    /// Adds one argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(key, value);
        self
    }

    /// Removes an environment variable the test process has.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env_remove(key);
        self
    }

    /// Where stdin comes from (inherited, or empty for [`Self::output`], by default).
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.cmd.stdin(cfg);
        self
    }

    /// Where stdout goes when spawned (captured by [`Self::output`]).
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.cmd.stdout(cfg);
        self
    }

    /// Where stderr goes when spawned (captured by [`Self::output`]).
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.cmd.stderr(cfg);
        self
    }

    /// Runs it to completion, capturing stdout and stderr; panics only when it cannot start.
    pub fn output(&mut self) -> Output {
        self.cmd
            .output()
            .unwrap_or_else(|e| panic!("running {:?}: {e}", self.cmd))
    }

    /// Runs it, asserts that it succeeded (the command and its stderr in the message otherwise)
    /// and returns the whole output.
    pub fn output_ok(&mut self) -> Output {
        let out = self.output();
        assert!(
            out.status.success(),
            "{:?} failed ({}):\n{}",
            self.cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs it, asserts that it succeeded and returns its stdout, which must be UTF-8.
    pub fn stdout_ok(&mut self) -> String {
        let out = self.output_ok();
        String::from_utf8(out.stdout)
            .unwrap_or_else(|e| panic!("{:?}: stdout is not UTF-8: {e}", self.cmd))
    }

    /// Runs it, asserts that it failed (its stdout in the message otherwise) and returns its
    /// stderr.
    pub fn stderr_err(&mut self) -> String {
        let out = self.output();
        assert!(
            !out.status.success(),
            "{:?} was accepted:\n{}",
            self.cmd,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Starts it (a long-running agent or extender) and returns the child; the caller stops it.
    pub fn spawn(&mut self) -> Child {
        self.cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.cmd))
    }
}

/// Where program `name` is: the first match on the PATH, then in the system directories a
/// non-root PATH may leave out (lldpd, opensm and ibnetdiscover live in `/usr/sbin`).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The missing-tool policy (see the module doc) for program `tool` of the Debian package
/// `package`, which `why` (what the test checks, e.g. "the node pictures") needs: its path
/// where present; where absent, `None` after saying the test is skipped, or a panic under `CI`
/// or with `require_var=1`.
#[track_caller]
pub fn require_tool(tool: &str, package: &str, why: &str, require_var: &str) -> Option<PathBuf> {
    require(
        which(tool),
        &format!("`{tool}` (Debian package {package})"),
        why,
        require_var,
    )
}

/// The missing-tool policy for anything a test needs, `found` where it is here: `found` itself
/// when `Some`; when `None`, prints `skipped: <why> needs <what>` and returns `None`, or panics
/// with that message under `CI` (set and not empty) or where `require_var` is `1`.
#[track_caller]
pub fn require<T>(found: Option<T>, what: &str, why: &str, require_var: &str) -> Option<T> {
    if found.is_some() {
        return found;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{why} needs {what}, and CI must have it (CI is set)");
    }
    if std::env::var_os(require_var).is_some_and(|v| v == "1") {
        panic!("{why} needs {what}, and {require_var}=1 requires it");
    }
    eprintln!("skipped: {why} needs {what} (set {require_var}=1 to make this a failure)");
    None
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Parses `nvidia-smi -q -x` output (it carries a DTD declaration).
pub fn nvidia_smi_doc(xml: &str) -> roxmltree::Document<'_> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(xml, opts).expect("nvidia-smi -q -x is XML")
}

/// The trimmed text of `node`'s child element `tag`, or "" when absent.
pub fn xml_text(node: roxmltree::Node, tag: &str) -> String {
    node.children()
        .find(|c| c.has_tag_name(tag))
        .and_then(|c| c.text())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Node `i` of the synthetic GB200 fleet the scheduling and webhook benchmarks create.
pub fn fleet_node_name(i: usize) -> String {
    format!("gb-{i:05}")
}

/// The agent's labels of fleet node `i`: racks of 18 trays in two cliques of 9, one NVLink
/// cluster per rack, four racks per leaf.
pub fn fleet_node_labels(i: usize) -> serde_json::Value {
    let rack = i / 18;
    let clique = (i % 18) / 9 + 1;
    let cluster = format!("{rack:08x}-0000-4000-8000-000000000000");
    serde_json::json!({
        "nodetopo.io/gpu.count": "4",
        "nodetopo.io/gpu.product": "NVIDIA-GB200",
        "nodetopo.io/nvlink.fabric": "ready",
        "nodetopo.io/nvlink.cluster": cluster,
        "nodetopo.io/nvlink.domain": format!("{cluster}.{clique}"),
        "nodetopo.io/rdma.link-layer": "infiniband",
        "nodetopo.io/rdma.ib-subnet": "fe80-0000-0000-0000",
        "network.example.com/leaf": format!("leaf-{}", rack / 4),
    })
}

/// Compares `labels` (one `key=value` a line) with the checked-in list
/// `tests/fixtures/labels/<list>.txt`, the label contract for keys only a live peer gives, or
/// writes the list, `header` as its comment line, with `NODETOPO_BLESS=1`.
pub fn label_list_contract(list: &str, header: &str, labels: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/labels")
        .join(format!("{list}.txt"));
    let body: String = labels
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    if std::env::var_os("NODETOPO_BLESS").is_some() {
        std::fs::write(&path, format!("# {header}\n{body}")).unwrap();
        return;
    }
    let want: String = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless to create)", path.display()))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(body, want, "{list}: the label set changed");
}
