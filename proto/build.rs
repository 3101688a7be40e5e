//! Compiles the public schema with prost and tonic, plus proto3 JSON (serde, via pbjson)
//! for webhook bodies. The descriptor set feeds gRPC server reflection, pbjson and the list
//! of Gateway methods.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor = out_dir.join("omnigate_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_protos(&["omnigate/v1/gateway.proto", "omnigate/bench/v1/echo.proto"], &["."])?;
    let descriptors = std::fs::read(&descriptor)?;
    pbjson_build::Builder::new().register_descriptors(&descriptors)?.build(&[".omnigate.v1"])?;
    write_gateway_methods(&descriptors, &out_dir.join("gateway_methods.rs"))?;
    Ok(())
}

/// The Gateway's method names as a constant, so that per-method metrics can take a label
/// from a known set rather than from whatever path a caller sends.
fn write_gateway_methods(
    descriptors: &[u8],
    out: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(descriptors)?;
    let methods: Vec<String> = set
        .file
        .iter()
        .filter(|f| f.package() == "omnigate.v1")
        .flat_map(|f| &f.service)
        .filter(|s| s.name() == "Gateway")
        .flat_map(|s| &s.method)
        .map(|m| format!("{:?}", m.name()))
        .collect();
    if methods.is_empty() {
        return Err("no omnigate.v1.Gateway methods in the descriptor set".into());
    }
    std::fs::write(
        out,
        format!(
            "/// Every method of `omnigate.v1.Gateway`.\npub const GATEWAY_METHODS: &[&str] = &[{}];\n",
            methods.join(", ")
        ),
    )?;
    Ok(())
}
