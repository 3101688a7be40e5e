//! Compiles the public schema with prost and tonic, plus proto3 JSON (serde, via pbjson)
//! for webhook bodies. The descriptor set feeds gRPC server reflection and pbjson.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor = out_dir.join("omnigate_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_protos(&["omnigate/v1/gateway.proto", "omnigate/bench/v1/echo.proto"], &["."])?;
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor)?)?
        .build(&[".omnigate.v1"])?;
    Ok(())
}
