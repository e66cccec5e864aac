//! The own-node ValidatingAdmissionPolicy of `daemonset/`, enforced by the real admission chain:
//! an agent's pod-bound token may change its own Node's nodetopo labels and nothing else.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::harness::{self, ControlPlane, ROOT};

const POLICY: &str = "ValidatingAdmissionPolicy 'nodetopo-agent-own-node'";

/// Runs `req` and returns the refusal's message; panics when it was allowed.
fn refused(res: Result<Node, kube::Error>, what: &str) -> String {
    match res {
        Ok(_) => panic!("{what}: allowed, want refused by the policy"),
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403, "{what}: {e:?}");
            assert!(
                e.message.contains(POLICY),
                "{what}: refused, but not by the policy: {e:?}"
            );
            e.message
        }
        Err(e) => panic!("{what}: {e}"),
    }
}

async fn merge(client: &Client, node: &str, patch: serde_json::Value) -> Result<Node, kube::Error> {
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

fn labels(key: &str, value: &str) -> serde_json::Value {
    json!({"metadata": {"labels": {key: value}}})
}

#[tokio::test]
async fn own_node_policy_is_enforced() {
    let cp = ControlPlane::start(harness::Options::default());
    let admin = cp.admin().await;
    cp.kubectl(&["apply", "--server-side", "-k", &format!("{ROOT}/daemonset")]);
    for n in ["node-a", "node-b"] {
        harness::create_node(&admin, n, &[("example.com/rack", "r1")]).await;
    }
    let pod =
        harness::create_bound_pod(&admin, "nodetopo", "nodetopo-agent", "agent-a", "node-a").await;
    let token_a = harness::sa_token(&admin, "nodetopo", "nodetopo-agent", Some(&pod)).await;
    let agent_a = ControlPlane::client_from(&cp.kubeconfig_for("agent-a", &token_a)).await;
    let unbound = harness::sa_token(&admin, "nodetopo", "nodetopo-agent", None).await;
    let agent_unbound = ControlPlane::client_from(&cp.kubeconfig_for("unbound", &unbound)).await;

    // The binding takes effect once the server has loaded it (until then the agent's RBAC alone
    // applies): wait for the first refusal, asking by dry run so that nothing is written.
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let nodes_a: Api<Node> = Api::all(agent_a.clone());
    let msg = harness::eventually(
        Duration::from_secs(30),
        "the policy to take effect",
        || async {
            let patch = labels("nodetopo.io/gpu.count", "4");
            match nodes_a.patch("node-b", &dry, &Patch::Merge(&patch)).await {
                Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains(POLICY) => {
                    Some(e.message)
                }
                _ => None,
            }
        },
    )
    .await;
    assert!(
        msg.contains("the nodetopo agent on Node node-a may not modify Node node-b"),
        "{msg}"
    );
    let m = refused(
        merge(&agent_a, "node-b", labels("nodetopo.io/gpu.count", "4")).await,
        "patching another Node",
    );
    assert!(m.contains("may not modify Node node-b"), "{m}");

    // Its own Node, its own prefix: allowed (so every refusal below is the policy's, not RBAC's).
    let n = merge(&agent_a, "node-a", labels("nodetopo.io/gpu.count", "4"))
        .await
        .expect("own label on own node");
    assert_eq!(n.metadata.labels.unwrap()["nodetopo.io/gpu.count"], "4");
    // Server-side apply, as the agent writes.
    let body = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a", "labels": {"nodetopo.io/gpu.product": "NVIDIA-H200"}}});
    Api::<Node>::all(agent_a.clone())
        .patch(
            "node-a",
            &PatchParams::apply("nodetopo").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect("own labels by server-side apply");

    let m = refused(
        merge(&agent_a, "node-a", labels("example.com/rack", "r2")).await,
        "a label outside the prefix",
    );
    assert!(
        m.contains("may change only labels under nodetopo.io/"),
        "{m}"
    );
    let m = refused(
        merge(
            &agent_a,
            "node-a",
            json!({"metadata": {"labels": {"example.com/rack": null}}}),
        )
        .await,
        "removing a foreign label",
    );
    assert!(
        m.contains("may change only labels under nodetopo.io/"),
        "{m}"
    );
    let m = refused(
        merge(
            &agent_a,
            "node-a",
            json!({"metadata": {"annotations": {"example.com/a": "b"}}}),
        )
        .await,
        "an annotation",
    );
    assert!(m.contains("may not change annotations"), "{m}");
    let m = refused(
        merge(
            &agent_a,
            "node-a",
            json!({"spec": {"taints": [{"key": "example.com/t", "effect": "NoSchedule"}]}}),
        )
        .await,
        "a taint",
    );
    assert!(m.contains("may not change the Node's spec"), "{m}");
    let m = refused(
        merge(&agent_a, "node-a", json!({"spec": {"unschedulable": true}})).await,
        "cordoning",
    );
    assert!(m.contains("may not change the Node's spec"), "{m}");
    // Creating a Node: the shipped RBAC has no `create` on nodes, so RBAC refuses first. With an
    // over-broad role granted on top, as a cluster might have, the policy still refuses.
    let new_node: Node = serde_json::from_value(json!({"metadata": {"name": "node-c"}})).unwrap();
    let create = || async {
        Api::<Node>::all(agent_a.clone())
            .create(&PostParams::default(), &new_node)
            .await
    };
    match create().await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403);
            assert!(
                e.message.contains("cannot create resource \"nodes\""),
                "{e:?}"
            );
        }
        other => panic!("creating a Node without RBAC: {other:?}"),
    }
    cp.kubectl(&[
        "create",
        "clusterrole",
        "too-broad",
        "--verb=create",
        "--resource=nodes",
    ]);
    cp.kubectl(&[
        "create",
        "clusterrolebinding",
        "too-broad",
        "--clusterrole=too-broad",
        "--serviceaccount=nodetopo:nodetopo-agent",
    ]);
    let m = harness::eventually(Duration::from_secs(20), "RBAC to allow create", || async {
        match create().await {
            Err(kube::Error::Api(e)) if e.message.contains(POLICY) => Some(e.message),
            Err(kube::Error::Api(e)) if e.message.contains("cannot create") => None,
            other => panic!("creating a Node with RBAC: {other:?}"),
        }
    })
    .await;
    assert!(m.contains("may only update existing Nodes"), "{m}");
    let m = refused(
        merge(
            &agent_unbound,
            "node-a",
            labels("nodetopo.io/gpu.count", "8"),
        )
        .await,
        "a token without the node-name claim",
    );
    assert!(
        m.contains("no authentication.kubernetes.io/node-name claim"),
        "{m}"
    );

    // Nothing refused was written.
    let a = Api::<Node>::all(admin.clone()).get("node-a").await.unwrap();
    let la = a.metadata.labels.clone().unwrap();
    assert_eq!(la["example.com/rack"], "r1");
    assert_eq!(la["nodetopo.io/gpu.count"], "4");
    assert!(a.metadata.annotations.unwrap_or_default().is_empty());
    let taints = a.spec.as_ref().and_then(|s| s.taints.clone());
    assert!(taints.unwrap_or_default().is_empty(), "no taint was added");
    assert!(!a.spec.as_ref().unwrap().unschedulable.unwrap_or(false));
    let b = Api::<Node>::all(admin.clone()).get("node-b").await.unwrap();
    assert!(
        !b.metadata
            .labels
            .unwrap()
            .contains_key("nodetopo.io/gpu.count")
    );

    // The binding applies to the agent alone: the same requests by the admin are allowed.
    merge(&admin, "node-b", labels("nodetopo.io/gpu.count", "4"))
        .await
        .expect("admin patches node-b");
    merge(&admin, "node-a", labels("example.com/rack", "r2"))
        .await
        .expect("admin changes a foreign label");
    merge(
        &admin,
        "node-a",
        json!({"metadata": {"annotations": {"example.com/a": "b"}}}),
    )
    .await
    .expect("admin annotates");
    Api::<Node>::all(admin.clone())
        .create(&PostParams::default(), &new_node)
        .await
        .expect("admin creates a Node");
}
