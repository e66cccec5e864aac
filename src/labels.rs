//! Node labels: the pure mapping from a [`NodeTopology`] to the label set the agent applies.
//!
//! [`LabelKey`] and [`LabelValue`] can only hold syntax the Kubernetes API server accepts, so a
//! label set built here never fails validation on the server. A fact that is unknown produces
//! no key at all, never a placeholder.
#![forbid(unsafe_code)]

use crate::deploy::compat::{CompatOptions, compat_labels};
use std::{collections::BTreeMap, fmt};

use thiserror::Error;

use crate::model::{FabricState, GpuFamily, LinkLayer, NodeTopology, PortState, Source};

/// Default label key prefix.
pub const DEFAULT_PREFIX: &str = "nodetopo.io";

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
fn is_dns_subdomain(s: &str) -> bool {
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
        let replaced: String = text
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let trimmed = replaced.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        // Every char is ASCII now, so byte slicing is safe.
        let cut = &trimmed[..trimmed.len().min(MAX_NAME)];
        let v = cut.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        (!v.is_empty()).then(|| Self(v.to_string()))
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

/// How labels are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelConfig {
    prefix: String,
    compat: CompatOptions,
}

impl LabelConfig {
    /// A config with key prefix `prefix` (e.g. `nodetopo.io`), checked.
    pub fn new(prefix: &str) -> Result<Self, LabelError> {
        if is_dns_subdomain(prefix) {
            Ok(Self {
                prefix: prefix.to_string(),
                compat: CompatOptions::default(),
            })
        } else {
            Err(LabelError::Prefix(prefix.to_string()))
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Also writes the opt-in compatibility labels (Topograph, GFD) named in `compat`.
    pub fn with_compat(mut self, compat: CompatOptions) -> Self {
        self.compat = compat;
        self
    }
}

impl Default for LabelConfig {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_string(),
            compat: CompatOptions::default(),
        }
    }
}

/// A desired label set, ordered by key.
pub type Labels = BTreeMap<LabelKey, LabelValue>;

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// The labels the agent should apply for `topo`.
pub fn desired_labels(topo: &NodeTopology, config: &LabelConfig) -> Labels {
    let mut out = Labels::new();
    let mut put = |name: &str, value: Option<String>| {
        let key = LabelKey::new(Some(&config.prefix), name);
        let value = value.as_deref().and_then(LabelValue::sanitize);
        debug_assert!(key.is_ok(), "static label names are valid");
        if let (Ok(k), Some(v)) = (key, value) {
            out.insert(k, v);
        }
    };

    let nvml_ok = topo
        .sources
        .iter()
        .any(|s| s.source == Source::Nvml && s.ok);
    let gpus = &topo.gpus;
    let first = gpus.first();
    put(
        "gpu.count",
        (nvml_ok || !gpus.is_empty()).then(|| gpus.len().to_string()),
    );
    put(
        "gpu.product",
        first.map(|g| {
            if gpus.iter().all(|x| x.name == g.name) {
                g.name.clone()
            } else {
                "mixed".into()
            }
        }),
    );
    put(
        "gpu.memory-mib",
        gpus.iter()
            .map(|g| g.memory_mib())
            .min()
            .filter(|m| *m > 0)
            .map(|m| m.to_string()),
    );
    put(
        "gpu.family",
        first
            .map(|g| g.family)
            .filter(|f| *f != GpuFamily::Unknown)
            .map(|f| f.as_str().to_string()),
    );
    put(
        "gpu.compute",
        first
            .filter(|g| g.compute_major > 0)
            .map(|g| format!("{}.{}", g.compute_major, g.compute_minor)),
    );
    put("gpu.driver", topo.driver.driver_version.clone());
    put("cuda.driver", topo.driver.cuda_driver_version.clone());
    put(
        "nvlink.links",
        gpus.iter()
            .map(|g| g.nvlinks.len())
            .min()
            .map(|n| n.to_string()),
    );
    put(
        "nvlink.switch",
        first.map(|_| bool_str(gpus.iter().any(|g| g.switch_links() > 0)).to_string()),
    );
    put(
        "nvlink.all-to-all",
        (gpus.len() >= 2).then(|| {
            let all = gpus.iter().all(|a| {
                gpus.iter().filter(|b| b.index != a.index).all(|b| {
                    topo.pair(a.index, b.index).is_some_and(|p| {
                        p.connection == crate::model::Connection::NvLink
                            && p.p2p_nvlink == crate::model::P2pStatus::Ok
                    })
                })
            });
            bool_str(all).to_string()
        }),
    );
    // A fabric source that failed without an answer ("none" or unknown) is no fact; a failed
    // query that was answered reports `error`, which is.
    // A source that failed without data to keep: its facts are unknown. Stale data is the last
    // good answer, so it still counts as known.
    let failed = |source: Source| {
        topo.sources
            .iter()
            .any(|s| s.source == source && !s.ok && !s.stale)
    };
    let fabric_failed = failed(Source::Fabric);
    let fabric_known = match topo.fabric.state {
        FabricState::Unknown => false,
        FabricState::None => !fabric_failed,
        _ => true,
    };
    put(
        "nvlink.fabric",
        fabric_known.then(|| topo.fabric.state.as_str().to_string()),
    );
    put(
        "nvlink.domain",
        topo.fabric
            .domain
            .clone()
            .filter(|_| topo.fabric.state == FabricState::Ready),
    );
    put("nvlink.cluster", topo.fabric.cluster_uuid.clone());

    let rdma_known = !topo.nics.is_empty()
        || topo
            .sources
            .iter()
            .any(|s| s.source == Source::Rdma && s.ok);
    if rdma_known {
        let active: Vec<_> = topo
            .nics
            .iter()
            .flat_map(|n| &n.ports)
            .filter(|p| matches!(p.state, PortState::Active | PortState::ActiveDefer))
            .collect();
        put("rdma.count", Some(active.len().to_string()));
        let ib = active.iter().any(|p| p.link_layer == LinkLayer::Infiniband);
        let eth = active.iter().any(|p| p.link_layer == LinkLayer::Ethernet);
        put(
            "rdma.link-layer",
            match (ib, eth) {
                (true, true) => Some("mixed".into()),
                (true, false) => Some("infiniband".into()),
                (false, true) => Some("ethernet".into()),
                (false, false) => None,
            },
        );
        put(
            "rdma.rate-gbps",
            active
                .iter()
                .map(|p| p.rate_gbps)
                .filter(|r| r.is_finite() && *r > 0.0)
                .min_by(f64::total_cmp)
                .map(|r| r.to_string()),
        );
        // The InfiniBand subnet, when every active IB port is on one (label values cannot hold
        // `:`, so `fe80:0000:0000:0000` becomes `fe80-0000-0000-0000`).
        let mut subnets: Vec<&str> = active
            .iter()
            .filter(|p| p.link_layer == LinkLayer::Infiniband && !p.subnet_prefix.is_empty())
            .map(|p| p.subnet_prefix.as_str())
            .collect();
        subnets.sort_unstable();
        subnets.dedup();
        put(
            "rdma.ib-subnet",
            (subnets.len() == 1).then(|| subnets[0].replace(':', "-")),
        );
        put(
            "rdma.gpudirect",
            (!failed(Source::Gpudirect)).then(|| bool_str(topo.gpudirect.ready).into()),
        );
        put(
            "rdma.rail-aligned",
            first
                .filter(|_| !failed(Source::SysfsPci))
                .map(|_| bool_str(topo.rail_pairing.rail_aligned).into()),
        );
    }
    for (key, value) in compat_labels(topo.fabric.domain.as_deref(), &config.compat) {
        if let (Ok(k), Some(v)) = (LabelKey::parse(&key), LabelValue::sanitize(&value)) {
            out.insert(k, v);
        }
    }
    out
}

/// Renders labels one per line as `key=value`, as `nodetopo probe -o labels` prints them.
pub fn render(labels: &Labels) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

#[cfg(test)]
mod tests;
