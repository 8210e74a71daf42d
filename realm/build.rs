//! Links the realm with realm/linker.ld (IPA 0, loaded by the host with RMI_DATA_CREATE).
fn main() {
    let dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rustc-link-arg-bins=-T{}", dir.join("linker.ld").display());
    println!("cargo:rerun-if-changed=linker.ld");
}
