"""The official Python MCP SDK as a client of Portico.

Usage: python python_client.py URL
The gateway behind URL serves two targets: `fixture` (Portico's test server) and `everything`
(@modelcontextprotocol/server-everything). Exits non-zero with a message on the first mismatch.
"""

import asyncio
import sys

import mcp
from mcp import types


async def sampling(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    prompt = params.messages[0].content.text
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"python saw {prompt}"),
        model="python-test-model",
        stop_reason="endTurn",
    )


def text_of(result) -> str:
    return result.content[0].text


async def main(url: str) -> None:
    async with mcp.Client(url, sampling_callback=sampling) as client:
        names = []
        cursor = None
        while True:
            page = await client.list_tools(cursor=cursor)
            names += [tool.name for tool in page.tools]
            cursor = page.next_cursor
            if not cursor:
                break
        for expected in ["fixture_echo", "fixture_test_sampling", "everything_echo", "everything_get-sum"]:
            assert expected in names, f"{expected} not listed: {names}"

        assert text_of(await client.call_tool("fixture_echo", {"message": "hi"})) == "hi"
        echoed = text_of(await client.call_tool("everything_echo", {"message": "hello"}))
        assert "hello" in echoed, echoed
        summed = text_of(await client.call_tool("everything_get-sum", {"a": 2, "b": 3}))
        assert "5" in summed, summed

        sampled = text_of(await client.call_tool("fixture_test_sampling", {"prompt": "ping"}))
        assert sampled == "LLM response: python saw ping", sampled

        prompt = await client.get_prompt("fixture_test_simple_prompt")
        assert prompt.messages[0].content.text == "This is a simple prompt for testing."
        resource = await client.read_resource("fixture+test://static-text")
        assert resource.contents[0].text == "This is the content of the static text resource."
        assert str(resource.contents[0].uri) == "fixture+test://static-text"
    print("python client: ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
