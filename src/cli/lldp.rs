//! `nodetopo lldp` (hidden): listen for LLDP on netdevs for a bounded time and print what was
//! heard. A diagnostic and the real-peer test's view of the LLDP module; needs CAP_NET_RAW.

use std::{
    collections::BTreeMap,
    io::Write,
    time::{Duration, SystemTime},
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use nodetopo::probe::lldp::{LldpNeighbor, LldpStatus, LldpWatcher};

/// Output format of `nodetopo lldp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LldpFormat {
    /// One line per netdev.
    Text,
    /// A JSON object: netdev → status.
    Json,
}

/// Flags of `nodetopo lldp`.
#[derive(Debug, Args)]
pub struct LldpArgs {
    /// A netdev to listen on (repeatable, or comma-separated).
    #[arg(long, value_name = "IF", required = true, value_delimiter = ',')]
    netdev: Vec<String>,
    /// How long to wait for every netdev to hear a frame (switches send every 30 s by default).
    #[arg(long, value_name = "DURATION", default_value = "35s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = LldpFormat::Text)]
    output: LldpFormat,
    /// Keep listening for the whole wait and print a line each time a netdev's status or
    /// neighbour changes (JSON: one object per line, with a `netdev` field).
    #[arg(long)]
    follow: bool,
}

/// How often `--follow` looks at the statuses.
const FOLLOW_TICK: Duration = Duration::from_millis(100);

pub fn run(args: LldpArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if args.follow {
        return rt.block_on(follow(&args));
    }
    let snapshot = rt.block_on(async {
        let mut watcher = LldpWatcher::default();
        watcher.watch(&args.netdev);
        watcher.settle(args.wait).await;
        watcher.snapshot(SystemTime::now())
    });
    let text = match args.output {
        LldpFormat::Json => serde_json::to_string_pretty(&snapshot)? + "\n",
        LldpFormat::Text => snapshot
            .iter()
            .map(|(netdev, s)| format!("{netdev}: {}\n", line(s)))
            .collect(),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `--follow`: prints every change of status name or neighbour until the wait ends.
async fn follow(args: &LldpArgs) -> anyhow::Result<()> {
    let mut watcher = LldpWatcher::default();
    watcher.watch(&args.netdev);
    let deadline = tokio::time::Instant::now() + args.wait;
    let mut shown: BTreeMap<String, (&'static str, Option<LldpNeighbor>)> = BTreeMap::new();
    loop {
        let mut out = String::new();
        for (netdev, s) in watcher.snapshot(SystemTime::now()) {
            let key = (s.name(), s.last_known().map(|h| h.neighbor.clone()));
            if shown.get(&netdev) == Some(&key) {
                continue;
            }
            match args.output {
                LldpFormat::Json => {
                    let mut v = serde_json::to_value(&s)?;
                    v["netdev"] = netdev.clone().into();
                    out.push_str(&serde_json::to_string(&v)?);
                    out.push('\n');
                }
                LldpFormat::Text => out.push_str(&format!("{netdev}: {}\n", line(&s))),
            }
            shown.insert(netdev, key);
        }
        if !out.is_empty() {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(out.as_bytes())?;
            stdout.flush()?;
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_TICK).await;
    }
}

fn line(s: &LldpStatus) -> String {
    let heard = |h: &nodetopo::probe::lldp::Heard| {
        let n = &h.neighbor;
        let mut l = format!(
            "chassis {} ({}) port {} ({}) ttl {}s",
            n.chassis_id,
            n.chassis_id.subtype.name(),
            n.port_id,
            n.port_id.subtype.name(),
            n.ttl_s
        );
        if let Some(name) = &n.system_name {
            l.push_str(&format!(" system {name:?}"));
        }
        l
    };
    match s {
        LldpStatus::Current(h) => format!("current: {}", heard(h)),
        LldpStatus::Expired(h) => format!("expired: {}", heard(h)),
        LldpStatus::Failed {
            failure,
            last_known,
        } => {
            let mut l = format!("{}: {}", s.name(), failure.message);
            if let Some(h) = last_known {
                l.push_str(&format!("; last known {}", heard(h)));
            }
            l
        }
        LldpStatus::NoFrameYet | LldpStatus::NotWatched => s.name().to_string(),
    }
}
