"""An MCP server built on the official Python SDK (its FastMCP-style `MCPServer`), for the interop matrix.

Usage: python py_server.py stdio | streamable-http PORT | sse PORT
Tools: echo(message), now() (no arguments), count(steps) (progress), sleep(seconds) (cancellable),
sample(prompt) (sampling), test_reconnection() (over Streamable HTTP: closes its response stream mid-call
and answers on the client's reconnection, SSE polling as SEP-1699 describes); prompt `greeting(name)`;
resource `py://static/hello`.
"""

import asyncio
import itertools
import sys

from mcp import types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventMessage, EventStore

# Over Streamable HTTP, every response stream starts with an event id and `retry: 100` (milliseconds).
RETRY_MS = 100

server = MCPServer("python-sdk-server")


@server.tool()
def echo(message: str) -> str:
    """Returns the message."""
    return message


@server.tool()
def now() -> str:
    """Takes no arguments."""
    return "python says hello"


@server.tool()
async def count(steps: int, ctx: Context) -> str:
    """Reports progress steps/steps."""
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps)
        await asyncio.sleep(0.02)
    return f"counted {steps}"


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleeps; a cancelled call says so on stderr."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        print("py_server: sleep cancelled", file=sys.stderr, flush=True)
        raise
    return f"slept {seconds}"


@server.tool()
async def sample(prompt: str, ctx: Context) -> str:
    """Asks the client's model."""
    reply = await ctx.request_context.session.create_message(
        [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
        max_tokens=50,
    )
    return f"model said: {reply.content.text}"


@server.tool()
async def test_reconnection(ctx: Context) -> str:
    """Closes its response stream, then answers: the client must reconnect with Last-Event-ID."""
    await ctx.report_progress(1, 2)
    await ctx.close_sse_stream()
    await asyncio.sleep(0.3)
    return "answered after the reconnection"


class MemoryEventStore(EventStore):
    """Every event of every stream, in order, for resumption."""

    def __init__(self):
        self.events = []  # (event id, stream id, message)
        self.ids = itertools.count(1)

    async def store_event(self, stream_id, message):
        event_id = str(next(self.ids))
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback):
        position = next((i for i, (e, _, _) in enumerate(self.events) if e == last_event_id), None)
        if position is None:
            return None
        stream = self.events[position][1]
        for event_id, stream_id, message in self.events[position + 1 :]:
            if stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


@server.prompt()
def greeting(name: str) -> str:
    """Greets someone."""
    return f"Hello, {name}!"


@server.resource("py://static/hello")
def hello() -> str:
    """A static text."""
    return "hello from python"


if __name__ == "__main__":
    transport = sys.argv[1]
    if transport == "stdio":
        server.run("stdio")
    elif transport == "streamable-http":
        server.run(
            transport,
            host="127.0.0.1",
            port=int(sys.argv[2]),
            event_store=MemoryEventStore(),
            retry_interval=RETRY_MS,
        )
    else:
        server.run(transport, host="127.0.0.1", port=int(sys.argv[2]))
