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

/// Compares `labels` (one `key=value` a line) with the checked-in list
/// `tests/fixtures/labels/<list>.txt`, the label contract for keys only a live peer gives, or
/// writes the list, `header` as its comment line, with `NODETOPO_BLESS=1`.
pub fn label_list_contract(list: &str, header: &str, labels: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/labels")
        .join(format!("{list}.txt"));
    let body: String = labels
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    if std::env::var_os("NODETOPO_BLESS").is_some() {
        std::fs::write(&path, format!("# {header}\n{body}")).unwrap();
        return;
    }
    let want: String = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless to create)", path.display()))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(body, want, "{list}: the label set changed");
}
