//! The pictures as a person sees them: `probe -o dot` rendered by real Graphviz.
//!
//! Needs Graphviz's `dot` (Debian `graphviz`; CI installs it). Without it the rendering checks
//! are skipped as `common::require_tool` says: they fail under `CI` or
//! `NODETOPO_REQUIRE_GRAPHVIZ=1` (`.ci/run` sets it). The PNGs are left under the test target
//! directory to look at.

mod common;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn probe_dot(node: &str, snapshot: &str, sysfs: &str) -> String {
    common::nodetopo()
        .arg("probe")
        .arg("--replay")
        .arg(fixture(snapshot))
        .arg("--sysfs-root")
        .arg(fixture(sysfs))
        .args(["-o", "dot"])
        .env_remove("NODETOPO_SYSFS_ROOT")
        .env("NODE_NAME", node)
        .stdout_ok()
}

/// Runs Graphviz's `dot` (found at `program`) as `dot -T<format>` on `src`.
fn graphviz(program: &Path, src: &str, format: &str) -> Vec<u8> {
    let mut child = Command::new(program)
        .arg(format!("-T{format}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(src.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dot -T{format} failed: {}\n{src}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Width and height in inches from `dot -Tplain` (`graph <scale> <width> <height>`).
fn size(plain: &str) -> (f64, f64) {
    let first: Vec<&str> = plain.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(first[0], "graph", "{plain}");
    (first[2].parse().unwrap(), first[3].parse().unwrap())
}

const CASES: &[(&str, &str, &str)] = &[
    (
        "h100x8-ib",
        "h100x8-ib/snapshot.json",
        "h100x8-ib/sysfs/sys",
    ),
    (
        "hgx-shared-nic",
        "hgx-shared-nic/snapshot.json",
        "hgx-shared-nic/sysfs/sys",
    ),
    (
        "hgx-sriov",
        "hgx-sriov/snapshot.json",
        "hgx-sriov/sysfs/sys",
    ),
    (
        "gb200-tray",
        "gb200-tray/snapshot.json",
        "gb200-tray/sysfs/sys",
    ),
];

#[test]
fn node_picture_draws_only_rail_edges_and_escapes_once() {
    let dot = probe_dot(
        "h100x8-ib",
        "h100x8-ib/snapshot.json",
        "h100x8-ib/sysfs/sys",
    );
    let rail_edges = dot
        .lines()
        .filter(|l| l.contains("-- \"nic:") && !l.contains("invis"))
        .count();
    assert_eq!(
        rail_edges, 8,
        "one rail edge per GPU, not the 80-edge matrix:\n{dot}"
    );
    assert!(!dot.contains("\\\\n"), "a label is escaped twice:\n{dot}");
    // Grouped by NUMA node, the storage NICs set apart.
    assert!(
        dot.contains("cluster_numa_0") && dot.contains("cluster_numa_1"),
        "{dot}"
    );
    let apart = &dot[dot
        .find("cluster_apart")
        .expect("a box for the storage NICs")..];
    let apart = &apart[..apart.find("\n  }").unwrap()];
    assert!(
        apart.contains("nic:mlx5_4") && apart.contains("nic:mlx5_5"),
        "{apart}"
    );
    assert!(!apart.contains("nic:mlx5_0"), "{apart}");
}

#[test]
fn node_pictures_render_with_graphviz_at_a_readable_aspect() {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pictures");
    std::fs::create_dir_all(&out_dir).unwrap();
    let Some(graphviz_dot) = common::require_tool(
        "dot",
        "graphviz",
        "rendering the node pictures",
        "NODETOPO_REQUIRE_GRAPHVIZ",
    ) else {
        return;
    };
    for (name, snapshot, sysfs) in CASES {
        let dot = probe_dot(name, snapshot, sysfs);
        let render = |format| graphviz(&graphviz_dot, &dot, format);
        let plain = String::from_utf8(render("plain")).unwrap();
        let (w, h) = size(&plain);
        let aspect = w / h;
        println!("{name}: {w:.1} x {h:.1} in, aspect {aspect:.2}");
        assert!(
            (0.25..=4.0).contains(&aspect),
            "{name}: {w} x {h} in is not readable (aspect {aspect:.2})"
        );
        // No node label shows a literal backslash-n.
        for l in plain.lines().filter(|l| l.starts_with("node ")) {
            assert!(!l.contains("\\\\n"), "{name}: {l}");
        }
        let svg = String::from_utf8(render("svg")).unwrap();
        assert!(!svg.contains("\\n"), "{name}: literal \\n in the SVG text");
        assert!(svg.contains(">GPU0<"), "{name}: GPU0 is drawn");
        let png = render("png");
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        let path = out_dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        println!("{name}: {}", path.display());
    }
}
