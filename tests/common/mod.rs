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
