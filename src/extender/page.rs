//! The cluster picture served at `GET {prefix}/debug/view` to a browser: one self-contained HTML
//! page (no script, no external resource).
//!
//! NVLink clusters (racks) are boxes holding one box per clique; nodes without a multi-node
//! NVLink domain are boxed by their leaf/block label. Each node is a small tile coloured by its
//! fabric state; a stale node is drawn dashed and faded, a labels-only node hatched. Pods placed
//! by a group carry the group's mark (a numbered badge), and a table below lists every group
//! and where its pods landed. Pure: [`render`] maps rows and placements to the page text.

use std::{collections::BTreeMap, fmt::Write};

use super::{facts::NodeFacts, placed::PlacedPod, view::Freshness};
use crate::model::FabricState;

/// One node as the page shows it.
#[derive(Debug, Clone)]
pub struct PageNode {
    /// Node name.
    pub name: String,
    /// Freshness; `None` when nothing is known.
    pub freshness: Option<Freshness>,
    /// Facts, when known.
    pub facts: Option<NodeFacts>,
    /// Why the node is stale.
    pub stale_reason: String,
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Where a node is drawn: `(outer box, inner box)`.
fn place(n: &PageNode) -> (String, String) {
    let f = n.facts.as_ref();
    match f.and_then(|f| f.cluster_uuid.as_ref()) {
        Some(c) => (
            format!("NVLink cluster {c}"),
            f.and_then(|f| f.clique_id)
                .map_or_else(|| "no clique".into(), |q| format!("clique {q}")),
        ),
        None => (
            "No multi-node NVLink".into(),
            f.and_then(|f| f.block.clone())
                .map_or_else(|| "no leaf label".into(), |b| format!("leaf {b}")),
        ),
    }
}

fn state_of(n: &PageNode) -> &'static str {
    n.facts
        .as_ref()
        .map_or(FabricState::Unknown, |f| f.fabric_state)
        .as_str()
}

fn fresh_of(n: &PageNode) -> &'static str {
    match n.freshness {
        Some(Freshness::Live) => "live",
        Some(Freshness::Stale) => "stale",
        Some(Freshness::LabelsOnly) => "labels-only",
        None => "unknown",
    }
}

const STYLE: &str = "\
body{font:13px/1.35 system-ui,Helvetica,Arial,sans-serif;margin:16px;color:#222;background:#fff}\
h1{font-size:18px;margin:0 0 6px}\
.summary,.legend{margin:4px 0 10px}\
.legend span{display:inline-block;margin-right:12px}\
.sw{display:inline-block;width:12px;height:12px;vertical-align:-2px;margin-right:4px;border:1px solid #555}\
.racks{display:flex;flex-wrap:wrap;gap:0 10px}\
.outer{border:2px solid #777;border-radius:6px;margin:10px 0;padding:6px 8px}\
.outer>h2{font-size:14px;margin:0 0 4px}\
.inners{display:flex;flex-wrap:wrap;gap:8px}\
.inner{border:1px solid #aaa;border-radius:4px;padding:4px;min-width:120px}\
.inner>h3{font-size:12px;margin:0 0 3px;font-weight:600}\
.tiles{display:grid;grid-template-columns:repeat(6,58px);gap:3px}\
.node{position:relative;height:22px;font-size:10px;line-height:22px;text-align:center;\
overflow:hidden;white-space:nowrap;text-overflow:ellipsis;border:1px solid #444;border-radius:3px}\
.ready{background:#7ccf7c}.degraded{background:#f2c14e}.pending{background:#9cc3ea}\
.inconsistent{background:#e58f4a}.error{background:#e05a5a;color:#fff}.none{background:#d9d9d9}\
.unknown{background:#f4f4f4}\
.stale{opacity:.55;border-style:dashed}\
.labels-only{background-image:repeating-linear-gradient(45deg,rgba(0,0,0,.18) 0 3px,transparent 3px 7px)}\
.pod{position:absolute;top:0;right:0;min-width:11px;height:11px;line-height:11px;font-size:8px;\
font-weight:700;color:#fff;border-radius:0 2px 0 4px}\
table{border-collapse:collapse;margin-top:8px}td,th{border:1px solid #bbb;padding:2px 6px;text-align:left}";

/// Badge colours of the groups, in turn.
const GROUP_COLOURS: [&str; 8] = [
    "#5b3fa8", "#0a7d8c", "#b23a7a", "#2c5fb3", "#8a5a00", "#2f7d32", "#a33", "#555",
];

/// The groups of the placed pods, each numbered (its mark on the tiles), and the groups on each
/// node.
struct Groups<'a> {
    pods: BTreeMap<&'a str, Vec<&'a PlacedPod>>,
    no: BTreeMap<&'a str, usize>,
    on_node: BTreeMap<&'a str, Vec<usize>>,
}

impl<'a> Groups<'a> {
    fn new(placed: &'a [PlacedPod]) -> Self {
        let mut pods: BTreeMap<&str, Vec<&PlacedPod>> = BTreeMap::new();
        for p in placed {
            pods.entry(p.group.group_id.as_str()).or_default().push(p);
        }
        let no: BTreeMap<&str, usize> = pods.keys().enumerate().map(|(i, g)| (*g, i)).collect();
        let mut on_node: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for p in placed {
            let n = no[p.group.group_id.as_str()];
            let v = on_node.entry(p.node.as_str()).or_default();
            if !v.contains(&n) {
                v.push(n);
            }
        }
        Self { pods, no, on_node }
    }
}

/// The page for `nodes` (any order) and `placed` pods.
pub fn render(nodes: &[PageNode], placed: &[PlacedPod]) -> String {
    let groups = Groups::new(placed);
    let mut o = String::new();
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    o.push_str("<title>nodetopo cluster view</title><style>");
    o.push_str(STYLE);
    o.push_str("</style></head><body>\n<h1>nodetopo cluster view</h1>\n");
    summary(&mut o, nodes, &groups);
    legend(&mut o);
    boxes(&mut o, nodes, &groups);
    groups_table(&mut o, &groups);
    o.push_str("</body></html>\n");
    o
}

/// The line of counts, also as data attributes for scripts and tests.
fn summary(o: &mut String, nodes: &[PageNode], groups: &Groups<'_>) {
    let count = |f: Freshness| nodes.iter().filter(|n| n.freshness == Some(f)).count();
    let (live, stale, labels_only) = (
        count(Freshness::Live),
        count(Freshness::Stale),
        count(Freshness::LabelsOnly),
    );
    let (total, placed) = (nodes.len(), groups.pods.len());
    let _ = writeln!(
        o,
        "<div class=\"summary\" id=\"summary\" data-nodes=\"{total}\" data-live=\"{live}\" \
         data-stale=\"{stale}\" data-labels-only=\"{labels_only}\" data-groups=\"{placed}\">\
         {total} nodes: {live} live, {stale} stale, {labels_only} from labels only; \
         {placed} groups with placed pods</div>",
    );
}

/// The colour of each fabric state, and of nodes without a live agent.
fn legend(o: &mut String) {
    o.push_str("<div class=\"legend\">");
    for s in <FabricState as strum::IntoEnumIterator>::iter().map(FabricState::as_str) {
        let _ = write!(o, "<span><i class=\"sw {s}\"></i>{s}</span>");
    }
    o.push_str(
        "<span><i class=\"sw none stale\"></i>stale (agent gone)</span>\
         <span><i class=\"sw none labels-only\"></i>labels only</span></div>\n",
    );
}

/// The nodes as tiles in nested boxes: the NVLink clusters (racks) side by side, each with its
/// cliques, then the nodes without multi-node NVLink by leaf.
fn boxes(o: &mut String, nodes: &[PageNode], groups: &Groups<'_>) {
    let mut boxes: BTreeMap<(bool, String), BTreeMap<String, Vec<&PageNode>>> = BTreeMap::new();
    for n in nodes {
        let (outer, inner) = place(n);
        let no_mnnvl = n.facts.as_ref().is_none_or(|f| f.cluster_uuid.is_none());
        boxes
            .entry((no_mnnvl, outer))
            .or_default()
            .entry(inner)
            .or_default()
            .push(n);
    }
    let mut in_racks = false;
    for ((no_mnnvl, outer), inners) in &boxes {
        if !*no_mnnvl && !in_racks {
            o.push_str("<div class=\"racks\">\n");
            in_racks = true;
        } else if *no_mnnvl && in_racks {
            o.push_str("</div>\n");
            in_racks = false;
        }
        let _ = writeln!(
            o,
            "<section class=\"outer\" data-box=\"{}\"><h2>{} <small>({} nodes)</small></h2><div class=\"inners\">",
            esc(outer),
            esc(outer),
            inners.values().map(Vec::len).sum::<usize>()
        );
        for (inner, members) in inners {
            let _ = write!(
                o,
                "<div class=\"inner\" data-box=\"{}\"><h3>{} ({})</h3><div class=\"tiles\">",
                esc(inner),
                esc(inner),
                members.len()
            );
            let mut members = members.clone();
            members.sort_by(|a, b| a.name.cmp(&b.name));
            for n in members {
                tile(o, n, groups);
            }
            o.push_str("</div></div>");
        }
        o.push_str("</div></section>\n");
    }
    if in_racks {
        o.push_str("</div>\n");
    }
}

/// One row per group: its mark, role, pods and nodes.
fn groups_table(o: &mut String, groups: &Groups<'_>) {
    o.push_str("<h2>Groups</h2>\n<table id=\"groups\"><tr><th>mark</th><th>group</th><th>role</th><th>pods</th><th>nodes</th></tr>\n");
    for (g, pods) in &groups.pods {
        let no = groups.no[g];
        let mut nodes_of: Vec<&str> = pods.iter().map(|p| p.node.as_str()).collect();
        nodes_of.sort_unstable();
        nodes_of.dedup();
        let role = pods[0]
            .group
            .role
            .map(|r| r.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "<tr class=\"group\" data-group=\"{}\"><td><span class=\"pod\" style=\"position:static;display:inline-block;background:{}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(g),
            GROUP_COLOURS[no % GROUP_COLOURS.len()],
            no + 1,
            esc(g),
            esc(&role),
            pods.len(),
            esc(&nodes_of.join(", "))
        );
    }
    o.push_str("</table>\n");
}

fn tile(o: &mut String, n: &PageNode, groups: &Groups<'_>) {
    let marks = groups.on_node.get(n.name.as_str());
    let state = state_of(n);
    let fresh = fresh_of(n);
    let gpus = n.facts.as_ref().map_or(0, |f| f.gpu_count);
    let mut title = format!("{}\nfabric {state}, {fresh}, {gpus} GPUs", n.name);
    if !n.stale_reason.is_empty() {
        let _ = write!(title, "\nstale: {}", n.stale_reason);
    }
    let mut badges = String::new();
    let mut group_attr = Vec::new();
    for no in marks.into_iter().flatten() {
        let g = groups
            .no
            .iter()
            .find(|(_, v)| **v == *no)
            .map(|(k, _)| *k)
            .unwrap_or("");
        let pods: Vec<&str> = groups
            .pods
            .get(g)
            .into_iter()
            .flatten()
            .filter(|p| p.node == n.name)
            .map(|p| p.pod.as_str())
            .collect();
        let _ = write!(title, "\ngroup {g}: {}", pods.join(", "));
        group_attr.push(g.to_string());
        let _ = write!(
            badges,
            "<span class=\"pod\" style=\"background:{}\">{}</span>",
            GROUP_COLOURS[no % GROUP_COLOURS.len()],
            no + 1
        );
    }
    let _ = write!(
        o,
        "<div class=\"node {state} {fresh}\" data-node=\"{}\" data-state=\"{state}\" data-freshness=\"{fresh}\" data-groups=\"{}\" title=\"{}\">{}{badges}</div>",
        esc(&n.name),
        esc(&group_attr.join(" ")),
        esc(&title),
        esc(&n.name)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extender::group::{GroupInfo, GroupKind};

    fn node(name: &str, fresh: Freshness, cluster: Option<&str>, state: FabricState) -> PageNode {
        PageNode {
            name: name.into(),
            freshness: Some(fresh),
            facts: Some(NodeFacts {
                gpu_count: 4,
                fabric_state: state,
                cluster_uuid: cluster.map(str::to_string),
                clique_id: cluster.map(|_| 1),
                block: Some("leaf-a".into()),
                ..NodeFacts::default()
            }),
            stale_reason: String::new(),
        }
    }

    #[test]
    fn boxes_states_freshness_and_marks() {
        let nodes = vec![
            node("a<1>", Freshness::Live, Some("c1"), FabricState::Ready),
            node("b", Freshness::Stale, Some("c1"), FabricState::Degraded),
            node("c", Freshness::LabelsOnly, None, FabricState::None),
        ];
        let placed = vec![PlacedPod {
            pod: "ns/p0".into(),
            node: "a<1>".into(),
            group: GroupInfo {
                kind: GroupKind::Lws,
                group_id: "ns/g".into(),
                deployment: "ns/d".into(),
                role: None,
                size: Some(1),
            },
            gpus: 1,
        }];
        let html = render(&nodes, &placed);
        assert!(
            html.contains("data-node=\"a&lt;1&gt;\""),
            "names are escaped"
        );
        assert!(html.contains("class=\"node ready live\""));
        assert!(html.contains("class=\"node degraded stale\""));
        assert!(html.contains("class=\"node none labels-only\""));
        assert!(html.contains("data-box=\"NVLink cluster c1\""));
        assert!(html.contains("data-box=\"leaf leaf-a\""));
        assert!(html.contains("data-groups=\"ns/g\""));
        assert!(html.contains("data-live=\"1\" data-stale=\"1\" data-labels-only=\"1\""));
        // The rack boxes come before the nodes without NVLink.
        assert!(html.find("NVLink cluster c1").unwrap() < html.find("No multi-node").unwrap());
    }
}
