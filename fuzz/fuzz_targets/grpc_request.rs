//! gRPC request decoding: any bytes either fail to decode or decode to each request message
//! of `nodetopo.v1.TopologyService`; a decoded `GetPlacementHintsRequest` is then answered over
//! a four-GPU topology as the server answers it, without panicking.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nodetopo::{
    hints::{self, GpuSelector},
    model::NodeTopology,
    probe::{
        Prober,
        nvml::{
            prober::{GpuProber, ProbeOptions},
            snapshot::NvmlSnapshot,
        },
        sysfs::SysfsRoot,
    },
    proto::v1 as pb,
};
use prost::Message;

fn topology() -> &'static NodeTopology {
    static T: OnceLock<NodeTopology> = OnceLock::new();
    T.get_or_init(|| {
        let text = include_str!("../../tests/fixtures/h200x4-hgx/snapshot.json");
        let snap = NvmlSnapshot::parse(text, "h200x4-hgx").expect("the fixture parses");
        let gpu = GpuProber::new(Box::new(snap), ProbeOptions::default());
        let sysfs = SysfsRoot::new("/nonexistent-sysfs");
        Prober::new(Ok(gpu), sysfs, "node".into()).probe(std::time::UNIX_EPOCH)
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = pb::GetNodeTopologyRequest::decode(data);
    if let Ok(w) = pb::WatchNodeTopologyRequest::decode(data) {
        let _ = w.since_revision;
    }
    if let Ok(req) = pb::GetPlacementHintsRequest::decode(data) {
        let sel = req
            .gpus
            .iter()
            .map(|s| GpuSelector::parse(s))
            .collect::<Result<Vec<_>, _>>();
        if let Ok(sel) = sel {
            let _ = hints::placement_hints(topology(), &sel);
        }
    }
});
