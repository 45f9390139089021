#!/usr/bin/env bash
# Builds the binary to ship with its debug info split off: `portico` (code only) and `portico.debug`
# (symbols and line tables), linked by a GNU debuglink so that gdb, perf and backtraces find it next
# to the binary.
#
#   scripts/release.sh [OUT_DIR]     (default: dist/)
#
# The build is optimized with a profile of the gateway at work (profile-guided optimization): a build
# instrumented to count what runs (`-Cprofile-generate`) serves `portico-bench --goals` (calls at 1
# and 32 connections, lists of ten targets, sessions over HTTP and stdio, a thousand idle sessions);
# the counts are merged with `llvm-profdata` (rustup's `llvm-tools` component, added if missing) and
# the build reads them (`-Cprofile-use`): the hot paths inlined and laid out straight, the rest built
# small. About a fifth fewer instructions per call (docs/performance.md), for two more builds.
# Every build here is of the `dist` profile: a function's symbol name carries a hash of the profile
# it was built with, and both the counts and the link order (`link-order-pgo.txt`, written from
# the same build: scripts/pgo-build.sh) find functions by name.
#   PORTICO_PGO_PROFILE=FILE   build with this merged profile instead of making one (one this script
#                              wrote, `$CARGO_TARGET_DIR/pgo/portico.profdata`; a profile of older code
#                              or another toolchain loses speed, not correctness)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
host=$(rustc -vV | sed -n 's/^host: //p')
pgo=$target/pgo
command -v objcopy >/dev/null || { echo "objcopy not found: apt-get install -y binutils" >&2; exit 1; }

# Writes $pgo/portico.profdata. Only the gateway is profiled: the fixtures and the load generator
# are the plain release build, and `--target` keeps the counters out of build scripts.
make_profile() {
  local profdata instrumented
  profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
  [ -x "$profdata" ] || rustup component add llvm-tools
  cargo build --release -p portico -p portico-bench
  rm -rf "$pgo/raw"
  RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$pgo/raw" CARGO_TARGET_DIR=$pgo/generate \
    cargo build --profile dist --target "$host" -p portico
  instrumented=$pgo/generate/$host/dist/portico
  echo "profiling $instrumented under portico-bench --goals (log: $pgo/workload.log)" >&2
  LLVM_PROFILE_FILE="$pgo/raw/portico-%m.profraw" "$target/release/portico-bench" --goals \
    --portico "$instrumented" --fixtures "$target/release/portico" >"$pgo/workload.log"
  # The bench stops the gateway with SIGTERM; it writes its counts when it has drained.
  for _ in $(seq 150); do
    pgrep -f "^$instrumented " >/dev/null || break
    sleep 0.2
  done
  if pgrep -f "^$instrumented " >/dev/null; then
    echo "the instrumented gateway did not exit 30 s after SIGTERM: its counts are not written" >&2
    exit 1
  fi
  "$profdata" merge -o "$pgo/portico.profdata" "$pgo/raw"/*.profraw
}

profile=${PORTICO_PGO_PROFILE:-}
if [ -z "$profile" ]; then
  make_profile
  profile=$pgo/portico.profdata
fi
source scripts/pgo-build.sh
pgo_build "$target" "$profile"
mkdir -p "$out"
cp "$pgo_bin" "$out/portico"
objcopy --only-keep-debug "$out/portico" "$out/portico.debug"
objcopy --strip-all --add-gnu-debuglink="$out/portico.debug" "$out/portico"
ls -l "$out/portico" "$out/portico.debug"
