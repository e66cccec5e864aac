#!/usr/bin/env bash
# Builds the nodetopo container image without Docker and without a registry, as a docker-archive
# (the `docker save` layout: manifest.json, a config JSON named by its sha256, uncompressed layer
# tarballs) that `ctr -n k8s.io images import FILE` loads.
#
# The Dockerfile stays the one source of the image: the runtime stage (everything after its last
# FROM) is read here and reproduced, never restated. The base layer is Debian minbase of the FROM
# tag's suite with the packages of its `apt-get install` line(s), made slim the way the official
# -slim images are (dpkg path excludes), by mmdebstrap; the second layer is the binary at the COPY
# destination; USER, EXPOSE, ENTRYPOINT and CMD become the image config. An instruction in the
# runtime stage this script does not know how to reproduce fails the build, naming the line, so
# the Dockerfile and this image cannot drift apart silently.
#
#   tests/e2e/build-image.sh agent DOCKERFILE BINARY TAG OUT.tar   # the agent image
#   tests/e2e/build-image.sh pause BINARY TAG OUT.tar              # a static BINARY as /pause
#   tests/e2e/build-image.sh describe DOCKERFILE                   # key=value of what was read
#
# The archive's path is the last line of standard output; progress goes to standard error.
#
#   NODETOPO_KUBE_CACHE=DIR          cache root (default ~/.cache/nodetopo-e2e); the base layer is
#                                    cached there as image-base-KEY.tar, KEY a hash of the suite,
#                                    the packages and the recipe below (not of the mirror)
#   NODETOPO_DEBIAN_MIRROR=URL       Debian mirror (default http://deb.debian.org/debian)
#   NODETOPO_IMAGE_BASE_TAR=FILE     for tests: use this uncompressed tar as the base layer instead
#                                    of building one (no mmdebstrap, no network, no root)
#
# Needs python3 (standard library only), GNU tar, sha256sum and, for the agent image, strip
# (binutils) and mmdebstrap (Debian package mmdebstrap; as root it uses chroot, otherwise
# unprivileged user namespaces).
set -euo pipefail

# Bump to rebuild cached base layers when the recipe changes in a way the key does not see (the
# key covers the mmdebstrap arguments below, but not, say, the content of its hooks).
BASE_RECIPE=1
ARCH=amd64
# Slim like the official debian:*-slim images: no documentation but copyright files, no manual or
# info pages, no translations (glibc's locale.alias stays). Part of the cache key.
SLIM_DPKG_OPTS=(
  'path-exclude=/usr/share/doc/*'
  'path-include=/usr/share/doc/*/copyright'
  'path-exclude=/usr/share/man/*'
  'path-exclude=/usr/share/groff/*'
  'path-exclude=/usr/share/info/*'
  'path-exclude=/usr/share/lintian/*'
  'path-exclude=/usr/share/linda/*'
  'path-exclude=/usr/share/locale/*'
  'path-include=/usr/share/locale/locale.alias'
)
IMAGE_PATH='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
# Every file this script writes into a layer or an archive gets this time, so that equal inputs
# give byte-equal layers (and equal diff_ids).
EPOCH=0
MIRROR="${NODETOPO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${NODETOPO_KUBE_CACHE:-$HOME/.cache/nodetopo-e2e}"

log() { printf '[build-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'build-image.sh: %s\n' "$*" >&2; exit 1; }
usage() {
  echo "usage:" >&2
  sed -n 's/^#   \(tests\/e2e\/build-image.sh .*\)$/  \1/p' "$0" >&2
  exit 2
}
need() { # need COMMAND HINT
  command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}

# Paths removed on exit, success or not: temporary files and folders of this run.
cleanup=()
on_exit() { local p; for p in "${cleanup[@]}"; do rm -rf -- "$p"; done; }
trap on_exit EXIT

# The Dockerfile reader, the ELF check and the archive's JSON files, in Python for its JSON and
# its error messages.
read -r -d '' PY <<'PYTHON' || true
import hashlib, json, os, re, struct, sys

def fail(msg):
    print("build-image.sh: " + msg, file=sys.stderr)
    sys.exit(1)

def instructions(path):
    """(line number, text) of each instruction: continuations joined, comments dropped."""
    out, parts, start = [], None, 0
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for no, raw in enumerate(lines, 1):
        s = raw.strip()
        if re.match(r"#\s*escape\s*=", s, re.I):
            fail(f"{path}:{no}: the escape parser directive is not supported")
        if not s or s.startswith("#"):
            continue  # blank and comment lines end nothing, also inside a continuation
        if parts is None:
            parts, start = [], no
        if s.endswith("\\"):
            parts.append(s[:-1].strip())
            continue
        parts.append(s)
        text = " ".join(p for p in parts if p)
        if re.search(r"<<-?[\"']?[A-Za-z_]", text):
            fail(f"{path}:{start}: heredocs are not supported: {text}")
        out.append((start, text))
        parts = None
    if parts is not None:
        fail(f"{path}:{start}: the file ends inside a line continuation")
    return out

def exec_form(path, no, text, arg):
    try:
        v = json.loads(arg)
    except ValueError:
        v = None
    if not (isinstance(v, list) and v and all(isinstance(x, str) for x in v)):
        fail(f"{path}:{no}: only the JSON exec form (a non-empty array of strings) is supported: {text}")
    return v

APT_OPTS = {"-y", "--yes", "--no-install-recommends"}
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")

def apt_packages(path, no, text, arg):
    """The packages of `apt-get update && apt-get install -y --no-install-recommends PKGS &&
    rm -rf /var/lib/apt/lists/*`, the one RUN this script reproduces."""
    steps = [" ".join(s.split()) for s in arg.split("&&")]
    if len(steps) != 3 or steps[0] != "apt-get update" or \
            steps[2] != "rm -rf /var/lib/apt/lists/*" or not steps[1].startswith("apt-get install "):
        fail(f"{path}:{no}: unsupported RUN in the runtime stage (only `apt-get update && apt-get "
             f"install -y --no-install-recommends PKGS && rm -rf /var/lib/apt/lists/*`): {text}")
    words = steps[1].split()[2:]
    opts = [w for w in words if w.startswith("-")]
    pkgs = [w for w in words if not w.startswith("-")]
    bad = [o for o in opts if o not in APT_OPTS]
    if bad:
        fail(f"{path}:{no}: unsupported apt-get option {bad[0]}: {text}")
    if "--no-install-recommends" not in opts:
        fail(f"{path}:{no}: apt-get install without --no-install-recommends (mmdebstrap installs no "
             f"Recommends): {text}")
    bad = [p for p in pkgs if not PACKAGE.fullmatch(p)]
    if bad or not pkgs:
        fail(f"{path}:{no}: expected plain package names, got {bad[0] if bad else 'none'}: {text}")
    return pkgs

def describe(path):
    stages, froms = [], []  # stage names (index when unnamed), instruction indexes of FROM
    instrs = instructions(path)
    for i, (no, text) in enumerate(instrs):
        if text.split()[0].upper() == "FROM":
            m = re.fullmatch(r"\S+\s+(?:--\S+\s+)*\S+(?:\s+as\s+(\S+))?", text, re.I)
            stages.append((m.group(1) if m and m.group(1) else str(len(stages))).lower())
            froms.append(i)
    if not froms:
        fail(f"{path}: no FROM")
    no, text = instrs[froms[-1]]
    m = re.fullmatch(r"FROM\s+debian:([a-z]+)-slim(?:\s+AS\s+\S+)?", text, re.I)
    if not m:
        fail(f"{path}:{no}: the runtime stage must start FROM debian:<suite>-slim: {text}")
    d = {"suite": m.group(1), "packages": [], "user": "", "expose": [], "entrypoint": None,
         "cmd": None, "binary": None}
    for no, text in instrs[froms[-1] + 1:]:
        kw, _, arg = text.partition(" ")
        kw, arg = kw.upper(), arg.strip()
        if kw == "RUN":
            d["packages"] += [p for p in apt_packages(path, no, text, arg) if p not in d["packages"]]
        elif kw == "COPY":
            words = arg.split()
            flags = [w for w in words if w.startswith("--")]
            args = [w for w in words if not w.startswith("--")]
            src = flags[0].split("=", 1)[1].lower() if len(flags) == 1 and \
                flags[0].startswith("--from=") else None
            if src not in stages[:-1] or len(args) != 2 or d["binary"] is not None:
                fail(f"{path}:{no}: unsupported COPY in the runtime stage (only one `COPY "
                     f"--from=<earlier stage> SRC /absolute/file`): {text}")
            dest = args[1]
            if not re.fullmatch(r"(/[A-Za-z0-9._+-]+)+", dest) or "/../" in dest + "/":
                fail(f"{path}:{no}: the COPY destination must be an absolute file path: {text}")
            d["binary"] = dest
        elif kw == "USER":
            if not re.fullmatch(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?", arg):
                fail(f"{path}:{no}: unsupported USER: {text}")
            d["user"] = arg
        elif kw == "EXPOSE":
            for w in arg.split():
                m = re.fullmatch(r"(\d+)(?:/(tcp|udp|sctp))?", w, re.I)
                if not m or not 0 < int(m.group(1)) < 65536:
                    fail(f"{path}:{no}: unsupported EXPOSE port {w}: {text}")
                port = f"{int(m.group(1))}/{(m.group(2) or 'tcp').lower()}"
                if port not in d["expose"]:
                    d["expose"].append(port)
        elif kw == "ENTRYPOINT":
            d["entrypoint"] = exec_form(path, no, text, arg)
        elif kw == "CMD":
            d["cmd"] = exec_form(path, no, text, arg)
        else:
            fail(f"{path}:{no}: unsupported instruction in the runtime stage (teach "
                 f"tests/e2e/build-image.sh to reproduce it): {text}")
    if d["binary"] is None:
        fail(f"{path}: the runtime stage has no COPY of the binary")
    if d["entrypoint"] is None:
        # Without one the image would inherit the base image's CMD, which is not reproduced.
        fail(f"{path}: the runtime stage has no ENTRYPOINT")
    compact = lambda v: json.dumps(v, separators=(",", ":"))
    print(f"suite={d['suite']}")
    print(f"packages={' '.join(d['packages'])}")
    print(f"user={d['user']}")
    print(f"expose={' '.join(d['expose'])}")
    print(f"entrypoint={compact(d['entrypoint'])}")
    print(f"cmd={compact(d['cmd'])}")
    print(f"binary={d['binary']}")

def elf(path, static):
    """Refuse what cannot run in an amd64 image: not x86-64 ELF, or (static) with an interpreter."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1 or \
                struct.unpack_from("<H", head, 18)[0] != 62:
            fail(f"{path}: not an x86-64 ELF executable (the image is linux/amd64)")
        if static == "static":
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                if struct.unpack("<I", f.read(4))[0] == 3:  # PT_INTERP
                    fail(f"{path}: dynamically linked; the pause image has no libc, so it needs "
                         f"a static binary")

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

def assemble(work, tag, desc, *layers):
    """Name the layers in WORK by their digests and write the config and manifest.json;
    LAYERS are pairs of file name and history text; DESC has entrypoint, cmd, user, expose."""
    d = dict(line.split("=", 1) for line in open(desc, encoding="utf-8").read().splitlines())
    cfg = {"Env": [os.environ["IMAGE_PATH"]], "Entrypoint": json.loads(d["entrypoint"])}
    if d.get("cmd", "null") != "null":
        cfg["Cmd"] = json.loads(d["cmd"])
    if d.get("user"):
        cfg["User"] = d["user"]
    if d.get("expose"):
        cfg["ExposedPorts"] = {p: {} for p in d["expose"].split()}
    diff_ids, names, history = [], [], []
    for name, created_by in zip(layers[::2], layers[1::2]):
        digest = sha256(os.path.join(work, name))
        os.rename(os.path.join(work, name), os.path.join(work, digest + ".tar"))
        diff_ids.append("sha256:" + digest)
        names.append(digest + ".tar")
        history.append({"created_by": created_by})
    config = {"architecture": os.environ["ARCH"], "os": "linux", "config": cfg,
              "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history}
    raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(raw).hexdigest() + ".json"
    with open(os.path.join(work, config_name), "wb") as f:
        f.write(raw)
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": names}]
    with open(os.path.join(work, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, sort_keys=True, separators=(",", ":"))
    print(config_name)
    print("\n".join(names))

{"describe": describe, "elf": elf, "assemble": assemble}[sys.argv[1]](*sys.argv[2:])
PYTHON
py() { ARCH="$ARCH" IMAGE_PATH="$IMAGE_PATH" python3 -c "$PY" "$@"; }

# A tar of the files under a folder, with fixed owners and times (see EPOCH).
layer_tar() { # layer_tar OUT DIR NAME...
  local out="$1" dir="$2"; shift 2
  tar --create --file="$out" --directory="$dir" --format=gnu --sort=name \
    --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" -- "$@"
}

# Sets BASE to the base layer for SUITE and the packages (space-separated):
# NODETOPO_IMAGE_BASE_TAR, or the cached mmdebstrap tarball, built on first use. (Helpers that
# register clean-up set globals: a command substitution's subshell would lose the registration.)
base_layer() { # base_layer SUITE PACKAGES
  local suite="$1" packages="$2"
  if [ -n "${NODETOPO_IMAGE_BASE_TAR:-}" ]; then
    [ -f "$NODETOPO_IMAGE_BASE_TAR" ] || die "NODETOPO_IMAGE_BASE_TAR: no file $NODETOPO_IMAGE_BASE_TAR"
    tar --list --file="$NODETOPO_IMAGE_BASE_TAR" >/dev/null \
      || die "NODETOPO_IMAGE_BASE_TAR: not an uncompressed tar: $NODETOPO_IMAGE_BASE_TAR"
    log "base layer: $NODETOPO_IMAGE_BASE_TAR (NODETOPO_IMAGE_BASE_TAR)"
    BASE="$NODETOPO_IMAGE_BASE_TAR"
    return
  fi
  # mmdebstrap's own clean-up empties /var/lib/apt/lists and the apt cache, as the Dockerfile's
  # `rm -rf /var/lib/apt/lists/*` does.
  local args=(--variant=minbase --architectures="$ARCH" --format=tar) opt key tmp hooks
  [ -z "$packages" ] || args+=(--include="${packages// /,}")
  for opt in "${SLIM_DPKG_OPTS[@]}"; do args+=(--dpkgopt="$opt"); done
  # Merged /usr set up directly, as the official images have it, where the suite has the
  # usr-is-merged package; otherwise bookworm's init-system-helpers pulls in usrmerge, and with
  # it perl (some 60 MB).
  hooks=/usr/share/mmdebstrap/hooks/maybe-merged-usr
  args+=(--hook-dir="$hooks")
  # mmdebstrap copies the host's resolv.conf and hostname in; the container runtime provides both.
  # shellcheck disable=SC2016 # $1 is the hook's argument (the chroot), expanded by mmdebstrap
  args+=(--customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"')
  key=$(printf '%s\n' "$BASE_RECIPE" "$suite" "${args[@]}" | sha256sum | cut -c1-16)
  BASE="$CACHE/image-base-$key.tar"
  if [ -f "$BASE" ]; then
    log "base layer: $BASE (cached)"
    return
  fi
  need mmdebstrap "install the Debian package mmdebstrap (apt-get install mmdebstrap)"
  [ -d "$hooks" ] || die "$hooks not found: mmdebstrap too old (1.x has it)?"
  mkdir -p "$CACHE"
  tmp="$CACHE/image-base-$key.tmp.$$.tar"  # mmdebstrap wants a .tar name for its output
  cleanup+=("$tmp")
  log "building the base layer: Debian $suite minbase + ${packages:-nothing} from $MIRROR (a few minutes)"
  mmdebstrap "${args[@]}" "$suite" "$tmp" "$MIRROR" >&2 \
    || die "mmdebstrap failed (Debian $suite from $MIRROR)"
  # No device nodes in the image, as in the official ones: the container runtime mounts /dev.
  # (grep reads the whole listing: with -q, tar could die of SIGPIPE and pipefail say no match.)
  if tar --list --file="$tmp" | grep '^\./dev/.' >/dev/null; then
    tar --delete --file="$tmp" --wildcards './dev/?*'
  fi
  mv -f "$tmp" "$BASE"
  log "base layer: $BASE ($(du -m "$BASE" | cut -f1) MiB)"
}

# Sets WORK to a new folder next to OUT for the layers and the archive, so that the last step is
# a rename.
work_dir() { # work_dir OUT
  mkdir -p "$(dirname "$1")"
  WORK=$(mktemp -d "$(dirname "$1")/.build-image.XXXXXX")
  cleanup+=("$WORK")
}

# Packs WORK's manifest.json, config and layers (as ASSEMBLE printed them) into OUT, atomically.
pack() { # pack WORK OUT ASSEMBLED
  local work="$1" out="$2" files
  mapfile -t files <<<"$3"
  tar --create --file="$work/archive.tar" --directory="$work" --format=gnu \
    --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" -- manifest.json "${files[@]}"
  mv -f "$work/archive.tar" "$out"
  log "wrote $out ($(du -m "$out" | cut -f1) MiB)"
  printf '%s\n' "$out"
}

need python3 "install Python 3"
cmd="${1:-}"
case "$cmd" in
  describe)
    [ $# -eq 2 ] || usage
    py describe "$2"
    ;;
  agent)
    [ $# -eq 5 ] || usage
    dockerfile="$2" binary="$3" tag="$4" out="$5"
    [ -f "$binary" ] || die "no binary $binary"
    desc=$(py describe "$dockerfile")
    get() { sed -n "s/^$1=//p" <<<"$desc"; }
    suite=$(get suite) packages=$(get packages) dest=$(get binary)
    py elf "$binary" any
    need strip "install binutils"
    base_layer "$suite" "$packages"
    work_dir "$out"
    work="$WORK"
    # The base layer is only read: a hard link where the file system allows, else a copy.
    ln -- "$BASE" "$work/base.tar" 2>/dev/null || cp -- "$BASE" "$work/base.tar"
    log "layer: $dest (debug info stripped)"
    mkdir -p "$work/root$(dirname "$dest")"
    strip --strip-debug -o "$work/root$dest" -- "$binary"
    # Parent folders are in the layer too, root-owned and 0755, as a COPY writes them.
    find "$work/root" -mindepth 1 -type d -exec chmod 0755 {} +
    chmod 0755 "$work/root$dest"
    top="${dest#/}"
    layer_tar "$work/app.tar" "$work/root" "${top%%/*}"
    printf '%s\n' "$desc" | grep -E '^(entrypoint|cmd|user|expose)=' >"$work/desc"
    if [ -n "${NODETOPO_IMAGE_BASE_TAR:-}" ]; then
      base_history="base layer from NODETOPO_IMAGE_BASE_TAR (test)"
    else
      base_history="mmdebstrap --variant=minbase --include=${packages// /,} $suite (debian:$suite-slim)"
    fi
    assembled=$(py assemble "$work" "$tag" "$work/desc" \
      base.tar "$base_history" app.tar "COPY $(basename "$dest") $dest (strip --strip-debug)")
    pack "$work" "$out" "$assembled"
    ;;
  pause)
    [ $# -eq 4 ] || usage
    binary="$2" tag="$3" out="$4"
    [ -f "$binary" ] || die "no binary $binary"
    py elf "$binary" static
    work_dir "$out"
    work="$WORK"
    mkdir "$work/root"
    install -m 0755 -- "$binary" "$work/root/pause"
    layer_tar "$work/pause.tar" "$work/root" pause
    printf 'entrypoint=["/pause"]\n' >"$work/desc"
    assembled=$(py assemble "$work" "$tag" "$work/desc" pause.tar "COPY pause /pause")
    pack "$work" "$out" "$assembled"
    ;;
  *)
    usage
    ;;
esac
