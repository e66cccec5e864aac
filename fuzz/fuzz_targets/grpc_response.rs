//! The client side of the gRPC API (`nodetopo query`, the extender's agent streams): any bytes
//! either fail to decode as a Get or Watch response or convert to the model without panicking,
//! and a converted topology converts back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetopo::{
    model,
    proto::{v1 as pb, wire},
};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = wire::WatchNodeTopologyResponse::decode(data) {
        if let Some(t) = r.topology {
            let m = model::NodeTopology::from(&t);
            let again = model::NodeTopology::from(&pb::NodeTopology::from(&m));
            assert_eq!(pb::NodeTopology::from(&again), pb::NodeTopology::from(&m));
        }
    }
    let _ = wire::GetNodeTopologyResponse::decode(data);
});
