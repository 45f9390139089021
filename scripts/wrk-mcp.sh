# Sourced by the scripts that load a gateway with wrk (call-cpu.sh, bench-scale-out.sh).

# mcp_session PORT: opens a session at http://127.0.0.1:PORT/mcp and prints its id.
mcp_session() {
  curl -s -D - -o /dev/null -X POST "http://127.0.0.1:$1/mcp" \
    -H 'accept: application/json, text/event-stream' -H 'content-type: application/json' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"wrk","version":"1"}}}' |
    tr -d '\r' | sed -n 's/^mcp-session-id: //ip'
}

# call_script FILE [SESSION]: writes a wrk script that calls the `echo` tool (on SESSION, if given).
call_script() {
  cat >"$1" <<LUA
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}'
wrk.headers["accept"] = "application/json, text/event-stream"
wrk.headers["content-type"] = "application/json"
wrk.headers["mcp-protocol-version"] = "2025-06-18"
LUA
  [ -z "${2:-}" ] || echo "wrk.headers[\"mcp-session-id\"] = \"$2\"" >>"$1"
}
