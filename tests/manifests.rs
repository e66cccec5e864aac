//! Whole-binary tests of `nodetopo manifests topology`: every scheduler's object parses as YAML
//! with the expected kind, and bad options fail with a message naming the problem.

mod common;

use serde_json::Value;

/// `nodetopo manifests topology ARGS`.
fn topology(args: &[&str]) -> common::NodetopoCmd {
    let mut c = common::nodetopo();
    c.args(["manifests", "topology"]).args(args);
    c
}

#[test]
fn every_scheduler_gets_its_object() {
    for (scheduler, kind) in [
        ("kueue", "Topology"),
        ("kai", "Topology"),
        ("grove", "ClusterTopologyBinding"),
        ("volcano", "ConfigMap"),
    ] {
        let out = topology(&[
            "--for",
            scheduler,
            "--block-label",
            "network.example.com/leaf",
        ])
        .stdout_ok();
        let v: Value = serde_yaml_ng::from_str(&out).expect("YAML");
        assert_eq!(v["kind"], kind, "{scheduler}");
        let json = topology(&["--for", scheduler, "-o", "json"]).stdout_ok();
        let j: Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(j["kind"], kind);
    }
}

#[test]
fn custom_prefix_and_name() {
    let out = topology(&[
        "--for",
        "kueue",
        "--label-prefix",
        "topo.example.com",
        "--name",
        "gb200",
        "-o",
        "json",
    ])
    .stdout_ok();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["metadata"]["name"], "gb200");
    assert_eq!(
        v["spec"]["levels"][0]["nodeLabel"],
        "topo.example.com/nvlink.cluster"
    );
}

#[test]
fn bad_options_fail_clearly() {
    let err = topology(&["--for", "kai", "--block-label", "not a label"]).stderr_err();
    assert!(err.contains("invalid label key"), "{err}");
    topology(&["--for", "slurm"]).stderr_err();
    let err = topology(&["--for", "kai", "--kai-topology", "nodetopo"]).stderr_err();
    assert!(err.contains("only to Grove"), "{err}");
    let err = topology(&["--for", "volcano", "--name", "a-rather-long-name"]).stderr_err();
    assert!(err.contains("Volcano skips"), "{err}");
}

#[test]
fn grove_binding_names_the_kai_topology() {
    let out = topology(&["--for", "grove", "-o", "json"]).stdout_ok();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["metadata"]["name"], "nodetopo-grove");
    assert!(v["spec"].get("schedulerTopologyBindings").is_none());
    let out = topology(&["--for", "grove", "--kai-topology", "nodetopo", "-o", "json"]).stdout_ok();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["spec"]["schedulerTopologyBindings"][0]["topologyReference"],
        "nodetopo"
    );
}
