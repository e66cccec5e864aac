//! The public gRPC contract `proto/nodetopo/v1`: the generated types, and the two responses
//! written by hand with the same wire format ([`wire`]). Conversion from the model is in
//! `api::convert`.

pub mod wire;

/// `nodetopo.v1` messages and services.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("nodetopo.v1");

    /// Hand-written (same wire format) so the server encodes each revision once.
    pub use crate::proto::wire::{GetNodeTopologyResponse, WatchNodeTopologyResponse};
}

/// Encoded file descriptor set of the contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("nodetopo_descriptor");
