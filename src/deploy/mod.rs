//! Deployment-side policy: the objects other schedulers need in order to use nodetopo's labels,
//! and the opt-in compatibility labels that mirror them under other projects' keys.
//!
//! Everything here is pure: it turns options into values, and the CLI prints them.

pub mod compat;
pub mod topology;

use thiserror::Error;

/// A label key or option that Kubernetes would reject.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeployError {
    /// A label key fails Kubernetes' qualified-name rules.
    #[error("invalid label key {key:?}: {reason}")]
    InvalidLabelKey {
        /// The offending key.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A label key is longer than the target project's schema allows.
    #[error("label key {key:?} is {len} characters; {project} allows at most {max}")]
    KeyTooLong {
        /// The offending key.
        key: String,
        /// Its length.
        len: usize,
        /// The project whose schema sets the limit.
        project: &'static str,
        /// The limit.
        max: usize,
    },
    /// A name for a generated object is not a DNS subdomain.
    #[error("invalid object name {0:?}: must be a lowercase DNS subdomain")]
    InvalidName(String),
    /// A compatibility label name that nodetopo does not know.
    #[error("unknown compatibility label set {0:?} (expected topograph or gfd-clique)")]
    UnknownCompat(String),
}

/// Checks `key` against Kubernetes' label key syntax: an optional DNS-subdomain prefix of at most
/// 253 characters and `/`, then a name of at most 63 characters made of alphanumerics, `-`, `_`
/// and `.`, starting and ending with an alphanumeric.
pub fn check_label_key(key: &str) -> Result<(), DeployError> {
    let bad = |reason| {
        Err(DeployError::InvalidLabelKey {
            key: key.to_string(),
            reason,
        })
    };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !is_dns_subdomain(p) {
            return bad("the prefix must be a lowercase DNS subdomain of at most 253 characters");
        }
    }
    if name.is_empty() || name.len() > 63 {
        return bad("the name must be 1 to 63 characters");
    }
    let ok_inner = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ends_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok_inner || !ends_ok {
        return bad(
            "the name may hold only alphanumerics, '-', '_' and '.', and must begin and end with an alphanumeric",
        );
    }
    Ok(())
}

/// True when `s` is a lowercase RFC 1123 DNS subdomain (at most 253 characters).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys() {
        for good in [
            "kubernetes.io/hostname",
            "nodetopo.io/nvlink.domain",
            "plain",
            "a.b-c/x_y.z",
        ] {
            assert_eq!(check_label_key(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/name",
            "Upper.io/x",
            "p.io/",
            "p.io/-x",
            "p.io/x-",
            "p.io/a b",
            "a/b/c",
            &format!("p.io/{}", "x".repeat(64)),
        ] {
            assert!(check_label_key(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn subdomains() {
        assert!(is_dns_subdomain("nodetopo.io"));
        assert!(is_dns_subdomain("a-1.b"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(!is_dns_subdomain("-a.b"));
        assert!(!is_dns_subdomain(&"a".repeat(254)));
    }
}
