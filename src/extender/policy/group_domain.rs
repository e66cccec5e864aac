//! Where a group's next member must go: the domain its placed members hold, or the one chosen
//! for it, and the domains held for other groups.

use serde::Serialize;

use super::{DOMAIN_LEVELS, Domain, Level, PeerFacts, domain_key};

/// Where a group's next member must go, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "from", rename_all = "kebab-case")]
pub enum GroupDomain {
    /// The tightest domain holding every placed member that still has a candidate node.
    Members {
        /// The domain.
        domain: Domain,
    },
    /// Reserved for the group when its first member was placed (the member is not yet visible
    /// in the pod watch).
    Reserved {
        /// The domain.
        domain: Domain,
    },
    /// Where the group ran before it was replaced as a whole (a rolling update), or the
    /// domain of its placed members, while pods it replaced there still hold part of it in
    /// kube-scheduler's view: the pod waits for them to leave rather than moving the group.
    Returning {
        /// The domain.
        domain: Domain,
    },
    /// Chosen now, for the group's first member ([`super::choose_domain`]): inside the tightest
    /// domain that holds the group with its counterpart role, the tightest domain that holds
    /// the group, leaving the counterpart its tightest fit.
    Chosen {
        /// The domain.
        domain: Domain,
        /// Pods of the group its candidates can take, less the room held for other groups.
        room: u32,
        /// Its closeness to the counterpart role's placed pods.
        counterpart: Level,
    },
}

impl GroupDomain {
    /// The domain.
    pub fn domain(&self) -> &Domain {
        match self {
            Self::Members { domain }
            | Self::Reserved { domain }
            | Self::Returning { domain }
            | Self::Chosen { domain, .. } => domain,
        }
    }
}

/// A domain held for another group that still has `remaining` members to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The domain.
    pub domain: Domain,
    /// Members still to place there.
    pub remaining: u32,
    /// GPUs each member pod asks for.
    pub gpus_per_pod: u32,
}

/// The domains that hold every placed member, tightest first.
pub fn members_domains(members: &[PeerFacts]) -> Vec<Domain> {
    let Some(first) = members.first() else {
        return Vec::new();
    };
    DOMAIN_LEVELS
        .iter()
        .filter_map(|&level| {
            let key = domain_key(&first.facts, level)?;
            members[1..]
                .iter()
                .all(|m| domain_key(&m.facts, level).as_deref() == Some(key.as_str()))
                .then_some(Domain { level, key })
        })
        .collect()
}
