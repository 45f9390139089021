#!/usr/bin/env bash
# Runs every cargo-fuzz (libFuzzer) target of fuzz/ for a bounded time each (default 60 s), starting from
# the seed corpus in fuzz/corpus/<target>/ (left unchanged: new inputs go to a scratch copy).
# Needs the nightly toolchain; installs cargo-fuzz from crates.io on first use.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(jsonrpc_envelope list_answer sse_reader cursor path params config)
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=0
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target"
  echo "fuzz: $target for ${seconds}s"
  if ! cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$scratch/$target" "fuzz/corpus/$target" \
      -- -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 2>&1 | tail -n 3; then
    failed=1
    echo "fuzz: $target FAILED (the crashing input is under fuzz/artifacts/$target/)"
  fi
done
exit "$failed"
