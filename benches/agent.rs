//! Agent benchmark, run as a client process separate from the agent it starts:
//! gRPC Get latency (p50/p99) and throughput, time for one change to reach 1,000 watchers, and
//! the agent's resident memory.
//!
//! `cargo bench --bench agent` builds optimised; `cargo build --benches` then running the
//! binary measures a debug build. Environment:
//! - `NODETOPO_FIXTURE`: the replay fixture directory (default: the one in this repository);
//! - `NODETOPO_BIN`: the `nodetopo` binary to start (default: the one Cargo built);
//! - `NODETOPO_BENCH_LIVE=1`: probe the live driver instead of the 4xH200 replay fixture (the
//!   watcher fan-out needs the replay and is skipped).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nodetopo::proto::v1::{self as pb, topology_service_client::TopologyServiceClient as Client};
use tonic::transport::Channel;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/h200x4-hgx");

/// The replay fixture directory (`NODETOPO_FIXTURE` overrides, for a copied binary).
fn fixture() -> PathBuf {
    std::env::var_os("NODETOPO_FIXTURE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(FIXTURE))
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let live = std::env::var("NODETOPO_BENCH_LIVE").is_ok_and(|v| v == "1");
    let bin = std::env::var_os("NODETOPO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nodetopo")));
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snapshot.json");
    if !live {
        std::fs::copy(fixture().join("snapshot.json"), &snapshot).unwrap();
    }
    let grpc = format!("127.0.0.1:{}", port());
    let mut cmd = Command::new(&bin);
    let interval = if live { "60s" } else { "20ms" };
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
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if !live {
        cmd.arg("--replay").arg(&snapshot);
        cmd.arg("--sysfs-root").arg(fixture().join("sysfs/sys"));
    }
    let agent = Agent(cmd.spawn().expect("start the agent"));
    let pid = agent.0.id();
    let mut c = connect(&grpc).await;
    let t = c
        .get_node_topology(pb::GetNodeTopologyRequest {})
        .await
        .unwrap()
        .into_inner()
        .topology
        .unwrap();
    println!(
        "agent {} ({}), {} GPUs, revision {}",
        bin.display(),
        if live { "live NVML" } else { "replay" },
        t.gpus.len(),
        t.revision
    );
    let (rss, _) = rss_kib(pid);
    println!(
        "agent RSS after first probe: {:.1} MiB",
        rss as f64 / 1024.0
    );

    // Sequential Get latency.
    for _ in 0..1000 {
        c.get_node_topology(pb::GetNodeTopologyRequest {})
            .await
            .unwrap();
    }
    let n: usize = std::env::var("NODETOPO_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        c.get_node_topology(pb::GetNodeTopologyRequest {})
            .await
            .unwrap();
        lat.push(s.elapsed());
    }
    lat.sort_unstable();
    println!(
        "Get latency, 1 connection, sequential, n={n}: p50 {:?} p99 {:?} max {:?}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat[n - 1]
    );

    // Throughput: 16 callers over 4 connections for 3 s.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(connect(&grpc).await);
    }
    let stop = Instant::now() + Duration::from_secs(3);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut c = clients[i % 4].clone();
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while Instant::now() < stop {
                c.get_node_topology(pb::GetNodeTopologyRequest {})
                    .await
                    .unwrap();
                k += 1;
            }
            k
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    println!(
        "Get throughput, 16 callers / 4 connections: {:.0} requests/s",
        total as f64 / start.elapsed().as_secs_f64()
    );

    if !live {
        // 1,000 watchers; time from the snapshot replacement to each receipt.
        let watchers = 1000;
        let base = t.revision;
        let mut streams = Vec::new();
        for i in 0..watchers {
            let mut c = clients[i % 4].clone();
            let mut s = c
                .watch_node_topology(pb::WatchNodeTopologyRequest {
                    since_revision: base,
                })
                .await
                .unwrap()
                .into_inner();
            streams.push(tokio::spawn(async move {
                let m = s.message().await.unwrap().unwrap();
                (Instant::now(), m.topology.unwrap().revision)
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss, _) = rss_kib(pid);
        println!(
            "agent RSS with {watchers} watchers: {:.1} MiB",
            rss as f64 / 1024.0
        );
        let text = std::fs::read_to_string(&snapshot).unwrap();
        let tmp = snapshot.with_extension("tmp");
        std::fs::write(&tmp, text.replace("580.159.04", "580.159.99")).unwrap();
        let t0 = Instant::now();
        std::fs::rename(&tmp, &snapshot).unwrap();
        let mut at = Vec::new();
        for s in streams {
            let (when, rev) = s.await.unwrap();
            assert_eq!(rev, base + 1);
            at.push(when - t0);
        }
        at.sort_unstable();
        let first = at[0];
        let spread: Vec<Duration> = at.iter().map(|d| *d - first).collect();
        println!(
            "fan-out to {watchers} watchers, from file replacement (includes up to one 20 ms probe interval): first {:?} p50 {:?} p99 {:?} last {:?}",
            first,
            pct(&at, 0.5),
            pct(&at, 0.99),
            at[at.len() - 1]
        );
        println!(
            "fan-out to {watchers} watchers, from the first receipt: p50 {:?} p99 {:?} last {:?}",
            pct(&spread, 0.5),
            pct(&spread, 0.99),
            spread[spread.len() - 1]
        );
    }
    let (rss, hwm) = rss_kib(pid);
    println!(
        "agent RSS at the end: {:.1} MiB (peak {:.1} MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    drop(agent);
}
