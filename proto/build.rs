//! Compiles `worker/v1/*.proto` without a system `protoc`: `protox` parses the
//! files into a `FileDescriptorSet`, which `tonic-prost-build` turns into Rust.
//! The descriptor set is also written out so the controller can serve gRPC
//! reflection (`grpcurl` works without the proto files).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "worker/v1/controller.proto",
        "worker/v1/agent.proto",
        "worker/v1/catalog.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=worker/v1/types.proto");
    let fds = protox::compile(protos, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut buf = Vec::new();
    prost::Message::encode(&fds, &mut buf)?;
    std::fs::write(out_dir.join("worker_descriptor.bin"), buf)?;
    tonic_prost_build::configure()
        .type_attribute(".worker.v1", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".worker.v1", "#[serde(default)]")
        // `AgentService.Connect` would clash with the generated `connect`
        // constructor: clients build a `Channel` and call `new(channel)`.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
