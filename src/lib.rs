//! nodetopo: discovers a GPU node's NVLink, multi-node NVLink and RDMA topology and publishes it.
//!
//! Data flows one way: hardware probes ([`probe`]) produce the [`model::NodeTopology`]; pure
//! policy ([`labels`]) and renderers ([`render`]) turn it into output; the [`agent`] keeps it
//! current and publishes it over gRPC ([`api`]), as node labels ([`node_labels`]) and as [`metrics`].
#![deny(missing_docs)]
// FFI is confined to the modules that need it (NVML in `probe::nvml::live`); each opts in.
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod backoff;
pub mod deploy;
pub mod extender;
pub mod hints;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod node_labels;
pub mod pod_env;
pub mod probe;
pub mod proto;
pub mod render;
pub mod webhook;
