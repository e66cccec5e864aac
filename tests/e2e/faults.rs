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
    agents::{
        self, Agent, MACHINES, converge, fixture, node_writes, node_writes_since, probe_labels,
    },
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
    let outage_writes = node_writes_since(&cp, m.node, writes_before).await;
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
    let etcd_writes = node_writes_since(&cp, m.node, writes_before).await;
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

/// A Node's labels under the prefix, as the server has them now.
async fn labels_now(
    admin: &kube::Client,
    node: &str,
) -> std::collections::BTreeMap<String, String> {
    agents::own_labels(&agents::get(admin, node).await)
}

/// The agent talks to the real API server through a fault proxy that answers its label writes
/// with a 429 (`Retry-After: 3`), another 429, a 409 and a hang past `--kube-timeout`, in turn.
/// The agent waits at least what the server asked, keeps the Node's labels and its own state,
/// counts each failure in its metrics, and writes the new labels with the first write that gets
/// through: five attempts in all, one of them reaching the server.
///
/// Then SIGTERM arrives while a write hangs, and the agent is started again: a poller reading
/// the Node (straight from the server) every 50 ms throughout sees the labels every time.
#[tokio::test]
async fn agent_honours_429_409_and_hangs_then_survives_sigterm_mid_write() {
    const RETRY_AFTER_S: u32 = 3;
    let kube_timeout = Duration::from_secs(2);
    let cp = ControlPlane::start(harness::Options::default());
    let admin = cp.admin().await;
    cp.kubectl(&["apply", "--server-side", "-k", &format!("{ROOT}/daemonset")]);
    let m = &MACHINES[0];
    harness::create_node(&admin, m.node, &[]).await;
    let direct = harness::agent_kubeconfig(&cp, &admin, m.node).await;
    let (cert, key) = cp.serving_cert("fault-proxy");
    let proxy = crate::proxy::FaultProxy::start(&cert, &key, &cp.server, &cp.ca).await;
    let kc = direct.with_file_name("via-proxy.kubeconfig");
    proxy.kubeconfig(&direct, &kc);
    let mut agent = Agent::start_with(m, &kc, &[("--kube-timeout", "2s")], None);
    let first = want(&agent);
    converge(&admin, m.node, &first, Duration::from_secs(30)).await;
    let pid = agent.pid();
    let seen_before = proxy.seen().len();
    let writes_before = node_writes(&cp, m.node);
    let errors_before = metric(&agent, "nodetopo_label_write_errors_total").await;

    // 1. 429, 429, 409, hang; the facts change.
    use crate::proxy::{Answer, Fault};
    let faults = [
        Fault::TooManyRequests {
            retry_after_s: RETRY_AFTER_S,
        },
        Fault::TooManyRequests {
            retry_after_s: RETRY_AFTER_S,
        },
        Fault::Conflict,
        Fault::Hang(kube_timeout * 3),
    ];
    proxy.plan(&faults);
    agent.change_driver(DRIVER, "580.200.01");
    let second = want(&agent);
    let t0 = Instant::now();
    while proxy.pending() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the faults were not all met"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(agent.is_running(), "the agent exited under the faults");
        assert_eq!(http_get(&agent.metrics_addr(), "/healthz").await.0, 200);
        // The last good labels stay on the Node while every write fails.
        assert_eq!(labels_now(&admin, m.node).await, first);
    }
    converge(&admin, m.node, &second, Duration::from_secs(60)).await;
    let recovered_in = t0.elapsed();
    let seen: Vec<_> = proxy.seen()[seen_before..].to_vec();
    let answers: Vec<Answer> = seen.iter().map(|s| s.answer).collect();
    let mut expected: Vec<Answer> = faults.iter().copied().map(Answer::Injected).collect();
    expected.push(Answer::Forwarded);
    assert_eq!(answers, expected, "one attempt per fault, then one write");
    let gaps: Vec<f64> = seen
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_secs_f64())
        .collect();
    let errors = metric(&agent, "nodetopo_label_write_errors_total").await - errors_before;
    let writes = node_writes_since(&cp, m.node, writes_before).await;
    eprintln!(
        "fault proxy: attempts {:?} spaced {gaps:.2?} s; converged {:.1} s after the change; \
         {errors} failed writes (agent metric), {writes} write(s) reaching the server",
        seen.iter().map(|s| &s.method).collect::<Vec<_>>(),
        recovered_in.as_secs_f64()
    );
    let asked = f64::from(RETRY_AFTER_S) - 0.05;
    assert!(
        gaps[0] >= asked && gaps[1] >= asked,
        "Retry-After honoured: {gaps:?}"
    );
    assert!(
        gaps[3] >= kube_timeout.as_secs_f64() - 0.05,
        "the hung write was given up after --kube-timeout: {gaps:?}"
    );
    assert_eq!(
        errors, 4.0,
        "each injected answer counted as a failed write"
    );
    assert_eq!(writes, 1, "one write reached the server");
    assert_eq!(agent.pid(), pid);
    let settled = proxy.seen().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(proxy.seen().len(), settled, "no attempt once converged");

    // 2. SIGTERM while a write hangs; the labels stay on the Node the whole time.
    let poll = tokio::spawn({
        let admin = admin.clone();
        let (first, second) = (first.clone(), second.clone());
        async move {
            let mut polls = 0usize;
            let mut gaps = Vec::new();
            loop {
                let now = labels_now(&admin, m.node).await;
                polls += 1;
                if polls > 1 && now == first {
                    return (polls, gaps);
                }
                if now != second && now != first {
                    gaps.push(now);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    proxy.plan(&[Fault::Hang(Duration::from_secs(60))]);
    let hung_at = proxy.seen().len();
    agent.change_driver("580.200.01", DRIVER);
    harness::eventually(Duration::from_secs(30), "the write to hang", || async {
        (proxy.seen().len() > hung_at).then_some(())
    })
    .await;
    let stopping = Instant::now();
    let status = agent.stop();
    let stopped_in = stopping.elapsed();
    assert!(
        status.success(),
        "clean exit on SIGTERM mid-write: {status:?}"
    );
    assert_eq!(
        labels_now(&admin, m.node).await,
        second,
        "labels kept on exit"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarting = Instant::now();
    agent.restart();
    let (polls, gaps) = tokio::time::timeout(Duration::from_secs(60), poll)
        .await
        .expect("the restarted agent writes the new labels")
        .unwrap();
    eprintln!(
        "SIGTERM mid-write: exited in {:.2} s; restarted agent converged in {:.1} s; {polls} \
         polls of the Node, {} without the labels",
        stopped_in.as_secs_f64(),
        restarting.elapsed().as_secs_f64(),
        gaps.len()
    );
    assert!(gaps.is_empty(), "the labels disappeared: {gaps:?}");
    assert!(polls >= 10, "polled throughout: {polls}");
}

/// Node names in the extender's `/debug/view`.
async fn extender_view(port: u16) -> Vec<String> {
    let (code, body) = http_get(&format!("127.0.0.1:{port}"), "/debug/view").await;
    assert_eq!(code, 200, "{body}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
    rows.iter()
        .filter_map(|r| r["node"].as_str().map(str::to_string))
        .collect()
}

/// The extender's Node watch breaks when kube-apiserver stops; the extender keeps serving
/// (`/healthz`, its last view), and once the server is back the watch resumes: a Node created
/// after the restart shows in its view, without an extender restart.
#[tokio::test]
async fn extender_node_watch_survives_an_api_server_restart() {
    let mut cp = ControlPlane::start(harness::Options::default());
    let admin = cp.admin().await;
    harness::create_node(&admin, "before-1", &[("network.example.com/leaf", "l1")]).await;
    let port = harness::free_port();
    let ext = std::process::Command::new(harness::NODETOPO)
        .args([
            "extender",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--debug-placements",
            "--block-label",
            "network.example.com/leaf",
            "--agent-port",
            &harness::free_port().to_string(),
        ])
        .env("KUBECONFIG", &cp.admin_kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn nodetopo extender");
    let mut ext = KillOnDrop(ext);
    let ext = &mut ext.0;
    let pid = ext.id();
    harness::eventually(
        Duration::from_secs(30),
        "the extender listening",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    harness::eventually(
        Duration::from_secs(30),
        "the first Node in view",
        || async {
            extender_view(port)
                .await
                .contains(&"before-1".to_string())
                .then_some(())
        },
    )
    .await;

    cp.stop_process("kube-apiserver");
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(ext.try_wait().unwrap().is_none(), "the extender exited");
        assert_eq!(
            http_get(&format!("127.0.0.1:{port}"), "/healthz").await.0,
            200
        );
        assert!(
            extender_view(port).await.contains(&"before-1".to_string()),
            "the last view is kept"
        );
    }
    cp.start_process_again("kube-apiserver");
    let up = Instant::now();
    let admin = cp.admin().await;
    harness::create_node(&admin, "after-1", &[("network.example.com/leaf", "l2")]).await;
    harness::eventually(
        Duration::from_secs(90),
        "a Node created after the restart in view",
        || async {
            extender_view(port)
                .await
                .contains(&"after-1".to_string())
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "extender Node watch: resumed {:.1} s after kube-apiserver was back; same pid",
        up.elapsed().as_secs_f64()
    );
    assert!(ext.try_wait().unwrap().is_none());
    assert_eq!(ext.id(), pid);
}

/// A child process killed when the test ends, panics included.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
