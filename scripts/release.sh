#!/usr/bin/env bash
# Builds the release binary with its debug info split off: `portico` (code only, as
# `cargo build --release` makes it) and `portico.debug` (symbols and line tables), linked by a GNU
# debuglink so that gdb, perf and backtraces find it next to the binary.
#   scripts/release.sh [OUT_DIR]     (default: dist/)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
target="${CARGO_TARGET_DIR:-target}"
command -v objcopy >/dev/null || { echo "objcopy not found: apt-get install -y binutils" >&2; exit 1; }
cargo build --profile dist -p portico
mkdir -p "$out"
cp "$target/dist/portico" "$out/portico"
objcopy --only-keep-debug "$out/portico" "$out/portico.debug"
objcopy --strip-all --add-gnu-debuglink="$out/portico.debug" "$out/portico"
ls -l "$out/portico" "$out/portico.debug"
