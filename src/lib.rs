//! nodetopo: discovers a GPU node's NVLink, multi-node NVLink and RDMA topology and publishes it.
//!
//! Data flows one way:
//! - hardware probes ([`probe`]: [`probe::nvml`], [`probe::rdma`], [`probe::pci`] over
//!   [`probe::sysfs`]) produce the [`model::NodeTopology`];
//! - the node's place in its fabrics (leaf, scalable unit, spine block) is derived from its
//!   ports' neighbours ([`placement`]; the SMP prober is [`probe::ib`]);
//! - pure policy turns it into output: the label vocabulary and label set ([`labels`]), the
//!   RDMA environment for a GPU selection ([`hints`]), the renderers ([`render`]) and other
//!   schedulers' topology objects ([`deploy`]);
//! - the [`agent`] keeps it current and publishes it over gRPC ([`api`], wire types in
//!   [`proto`]), as node labels ([`node_labels`], retried by [`backoff`]) and as [`metrics`];
//! - the [`extender`] places pod groups from the agents' topologies or their labels, the
//!   [`webhook`] copies the labels onto bound Pods, and [`pod_env`] finds a pod's own GPUs;
//! - [`memory`] hands the heap memory freed after reading a large Node list back to the OS.
#![deny(missing_docs)]
// FFI is confined to the modules that need it (NVML in `probe::nvml::live`, ibverbs in
// `probe::rdma::verbs`, libibumad in `probe::ib::umad`, the AF_PACKET socket in
// `probe::lldp::socket`, glibc's `malloc_trim` in `memory`); each opts in.
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod backoff;
pub mod deploy;
pub mod extender;
pub mod hints;
pub mod kube_client;
pub mod labels;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod node_labels;
pub mod placement;
pub mod pod_env;
pub mod probe;
pub mod proto;
pub mod render;
pub mod webhook;
