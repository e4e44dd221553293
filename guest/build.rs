//! Links the kernel with its linker script and builds in the default
//! initramfs (Linux's CONFIG_INITRAMFS_SOURCE): `make` writes the user
//! programs' archive to target/initramfs.cpio first.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    println!("cargo:rerun-if-changed=linker.ld");
    let initramfs = std::path::Path::new(&dir).join("../target/initramfs.cpio");
    if !initramfs.exists() {
        panic!(
            "{} is missing: build the guest with `make`, which builds the user programs' initramfs first",
            initramfs.display()
        );
    }
    println!("cargo:rerun-if-changed={}", initramfs.display());
    println!("cargo:rustc-env=GUEST_INITRAMFS={}", initramfs.display());
}
