//! Whole-binary tests of `nodetopo agent`: the real binary on 127.0.0.1 against the recorded
//! 4xH200 snapshot and sysfs fixture, talked to over gRPC and HTTP.

mod common;
use common::free_port;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nodetopo::proto::v1::{self as pb, topology_service_client::TopologyServiceClient as Client};
use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::{Instant, timeout},
};
use tonic::transport::Channel;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/h200x4-hgx");
const DRIVER: &str = "580.159.04";
/// Upper bound for anything the agent should do within a few probe intervals.
const DEADLINE: Duration = Duration::from_secs(20);

/// A running agent; killed on drop.
struct Agent {
    child: Child,
    grpc: String,
    metrics: String,
    snapshot: PathBuf,
    _dir: TempDir,
}

impl Agent {
    fn start(extra: &[&str]) -> Self {
        Self::launch(true, extra)
    }

    /// An agent on live NVML (no `--replay`; `extra` names the library with `--nvml-lib`).
    fn start_live(extra: &[&str]) -> Self {
        Self::launch(false, extra)
    }

    /// [`Self::start`] with probe interval `interval` instead of 200 ms.
    fn start_every(interval: &str, extra: &[&str]) -> Self {
        Self::launch_every(true, interval, extra)
    }

    fn launch(replay: bool, extra: &[&str]) -> Self {
        Self::launch_every(replay, "200ms", extra)
    }

    fn launch_every(replay: bool, interval: &str, extra: &[&str]) -> Self {
        Self::launch_on(
            &Path::new(FIXTURE).join("snapshot.json"),
            &Path::new(FIXTURE).join("sysfs/sys"),
            replay,
            interval,
            extra,
        )
    }

    fn launch_on(
        snapshot_from: &Path,
        sysfs: &Path,
        replay: bool,
        interval: &str,
        extra: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join("snapshot.json");
        std::fs::copy(snapshot_from, &snapshot).unwrap();
        let grpc = format!("127.0.0.1:{}", free_port());
        let metrics = format!("127.0.0.1:{}", free_port());
        let child = common::nodetopo()
            .args([
                "agent",
                "--no-kube",
                "--interval",
                interval,
                "--node-name",
                "test-node",
            ])
            .args(replay.then_some("--replay"))
            .args(replay.then_some(&snapshot))
            .arg("--sysfs-root")
            .arg(sysfs)
            .args(["--grpc-listen", &grpc, "--metrics-listen", &metrics])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn();
        Self {
            child,
            grpc,
            metrics,
            snapshot,
            _dir: dir,
        }
    }

    /// Waits until gRPC health says SERVING, and returns a client.
    async fn ready(&self) -> Client<Channel> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(ch) = Channel::from_shared(format!("http://{}", self.grpc))
                .unwrap()
                .connect()
                .await
            {
                let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
                let r = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: "nodetopo.v1.TopologyService".into(),
                    })
                    .await;
                if r.is_ok_and(|r| r.into_inner().status == 1) {
                    return Client::new(ch);
                }
            }
            assert!(Instant::now() < deadline, "agent not SERVING in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces the snapshot file atomically with the driver version changed to `driver`.
    fn set_driver(&self, driver: &str) {
        let text = std::fs::read_to_string(Path::new(FIXTURE).join("snapshot.json")).unwrap();
        assert!(text.contains(DRIVER));
        let tmp = self.snapshot.with_extension("tmp");
        std::fs::write(&tmp, text.replace(DRIVER, driver)).unwrap();
        std::fs::rename(&tmp, &self.snapshot).unwrap();
    }

    async fn http_get(&self, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(&self.metrics).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = String::new();
        timeout(DEADLINE, s.read_to_string(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let code = buf[9..12].parse().unwrap();
        let body = buf.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
        (code, body.to_string())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(c: &mut Client<Channel>) -> pb::NodeTopology {
    c.get_node_topology(pb::GetNodeTopologyRequest {})
        .await
        .unwrap()
        .into_inner()
        .topology
        .unwrap()
}

async fn next_msg(s: &mut tonic::Streaming<pb::WatchNodeTopologyResponse>) -> pb::NodeTopology {
    timeout(DEADLINE, s.message())
        .await
        .expect("a watch message in time")
        .expect("stream ok")
        .expect("stream open")
        .topology
        .unwrap()
}

fn driver(t: &pb::NodeTopology) -> &str {
    &t.driver.as_ref().unwrap().driver_version
}

/// The value of an unlabelled sample, or of the first sample whose line starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn get_health_reflection_metrics_and_hints() {
    let agent = Agent::start(&[]);
    let mut c = agent.ready().await;

    let t = get(&mut c).await;
    assert_eq!(t.node_name, "test-node");
    assert_eq!(t.gpus.len(), 4);
    assert_eq!(driver(&t), DRIVER);
    assert!(t.revision > 0);
    assert_eq!(t.gpu_pairs.len(), 12);

    // Reflection lists the services.
    let ch = Channel::from_shared(format!("http://{}", agent.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut s = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = timeout(DEADLINE, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("not a service list: {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"nodetopo.v1.TopologyService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );

    // Reflection v1alpha, for older tools, answers too and describes the service.
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let ch = Channel::from_shared(format!("http://{}", agent.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut refl = ServerReflectionClient::new(ch);
        let reqs = vec![
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            },
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(
                    "nodetopo.v1.TopologyService".into(),
                )),
            },
        ];
        let mut s = refl
            .server_reflection_info(tokio_stream::iter(reqs))
            .await
            .expect("v1alpha reflection is served")
            .into_inner();
        let first = timeout(DEADLINE, s.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
            panic!("not a service list: {first:?}");
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "nodetopo.v1.TopologyService"),
            "{list:?}"
        );
        let second = timeout(DEADLINE, s.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = second.message_response else {
            panic!("not a file descriptor: {second:?}");
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }

    // Hints: a bad GPU is INVALID_ARGUMENT with a message naming it; good selectors work.
    let err = c
        .get_placement_hints(pb::GetPlacementHintsRequest {
            gpus: vec!["0".into(), "17".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("\"17\""), "{}", err.message());
    // A GPU named twice, by index and by UUID, cannot be two CUDA ordinals.
    let err = c
        .get_placement_hints(pb::GetPlacementHintsRequest {
            gpus: vec!["2".into(), t.gpus[2].uuid.clone()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("more than once"),
        "{}",
        err.message()
    );
    let ok = c
        .get_placement_hints(pb::GetPlacementHintsRequest {
            gpus: vec![t.gpus[2].uuid.clone(), "1".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.revision, t.revision);
    // The 4xH200 machine has no RDMA NIC: no variables, and notes that say why.
    assert!(ok.env.is_empty() && ok.pairs.is_empty(), "{ok:?}");
    assert!(
        ok.notes
            .iter()
            .any(|n| n.contains("GPU 1") && n.contains("no RDMA rail")),
        "{:?}",
        ok.notes
    );

    // Metrics, parsed.
    let (code, text) = agent.http_get("/metrics").await;
    assert_eq!(code, 200);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(
        sample(&text, "nodetopo_topology_revision"),
        Some(t.revision as f64)
    );
    assert_eq!(
        sample(&text, "nodetopo_fabric_state{state=\"none\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "nodetopo_grpc_watchers"), Some(0.0));
    assert!(
        sample(
            &text,
            "nodetopo_probe_duration_seconds_count{source=\"nvml\"}"
        )
        .unwrap()
            >= 1.0
    );
    // Each source's own time, not the pass's time repeated under every source: the sources'
    // sums differ, and each is within the pass's.
    let sum = |source: &str| {
        sample(
            &text,
            &format!("nodetopo_probe_duration_seconds_sum{{source=\"{source}\"}}"),
        )
        .unwrap_or_else(|| panic!("no duration for {source}: {text}"))
    };
    let sources = ["nvml", "fabric", "rdma", "sysfs-pci", "gpudirect"];
    let mut sums: Vec<f64> = sources.iter().map(|s| sum(s)).collect();
    let pass = sample(&text, "nodetopo_probe_pass_duration_seconds_sum").unwrap();
    assert!(sums.iter().all(|s| *s <= pass), "{sums:?} vs pass {pass}");
    sums.sort_by(f64::total_cmp);
    sums.dedup();
    assert_eq!(sums.len(), sources.len(), "{text}");
    assert_eq!(agent.http_get("/healthz").await.0, 200);
    assert_eq!(agent.http_get("/readyz").await.0, 200);

    // The query client prints the same model as probe.
    let out = common::nodetopo()
        .args(["query", "get", "-o", "json", "--endpoint", &agent.grpc])
        .stdout_ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["gpus"].as_array().map(Vec::len), Some(4));
    assert_eq!(v["driver"]["driver_version"], DRIVER);

    // `query hints` prints what `probe -o env` prints: here only the notes, as comments.
    let text = common::nodetopo()
        .args(["query", "hints", "0", "--endpoint", &agent.grpc])
        .stdout_ok();
    assert!(
        !text.is_empty() && text.lines().all(|l| l.starts_with("# ")),
        "{text}"
    );
}

#[tokio::test]
async fn watchers_see_one_revision_per_change() {
    let agent = Agent::start(&[]);
    let c = agent.ready().await;
    let r0 = get(&mut c.clone()).await.revision;

    // 250 watchers over 5 connections, each gets the current state at once.
    let mut clients = Vec::new();
    for _ in 0..5 {
        let ch = Channel::from_shared(format!("http://{}", agent.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients.push(Client::new(ch));
    }
    let mut streams = Vec::new();
    for i in 0..250 {
        let mut c = clients[i % clients.len()].clone();
        let s = c
            .watch_node_topology(pb::WatchNodeTopologyRequest { since_revision: 0 })
            .await
            .unwrap()
            .into_inner();
        streams.push(s);
    }
    for s in &mut streams {
        assert_eq!(next_msg(s).await.revision, r0);
    }
    // A caller that is up to date gets nothing until the next change.
    let mut slow = c
        .clone()
        .watch_node_topology(pb::WatchNodeTopologyRequest { since_revision: r0 })
        .await
        .unwrap()
        .into_inner();
    let (_, text) = agent.http_get("/metrics").await;
    assert_eq!(sample(&text, "nodetopo_grpc_watchers"), Some(251.0));

    // Replace the snapshot: every watcher sees exactly one new revision.
    agent.set_driver("580.159.05");
    for s in &mut streams {
        let t = next_msg(s).await;
        assert_eq!(t.revision, r0 + 1);
        assert_eq!(driver(&t), "580.159.05");
    }
    // Several more probes of the same file change nothing.
    let mut c2 = c.clone();
    let seen = get(&mut c2).await.probe_time.unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let t = get(&mut c2).await;
        assert_eq!(t.revision, r0 + 1, "revision bumped more than once");
        let pt = t.probe_time.unwrap();
        if (pt.seconds, pt.nanos) > (seen.seconds + 1, seen.nanos) {
            break; // more than a second (five probes) later
        }
        assert!(Instant::now() < deadline, "probe time never advanced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in streams.iter_mut().take(20) {
        assert!(
            timeout(Duration::from_millis(50), s.message())
                .await
                .is_err(),
            "no message without a change"
        );
    }

    // Two more changes while `slow` does not read. Transport buffers may hold a message or
    // two, so it gets the revisions in order, without repeats, ending at the latest state
    // (coalescing behind a full transport is covered by the service's unit tests).
    for (i, d) in ["580.159.06", "580.159.07"].into_iter().enumerate() {
        agent.set_driver(d);
        let deadline = Instant::now() + DEADLINE;
        while get(&mut c2).await.revision != r0 + 2 + i as u64 {
            assert!(Instant::now() < deadline, "change {d} not seen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut got = Vec::new();
    while got.last() != Some(&(r0 + 3)) {
        got.push(next_msg(&mut slow).await.revision);
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    assert!(got[0] > r0, "{got:?}");
    assert!(
        timeout(Duration::from_millis(300), slow.message())
            .await
            .is_err()
    );

    // Closing streams lowers the watcher gauge.
    drop(streams);
    drop(slow);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, text) = agent.http_get("/metrics").await;
        if sample(&text, "nodetopo_grpc_watchers") == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "watchers never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn watcher_cap_and_sigterm_drain() {
    let mut agent = Agent::start(&["--max-watchers", "2", "--log-format", "json"]);
    let mut c = agent.ready().await;
    let mut a = c
        .watch_node_topology(pb::WatchNodeTopologyRequest { since_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let _b = c
        .watch_node_topology(pb::WatchNodeTopologyRequest { since_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let err = c
        .watch_node_topology(pb::WatchNodeTopologyRequest { since_revision: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    next_msg(&mut a).await;

    // SIGTERM: open streams end cleanly and the process exits 0.
    let status = Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let end = timeout(DEADLINE, a.message())
        .await
        .expect("stream drained");
    assert!(matches!(end, Ok(None)), "{end:?}");
    let deadline = Instant::now() + DEADLINE;
    let code = loop {
        if let Some(s) = agent.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "agent did not exit on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "{code:?}");
}

#[test]
fn oneshot_prints_labels_and_exits_with_json_logs() {
    let out = common::nodetopo()
        .args([
            "-v",
            "--log-format",
            "json",
            "agent",
            "--oneshot",
            "--no-kube",
        ])
        .args(["--label-prefix", "example.com"])
        .arg("--replay")
        .arg(Path::new(FIXTURE).join("snapshot.json"))
        .arg("--sysfs-root")
        .arg(Path::new(FIXTURE).join("sysfs/sys"))
        .output_ok();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("example.com/gpu.count=4\n"), "{stdout}");
    assert!(
        stdout.contains("example.com/gpu.product=NVIDIA-H200\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("example.com/nvlink.fabric=none\n"),
        "{stdout}"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.lines().count() >= 1, "the -v info line is logged");
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(v.get("level").is_some(), "{line}");
    }
}

#[test]
fn bad_flags_name_the_flag() {
    let err = common::nodetopo()
        .args([
            "agent",
            "--no-kube",
            "--oneshot",
            "--label-prefix",
            "Not_A_Domain",
        ])
        .stderr_err();
    assert!(err.contains("--label-prefix"), "{err}");
}

#[tokio::test]
async fn broken_snapshot_keeps_last_good_data_marked_stale() {
    let agent = Agent::start(&[]);
    let mut c = agent.ready().await;
    let r0 = get(&mut c).await.revision;
    let (_, before) = agent.http_get("/metrics").await;
    let errors_before = sample(&before, "nodetopo_probe_errors_total{source=\"nvml\"}");

    let tmp = agent.snapshot.with_extension("tmp");
    std::fs::write(&tmp, "{ not json").unwrap();
    std::fs::rename(&tmp, &agent.snapshot).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let t = loop {
        let t = get(&mut c).await;
        if t.revision != r0 {
            break t;
        }
        assert!(Instant::now() < deadline, "failure never published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(t.revision, r0 + 1);
    assert_eq!(t.gpus.len(), 4, "the topology is never emptied");
    assert_eq!(driver(&t), DRIVER);
    let nvml = t
        .sources
        .iter()
        .find(|s| s.source.as_str() == "nvml")
        .unwrap();
    assert!(!nvml.ok && nvml.stale, "{nvml:?}");
    assert!(nvml.error.contains("snapshot"), "{}", nvml.error);
    let (_, after) = agent.http_get("/metrics").await;
    assert!(
        sample(&after, "nodetopo_probe_errors_total{source=\"nvml\"}") > errors_before,
        "probe errors counted"
    );

    // Back to good data: one more revision, no longer stale.
    agent.set_driver(DRIVER);
    let deadline = Instant::now() + DEADLINE;
    let t = loop {
        let t = get(&mut c).await;
        if t.revision != r0 + 1 {
            break t;
        }
        assert!(Instant::now() < deadline, "recovery never published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(t.revision, r0 + 2);
    assert!(
        t.sources.iter().all(|s| s.ok && !s.stale),
        "{:?}",
        t.sources
    );
}

#[test]
fn probe_prints_labels() {
    let text = common::nodetopo()
        .args(["probe", "-o", "labels"])
        .arg("--replay")
        .arg(Path::new(FIXTURE).join("snapshot.json"))
        .arg("--sysfs-root")
        .arg(Path::new(FIXTURE).join("sysfs/sys"))
        .stdout_ok();
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|kv| kv.0)
        .collect();
    assert_eq!(
        keys,
        [
            "nodetopo.io/cuda.driver",
            "nodetopo.io/gpu.compute",
            "nodetopo.io/gpu.count",
            "nodetopo.io/gpu.driver",
            "nodetopo.io/gpu.family",
            "nodetopo.io/gpu.memory-mib",
            "nodetopo.io/gpu.product",
            "nodetopo.io/nvlink.all-to-all",
            "nodetopo.io/nvlink.fabric",
            "nodetopo.io/nvlink.links",
            "nodetopo.io/nvlink.switch",
            // The RDMA probe answered: this machine has no RDMA NIC.
            "nodetopo.io/rdma.count",
            "nodetopo.io/rdma.gpudirect",
            "nodetopo.io/rdma.rail-aligned",
        ]
    );
    assert!(
        text.contains("nodetopo.io/gpu.memory-mib=143771\n"),
        "{text}"
    );
    assert!(text.contains("nodetopo.io/rdma.count=0\n"), "{text}");
    assert!(
        text.contains("nodetopo.io/rdma.gpudirect=false\n"),
        "{text}"
    );
}

/// A CA, a server certificate for `DNS:agent.nodetopo` only (so dialling 127.0.0.1 needs the
/// server-name option), a client certificate from the same CA, and a second CA with a client
/// certificate of its own: made with openssl, as an operator would.
fn make_pki(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let mut a = vec!["req", "-x509", "-days", "1", "-subj"];
        let subj = format!("/CN={ca}");
        a.push(&subj);
        a.extend(ec);
        let (k, c) = (format!("{ca}.key"), format!("{ca}.pem"));
        a.extend(["-keyout", &k, "-out", &c]);
        a.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        a.extend(["-addext", "keyUsage=critical,keyCertSign"]);
        openssl(&a);
    }
    for (name, ca, ext) in [
        (
            "server",
            "ca",
            "subjectAltName=DNS:agent.nodetopo\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "ca", "extendedKeyUsage=clientAuth\n"),
        ("rogue", "other-ca", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (k, r, c) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subj = format!("/CN={name}");
        let mut a = vec!["req", "-new", "-subj", &subj];
        a.extend(ec);
        a.extend(["-keyout", &k, "-out", &r]);
        openssl(&a);
        let (cap, cak, ext) = (
            format!("{ca}.pem"),
            format!("{ca}.key"),
            format!("{name}.ext"),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &r,
            "-CA",
            &cap,
            "-CAkey",
            &cak,
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &c,
            "-extfile",
            &ext,
        ]);
    }
}

/// The agent's topology over `tls`, or why not.
async fn tls_get(
    endpoint: &str,
    tls: &nodetopo::api::tls::ClientTls,
) -> Result<pb::NodeTopology, String> {
    let mut c = nodetopo::api::connect_with(endpoint, Some(tls))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let r = c
        .get_node_topology(pb::GetNodeTopologyRequest {})
        .await
        .map_err(|s| format!("get: {s:?}"))?;
    Ok(r.into_inner().topology.unwrap_or_default())
}

/// Waits for the first probe through `tls`.
async fn tls_ready(endpoint: &str, tls: &nodetopo::api::tls::ClientTls) -> pb::NodeTopology {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match tls_get(endpoint, tls).await {
            Ok(t) if t.revision > 0 => return t,
            r => assert!(Instant::now() < deadline, "agent not ready over TLS: {r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn grpc_over_tls_and_mutual_tls_with_real_clients() {
    use nodetopo::api::tls::ClientTls;
    let pki = tempfile::tempdir().unwrap();
    let d = pki.path();
    make_pki(d);
    let p = |f: &str| d.join(f);
    let name = Some("agent.nodetopo".to_string());
    let trusting = ClientTls::load(Some(&p("ca.pem")), None, None, name.clone()).unwrap();

    // TLS: a client that trusts the CA and checks the certificate's name gets the topology.
    let (cert, key) = (p("server.pem"), p("server.key"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let agent = Agent::start(&["--grpc-tls-cert", cert, "--grpc-tls-key", key]);
    let t = tls_ready(&agent.grpc, &trusting).await;
    assert_eq!(t.node_name, "test-node");
    assert_eq!(t.gpus.len(), 4);
    // Refused: plaintext; a client that trusts another CA; the wrong name (127.0.0.1 is not in
    // the certificate).
    let plain = async {
        let mut c = nodetopo::api::connect(&agent.grpc).await.ok()?;
        c.get_node_topology(pb::GetNodeTopologyRequest {})
            .await
            .ok()
    };
    assert!(plain.await.is_none(), "plaintext reached a TLS agent");
    let other = ClientTls::load(Some(&p("other-ca.pem")), None, None, name.clone()).unwrap();
    let e = tls_get(&agent.grpc, &other).await.unwrap_err();
    assert!(
        e.contains("UnknownIssuer") || e.contains("certificate"),
        "{e}"
    );
    let no_name = ClientTls::load(Some(&p("ca.pem")), None, None, None).unwrap();
    let e = tls_get(&agent.grpc, &no_name).await.unwrap_err();
    assert!(
        e.contains("NotValidForName") || e.contains("certificate"),
        "{e}"
    );
    // `nodetopo query` with the matching options.
    let out = common::nodetopo()
        .args(["query", "get", "-o", "json", "--endpoint", &agent.grpc])
        .arg("--grpc-tls-ca")
        .arg(p("ca.pem"))
        .args(["--grpc-tls-server-name", "agent.nodetopo"])
        .stdout_ok();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["node_name"], "test-node", "{json}");
    drop(agent);

    // Mutual TLS: only a client certificate from the client CA is let in.
    let ca = p("ca.pem");
    let ca = ca.to_str().unwrap();
    let agent = Agent::start(&[
        "--grpc-tls-cert",
        cert,
        "--grpc-tls-key",
        key,
        "--grpc-tls-client-ca",
        ca,
    ]);
    let client = ClientTls::load(
        Some(&p("ca.pem")),
        Some(&p("client.pem")),
        Some(&p("client.key")),
        name.clone(),
    )
    .unwrap();
    assert_eq!(tls_ready(&agent.grpc, &client).await.gpus.len(), 4);
    tls_get(&agent.grpc, &trusting)
        .await
        .expect_err("no client certificate under mutual TLS");
    let rogue = ClientTls::load(
        Some(&p("ca.pem")),
        Some(&p("rogue.pem")),
        Some(&p("rogue.key")),
        name,
    )
    .unwrap();
    tls_get(&agent.grpc, &rogue)
        .await
        .expect_err("a client certificate from another CA");
    // The server still serves the good client after the refusals.
    assert_eq!(tls_get(&agent.grpc, &client).await.unwrap().gpus.len(), 4);
}

#[test]
fn tls_flags_go_together() {
    let err = common::nodetopo()
        .args(["agent", "--no-kube", "--grpc-tls-cert", "/nonexistent.pem"])
        .stderr_err();
    assert!(err.contains("--grpc-tls-key"), "{err}");
    let err = common::nodetopo()
        .args(["agent", "--no-kube", "--grpc-tls-cert", "/nonexistent.pem"])
        .args(["--grpc-tls-key", "/nonexistent.key"])
        .stderr_err();
    assert!(err.contains("/nonexistent.pem"), "{err}");
}

/// A stand-in NVML library for the live path: `nvmlInit_v2` answers `INIT_RC` (9 is
/// `NVML_ERROR_DRIVER_NOT_LOADED`); once initialised it reports driver 999.1.2 and no GPU.
const NVML_STUB: &str = r#"
#include <string.h>
int nvmlInit_v2(void) { return INIT_RC; }
int nvmlShutdown(void) { return 0; }
const char *nvmlErrorString(int rc) { return rc == 9 ? "Driver Not Loaded" : "Unknown Error"; }
static int put(char *out, unsigned len, const char *s) {
    if (strlen(s) + 1 > len) return 7; /* NVML_ERROR_INSUFFICIENT_SIZE */
    strcpy(out, s); return 0;
}
int nvmlSystemGetDriverVersion(char *v, unsigned len) { return put(v, len, "999.1.2"); }
int nvmlSystemGetNVMLVersion(char *v, unsigned len) { return put(v, len, "13.999.1.2"); }
int nvmlSystemGetCudaDriverVersion_v2(int *v) { *v = 13000; return 0; }
int nvmlSystemGetCudaDriverVersion(int *v) { *v = 13000; return 0; }
int nvmlDeviceGetCount_v2(unsigned *n) { *n = 0; return 0; }
"#;

/// Builds the stub with `nvmlInit_v2` answering `init_rc` and moves it to `dest` atomically.
fn build_nvml_stub(dir: &Path, init_rc: i32, dest: &Path) {
    let src = dir.join("nvml_stub.c");
    std::fs::write(&src, NVML_STUB).unwrap();
    let tmp = dir.join(format!("stub-{init_rc}.so"));
    let out = Command::new("cc")
        .args([
            "-shared",
            "-fPIC",
            "-O1",
            &format!("-DINIT_RC={init_rc}"),
            "-o",
        ])
        .arg(&tmp)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(out.status.success(), "cc: {out:?}");
    std::fs::rename(&tmp, dest).unwrap();
}

/// The NVML source's status on gRPC.
fn nvml_status(t: &pb::NodeTopology) -> &pb::SourceStatus {
    t.sources
        .iter()
        .find(|s| s.source.as_str() == "nvml")
        .expect("an nvml source status")
}

/// The sysfs (RDMA) probe reported success.
fn sysfs_ok(t: &pb::NodeTopology) -> bool {
    t.sources
        .iter()
        .any(|s| s.source.as_str() == "rdma" && s.ok)
}

/// Polls `Get` until `ok` holds.
async fn get_until(
    c: &mut Client<Channel>,
    what: &str,
    ok: impl Fn(&pb::NodeTopology) -> bool,
) -> pb::NodeTopology {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let t = get(c).await;
        if ok(&t) {
            return t;
        }
        assert!(Instant::now() < deadline, "{what}: last {t:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Live NVML (no `--replay`): the library missing, then present with `nvmlInit` failing, then
/// working. The agent keeps running and serving the sysfs facts throughout, each fault shows in
/// the nvml source status and `nodetopo_probe_errors_total{source="nvml"}`, and NVML is opened
/// again on a later probe without a restart.
#[tokio::test]
async fn live_nvml_missing_then_init_failing_then_back_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libnvidia-ml.so.1");
    let mut agent = Agent::start_live(&["--nvml-lib", lib.to_str().unwrap()]);
    let pid = agent.child.id();
    let mut c = agent.ready().await;

    // 1. No library at the path.
    let t = get(&mut c).await;
    let nvml = nvml_status(&t);
    assert!(!nvml.ok, "{nvml:?}");
    assert!(
        nvml.error.contains("NVML is not available"),
        "{}",
        nvml.error
    );
    assert!(t.gpus.is_empty());
    assert!(
        sysfs_ok(&t),
        "the sysfs probe goes on without NVML: {:?}",
        t.sources
    );
    let (code, m1) = agent.http_get("/metrics").await;
    assert_eq!(code, 200);
    let e1 = sample(&m1, "nodetopo_probe_errors_total{source=\"nvml\"}").unwrap_or(0.0);
    assert!(e1 >= 1.0, "{m1}");
    assert_eq!(agent.http_get("/healthz").await.0, 200);
    let missing = nvml.error.clone();

    // 2. The library appears, but its nvmlInit fails.
    build_nvml_stub(dir.path(), 9, &lib);
    let t = get_until(&mut c, "the init failure", |t| {
        !nvml_status(t).ok && nvml_status(t).error != missing
    })
    .await;
    let init_failed = nvml_status(&t).error.clone();
    assert!(
        init_failed.to_lowercase().contains("driver"),
        "init failure named: {init_failed}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, m2) = agent.http_get("/metrics").await;
    let e2 = sample(&m2, "nodetopo_probe_errors_total{source=\"nvml\"}").unwrap();
    assert!(e2 > e1, "errors keep counting: {e1} -> {e2}");
    assert!(sysfs_ok(&get(&mut c).await));

    // 3. A working library: NVML is opened on a later probe, no restart.
    build_nvml_stub(dir.path(), 0, &lib);
    let t = get_until(&mut c, "NVML back", |t| nvml_status(t).ok).await;
    assert_eq!(driver(&t), "999.1.2");
    assert!(sysfs_ok(&t));
    assert!(
        matches!(agent.child.try_wait(), Ok(None)),
        "the agent still runs"
    );
    assert_eq!(agent.child.id(), pid);
    eprintln!(
        "live NVML: missing ({missing}), then init failing ({init_failed}), then back; \
         {e2} nvml probe errors counted"
    );
}

/// A GPU lost mid-run: the replayed snapshot changes to one where every query of GPU 2 answers
/// `GPU is lost`. The agent keeps running, the nvml source says what failed (and that GPU 2 is its
/// last good entry), the other GPUs stay as they were, and a snapshot with the GPU back brings
/// all four back fresh without a restart.
#[tokio::test]
async fn gpu_lost_mid_run_is_reported_and_the_others_kept() {
    let agent = Agent::start(&[]);
    let mut c = agent.ready().await;
    let good = get(&mut c).await;
    assert_eq!(good.gpus.len(), 4);
    let (_, m0) = agent.http_get("/metrics").await;
    let e0 = sample(&m0, "nodetopo_probe_errors_total{source=\"nvml\"}").unwrap_or(0.0);

    let mut snap: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(FIXTURE).join("snapshot.json")).unwrap(),
    )
    .unwrap();
    let lost = serde_json::json!({"Err": {"kind": "gpu-lost", "message": "NVMLError_GpuIsLost: GPU is lost"}});
    let dev = snap["devices"][2].as_object_mut().unwrap();
    for (k, v) in dev.iter_mut() {
        if k != "index" {
            *v = lost.clone();
        }
    }
    let tmp = agent.snapshot.with_extension("tmp");
    std::fs::write(&tmp, snap.to_string()).unwrap();
    std::fs::rename(&tmp, &agent.snapshot).unwrap();

    let t = get_until(&mut c, "the lost GPU reported", |t| !nvml_status(t).ok).await;
    let nvml = nvml_status(&t).clone();
    assert!(nvml.error.contains("lost"), "{}", nvml.error);
    // What a partial failure left out keeps its last good entry (src/agent/merge.rs): the lost
    // GPU is still served as it was last seen, the source says it failed and that part of its
    // data is the last good one; the other three are fresh.
    let uuids = |t: &pb::NodeTopology| t.gpus.iter().map(|g| g.uuid.clone()).collect::<Vec<_>>();
    assert_eq!(
        uuids(&t),
        uuids(&good),
        "every GPU is kept, the lost one too"
    );
    assert_eq!(t.gpus[2], good.gpus[2], "the lost GPU's last good entry");
    assert!(nvml.stale, "{nvml:?}");
    let (code, m1) = agent.http_get("/metrics").await;
    assert_eq!(code, 200);
    let e1 = sample(&m1, "nodetopo_probe_errors_total{source=\"nvml\"}").unwrap();
    assert!(e1 > e0, "counted: {e0} -> {e1}");
    assert_eq!(agent.http_get("/healthz").await.0, 200);
    eprintln!(
        "GPU lost: nvml source {nvml:?}; {} GPUs served (one from the last good probe)",
        t.gpus.len()
    );

    agent.set_driver(DRIVER);
    let t = get_until(&mut c, "the GPU back", |t| nvml_status(t).ok).await;
    assert_eq!(t.gpus.len(), 4);
    assert!(
        t.sources.iter().all(|s| s.ok && !s.stale),
        "{:?}",
        t.sources
    );
}

/// `KEY: N kB` of `/proc/PID/status`.
fn proc_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A GetNodeTopology request with unknown fields: `pad` bytes in field 999, plus a varint in
/// field 1000.
#[derive(Clone, PartialEq, prost::Message)]
struct PaddedRequest {
    #[prost(bytes = "vec", tag = "999")]
    pad: Vec<u8>,
    #[prost(uint64, tag = "1000")]
    extra: u64,
}

async fn padded_get(ch: Channel, pad: usize) -> Result<pb::GetNodeTopologyResponse, tonic::Status> {
    let mut g = tonic::client::Grpc::new(ch).max_encoding_message_size(usize::MAX);
    g.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/nodetopo.v1.TopologyService/GetNodeTopology");
    let codec = tonic_prost::ProstCodec::<PaddedRequest, pb::GetNodeTopologyResponse>::default();
    let req = PaddedRequest {
        pad: vec![0x5a; pad],
        extra: 42,
    };
    g.unary(tonic::Request::new(req), path, codec)
        .await
        .map(tonic::Response::into_inner)
}

/// 10,000 gRPC connections, each connecting, asking once and going away; a request with unknown
/// fields, and one over the 16 MiB message limit; then watchers on their own connections that
/// never read while the topology changes hundreds of times. The agent keeps answering, its fds
/// come back to where they were, and its RSS stays within a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_connection_churn_bad_messages_and_stuck_watchers() {
    const CYCLES: usize = 10_000;
    const TASKS: usize = 8;
    let mut agent = Agent::start_every("20ms", &[]);
    agent.ready().await;
    let pid = agent.child.id();
    let url = format!("http://{}", agent.grpc);
    let cycle = |url: String| async move {
        let ch = Channel::from_shared(url).unwrap().connect().await.unwrap();
        let t = get(&mut Client::new(ch)).await;
        assert_eq!(t.gpus.len(), 4);
    };
    // Warm-up: the runtime's and allocator's first connections.
    for _ in 0..200 {
        cycle(url.clone()).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds0, rss0) = (fd_count(pid), proc_kib(pid, "VmRSS:"));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                for _ in 0..CYCLES / TASKS {
                    cycle(url.clone()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (fds1, rss1) = (fd_count(pid), proc_kib(pid, "VmRSS:"));
    eprintln!(
        "gRPC churn: {CYCLES} connect/Get/disconnect cycles in {:.1} s; fds {fds0} -> {fds1}; \
         RSS {rss0} -> {rss1} KiB (peak {} KiB)",
        took.as_secs_f64(),
        proc_kib(pid, "VmHWM:")
    );
    assert!(fds1 <= fds0 + 2, "fds leaked: {fds0} -> {fds1}");
    assert!(rss1 <= rss0 + 8 * 1024, "RSS grew: {rss0} -> {rss1} KiB");

    // Unknown fields are skipped; an oversized message is refused, and the agent goes on.
    let ch = Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let r = padded_get(ch.clone(), 1024)
        .await
        .expect("unknown fields skipped");
    assert_eq!(r.topology.unwrap().gpus.len(), 4);
    let err = padded_get(ch.clone(), 17 * 1024 * 1024)
        .await
        .expect_err("over the message limit");
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::Internal
        ),
        "{err:?}"
    );
    let mut c = agent.ready().await;
    assert_eq!(get(&mut c).await.gpus.len(), 4, "still serving");
    let rss2 = proc_kib(pid, "VmRSS:");
    eprintln!(
        "oversized request refused: {:?} ({}); RSS {rss2} KiB",
        err.code(),
        err.message()
    );

    // Watchers that never read, each on its own connection, while the facts change 300 times.
    let mut stuck = Vec::new();
    for _ in 0..20 {
        let ch = Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let s = Client::new(ch)
            .watch_node_topology(pb::WatchNodeTopologyRequest { since_revision: 0 })
            .await
            .unwrap()
            .into_inner();
        stuck.push(s);
    }
    let rss3 = proc_kib(pid, "VmRSS:");
    let r0 = get(&mut c).await.revision;
    for i in 0..300 {
        agent.set_driver(&format!("580.{}.01", 300 + i));
        let want = format!("580.{}.01", 300 + i);
        get_until(&mut c, "the change probed", |t| driver(t) == want).await;
    }
    let r1 = get(&mut c).await.revision;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss4 = proc_kib(pid, "VmRSS:");
    eprintln!(
        "20 watchers that never read, {} revisions: RSS {rss3} -> {rss4} KiB",
        r1 - r0
    );
    assert!(r1 - r0 >= 300);
    assert!(
        rss4 <= rss3 + 8 * 1024,
        "RSS grew with stuck watchers: {rss3} -> {rss4} KiB"
    );
    // The stuck watchers, read at last, get the latest state, not a backlog.
    let latest = next_msg(&mut stuck[0]).await;
    let mut last = latest;
    while let Ok(Ok(Some(m))) = timeout(Duration::from_millis(300), stuck[0].message()).await {
        last = m.topology.unwrap();
    }
    assert_eq!(driver(&last), "580.599.01");
    drop(stuck);
    assert!(
        matches!(agent.child.try_wait(), Ok(None)),
        "the agent still runs"
    );
    assert_eq!(agent.child.id(), pid);
}

fn probe_secs(t: &pb::NodeTopology) -> f64 {
    let p = t.probe_time.as_ref().expect("a probe time");
    p.seconds as f64 + f64::from(p.nanos) / 1e9
}

/// sysfs faults under a running agent, one at a time on a copy of the 8xH100 InfiniBand tree,
/// each undone before the next: garbage in a port's `rate`, a FIFO in place of its `state` (a
/// blocking `open` would hang the probe), a directory in place of `link_layer`, a device entry
/// that is a symlink loop, and one whose target vanished between the directory listing and the
/// read (a dangling link). The agent keeps probing (the probe time moves) and serving, the rdma
/// source names the fault or the NIC is left out, and the tree put back gives the first answer
/// again, without a restart.
#[tokio::test]
async fn sysfs_faults_under_a_running_agent() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/h100x8-ib");
    let tree = tempfile::tempdir().unwrap();
    let ok = Command::new("cp")
        .arg("-a")
        .arg(fx.join("sysfs/sys"))
        .arg(tree.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let sys = tree.path().join("sys");
    let mut agent = Agent::launch_on(&fx.join("snapshot.json"), &sys, true, "100ms", &[]);
    let pid = agent.child.id();
    let mut c = agent.ready().await;
    let nic_names =
        |t: &pb::NodeTopology| t.nics.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
    let rdma = |t: &pb::NodeTopology| {
        t.sources
            .iter()
            .find(|s| s.source.as_str() == "rdma")
            .cloned()
            .expect("an rdma source status")
    };
    let good = get(&mut c).await;
    assert!(rdma(&good).ok, "{:?}", rdma(&good));
    let good_nics = good.nics.clone();
    assert!(good_nics.len() >= 8, "{:?}", nic_names(&good));

    let class = sys.join("class/infiniband");
    let port = std::fs::canonicalize(class.join("mlx5_0"))
        .unwrap()
        .join("ports/1");
    let file_fault = |name: &'static str, make: fn(&Path)| {
        let p = port.join(name);
        let keep = std::fs::read(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        make(&p);
        let p2 = p.clone();
        Box::new(move || {
            let _ = std::fs::remove_dir(&p2);
            let _ = std::fs::remove_file(&p2);
            std::fs::write(&p2, &keep).unwrap();
        }) as Box<dyn Fn()>
    };
    let link_fault = |name: &'static str, loop_: bool| {
        let p = class.join(name);
        let target = std::fs::read_link(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        let other = class.join(format!("{name}.other"));
        if loop_ {
            std::os::unix::fs::symlink(&other, &p).unwrap();
            std::os::unix::fs::symlink(&p, &other).unwrap();
        } else {
            std::os::unix::fs::symlink(class.join("gone/away"), &p).unwrap();
        }
        Box::new(move || {
            let _ = std::fs::remove_file(&other);
            std::fs::remove_file(&p).unwrap();
            std::os::unix::fs::symlink(&target, &p).unwrap();
        }) as Box<dyn Fn()>
    };
    // Each fault is made by a closure that returns its undoing.
    type Inject<'a> = Box<dyn Fn() -> Box<dyn Fn() + 'a> + 'a>;
    let faults: Vec<(&str, Inject<'_>)> = vec![
        (
            "garbage rate",
            Box::new(move || {
                file_fault("rate", |p| std::fs::write(p, b"\xff\x00garbage").unwrap())
            }),
        ),
        (
            "FIFO as state",
            Box::new(move || {
                file_fault("state", |p| {
                    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
                    // SAFETY: mkfifo(3) on a NUL-terminated path we own.
                    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
                })
            }),
        ),
        (
            "directory as link_layer",
            Box::new(move || file_fault("link_layer", |p| std::fs::create_dir(p).unwrap())),
        ),
        (
            "symlink loop as mlx5_1",
            Box::new(move || link_fault("mlx5_1", true)),
        ),
        (
            "mlx5_2 vanished",
            Box::new(move || link_fault("mlx5_2", false)),
        ),
    ];
    let mut observed = Vec::new();
    for (what, inject) in faults {
        let undo = inject();
        let at = probe_secs(&get(&mut c).await);
        // Five probes later the agent is still probing, and the fault shows.
        let t = get_until(&mut c, what, |t| probe_secs(t) > at + 0.45).await;
        let (code, metrics) = agent.http_get("/metrics").await;
        assert_eq!(code, 200);
        assert_eq!(agent.http_get("/healthz").await.0, 200);
        let r = rdma(&t);
        let shown = !r.ok || t.nics.len() < good_nics.len() || t.nics != good_nics;
        assert!(shown, "{what}: the fault does not show: {r:?}");
        let rdma_errors = sample(&metrics, "nodetopo_probe_errors_total{source=\"rdma\"}");
        observed.push(format!(
            "{what}: rdma ok={} error={:?}, {} NICs served (of {}), rdma errors {:?}",
            r.ok,
            r.error,
            t.nics.len(),
            good_nics.len(),
            rdma_errors
        ));
        eprintln!("sysfs fault {}", observed.last().unwrap());
        // The other NICs keep their facts. Roles are derived again from the NICs left, so a
        // NIC left out can move another between compute and storage: compared without roles.
        let plain = |n: &pb::Nic| pb::Nic {
            role: 0,
            ..n.clone()
        };
        let good_plain: Vec<pb::Nic> = good_nics.iter().map(plain).collect();
        let kept = t
            .nics
            .iter()
            .filter(|n| good_plain.contains(&plain(n)))
            .count();
        assert!(kept >= good_nics.len() - 1, "{what}: only {kept} NICs kept");
        let moved: Vec<_> = t
            .nics
            .iter()
            .filter(|n| {
                good_nics
                    .iter()
                    .any(|g| g.name == n.name && g.role != n.role)
            })
            .map(|n| n.name.clone())
            .collect();
        if !moved.is_empty() {
            eprintln!("  roles derived again for {moved:?}");
        }
        undo();
        let t = get_until(&mut c, "recovery", |t| rdma(t).ok && t.nics == good_nics).await;
        assert_eq!(nic_names(&t), nic_names(&good));
    }
    assert!(
        matches!(agent.child.try_wait(), Ok(None)),
        "the agent still runs"
    );
    assert_eq!(agent.child.id(), pid);
}
