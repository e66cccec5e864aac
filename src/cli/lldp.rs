//! `nodetopo lldp` (hidden): listen for LLDP on netdevs for a bounded time and print what was
//! heard. A diagnostic and the real-peer test's view of the LLDP module; needs CAP_NET_RAW.

use std::{
    io::Write,
    time::{Duration, SystemTime},
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use nodetopo::probe::lldp::{LldpStatus, LldpWatcher};

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
}

pub fn run(args: LldpArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
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
