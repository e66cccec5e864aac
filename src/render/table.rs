//! The human-readable `probe` output: a summary, the GPU list, the `nvidia-smi topo -m` style
//! matrix, NICs, and the status of every probe source.

use std::fmt::Write;

use crate::model::{FabricPlacement, NodeTopology, NvLinkRemoteType, PlatformStatus};

/// Left-aligned columns, two spaces apart.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn or_dash(s: Option<&str>) -> String {
    match s {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "-".to_string(),
    }
}

/// Renders the table view.
pub fn render(t: &NodeTopology) -> String {
    let mut out = String::new();
    summary(t, &mut out);
    gpus(t, &mut out);
    nics(t, &mut out);
    sources(t, &mut out);
    out
}

/// Node, driver, GPU count and fabric lines.
fn summary(t: &NodeTopology, out: &mut String) {
    let when = t
        .probe_time
        .map(|p| humantime::format_rfc3339_seconds(p).to_string())
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "Node:    {}   (probed {when})",
        or_dash(Some(&t.node_name))
    );
    let _ = writeln!(
        out,
        "Driver:  {}   CUDA {}   NVML {}",
        or_dash(t.driver.driver_version.as_deref()),
        or_dash(t.driver.cuda_driver_version.as_deref()),
        or_dash(t.driver.nvml_version.as_deref()),
    );
    let _ = writeln!(out, "GPUs:    {}", t.gpus.len());
    let fabric = match &t.fabric.domain {
        Some(d) => format!("{} (domain {d})", t.fabric.state.as_str()),
        None => t.fabric.state.as_str().to_string(),
    };
    let _ = writeln!(out, "Fabric:  {fabric}: {}", t.fabric.reason);
    for (name, p) in [
        ("InfiniBand", &t.network.infiniband),
        ("RoCE", &t.network.roce),
    ] {
        if !p.is_empty() {
            let _ = writeln!(out, "{name}: {}", placement(p));
        }
    }
    if !t.gpus.is_empty() {
        let _ = writeln!(out, "Rack:    {}", rack(t));
    }
}

/// One fabric's placement on a line: leaf, unit, block, whether rail-optimised, and why a value
/// is missing.
fn placement(p: &FabricPlacement) -> String {
    let rail_optimised = match p.rail_optimised {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    };
    let mut line = format!(
        "leaf {}  su {}  block {}  rail-optimised {rail_optimised}",
        or_dash(p.leaf.as_deref()),
        or_dash(p.su.as_deref()),
        or_dash(p.block.as_deref()),
    );
    if !p.reason.is_empty() {
        let _ = write!(line, "  ({})", p.reason);
    }
    line
}

/// The physical rack line: the chassis serial and tray every GPU agrees on, or why there is none.
fn rack(t: &NodeTopology) -> String {
    if let Some(r) = t.rack() {
        return match r.tray_index {
            Some(tray) => format!("{} tray {tray}", r.chassis_serial),
            None => format!("{} (GPUs on different trays)", r.chassis_serial),
        };
    }
    let all = |s: PlatformStatus| t.gpus.iter().all(|g| g.platform.status == s);
    if all(PlatformStatus::NotSupported) {
        return "- (platform info not supported)".into();
    }
    if let Some(g) = t
        .gpus
        .iter()
        .find(|g| g.platform.status == PlatformStatus::Error)
    {
        return format!("- (GPU {} platform info: {})", g.index, g.platform.reason);
    }
    if all(PlatformStatus::Ok) && t.gpus.iter().all(|g| g.platform.chassis_serial.is_none()) {
        // What an HGX H100 answers (driver 580): slot, host and module, but no chassis.
        return "- (no chassis serial: not a rack-scale system)".into();
    }
    if all(PlatformStatus::Ok) {
        let mut serials: Vec<&str> = t
            .gpus
            .iter()
            .map(|g| g.platform.chassis_serial.as_deref().unwrap_or("?"))
            .collect();
        serials.sort_unstable();
        serials.dedup();
        return format!("- (GPUs name different chassis: {})", serials.join(", "));
    }
    match t.gpus.iter().find(|g| !g.platform.reason.is_empty()) {
        Some(g) => format!("- (platform info unknown: {})", g.platform.reason),
        None => "- (platform info unknown)".into(),
    }
}

/// The GPU list and the matrix.
fn gpus(t: &NodeTopology, out: &mut String) {
    if !t.gpus.is_empty() {
        out.push('\n');
        let mut rows = vec![
            [
                "GPU", "NAME", "MEMORY", "CC", "FAMILY", "MIG", "NUMA", "NVLINKS", "FABRIC", "PCI",
                "UUID",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for g in &t.gpus {
            let switch = g.switch_links();
            let links = if g.nvlinks.is_empty() {
                "-".to_string()
            } else {
                let version = g.nvlinks.first().map(|l| l.version.as_str()).unwrap_or("");
                let far = if switch == g.nvlinks.len() {
                    "switch"
                } else if g
                    .nvlinks
                    .iter()
                    .all(|l| l.remote_type == NvLinkRemoteType::Gpu)
                {
                    "gpu"
                } else {
                    "mixed"
                };
                format!("{} x v{version} {far}", g.nvlinks.len())
            };
            let fabric = g
                .fabric
                .as_ref()
                .map(|f| {
                    let reg = f.registration.to_string();
                    if f.cluster_uuid.chars().all(|c| c == '0' || c == '-') {
                        reg
                    } else {
                        format!("{reg} clique {}", f.clique_id)
                    }
                })
                .unwrap_or_else(|| "-".into());
            rows.push(vec![
                g.index.to_string(),
                g.name.clone(),
                format!("{} MiB", g.memory_mib()),
                format!("{}.{}", g.compute_major, g.compute_minor),
                g.family.as_str().to_string(),
                g.mig_mode.to_string(),
                g.numa_node
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "N/A".into()),
                links,
                fabric,
                g.pci_bus_id.clone(),
                g.uuid.clone(),
            ]);
        }
        out.push_str(&columns(&rows));
        out.push('\n');
        out.push_str(&matrix(t));
    }
}

/// One row per NIC port.
fn nics(t: &NodeTopology, out: &mut String) {
    if !t.nics.is_empty() {
        out.push('\n');
        let mut rows = vec![
            [
                "NIC", "ROLE", "PCI", "NUMA", "PORT", "STATE", "LINK", "RATE", "NETDEV", "RAIL",
                "GPUS",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for n in &t.nics {
            // The GPUs whose rail this NIC is.
            let gpus: Vec<String> = t
                .rail_pairing
                .gpu_rails
                .iter()
                .filter(|r| r.nic == n.name)
                .map(|r| r.gpu.to_string())
                .collect();
            let role = if n.role_overridden {
                format!("{} (set)", n.role)
            } else {
                n.role.to_string()
            };
            for p in &n.ports {
                rows.push(vec![
                    n.name.clone(),
                    role.clone(),
                    n.pci_address.clone(),
                    n.numa_node
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "N/A".into()),
                    p.port.to_string(),
                    p.state.to_string(),
                    p.link_layer.to_string(),
                    format!("{} Gb/s", p.rate_gbps),
                    n.netdevs.join(","),
                    or_dash(t.network.rail(&n.name, p.port)),
                    if gpus.is_empty() {
                        "-".into()
                    } else {
                        gpus.join(",")
                    },
                ]);
            }
        }
        out.push_str(&columns(&rows));
    }
}

/// The status of every probe source.
fn sources(t: &NodeTopology, out: &mut String) {
    out.push('\n');
    out.push_str("Sources:\n");
    for s in &t.sources {
        let state = match (s.ok, s.stale) {
            (true, false) => "ok",
            (true, true) => "ok (stale)",
            (false, false) => "FAILED",
            (false, true) => "FAILED (stale data kept)",
        };
        let _ = writeln!(
            out,
            "  {:<10} {state}{}",
            s.source,
            if s.error.is_empty() {
                String::new()
            } else {
                format!(": {}", s.error)
            }
        );
    }
}

/// The `nvidia-smi topo -m` matrix: GPU rows and columns, then NIC columns, CPU and NUMA
/// affinity.
pub fn matrix(t: &NodeTopology) -> String {
    let nic_names: Vec<&str> = t.nics.iter().map(|n| n.name.as_str()).collect();
    let mut header: Vec<String> = vec![String::new()];
    header.extend(t.gpus.iter().map(|g| format!("GPU{}", g.index)));
    header.extend(nic_names.iter().map(|n| n.to_string()));
    header.push("CPU Affinity".into());
    header.push("NUMA Affinity".into());
    let mut rows = vec![header];
    for a in &t.gpus {
        let mut r = vec![format!("GPU{}", a.index)];
        for b in &t.gpus {
            if a.index == b.index {
                r.push(" X".into());
            } else {
                r.push(
                    t.pair(a.index, b.index)
                        .map(|p| p.cell())
                        .unwrap_or_else(|| "?".into()),
                );
            }
        }
        for nic in &nic_names {
            let c = t
                .gpu_nic_affinity
                .iter()
                .find(|x| x.gpu == a.index && x.nic == *nic)
                .map(|x| x.connection.as_str())
                .unwrap_or("?");
            r.push(c.into());
        }
        r.push(if a.cpu_affinity.is_empty() {
            "N/A".into()
        } else {
            a.cpu_affinity.clone()
        });
        r.push(
            a.numa_node
                .map(|n| n.to_string())
                .unwrap_or_else(|| "N/A".into()),
        );
        rows.push(r);
    }
    columns(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Gpu, GpuPlatform, Nic, NicPort, PortRail};

    /// The platform info a live HGX H100 answered (driver 580.159.04): OK, version 2, no chassis
    /// serial, slot 0, tray 0, host 1, module 2.
    #[test]
    fn an_hgx_gpu_without_a_chassis_is_no_rack_and_says_so() {
        let platform = GpuPlatform {
            status: PlatformStatus::Ok,
            api_version: 2,
            slot_number: Some(0),
            tray_index: Some(0),
            host_id: Some(1),
            module_id: Some(2),
            peer_type: Some(0),
            ..GpuPlatform::default()
        };
        let t = NodeTopology {
            gpus: vec![Gpu {
                platform,
                ..Gpu::default()
            }],
            ..NodeTopology::default()
        };
        assert_eq!(t.rack(), None);
        assert_eq!(rack(&t), "- (no chassis serial: not a rack-scale system)");
        let labels = crate::labels::desired_labels(&t, &crate::labels::LabelConfig::default());
        assert!(!labels.keys().any(|k| k.to_string().contains("rack.")));
    }

    #[test]
    fn nic_rows_show_each_ports_rail_and_the_summary_whether_rail_optimised() {
        let t = NodeTopology {
            nics: ["mlx5_0", "mlx5_1"]
                .iter()
                .map(|n| Nic {
                    name: (*n).into(),
                    ports: vec![NicPort {
                        port: 1,
                        ..NicPort::default()
                    }],
                    ..Nic::default()
                })
                .collect(),
            network: crate::model::NetworkPlacement {
                infiniband: FabricPlacement {
                    su: Some("3f2a1b9c0d".into()),
                    rails: vec![PortRail {
                        nic: "mlx5_0".into(),
                        port: 1,
                        rail: "rail-0".into(),
                    }],
                    rail_optimised: Some(true),
                    ..FabricPlacement::default()
                },
                ..Default::default()
            },
            ..NodeTopology::default()
        };
        let out = render(&t);
        assert!(
            out.contains("InfiniBand: leaf -  su 3f2a1b9c0d  block -  rail-optimised yes\n"),
            "{out}"
        );
        assert!(!out.contains("RoCE:"), "{out}");
        let row = |nic: &str| {
            out.lines()
                .find(|l| l.starts_with(nic))
                .unwrap_or_else(|| panic!("{nic}: {out}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert!(out.contains("RAIL"), "{out}");
        assert!(row("mlx5_0").contains(&"rail-0"), "{out}");
        assert!(
            !row("mlx5_1").iter().any(|c| c.starts_with("rail")),
            "{out}"
        );
    }
}
