//! Deployment-side policy: the objects other schedulers need in order to use nodetopo's labels.
//!
//! Everything here is pure: it turns options into values, and the CLI prints them.

pub mod topology;

use thiserror::Error;

use crate::labels::LabelError;

/// A label key or option that Kubernetes would reject.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeployError {
    /// A label key or prefix fails Kubernetes' label rules.
    #[error("invalid label key")]
    InvalidLabelKey(#[source] LabelError),
    /// Two levels name the same label key.
    #[error("label key {0:?} names two levels: each level needs its own key")]
    DuplicateLevel(String),
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
    /// A name is longer than the target project accepts (it would skip it, not refuse it).
    #[error(
        "{what} {name:?} is {len} characters, but {project} skips any longer than {max}: shorten the name"
    )]
    NameTooLong {
        /// What the name names, e.g. Volcano's network topology type.
        what: &'static str,
        /// The offending name.
        name: String,
        /// Its length.
        len: usize,
        /// The project that sets the limit.
        project: &'static str,
        /// The limit.
        max: usize,
    },
    /// A level list that does not end with the host level.
    #[error("the levels must end with the host level ({HOSTNAME})", HOSTNAME = crate::labels::keys::HOSTNAME)]
    HostNotLast,
    /// An option that only one scheduler's object has was given for another.
    #[error("{option} applies only to {only}, not to {scheduler}")]
    NotForScheduler {
        /// The option.
        option: &'static str,
        /// The object it belongs to.
        only: &'static str,
        /// The scheduler it was given for.
        scheduler: &'static str,
    },
}
