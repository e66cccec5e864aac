//! Directed-route SMP replies (NodeInfo, PortInfo), as a switch or the simulator returns them:
//! never panics; an accepted reply's data is the MAD's data block, and a reply built from a
//! request around that data decodes to it again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetopo::probe::ib::mad::{self, Attribute};

fuzz_target!(|data: &[u8]| {
    for attr in [Attribute::NodeInfo, Attribute::PortInfo] {
        let Ok(d) = mad::decode_reply(data, attr) else {
            continue;
        };
        assert_eq!(&d[..], &data[64..128]);
        let ni = mad::node_info(&d);
        let _ = (ni.node_type.to_string(), mad::guid_text(ni.node_guid));
        let pi = mad::port_info(&d);
        let _ = pi.state.link_up();
        // The same data in a reply to our own request decodes the same.
        let path: Vec<u8> = data[128..128 + usize::from(data[7] % 64) + 1].to_vec();
        let mut reply = mad::encode_get(&path, attr, 0, mad::tid(data).unwrap()).unwrap();
        reply[3] = mad::METHOD_GET_RESP;
        reply[64..128].copy_from_slice(&d);
        assert_eq!(mad::decode_reply(&reply, attr), Ok(d));
    }
});
