//! The binding-time admission webhook: copies nodetopo's topology labels from the Node a Pod is
//! bound to onto the Pod, so that programs in the Pod (routers, inference engines) can read them
//! from their own labels or the Downward API.
//!
//! - [`consumer`]: the keys other programs read on their own Pod (llm-d's router, Dynamo), opt-in
//!   per consumer;
//! - [`mutate`]: the pure decision (Node labels and configuration → JSON patch) and the
//!   `AdmissionReview` answer;
//! - [`nodes`]: Node labels from a metadata-only Node watch, in a compact store that keeps only
//!   the copied keys;
//! - [`route`]: the scheduler profile of a Pod being created: group pods that the extender
//!   places go to the profile that scores every node (`POST /route`);
//! - [`tls`]: the serving certificate, read from PEM files and reloaded when they change;
//! - [`server`]: the HTTPS admission endpoint and the plain HTTP health and metrics endpoints.
//!
//! Kubernetes persists a Binding's labels onto the Pod when the `PodTopologyLabelsAdmission`
//! feature gate is on (beta and on by default since 1.35, alpha in 1.33 and 1.34); the webhook
//! mutates the Binding on `pods/binding` CREATE, and the Pod itself when it is created with
//! `spec.nodeName` already set.

pub mod consumer;
pub mod metrics;
pub mod mutate;
pub mod nodes;
mod review;
pub mod route;
mod run;
pub mod server;
pub mod tls;

pub use run::{RunError, WebhookConfig, run};

use std::path::PathBuf;

use thiserror::Error;

use crate::labels::LabelError;

/// Why the webhook cannot start or answer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A configured label key or prefix is invalid.
    #[error("invalid copied label")]
    Label(#[from] LabelError),
    /// A `--consumer` or `--pod-key` that cannot be read (the text, and what is wrong with it).
    #[error("consumer key {0:?}: {1}")]
    Consumer(String, &'static str),
    /// A bound Pod's labels could not be read.
    #[error("reading Pod {0}")]
    PodLookup(String, #[source] kube::Error),
    /// A bound Pod's labels were not read in time.
    #[error("reading Pod {0} took longer than {1:?}")]
    PodLookupTimeout(String, std::time::Duration),
    /// Two copied Node labels would be written under the same Pod label.
    #[error("two copied labels map to pod label {0}")]
    DuplicatePodKey(String),
    /// The request body is not an `AdmissionReview`.
    #[error("the request body is not an AdmissionReview")]
    BadReview(#[source] serde_json::Error),
    /// The `AdmissionReview` has no `request`.
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// A certificate or key file cannot be read.
    #[error("reading {path}")]
    ReadPem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    /// rustls refused the certificate or key.
    #[error("the serving certificate or key is not usable")]
    Tls(#[source] rustls::Error),
}
