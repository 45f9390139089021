#!/usr/bin/env bash
# Runs every test: unit, integration (real processes on loopback), interop with the official Python SDK
# and reference server, and the MCP conformance suite through the gateway.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
