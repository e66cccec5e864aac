//! Placement policy: pure functions from the cluster view, the placed pods and one pod to a
//! filter verdict and a 0..=10 score per candidate node, each with its explanation.
//!
//! Hard rules (filter) keep a group on one RDMA fabric and, once it is on multi-node NVLink,
//! inside one healthy NVLink cluster. Soft rules (prioritize) rank nodes by how close they are to
//! the group's placed members (clique > cluster > leaf/block > fabric), then to the
//! counterpart role (prefill ↔ decode), then by whether their domain can still hold the rest of
//! the group.
//!
//! One concern a file: `weights`, the pod's `context`, the hard rules (`filter`), the
//! soft rules (`score`), and where a group must go (`group_domain`, chosen by `room`).

pub use super::domain::{
    DOMAIN_LEVELS, Domain, DomainId, DomainKeys, Level, domain_key, proximity,
};

mod context;
mod filter;
mod group_domain;
mod room;
mod score;
mod weights;

pub use context::{PeerFacts, PodContext, pod_context};
pub use filter::{Reject, filter_node};
pub use group_domain::{GroupDomain, Held, members_domains};
pub use room::{Counterpart, Demand, choose_domain};
pub use score::{Candidate, ScoreBreakdown, score_nodes};
pub use weights::{Weights, WeightsError};

#[cfg(test)]
mod tests;
