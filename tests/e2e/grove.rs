//! Grove's pods under the real kube-scheduler and `nodetopo extender`.
//!
//! Grove's operator cannot be built here (its Go modules are refused by the module proxy), so
//! [`operator`] creates what it would: its released CRDs are installed, the user's PodCliqueSet
//! is created from Grove's own multi-node sample, and then the PodCliqueScalingGroups,
//! PodCliques, PodGangs and gated Pods follow with the operator's names, labels, env vars and
//! owner references; the gates are lifted in the operator's order (base PodGang first, scaled
//! PodGangs once their base is scheduled). The shipped `KubeSchedulerConfiguration` serves
//! `default-scheduler`, the only profile Grove's default backend sets on its pods.
//!
//! The CRDs and the sample come from `../shared/crds/` beside the project (or
//! `NODETOPO_UPSTREAM_CRDS`); without them the test is skipped with a message, except under
//! `CI`, where it fails.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::{
    harness::{self, ControlPlane, ROOT},
    scheduler::{bound, direct_nodes},
};

const NS: &str = "infer";
const ROUNDS: usize = 2;

/// Every Grove pod in [`NS`] was moved to the group profile by the webhook at creation.
async fn assert_routed(client: &kube::Client, profile: &str) {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), NS);
    for p in pods.list(&Default::default()).await.expect("pods") {
        assert_eq!(
            p.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()),
            Some(profile),
            "{} keeps the scheduler Grove gave it",
            p.metadata.name.unwrap_or_default()
        );
    }
}
const CLIQUE: &str = "nodetopo.io/nvlink.domain";
const CLUSTER: &str = "nodetopo.io/nvlink.cluster";
const FABRIC: &str = "nodetopo.io/nvlink.fabric";

/// The folder of upstream CRDs, or `None` (with a message) where it is absent outside CI.
fn upstream_crds() -> Option<PathBuf> {
    let dir = std::env::var_os("NODETOPO_UPSTREAM_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("../shared/crds"));
    if dir.join("grove").is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI: the upstream CRDs are missing at {} (set NODETOPO_UPSTREAM_CRDS)",
        dir.display()
    );
    eprintln!(
        "SKIPPED: no upstream Grove CRDs at {} (set NODETOPO_UPSTREAM_CRDS)",
        dir.display()
    );
    None
}

/// What Grove's operator creates for a PodCliqueSet, as plain JSON objects. Each fact names the
/// file of ai-dynamo/grove (main @ fcc3b3bbbc5e, 2026-08-19, the commit of the CRDs) it comes
/// from; nothing here is Grove's code.
mod operator {
    use super::*;

    /// Grove's common label keys and values: `operator/api/common/labels.go`.
    pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "grove-operator");
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    pub const APP_NAME: &str = "app.kubernetes.io/name";
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    pub const PODCLIQUE: &str = "grove.io/podclique";
    pub const PODGANG: &str = "grove.io/podgang";
    pub const BASE_PODGANG: &str = "grove.io/base-podgang";
    pub const PCS_REPLICA: &str = "grove.io/podcliqueset-replica-index";
    pub const PCSG: &str = "grove.io/podcliquescalinggroup";
    pub const PCSG_REPLICA: &str = "grove.io/podcliquescalinggroup-replica-index";
    pub const POD_INDEX: &str = "grove.io/podclique-pod-index";
    pub const TEMPLATE_HASH: &str = "grove.io/pod-template-hash";
    pub const SCHEDULER_NAME: &str = "grove.io/scheduler-name";
    /// `operator/internal/controller/podclique/components/pod/pod.go` (`podGangSchedulingGate`).
    pub const GATE: &str = "grove.io/podgang-pending-creation";
    /// `operator/internal/scheduler/kube/backend.go` `PreparePod`: the default backend's
    /// profile name, `default-scheduler` (`operator/api/config/v1alpha1`).
    pub const SCHEDULER: &str = "default-scheduler";

    /// Names: `operator/api/common/namegen.go`.
    pub fn pcsg_name(pcs: &str, r: u32, cfg: &str) -> String {
        format!("{pcs}-{r}-{cfg}")
    }
    pub fn pclq_name(owner: &str, replica: u32, template: &str) -> String {
        format!("{owner}-{replica}-{template}")
    }
    pub fn base_gang(pcs: &str, r: u32) -> String {
        format!("{pcs}-{r}")
    }
    /// `GeneratePodGangNameForPodCliqueOwnedByPCSG`: replicas below `minAvailable` join the base
    /// PodGang, the others get `<pcsg>-<k - minAvailable>`.
    pub fn pcsg_gang(pcs: &str, r: u32, pcsg: &str, k: u32, min_available: u32) -> String {
        if k < min_available {
            base_gang(pcs, r)
        } else {
            format!("{pcsg}-{}", k - min_available)
        }
    }

    /// `GetDefaultLabelsForPodCliqueSetManagedResources`.
    fn default_labels(pcs: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY.0.into(), MANAGED_BY.1.into()),
            (PART_OF.into(), pcs.into()),
        ])
    }

    fn owner(obj: &Value) -> Value {
        json!([{
            "apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"],
            "controller": true, "blockOwnerDeletion": true,
        }])
    }

    /// `operator/internal/controller/podcliqueset/components/podcliquescalinggroup/
    /// podcliquescalinggroup.go` `buildResource`, `getLabels`.
    pub fn pcsg(pcs: &Value, r: u32, cfg: &Value) -> Value {
        let pcs_name = pcs["metadata"]["name"].as_str().unwrap();
        let name = pcsg_name(pcs_name, r, cfg["name"].as_str().unwrap());
        let mut labels = default_labels(pcs_name);
        labels.insert(APP_NAME.into(), name.clone());
        labels.insert(COMPONENT.into(), "pcs-podcliquescalinggroup".into());
        labels.insert(PCS_REPLICA.into(), r.to_string());
        json!({
            "apiVersion": "grove.io/v1alpha1", "kind": "PodCliqueScalingGroup",
            "metadata": {"name": name, "namespace": NS, "labels": labels,
                "finalizers": ["grove.io/podcliquescalinggroup.grove.io"],
                "ownerReferences": owner(pcs)},
            "spec": {"replicas": cfg["replicas"], "minAvailable": cfg["minAvailable"],
                "cliqueNames": cfg["cliqueNames"]},
        })
    }

    /// Stands in for `ComputePCLQPodTemplateHash` (`operator/internal/controller/common/
    /// component/utils`): a stable hash of the clique template, not Grove's own value.
    fn template_hash(template: &Value) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        template.to_string().hash(&mut h);
        format!("{:x}", h.finish() & 0xffff_ffff)
    }

    fn env(name: &str, value: &str) -> Value {
        json!({"name": name, "value": value})
    }
    fn env_label(name: &str, label: &str) -> Value {
        json!({"name": name, "valueFrom": {"fieldRef":
            {"fieldPath": format!("metadata.labels['{label}']")}}})
    }

    /// `PrependEnvVarsToContainers` (`operator/internal/controller/common/component/utils`):
    /// the operator's vars first, the user's of the same name dropped.
    fn prepend_env(pod_spec: &mut Value, vars: &[Value]) {
        for key in ["containers", "initContainers"] {
            let Some(cs) = pod_spec[key].as_array_mut() else {
                continue;
            };
            for c in cs {
                let own: Vec<Value> = c["env"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| !vars.iter().any(|v| v["name"] == e["name"]))
                    .collect();
                c["env"] = Value::Array(vars.iter().cloned().chain(own).collect());
            }
        }
    }

    /// A PodClique of scaling-group replica `k`: `operator/internal/controller/
    /// podcliquescalinggroup/components/podclique/podclique.go` `buildResource`, `getLabels`
    /// (with `grove.io/base-podgang` on a scaled replica), `getPCSGTemplateNumPods`,
    /// `addEnvironmentVariablesToPodContainerSpecs`.
    pub fn pcsg_podclique(pcs: &Value, r: u32, pcsg: &Value, k: u32, template: &Value) -> Value {
        let pcs_name = pcs["metadata"]["name"].as_str().unwrap();
        let pcsg_fqn = pcsg["metadata"]["name"].as_str().unwrap();
        let min_available = pcsg["spec"]["minAvailable"].as_u64().unwrap() as u32;
        let name = pclq_name(pcsg_fqn, k, template["name"].as_str().unwrap());
        let gang = pcsg_gang(pcs_name, r, pcsg_fqn, k, min_available);
        let mut labels: BTreeMap<String, String> =
            serde_json::from_value(template["labels"].clone()).unwrap_or_default();
        labels.extend(default_labels(pcs_name));
        labels.extend([
            (APP_NAME.into(), name.clone()),
            (COMPONENT.into(), "pcsg-podclique".into()),
            (PCSG.into(), pcsg_fqn.into()),
            (PODGANG.into(), gang.clone()),
            (PCS_REPLICA.into(), r.to_string()),
            (PCSG_REPLICA.into(), k.to_string()),
            (TEMPLATE_HASH.into(), template_hash(template)),
        ]);
        if gang != base_gang(pcs_name, r) {
            labels.insert(BASE_PODGANG.into(), base_gang(pcs_name, r));
        }
        let cliques = pcs["spec"]["template"]["cliques"].as_array().unwrap();
        let num_pods: u64 = pcsg["spec"]["cliqueNames"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| cliques.iter().find(|c| c["name"] == *n))
            .map(|c| c["spec"]["replicas"].as_u64().unwrap())
            .sum();
        let mut spec = template["spec"].clone();
        prepend_env(
            &mut spec["podSpec"],
            &[
                env_label("GROVE_PCSG_NAME", PCSG),
                env("GROVE_PCSG_TEMPLATE_NUM_PODS", &num_pods.to_string()),
                env_label("GROVE_PCSG_INDEX", PCSG_REPLICA),
            ],
        );
        json!({
            "apiVersion": "grove.io/v1alpha1", "kind": "PodClique",
            "metadata": {"name": name, "namespace": NS, "labels": labels,
                "annotations": template["annotations"].as_object().cloned().unwrap_or_default(),
                "finalizers": ["grove.io/podclique.grove.io"],
                "ownerReferences": owner(pcsg)},
            "spec": spec,
        })
    }

    /// Pod `i` of a PodClique: `operator/internal/controller/podclique/components/pod/pod.go`
    /// `buildResource` (generateName `<pclq>-`, the PodClique's annotations, the gate, the
    /// backend's schedulerName), `getLabels`, `addEnvironmentVariables`,
    /// `configurePodHostname`.
    pub fn pod(pcs_name: &str, r: u32, pclq: &Value, i: u32) -> Value {
        let name = pclq["metadata"]["name"].as_str().unwrap();
        let mut labels = default_labels(pcs_name);
        let pclq_labels: BTreeMap<String, String> =
            serde_json::from_value(pclq["metadata"]["labels"].clone()).unwrap();
        let gang = pclq_labels[PODGANG].clone();
        labels.extend(pclq_labels);
        labels.extend([
            (PODCLIQUE.into(), name.into()),
            (PCS_REPLICA.into(), r.to_string()),
            (PODGANG.into(), gang),
            (POD_INDEX.into(), i.to_string()),
        ]);
        let mut spec = pclq["spec"]["podSpec"].clone();
        spec["schedulingGates"] = json!([{"name": GATE}]);
        spec["schedulerName"] = json!(SCHEDULER);
        let svc = base_gang(pcs_name, r);
        prepend_env(
            &mut spec,
            &[
                env("GROVE_PCS_NAME", pcs_name),
                env("GROVE_PCS_INDEX", &r.to_string()),
                env("GROVE_PCLQ_NAME", name),
                env(
                    "GROVE_HEADLESS_SERVICE",
                    &format!("{svc}.{NS}.svc.cluster.local"),
                ),
                env_label("GROVE_PCLQ_POD_INDEX", POD_INDEX),
            ],
        );
        spec["hostname"] = json!(format!("{name}-{i}"));
        spec["subdomain"] = json!(svc);
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": format!("{name}-"), "namespace": NS,
                "labels": labels,
                "annotations": pclq["metadata"]["annotations"],
                "ownerReferences": owner(pclq)},
            "spec": spec,
        })
    }

    /// The PodCliqueSet's labels or annotations less Grove's own (`mirrorPCSMetadata`).
    fn mirrored(pcs: &Value, key: &str) -> BTreeMap<String, String> {
        let all: BTreeMap<String, String> =
            serde_json::from_value(pcs["metadata"][key].clone()).unwrap_or_default();
        all.into_iter()
            .filter(|(k, _)| !k.starts_with("grove.io/"))
            .collect()
    }

    /// `operator/internal/controller/podcliqueset/components/podgang/podgang.go`
    /// `buildResource`, `createPodGroupsForPodGang`: the PodCliqueSet's labels and annotations
    /// mirrored, one pod group per PodClique, its pods sorted by name, `minReplicas` the
    /// clique's `minAvailable` (its replicas when unset).
    pub fn podgang(pcs: &Value, name: &str, cliques: &[(&Value, Vec<String>)]) -> Value {
        let pcs_name = pcs["metadata"]["name"].as_str().unwrap();
        let mut labels = mirrored(pcs, "labels");
        labels.extend(default_labels(pcs_name));
        labels.insert(COMPONENT.into(), "podgang".into());
        labels.insert(SCHEDULER_NAME.into(), SCHEDULER.into());
        let groups: Vec<Value> = cliques
            .iter()
            .map(|(pclq, pods)| {
                let mut pods = pods.clone();
                pods.sort();
                let spec = &pclq["spec"];
                json!({
                    "name": pclq["metadata"]["name"],
                    "podReferences": pods.iter()
                        .map(|p| json!({"namespace": NS, "name": p})).collect::<Vec<_>>(),
                    "minReplicas": spec.get("minAvailable").unwrap_or(&spec["replicas"]),
                })
            })
            .collect();
        json!({
            "apiVersion": "scheduler.grove.io/v1alpha1", "kind": "PodGang",
            "metadata": {"name": name, "namespace": NS, "labels": labels,
                "annotations": mirrored(pcs, "annotations"),
                "ownerReferences": owner(pcs)},
            "spec": {"podgroups": groups},
        })
    }
}

/// One scaling-group replica as created: its config name, PodGang and pods.
#[derive(Debug)]
struct Replica {
    pcsg: String,
    k: u32,
    gang: String,
    base: bool,
    pods: Vec<String>,
}

fn create(cp: &ControlPlane, obj: &Value) -> Value {
    let out = cp.kubectl_input(
        &["create", "-o", "json", "-f", "-"],
        &serde_json::to_string(obj).unwrap(),
    );
    assert!(
        out.status.success(),
        "the server refused {}:\n{}",
        obj["metadata"],
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Removes the PodGang gate from `pods`, as the operator's pod sync does (merge patch of the
/// gate list without it).
async fn ungate(client: &Client, pods: &[String]) {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    for p in pods {
        let pod = api.get(p).await.unwrap();
        let gates: Vec<_> = pod
            .spec
            .unwrap()
            .scheduling_gates
            .unwrap_or_default()
            .into_iter()
            .filter(|g| g.name != operator::GATE)
            .collect();
        api.patch(
            p,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"schedulingGates": gates}})),
        )
        .await
        .unwrap_or_else(|e| panic!("ungate {p}: {e}"));
    }
}

/// Creates the PodCliqueSet `pcs` (the user's step) and everything Grove's operator creates
/// for it, then lifts the gates in the operator's order. Returns the scaling-group replicas.
async fn deploy(cp: &ControlPlane, client: &Client, pcs: &Value) -> Vec<Replica> {
    let pcs = create(cp, pcs);
    let pcs_name = pcs["metadata"]["name"].as_str().unwrap().to_string();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let cliques = pcs["spec"]["template"]["cliques"]
        .as_array()
        .unwrap()
        .clone();
    let mut replicas = Vec::new();
    // gang -> [(PodClique, its pods)]
    let mut gangs: BTreeMap<String, Vec<(Value, Vec<String>)>> = BTreeMap::new();
    for r in 0..pcs["spec"]["replicas"].as_u64().unwrap() as u32 {
        for cfg in pcs["spec"]["template"]["podCliqueScalingGroups"]
            .as_array()
            .unwrap()
        {
            let pcsg = create(cp, &operator::pcsg(&pcs, r, cfg));
            let pcsg_fqn = pcsg["metadata"]["name"].as_str().unwrap();
            for k in 0..pcsg["spec"]["replicas"].as_u64().unwrap() as u32 {
                let mut rep = Replica {
                    pcsg: cfg["name"].as_str().unwrap().into(),
                    k,
                    gang: String::new(),
                    base: false,
                    pods: Vec::new(),
                };
                for clique in pcsg["spec"]["cliqueNames"].as_array().unwrap() {
                    let template = cliques.iter().find(|c| c["name"] == *clique).unwrap();
                    let pclq = create(cp, &operator::pcsg_podclique(&pcs, r, &pcsg, k, template));
                    let mut names = Vec::new();
                    for i in 0..pclq["spec"]["replicas"].as_u64().unwrap() as u32 {
                        let pod: Pod =
                            serde_json::from_value(operator::pod(&pcs_name, r, &pclq, i)).unwrap();
                        let made = pods_api.create(&Default::default(), &pod).await.unwrap();
                        names.push(made.metadata.name.unwrap());
                    }
                    let gang = pclq["metadata"]["labels"][operator::PODGANG]
                        .as_str()
                        .unwrap()
                        .to_string();
                    rep.base = gang == operator::base_gang(&pcs_name, r);
                    rep.gang = gang.clone();
                    rep.pods.extend(names.iter().cloned());
                    gangs.entry(gang).or_default().push((pclq, names));
                }
                assert!(
                    rep.gang.starts_with(pcsg_fqn) || rep.base,
                    "scaled PodGang {} named after {pcsg_fqn}",
                    rep.gang
                );
                replicas.push(rep);
            }
        }
    }
    // Gated pods are not scheduled, whatever the extender would say.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for p in replicas.iter().flat_map(|r| &r.pods) {
        let pod = pods_api.get(p).await.unwrap();
        assert!(
            pod.spec.unwrap().node_name.is_none(),
            "{p} was bound while gated"
        );
    }
    // The PodGangs, once their pods exist (the PodCliqueSet's podgang component).
    for (name, members) in &gangs {
        let refs: Vec<(&Value, Vec<String>)> =
            members.iter().map(|(c, p)| (c, p.clone())).collect();
        create(cp, &operator::podgang(&pcs, name, &refs));
    }
    // Base PodGang pods are ungated at once; scaled ones once the base PodGang is scheduled
    // (`operator/internal/controller/podclique/components/pod/syncflow.go`).
    let base: Vec<String> = replicas
        .iter()
        .filter(|r| r.base)
        .flat_map(|r| r.pods.clone())
        .collect();
    ungate(client, &base).await;
    bound(client, &base, Duration::from_secs(90)).await;
    let scaled: Vec<String> = replicas
        .iter()
        .filter(|r| !r.base)
        .flat_map(|r| r.pods.clone())
        .collect();
    ungate(client, &scaled).await;
    bound(client, &scaled, Duration::from_secs(90)).await;
    replicas
}

/// Grove's sample PodCliqueSet, named `name`, with `gpus` GPUs per pod and the fake-node
/// tolerations of its KIND demo dropped; `edit` changes it further.
fn sample(crds: &Path, name: &str, gpus: u32, edit: impl FnOnce(&mut Value)) -> Value {
    let path = crds.join("grove/samples/multi-node-disaggregated.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut pcs: Value = serde_yaml_ng::from_str(&text).unwrap();
    pcs["metadata"]["name"] = json!(name);
    pcs["metadata"]["namespace"] = json!(NS);
    for c in pcs["spec"]["template"]["cliques"].as_array_mut().unwrap() {
        let ps = &mut c["spec"]["podSpec"];
        ps.as_object_mut().unwrap().remove("tolerations");
        for ct in ps["containers"].as_array_mut().unwrap() {
            ct["resources"]["limits"] = json!({"nvidia.com/gpu": gpus.to_string()});
        }
    }
    edit(&mut pcs);
    pcs
}

fn label<'a>(nodes: &'a BTreeMap<String, Node>, node: &str, key: &str) -> Option<&'a str> {
    nodes[node]
        .metadata
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The one value of `key` over the nodes of `pods`; panics when they are split.
fn one_of(
    nodes: &BTreeMap<String, Node>,
    placed: &BTreeMap<String, String>,
    pods: &[String],
    key: &str,
    what: &str,
) -> String {
    let set: std::collections::BTreeSet<Option<&str>> =
        pods.iter().map(|p| label(nodes, &placed[p], key)).collect();
    assert_eq!(set.len(), 1, "{what}: split over {set:?} ({key})");
    set.into_iter()
        .next()
        .flatten()
        .unwrap_or_else(|| panic!("{what}: no {key}"))
        .to_string()
}

async fn placements(client: &Client, replicas: &[Replica]) -> BTreeMap<String, String> {
    let names: Vec<String> = replicas.iter().flat_map(|r| r.pods.clone()).collect();
    bound(client, &names, Duration::from_secs(10)).await
}

#[tokio::test]
async fn grove_pods_placed_by_the_real_scheduler() {
    let Some(crds) = upstream_crds() else {
        return;
    };
    let cp = ControlPlane::start(harness::Options::default());
    let admin = cp.admin().await;
    for f in [
        "grove.io_podcliquesets.yaml",
        "grove.io_podcliquescalinggroups.yaml",
        "grove.io_podcliques.yaml",
        "scheduler.grove.io_podgangs.yaml",
    ] {
        let p = crds.join("grove").join(f);
        cp.kubectl(&["apply", "--server-side", "-f", p.to_str().unwrap()]);
    }
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/podcliquesets.grove.io",
        "crd/podcliquescalinggroups.grove.io",
        "crd/podcliques.grove.io",
        "crd/podgangs.scheduler.grove.io",
    ]);
    cp.kubectl(&["apply", "--server-side", "-k", &format!("{ROOT}/daemonset")]);
    cp.kubectl(&["create", "namespace", NS]);
    cp.kubectl(&["create", "serviceaccount", "default", "--namespace", NS]);

    // The scheduler test's nodes (rack A: clique 1 of two ready trays and a pending one,
    // clique 2 of six; rack B: clique 1 of five, clique 2 of four; two IB leaves of HGX nodes),
    // and a third clique in rack B: six ready trays and a degraded one, labelled like rack B's
    // trays. Its six trays tie with rack A's clique 2, which sorts first: only the pairing
    // sends a scaled prefill replica to its decode's rack.
    let mut all = direct_nodes();
    let like = |name: &str| all.iter().find(|n| n.0 == name).unwrap().clone();
    let (_, b1, gpus) = like("gb-b1-1");
    let (_, pending, _) = like("gb-a1-pending");
    let rack_b = b1.iter().find(|l| l.0 == CLUSTER).unwrap().1.clone();
    let mut b3 = b1.clone();
    b3.iter_mut().find(|l| l.0 == CLIQUE).unwrap().1 = format!("{rack_b}.3");
    let degraded: Vec<(String, String)> = pending
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            CLUSTER => (k, rack_b.clone()),
            FABRIC => (k, "degraded".to_string()),
            _ => (k, v),
        })
        .collect();
    for i in 1..=6 {
        all.push((format!("gb-b3-{i}"), b3.clone(), gpus));
    }
    all.push(("gb-b3-degraded".into(), degraded, gpus));
    for (name, labels, gpus) in &all {
        let l: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        harness::create_node_with(&admin, name, &l, *gpus).await;
    }
    let nodes = harness::nodes_by_name(&admin).await;

    // The chart's design with its webhook: Grove makes its pods with `default-scheduler`; the
    // webhook gives them the group profile, which scores every node and calls the extender.
    let routed = crate::workloads::start_routed_scheduling(&cp);
    crate::workloads::wait_for_routing(&cp).await;

    for round in 0..ROUNDS {
        // 1. GB200 trays: the sample as it is (prefill: 2 replicas of 1 leader + 4 workers,
        //    the second scaled into a PodGang of its own; decode: 1 leader + 2 workers), 4 GPUs
        //    a pod. Each replica fits one clique; all three fit rack B only if every choice
        //    follows the counterpart.
        let pcs = sample(&crds, &format!("gb-disagg-{round}"), 4, |_| {});
        let reps = deploy(&cp, &admin, &pcs).await;
        assert!(
            reps.iter().any(|r| !r.base && r.pcsg == "prefill"),
            "{reps:?}"
        );
        let placed = placements(&admin, &reps).await;
        let decode = reps.iter().find(|r| r.pcsg == "decode").unwrap();
        let d_clique = one_of(&nodes, &placed, &decode.pods, CLIQUE, "decode");
        let cluster = |clique: &str| clique.rsplit_once('.').unwrap().0.to_string();
        for r in &reps {
            let what = format!("{}-{} (PodGang {})", r.pcsg, r.k, r.gang);
            let clique = one_of(&nodes, &placed, &r.pods, CLIQUE, &what);
            eprintln!("round {round}: {what} in clique {clique}");
            assert_eq!(
                cluster(&clique),
                cluster(&d_clique),
                "{what} lands in its decode's NVLink cluster"
            );
            for p in &r.pods {
                assert_eq!(
                    label(&nodes, &placed[p], FABRIC),
                    Some("ready"),
                    "{p} on {}",
                    placed[p]
                );
            }
        }
        let cliques: std::collections::BTreeSet<String> = reps
            .iter()
            .map(|r| one_of(&nodes, &placed, &r.pods, CLIQUE, "replica"))
            .collect();
        assert_eq!(
            cliques.len(),
            reps.len(),
            "one pod per tray: one clique each"
        );
        assert_routed(&admin, &routed.group_profile).await;
        harness::delete_pods(&admin, NS).await;

        // 2. InfiniBand HGX nodes: the sample with 8 GPUs a pod, one worker per clique and one
        //    replica per scaling group; both replicas in one leaf.
        let pcs = sample(&crds, &format!("ib-disagg-{round}"), 8, |p| {
            for c in p["spec"]["template"]["cliques"].as_array_mut().unwrap() {
                c["spec"]["replicas"] = json!(1);
            }
            for g in p["spec"]["template"]["podCliqueScalingGroups"]
                .as_array_mut()
                .unwrap()
            {
                g["replicas"] = json!(1);
            }
        });
        let reps = deploy(&cp, &admin, &pcs).await;
        let placed = placements(&admin, &reps).await;
        let leaves: Vec<String> = reps
            .iter()
            .map(|r| {
                let what = format!("IB {}-{}", r.pcsg, r.k);
                let leaf = one_of(&nodes, &placed, &r.pods, "network.example.com/leaf", &what);
                eprintln!("round {round}: {what} in {leaf}");
                leaf
            })
            .collect();
        assert!(
            leaves.windows(2).all(|w| w[0] == w[1]),
            "prefill lands in its decode's leaf: {leaves:?}"
        );
        assert_routed(&admin, &routed.group_profile).await;
        harness::delete_pods(&admin, NS).await;
    }
}
