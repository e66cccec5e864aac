#!/usr/bin/env bash
# What a node test run (tests/e2e/node.rs: containerd, runc and a kubelet on this machine) can
# leave behind, listed one per line; exits 1 when anything is found.
#
#   tests/e2e/node-leftovers.sh            # check (CI runs this after the node tests)
#   tests/e2e/node-leftovers.sh --clean    # remove it all first, then check
#
# The node tests run their processes from folders named nodetopo-node-* (a temp dir per run)
# and from the binary cache of build-kube.sh; the kubelet and containerd also use paths that no
# flag moves: /var/lib/kubelet/device-plugins, /var/log/pods, /var/log/containers,
# /run/containerd (the shims' sockets) and the kubepods cgroups. Run as root. Never run this on
# a machine whose own kubelet or containerd is in use: --clean removes those paths.
set -uo pipefail

clean=0
[ "${1:-}" = --clean ] && clean=1

FIXED_PATHS=(/var/lib/kubelet /var/log/pods /var/log/containers /run/containerd)

# The node tests' run folders (a temp dir each).
run_dirs() {
  printf '%s\n' "${TMPDIR:-/tmp}"/nodetopo-node-* /tmp/nodetopo-node-* | sort -u \
    | while read -r d; do [ -e "$d" ] && echo "$d"; done
}

# PIDs of live (not zombie) processes of a node test run: our kubelet, containerd and shims, and
# everything in a kubepods cgroup.
node_pids() {
  local p cmd state
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
    state=$(awk '/^State:/ {print $2}' "$p/status" 2>/dev/null)
    [ "$state" = Z ] && continue
    case "$cmd" in
      *nodetopo-node-*|*nodetopo-e2e/bin-*/kubelet*|*nodetopo-e2e/containerd-*|*nodetopo-e2e/nodetest-*) echo "${p#/proc/}" ;;
    esac
  done
  find /sys/fs/cgroup -path '*/kubepods*' -name cgroup.procs 2>/dev/null | while read -r f; do
    while read -r pid; do
      state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
      [ -n "$state" ] && [ "$state" != Z ] && echo "$pid"
    done <"$f"
  done
}

# Mount points of a node test run, deepest first.
node_mounts() {
  awk '{print $5}' /proc/self/mountinfo | sed 's/\\040/ /g' \
    | grep -E 'nodetopo-node-|^/var/lib/kubelet|^/run/containerd|^/var/log/pods' \
    | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-
}

# kubepods cgroups in every hierarchy, deepest first.
node_cgroups() {
  find /sys/fs/cgroup -type d -name 'kubepods*' 2>/dev/null | while read -r top; do
    find "$top" -depth -type d
  done | awk '{print length, $0}' | sort -rn | cut -d' ' -f2- | uniq
}

if [ "$clean" = 1 ]; then
  for _ in 1 2 3 4 5; do
    pids=$(node_pids | sort -u)
    [ -z "$pids" ] && break
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
    sleep 0.5
  done
  node_mounts | while read -r m; do umount -l "$m" 2>/dev/null; done
  for _ in 1 2 3 4 5; do
    left=0
    while read -r c; do rmdir "$c" 2>/dev/null || left=1; done < <(node_cgroups)
    [ "$left" = 0 ] && break
    sleep 0.5
  done
  for p in "${FIXED_PATHS[@]}"; do rm -rf "$p"; done
  run_dirs | while read -r d; do rm -rf "$d"; done
fi

found=0
report() { echo "left behind: $*"; found=1; }
for pid in $(node_pids | sort -u); do
  report "process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)"
done
while read -r m; do [ -n "$m" ] && report "mount $m"; done < <(node_mounts)
while read -r c; do [ -n "$c" ] && report "cgroup $c"; done < <(node_cgroups)
for p in "${FIXED_PATHS[@]}"; do [ -e "$p" ] && report "path $p"; done
while read -r d; do report "path $d"; done < <(run_dirs)
[ "$found" = 0 ] && echo "node tests left nothing behind"
exit "$found"
