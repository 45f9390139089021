#!/usr/bin/env bash
# Writes crates/portico/link-order.txt: the functions the gateway runs to start, to serve a session
# (initialize, lists, a call, the GET stream, DELETE) and to refuse bad input, which the linker then
# lays out together at the start of the code, so that the pages the kernel maps for them hold little
# else.
# Run after changes that move much code (a new dependency, a big refactor); a stale list only
# costs resident memory (names it no longer finds are skipped). Needs valgrind, python3 and curl;
# perf if installed (see below).
#
#   CARGO_TARGET_DIR=... scripts/link-order.sh
#   PORTICO_PGO_PROFILE=FILE scripts/link-order.sh    the list of the build `scripts/release.sh`
#       makes with that profile (link-order-pgo.txt): a `dist` build, whose symbols carry another
#       hash, optimized with a profile, which inlines other functions
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
work=$(mktemp -d /tmp/portico-link-order.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

# A release build with a link map: where the linker put each function, under the names it knows. It
# is linked in the compiler's order, not the current list's, so that the list written does not
# depend on the one before (the native pass below sees only the first touch of each 64 KiB).
if [ -n "${PORTICO_PGO_PROFILE:-}" ]; then
  source scripts/pgo-build.sh
  pgo_build "$target" "$PORTICO_PGO_PROFILE" PORTICO_LINK_ORDER=off PORTICO_LINK_MAP="$work/portico.map"
  bin=$pgo_bin
  list=crates/portico/link-order-pgo.txt
else
  PORTICO_LINK_ORDER=off PORTICO_LINK_MAP=$work/portico.map cargo build --release -p portico
  bin=$target/release/portico
  list=crates/portico/link-order.txt
fi

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
fixture_port=$(port)
gateway_port=$(port)
"$bin" fixture --transport http --listen "127.0.0.1:$fixture_port" >/dev/null 2>&1 &
cat >"$work/config.yaml" <<YAML
binds:
- port: $gateway_port
  address: 127.0.0.1
  listeners:
  - routes:
    - name: mcp
      matches: [{path: {exact: /mcp}}, {path: {pathPrefix: /mcp/}}]
      backends:
      - mcp:
          targets:
          - name: remote
            mcp: {host: "http://127.0.0.1:$fixture_port/mcp"}
          - name: local
            stdio: {cmd: "$bin", args: [fixture]}
config:
  drainTimeout: 5s
  limits: {requestBody: 4MiB}
  readinessAddr: 127.0.0.1:0
  statsAddr: 127.0.0.1:0
  adminAddr: 127.0.0.1:0
YAML
# The gateway logs at the info level, as in production (and `RUST_LOG` is read): the start-up lines
# are part of the start-up code.
RUST_LOG=info,portico::server=info valgrind --tool=callgrind --dump-instr=yes --compress-strings=no --compress-pos=no \
  --callgrind-out-file="$work/callgrind.out" "$bin" -f "$work/config.yaml" 2>"$work/valgrind.log" &
gateway=$!
url=http://127.0.0.1:$gateway_port/mcp
for _ in $(seq 100); do
  curl -s -o /dev/null "$url" && break
  sleep 0.2
done
headers=(-H 'content-type: application/json' -H 'accept: application/json, text/event-stream')
session=$(curl -s -D - -o /dev/null "${headers[@]}" "$url" -d \
  '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"link-order","version":"1"}}}' |
  tr -d '\r' | awk 'tolower($1) == "mcp-session-id:" { print $2 }')
headers+=(-H "mcp-session-id: $session" -H 'mcp-protocol-version: 2025-11-25')
curl -s -o /dev/null "${headers[@]}" "$url" -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'
curl -s -m 1 -o /dev/null -H "mcp-session-id: $session" -H 'accept: text/event-stream' "$url" || true
id=2
for body in '"method":"tools/list"' '"method":"prompts/list"' '"method":"resources/list"' \
  '"method":"tools/call","params":{"name":"remote_echo","arguments":{"message":"hi"}}' \
  '"method":"tools/call","params":{"name":"local_echo","arguments":{"message":"hi"}}' \
  '"method":"ping"'; do
  for _ in 1 2 3; do
    curl -s -o /dev/null "${headers[@]}" "$url" -d "{\"jsonrpc\":\"2.0\",\"id\":$id,$body}"
    id=$((id + 1))
  done
done
# Bad input, as `portico-bench --hardening` sends it: its refusals are laid out with the rest, so a
# burst of them pages in a few pages of code, not one page per scattered function.
head -c $((5 << 20)) /dev/zero | tr '\0' ' ' >"$work/5mib"
python3 -c 'print("[" * 20000 + "]" * 20000)' >"$work/deep"
python3 -c 'import json; print(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "remote_echo", "arguments": {"message": "x" * (3 << 20)}}}))' >"$work/big"
for body in "@$work/5mib" "@$work/deep" "@$work/big" '{"jsonrpc": "2.0", ' '[{}, {}]'; do
  curl -s -o /dev/null "${headers[@]}" "$url" --data-binary "$body"
done
curl -s -o /dev/null "${headers[@]}" -H 'transfer-encoding: chunked' "$url" --data-binary "@$work/5mib"
curl -s -o /dev/null -H "mcp-session-id: $session" -H 'content-type: text/plain' "$url" -d '{}'
for method in initialize ping tools/list prompts/list resources/list tools/call prompts/get \
  resources/read completion/complete logging/setLevel; do
  for params in null true 7 '"x"' '[1]' '{"name": 7}' '{"ref": "x"}' '{"cursor": 5}' \
    '{"arguments": "x", "name": "remote_echo"}' '{"uri": []}' '{"_meta": 1}' '{"level": {}}'; do
    curl -s -o /dev/null "${headers[@]}" "$url" \
      -d "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"$method\",\"params\":$params}"
  done
done
curl -s -o /dev/null -X DELETE -H "mcp-session-id: $session" "$url"
kill -TERM "$gateway"
wait "$gateway" || true

# Code chosen by the CPU at run time (valgrind's CPU lacks AVX-512, so AES-GCM set-up takes another
# path under it): the gateway started natively, each first touch of a code page recorded.
faults=$work/faults.txt
: >"$faults"
if command -v perf >/dev/null; then
  RUST_LOG=info,portico::server=info perf record -q -e page-faults -c 1 -d -o "$work/perf.data" -- \
    "$bin" -f "$work/config.yaml" >/dev/null 2>&1 &
  sleep 2
  pkill -TERM -f "$work/config.yaml" || true
  wait $! || true
  # The code mapping's start and file offset, then each fault's address.
  perf script -i "$work/perf.data" --show-mmap-events 2>/dev/null |
    awk -v bin="$bin" '!found && /PERF_RECORD_MMAP2/ && / r-xp / && index($0, bin) {
      match($0, /\[0x[0-9a-f]+\(/); start = substr($0, RSTART + 1, RLENGTH - 2)
      match($0, /@ 0x[0-9a-f]+/); offset = substr($0, RSTART + 2, RLENGTH - 2)
      print "map", start, offset; found = 1 }' >"$faults"
  # The code segment's file offset and link address.
  readelf -lW "$bin" | awk '$1 == "LOAD" && / R E / { print "segment", $2, $3 }' >>"$faults"
  perf script -i "$work/perf.data" -F addr 2>/dev/null | awk '{ print "fault", $1 }' >>"$faults"
fi

python3 - "$work/portico.map" "$work/callgrind.out" "$faults" "$list" <<'PY'
import bisect, re, sys
map_file, profile, faults, out = sys.argv[1:]
# lld's map: "VMA LMA Size Align Out In Symbol". A release build keeps no local symbols, so a
# function is known by its input section, `.text.<symbol>` (function sections, Rust's and C's); a
# plain `.text` (an assembly object) by the first symbol the map lists in it.
section = re.compile(r':\(\.text(?:\.(?:unlikely\.|hot\.|startup\.|exit\.|split\.)?(.+))?\)$')
functions, unnamed = [], None
for line in open(map_file):
    fields = line.split(None, 4)
    if len(fields) != 5:
        continue
    text = fields[4].strip()
    if unnamed and ':(' not in text and '::' not in text:
        functions.append(unnamed + (text,))
        unnamed = None
        continue
    unnamed = None
    if name := section.search(text):
        start, size = int(fields[0], 16), int(fields[2], 16)
        if name.group(1):
            functions.append((start, size, name.group(1)))
        else:
            unnamed = (start, size)
functions.sort()
starts = [start for start, _, _ in functions]
ran, in_binary = set(), False
for line in open(profile):
    if line.startswith('ob='):
        in_binary = line.rstrip().endswith('/portico')
    elif in_binary and line.startswith('0x'):
        address = int(line.split()[0], 16)
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and address < functions[i][0] + functions[i][1]:
            ran.add(i)
# Native faults, as link addresses: an address in the code mapping is a file offset, and the code
# segment's file offsets and link addresses differ by a constant.
lines = [line.split() for line in open(faults)]
mapping = next(((int(v[0], 16), int(v[1], 16)) for k, *v in lines if k == 'map'), None)
segment = next(((int(v[0], 16), int(v[1], 16)) for k, *v in lines if k == 'segment'), None)
for kind, *values in lines:
    if kind != 'fault' or not mapping or not segment:
        continue
    address = int(values[0], 16) - mapping[0] + mapping[1] - segment[0] + segment[1]
    i = bisect.bisect_right(starts, address) - 1
    if i >= 0 and address < functions[i][0] + functions[i][1]:
        ran.add(i)
# In address order, functions that were laid out near each other stay so; a large section (an
# assembly object of which a few bytes ran) goes last, not between the others.
with open(out, 'w') as f:
    for i in sorted(ran, key=lambda i: (functions[i][1] > 64 * 1024, functions[i][0])):
        f.write(functions[i][2] + '\n')
size = sum(functions[i][1] for i in ran)
print(f'{len(ran)} functions ({size / 2**20:.2f} MiB of code) written to {out}')
PY
