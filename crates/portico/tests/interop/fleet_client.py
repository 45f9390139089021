"""The official Python MCP SDK as a client of a Portico fleet behind a round-robin load balancer.

Usage: python fleet_client.py URL session
       python fleet_client.py URL calls SECONDS
       python fleet_client.py URL until PATH
The replicas behind URL serve two HTTP targets, `b` (its lists paged by 4) and `c`.
`session` goes through a whole session (every page of the tool list, calls to both targets, a prompt,
a resource, a sampling round trip, then DELETE) and prints "fleet client: ok".
`calls` calls `b_echo` for SECONDS in one session (`until`: until PATH exists) and prints a JSON
summary: how many calls succeeded, and those that failed (with why).
"""

import asyncio
import json
import os
import sys
import time

import mcp
from mcp import types


async def sampling(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    prompt = params.messages[0].content.text
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"fleet saw {prompt}"),
        model="fleet-model",
        stop_reason="endTurn",
    )


def text_of(result) -> str:
    return result.content[0].text


async def session(url: str) -> None:
    async with mcp.Client(url, sampling_callback=sampling, mode="legacy") as client:
        names, cursor, pages = [], None, 0
        while True:
            page = await client.list_tools(cursor=cursor)
            names += [tool.name for tool in page.tools]
            pages += 1
            cursor = page.next_cursor
            if not cursor:
                break
        assert pages > 3, f"{pages} pages"
        for expected in ["b_echo", "c_echo", "b_test_sampling"]:
            assert expected in names, f"{expected} not listed: {names}"
        for target in ["b", "c", "b", "c"]:
            echoed = text_of(await client.call_tool(f"{target}_echo", {"message": f"to {target}"}))
            assert echoed == f"to {target}", echoed
        prompt = await client.get_prompt("c_test_prompt_with_arguments", {"arg1": "x", "arg2": "y"})
        assert prompt.messages[0].content.text == "Prompt with arguments: arg1='x', arg2='y'", prompt
        read = await client.read_resource("b+test://static-text")
        assert read.contents[0].text == "This is the content of the static text resource.", read
        sampled = text_of(await client.call_tool("b_test_sampling", {"prompt": "ping"}))
        assert sampled == "LLM response: fleet saw ping", sampled
    print("fleet client: ok")


async def calls(url: str, until) -> None:
    ok, failed = 0, []
    async with mcp.Client(url, mode="legacy") as client:
        n = 0
        while not until():
            n += 1
            try:
                result = await asyncio.wait_for(
                    client.call_tool("b_echo", {"message": f"call {n}"}), timeout=10
                )
                if result.is_error or text_of(result) != f"call {n}":
                    failed.append(f"call {n}: {result}")
                else:
                    ok += 1
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                failed.append(f"call {n}: {type(e).__name__}: {e}")
    print(json.dumps({"ok": ok, "failed": failed}))


if __name__ == "__main__":
    target, mode = sys.argv[1], sys.argv[2]
    if mode == "session":
        asyncio.run(session(target))
    elif mode == "calls":
        deadline = time.monotonic() + float(sys.argv[3])
        asyncio.run(calls(target, lambda: time.monotonic() >= deadline))
    else:  # until PATH: calls until the file exists (two minutes at most)
        deadline = time.monotonic() + 120
        asyncio.run(calls(target, lambda: os.path.exists(sys.argv[3]) or time.monotonic() >= deadline))
