#!/bin/bash
# CPU per proxied `tools/call` and added latency, measured by wrk (not portico-bench's own load
# generator): the fixture called directly, through each gateway binary given, and with `--nginx`
# through nginx, a plain HTTP reverse proxy that reads no JSON, which tells what this machine lets
# any proxy reach. The sides alternate round by round against one fixture: wall-clock noise on
# shared VMs is large, and alternating shows whether a difference stands out of it.
#
# Per round and side: `wrk -t2 -c32 -d5s` on one session (calls/s; the proxy's CPU per call, user +
# system from /proc/<pid>/stat, nginx's workers summed), then `wrk -t1 -c1 -d5s --latency` (p50, p99).
# Portico runs with one HTTP target and its defaults; nginx as one would run it in front of MCP
# servers: a worker per CPU like Portico, keep-alive on both sides, no buffering (SSE), no access log.
#
# Usage: scripts/call-cpu.sh [--rounds N] [--nginx] PORTICO_BINARY...   (needs wrk, curl, bc; nginx)
# The first binary also serves the fixture. Medians of N rounds (default 3).
set -euo pipefail
source "$(dirname "$0")/wrk-mcp.sh"
rounds=3 nginx=false binaries=()
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --nginx) nginx=true; shift ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) binaries+=("$(realpath "$1")"); shift ;;
  esac
done
[ ${#binaries[@]} -gt 0 ] || { sed -n 's/^# Usage: //p' "$0" >&2; exit 2; }
PATH=$PATH:/usr/sbin
needed="wrk curl bc"
$nginx && needed="$needed nginx"
for tool in $needed; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install -y ${tool/nginx/nginx-light}" >&2; exit 1; }
done
work=$(mktemp -d)
nginx_port=3998 portico_port=3999
# The fixture, and a gateway or nginx if the script stops while one runs.
trap 'pkill -P $$ 2>/dev/null; rm -rf "$work"' EXIT

"${binaries[0]}" fixture --transport http >"$work/fixture.out" 2>&1 &
for _ in $(seq 50); do grep -q "listening on" "$work/fixture.out" && break; sleep 0.1; done
url=$(sed -n 's/listening on //p' "$work/fixture.out")
fixture_port=${url##*:}
fixture_port=${fixture_port%%/*}

cat >"$work/config.yaml" <<EOF
config:
  adminAddr: 127.0.0.1:0
  statsAddr: 127.0.0.1:0
  readinessAddr: 127.0.0.1:0
binds:
- port: $portico_port
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:
          - name: fx
            mcp:
              host: $url
EOF

cat >"$work/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  # nginx closes a kept-alive connection after 1,000 requests by default; wrk's carry many more.
  keepalive_requests 1000000;
  upstream fixture { server 127.0.0.1:$fixture_port; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://fixture;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1;
      proxy_buffering off;
    }
  }
}
EOF

# user + system ticks, and system ticks, of the processes given
ticks() {
  local total=0 system=0 pid
  for pid in "$@"; do
    read -r t s < <(awk '{print $14 + $15, $15}' "/proc/$pid/stat")
    total=$((total + t)) system=$((system + s))
  done
  echo "$total $system"
}

# wrk's latency ("123.45us", "1.23ms") in milliseconds
to_ms() {
  case $1 in
    *us) echo "scale=3; ${1%us} / 1000" | bc ;;
    *ms) echo "scale=3; ${1%ms} / 1" | bc ;;
    *s) echo "scale=3; ${1%s} * 1000" | bc ;;
  esac
}

# port [pid...]: appends "calls/s cpu_µs_per_call kernel_µs_per_call p50_ms p99_ms" ("-" for CPU
# without pids)
measure() {
  local port=$1
  shift
  # A session opened through the side itself: nginx passes the fixture's own session id through.
  call_script "$work/call.lua" "$(mcp_session "$port")"
  local target="http://127.0.0.1:$port/mcp" before after out calls rate cpu="- -" lat tick_us
  wrk -t2 -c32 -d1s -s "$work/call.lua" "$target" >/dev/null
  [ $# -gt 0 ] && before=$(ticks "$@")
  out=$(wrk -t2 -c32 -d5s -s "$work/call.lua" "$target")
  [ $# -gt 0 ] && after=$(ticks "$@")
  if echo "$out" | grep -q "Non-2xx"; then
    echo "failed calls through port $port: $out" >&2
    exit 1
  fi
  calls=$(echo "$out" | sed -n 's/ *\([0-9]*\) requests in.*/\1/p')
  rate=$(echo "$out" | sed -n 's/Requests\/sec: *\([0-9]*\).*/\1/p')
  tick_us=$((1000000 / $(getconf CLK_TCK)))
  if [ $# -gt 0 ]; then
    read -r t1 s1 <<<"$before"
    read -r t2 s2 <<<"$after"
    cpu="$(echo "scale=1; ($t2 - $t1) * $tick_us / $calls" | bc) $(echo "scale=1; ($s2 - $s1) * $tick_us / $calls" | bc)"
  fi
  lat=$(wrk -t1 -c1 -d5s --latency -s "$work/call.lua" "$target")
  echo "$rate $cpu $(to_ms "$(echo "$lat" | awk '$1 == "50%" {print $2}')") $(to_ms "$(echo "$lat" | awk '$1 == "99%" {print $2}')")"
}

sides=(direct)
$nginx && sides+=(nginx)
for i in "${!binaries[@]}"; do sides+=("portico$i"); done
for round in $(seq "$rounds"); do
  measure "$fixture_port" >>"$work/direct"
  if $nginx; then
    nginx -c "$work/nginx.conf" &
    master=$!
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$nginx_port/" && break; sleep 0.1; done
    sleep 0.3
    measure "$nginx_port" $(pgrep -P "$master") >>"$work/nginx"
    kill "$master"
    wait "$master" 2>/dev/null || true
  fi
  for i in "${!binaries[@]}"; do
    RUST_LOG=warn "${binaries[$i]}" -f "$work/config.yaml" >"$work/gateway.out" 2>&1 &
    gateway=$!
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$portico_port/" && break; sleep 0.1; done
    measure "$portico_port" "$gateway" >>"$work/portico$i"
    kill "$gateway"
    wait "$gateway" 2>/dev/null || true
  done
  echo "round $round of $rounds done" >&2
done

# median of column $2 of file $1
median() { awk -v c="$2" '{print $c}' "$1" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
ms() { printf '%.3f' "$1"; }

echo "| side ($rounds rounds, medians) | calls/s, 32 connections | proxy CPU per call (kernel) | p50 / p99 ms, 1 connection | added p50 / p99 ms |"
echo "|---|---|---|---|---|"
d50=$(median "$work/direct" 4) d99=$(median "$work/direct" 5)
for side in "${sides[@]}"; do
  p50=$(median "$work/$side" 4) p99=$(median "$work/$side" 5)
  cpu="$(median "$work/$side" 2) µs ($(median "$work/$side" 3))"
  added="$(printf '%+.3f / %+.3f' "$(echo "$p50 - $d50" | bc)" "$(echo "$p99 - $d99" | bc)")"
  name=$side
  case $side in
    direct) cpu= added= ;;
    portico*) name="portico ${binaries[${side#portico}]}" ;;
  esac
  echo "| $name | $(median "$work/$side" 1) | $cpu | $(ms "$p50") / $(ms "$p99") | $added |"
done
