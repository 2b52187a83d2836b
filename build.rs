//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so building the crate needs
//! no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/milvus.proto",
        "proto/meta.proto",
        "proto/streaming.proto",
        "proto/streaming_session.proto",
    ];
    for file in files.iter().chain(&[
        "proto/common.proto",
        "proto/schema.proto",
        "proto/common_streaming.proto",
        "proto/messages.proto",
    ]) {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // MilvusService has an RPC named `Connect`; the transport helper `connect` would clash
        // with it, so clients are built with `MilvusServiceClient::new(channel)`.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
