//! Agent benchmark, run as a client process separate from the agent it starts:
//! gRPC Get latency (p50/p99) and throughput, time for one change to reach 1,000 watchers, and
//! the agent's resident memory. The Gets are measured on an agent at the default 60 s interval;
//! the fan-out on a second agent that re-probes its replay every 20 ms (so a replaced snapshot is
//! seen at once), where the raw Gets are measured again to show what those re-probes cost them.
//!
//! Each figure is taken twice: with the generated client, which decodes every reply into
//! `NodeTopology` messages as real clients do, and with a raw client that takes the reply's bytes
//! as they come (the serving path alone; on a shared 2-core machine the decoding client spends
//! its cores on decoding that the agent then cannot use). The time to decode one reply is
//! printed as well.
//!
//! `cargo bench --bench agent` builds optimised; `cargo build --benches` then running the
//! binary measures a debug build. Every figure is measured for each binary and each fixture, the
//! binaries interleaved, so a before/after comparison shares one run. Environment:
//! - `NODETOPO_FIXTURES`: comma-separated replay fixture directories (default: the 4-GPU
//!   `h200x4-hgx` and the 8-GPU `h100x8-ib` fixtures of this repository);
//! - `NODETOPO_BIN`: comma-separated `nodetopo` binaries to start, each optionally followed by
//!   extra agent flags after spaces (`./old,./new --worker-threads 1`; default: the one Cargo
//!   built);
//! - `NODETOPO_BENCH_N`: sequential Gets per measurement (default 10,000);
//! - `NODETOPO_BENCH_ROUNDS`: how many times the whole set is repeated (default 1);
//! - `NODETOPO_BENCH_LIVE=1`: probe the live driver instead of a replay fixture (the watcher
//!   fan-out needs the replay and is skipped).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nodetopo::proto::v1::{self as pb, topology_service_client::TopologyServiceClient as Client};
use prost::bytes::{Buf, BufMut, Bytes};
use tonic::transport::Channel;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// The replay fixture directories (`NODETOPO_FIXTURES` overrides, for a copied binary).
fn fixtures() -> Vec<PathBuf> {
    match std::env::var("NODETOPO_FIXTURES") {
        Ok(v) => v.split(',').map(PathBuf::from).collect(),
        Err(_) => ["h200x4-hgx", "h100x8-ib"]
            .iter()
            .map(|f| PathBuf::from(FIXTURES).join(f))
            .collect(),
    }
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn connect(addr: &str) -> Client<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(ch) = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            let mut c = Client::new(ch);
            if let Ok(r) = c.get_node_topology(pb::GetNodeTopologyRequest {}).await {
                if r.into_inner().topology.is_some_and(|t| t.revision > 0) {
                    return c;
                }
            }
        }
        assert!(Instant::now() < deadline, "agent did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A codec that passes message bytes through: the raw client.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

const GET_PATH: &str = "/nodetopo.v1.TopologyService/GetNodeTopology";
const WATCH_PATH: &str = "/nodetopo.v1.TopologyService/WatchNodeTopology";

async fn raw_get(g: &mut tonic::client::Grpc<Channel>) -> Bytes {
    g.ready().await.unwrap();
    g.unary(
        tonic::Request::new(Bytes::new()),
        http::uri::PathAndQuery::from_static(GET_PATH),
        RawCodec,
    )
    .await
    .unwrap()
    .into_inner()
}

/// Sequential latency and 16-caller throughput of one kind of client.
async fn latency_and_throughput<C, F>(tag: &str, kind: &str, one: C, mut conns: Vec<C>, call: F)
where
    C: Clone + Send + 'static,
    F: Fn(C) -> std::pin::Pin<Box<dyn std::future::Future<Output = C> + Send>>
        + Copy
        + Send
        + 'static,
{
    let mut c = one;
    for _ in 0..1000 {
        c = call(c).await;
    }
    let n: usize = std::env::var("NODETOPO_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        c = call(c).await;
        lat.push(s.elapsed());
    }
    lat.sort_unstable();
    println!(
        "{tag} {kind}: Get latency, 1 connection, sequential, n={n}: p50 {:?} p99 {:?} p99.9 {:?} max {:?}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        lat[n - 1]
    );
    let stop = Instant::now() + Duration::from_secs(3);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut c = conns[i % conns.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while Instant::now() < stop {
                c = call(c).await;
                k += 1;
            }
            k
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    conns.clear();
    println!(
        "{tag} {kind}: Get throughput, 16 callers / 4 connections: {:.0} requests/s",
        total as f64 / start.elapsed().as_secs_f64()
    );
}

/// An agent binary and extra flags for it.
struct AgentSpec {
    bin: PathBuf,
    args: Vec<String>,
}

/// Replaces the snapshot under a running agent with one whose driver version differs.
fn change_snapshot(snapshot: &std::path::Path, round: usize) {
    let text = std::fs::read_to_string(snapshot).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["driver_version"] = format!("580.159.{}", 10 + round).into();
    let tmp = snapshot.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::rename(&tmp, snapshot).unwrap();
}

async fn get(c: &mut Client<Channel>) -> pb::GetNodeTopologyResponse {
    c.get_node_topology(pb::GetNodeTopologyRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Starts `spec` on `fixture`'s replay (its snapshot copied to `snapshot`, which the fan-out
/// replaces) or on live NVML, probing every `interval`. Returns the agent and its gRPC address.
fn start(
    spec: &AgentSpec,
    fixture: Option<&std::path::Path>,
    snapshot: &std::path::Path,
    interval: &str,
) -> (Agent, String) {
    let grpc = format!("127.0.0.1:{}", port());
    let mut cmd = Command::new(&spec.bin);
    cmd.args([
        "agent",
        "--no-kube",
        "--interval",
        interval,
        "--max-watchers",
        "2000",
    ])
    .args(["--grpc-listen", &grpc])
    .args(["--metrics-listen", &format!("127.0.0.1:{}", port())])
    .args(&spec.args)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(f) = fixture {
        cmd.arg("--replay").arg(snapshot);
        cmd.arg("--sysfs-root").arg(f.join("sysfs/sys"));
    }
    (Agent(cmd.spawn().expect("start the agent")), grpc)
}

/// Four raw clients (each its own connection) of the agent at `grpc`.
async fn raw_clients(grpc: &str) -> Vec<tonic::client::Grpc<Channel>> {
    let mut raw = Vec::new();
    for _ in 0..4 {
        let ch = Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        raw.push(tonic::client::Grpc::new(ch));
    }
    raw
}

/// One Get latency and throughput measurement with the raw client.
async fn raw_gets(tag: &str, kind: &str, grpc: &str) {
    let raw = raw_clients(grpc).await;
    latency_and_throughput(tag, kind, raw[0].clone(), raw.clone(), |mut g| {
        Box::pin(async move {
            let b = raw_get(&mut g).await;
            assert!(!b.is_empty());
            g
        })
    })
    .await;
}

/// Every figure for one agent binary on one fixture (or live NVML with `fixture: None`). The
/// Gets are measured on an agent at the default interval (60 s), as deployed; the fan-out needs
/// a snapshot change noticed quickly, so it runs on a second agent that re-probes every 20 ms,
/// and the raw Gets are measured there too, to show what a re-probe every 20 ms costs them.
async fn measure(spec: &AgentSpec, fixture: Option<&std::path::Path>, round: usize) {
    let bin = &spec.bin;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snapshot.json");
    if let Some(f) = fixture {
        std::fs::copy(f.join("snapshot.json"), &snapshot).unwrap();
    }
    let (agent, grpc) = start(spec, fixture, &snapshot, "60s");
    let pid = agent.0.id();
    let mut c = connect(&grpc).await;
    let first = get(&mut c).await;
    let t = first.topology.clone().unwrap();
    let size = prost::Message::encoded_len(&first);
    let what = fixture.map_or("live NVML".to_string(), |f| {
        f.file_name().unwrap().to_string_lossy().into_owned()
    });
    let tag = format!(
        "[{}{}{} | {what} | round {round}]",
        bin.display(),
        if spec.args.is_empty() { "" } else { " " },
        spec.args.join(" ")
    );
    let (rss, _) = rss_kib(pid);
    println!(
        "{tag} {} GPUs, Get response {size} B, revision {}; agent RSS after first probe {:.1} MiB",
        t.gpus.len(),
        t.revision,
        rss as f64 / 1024.0
    );

    // One reply's decode, in process (what the decoding client adds to every call).
    let bytes = prost::Message::encode_to_vec(&first);
    let decode = {
        let k = 2000;
        let s = Instant::now();
        for _ in 0..k {
            let m: pb::GetNodeTopologyResponse =
                prost::Message::decode(std::hint::black_box(bytes.as_slice())).unwrap();
            std::hint::black_box(m);
        }
        s.elapsed() / k
    };
    println!("{tag} decoding one Get reply in process: {decode:?}");

    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(connect(&grpc).await);
    }
    latency_and_throughput(
        &tag,
        "decoding client",
        c.clone(),
        clients.clone(),
        |mut c| {
            Box::pin(async move {
                get(&mut c).await;
                c
            })
        },
    )
    .await;
    raw_gets(&tag, "raw client", &grpc).await;

    let (agent, pid, mut c, clients, raw) = if fixture.is_some() {
        let (rss, hwm) = rss_kib(pid);
        println!(
            "{tag} agent RSS after the Gets: {:.1} MiB (peak {:.1} MiB)",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        drop(agent);
        let (agent, grpc) = start(spec, fixture, &snapshot, "20ms");
        let pid = agent.0.id();
        let c = connect(&grpc).await;
        raw_gets(&tag, "raw client, agent re-probing every 20 ms", &grpc).await;
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(connect(&grpc).await);
        }
        let raw = raw_clients(&grpc).await;
        (agent, pid, c, clients, raw)
    } else {
        (agent, pid, c, clients, Vec::new())
    };

    if fixture.is_some() {
        // 1,000 watchers; time from the snapshot replacement to each receipt. First with the
        // decoding client, then raw.
        let watchers = 1000;
        let mut base = get(&mut c).await.topology.unwrap().revision;
        for (k, kind) in ["decoding client", "raw client"].into_iter().enumerate() {
            let mut streams = Vec::new();
            for i in 0..watchers {
                let since = base;
                if k == 0 {
                    let mut c = clients[i % 4].clone();
                    let mut s = c
                        .watch_node_topology(pb::WatchNodeTopologyRequest {
                            since_revision: since,
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    streams.push(tokio::spawn(async move {
                        let m = s.message().await.unwrap().unwrap();
                        (Instant::now(), m.topology.unwrap().revision)
                    }));
                } else {
                    let mut g = raw[i % 4].clone();
                    g.ready().await.unwrap();
                    let req = Bytes::from(prost::Message::encode_to_vec(
                        &pb::WatchNodeTopologyRequest {
                            since_revision: since,
                        },
                    ));
                    let mut s = g
                        .server_streaming(
                            tonic::Request::new(req),
                            http::uri::PathAndQuery::from_static(WATCH_PATH),
                            RawCodec,
                        )
                        .await
                        .unwrap()
                        .into_inner();
                    streams.push(tokio::spawn(async move {
                        let m = s.message().await.unwrap().unwrap();
                        assert!(!m.is_empty());
                        // Only the new revision is sent to a watcher that has `since`.
                        (Instant::now(), since + 1)
                    }));
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (rss, _) = rss_kib(pid);
            println!(
                "{tag} {kind}: agent RSS with {watchers} watchers: {:.1} MiB",
                rss as f64 / 1024.0
            );
            let t0 = Instant::now();
            change_snapshot(&snapshot, round * 2 + k);
            let mut at = Vec::new();
            for s in streams {
                let (when, rev) = s.await.unwrap();
                assert!(rev > base);
                at.push(when - t0);
            }
            base = get(&mut c).await.topology.unwrap().revision;
            at.sort_unstable();
            let first = at[0];
            let spread: Vec<Duration> = at.iter().map(|d| *d - first).collect();
            println!(
                "{tag} {kind}: fan-out to {watchers} watchers, from file replacement (includes up to one 20 ms probe interval): first {:?} p50 {:?} p99 {:?} last {:?}",
                first,
                pct(&at, 0.5),
                pct(&at, 0.99),
                at[at.len() - 1]
            );
            println!(
                "{tag} {kind}: fan-out to {watchers} watchers, from the first receipt: p50 {:?} p99 {:?} last {:?}",
                pct(&spread, 0.5),
                pct(&spread, 0.99),
                spread[spread.len() - 1]
            );
        }
    }
    let (rss, hwm) = rss_kib(pid);
    println!(
        "{tag} agent RSS at the end: {:.1} MiB (peak {:.1} MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    drop(agent);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes bench binaries; there is nothing to list.
    }
    let live = std::env::var("NODETOPO_BENCH_LIVE").is_ok_and(|v| v == "1");
    let bins: Vec<AgentSpec> = match std::env::var("NODETOPO_BIN") {
        Ok(v) => v
            .split(',')
            .map(|spec| {
                let mut words = spec.split_whitespace().map(String::from);
                AgentSpec {
                    bin: PathBuf::from(words.next().expect("a binary path")),
                    args: words.collect(),
                }
            })
            .collect(),
        Err(_) => vec![AgentSpec {
            bin: PathBuf::from(env!("CARGO_BIN_EXE_nodetopo")),
            args: Vec::new(),
        }],
    };
    let rounds: usize = std::env::var("NODETOPO_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let fixtures = fixtures();
    for round in 0..rounds {
        for bin in &bins {
            if live {
                measure(bin, None, round).await;
            } else {
                for f in &fixtures {
                    measure(bin, Some(f), round).await;
                }
            }
        }
    }
}
