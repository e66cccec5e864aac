//! Label syntax: the one validator of keys, values and prefixes, by the Kubernetes API server's
//! rules. [`LabelKey`] and [`LabelValue`] can only hold what the server accepts.

use std::fmt;

use thiserror::Error;

/// Longest label name and label value.
const MAX_NAME: usize = 63;
/// Longest key prefix (a DNS subdomain).
const MAX_PREFIX: usize = 253;

/// Why a label key, value or prefix is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LabelError {
    /// The name part of a key is empty, too long or has invalid characters.
    #[error(
        "invalid label name {0:?}: want at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends"
    )]
    Name(String),
    /// The value is too long or has invalid characters.
    #[error(
        "invalid label value {0:?}: want at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends, or empty"
    )]
    Value(String),
    /// The prefix is not a DNS subdomain.
    #[error("invalid label prefix {0:?}: want a DNS subdomain of at most 253 characters")]
    Prefix(String),
    /// A compatibility label set that nodetopo does not know.
    #[error("unknown compatibility label set {0:?} (expected topograph or gfd-clique)")]
    UnknownCompat(String),
}

/// True for `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` of at most 63 characters.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// True for a lowercase RFC 1123 DNS subdomain of at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= MAX_PREFIX
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.first().is_some_and(alnum)
                && b.last().is_some_and(alnum)
                && b.iter().all(|c| alnum(c) || *c == b'-')
        })
}

/// A valid label key: an optional DNS-subdomain prefix and a name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelKey {
    prefix: Option<String>,
    name: String,
}

impl LabelKey {
    /// A key `prefix/name`, checked.
    pub fn new(prefix: Option<&str>, name: &str) -> Result<Self, LabelError> {
        if let Some(p) = prefix {
            if !is_dns_subdomain(p) {
                return Err(LabelError::Prefix(p.to_string()));
            }
        }
        if !is_label_name(name) {
            return Err(LabelError::Name(name.to_string()));
        }
        Ok(Self {
            prefix: prefix.map(str::to_string),
            name: name.to_string(),
        })
    }

    /// Parses `prefix/name` or `name`.
    pub fn parse(key: &str) -> Result<Self, LabelError> {
        match key.split_once('/') {
            Some((p, n)) => Self::new(Some(p), n),
            None => Self::new(None, key),
        }
    }

    /// The name part.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for LabelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.prefix {
            Some(p) => write!(f, "{p}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A valid label value: empty, or a label name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelValue(String);

impl LabelValue {
    /// A value, checked.
    pub fn new(v: &str) -> Result<Self, LabelError> {
        if v.is_empty() || is_label_name(v) {
            Ok(Self(v.to_string()))
        } else {
            Err(LabelError::Value(v.to_string()))
        }
    }

    /// Turns any text into a value: invalid characters become `-`, the result is cut to 63
    /// characters and trimmed of non-alphanumerics at both ends. `None` when nothing is left.
    pub fn sanitize(text: &str) -> Option<Self> {
        let replaced = Self::replace_invalid(text);
        let trimmed = replaced.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        // Every char is ASCII now, so byte slicing is safe.
        let cut = &trimmed[..trimmed.len().min(MAX_NAME)];
        let v = cut.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        (!v.is_empty()).then(|| Self(v.to_string()))
    }

    /// `text` with every character a label value may not hold replaced by `-` (not trimmed or
    /// cut; [`Self::sanitize`] does both).
    pub fn replace_invalid(text: &str) -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    }

    /// The value text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LabelValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hex digits of a short hash (40 bits: collisions are negligible for the few thousand leaf
/// sets of one fabric).
pub const HASH_HEX: usize = 10;

/// A switch ID as a label value. A GUID (`0x0002c90300a1b2c3`) is one already. Any other
/// character than `[A-Za-z0-9._-]` becomes `-` (a MAC chassis ID `aa:bb:cc:dd:ee:01` reads
/// `aa-bb-cc-dd-ee-01`), and the ends are trimmed to alphanumerics. An ID that is then empty or
/// longer than 63 characters is written `id-` and its short hash.
pub fn id_label_value(id: &str) -> String {
    let replaced = LabelValue::replace_invalid(id.trim());
    let trimmed = replaced.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() || trimmed.len() > 63 {
        format!("id-{}", short_hash([id]))
    } else {
        trimmed.to_string()
    }
}

/// A short stable hash (the first hex digits of SHA-256) of a set of IDs, given in any order
/// and possibly repeated: they are sorted and made distinct first, then joined by newlines.
pub fn short_hash<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut ids: Vec<&str> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let digest = ring::digest::digest(&ring::digest::SHA256, ids.join("\n").as_bytes());
    let mut hex = String::with_capacity(HASH_HEX);
    for b in digest.as_ref() {
        hex.push_str(&format!("{b:02x}"));
        if hex.len() >= HASH_HEX {
            break;
        }
    }
    hex.truncate(HASH_HEX);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in [
            "kubernetes.io/hostname",
            "example.com/nvlink.domain",
            "plain",
            "a.b-c/x_y.z",
        ] {
            let k = LabelKey::parse(good).unwrap();
            assert_eq!(k.to_string(), good);
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
            assert!(LabelKey::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn subdomains() {
        assert!(is_dns_subdomain("example.com"));
        assert!(is_dns_subdomain("a-1.b"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(!is_dns_subdomain("-a.b"));
        assert!(!is_dns_subdomain("A.b"));
        assert!(!is_dns_subdomain(&"a".repeat(254)));
    }

    const LEAF: &str = "0x0002c90300a1b2c3";
    const OTHER_LEAF: &str = "0x0002c90300a1b2c4";

    #[test]
    fn id_spelling_is_a_label_value() {
        for id in [
            LEAF,
            "aa:bb:cc:dd:ee:01",
            "leaf 01.example.com",
            "::",
            "",
            &"x".repeat(80),
            "üñí",
        ] {
            let v = id_label_value(id);
            assert!(
                LabelValue::new(&v).is_ok() && !v.is_empty(),
                "{id:?} -> {v:?}"
            );
        }
        assert_eq!(id_label_value(LEAF), LEAF);
        assert_eq!(id_label_value("aa:bb:cc:dd:ee:01"), "aa-bb-cc-dd-ee-01");
        assert!(id_label_value("::").starts_with("id-"));
    }

    #[test]
    fn hash_is_order_free_and_short() {
        assert_eq!(
            short_hash([LEAF, OTHER_LEAF]),
            short_hash([OTHER_LEAF, LEAF, OTHER_LEAF])
        );
        assert_ne!(short_hash([LEAF, OTHER_LEAF]), short_hash([LEAF]));
        assert_eq!(short_hash([LEAF]).len(), HASH_HEX);
        // Stable across builds: a fixed input gives a fixed value.
        assert_eq!(short_hash(["a"]), "ca978112ca");
    }
}
