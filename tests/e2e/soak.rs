//! Soak: a real `nodetopo agent` probing every second against the real API server, on a replayed
//! machine whose facts change every few seconds, for `NODETOPO_E2E_SOAK` (humantime, default
//! `2m`; RELIABILITY.md records a `30m` run). Checked at the end:
//!
//! - exactly one label write per real change, counted in the API server's audit log and in the
//!   agent's own `nodetopo_label_writes_total`;
//! - no failed write, and no warning or error in the agent's log;
//! - the resident set size flat: the median of the last quarter of the samples within
//!   [`RSS_GROWTH_KIB`] of the median of the first quarter (after a warm-up), and no fd leak.
//!
//! Every RSS sample is printed (`--nocapture` shows them), so a long run records its curve:
//!
//! ```sh
//! NODETOPO_E2E_SOAK=30m cargo test --locked --features e2e --test e2e soak -- --nocapture
//! ```

use std::time::{Duration, Instant};

use crate::{
    agents::{Agent, MACHINES, converge, fixture, node_writes, probe_labels},
    faults::metric,
    harness::{self, ControlPlane, ROOT},
};

/// Time between two changes of the replayed facts.
const CHANGE_EVERY: Duration = Duration::from_secs(3);
/// Before the first RSS sample that counts: the first probes, connections and the allocator's
/// first arenas.
const WARM_UP: Duration = Duration::from_secs(15);
/// Allowed growth of the median RSS from the first to the last quarter of the run.
const RSS_GROWTH_KIB: u64 = 2048;
const DRIVERS: [&str; 2] = ["580.159.04", "580.200.01"];

fn soak_for() -> Duration {
    std::env::var("NODETOPO_E2E_SOAK")
        .ok()
        .map(|v| humantime::parse_duration(&v).expect("NODETOPO_E2E_SOAK: a duration"))
        .unwrap_or(Duration::from_secs(120))
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

/// Lines of the agent's log at level WARN or ERROR.
fn problems(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

#[tokio::test]
async fn soak_one_write_per_change_and_flat_memory() {
    let run_for = soak_for();
    let cp = ControlPlane::start(harness::Options::default());
    let admin = cp.admin().await;
    cp.kubectl(&["apply", "--server-side", "-k", &format!("{ROOT}/daemonset")]);
    let m = &MACHINES[0];
    harness::create_node(&admin, m.node, &[]).await;
    let kc = harness::agent_kubeconfig(&cp, &admin, m.node).await;
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("agent.log");
    let mut agent = Agent::start_with(m, &kc, &[("--interval", "1s")], Some(&log));
    let want = |a: &Agent| probe_labels(a.snapshot(), &fixture(m.sysfs), m.node);
    converge(&admin, m.node, &want(&agent), Duration::from_secs(30)).await;
    let pid = agent.pid();
    let writes_before = node_writes(&cp, m.node);
    let agent_writes_before = metric(&agent, "nodetopo_label_writes_total").await;

    let t0 = Instant::now();
    let sample_every = if run_for > Duration::from_secs(600) {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(5)
    };
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut fds_at_start = None;
    let mut changes = 0usize;
    let mut current = 0usize;
    while t0.elapsed() < run_for {
        tokio::time::sleep(CHANGE_EVERY).await;
        assert!(agent.is_running(), "the agent exited during the soak");
        agent.change_driver(DRIVERS[current], DRIVERS[1 - current]);
        current = 1 - current;
        changes += 1;
        let at = t0.elapsed();
        if at >= next_sample {
            let rss = agent.rss_kib();
            let fds = agent.fds();
            eprintln!(
                "soak t={:>5.0}s rss_kib={rss} fds={fds} changes={changes}",
                at.as_secs_f64()
            );
            if at >= WARM_UP {
                samples.push((at, rss));
                fds_at_start.get_or_insert(fds);
            }
            next_sample = at + sample_every;
        }
    }
    // The last change reaches the Node within a probe and a write.
    converge(&admin, m.node, &want(&agent), Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let writes = node_writes(&cp, m.node) - writes_before;
    let agent_writes = metric(&agent, "nodetopo_label_writes_total").await - agent_writes_before;
    let write_errors = metric(&agent, "nodetopo_label_write_errors_total").await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let problems = problems(&text);
    let rss: Vec<u64> = samples.iter().map(|s| s.1).collect();
    assert!(rss.len() >= 4, "too few RSS samples: {samples:?}");
    let q = rss.len() / 4;
    let (first, last) = (
        median(&rss[..q.max(1)]),
        median(&rss[rss.len() - q.max(1)..]),
    );
    let fds_end = agent.fds();
    eprintln!(
        "soak {:?}: {changes} changes, {writes} writes in the audit log ({agent_writes} by the \
         agent's metric), {write_errors} failed writes, {} warnings/errors in the log; RSS median \
         {first} KiB in the first quarter, {last} KiB in the last (min {}, max {}); fds {} -> \
         {fds_end}",
        t0.elapsed(),
        problems.len(),
        rss.iter().min().unwrap(),
        rss.iter().max().unwrap(),
        fds_at_start.unwrap_or_default(),
    );
    assert!(agent.is_running());
    assert_eq!(agent.pid(), pid, "same process throughout");
    assert_eq!(writes, changes, "one write per real change (audit log)");
    assert_eq!(
        agent_writes as usize, changes,
        "one write per change (metric)"
    );
    assert_eq!(write_errors, 0.0, "no failed write");
    assert!(problems.is_empty(), "warnings or errors: {problems:#?}");
    assert!(
        last <= first + RSS_GROWTH_KIB,
        "RSS grew from {first} KiB to {last} KiB: {samples:?}"
    );
    assert!(
        fds_end <= fds_at_start.unwrap_or(fds_end) + 2,
        "fds grew: {fds_at_start:?} -> {fds_end}"
    );
}
