//! Link settings of the `portico` binary.

fn main() {
    // Relative relocations packed into a bitmap (DT_RELR, glibc >= 2.36): the table the dynamic
    // loader reads at every start shrinks from 1.5 MB to a few KB, and with it the binary and its
    // resident pages.
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("-linux-gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
