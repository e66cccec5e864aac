#!/usr/bin/env bash
# Builds the real control plane the end-to-end tests run against, from the Go module proxy:
# kube-apiserver, kube-controller-manager (only its admission-policy status controller runs in
# the tests), kube-scheduler and kubectl (tests/e2e/kube), helm (tests/e2e/helm), etcd from the
# etcd-bin-vendored-linux-amd64 crate, and the released CRDs of the topology-aware schedulers
# whose Go modules the proxy serves (Kueue), the LeaderWorkerSet manager (tests/e2e/lws) with
# its CRDs and webhook manifests, and the Kueue manager (tests/e2e/kueue, for the scheduling
# benchmark) with its CRDs, their conversion-webhook patches, its webhook manifests and its
# manager configuration; for the node tests, kubelet (tests/e2e/kube), containerd and its runc
# shim (module proxy), and the node tests' pause image binary and GPU device plugin
# (tests/e2e/kube/nodetest). runc itself is Debian's package.
#
# Binaries go to a cache outside the repository, keyed by a hash of the wrapper modules' go.mod
# and go.sum files and the versions below, so a second run builds nothing. Prints the binary folder
# as its last line of standard output.
#
#   tests/e2e/build-kube.sh            # build (or reuse) and print the folder
#   NODETOPO_KUBE_CACHE=DIR ...        # cache root (default ~/.cache/nodetopo-e2e)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

KUBE_VERSION=v1.37.2
HELM_VERSION=v3.22.0
ETCD_CRATE_VERSION=3.7.2
KUEUE_VERSION=v0.17.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
CERT_MANAGER_VERSION=v1.21.2
LWS_VERSION=v0.9.0
CONTAINERD_VERSION=v2.4.2
KUBE_CMDS="kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet"

key=$( { cat "$here/kube/go.mod" "$here/kube/go.sum" "$here/helm/go.mod" "$here/helm/go.sum"
  echo "$KUBE_VERSION $HELM_VERSION $ETCD_CRATE_VERSION $KUBE_CMDS"; } | sha256sum | cut -c1-16)
root="${NODETOPO_KUBE_CACHE:-$HOME/.cache/nodetopo-e2e}"
bin="$root/bin-$key"

log() { printf '[build-kube %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# CRDs come from the modules that release them; a file name carries its module version.
crd() { # crd NAME MODULE VERSION PATH-IN-MODULE
  local dest="$1/crds/$2-$4.yaml"
  [ -f "$dest" ] && return 0
  log "fetching $2 CRD from $3@$4"
  local dir
  dir=$(cd "$(mktemp -d)" && GOFLAGS= go mod download -json "$3@$4" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { log "$3@$4 was not served"; return 1; }
  mkdir -p "$1/crds"
  cp "$dir/$5" "$dest.tmp" && mv "$dest.tmp" "$dest"
}
crds() {
  crd "$1" kueue-topologies sigs.k8s.io/kueue "$KUEUE_VERSION" \
    config/components/crd/bases/kueue.x-k8s.io_topologies.yaml
  crd "$1" prometheus-podmonitors github.com/prometheus-operator/prometheus-operator \
    "$PROMETHEUS_OPERATOR_VERSION" example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml
  crd "$1" cert-manager-certificates github.com/cert-manager/cert-manager \
    "$CERT_MANAGER_VERSION" deploy/crds/cert-manager.io_certificates.yaml
  crd "$1" cert-manager-issuers github.com/cert-manager/cert-manager \
    "$CERT_MANAGER_VERSION" deploy/crds/cert-manager.io_issuers.yaml
}

# The LeaderWorkerSet manager (LeaderWorkerSet and DisaggregatedSet controllers and webhooks)
# from tests/e2e/lws, with the CRDs and webhook manifests of the same module version, cached by
# its own key so that a change there does not rebuild the control plane; linked as $bin/lws.
lws() { # lws BIN-DIR
  local lws_key lws_bin dir
  lws_key=$( { cat "$here/lws/go.mod" "$here/lws/go.sum"; echo "$LWS_VERSION"; } | sha256sum | cut -c1-16)
  lws_bin="$root/lws-$lws_key"
  if [ ! -f "$lws_bin/.complete" ]; then
    mkdir -p "$lws_bin.tmp"
    log "building the LeaderWorkerSet manager $LWS_VERSION (a cold build takes a few minutes)"
    local t0; t0=$(date +%s)
    (cd "$here/lws" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/lws/pkg/version.GitVersion=$LWS_VERSION" \
      -o "$lws_bin.tmp/lws-manager" sigs.k8s.io/lws/cmd)
    log "lws-manager built in $(( $(date +%s) - t0 )) s"
    dir=$(cd "$here/lws" && GOFLAGS= go list -m -f '{{.Dir}}' sigs.k8s.io/lws)
    mkdir -p "$lws_bin.tmp/crds" "$lws_bin.tmp/webhook"
    cp "$dir"/config/crd/bases/*.yaml "$lws_bin.tmp/crds/"
    cp "$dir"/config/webhook/manifests.yaml "$dir"/config/webhook/mutating-patch.yaml \
      "$dir"/config/webhook/validating-patch.yaml "$lws_bin.tmp/webhook/"
    chmod -R u+w "$lws_bin.tmp"
    touch "$lws_bin.tmp/.complete"
    rm -rf "$lws_bin"
    mv "$lws_bin.tmp" "$lws_bin"
  fi
  ln -sfn "$lws_bin" "$1/lws"
}

# The Kueue manager (queueing, admission, topology-aware scheduling and the plain-pod
# integration) from tests/e2e/kueue, with the CRDs, the CRDs' conversion-webhook patches, the
# webhook manifests and the manager configuration of the same module version, cached by its own
# key; linked as $bin/kueue.
kueue() { # kueue BIN-DIR
  local k_key k_bin dir t0
  k_key=$( { cat "$here/kueue/go.mod" "$here/kueue/go.sum"; echo "$KUEUE_VERSION"; } | sha256sum | cut -c1-16)
  k_bin="$root/kueue-$k_key"
  if [ ! -f "$k_bin/.complete" ]; then
    rm -rf "$k_bin.tmp"
    mkdir -p "$k_bin.tmp"
    log "building the Kueue manager $KUEUE_VERSION (a cold build takes several minutes on 2 cores)"
    t0=$(date +%s)
    (cd "$here/kueue" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
      -o "$k_bin.tmp/kueue-manager" sigs.k8s.io/kueue/cmd/kueue)
    log "kueue-manager built in $(( $(date +%s) - t0 )) s"
    dir=$(cd "$here/kueue" && GOFLAGS= go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)
    mkdir -p "$k_bin.tmp/crds" "$k_bin.tmp/crd-patches" "$k_bin.tmp/webhook" "$k_bin.tmp/manager"
    cp "$dir"/config/components/crd/bases/*.yaml "$k_bin.tmp/crds/"
    cp "$dir"/config/components/crd/kustomization.yaml "$dir"/config/components/crd/patches/*.yaml \
      "$k_bin.tmp/crd-patches/"
    cp "$dir"/config/components/webhook/manifests.yaml "$dir"/config/components/webhook/kustomization.yaml \
      "$k_bin.tmp/webhook/"
    cp "$dir"/config/components/manager/controller_manager_config.yaml "$k_bin.tmp/manager/"
    chmod -R u+w "$k_bin.tmp"
    touch "$k_bin.tmp/.complete"
    rm -rf "$k_bin"
    mv "$k_bin.tmp" "$k_bin"
  fi
  ln -sfn "$k_bin" "$1/kueue"
}

# containerd, its runc shim and ctr, built without cgo and without the snapshotters that need
# it; cached by version.
containerd() { # containerd BIN-DIR
  local c_key c_bin t0
  c_key=$(echo "$CONTAINERD_VERSION no_btrfs no_devmapper no_zfs no_aufs" | sha256sum | cut -c1-16)
  c_bin="$root/containerd-$c_key"
  if [ ! -f "$c_bin/.complete" ]; then
    rm -rf "$c_bin.tmp"
    mkdir -p "$c_bin.tmp"
    log "building containerd $CONTAINERD_VERSION (about a minute)"
    t0=$(date +%s)
    local pkg=github.com/containerd/containerd/v2/cmd
    (cd "$c_bin.tmp" && CGO_ENABLED=0 GOFLAGS= GOBIN="$c_bin.tmp" go install -trimpath \
      -tags "no_btrfs no_devmapper no_zfs no_aufs" \
      "$pkg/containerd@$CONTAINERD_VERSION" "$pkg/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
      "$pkg/ctr@$CONTAINERD_VERSION")
    log "containerd built in $(( $(date +%s) - t0 )) s"
    touch "$c_bin.tmp/.complete"
    rm -rf "$c_bin"
    mv "$c_bin.tmp" "$c_bin"
  fi
  ln -sfn "$c_bin" "$1/containerd"
}

# The node tests' own programs (tests/e2e/kube/nodetest): the pause binary of the sandbox image
# and the GPU device plugin, cached by their sources and the wrapper module's go.sum.
nodetest() { # nodetest BIN-DIR
  local n_key n_bin
  n_key=$( { cat "$here/kube/go.sum"; find "$here/kube/nodetest" -type f -name '*.go' | LC_ALL=C sort \
    | xargs cat; } | sha256sum | cut -c1-16)
  n_bin="$root/nodetest-$n_key"
  if [ ! -f "$n_bin/.complete" ]; then
    rm -rf "$n_bin.tmp"
    mkdir -p "$n_bin.tmp"
    (cd "$here/kube" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" \
      -o "$n_bin.tmp/" ./nodetest/pause ./nodetest/gpu-device-plugin)
    touch "$n_bin.tmp/.complete"
    rm -rf "$n_bin"
    mv "$n_bin.tmp" "$n_bin"
  fi
  ln -sfn "$n_bin" "$1/nodetest"
}

if [ -f "$bin/.complete" ]; then
  crds "$bin"
  lws "$bin"
  kueue "$bin"
  containerd "$bin"
  nodetest "$bin"
  log "cached: $bin"
  echo "$bin"
  exit 0
fi

mkdir -p "$bin.tmp"
started=$(date +%s)

major=${KUBE_VERSION#v}; major=${major%%.*}
minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# The committed go.mod and go.sum are complete: the build never changes them.
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
for cmd in $KUBE_CMDS; do
  if [ -x "$bin.tmp/$cmd" ]; then log "$cmd: already built in this run"; continue; fi
  log "building $cmd $KUBE_VERSION (a cold build takes many minutes on 2 cores)"
  t0=$(date +%s)
  (cd "$here/kube" && go build -trimpath -ldflags "$kube_ldflags" -o "$bin.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  log "$cmd built in $(( $(date +%s) - t0 )) s"
done

if [ ! -x "$bin.tmp/helm" ]; then
  log "building helm $HELM_VERSION"
  t0=$(date +%s)
  helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    helm_ldflags+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
  done
  (cd "$here/helm" && go build -trimpath -ldflags "$helm_ldflags" -o "$bin.tmp/helm" helm.sh/helm/v3/cmd/helm)
  log "helm built in $(( $(date +%s) - t0 )) s"
fi

if [ ! -x "$bin.tmp/etcd" ]; then
  log "fetching etcd $ETCD_CRATE_VERSION (crate etcd-bin-vendored-linux-amd64)"
  crate_dir=$(mktemp -d)
  curl -fsSL --retry 3 -o "$crate_dir/etcd.crate" \
    "https://static.crates.io/crates/etcd-bin-vendored-linux-amd64/etcd-bin-vendored-linux-amd64-$ETCD_CRATE_VERSION.crate"
  tar -xzf "$crate_dir/etcd.crate" -C "$crate_dir"
  found="$crate_dir/etcd-bin-vendored-linux-amd64-$ETCD_CRATE_VERSION/bin/etcd"
  [ -f "$found" ] || { log "no bin/etcd in the crate"; exit 1; }
  install -m 0755 "$found" "$bin.tmp/etcd"
  rm -rf "$crate_dir"
fi

crds "$bin.tmp"

for b in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
  "$bin.tmp/$b" --version >&2
done
"$bin.tmp/kubectl" version --client >&2
"$bin.tmp/helm" version --short >&2
"$bin.tmp/etcd" --version | head -n1 >&2

touch "$bin.tmp/.complete"
rm -rf "$bin"
mv "$bin.tmp" "$bin"
lws "$bin"
kueue "$bin"
containerd "$bin"
nodetest "$bin"
log "control plane ready in $(( $(date +%s) - started )) s: $bin"
echo "$bin"
