//! Generated types of the public contract `proto/nodetopo/v1`, and conversion from the model.
#![allow(missing_docs)]
#![allow(clippy::all)]

/// `nodetopo.v1` messages and services.
pub mod v1 {
    tonic::include_proto!("nodetopo.v1");

    /// Hand-written (same wire format) so the server encodes each revision once.
    pub use crate::api::wire::{GetNodeTopologyResponse, WatchNodeTopologyResponse};
}

/// Encoded file descriptor set of the contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("nodetopo_descriptor");
