//! Generates the tonic/prost code for `restore.proto` with a vendored protoc, so a fresh
//! machine needs no system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=restore.proto");
    println!("cargo:rerun-if-changed=manifest_index.proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Served by the coordinator's gRPC reflection, so generic clients can list and call it.
        .file_descriptor_set_path(out.join("restore_descriptor.bin"))
        // Ordered maps make the encoding deterministic, so a spec has one fingerprint.
        .btree_map(".")
        .compile_protos(&["restore.proto"], &["."])?;
    // The backup's index file: plain messages, no service, not part of the gRPC API.
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .btree_map(".")
        .compile_protos(&["manifest_index.proto"], &["."])?;
    Ok(())
}
