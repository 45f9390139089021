"""A legacy HTTP+SSE MCP server (the Python SDK's) that requires a bearer token on every request, and
whose `seen_headers` tool reports the headers of the last message POST. Used by tests/interop.rs to
check that Portico presents `backendAuth` and `requestHeaderModifier` on `sse` targets.

Usage: python sse_server.py PORT EXPECTED_AUTHORIZATION
"""

import json
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

port, expected = int(sys.argv[1]), sys.argv[2]
last_post_headers: dict[str, str] = {}
server = MCPServer("sse-auth")


@server.tool()
def seen_headers() -> str:
    """The headers of the last POSTed message."""
    return json.dumps(last_post_headers)


inner = server.sse_app()


async def app(scope, receive, send):
    if scope["type"] == "http":
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if headers.get("authorization") != expected:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        if scope["method"] == "POST":
            last_post_headers.clear()
            last_post_headers.update(headers)
    await inner(scope, receive, send)


print(f"listening on {port}", flush=True)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
