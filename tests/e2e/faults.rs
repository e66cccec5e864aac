//! Faults at the API-server boundary, with real processes: a real `nodetopo agent` keeps
//! running while its kube-apiserver is stopped and started again, and while etcd restarts. Each
//! case checks that the agent does not exit, keeps serving its last good state, shows the fault
//! in its metrics, and brings the Node's labels to the new facts afterwards with a bounded number
//! of writes, counted in the API server's audit log.
//!
//! The outage lasts `NODETOPO_E2E_OUTAGE` (humantime, default `10s`; RELIABILITY.md records a
//! run with `2m`).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    agents::{self, Agent, MACHINES, converge, fixture, node_writes, probe_labels},
    harness::{self, ControlPlane, ROOT},
};

const DRIVER: &str = "580.159.04";

fn outage() -> Duration {
    std::env::var("NODETOPO_E2E_OUTAGE")
        .ok()
        .map(|v| humantime::parse_duration(&v).expect("NODETOPO_E2E_OUTAGE: a duration"))
        .unwrap_or(Duration::from_secs(10))
}

/// `GET path` on the agent's metrics port: (status, body).
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics port");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut buf))
        .await
        .expect("metrics answer in time")
        .unwrap();
    let code = buf[9..12].parse().unwrap();
    let body = buf.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    (code, body.to_string())
}

/// The value of an unlabelled series in Prometheus text.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

pub async fn metric(agent: &Agent, series: &str) -> f64 {
    let (code, body) = http_get(&agent.metrics_addr(), "/metrics").await;
    assert_eq!(code, 200);
    sample(&body, series)
}

/// The labels the agent's current snapshot leads to.
fn want(agent: &Agent) -> std::collections::BTreeMap<String, String> {
    let m = &MACHINES[0];
    probe_labels(agent.snapshot(), &fixture(m.sysfs), m.node)
}

#[tokio::test]
async fn agent_rides_out_api_server_and_etcd_restarts() {
    let outage = outage();
    let mut cp = ControlPlane::start(harness::Options::default());
    let admin = cp.admin().await;
    cp.kubectl(&["apply", "--server-side", "-k", &format!("{ROOT}/daemonset")]);
    let m = &MACHINES[0];
    harness::create_node(&admin, m.node, &[("example.com/rack", "r1")]).await;
    let kc = harness::agent_kubeconfig(&cp, &admin, m.node).await;
    let mut agent = Agent::start(m, &kc);
    converge(&admin, m.node, &want(&agent), Duration::from_secs(30)).await;
    let pid = agent.pid();
    let writes_before = node_writes(&cp, m.node);
    let errors_before = metric(&agent, "nodetopo_label_write_errors_total").await;

    // 1. kube-apiserver stopped; the facts change while it is away.
    cp.stop_process("kube-apiserver");
    agent.change_driver(DRIVER, "580.200.01");
    let down = Instant::now();
    let mut errors_seen = errors_before;
    while down.elapsed() < outage {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(agent.is_running(), "the agent exited during the outage");
        // Still serving: health, and the new facts on gRPC/metrics (the last good state is
        // what the agent itself probed; the Node keeps the labels it had).
        assert_eq!(http_get(&agent.metrics_addr(), "/healthz").await.0, 200);
        errors_seen = metric(&agent, "nodetopo_label_write_errors_total").await;
    }
    assert!(
        errors_seen > errors_before,
        "the failed writes show in nodetopo_label_write_errors_total ({errors_before} -> {errors_seen})"
    );
    cp.start_process_again("kube-apiserver");
    let up = Instant::now();
    let admin = cp.admin().await;
    let want_after_outage = want(&agent);
    converge(&admin, m.node, &want_after_outage, Duration::from_secs(90)).await;
    let recovered_in = up.elapsed();
    let outage_writes = node_writes(&cp, m.node) - writes_before;
    eprintln!(
        "kube-apiserver outage {:?}: labels converged {:.1} s after the restart with {} write(s); \
         {} failed write attempt(s) counted by the agent",
        outage,
        recovered_in.as_secs_f64(),
        outage_writes,
        errors_seen - errors_before
    );
    assert!(
        (1..=3).contains(&outage_writes),
        "writes after the outage: {outage_writes}"
    );

    // 2. etcd restarted under a running kube-apiserver; the facts change meanwhile.
    let writes_before = node_writes(&cp, m.node);
    cp.stop_process("etcd");
    agent.change_driver("580.200.01", "580.201.02");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(agent.is_running(), "the agent exited while etcd was down");
    cp.start_process_again("etcd");
    let up = Instant::now();
    converge(&admin, m.node, &want(&agent), Duration::from_secs(90)).await;
    let etcd_writes = node_writes(&cp, m.node) - writes_before;
    eprintln!(
        "etcd restart: labels converged {:.1} s after etcd was back with {} write(s)",
        up.elapsed().as_secs_f64(),
        etcd_writes
    );
    assert!(
        (1..=3).contains(&etcd_writes),
        "writes after etcd's restart: {etcd_writes}"
    );

    // Recovered without a restart: the same process all along, and nothing more to write.
    assert!(agent.is_running());
    assert_eq!(agent.pid(), pid);
    let settled = node_writes(&cp, m.node);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(node_writes(&cp, m.node), settled, "no write once converged");
    let _ = agents::AGENT_USER;
}
