//! Opt-in compatibility labels: the NVLink domain written again under keys that other tools read.
//!
//! Off by default. Topograph's `accelerator.topograph.run/domain` and GPU feature discovery's
//! `nvidia.com/gpu.clique` carry the same fact as `<prefix>/nvlink.domain` (nodetopo's domain
//! rule is GFD's), so tools that only know those keys work unchanged. The GFD key must be
//! enabled only where GFD is not deployed: two writers of one label would fight.

use std::str::FromStr;

use super::syntax::LabelError;

/// Topograph's accelerator-domain label key.
pub const TOPOGRAPH_DOMAIN: &str = "accelerator.topograph.run/domain";
/// GPU feature discovery's NVLink clique label key.
pub const GFD_CLIQUE: &str = "nvidia.com/gpu.clique";

/// One set of compatibility labels, as named on the command line and in the chart's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompatLabel {
    /// `accelerator.topograph.run/domain` (`topograph`).
    Topograph,
    /// `nvidia.com/gpu.clique` (`gfd-clique`); only where GFD is not deployed.
    GfdClique,
}

impl CompatLabel {
    /// The name used on the command line and in values.
    pub fn name(self) -> &'static str {
        match self {
            Self::Topograph => "topograph",
            Self::GfdClique => "gfd-clique",
        }
    }

    /// The label key this set writes.
    pub fn key(self) -> &'static str {
        match self {
            Self::Topograph => TOPOGRAPH_DOMAIN,
            Self::GfdClique => GFD_CLIQUE,
        }
    }
}

impl FromStr for CompatLabel {
    type Err = LabelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "topograph" => Ok(Self::Topograph),
            "gfd-clique" => Ok(Self::GfdClique),
            other => Err(LabelError::UnknownCompat(other.to_string())),
        }
    }
}

/// Which compatibility labels to write. The default writes none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompatOptions {
    /// Write Topograph's domain label.
    pub topograph: bool,
    /// Write GFD's clique label (the user has said GFD is not deployed).
    pub gfd_clique: bool,
}

impl CompatOptions {
    /// Parses a comma-separated list such as `topograph,gfd-clique`; an empty string is none.
    pub fn parse_list(list: &str) -> Result<Self, LabelError> {
        let mut opts = Self::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            opts.enable(item.parse()?);
        }
        Ok(opts)
    }

    /// Turns one set on.
    pub fn enable(&mut self, label: CompatLabel) {
        match label {
            CompatLabel::Topograph => self.topograph = true,
            CompatLabel::GfdClique => self.gfd_clique = true,
        }
    }

    /// The label keys these options may write, in a fixed order.
    pub fn keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.topograph {
            keys.push(TOPOGRAPH_DOMAIN);
        }
        if self.gfd_clique {
            keys.push(GFD_CLIQUE);
        }
        keys
    }
}

/// The compatibility labels for an NVLink `domain` (`<ClusterUUID>.<CliqueId>`, present only
/// under the strict fabric rule). No domain, or no option on, gives no labels: a missing fact is
/// never written as a placeholder.
pub fn compat_labels(domain: Option<&str>, opts: &CompatOptions) -> Vec<(&'static str, String)> {
    let Some(domain) = domain.filter(|d| !d.is_empty()) else {
        return Vec::new();
    };
    opts.keys()
        .into_iter()
        .map(|k| (k, domain.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "9f8e5a36-5d0f-4a53-9a5e-0c1d2e3f4a5b.32766";

    #[test]
    fn off_by_default() {
        assert!(compat_labels(Some(DOMAIN), &CompatOptions::default()).is_empty());
    }

    #[test]
    fn no_domain_no_labels() {
        let all = CompatOptions::parse_list("topograph,gfd-clique").unwrap();
        assert!(compat_labels(None, &all).is_empty());
        assert!(compat_labels(Some(""), &all).is_empty());
    }

    #[test]
    fn each_set_writes_its_key() {
        let topo = CompatOptions::parse_list("topograph").unwrap();
        assert_eq!(
            compat_labels(Some(DOMAIN), &topo),
            vec![(TOPOGRAPH_DOMAIN, DOMAIN.to_string())]
        );
        let gfd = CompatOptions::parse_list(" gfd-clique ").unwrap();
        assert_eq!(
            compat_labels(Some(DOMAIN), &gfd),
            vec![(GFD_CLIQUE, DOMAIN.to_string())]
        );
        let both = CompatOptions::parse_list("gfd-clique,topograph").unwrap();
        assert_eq!(compat_labels(Some(DOMAIN), &both).len(), 2);
    }

    #[test]
    fn parse_rejects_unknown_and_accepts_empty() {
        assert_eq!(CompatOptions::parse_list(""), Ok(CompatOptions::default()));
        assert_eq!(
            CompatOptions::parse_list("topograph,gfd"),
            Err(LabelError::UnknownCompat("gfd".into()))
        );
    }

    #[test]
    fn keys_are_valid_label_keys() {
        for l in [CompatLabel::Topograph, CompatLabel::GfdClique] {
            super::super::LabelKey::parse(l.key()).unwrap();
            assert_eq!(l.name().parse::<CompatLabel>().unwrap(), l);
        }
    }
}
