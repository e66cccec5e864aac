//! `nodetopo.v1.GetNodeTopologyResponse` and `WatchNodeTopologyResponse`, written by hand so
//! the server encodes each revision once and sends the same bytes to every caller and watcher.
//!
//! The wire format is the generated one: field 1 is the topology. The type either holds a
//! decoded topology (what a client reads) or a pre-encoded body (what the server sends); a
//! pre-encoded value decodes to the same topology.

use std::fmt;

use prost::{
    Message,
    bytes::{Buf, BufMut, Bytes},
    encoding::{DecodeContext, WireType, message, skip_field},
};

use crate::proto::v1::NodeTopology;

/// Defines a response message whose only field (1) is the topology, with a pre-encoded form.
macro_rules! topology_response {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq)]
        pub struct $name {
            /// The topology (set when decoded, or built with [`Self::new`]).
            pub topology: Option<NodeTopology>,
            /// The encoded message body, when built with [`Self::pre_encoded`].
            encoded: Option<Bytes>,
        }

        impl $name {
            /// A response that encodes `topology` when it is sent.
            pub fn new(topology: NodeTopology) -> Self {
                Self {
                    topology: Some(topology),
                    encoded: None,
                }
            }

            /// A response encoded once now; every clone sends the same bytes.
            pub fn pre_encoded(topology: &NodeTopology) -> Self {
                Self {
                    topology: None,
                    encoded: Some(encode_body(topology)),
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("topology", &self.topology)
                    .field("encoded_bytes", &self.encoded.as_ref().map(Bytes::len))
                    .finish()
            }
        }

        impl Message for $name {
            fn encode_raw(&self, buf: &mut impl BufMut) {
                match (&self.encoded, &self.topology) {
                    (Some(bytes), _) => buf.put_slice(bytes),
                    (None, Some(t)) => message::encode(1, t, buf),
                    (None, None) => {}
                }
            }

            fn merge_field(
                &mut self,
                tag: u32,
                wire_type: WireType,
                buf: &mut impl Buf,
                ctx: DecodeContext,
            ) -> Result<(), prost::DecodeError> {
                if tag == 1 {
                    self.encoded = None;
                    message::merge(
                        wire_type,
                        self.topology.get_or_insert_with(NodeTopology::default),
                        buf,
                        ctx,
                    )
                } else {
                    skip_field(wire_type, tag, buf, ctx)
                }
            }

            fn encoded_len(&self) -> usize {
                match (&self.encoded, &self.topology) {
                    (Some(bytes), _) => bytes.len(),
                    (None, Some(t)) => message::encoded_len(1, t),
                    (None, None) => 0,
                }
            }

            fn clear(&mut self) {
                self.topology = None;
                self.encoded = None;
            }
        }
    };
}

/// Field 1 holding `topology`, encoded.
fn encode_body(topology: &NodeTopology) -> Bytes {
    let mut buf = Vec::with_capacity(message::encoded_len(1, topology));
    message::encode(1, topology, &mut buf);
    Bytes::from(buf)
}

topology_response!(
    /// The response of GetNodeTopology.
    GetNodeTopologyResponse
);
topology_response!(
    /// One message of the WatchNodeTopology stream.
    WatchNodeTopologyResponse
);

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> NodeTopology {
        NodeTopology {
            node_name: "n".into(),
            revision: 9,
            gpus: vec![crate::proto::v1::Gpu {
                uuid: "GPU-0".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn pre_encoded_bytes_decode_to_the_topology() {
        let pre = WatchNodeTopologyResponse::pre_encoded(&topo());
        let plain = WatchNodeTopologyResponse::new(topo());
        assert_eq!(pre.encode_to_vec(), plain.encode_to_vec());
        assert_eq!(pre.encoded_len(), plain.encoded_len());
        let back = WatchNodeTopologyResponse::decode(pre.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.topology, Some(topo()));
    }

    #[test]
    fn get_response_has_the_same_form() {
        let pre = GetNodeTopologyResponse::pre_encoded(&topo());
        let back = GetNodeTopologyResponse::decode(pre.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.topology, Some(topo()));
    }

    #[test]
    fn unknown_fields_are_skipped_and_empty_is_empty() {
        let mut bytes = WatchNodeTopologyResponse::new(topo()).encode_to_vec();
        // Field 7, varint 1: a field a newer writer might add.
        bytes.extend_from_slice(&[7 << 3, 1]);
        let back = WatchNodeTopologyResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.topology, Some(topo()));
        assert!(
            WatchNodeTopologyResponse::default()
                .encode_to_vec()
                .is_empty()
        );
    }
}
