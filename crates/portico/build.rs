//! Link settings of the `portico` binary.

use std::path::Path;

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("-linux-gnu") {
        // Relative relocations packed into a bitmap (DT_RELR, glibc >= 2.36): the table the dynamic
        // loader reads at every start shrinks from 1.5 MB to a few KB, and with it the binary and
        // its resident pages.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // Rust links this target with its own LLD, which reads a symbol ordering file.
    if target == "x86_64-unknown-linux-gnu" {
        link_order();
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// The functions that run to start the gateway and serve a session are laid out together
/// (`link-order.txt`, written by `scripts/link-order.sh`): the kernel maps code around each page
/// it faults in, so start-up code scattered over the binary kept most of it resident. A build
/// optimized with a profile (`scripts/release.sh`) inlines differently and so has other functions:
/// its list is `link-order-pgo.txt`.
fn link_order() {
    let optimized_with_profile = std::env::var("CARGO_ENCODED_RUSTFLAGS")
        .is_ok_and(|flags| flags.split('\x1f').any(|flag| flag.contains("profile-use")));
    let list = if optimized_with_profile {
        "link-order-pgo.txt"
    } else {
        "link-order.txt"
    };
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join(list);
    println!("cargo:rerun-if-changed={}", order.display());
    // Another linker than Rust's LLD (GNU ld has no ordering file) needs it off.
    println!("cargo:rerun-if-env-changed=PORTICO_LINK_ORDER");
    let wanted = std::env::var("PORTICO_LINK_ORDER").as_deref() != Ok("off");
    if wanted && order.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // Names that changed since the list was written are skipped, not reported one by one.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    // `scripts/link-order.sh` asks for a map of where each function went.
    println!("cargo:rerun-if-env-changed=PORTICO_LINK_MAP");
    if let Ok(map) = std::env::var("PORTICO_LINK_MAP") {
        println!("cargo:rustc-link-arg-bins=-Wl,-Map={map}");
    }
}
