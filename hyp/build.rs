//! Links the hypervisor binary with the workspace's `linker.ld` (bins only, so host tests link normally).
fn main() {
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_arch == "aarch64" && target_os == "none" {
        let dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
        let ld = dir.parent().unwrap().join("linker.ld");
        println!("cargo:rustc-link-arg-bins=-T{}", ld.display());
        println!("cargo:rerun-if-changed={}", ld.display());
    }
    for f in ["entry.S", "vectors.S"] {
        println!("cargo:rerun-if-changed=../boot/{f}");
    }
}
