//! nodetopo: discovers a GPU node's NVLink, multi-node NVLink and RDMA topology and publishes it.
//!
//! Data flows one way: hardware probes ([`probe`]) produce the [`model::NodeTopology`]; pure
//! policy and renderers ([`render`]) turn it into output.
#![deny(missing_docs)]
// FFI is confined to the modules that need it (NVML in `probe::nvml_live`); each opts in.
#![deny(unsafe_code)]

pub mod extender;
pub mod model;
pub mod probe;
pub mod proto;
pub mod render;
