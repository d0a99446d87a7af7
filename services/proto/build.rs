//! Compiles the .proto files with protox (pure Rust), so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/parsec/v1/shard.proto",
        "proto/parsec/v1/ticketer.proto",
        "proto/parsec/v1/agent.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // Keys and values stay `Bytes` from the socket to the lock table: no copies.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
