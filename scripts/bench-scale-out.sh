#!/bin/bash
# The figures of issue #12 (scale-out), with a release build:
#   1. a stateless `tools/call` vs a stateful one (wrk, one HTTP fixture target);
#   2. `initialize` to the first `tools/list` answer with a stdio server that takes 200 ms to start:
#      direct (the client starts the process), through Portico without a pool, with a pool;
#   3. calls/s through nginx (round robin) to one replica vs three, one session.
# Usage: scripts/bench-scale-out.sh [PORTICO_BINARY]   (needs wrk, nginx, curl, python3)
set -euo pipefail
source "$(dirname "$0")/wrk-mcp.sh"
portico=${1:-${CARGO_TARGET_DIR:-target}/release/portico}
work=$(mktemp -d)
fixture_pid=
trap 'kill $fixture_pid 2>/dev/null; pkill -f "$work" 2>/dev/null || true; kill "$(cat "$work/nginx.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$portico" fixture --transport http >"$work/fixture.out" 2>&1 &
fixture_pid=$!
sleep 1
fixture=$(sed -n 's/listening on //p' "$work/fixture.out")
key=$(python3 -c 'import secrets; print(secrets.token_hex(32))')

# gateway NAME PORT MODE_LINES TARGET_YAML: starts a gateway, waits for it to listen.
gateway() {
  local name=$1 port=$2 mode=$3 target=$4
  cat >"$work/$name.yaml" <<EOF
config:
  adminAddr: 127.0.0.1:0
  statsAddr: 127.0.0.1:0
  readinessAddr: 127.0.0.1:0
  session: {key: "$key"}
binds:
- port: $port
  address: 127.0.0.1
  listeners:
  - routes:
    - backends:
      - mcp:
$mode          targets:
$target
EOF
  RUST_LOG=warn "$portico" -f "$work/$name.yaml" >"$work/$name.log" 2>&1 &
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done
}

# wrk_call PORT SESSION CONNECTIONS: calls/s and p50 of `tools/call echo`.
wrk_call() {
  call_script "$work/call.lua" "$2"
  local threads=$(($3 < 2 ? 1 : 2))
  wrk -t$threads -c"$3" -d1s -s "$work/call.lua" "http://127.0.0.1:$1/mcp" >/dev/null
  local out
  out=$(wrk -t$threads -c"$3" -d5s --latency -s "$work/call.lua" "http://127.0.0.1:$1/mcp")
  echo "$(echo "$out" | sed -n 's/Requests\/sec: *//p') calls/s, p50 $(echo "$out" | awk '$1=="50%"{print $2}')"
}

echo "## Stateless vs stateful tools/call (one HTTP target)"
http_target="          - name: fx
            mcp: {host: \"$fixture\"}"
p1=$(free_port); gateway stateful "$p1" "" "$http_target"
p2=$(free_port); gateway stateless "$p2" "          statefulMode: stateless
" "$http_target"
for c in 1 32; do
  echo "- $c connection(s): stateful $(wrk_call "$p1" "$(mcp_session "$p1")" $c); stateless $(wrk_call "$p2" "" $c)"
done

echo
echo "## initialize -> first tools/list answer, stdio server starting in 200 ms (20 sessions, median ms)"
stdio_target() {
  echo "          - name: slow
            stdio:
              cmd: \"$portico\"
              args: [fixture, --startup-delay, \"200\"]$1"
}
p3=$(free_port); gateway nopool "$p3" "" "$(stdio_target "")"
p4=$(free_port); gateway pool "$p4" "" "$(stdio_target "
              pool: {size: 2}")"
sleep 1
python3 - "$portico" "$p3" "$p4" <<'EOF'
import json, statistics, subprocess, sys, time, urllib.request
portico, nopool, pool = sys.argv[1], sys.argv[2], sys.argv[3]
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
def post(port, body, session=None):
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    if session: headers["mcp-session-id"] = session
    request = urllib.request.Request(f"http://127.0.0.1:{port}/mcp", json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request) as reply:
        return reply.headers.get("mcp-session-id"), reply.read()
def through(port):
    start = time.perf_counter()
    session, _ = post(port, INIT)
    post(port, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    post(port, LIST, session)
    took = time.perf_counter() - start
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/mcp", method="DELETE", headers={"mcp-session-id": session})).read()
    return took
def direct():
    start = time.perf_counter()
    process = subprocess.Popen([portico, "fixture", "--startup-delay", "200"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    for message in [INIT, {"jsonrpc": "2.0", "method": "notifications/initialized"}, LIST]:
        process.stdin.write((json.dumps(message) + "\n").encode()); process.stdin.flush()
        if "id" in message:
            process.stdout.readline()
    took = time.perf_counter() - start
    process.kill(); process.wait()
    return took
for name, run in [("direct", direct), ("through portico, no pool", lambda: through(nopool)), ("through portico, pool of 2", lambda: through(pool))]:
    times = []
    for _ in range(20):
        times.append(run() * 1000)
        time.sleep(0.4)  # the pool refills between sessions, as between users arriving
    print(f"- {name}: {statistics.median(times):.1f} ms (min {min(times):.1f}, max {max(times):.1f})")
EOF

echo
echo "## calls/s through nginx (round robin), one session: one replica vs three"
ports=(); for _ in 1 2 3; do ports+=("$(free_port)"); done
for p in "${ports[@]}"; do gateway "replica$p" "$p" "" "$http_target"; done
nginx_port=$(free_port)
nginx_conf() {
  local servers=""
  for p in "$@"; do servers+="server 127.0.0.1:$p max_fails=0; "; done
  cat >"$work/nginx.conf" <<EOF
worker_processes 2; daemon on; pid $work/nginx.pid; error_log $work/nginx.err warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $work/b; proxy_temp_path $work/p; fastcgi_temp_path $work/f; uwsgi_temp_path $work/u; scgi_temp_path $work/s;
  upstream portico { $servers keepalive 64; }
  server { listen 127.0.0.1:$nginx_port; location / { proxy_pass http://portico; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; } } }
EOF
}
nginx=$(command -v nginx || echo /usr/sbin/nginx)
nginx_conf "${ports[0]}"; "$nginx" -p "$work" -c "$work/nginx.conf"; sleep 0.5
id=$(mcp_session "${ports[0]}")
echo "- one replica: $(wrk_call "$nginx_port" "$id" 32)"
nginx_conf "${ports[@]}"; "$nginx" -p "$work" -c "$work/nginx.conf" -s reload; sleep 1
echo "- three replicas: $(wrk_call "$nginx_port" "$id" 32)"
