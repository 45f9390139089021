// The official TypeScript MCP SDK (@modelcontextprotocol/sdk) as one client of the interop matrix
// (tests/interop_matrix.rs), over Streamable HTTP.
//
// Usage: NODE_PATH=<dir with @modelcontextprotocol/sdk> node matrix_client.cjs URL PLAN.json
// Runs the plan's steps for each target and prints one JSON line per step: {target, step, ok, detail}.

const fs = require("node:fs");
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
const { CreateMessageRequestSchema } = require("@modelcontextprotocol/sdk/types.js");

const SAMPLED = "interop-model-answer";

function texts(result) {
  return (result.content || []).map((item) => item.text || "").join(" ");
}

function expect(spec, text) {
  if (!text.includes(spec.expect || "")) {
    throw new Error(`${JSON.stringify(spec.expect)} not in ${JSON.stringify(text.slice(0, 200))}`);
  }
}

async function call(client, spec, options = {}) {
  const result = await client.callTool({ name: spec.tool, arguments: spec.args || {} }, undefined, options);
  if (result.isError) throw new Error(`isError: ${texts(result).slice(0, 200)}`);
  expect(spec, texts(result));
  return texts(result).slice(0, 60);
}

const steps = {
  async list(client, target) {
    const prefix = target.prefix;
    const tools = (await client.listTools()).tools.filter((t) => t.name.startsWith(`${prefix}_`));
    if (tools.length === 0) throw new Error("no tools listed");
    if (target.prompts && !(await client.listPrompts()).prompts.some((p) => p.name.startsWith(`${prefix}_`))) {
      throw new Error("no prompts listed");
    }
    if (target.resources && !(await client.listResources()).resources.some((r) => r.uri.startsWith(`${prefix}+`))) {
      throw new Error("no resources listed");
    }
    return `${tools.length} tools`;
  },
  call_args: (client, target, spec) => call(client, spec),
  call_noargs: (client, target, spec) => call(client, spec),
  async prompt(client, target, spec) {
    const prompt = await client.getPrompt({ name: spec.name, arguments: spec.args || {} });
    const text = prompt.messages.map((m) => m.content.text || "").join(" ");
    expect(spec, text);
    return text.slice(0, 60);
  },
  async resource(client, target, spec) {
    const read = await client.readResource({ uri: spec.uri });
    expect(spec, read.contents.map((c) => c.text || "").join(" "));
    return `${read.contents.length} contents`;
  },
  async progress(client, target, spec) {
    let seen = 0;
    await call(client, spec, { onprogress: () => { seen += 1; } });
    if (seen === 0) throw new Error("no progress notification");
    return `${seen} progress notifications`;
  },
  async cancel(client, target, spec) {
    const controller = new AbortController();
    const pending = client.callTool({ name: spec.tool, arguments: spec.args || {} }, undefined, { signal: controller.signal });
    setTimeout(() => controller.abort("interop cancel"), 500);
    try {
      await pending;
      throw new Error("the call finished instead of being cancelled");
    } catch (e) {
      if (!controller.signal.aborted) throw e;
    }
    await call(client, target.steps.call_args);
    return "cancelled; next call served";
  },
  sampling: (client, target, spec) => call(client, spec),
};

async function main() {
  const [url, planPath] = process.argv.slice(2);
  const plan = JSON.parse(fs.readFileSync(planPath, "utf8"));
  const client = new Client({ name: "interop-ts", version: "1.0.0" }, { capabilities: { sampling: {} } });
  client.setRequestHandler(CreateMessageRequestSchema, async () => ({
    role: "assistant",
    content: { type: "text", text: SAMPLED },
    model: "interop-model",
    stopReason: "endTurn",
  }));
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  for (const target of plan.targets) {
    for (const [step, check] of Object.entries(steps)) {
      const spec = step === "list" ? {} : target.steps[step];
      if (spec === null || spec === undefined) continue;
      let ok = true;
      let detail;
      try {
        detail = await Promise.race([
          check(client, target, spec),
          new Promise((_, reject) => setTimeout(() => reject(new Error("timed out after 30 s")), 30000)),
        ]);
      } catch (e) {
        ok = false;
        detail = `${e && e.name}: ${e && e.message}`;
      }
      console.log(JSON.stringify({ target: target.name, step, ok, detail: String(detail) }));
    }
  }
  await client.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
