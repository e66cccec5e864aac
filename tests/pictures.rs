//! The pictures as a person sees them: `probe -o dot` rendered by real Graphviz.
//!
//! Needs Graphviz's `dot` on the PATH (Debian `graphviz`; CI installs it). Without it the
//! rendering checks print why they are skipped and pass. The PNGs are left under the test
//! target directory to look at.

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

/// Runs `dot -T<format>` on `src`; `None` when Graphviz is not installed.
fn graphviz(src: &str, format: &str) -> Option<Vec<u8>> {
    let mut child = match Command::new("dot")
        .arg(format!("-T{format}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("dot: {e}"),
    };
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
    Some(out.stdout)
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
    for (name, snapshot, sysfs) in CASES {
        let dot = probe_dot(name, snapshot, sysfs);
        let Some(plain) = graphviz(&dot, "plain") else {
            println!("SKIPPED: Graphviz `dot` is not installed (Debian: apt-get install graphviz)");
            return;
        };
        let plain = String::from_utf8(plain).unwrap();
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
        let svg = String::from_utf8(graphviz(&dot, "svg").unwrap()).unwrap();
        assert!(!svg.contains("\\n"), "{name}: literal \\n in the SVG text");
        assert!(svg.contains(">GPU0<"), "{name}: GPU0 is drawn");
        let png = graphviz(&dot, "png").unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        let path = out_dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        println!("{name}: {}", path.display());
    }
}
