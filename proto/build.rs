//! Generates the tonic/prost code for `restore.proto` with a vendored protoc, so a fresh
//! machine needs no system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=restore.proto");
    tonic_prost_build::configure()
        // Ordered maps make the encoding deterministic, so a spec has one fingerprint.
        .btree_map(".")
        .compile_protos(&["restore.proto"], &["."])?;
    Ok(())
}
