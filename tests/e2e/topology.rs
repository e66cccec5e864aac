//! `nodetopo manifests topology` output applied to a real API server: Kueue's Topology against
//! the CRD that Kueue releases (from its Go module), and Volcano's ConfigMap as it is. Applies use
//! kubectl's strict field validation, so a field the CRD does not know is refused, not pruned.
//!
//! KAI's and Grove's CRDs are not here: the Go module proxy serves neither
//! github.com/NVIDIA/KAI-scheduler nor github.com/ai-dynamo/grove/operator (403 for every
//! version), so their objects are checked only by field names in the Rust tests.

use std::process::Command;

use serde_json::Value;

use crate::harness::{self, ControlPlane, NODETOPO};

fn manifests(args: &[&str]) -> String {
    let out = Command::new(NODETOPO)
        .args(["manifests", "topology"])
        .args(args)
        .output()
        .expect("run nodetopo manifests");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

const APPLY: [&str; 6] = [
    "apply",
    "--server-side",
    "--validate=strict",
    "-o",
    "json",
    "-f",
];

/// Applies `yaml` with strict field validation and returns the object as the server stored it.
fn apply(cp: &ControlPlane, yaml: &str) -> Value {
    let out = cp.kubectl_input(&[&APPLY[..], &["-"]].concat(), yaml);
    assert!(
        out.status.success(),
        "the server refused:\n{yaml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn topology_objects_are_accepted_by_the_released_crds() {
    let cp = ControlPlane::start(harness::Options::default());
    let crd = harness::crd("kueue-topologies");
    cp.kubectl(&["apply", "--server-side", "-f", crd.to_str().unwrap()]);
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/topologies.kueue.x-k8s.io",
    ]);

    for extra in [
        &[][..],
        &[
            "--block-label",
            "network.example.com/leaf",
            "--name",
            "gb200",
        ][..],
    ] {
        let yaml = manifests(&[&["--for", "kueue"][..], extra].concat());
        let sent: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        let stored = apply(&cp, &yaml);
        assert_eq!(stored["apiVersion"], "kueue.x-k8s.io/v1beta2");
        assert_eq!(stored["kind"], "Topology");
        // Nothing pruned or rewritten: the stored levels are the generated ones.
        assert_eq!(stored["spec"], sent["spec"], "{yaml}");
        assert!(stored["spec"]["levels"].as_array().unwrap().len() >= 2);
    }

    // The check can fail: the CRD refuses a level without a node label, and an unknown field.
    let mut bad: Value =
        serde_yaml_ng::from_str(&manifests(&["--for", "kueue", "--name", "bad"])).unwrap();
    bad["spec"]["levels"][0] = serde_json::json!({"nodeLabl": "x"});
    let out = cp.kubectl_input(
        &[&APPLY[..], &["-"]].concat(),
        &serde_json::to_string(&bad).unwrap(),
    );
    assert!(!out.status.success(), "a misspelt field was accepted");

    // Volcano: the controller ConfigMap, applied as it is.
    cp.kubectl(&["create", "namespace", "volcano-system"]);
    let yaml = manifests(&["--for", "volcano"]);
    let stored = apply(&cp, &yaml);
    assert_eq!(stored["kind"], "ConfigMap");
    let sent: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(stored["data"], sent["data"]);
}
