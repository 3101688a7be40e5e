//! Compiles the public schema. The descriptor set feeds gRPC server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("omnigate_descriptor.bin"))
        .compile_protos(&["omnigate/v1/gateway.proto", "omnigate/bench/v1/echo.proto"], &["."])?;
    Ok(())
}
