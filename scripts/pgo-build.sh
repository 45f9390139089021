# Sourced by scripts/release.sh and scripts/link-order.sh: the one build optimized with a profile,
# so that the binary shipped and the one its link order is written from are built alike (a
# function's symbol name carries a hash of the cargo profile it was built with, and the counts
# and the link order find functions by name).
#   pgo_build TARGET_DIR PROFILE_FILE [ENV=VALUE...]   builds; sets $pgo_bin to the binary
pgo_build() {
  local target=$1 profile=$2 host
  shift 2
  host=$(rustc -vV | sed -n 's/^host: //p')
  env "$@" RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$(realpath "$profile")" CARGO_TARGET_DIR="$target/pgo/use" \
    cargo build --profile dist --target "$host" -p portico
  pgo_bin=$target/pgo/use/$host/dist/portico
}
