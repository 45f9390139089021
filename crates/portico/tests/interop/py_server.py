"""An MCP server built on the official Python SDK (its FastMCP-style `MCPServer`), for the interop matrix.

Usage: python py_server.py stdio | streamable-http PORT | sse PORT
Tools: echo(message), now() (no arguments), count(steps) (progress), sleep(seconds) (cancellable),
sample(prompt) (sampling); prompt `greeting(name)`; resource `py://static/hello`.
"""

import asyncio
import sys

from mcp import types
from mcp.server.mcpserver import Context, MCPServer

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
    else:
        server.run(transport, host="127.0.0.1", port=int(sys.argv[2]))
