#!/bin/bash
# A/B of two gateway builds: gateway CPU (user + system, from /proc/<pid>/stat) per proxied
# `tools/call` and calls/s, under `wrk -t2 -c32` on one session, the builds alternating ROUNDS times
# against one fixture. Wall-clock noise on shared VMs is large; alternating shows whether a change
# stands out of it.
#
# Usage: scripts/ab-call-cpu.sh BEFORE_BINARY AFTER_BINARY [ROUNDS]   (needs wrk, curl, bc)
set -euo pipefail
before=$1 after=$2 rounds=${3:-3}
work=$(mktemp -d)
port=3999
trap 'pkill -f "$work" || true; rm -rf "$work"' EXIT

"$after" fixture --transport http >"$work/fixture.out" 2>&1 &
sleep 1
url=$(sed -n 's/listening on //p' "$work/fixture.out")
cat >"$work/config.yaml" <<EOF
config:
  adminAddr: 127.0.0.1:0
  statsAddr: 127.0.0.1:0
  readinessAddr: 127.0.0.1:0
binds:
- port: $port
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:
          - name: fx
            mcp:
              host: $url
EOF

session() {
  curl -s -D - -o /dev/null -X POST "http://127.0.0.1:$port/mcp" \
    -H 'accept: application/json, text/event-stream' -H 'content-type: application/json' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"ab","version":"1"}}}' |
    tr -d '\r' | sed -n 's/^mcp-session-id: //ip'
}

cpu_ticks() { awk '{print $14 + $15, $15}' "/proc/$1/stat"; }

for _ in $(seq "$rounds"); do
  for bin in "$before" "$after"; do
    RUST_LOG=warn "$bin" -f "$work/config.yaml" >"$work/gateway.out" 2>&1 &
    gateway=$!
    sleep 0.7
    cat >"$work/call.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}'
wrk.headers["accept"] = "application/json, text/event-stream"
wrk.headers["content-type"] = "application/json"
wrk.headers["mcp-session-id"] = "$(session)"
EOF
    wrk -t2 -c32 -d1s -s "$work/call.lua" "http://127.0.0.1:$port/mcp" >/dev/null
    read -r total1 system1 < <(cpu_ticks $gateway)
    out=$(wrk -t2 -c32 -d5s -s "$work/call.lua" "http://127.0.0.1:$port/mcp")
    read -r total2 system2 < <(cpu_ticks $gateway)
    calls=$(echo "$out" | sed -n 's/ *\([0-9]*\) requests in.*/\1/p')
    tick_us=$((1000000 / $(getconf CLK_TCK)))
    echo "$bin: $calls calls, $(echo "$out" | sed -n 's/Requests\/sec: *//p') calls/s," \
      "$(echo "scale=1; ($total2 - $total1) * $tick_us / $calls" | bc) µs CPU per call" \
      "($(echo "scale=1; ($system2 - $system1) * $tick_us / $calls" | bc) µs in the kernel)"
    kill $gateway
    wait $gateway 2>/dev/null || true
  done
done
