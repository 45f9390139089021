"""The official Python MCP SDK as one client of the interop matrix (`tests/interop_matrix.rs`).

Usage: python matrix_client.py MODE URL PLAN.json
MODE: `auto` (server/discover, then the 2026-07-28 revision), `legacy` (initialize, 2025-11-25, Streamable
HTTP) or `sse` (the HTTP+SSE transport, 2024-11-05; URL is the stream's, ending in /sse).
Runs the plan's steps for each target and prints one JSON line per step: {target, step, ok, detail}.
"""

import asyncio
import json
import sys

import mcp
from mcp import types
from mcp.client.sse import sse_client

SAMPLED = "interop-model-answer"


async def sampling(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=SAMPLED),
        model="interop-model",
        stop_reason="endTurn",
    )


def texts(result) -> str:
    return " ".join(getattr(item, "text", "") or "" for item in result.content)


async def check_list(client, target, _spec):
    names = [t.name for t in (await client.list_tools()).tools if t.name.startswith(target["prefix"] + "_")]
    assert names, "no tools listed"
    prompts = (await client.list_prompts()).prompts if target["prompts"] else []
    resources = (await client.list_resources()).resources if target["resources"] else []
    if target["prompts"]:
        assert any(p.name.startswith(target["prefix"] + "_") for p in prompts), "no prompts listed"
    if target["resources"]:
        assert any(str(r.uri).startswith(target["prefix"] + "+") for r in resources), "no resources listed"
    return f"{len(names)} tools"


async def call(client, spec, **kwargs):
    result = await client.call_tool(spec["tool"], spec.get("args", {}), **kwargs)
    assert not result.is_error, f"isError: {texts(result)[:200]}"
    text = texts(result)
    assert spec.get("expect", "") in text, f"{spec.get('expect')!r} not in {text[:200]!r}"
    return text[:60]


async def check_progress(client, _target, spec):
    seen = []

    async def progress(progress, total, message):
        seen.append(progress)

    await call(client, spec, progress_callback=progress)
    assert seen, "no progress notification"
    return f"{len(seen)} progress notifications"


async def check_cancel(client, target, spec):
    task = asyncio.create_task(client.call_tool(spec["tool"], spec.get("args", {})))
    await asyncio.sleep(0.5)
    task.cancel()
    try:
        await task
        raise AssertionError("the call finished instead of being cancelled")
    except asyncio.CancelledError:
        pass
    # The session (or context) still serves.
    await call(client, target["steps"]["call_args"])
    return "cancelled; next call served"


async def check_prompt(client, _target, spec):
    prompt = await client.get_prompt(spec["name"], spec.get("args", {}))
    text = " ".join(getattr(m.content, "text", "") or "" for m in prompt.messages)
    assert spec.get("expect", "") in text, f"{spec.get('expect')!r} not in {text[:200]!r}"
    return text[:60]


async def check_resource(client, _target, spec):
    read = await client.read_resource(spec["uri"])
    text = " ".join(getattr(c, "text", "") or "" for c in read.contents)
    assert spec.get("expect", "") in text, f"{spec.get('expect')!r} not in {text[:200]!r}"
    return f"{len(read.contents)} contents"


STEPS = {
    "list": check_list,
    "call_args": lambda c, t, s: call(c, s),
    "call_noargs": lambda c, t, s: call(c, s),
    "prompt": check_prompt,
    "resource": check_resource,
    "progress": check_progress,
    "cancel": check_cancel,
    "sampling": lambda c, t, s: call(c, s),
}


async def run(client, plan):
    for target in plan["targets"]:
        for step, check in STEPS.items():
            spec = target["steps"].get(step) if step != "list" else {}
            if spec is None:
                continue
            try:
                detail = await asyncio.wait_for(check(client, target, spec), 30)
                ok = True
            except Exception as e:  # a failed step is reported, the next one runs
                ok, detail = False, f"{type(e).__name__}: {e}"
            print(json.dumps({"target": target["name"], "step": step, "ok": ok, "detail": str(detail)}), flush=True)


async def main(mode: str, url: str, plan_path: str) -> None:
    with open(plan_path) as f:
        plan = json.load(f)
    if mode == "sse":
        async with sse_client(url) as (read, write):
            async with mcp.ClientSession(read, write, sampling_callback=sampling) as session:
                await session.initialize()
                await run(session, plan)
        return
    async with mcp.Client(url, mode=mode, sampling_callback=sampling) as client:
        await run(client, plan)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
