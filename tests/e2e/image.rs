//! Container images for the node tests, made without Docker or a registry by
//! `tests/e2e/build-image.sh` as docker-archives that `ctr images import` loads; and the checks
//! that the script reproduces the Dockerfile's runtime stage, and refuses what it cannot.
//!
//! Archives are cached in `images/` of the e2e cache (`NODETOPO_KUBE_CACHE`, default
//! `~/.cache/nodetopo-e2e`), named by the image kind, the tag and a hash of what goes into them
//! (the script's and every input file's path, size and modification time, and the script's
//! environment overrides), so another test process or a later run reuses them; a new build for a
//! tag removes that tag's older archives. The Debian base layer is cached by the script itself.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Mutex, PoisonError},
    time::UNIX_EPOCH,
};

use ring::digest::{Context, SHA256, digest};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::harness::{NODETOPO, ROOT};

/// The image script.
fn script() -> PathBuf {
    Path::new(ROOT).join("tests/e2e/build-image.sh")
}

/// The repository's Dockerfile.
fn dockerfile() -> PathBuf {
    Path::new(ROOT).join("Dockerfile")
}

/// The nodetopo image as the Dockerfile describes it, with the binary under test, tagged `tag`:
/// a docker-archive. Needs mmdebstrap (root or user namespaces, and the Debian mirror) for the
/// first build of the base layer.
pub fn agent_image(tag: &str) -> PathBuf {
    image("agent", &[&dockerfile(), Path::new(NODETOPO)], tag)
}

/// A one-layer image of the static `binary` as `/pause` (its entrypoint), tagged `tag`: a
/// docker-archive for the pod sandbox image.
pub fn pause_image(binary: &Path, tag: &str) -> PathBuf {
    image("pause", &[binary], tag)
}

/// The cached archive of `build-image.sh KIND INPUTS... TAG`, built when missing. Builds in this
/// process take turns, so concurrent tests do not build the same archive twice.
fn image(kind: &str, inputs: &[&Path], tag: &str) -> PathBuf {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _turn = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = cache_dir().join("images");
    let slug: String = tag
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            _ => '_',
        })
        .collect();
    let prefix = format!("{kind}-{slug}-");
    let out = dir.join(format!("{prefix}{}.tar", input_key(kind, tag, inputs)));
    if out.is_file() {
        return out;
    }
    run_ok(script_cmd().arg(kind).args(inputs).arg(tag).arg(&out));
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".tar") && entry.path() != out {
            let _ = fs::remove_file(entry.path());
        }
    }
    out
}

/// The e2e cache root, as `build-kube.sh` and `build-image.sh` choose it.
fn cache_dir() -> PathBuf {
    std::env::var_os("NODETOPO_KUBE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").expect("HOME is set")).join(".cache/nodetopo-e2e")
        })
}

/// 16 hex digits of a SHA-256 over the kind, the tag, the script's overrides and the identity
/// (path, size, modification time) of the script and each input.
fn input_key(kind: &str, tag: &str, inputs: &[&Path]) -> String {
    let mut ctx = Context::new(&SHA256);
    let mut add = |bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_le_bytes());
        ctx.update(bytes);
    };
    add(kind.as_bytes());
    add(tag.as_bytes());
    for var in ["NODETOPO_IMAGE_BASE_TAR", "NODETOPO_DEBIAN_MIRROR"] {
        add(std::env::var(var).unwrap_or_default().as_bytes());
    }
    for path in std::iter::once(script().as_path()).chain(inputs.iter().copied()) {
        let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        add(path.to_string_lossy().as_bytes());
        add(&meta.len().to_le_bytes());
        add(&mtime.to_le_bytes());
    }
    hex(&ctx.finish().as_ref()[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hex(digest(&SHA256, &bytes).as_ref())
}

fn script_cmd() -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(script());
    cmd
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What the image takes from the Dockerfile's runtime stage, as `build-image.sh describe` prints
/// it (`entrypoint` and `cmd` parsed as JSON).
#[derive(Debug, PartialEq)]
struct Runtime {
    suite: String,
    packages: Vec<String>,
    user: String,
    expose: Vec<String>,
    entrypoint: Value,
    cmd: Value,
    binary: String,
}

/// The script's reading of `dockerfile`.
fn describe(dockerfile: &Path) -> Runtime {
    let out = run_ok(script_cmd().arg("describe").arg(dockerfile));
    let text = String::from_utf8(out.stdout).expect("UTF-8 description");
    let mut kv: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let mut take = |key: &str| {
        kv.remove(key)
            .unwrap_or_else(|| panic!("describe printed no {key}:\n{text}"))
    };
    let words = |s: &str| s.split_whitespace().map(String::from).collect();
    let json = |s: &str| serde_json::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    let runtime = Runtime {
        suite: take("suite").into(),
        packages: words(take("packages")),
        user: take("user").into(),
        expose: words(take("expose")),
        entrypoint: json(take("entrypoint")),
        cmd: json(take("cmd")),
        binary: take("binary").into(),
    };
    assert!(kv.is_empty(), "describe printed more than expected: {kv:?}");
    runtime
}

/// A reading of the Dockerfile's last stage independent of the script's: instructions joined
/// across continuations, the first word picking what each contributes.
fn runtime_stage(dockerfile: &str) -> Runtime {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let last_from = instructions
        .iter()
        .rposition(|i| i.to_ascii_uppercase().starts_with("FROM "))
        .expect("a FROM");
    let image = instructions[last_from]
        .split_whitespace()
        .nth(1)
        .expect("FROM IMAGE");
    let mut rt = Runtime {
        suite: image
            .strip_prefix("debian:")
            .and_then(|t| t.strip_suffix("-slim"))
            .unwrap_or_else(|| panic!("runtime base {image} is not debian:<suite>-slim"))
            .into(),
        packages: Vec::new(),
        user: String::new(),
        expose: Vec::new(),
        entrypoint: Value::Null,
        cmd: Value::Null,
        binary: String::new(),
    };
    for instruction in &instructions[last_from + 1..] {
        let (keyword, arg) = instruction.split_once(' ').expect("an argument");
        let arg = arg.trim();
        match keyword.to_ascii_uppercase().as_str() {
            "RUN" => {
                let install = arg
                    .split("apt-get install")
                    .nth(1)
                    .expect("apt-get install");
                let install = install.split("&&").next().expect("a command");
                rt.packages.extend(
                    install
                        .split_whitespace()
                        .filter(|w| !w.starts_with('-'))
                        .map(String::from),
                );
            }
            "COPY" => rt.binary = arg.split_whitespace().last().expect("a destination").into(),
            "USER" => rt.user = arg.into(),
            "EXPOSE" => rt.expose.extend(arg.split_whitespace().map(|p| {
                if p.contains('/') {
                    p.into()
                } else {
                    format!("{p}/tcp")
                }
            })),
            "ENTRYPOINT" => rt.entrypoint = serde_json::from_str(arg).expect("exec form"),
            "CMD" => rt.cmd = serde_json::from_str(arg).expect("exec form"),
            other => panic!("this test does not know {other} either: {instruction}"),
        }
    }
    rt
}

fn repo_runtime() -> Runtime {
    runtime_stage(&fs::read_to_string(dockerfile()).expect("read the Dockerfile"))
}

/// Lines of `tar -tv --numeric-owner`: (mode, owner, name).
fn tar_listing(tar: &Path) -> Vec<(String, String, String)> {
    let out = run_ok(
        Command::new("tar")
            .arg("-tvf")
            .arg(tar)
            .arg("--numeric-owner"),
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 listing")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 6, "unexpected tar listing line: {l}");
            (f[0].into(), f[1].into(), f[5..].join(" "))
        })
        .collect()
}

/// A docker-archive unpacked: its folder, manifest entry and config.
struct Archive {
    dir: TempDir,
    manifest: Value,
    config: Value,
}

impl Archive {
    /// Unpacks `tar` and checks what holds for any docker-archive: one manifest entry tagged
    /// `tag`, a config named by its digest, layers named by theirs and matching `diff_ids`.
    fn open(tar: &Path, tag: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        run_ok(
            Command::new("tar")
                .arg("-xf")
                .arg(tar)
                .arg("-C")
                .arg(dir.path()),
        );
        let read_json = |name: &str| -> Value {
            let text = fs::read_to_string(dir.path().join(name)).expect("read JSON");
            serde_json::from_str(&text).expect("JSON")
        };
        let manifest = read_json("manifest.json");
        let entries = manifest.as_array().expect("manifest.json: an array");
        assert_eq!(entries.len(), 1, "{manifest}");
        let manifest = entries[0].clone();
        assert_eq!(manifest["RepoTags"], json!([tag]));
        let config_name = manifest["Config"].as_str().expect("Config");
        assert_eq!(
            config_name,
            format!("{}.json", sha256_file(&dir.path().join(config_name)))
        );
        let config = read_json(config_name);
        let layers: Vec<&str> = manifest["Layers"]
            .as_array()
            .expect("Layers")
            .iter()
            .map(|l| l.as_str().expect("a layer file"))
            .collect();
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| format!("sha256:{}", sha256_file(&dir.path().join(l))))
            .collect();
        assert_eq!(
            config["rootfs"],
            json!({"type": "layers", "diff_ids": diff_ids})
        );
        for (layer, id) in layers.iter().zip(&diff_ids) {
            assert_eq!(format!("sha256:{layer}"), format!("{id}.tar"));
        }
        assert_eq!(
            (&config["architecture"], &config["os"]),
            (&json!("amd64"), &json!("linux"))
        );
        Archive {
            dir,
            manifest,
            config,
        }
    }

    fn layer(&self, i: usize) -> PathBuf {
        let name = self.manifest["Layers"][i].as_str().expect("a layer");
        self.dir.path().join(name)
    }
}

#[test]
fn describe_reads_the_dockerfile_runtime_stage() {
    let expected = repo_runtime();
    assert!(!expected.packages.is_empty() && expected.entrypoint.is_array());
    assert_eq!(describe(&dockerfile()), expected);
}

#[test]
fn instructions_the_image_does_not_reproduce_fail_the_build() {
    let original = fs::read_to_string(dockerfile()).expect("read the Dockerfile");
    let lines: Vec<&str> = original.lines().collect();
    // After the runtime stage's USER, so that the extra line is in the last stage.
    let user = lines
        .iter()
        .rposition(|l| l.starts_with("USER "))
        .expect("a USER line");
    let tmp = tempfile::tempdir().expect("temp dir");
    for extra in [
        "ENV FOO=bar",
        "RUN echo hello",
        "RUN apt-get update && apt-get install -y --no-install-recommends curl=7.88 && rm -rf /var/lib/apt/lists/*",
        "WORKDIR /srv",
        "LABEL team=topology",
        "COPY README.md /README.md",
        "CMD agent",
        "VOLUME /data",
    ] {
        let mut edited = lines.clone();
        edited.insert(user + 1, extra);
        let path = tmp.path().join("Dockerfile");
        fs::write(&path, edited.join("\n") + "\n").expect("write Dockerfile");
        let out = script_cmd()
            .arg("describe")
            .arg(&path)
            .output()
            .expect("run build-image.sh");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{extra}: accepted:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let at = format!("{}:{}:", path.display(), user + 2);
        assert!(err.contains(&at) && err.contains(extra), "{extra}: {err}");
    }

    // `agent` refuses the same way, before it builds anything.
    let mut edited = lines.clone();
    edited.insert(user + 1, "ENV FOO=bar");
    let path = tmp.path().join("Dockerfile");
    fs::write(&path, edited.join("\n") + "\n").expect("write Dockerfile");
    let out_tar = tmp.path().join("out.tar");
    let out = script_cmd()
        .arg("agent")
        .arg(&path)
        .arg("/bin/true")
        .arg("nodetopo:test")
        .arg(&out_tar)
        .env("NODETOPO_IMAGE_BASE_TAR", "/nonexistent")
        .output()
        .expect("run build-image.sh");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ENV FOO=bar"));
    assert!(!out_tar.exists());
}

#[test]
fn agent_archive_from_a_test_base() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let t = tmp.path();
    // A stand-in base layer and binary: no mmdebstrap, network or root.
    fs::create_dir_all(t.join("base/etc")).expect("mkdir");
    fs::write(t.join("base/etc/debian_version"), "12.0\n").expect("write");
    let base = t.join("base.tar");
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(&base)
            .arg("-C")
            .arg(t.join("base"))
            .arg("etc"),
    );
    let binary = t.join("nodetopo");
    fs::copy("/bin/true", &binary).expect("copy /bin/true");
    let tag = "ghcr.io/nodetopo/nodetopo:test";
    let build = |out: &Path| {
        run_ok(
            script_cmd()
                .arg("agent")
                .arg(dockerfile())
                .arg(&binary)
                .arg(tag)
                .arg(out)
                .env("NODETOPO_IMAGE_BASE_TAR", &base)
                .env("NODETOPO_KUBE_CACHE", t.join("cache")),
        );
    };
    let out = t.join("out/agent.tar");
    build(&out);

    let rt = repo_runtime();
    let archive = Archive::open(&out, tag);
    let config = &archive.config["config"];
    assert_eq!(config["User"], json!(rt.user));
    assert_eq!(config["Entrypoint"], rt.entrypoint);
    assert_eq!(config["Cmd"], rt.cmd);
    let ports: Vec<&String> = config["ExposedPorts"]
        .as_object()
        .expect("ports")
        .keys()
        .collect();
    let mut expose: Vec<&String> = rt.expose.iter().collect();
    expose.sort();
    assert_eq!(ports, expose);
    assert_eq!(
        config["Env"],
        json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    );

    assert_eq!(archive.manifest["Layers"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        fs::read(archive.layer(0)).ok(),
        fs::read(&base).ok(),
        "the base layer as given"
    );
    let listing = tar_listing(&archive.layer(1));
    let binary_in_layer = rt.binary.trim_start_matches('/');
    let mut expected = Vec::new();
    let mut dir = String::new();
    for part in binary_in_layer.split('/') {
        dir.push_str(part);
        if dir.len() < binary_in_layer.len() {
            dir.push('/');
            expected.push(("drwxr-xr-x".to_string(), "0/0".to_string(), dir.clone()));
        }
    }
    expected.push(("-rwxr-xr-x".into(), "0/0".into(), binary_in_layer.into()));
    assert_eq!(listing, expected);
    // The layer's binary is the input's code (here, /bin/true still runs).
    let root = t.join("layer");
    fs::create_dir(&root).expect("mkdir");
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(archive.layer(1))
            .arg("-C")
            .arg(&root),
    );
    run_ok(&mut Command::new(root.join(binary_in_layer)));

    // Equal inputs give an equal archive.
    let again = t.join("again.tar");
    build(&again);
    assert!(fs::read(&out).expect("read") == fs::read(&again).expect("read"));
}

/// An x86-64 ELF header with no program headers: static as far as the script can tell.
fn static_elf() -> Vec<u8> {
    let mut elf = vec![0u8; 64];
    elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    elf[16] = 2; // ET_EXEC
    elf[18] = 0x3e; // EM_X86_64
    elf[20] = 1; // EV_CURRENT
    elf
}

#[test]
fn pause_archive_holds_the_static_binary_only() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let binary = tmp.path().join("pause");
    fs::write(&binary, static_elf()).expect("write");
    let tag = "nodetopo.test/pause:fake";
    let archive = Archive::open(&pause_image(&binary, tag), tag);
    assert_eq!(archive.config["config"]["Entrypoint"], json!(["/pause"]));
    assert_eq!(archive.manifest["Layers"].as_array().map(Vec::len), Some(1));
    let listing = tar_listing(&archive.layer(0));
    assert_eq!(
        listing,
        [("-rwxr-xr-x".into(), "0/0".into(), "pause".into())]
    );

    // A dynamically linked binary would not start in an image without libc.
    let out = script_cmd()
        .args(["pause", "/bin/true", tag])
        .arg(tmp.path().join("dynamic.tar"))
        .output()
        .expect("run build-image.sh");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dynamically linked"));
}
