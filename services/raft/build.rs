//! Compiles `proto/parsec/raft/v1/raft.proto` with protox (pure Rust), so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/parsec/raft/v1/raft.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // Raft payloads are opaque postcard blobs: keep them as `Bytes`, no copies.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
