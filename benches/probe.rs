//! Probe benchmark (a bench binary; its output goes into BENCHMARKS.md).
//!
//! On a machine with NVIDIA GPUs, in one run, it measures:
//! - the cold `nodetopo probe -o json` (process start to exit, stdout to /dev/null);
//! - `nvidia-smi -q -x` and `nvidia-smi topo -m`, the reference tools;
//! - the floor: `examples/nvml_floor.rs`, `nvmlInit` plus the same NVML calls and nothing else;
//! - the warm in-process re-probe with NVML kept open;
//! - peak RSS of each process (`wait4`).
//!
//! Usage: `probe [--runs N] [--warm N] [--nodetopo PATH] [--floor PATH]`. Without NVML it says so
//! and exits 0.

use std::{
    ffi::OsStr,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use nodetopo::probe::{Prober, nvml::prober::ProbeOptions, sysfs::SysfsRoot};

struct Sample {
    wall: Duration,
    maxrss_kib: i64,
}

fn run_once(cmd: &[String]) -> Option<Sample> {
    let start = Instant::now();
    let child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain old data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, which has not been reaped; pointers are valid.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    std::mem::forget(child);
    (rc == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0).then_some(Sample {
        wall,
        maxrss_kib: usage.ru_maxrss,
    })
}

struct Stats {
    median: f64,
    p90: f64,
    min: f64,
    rss_mib: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn measure(cmd: &[String], runs: usize) -> Option<Stats> {
    run_once(cmd)?; // warm the page cache; not counted
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        samples.push(run_once(cmd)?);
    }
    let mut ms: Vec<f64> = samples.iter().map(|s| s.wall.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    Some(Stats {
        median: percentile(&ms, 0.5),
        p90: percentile(&ms, 0.9),
        min: ms[0],
        rss_mib: samples.iter().map(|s| s.maxrss_kib).max().unwrap_or(0) as f64 / 1024.0,
    })
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = arg(&args, "--runs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let warm: usize = arg(&args, "--warm")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().and_then(|d| d.parent()).map(PathBuf::from))
        .unwrap_or_default();
    let nodetopo =
        arg(&args, "--nodetopo").unwrap_or_else(|| exe_dir.join("nodetopo").display().to_string());
    let floor = arg(&args, "--floor")
        .unwrap_or_else(|| exe_dir.join("examples/nvml_floor").display().to_string());

    let mut prober = Prober::live(
        SysfsRoot::default(),
        "bench".into(),
        ProbeOptions::default(),
        None::<&OsStr>,
    );
    if prober.gpu_prober().is_none() {
        println!(
            "skipped: NVML is not available on this machine; run the probe bench on a GPU node"
        );
        return;
    }
    let t0 = Instant::now();
    let first = prober.probe(SystemTime::now());
    let first_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut warm_ms = Vec::with_capacity(warm);
    for _ in 0..warm {
        let t = Instant::now();
        let topo = prober.probe(SystemTime::now());
        warm_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(
            topo.same_content(&first),
            "topology changed during the bench"
        );
    }
    warm_ms.sort_by(f64::total_cmp);
    let gpus = first.gpus.len();

    let rows: Vec<(&str, Vec<String>)> = vec![
        (
            "nodetopo probe -o json",
            vec![nodetopo.clone(), "probe".into(), "-o".into(), "json".into()],
        ),
        (
            "nodetopo probe -o json --query-all-p2p",
            vec![
                nodetopo,
                "probe".into(),
                "-o".into(),
                "json".into(),
                "--query-all-p2p".into(),
            ],
        ),
        ("floor (nvmlInit + same NVML calls)", vec![floor]),
        (
            "nvidia-smi -q -x",
            vec!["nvidia-smi".into(), "-q".into(), "-x".into()],
        ),
        (
            "nvidia-smi topo -m",
            vec!["nvidia-smi".into(), "topo".into(), "-m".into()],
        ),
    ];
    let results: Vec<(&str, Option<Stats>)> = rows
        .iter()
        .map(|(name, cmd)| (*name, measure(cmd, runs)))
        .collect();
    let median = |name: &str| {
        results
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, s)| s.as_ref().map(|s| s.median))
    };

    println!(
        "GPUs: {gpus}; {runs} runs per command after one warm-up run; wall time process start to exit.\n"
    );
    println!("| command | median ms | p90 ms | min ms | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|");
    for (name, s) in &results {
        match s {
            Some(s) => println!(
                "| `{name}` | {:.1} | {:.1} | {:.1} | {:.1} |",
                s.median, s.p90, s.min, s.rss_mib
            ),
            None => println!("| `{name}` | failed | | | |"),
        }
    }
    println!();
    if let (Some(p), Some(f), Some(smi)) = (
        median("nodetopo probe -o json"),
        median("floor (nvmlInit + same NVML calls)"),
        median("nvidia-smi -q -x"),
    ) {
        println!("- cold probe / floor: **{:.2}x** (target <= 1.3x)", p / f);
        println!(
            "- nvidia-smi -q -x / cold probe: **{:.2}x faster** (target >= 4x)",
            smi / p
        );
    }
    println!(
        "- in-process: first probe {first_ms:.1} ms; warm re-probe (NVML open, {warm} runs) median {:.3} ms, p99 {:.3} ms, max {:.3} ms (target <= 10 ms)",
        percentile(&warm_ms, 0.5),
        percentile(&warm_ms, 0.99),
        warm_ms[warm_ms.len() - 1],
    );
}
