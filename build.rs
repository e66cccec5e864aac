//! Compiles the public proto contract with protox (no system `protoc` needed) and writes the
//! file descriptor set that gRPC server reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/nodetopo/v1/topology.proto",
        "proto/nodetopo/v1/topology_service.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("nodetopo_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Hand-written with the same wire format, so one revision is encoded once for every
        // Get and watcher (src/proto/wire.rs).
        .extern_path(
            ".nodetopo.v1.GetNodeTopologyResponse",
            "crate::proto::wire::GetNodeTopologyResponse",
        )
        .extern_path(
            ".nodetopo.v1.WatchNodeTopologyResponse",
            "crate::proto::wire::WatchNodeTopologyResponse",
        )
        .compile_fds(fds)?;
    Ok(())
}
