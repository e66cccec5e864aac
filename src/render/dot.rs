//! Graphviz (`dot`) picture: GPUs, the NVSwitch fabric, the NVLink domain and NICs.
//! Edge weights follow distance: NVLink edges are heavy and bold, PCIe edges lighter the farther
//! they reach.

use std::fmt::Write;

use crate::model::{Connection, NodeTopology, NvLinkRemoteType};

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Renders the topology as a Graphviz graph.
pub fn render(t: &NodeTopology) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "graph {} {{",
        quote(&format!("nodetopo {}", t.node_name))
    );
    let _ = writeln!(
        o,
        "  graph [rankdir=TB, fontname=\"Helvetica\", label={}];",
        quote(&format!(
            "{}  fabric: {}{}",
            t.node_name,
            t.fabric.state.as_str(),
            t.fabric
                .domain
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ))
    );
    let _ = writeln!(
        o,
        "  node [fontname=\"Helvetica\", shape=box, style=rounded];"
    );

    let domain = t.fabric.domain.is_some();
    if domain {
        let _ = writeln!(o, "  subgraph cluster_domain {{");
        let _ = writeln!(
            o,
            "    label={}; style=dashed;",
            quote(&format!(
                "NVLink domain {}",
                t.fabric.domain.as_deref().unwrap_or("")
            ))
        );
    }
    for g in &t.gpus {
        let _ = writeln!(
            o,
            "  {} [label={}, shape=box3d];",
            quote(&format!("gpu{}", g.index)),
            quote(&format!(
                "GPU{}\\n{}\\n{} MiB",
                g.index,
                g.name,
                g.memory_mib()
            ))
        );
    }
    let any_switch = t.gpus.iter().any(|g| g.switch_links() > 0);
    if any_switch {
        let _ = writeln!(o, "  \"nvswitch\" [label=\"NVSwitch\", shape=hexagon];");
    }
    if domain {
        let _ = writeln!(o, "  }}");
    }

    for g in &t.gpus {
        let sw = g.switch_links();
        if sw > 0 {
            let _ = writeln!(
                o,
                "  {} -- \"nvswitch\" [label=\"NV{sw}\", penwidth=3, weight=10];",
                quote(&format!("gpu{}", g.index))
            );
        }
    }
    // Direct GPU-GPU NVLinks (no switch), once per unordered pair.
    for p in &t.gpu_pairs {
        if p.a < p.b && p.connection == Connection::NvLink {
            let a = t.gpus.iter().find(|g| g.index == p.a);
            let switched = a.is_some_and(|g| {
                g.nvlinks
                    .iter()
                    .all(|l| l.remote_type == NvLinkRemoteType::Switch)
            });
            if !switched {
                let _ = writeln!(
                    o,
                    "  {} -- {} [label={}, penwidth=3, weight=10];",
                    quote(&format!("gpu{}", p.a)),
                    quote(&format!("gpu{}", p.b)),
                    quote(&p.cell())
                );
            }
        }
    }
    for n in &t.nics {
        let rate = n.ports.iter().map(|p| p.rate_gbps).fold(0.0, f64::max);
        let _ = writeln!(
            o,
            "  {} [label={}, shape=component];",
            quote(&format!("nic:{}", n.name)),
            quote(&format!("{}\\n{} Gb/s", n.name, rate))
        );
    }
    for a in &t.gpu_nic_affinity {
        let d = a.connection.distance();
        let weight = 8u8.saturating_sub(d);
        let style = if a.rank == 0 { "solid" } else { "dotted" };
        let _ = writeln!(
            o,
            "  {} -- {} [label={}, weight={weight}, style={style}];",
            quote(&format!("gpu{}", a.gpu)),
            quote(&format!("nic:{}", a.nic)),
            quote(a.connection.as_str())
        );
    }
    o.push_str("}\n");
    o
}
