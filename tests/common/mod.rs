//! Helpers shared by the whole-binary tests.
#![allow(dead_code)]

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Parses `nvidia-smi -q -x` output (it carries a DTD declaration).
pub fn nvidia_smi_doc(xml: &str) -> roxmltree::Document<'_> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(xml, opts).expect("nvidia-smi -q -x is XML")
}

/// The trimmed text of `node`'s child element `tag`, or "" when absent.
pub fn xml_text(node: roxmltree::Node, tag: &str) -> String {
    node.children()
        .find(|c| c.has_tag_name(tag))
        .and_then(|c| c.text())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Node `i` of the synthetic GB200 fleet the scheduling and webhook benchmarks create.
pub fn fleet_node_name(i: usize) -> String {
    format!("gb-{i:05}")
}

/// The agent's labels of fleet node `i`: racks of 18 trays in two cliques of 9, one NVLink
/// cluster per rack, four racks per leaf.
pub fn fleet_node_labels(i: usize) -> serde_json::Value {
    let rack = i / 18;
    let clique = (i % 18) / 9 + 1;
    let cluster = format!("{rack:08x}-0000-4000-8000-000000000000");
    serde_json::json!({
        "nodetopo.io/gpu.count": "4",
        "nodetopo.io/gpu.product": "NVIDIA-GB200",
        "nodetopo.io/nvlink.fabric": "ready",
        "nodetopo.io/nvlink.cluster": cluster,
        "nodetopo.io/nvlink.domain": format!("{cluster}.{clique}"),
        "nodetopo.io/rdma.link-layer": "infiniband",
        "nodetopo.io/rdma.ib-subnet": "fe80-0000-0000-0000",
        "network.example.com/leaf": format!("leaf-{}", rack / 4),
    })
}
