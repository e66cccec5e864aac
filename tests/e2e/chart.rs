//! The Helm chart and the plain manifests against a real API server: helm lint and template for
//! every optional part, helm install with every object read back, the admission policy's type
//! check by the real status controller, server-side dry runs of `daemonset/`, and `daemonset/`
//! compared with the chart's defaults as the server returns them.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use kube::Api;
use serde_json::{Value, json};

use crate::harness::{self, ControlPlane, ROOT};

const NS: &str = "nodetopo";

fn chart() -> String {
    format!("{ROOT}/charts/nodetopo")
}

/// The documents of a multi-document YAML stream, empty ones dropped.
fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(objs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objs
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    k.sort();
    k
}

fn template(cp: &ControlPlane, set: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", "nodetopo", &chart[..], "--namespace", NS];
    for s in set {
        args.push("--set");
        args.push(s);
    }
    docs(&cp.helm(&args))
}

fn find<'a>(objs: &'a [Value], kind: &str) -> Option<&'a Value> {
    objs.iter().find(|o| o["kind"] == kind)
}

/// A server's answer reduced to what the manifests say: identity, generated fields, status and
/// the labels and annotations helm adds are dropped.
fn normalize(mut v: Value) -> Value {
    if let Some(m) = v["metadata"].as_object_mut() {
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
        ] {
            m.remove(k);
        }
        for (field, helm_keys) in [
            (
                "labels",
                &[
                    "helm.sh/chart",
                    "app.kubernetes.io/managed-by",
                    "app.kubernetes.io/version",
                ][..],
            ),
            (
                "annotations",
                &[
                    "meta.helm.sh/release-name",
                    "meta.helm.sh/release-namespace",
                ][..],
            ),
        ] {
            if let Some(map) = m.get_mut(field).and_then(Value::as_object_mut) {
                for k in helm_keys {
                    map.remove(*k);
                }
                if map.is_empty() {
                    m.remove(field);
                }
            }
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    // Pod template labels carry the same helm labels.
    if let Some(l) = v
        .pointer_mut("/spec/template/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        for k in [
            "helm.sh/chart",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/version",
        ] {
            l.remove(k);
        }
    }
    v
}

/// `kubectl apply --server-side --dry-run=server -o json` of `input` (a path, or `-` with
/// `stdin`): the objects as the server would store them, by kind/name.
fn dry_run(cp: &ControlPlane, input: &[&str], stdin: Option<&str>) -> BTreeMap<String, Value> {
    let args = [
        &["apply", "--server-side", "--dry-run=server", "-o", "json"][..],
        input,
    ]
    .concat();
    let out = cp.kubectl_input(&args, stdin.unwrap_or_default());
    assert!(
        out.status.success(),
        "dry run of {input:?} refused:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("kubectl -o json");
    let items = if v["kind"] == "List" {
        v["items"].as_array().unwrap().clone()
    } else {
        vec![v]
    };
    items
        .into_iter()
        .map(|o| {
            let key = format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            );
            (key, normalize(o))
        })
        .collect()
}

fn to_yaml(objs: &[Value]) -> String {
    objs.iter()
        .map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).unwrap()))
        .collect()
}

#[tokio::test]
async fn chart_renders_installs_and_matches_daemonset() {
    let cp = ControlPlane::start(harness::Options {
        policy_status_controller: true,
        ..harness::Options::default()
    });
    let admin = cp.admin().await;

    // Lint, strictly: a warning fails too.
    cp.helm(&["lint", "--strict", &chart()]);

    // Render each optional part and check what it adds or removes.
    let default = template(&cp, &[]);
    let kd = kinds(&default);
    for want in [
        "DaemonSet/nodetopo-agent",
        "ServiceAccount/nodetopo-agent",
        "ClusterRole/nodetopo-agent",
        "ClusterRoleBinding/nodetopo-agent",
        "ValidatingAdmissionPolicy/nodetopo-agent-own-node",
        "ValidatingAdmissionPolicyBinding/nodetopo-agent-own-node",
    ] {
        assert!(
            kd.contains(&want.to_string()),
            "default render lacks {want}: {kd:?}"
        );
    }
    assert!(find(&default, "Deployment").is_none() && find(&default, "PodMonitor").is_none());

    let extender = template(&cp, &["extender.enabled=true"]);
    let ke = kinds(&extender);
    assert!(ke.iter().any(|k| k.starts_with("Deployment/")), "{ke:?}");
    assert!(ke.iter().any(|k| k.starts_with("Service/")), "{ke:?}");
    assert!(ke.iter().any(|k| k.starts_with("ConfigMap/")), "{ke:?}");
    assert!(ke.len() > kd.len());

    let compat = template(&cp, &["compatLabels={topograph,gfd-clique}"]);
    let ds = find(&compat, "DaemonSet").unwrap();
    let args =
        serde_json::to_string(&ds["spec"]["template"]["spec"]["containers"][0]["args"]).unwrap();
    assert!(
        args.contains("topograph") && args.contains("gfd-clique"),
        "{args}"
    );
    let vap = serde_json::to_string(find(&compat, "ValidatingAdmissionPolicy").unwrap()).unwrap();
    assert!(
        vap.contains("accelerator.topograph.run/domain") && vap.contains("nvidia.com/gpu.clique"),
        "the policy lets the agent write the compatibility keys: {vap}"
    );

    let monitor = template(&cp, &["monitoring.podMonitor.enabled=true"]);
    assert!(find(&monitor, "PodMonitor").is_some());

    // The agent's NetworkPolicy: off by default; on, a port without a peer stays closed.
    assert!(find(&default, "NetworkPolicy").is_none());
    let closed = template(&cp, &["networkPolicy.enabled=true"]);
    let np = find(&closed, "NetworkPolicy").expect("networkPolicy.enabled renders one");
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        np["spec"]["ingress"],
        json!([]),
        "no peer: every port closed"
    );
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "agent"
    );
    let open = template(
        &cp,
        &[
            "networkPolicy.enabled=true",
            "extender.enabled=true",
            "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
        ],
    );
    let rules = find(&open, "NetworkPolicy").unwrap()["spec"]["ingress"].clone();
    assert_eq!(rules.as_array().unwrap().len(), 2, "{rules}");
    assert_eq!(
        rules[0]["ports"],
        json!([{"protocol": "TCP", "port": 9750}])
    );
    assert_eq!(
        rules[0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "extender",
        "{rules}"
    );
    assert_eq!(
        rules[1]["ports"],
        json!([{"protocol": "TCP", "port": 9751}])
    );
    assert_eq!(
        rules[1]["from"][0]["namespaceSelector"]["matchLabels"]["team"],
        "monitoring"
    );

    let no_policy = template(&cp, &["admissionPolicy.enabled=false"]);
    assert!(find(&no_policy, "ValidatingAdmissionPolicy").is_none());
    assert!(find(&no_policy, "ValidatingAdmissionPolicyBinding").is_none());
    assert!(find(&no_policy, "DaemonSet").is_some());

    // The webhook, off by default; each way of getting its certificate.
    assert!(
        !kd.iter().any(|k| k.contains("webhook")),
        "the webhook is off by default: {kd:?}"
    );
    let webhook = template(&cp, &["webhook.enabled=true"]);
    let kw = kinds(&webhook);
    for want in [
        "Deployment/nodetopo-webhook",
        "Service/nodetopo-webhook",
        "ServiceAccount/nodetopo-webhook",
        "ClusterRole/nodetopo-webhook",
        "ClusterRoleBinding/nodetopo-webhook",
        "Secret/nodetopo-webhook-tls",
        "MutatingWebhookConfiguration/nodetopo-webhook",
    ] {
        assert!(
            kw.contains(&want.to_string()),
            "webhook render lacks {want}: {kw:?}"
        );
    }
    let mwc = find(&webhook, "MutatingWebhookConfiguration").unwrap();
    let secret = find(&webhook, "Secret").unwrap();
    let hooks = mwc["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2);
    for h in hooks {
        assert_eq!(h["failurePolicy"], "Ignore");
        assert_eq!(h["timeoutSeconds"], 2);
        assert_eq!(h["clientConfig"]["caBundle"], secret["data"]["ca.crt"]);
        assert_eq!(h["clientConfig"]["service"]["name"], "nodetopo-webhook");
        assert_eq!(
            h["namespaceSelector"]["matchLabels"]["nodetopo.io/pod-topology"],
            "enabled"
        );
    }
    assert_eq!(
        hooks[0]["rules"][0]["resources"],
        serde_json::json!(["pods/binding"])
    );
    assert!(
        hooks[0].get("objectSelector").is_none(),
        "bindings carry no pod labels"
    );
    assert_eq!(
        hooks[1]["rules"][0]["resources"],
        serde_json::json!(["pods"])
    );
    let cm = template(
        &cp,
        &["webhook.enabled=true", "webhook.tls.mode=certManager"],
    );
    let kc = kinds(&cm);
    assert!(
        kc.contains(&"Certificate/nodetopo-webhook".to_string()),
        "{kc:?}"
    );
    assert!(
        kc.contains(&"Issuer/nodetopo-webhook".to_string()),
        "{kc:?}"
    );
    assert!(
        find(&cm, "Secret").is_none(),
        "cert-manager writes the Secret"
    );
    let cm_mwc = find(&cm, "MutatingWebhookConfiguration").unwrap();
    assert_eq!(
        cm_mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "nodetopo/nodetopo-webhook"
    );
    assert!(
        cm_mwc["webhooks"][0]["clientConfig"]
            .get("caBundle")
            .is_none()
    );
    let cm_issuer = template(
        &cp,
        &[
            "webhook.enabled=true",
            "webhook.tls.mode=certManager",
            "webhook.tls.certManager.issuerRef.name=corp-ca",
            "webhook.tls.certManager.issuerRef.kind=ClusterIssuer",
        ],
    );
    assert!(find(&cm_issuer, "Issuer").is_none());
    assert_eq!(
        find(&cm_issuer, "Certificate").unwrap()["spec"]["issuerRef"]["name"],
        "corp-ca"
    );
    let own = template(
        &cp,
        &[
            "webhook.enabled=true",
            "webhook.tls.mode=secret",
            "webhook.tls.secretName=my-tls",
            "webhook.tls.caBundle=Q0E=",
        ],
    );
    assert!(find(&own, "Secret").is_none() && find(&own, "Certificate").is_none());
    let own_dep = find(&own, "Deployment").unwrap();
    assert_eq!(
        own_dep["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "my-tls"
    );
    assert_eq!(
        find(&own, "MutatingWebhookConfiguration").unwrap()["webhooks"][1]["clientConfig"]["caBundle"],
        "Q0E="
    );
    // A secret mode without its Secret fails the values schema.
    let bad = cp
        .helm_cmd()
        .args([
            "template",
            "nodetopo",
            &chart(),
            "--set",
            "webhook.enabled=true",
            "--set",
            "webhook.tls.mode=secret",
        ])
        .output()
        .unwrap();
    assert!(
        !bad.status.success(),
        "secret mode without secretName rendered"
    );

    // daemonset/ against the server, before the chart owns anything: a server-side dry run of
    // both kustomizations, and the objects compared with the chart's defaults as the server
    // returns them (defaults filled in, helm's own labels dropped).
    cp.kubectl(&["create", "namespace", NS]);
    let plain = dry_run(&cp, &["-k", &format!("{ROOT}/daemonset")], None);
    let plain_ext = dry_run(&cp, &["-k", &format!("{ROOT}/daemonset/extender")], None);
    let chart_default = dry_run(&cp, &["-f", "-"], Some(&to_yaml(&default)));
    let mut plain_objs = plain.clone();
    plain_objs.remove(&format!("Namespace/{NS}"));
    assert_eq!(
        plain_objs.keys().collect::<Vec<_>>(),
        chart_default.keys().collect::<Vec<_>>(),
        "daemonset/ and the chart's defaults hold the same objects"
    );
    for (k, v) in &plain_objs {
        assert_eq!(
            v, &chart_default[k],
            "{k}: daemonset/ differs from the chart's default"
        );
    }
    let chart_ext = dry_run(&cp, &["-f", "-"], Some(&to_yaml(&extender)));
    for (k, v) in &plain_ext {
        let c = chart_ext
            .get(k)
            .unwrap_or_else(|| panic!("{k} of daemonset/extender/ is not in the chart"));
        assert_eq!(
            v, c,
            "{k}: daemonset/extender/ differs from the chart with the extender on"
        );
    }
    // daemonset/extender-routed/ (the two-profile design, its certificate from cert-manager)
    // against the chart with the extender and webhook on in cert-manager mode, with
    // cert-manager's own CRDs in the API server.
    for name in ["cert-manager-certificates", "cert-manager-issuers"] {
        let crd = harness::crd(name);
        cp.kubectl(&["apply", "--server-side", "-f", crd.to_str().unwrap()]);
    }
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/certificates.cert-manager.io",
        "crd/issuers.cert-manager.io",
    ]);
    let routed_values = [
        "extender.enabled=true",
        "webhook.enabled=true",
        "webhook.tls.mode=certManager",
    ];
    let chart_routed = dry_run(
        &cp,
        &["-f", "-"],
        Some(&to_yaml(&template(&cp, &routed_values))),
    );
    let plain_routed = dry_run(
        &cp,
        &["-k", &format!("{ROOT}/daemonset/extender-routed")],
        None,
    );
    let want: Vec<&str> = [
        "Certificate/",
        "Issuer/",
        "MutatingWebhookConfiguration/",
        "Deployment/nodetopo-webhook",
        "Deployment/nodetopo-extender",
    ]
    .to_vec();
    for w in want {
        assert!(
            plain_routed.keys().any(|k| k.starts_with(w)),
            "daemonset/extender-routed/ lacks {w}: {:?}",
            plain_routed.keys().collect::<Vec<_>>()
        );
    }
    for (k, v) in &plain_routed {
        let c = chart_routed
            .get(k)
            .unwrap_or_else(|| panic!("{k} of daemonset/extender-routed/ is not in the chart"));
        assert_eq!(
            v, c,
            "{k}: daemonset/extender-routed/ differs from the chart with the extender and the \
             webhook on (cert-manager mode)"
        );
    }
    let config =
        &plain_routed["ConfigMap/nodetopo-scheduler-config"]["data"]["scheduler-config.yaml"];
    assert!(
        config
            .as_str()
            .is_some_and(|c| c.contains("schedulerName: nodetopo-groups")),
        "the routed configuration has the group profile: {config}"
    );

    // helm install (no --wait: no kubelet runs) with every optional part whose CRD is here.
    let podmonitor_crd = harness::crd("prometheus-podmonitors");
    cp.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        podmonitor_crd.to_str().unwrap(),
    ]);
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/podmonitors.monitoring.coreos.com",
    ]);
    cp.helm(&[
        "install",
        "nodetopo",
        &chart(),
        "--namespace",
        NS,
        "--set",
        "extender.enabled=true",
        "--set",
        "monitoring.podMonitor.enabled=true",
        "--set",
        "compatLabels={topograph}",
        "--set",
        "webhook.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
    ]);
    // An upgrade keeps the self-signed pair, so the caBundle stays the Secret's CA.
    let ca_of = || {
        let s: Value = serde_json::from_str(&cp.kubectl(&[
            "get",
            "secret",
            "nodetopo-webhook-tls",
            "-n",
            NS,
            "-o",
            "json",
        ]))
        .unwrap();
        let m: Value = serde_json::from_str(&cp.kubectl(&[
            "get",
            "mutatingwebhookconfiguration",
            "nodetopo-webhook",
            "-o",
            "json",
        ]))
        .unwrap();
        assert_eq!(
            s["data"]["ca.crt"],
            m["webhooks"][0]["clientConfig"]["caBundle"]
        );
        s["data"]["ca.crt"].as_str().unwrap().to_string()
    };
    let ca_before = ca_of();
    cp.helm(&[
        "upgrade",
        "nodetopo",
        &chart(),
        "--namespace",
        NS,
        "--reuse-values",
    ]);
    assert_eq!(
        ca_of(),
        ca_before,
        "helm upgrade regenerated the webhook CA"
    );
    let manifest = docs(&cp.helm(&["get", "manifest", "nodetopo", "--namespace", NS]));
    assert!(manifest.len() >= 12, "{:?}", kinds(&manifest));
    for o in &manifest {
        let kind = o["kind"].as_str().unwrap();
        let name = o["metadata"]["name"].as_str().unwrap();
        let api = o["apiVersion"].as_str().unwrap();
        let group = api.split_once('/').map(|(g, _)| g).unwrap_or("");
        let resource = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut args = vec!["get", &resource[..], name, "-o", "json"];
        if o["metadata"]["namespace"].is_string() || !is_cluster_scoped(kind) {
            args.extend(["--namespace", NS]);
        }
        let got: Value = serde_json::from_str(&cp.kubectl(&args)).unwrap();
        assert_eq!(
            got["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm",
            "{kind}/{name}"
        );
    }

    // The admission policy type-checks without warnings (filled in by the real status
    // controller of kube-controller-manager).
    let vaps: Api<ValidatingAdmissionPolicy> = Api::all(admin.clone());
    let status = harness::eventually(
        Duration::from_secs(60),
        "the policy's type check",
        || async {
            let p = vaps.get("nodetopo-agent-own-node").await.ok()?;
            let st = p.status?;
            (st.observed_generation == p.metadata.generation)
                .then_some(st)?
                .type_checking
        },
    )
    .await;
    let warnings = status.expression_warnings.unwrap_or_default();
    assert!(warnings.is_empty(), "type-check warnings: {warnings:?}");
}

fn is_cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "ClusterRole"
            | "ClusterRoleBinding"
            | "ValidatingAdmissionPolicy"
            | "ValidatingAdmissionPolicyBinding"
            | "MutatingWebhookConfiguration"
            | "Namespace"
            | "CustomResourceDefinition"
    )
}
