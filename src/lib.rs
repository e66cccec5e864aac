//! nodetopo: discovers a GPU node's NVLink, multi-node NVLink and RDMA topology and publishes it.
//!
//! The modules, in the order the data flows through them. Each uses only those above it, except
//! the small shared helpers at the end, and `probe`, which spells the fabric IDs it names as
//! label values through [`labels::syntax`] (a leaf with no dependencies):
//! - [`model`]: the facts, no I/O: [`model::NodeTopology`] and its parts.
//! - [`probe`]: hardware to model. [`probe::nvml`] (GPUs, NVLink, the multi-node NVLink
//!   domain), [`probe::rdma`] and [`probe::pci`] over [`probe::sysfs`]; [`probe::rails`] (NIC
//!   roles, GPU-to-NIC pairing); the ports' neighbours by [`probe::ib`] (SMP) and
//!   [`probe::lldp`]; the node's place in its fabrics by [`probe::network`].
//! - Pure policy from the model to output: [`labels`] (the label vocabulary and a node's label
//!   set), [`hints`] (the RDMA environment for a GPU selection, and a pod's own GPUs),
//!   [`render`] (table and Graphviz) and [`manifests`] (other schedulers' topology objects).
//! - [`proto`]: the public gRPC contract; [`api`]: its server and client, and the conversion
//!   from the model.
//! - The three processes: the [`agent`] keeps the topology current and publishes it over gRPC,
//!   as node labels and as metrics; the [`extender`] places pod groups from the agents'
//!   topologies or their labels; the [`webhook`] copies the labels onto bound Pods.
//! - Shared helpers: [`serve`] (the one server lifecycle: the shutdown signal and a bounded
//!   drain), [`backoff`] (retry delays and the one retry loop), [`error`] (an error's chain as
//!   one line), [`kube_client`] (the Kubernetes client without hidden retries) and [`memory`]
//!   (hands freed heap back to the OS after a large Node list).
#![deny(missing_docs)]
// FFI is confined to the modules that need it (NVML in `probe::nvml::live`, ibverbs in
// `probe::rdma::verbs`, libibumad in `probe::ib::umad`, the AF_PACKET socket in
// `probe::lldp::socket`, glibc's `malloc_trim` in `memory`); each opts in.
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod backoff;
pub mod error;
pub mod extender;
pub mod hints;
pub mod kube_client;
pub mod labels;
pub mod manifests;
pub mod memory;
pub mod model;
pub mod probe;
pub mod proto;
pub mod render;
pub mod serve;
pub mod webhook;
