//! An error and its chain of sources as one line of text, for status fields and answers that
//! carry text (a probe source's error, an admission answer). Logs take the error itself
//! (`error = &e as &dyn Error`), and the edge prints `{:#}`.

use std::error::Error;

/// `e` and each of its sources, `: `-separated.
pub fn chain(e: &dyn Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("reading {0}")]
    struct Outer(&'static str, #[source] std::io::Error);

    #[test]
    fn every_source_once_in_order() {
        let e = Outer("port 1", std::io::Error::other("timed out"));
        assert_eq!(super::chain(&e), "reading port 1: timed out");
        assert_eq!(super::chain(&std::io::Error::other("alone")), "alone");
    }
}
