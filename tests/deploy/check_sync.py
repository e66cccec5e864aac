#!/usr/bin/env python3
"""Checks that daemonset/ equals the Helm chart's defaults, as far as that can be done without helm.

Two kinds of check:
- fields that templates fill from values: compared with values.yaml (release and namespace
  "nodetopo", so the chart's names are nodetopo-agent, nodetopo-extender, ...);
- literal blocks of the templates (RBAC rules, probes, admission policy validations, ...): parsed
  out of the template text, which holds no template actions there, and compared with daemonset/.
"""
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "nodetopo"
PLAIN = ROOT / "daemonset"
NAMESPACE = "nodetopo"
failures = []


def check(what, got, want):
    if got != want:
        failures.append(f"{what}: daemonset/ has {got!r}, chart defaults give {want!r}")


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def find(objs, kind, name=None):
    for o in objs:
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name):
            return o
    raise SystemExit(f"no {kind} {name or ''} in daemonset/")


def literal(template, key, after=None, templated_ok=False):
    """The YAML block under the first `key:` line (after the line containing `after`)."""
    lines = (CHART / "templates" / template).read_text().splitlines()
    start = 0
    if after is not None:
        start = next(i for i, l in enumerate(lines) if after in l)
    for i in range(start, len(lines)):
        line = lines[i]
        if line.strip() == f"{key}:" or line.strip() == f"- {key}:":
            indent = len(line) - len(line.lstrip(" -"))
            body = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip(" ")) <= indent:
                    break
                body.append(nxt)
            text = "\n".join(body)
            # A part rendered only off the defaults (the probes' host, set only when
            # agent.listenAddress is not a wildcard address) is not in daemonset/.
            text = re.sub(r"^\s*\{\{- if not \$wildcard \}\}\n.*?^\s*\{\{- end \}\}\n?", "",
                          text + "\n", flags=re.S | re.M)
            if templated_ok:
                text = re.sub(r"\{\{[^}]*\}\}", "TEMPLATED", text.replace('"{{ include "nodetopo.compatKeys" . }}"', "TEMPLATED"))
            if "{{" in text:
                raise SystemExit(f"{template}: block {key} is not literal")
            return yaml.safe_load(text)
    raise SystemExit(f"{template}: no block {key}")


values = yaml.safe_load((CHART / "values.yaml").read_text())
chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
image = f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}"
plain = [o for f in sorted(PLAIN.glob("*.yaml")) if f.name != "kustomization.yaml" for o in docs(f)]
ext = [o for f in sorted((PLAIN / "extender").glob("*.yaml")) if f.name != "kustomization.yaml"
       for o in docs(f)]

# The kustomizations list every file, and nothing else.
for d, objs_dir in ((PLAIN, PLAIN), (PLAIN / "extender", PLAIN / "extender")):
    listed = set(yaml.safe_load((d / "kustomization.yaml").read_text())["resources"])
    present = {f.name for f in objs_dir.glob("*.yaml")} - {"kustomization.yaml"}
    check(f"{d.name}/kustomization.yaml resources", listed, present)

# Agent DaemonSet.
a = values["agent"]
ds = find(plain, "DaemonSet", "nodetopo-agent")
check("DaemonSet namespace", ds["metadata"]["namespace"], NAMESPACE)
pod = ds["spec"]["template"]["spec"]
c = pod["containers"][0]
check("agent image", c["image"], image)
check("agent imagePullPolicy", c["imagePullPolicy"], values["image"]["pullPolicy"])
args = ["agent", f"--grpc-listen=0.0.0.0:{a['grpcPort']}", f"--metrics-listen=0.0.0.0:{a['metricsPort']}",
        "--sysfs-root=/host-sys", f"--label-prefix={values['labelPrefix']}", f"--interval={a['interval']}",
        f"--log-format={a['logFormat']}"]
if values["compatLabels"]:
    args.append("--compat-labels=" + ",".join(values["compatLabels"]))
if a["noKube"]:
    args.append("--no-kube")
if not a["infiniband"]["enabled"]:
    args.append("--ib-smp=off")
args.append("--lldp=on" if a["lldp"]["enabled"] else "--lldp=off")
if a["fabricNames"] or a["fabricRails"]:
    args.append("--fabric-names=/etc/nodetopo/fabric-names/names.yaml")
args += a["extraArgs"]
check("agent args", c["args"], args)
env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
check("NODE_NAME", env.get("NODE_NAME"), {"fieldRef": {"fieldPath": "spec.nodeName"}})
check("NVIDIA_VISIBLE_DEVICES", env.get("NVIDIA_VISIBLE_DEVICES"), a["nvidiaVisibleDevices"])
check("NVIDIA_DRIVER_CAPABILITIES", env.get("NVIDIA_DRIVER_CAPABILITIES"), a["nvidiaDriverCapabilities"])
check("agent ports", {p["name"]: p["containerPort"] for p in c["ports"]},
      {"grpc": a["grpcPort"], "metrics": a["metricsPort"]})
check("runtimeClassName", pod.get("runtimeClassName"), a["runtimeClassName"] or None)
check("hostNetwork", pod.get("hostNetwork"), True)
check("priorityClassName", pod.get("priorityClassName"), a["priorityClassName"] or None)
check("terminationGracePeriodSeconds", pod.get("terminationGracePeriodSeconds"), a["terminationGracePeriodSeconds"])
check("maxUnavailable", ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], a["maxUnavailable"])
check("agent pod securityContext", pod["securityContext"], a["podSecurityContext"])
check("agent securityContext", c["securityContext"], a["securityContext"])
check("agent resources", c["resources"], a["resources"])
check("agent tolerations", pod.get("tolerations"), a["tolerations"] or None)
check("agent affinity", pod.get("affinity"), a["affinity"] or None)
check("agent nodeSelector", pod.get("nodeSelector"), a["nodeSelector"] or None)
check("serviceAccountName", pod["serviceAccountName"], "nodetopo-agent")
check("host-sys volume", pod["volumes"][0]["hostPath"]["path"], a["sysfsHostPath"])
check("infiniband mount", any(v["name"] == "dev-infiniband" for v in pod["volumes"]), a["infiniband"]["enabled"])
for probe in ("livenessProbe", "readinessProbe"):
    check(f"agent {probe}", c[probe], literal("agent-daemonset.yaml", probe))
check("agent host-sys mount", c["volumeMounts"][0], {"name": "host-sys", "mountPath": "/host-sys", "readOnly": True})

# Agent RBAC.
check("agent ClusterRole rules", find(plain, "ClusterRole", "nodetopo-agent")["rules"],
      literal("agent-rbac.yaml", "rules"))
crb = find(plain, "ClusterRoleBinding", "nodetopo-agent")
check("agent binding subject", crb["subjects"], [{"kind": "ServiceAccount", "name": "nodetopo-agent", "namespace": NAMESPACE}])
find(plain, "ServiceAccount", "nodetopo-agent")

# Admission policy.
if values["admissionPolicy"]["enabled"]:
    vap = find(plain, "ValidatingAdmissionPolicy", "nodetopo-agent-own-node")["spec"]
    tpl = "admission-policy.yaml"
    check("VAP failurePolicy", vap["failurePolicy"], "Fail")
    check("VAP matchConstraints", vap["matchConstraints"], literal(tpl, "matchConstraints"))
    check("VAP validations", vap["validations"], literal(tpl, "validations"))
    check("VAP match condition", vap["matchConditions"][0]["expression"],
          f"request.userInfo.username == 'system:serviceaccount:{NAMESPACE}:nodetopo-agent'")
    variables = {v["name"]: v["expression"] for v in vap["variables"]}
    check("VAP ownPrefix", variables["ownPrefix"], f"'{values['labelPrefix']}/'")
    compat = {"topograph": "'accelerator.topograph.run/domain'", "gfd-clique": "'nvidia.com/gpu.clique'"}
    check("VAP extraKeys", variables["extraKeys"], "[" + ", ".join(compat[c] for c in values["compatLabels"]) + "]")
    tpl_vars = {v["name"]: v["expression"] for v in literal(tpl, "variables", templated_ok=True)}
    check("VAP variable names", list(variables), list(tpl_vars))
    for name, expr in tpl_vars.items():
        if "TEMPLATED" not in expr:
            check(f"VAP variable {name}", variables.get(name), expr)
    binding = find(plain, "ValidatingAdmissionPolicyBinding")["spec"]
    check("VAP binding", binding, {"policyName": "nodetopo-agent-own-node", "validationActions": ["Deny"]})

# Extender (daemonset/extender/ against the chart with extender.enabled).
e = values["extender"]
dep = find(ext, "Deployment", "nodetopo-extender")
epod = dep["spec"]["template"]["spec"]
ec = epod["containers"][0]
check("extender replicas", dep["spec"]["replicas"], e["replicas"])
check("extender image", ec["image"], image)
check("extender args", ec["args"], ["extender", f"--listen=0.0.0.0:{e['port']}", f"--agent-port={a['grpcPort']}"] + e["extraArgs"])
check("extender resources", ec["resources"], e["resources"])
check("extender pod securityContext", epod["securityContext"], e["podSecurityContext"])
check("extender securityContext", ec["securityContext"], e["securityContext"])
check("extender serviceAccountName", epod["serviceAccountName"], "nodetopo-extender")
for probe in ("livenessProbe", "readinessProbe"):
    check(f"extender {probe}", ec[probe], literal("extender-deployment.yaml", probe))
svc = find(ext, "Service", "nodetopo-extender")
check("extender service port", svc["spec"]["ports"][0]["port"], e["port"])
check("extender ClusterRole rules", find(ext, "ClusterRole", "nodetopo-extender")["rules"],
      literal("extender-rbac.yaml", "rules"))
cm = find(ext, "ConfigMap", "nodetopo-scheduler-config")
sched = yaml.safe_load(cm["data"]["scheduler-config.yaml"])
check("scheduler config kind", (sched["apiVersion"], sched["kind"]),
      ("kubescheduler.config.k8s.io/v1", "KubeSchedulerConfiguration"))
sc = e["schedulerConfig"]
check("percentageOfNodesToScore", sched.get("percentageOfNodesToScore"), sc["percentageOfNodesToScore"])
check("scheduler extender", sched["extenders"], [{
    "urlPrefix": f"http://nodetopo-extender.{NAMESPACE}.svc:{e['port']}", "filterVerb": "filter",
    "prioritizeVerb": "prioritize", "weight": sc["weight"], "nodeCacheCapable": sc["nodeCacheCapable"],
    "ignorable": sc["ignorable"], "httpTimeout": sc["httpTimeout"],
    "managedResources": [{"name": r, "ignoredByScheduler": False} for r in sc["managedResources"]]}])

if failures:
    print("daemonset/ and the chart's defaults differ:", *failures, sep="\n  ")
    sys.exit(1)
print("daemonset/ equals the chart's defaults in every checked field")
