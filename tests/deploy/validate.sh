#!/usr/bin/env bash
# Validates the deployment files without a cluster or helm:
#   - every manifest in daemonset/ (and the generated Volcano ConfigMap) against the Kubernetes
#     JSON schemas of each supported version, strict (unknown fields fail), with kubernetes-validate;
#   - the chart's values.yaml against values.schema.json;
#   - daemonset/ against the chart's defaults (check_sync.py);
#   - helm lint and helm template, only where a helm binary happens to be installed.
# Custom resources (Kueue, KAI, Grove topology objects, PodMonitor) have no schema there: Rust
# tests check their field names; daemonset/extender-routed/certificate.yaml (cert-manager) is
# checked by a server-side dry run against cert-manager's CRDs in the end-to-end chart test.
# Usage: tests/deploy/validate.sh [path/to/nodetopo]
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSIONS=(1.30.0 1.31.0 1.32.0 1.33.0 1.34.0 1.35.0 1.36.0 1.37.0)
venv=${NODETOPO_DEPLOY_VENV:-/tmp/nodetopo-deploy-venv}
if [ ! -x "$venv/bin/kubernetes-validate" ] || ! "$venv/bin/python" -c 'import jsonschema, yaml' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    kubernetes-validate==1.37.0 'jsonschema>=4,<5' 'PyYAML>=6,<7'
fi
py="$venv/bin/python"
kv="$venv/bin/kubernetes-validate"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

manifests=()
while IFS= read -r f; do manifests+=("$f"); done \
  < <(find daemonset -name '*.yaml' ! -name kustomization.yaml ! -name certificate.yaml | sort)

bin=${1:-}
if [ -n "$bin" ]; then
  "$bin" manifests topology --for volcano > "$tmp/volcano-configmap.yaml"
  "$bin" manifests topology --for volcano --block-label network.example.com/leaf --name gb200 \
    > "$tmp/volcano-configmap-block.yaml"
  manifests+=("$tmp/volcano-configmap.yaml" "$tmp/volcano-configmap-block.yaml")
fi

echo "== kubernetes-validate --strict (${VERSIONS[*]})"
for v in "${VERSIONS[@]}"; do
  # --no-warn hides nothing here: every file's kinds are built in, so a missing schema fails below.
  out=$("$kv" --strict --quiet -k "$v" "${manifests[@]}" 2>&1) || { echo "$out"; exit 1; }
  if grep -q "Couldn't find schema" <<<"$out"; then echo "$out"; exit 1; fi
  echo "  $v: ${#manifests[@]} files valid"
done

# The check must be able to fail: an unknown field is rejected in strict mode.
cat > "$tmp/bad.yaml" <<'YAML'
apiVersion: v1
kind: ServiceAccount
metadata:
  name: x
automountServiceAcountToken: false
YAML
if "$kv" --strict --quiet -k "${VERSIONS[0]}" "$tmp/bad.yaml" >/dev/null 2>&1; then
  echo "kubernetes-validate accepted an unknown field; strict mode is not working" >&2
  exit 1
fi

echo "== values.yaml against values.schema.json"
"$py" - <<'PY'
import copy, json, pathlib, sys
import jsonschema, yaml
chart = pathlib.Path("charts/nodetopo")
schema = json.loads((chart / "values.schema.json").read_text())
values = yaml.safe_load((chart / "values.yaml").read_text())
jsonschema.Draft7Validator.check_schema(schema)
jsonschema.validate(values, schema)

def walk(node, path=""):
    """Every object in the schema forbids unknown keys, unless it stands for a Kubernetes type."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
            sys.exit(f"schema object {path or '/'} allows unknown keys")
        for k, v in node.items():
            walk(v, f"{path}/{k}")
walk(schema)

def keys(v, path=()):
    if isinstance(v, dict):
        for k, x in v.items():
            yield path + (k,)
            yield from keys(x, path + (k,))

def covered(path):
    node = schema
    for k in path:
        props = node.get("properties")
        if props is None:
            return True  # a free-form Kubernetes object
        if k not in props:
            return False
        node = props[k]
    return True
missing = [".".join(p) for p in keys(values) if not covered(p)]
if missing:
    sys.exit(f"values without a schema entry: {missing}")

for bad in ({"agnet": {}}, {"compatLabels": ["gfd"]}, {"agent": {"interval": "soon"}},
            {"admissionPolicy": {"enabled": "yes"}}, {"agent": {"maxUnavailable": "ten"}},
            {"webhook": {"tls": {"mode": "vault"}}}, {"webhook": {"keys": ["nvlink domain"]}},
            {"webhook": {"tls": {"mode": "secret", "secretName": "", "caBundle": ""}}},
            {"webhook": {"blockLabels": ["Leaf Label"]}}, {"webhook": {"timeoutSeconds": 60}},
            {"webhook": {"keys": []}}, {"networkPolicy": {"grpcFrom": "everyone"}},
            {"webhook": {"consumers": ["vllm"]}}, {"webhook": {"podKeys": ["example.com/rack"]}},
            {"networkPolicy": {"enabled": "yes"}}):
    v = copy.deepcopy(values)
    for k, x in bad.items():
        v[k] = {**v[k], **x} if isinstance(x, dict) and isinstance(v.get(k), dict) else x
    try:
        jsonschema.validate(v, schema)
    except jsonschema.ValidationError:
        continue
    sys.exit(f"schema accepted a bad value: {bad}")
print("  values.yaml valid; every value has a schema entry; bad values rejected")
PY

echo "== daemonset/ equals the chart's defaults"
"$py" tests/deploy/check_sync.py

if command -v helm >/dev/null 2>&1; then
  echo "== helm lint and helm template"
  helm lint charts/nodetopo
  helm template nodetopo charts/nodetopo --namespace nodetopo > "$tmp/chart.yaml"
  helm template nodetopo charts/nodetopo --namespace nodetopo --set extender.enabled=true \
    --set compatLabels='{topograph}' --set webhook.enabled=true \
    --set 'webhook.blockLabels={network.topology.nvidia.com/leaf}' --set networkPolicy.enabled=true \
    --set 'webhook.consumers={llm-d,dynamo}' --set 'webhook.podKeys={example.com/rack=leaf}' \
    --set agent.lldp.enabled=true --set-string 'agent.fabricRails.0x0002c90300a1b2c3=rail-0' \
    > "$tmp/chart-all.yaml"
  "$kv" --strict --quiet -k "${VERSIONS[0]}" "$tmp/chart.yaml" "$tmp/chart-all.yaml"
  # agent.lldp.enabled: user 0, only NET_RAW, --lldp=on (SECURITY.md).
  grep -q -- '- --lldp=on' "$tmp/chart-all.yaml"
  grep -q -- '- NET_RAW' "$tmp/chart-all.yaml"
  # agent.fabricRails alone renders the mapping file's rails: section and passes --fabric-names.
  grep -q -- '- --fabric-names=/etc/nodetopo/fabric-names/names.yaml' "$tmp/chart-all.yaml"
  grep -q -- '^    rails:' "$tmp/chart-all.yaml"
  if grep -q -- 'NET_RAW' "$tmp/chart.yaml"; then
    echo "the chart's defaults grant NET_RAW" >&2
    exit 1
  fi
else
  echo "== helm is not installed: chart templates were not rendered (check_sync.py compares them textually)"
fi
echo "deployment files valid"
