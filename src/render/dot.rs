//! Graphviz (`dot`) picture of one node, drawn to be read: the NVSwitch on top, then one box
//! per NUMA node holding one box per PCIe switch (or host bridge) with each GPU above its rail
//! NIC(s), and the storage, front-end and virtual NICs set apart at the bottom.
//!
//! Only each GPU's rail edge is drawn (its pair, or the rail it shares), labelled with the
//! PCIe distance; the full GPU×NIC matrix stays in the table (`-o table`). A GPU without a rail
//! gets a dotted edge to its nearest NIC. A NIC whose ports' leaves are known names its rail(s),
//! and the title says whether the node is rail-optimised.

use std::{collections::BTreeMap, fmt::Write};

use crate::model::{
    Connection, Gpu, Nic, NicRole, NodeTopology, NvLinkRemoteType, PortState, RailPair,
};

/// A dot string literal. Newlines in `s` become dot's `\n` line breaks; backslashes and quotes
/// are escaped once, so a label never shows a literal `\n`.
fn quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn gpu_id(i: u32) -> String {
    quote(&format!("gpu{i}"))
}

fn nic_id(name: &str) -> String {
    quote(&format!("nic:{name}"))
}

fn gpu_label(g: &Gpu) -> String {
    format!("GPU{}\n{}\n{} MiB", g.index, g.name, g.memory_mib())
}

fn nic_label(t: &NodeTopology, n: &Nic) -> String {
    let rate = n.ports.iter().map(|p| p.rate_gbps).fold(0.0, f64::max);
    let link = n
        .ports
        .first()
        .map(|p| p.link_layer.to_string())
        .unwrap_or_default();
    let up = n
        .ports
        .iter()
        .any(|p| matches!(p.state, PortState::Active | PortState::ActiveDefer));
    let mut s = format!("{}\n{rate} Gb/s {link}\n{}", n.name, n.role);
    if !up {
        s.push_str(" (down)");
    }
    let rails: Vec<&str> = n
        .ports
        .iter()
        .filter_map(|p| t.network.rail(&n.name, p.port))
        .collect();
    match rails[..] {
        [] => {}
        [one] => {
            let _ = write!(s, "\nrail {one}");
        }
        _ => {
            let _ = write!(s, "\nrails {}", rails.join(", "));
        }
    }
    s
}

/// Whether the node is rail-optimised, per fabric where that is known, for the title.
fn rail_optimised(t: &NodeTopology) -> String {
    [
        ("InfiniBand", t.network.infiniband.rail_optimised),
        ("RoCE", t.network.roce.rail_optimised),
    ]
    .iter()
    .filter_map(|(name, r)| {
        r.map(|yes| format!("  {name}: {}rail-optimised", if yes { "" } else { "not " }))
    })
    .collect()
}

/// The rail of every GPU: `gpu_rails`, else the one-to-one pairs (an older agent's topology).
fn rails(t: &NodeTopology) -> &[RailPair] {
    if t.rail_pairing.gpu_rails.is_empty() {
        &t.rail_pairing.pairs
    } else {
        &t.rail_pairing.gpu_rails
    }
}

/// What holds a GPU and its rail NIC, by PCIe distance.
fn switch_label(c: Connection) -> &'static str {
    match c {
        Connection::Pix => "PCIe switch",
        Connection::Pxb => "PCIe switches",
        _ => "host bridge",
    }
}

/// One box inside a NUMA node: a rail NIC with the GPUs that use it, or a lone GPU or NIC.
#[derive(Default)]
struct Group {
    label: String,
    gpus: Vec<u32>,
    nics: Vec<String>,
}

/// NUMA node (or `None`) -> boxes, from the rails.
fn groups(t: &NodeTopology) -> BTreeMap<Option<i32>, Vec<Group>> {
    let mut out: BTreeMap<Option<i32>, Vec<Group>> = BTreeMap::new();
    let gpu_numa = |i: u32| {
        t.gpus
            .iter()
            .find(|g| g.index == i)
            .and_then(|g| g.numa_node)
    };
    let rails = rails(t);
    let mut placed_gpus = Vec::new();
    for n in t.nics.iter().filter(|n| n.role == NicRole::Compute) {
        let mine: Vec<&RailPair> = rails
            .iter()
            .filter(|r| r.nic == n.name && r.connection.distance() <= Connection::Phb.distance())
            .collect();
        let numa = n
            .numa_node
            .or_else(|| mine.first().and_then(|r| gpu_numa(r.gpu)));
        let connection = mine
            .iter()
            .map(|r| r.connection)
            .max_by_key(|c| c.distance())
            .unwrap_or_default();
        placed_gpus.extend(mine.iter().map(|r| r.gpu));
        out.entry(numa).or_default().push(Group {
            label: if mine.is_empty() {
                String::new()
            } else {
                switch_label(connection).to_string()
            },
            gpus: mine.iter().map(|r| r.gpu).collect(),
            nics: vec![n.name.clone()],
        });
    }
    for g in t.gpus.iter().filter(|g| !placed_gpus.contains(&g.index)) {
        out.entry(g.numa_node).or_default().push(Group {
            gpus: vec![g.index],
            ..Group::default()
        });
    }
    out
}

/// Renders the topology as a Graphviz graph.
pub fn render(t: &NodeTopology) -> String {
    let mut o = String::new();
    header(t, &mut o);
    let any_switch = t.gpus.iter().any(|g| g.switch_links() > 0);
    if let Some(d) = &t.fabric.domain {
        let _ = writeln!(
            o,
            "  subgraph cluster_domain {{\n    label={}; style=dashed; color=\"#4a7ab5\";",
            quote(&format!("NVLink domain {d}"))
        );
    }
    if any_switch {
        o.push_str("  \"nvswitch\" [label=\"NVSwitch\", shape=hexagon, style=filled, fillcolor=\"#dde8f5\"];\n");
    }
    numa_boxes(t, &mut o);
    if t.fabric.domain.is_some() {
        o.push_str("  }\n");
    }
    apart(t, &mut o);
    edges(t, any_switch, &mut o);
    o.push_str("}\n");
    o
}

/// The graph's opening line, its title (node, fabric state and domain, rail-optimised) and the
/// default node and edge styles.
fn header(t: &NodeTopology, o: &mut String) {
    let domain = t.fabric.domain.as_ref().map(|d| format!(" ({d})"));
    let title = format!(
        "{}  fabric: {}{}{}",
        t.node_name,
        t.fabric.state.as_str(),
        domain.unwrap_or_default(),
        rail_optimised(t)
    );
    let _ = writeln!(
        o,
        "graph {} {{",
        quote(&format!("nodetopo {}", t.node_name))
    );
    let _ = writeln!(
        o,
        "  graph [rankdir=TB, newrank=true, fontname=\"Helvetica\", labelloc=t, label={}, nodesep=0.2, ranksep=0.45];",
        quote(&title)
    );
    o.push_str("  node [fontname=\"Helvetica\", fontsize=10, shape=box, style=rounded];\n");
    o.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
}

/// One box per NUMA node with its CPUs, holding the GPUs and rail NICs, those under one PCIe
/// switch in a box of their own.
fn numa_boxes(t: &NodeTopology, o: &mut String) {
    let gpu = |i: u32| t.gpus.iter().find(|g| g.index == i);
    let nic = |name: &str| t.nics.iter().find(|n| n.name == name);
    for (numa, boxes) in groups(t) {
        let numa_name = numa.map_or_else(|| "unknown".to_string(), |n| n.to_string());
        let cpus = boxes
            .iter()
            .flat_map(|b| &b.gpus)
            .find_map(|i| gpu(*i).map(|g| g.cpu_affinity.clone()))
            .filter(|c| !c.is_empty())
            .map(|c| format!("  CPUs {c}"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  subgraph {} {{",
            quote(&format!("cluster_numa_{numa_name}"))
        );
        let _ = writeln!(
            o,
            "    label={}; style=rounded; color=\"#888888\";",
            quote(&format!("NUMA {numa_name}{cpus}"))
        );
        for (k, b) in boxes.iter().enumerate() {
            let boxed = !b.label.is_empty();
            if boxed {
                let _ = writeln!(
                    o,
                    "    subgraph {} {{ label={}; style=dashed; color=\"#aaaaaa\";",
                    quote(&format!("cluster_numa_{numa_name}_{k}")),
                    quote(&b.label)
                );
            }
            for g in b.gpus.iter().filter_map(|i| gpu(*i)) {
                let _ = writeln!(
                    o,
                    "      {} [label={}, shape=box3d];",
                    gpu_id(g.index),
                    quote(&gpu_label(g))
                );
            }
            for n in b.nics.iter().filter_map(|name| nic(name)) {
                let _ = writeln!(
                    o,
                    "      {} [label={}, shape=component];",
                    nic_id(&n.name),
                    quote(&nic_label(t, n))
                );
            }
            if boxed {
                o.push_str("    }\n");
            }
        }
        o.push_str("  }\n");
    }
}

/// The storage, front-end and virtual NICs (and any without a role), in a box of their own
/// below the rails. Virtual functions are listed in one node, they can be many.
fn apart(t: &NodeTopology, o: &mut String) {
    let others: Vec<&Nic> = t
        .nics
        .iter()
        .filter(|n| !matches!(n.role, NicRole::Compute | NicRole::Virtual))
        .collect();
    let vfs: Vec<&str> = t
        .nics
        .iter()
        .filter(|n| n.role == NicRole::Virtual)
        .map(|n| n.name.as_str())
        .collect();
    if others.is_empty() && vfs.is_empty() {
        return;
    }
    o.push_str("  subgraph \"cluster_apart\" {\n");
    let all_storage = others.iter().all(|n| n.role == NicRole::Storage);
    let _ = writeln!(
        o,
        "    label={}; style=filled; fillcolor=\"#f4f4f4\"; color=\"#bbbbbb\";",
        quote(if all_storage {
            "not rails: storage, front-end, virtual"
        } else {
            "NICs (roles not derived: no GPU known)"
        })
    );
    for n in &others {
        let _ = writeln!(
            o,
            "    {} [label={}, shape=component];",
            nic_id(&n.name),
            quote(&nic_label(t, n))
        );
    }
    if !vfs.is_empty() {
        let mut list = String::new();
        for (i, v) in vfs.iter().enumerate() {
            list.push_str(if i == 0 {
                ""
            } else if i % 4 == 0 {
                "\n"
            } else {
                " "
            });
            list.push_str(v);
        }
        let _ = writeln!(
            o,
            "    \"vfs\" [label={}, shape=folder];",
            quote(&format!("{} SR-IOV VFs\n{list}", vfs.len()))
        );
    }
    o.push_str("  }\n");
    // Below the rails: an invisible edge from a rail NIC (or a GPU) to each.
    let anchor = t
        .nics
        .iter()
        .find(|n| n.role == NicRole::Compute)
        .map(|n| nic_id(&n.name))
        .or_else(|| t.gpus.first().map(|g| gpu_id(g.index)));
    if let Some(a) = anchor {
        for n in &others {
            let _ = writeln!(o, "  {a} -- {} [style=invis];", nic_id(&n.name));
        }
        if !vfs.is_empty() {
            let _ = writeln!(o, "  {a} -- \"vfs\" [style=invis];");
        }
    }
}

/// NVLink edges (to the NVSwitch, or direct GPU pairs) and each GPU's rail edge.
fn edges(t: &NodeTopology, any_switch: bool, o: &mut String) {
    if any_switch {
        for g in &t.gpus {
            let sw = g.switch_links();
            if sw > 0 {
                let _ = writeln!(
                    o,
                    "  \"nvswitch\" -- {} [label=\"NV{sw}\", penwidth=2, color=\"#4a7ab5\"];",
                    gpu_id(g.index)
                );
            }
        }
    }
    // Direct GPU-GPU NVLinks (no switch), once per unordered pair.
    for p in &t.gpu_pairs {
        if p.a < p.b && p.connection == Connection::NvLink {
            let switched = t.gpus.iter().find(|g| g.index == p.a).is_some_and(|g| {
                g.nvlinks
                    .iter()
                    .all(|l| l.remote_type == NvLinkRemoteType::Switch)
            });
            if !switched {
                let _ = writeln!(
                    o,
                    "  {} -- {} [label={}, penwidth=2, color=\"#4a7ab5\", constraint=false];",
                    gpu_id(p.a),
                    gpu_id(p.b),
                    quote(&p.cell())
                );
            }
        }
    }
    let rails = rails(t);
    for g in &t.gpus {
        if let Some(r) = rails.iter().find(|r| r.gpu == g.index) {
            let _ = writeln!(
                o,
                "  {} -- {} [label={}, penwidth=1.5];",
                gpu_id(g.index),
                nic_id(&r.nic),
                quote(r.connection.as_str())
            );
        } else if let Some(a) = t
            .gpu_nic_affinity
            .iter()
            .find(|a| a.gpu == g.index && a.rank == 0)
        {
            let _ = writeln!(
                o,
                "  {} -- {} [label={}, style=dotted, constraint=false];",
                gpu_id(g.index),
                nic_id(&a.nic),
                quote(a.connection.as_str())
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_once() {
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        assert_eq!(quote("say \"x\""), "\"say \\\"x\\\"\"");
        assert_eq!(quote("c:\\d"), "\"c:\\\\d\"");
    }

    #[test]
    fn a_nic_names_its_rail_and_the_title_says_rail_optimised() {
        use crate::model::{FabricPlacement, NicPort, PortRail};
        let t = NodeTopology {
            node_name: "n1".into(),
            nics: vec![Nic {
                name: "mlx5_0".into(),
                role: NicRole::Compute,
                ports: vec![
                    NicPort {
                        port: 1,
                        ..NicPort::default()
                    },
                    NicPort {
                        port: 2,
                        ..NicPort::default()
                    },
                ],
                ..Nic::default()
            }],
            network: crate::model::NetworkPlacement {
                infiniband: FabricPlacement {
                    rails: vec![
                        PortRail {
                            nic: "mlx5_0".into(),
                            port: 1,
                            rail: "rail-0".into(),
                        },
                        PortRail {
                            nic: "mlx5_0".into(),
                            port: 2,
                            rail: "rail-1".into(),
                        },
                    ],
                    rail_optimised: Some(true),
                    ..FabricPlacement::default()
                },
                ..Default::default()
            },
            ..NodeTopology::default()
        };
        let dot = render(&t);
        assert!(dot.contains("\\nrails rail-0, rail-1\""), "{dot}");
        assert!(dot.contains("InfiniBand: rail-optimised"), "{dot}");
        let mut one = t.clone();
        one.network.infiniband.rails.pop();
        one.network.infiniband.rail_optimised = Some(false);
        let dot = render(&one);
        assert!(dot.contains("\\nrail rail-0\""), "{dot}");
        assert!(dot.contains("InfiniBand: not rail-optimised"), "{dot}");
    }

    #[test]
    fn a_gpu_without_nics_is_still_drawn() {
        let t = NodeTopology {
            gpus: vec![Gpu {
                index: 0,
                name: "G".into(),
                ..Gpu::default()
            }],
            ..NodeTopology::default()
        };
        let dot = render(&t);
        assert!(
            dot.contains("\"gpu0\" [label=\"GPU0\\nG\\n0 MiB\""),
            "{dot}"
        );
        assert!(!dot.contains("\\\\n"), "{dot}");
    }
}
