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

/// The field both hand-written messages implement: `NodeTopology topology = 1;`. A test checks
/// it against the compiled proto, field for field, so a field added there fails the build's tests
/// instead of being dropped on the wire.
pub const FIELDS: &[(&str, u32, &str)] = &[("topology", TOPOLOGY_TAG, ".nodetopo.v1.NodeTopology")];

/// The tag of `topology`.
const TOPOLOGY_TAG: u32 = 1;

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
                Self::from_body(encode_body(topology))
            }

            /// A response whose body (from [`encode_body`]) is already encoded.
            pub fn from_body(body: Bytes) -> Self {
                Self {
                    topology: None,
                    encoded: Some(body),
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
                    (None, Some(t)) => message::encode(TOPOLOGY_TAG, t, buf),
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
                if tag == TOPOLOGY_TAG {
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
                    (None, Some(t)) => message::encoded_len(TOPOLOGY_TAG, t),
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

/// Field 1 holding `topology`, encoded: the body of both responses.
pub fn encode_body(topology: &NodeTopology) -> Bytes {
    let mut buf = Vec::with_capacity(message::encoded_len(TOPOLOGY_TAG, topology));
    message::encode(TOPOLOGY_TAG, topology, &mut buf);
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
    fn hand_written_messages_match_the_proto_field_for_field() {
        use prost_types::field_descriptor_proto::{Label, Type};
        let fds =
            prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let messages: Vec<_> = fds
            .file
            .iter()
            .filter(|f| f.package() == "nodetopo.v1")
            .flat_map(|f| &f.message_type)
            .collect();
        for name in ["GetNodeTopologyResponse", "WatchNodeTopologyResponse"] {
            let m = messages
                .iter()
                .find(|m| m.name() == name)
                .unwrap_or_else(|| panic!("{name} is not in the proto"));
            let fields: Vec<(&str, u32, &str)> = m
                .field
                .iter()
                .map(|f| {
                    assert_eq!(f.r#type(), Type::Message, "{name}.{}", f.name());
                    assert_eq!(f.label(), Label::Optional, "{name}.{}", f.name());
                    assert!(f.oneof_index.is_none(), "{name}.{}", f.name());
                    (f.name(), f.number() as u32, f.type_name())
                })
                .collect();
            assert_eq!(
                fields, FIELDS,
                "{name} in the proto differs from src/proto/wire.rs: change the hand-written type"
            );
            assert!(
                m.nested_type.is_empty() && m.oneof_decl.is_empty(),
                "{name}"
            );
        }
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
