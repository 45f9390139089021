"""The official Python MCP SDK's legacy HTTP+SSE client against Portico.

Usage: python python_sse_client.py URL     (URL ends in /sse)
The gateway behind URL serves the fixture as targets `a` and `b`. Lists tools, calls one on each
target, answers a sampling request, and prints `python sse client: ok`; exits non-zero on a mismatch.
"""

import asyncio
import sys

from mcp import types
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client


async def sampling(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"sse saw {params.messages[0].content.text}"),
        model="python-test-model",
        stop_reason="endTurn",
    )


def text_of(result) -> str:
    return result.content[0].text


async def main(url: str) -> None:
    async with sse_client(url) as (read, write):
        async with ClientSession(read, write, sampling_callback=sampling) as session:
            await session.initialize()
            names = [tool.name for tool in (await session.list_tools()).tools]
            assert "a_echo" in names and "b_whoami" in names, names
            assert text_of(await session.call_tool("a_echo", {"message": "over sse"})) == "over sse"
            assert text_of(await session.call_tool("b_whoami", {})) == "b"
            sampled = text_of(await session.call_tool("a_test_sampling", {"prompt": "ping"}))
            assert sampled == "LLM response: sse saw ping", sampled
    print("python sse client: ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
