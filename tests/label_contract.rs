//! The label contract (`docs/labels.md`): keys are only added, never renamed or removed.
//!
//! Every fixture node's label set (`nodetopo probe -o labels`) is compared with the list checked
//! in under `tests/fixtures/labels/<fixture>.txt`, and the table in `docs/labels.md` with the
//! `Key` vocabulary. After an intended change, rewrite the lists with
//! `NODETOPO_BLESS=1 cargo test --test label_contract` and review the diff: a line that
//! disappears is a key users lose.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use nodetopo::labels::Key;

/// `(list name, NVML snapshot, sysfs tree)`, relative to `tests/fixtures`.
const FIXTURES: &[(&str, &str, &str)] = &[
    (
        "h100x8-ib",
        "h100x8-ib/snapshot.json",
        "h100x8-ib/sysfs/sys",
    ),
    (
        "h100x8-roce",
        "h100x8-ib/snapshot.json",
        "h100x8-roce/sysfs/sys",
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
    ("h200x1", "h200x1/snapshot.json", "h200x1/sysfs/sys"),
    (
        "h200x4-hgx",
        "h200x4-hgx/snapshot.json",
        "h200x4-hgx/sysfs/sys",
    ),
    ("broken", "h200x4-hgx/snapshot.json", "broken/sysfs/sys"),
    (
        "gb200-numa",
        "gb200-numa/snapshot.json",
        "gb200-numa/sysfs/sys",
    ),
    (
        "cx8-data-direct",
        "cx8-data-direct/snapshot.json",
        "cx8-data-direct/sysfs/sys",
    ),
    ("gb200-tray-a1", "gb200/tray-a1.json", "no-sysfs"),
    (
        "gb200-tray-degraded",
        "gb200/tray-degraded.json",
        "no-sysfs",
    ),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn labels_of(snapshot: &str, sysfs: &str) -> BTreeMap<String, String> {
    let out = common::nodetopo()
        .arg("probe")
        .arg("--replay")
        .arg(fixtures().join(snapshot))
        .arg("--sysfs-root")
        .arg(fixtures().join(sysfs))
        .args(["-o", "labels"])
        .env_remove("NODETOPO_SYSFS_ROOT")
        .env("NODE_NAME", "contract-node")
        .stdout_ok();
    parse(&out)
}

fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("key=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn every_fixture_keeps_its_label_set() {
    let dir = fixtures().join("labels");
    let bless = std::env::var_os("NODETOPO_BLESS").is_some();
    let mut failures = Vec::new();
    for (name, snapshot, sysfs) in FIXTURES {
        let got = labels_of(snapshot, sysfs);
        let path = dir.join(format!("{name}.txt"));
        if bless {
            fs::create_dir_all(&dir).unwrap();
            let body: String = got.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            fs::write(
                &path,
                format!("# nodetopo probe -o labels: {snapshot} on {sysfs}\n{body}"),
            )
            .unwrap();
            continue;
        }
        let want = parse(
            &fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (bless to create)", path.display())),
        );
        let lost: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let added: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        let changed: Vec<String> = want
            .iter()
            .filter_map(|(k, v)| {
                let g = got.get(k)?;
                (g != v).then(|| format!("{k}: {v} -> {g}"))
            })
            .collect();
        if !lost.is_empty() || !added.is_empty() || !changed.is_empty() {
            failures.push(format!(
                "{name}: keys lost (breaks users' selectors) {lost:?}; keys added {added:?}; \
                 values changed {changed:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_lists_cover_every_key_and_no_other() {
    // Every key of the vocabulary appears on some fixture node, so a rename is always caught.
    // The lists include those of simulated fabric hosts (`ibsim-*.txt`, kept by tests/ibsim.rs)
    // and of a recorded node cabled to a real lldpd (`lldp-*.txt`, kept by tests/lldp_netns.rs).
    let dir = fixtures().join("labels");
    let mut seen = BTreeSet::new();
    let mut lists: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    lists.sort();
    for path in &lists {
        let text = fs::read_to_string(path).unwrap();
        for k in parse(&text).keys() {
            if let Some(n) = k.strip_prefix("nodetopo.io/") {
                seen.insert(n.to_string());
            }
        }
    }
    // Keys that only a live peer can give, whose fixture comes with that peer's test (none now:
    // `lldp-*.txt` is kept by tests/lldp_netns.rs).
    const PENDING: &[&str] = &[];
    let all: BTreeSet<String> = Key::all()
        .map(|k| k.name().to_string())
        .filter(|k| !PENDING.contains(&k.as_str()))
        .collect();
    let missing: Vec<&String> = all.difference(&seen).collect();
    let unknown: Vec<&String> = seen.difference(&all).collect();
    assert!(missing.is_empty(), "no fixture writes {missing:?}");
    assert!(unknown.is_empty(), "not in the vocabulary: {unknown:?}");
}

#[test]
fn docs_table_lists_exactly_the_vocabulary() {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/labels.md")).unwrap();
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `<p>/"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let all: BTreeSet<String> = Key::all().map(|k| k.name().to_string()).collect();
    assert_eq!(
        documented, all,
        "docs/labels.md's table and src/labels/keys.rs differ"
    );
    for k in Key::all() {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `<p>/{}`", k.name())))
            .unwrap();
        let level = row.trim_end_matches('|').rsplit('|').next().unwrap().trim();
        assert!(
            matches!(level, "stable" | "beta"),
            "{k}: stability {level:?}"
        );
    }
}
