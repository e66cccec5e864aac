//! Whole-binary tests of `nodetopo manifests topology`: every scheduler's object parses as YAML
//! with the expected kind, and bad options fail with a message naming the problem.

use std::process::Command;

use serde_json::Value;

fn nodetopo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nodetopo"))
        .args(args)
        .output()
        .expect("run nodetopo")
}

#[test]
fn every_scheduler_gets_its_object() {
    for (scheduler, kind) in [
        ("kueue", "Topology"),
        ("kai", "Topology"),
        ("grove", "ClusterTopologyBinding"),
        ("volcano", "ConfigMap"),
    ] {
        let out = nodetopo(&[
            "manifests",
            "topology",
            "--for",
            scheduler,
            "--block-label",
            "network.example.com/leaf",
        ]);
        assert!(out.status.success(), "{scheduler}: {out:?}");
        let v: Value = serde_yaml_ng::from_slice(&out.stdout).expect("YAML");
        assert_eq!(v["kind"], kind, "{scheduler}");
        let json = nodetopo(&["manifests", "topology", "--for", scheduler, "-o", "json"]);
        let j: Value = serde_json::from_slice(&json.stdout).expect("JSON");
        assert_eq!(j["kind"], kind);
    }
}

#[test]
fn custom_prefix_and_name() {
    let out = nodetopo(&[
        "manifests",
        "topology",
        "--for",
        "kueue",
        "--label-prefix",
        "topo.example.com",
        "--name",
        "gb200",
        "-o",
        "json",
    ]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metadata"]["name"], "gb200");
    assert_eq!(
        v["spec"]["levels"][0]["nodeLabel"],
        "topo.example.com/nvlink.cluster"
    );
}

#[test]
fn bad_options_fail_clearly() {
    let out = nodetopo(&[
        "manifests",
        "topology",
        "--for",
        "kai",
        "--block-label",
        "not a label",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid label key"), "{err}");
    let out = nodetopo(&["manifests", "topology", "--for", "slurm"]);
    assert!(!out.status.success());
    let out = nodetopo(&[
        "manifests",
        "topology",
        "--for",
        "kai",
        "--kai-topology",
        "nodetopo",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only to Grove"), "{err}");
    let out = nodetopo(&[
        "manifests",
        "topology",
        "--for",
        "volcano",
        "--name",
        "a-rather-long-name",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Volcano skips"), "{err}");
}

#[test]
fn grove_binding_names_the_kai_topology() {
    let out = nodetopo(&["manifests", "topology", "--for", "grove", "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metadata"]["name"], "nodetopo-grove");
    assert!(v["spec"].get("schedulerTopologyBindings").is_none());
    let out = nodetopo(&[
        "manifests",
        "topology",
        "--for",
        "grove",
        "--kai-topology",
        "nodetopo",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["spec"]["schedulerTopologyBindings"][0]["topologyReference"],
        "nodetopo"
    );
}
