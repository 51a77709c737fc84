//! Generates the protobuf codec's message types from `proto/chat.proto`.
//!
//! `protox` parses the schema in Rust and hands `prost-build` the compiled
//! descriptors, so a fresh machine builds the crate with cargo alone: no
//! `protoc` to install, and the same output everywhere.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const SCHEMA: &str = "proto/chat.proto";
    println!("cargo:rerun-if-changed={SCHEMA}");

    let descriptors = protox::compile([SCHEMA], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
