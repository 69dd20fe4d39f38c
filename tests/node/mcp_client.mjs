// The official MCP TypeScript SDK's client talking to Cortex, over either transport:
//   node mcp_client.mjs http URL MANIFESTS_DIR [TOKEN]       (Streamable HTTP at URL/mcp)
//   node mcp_client.mjs stdio CORTEX URL MANIFESTS_DIR [TOKEN] (`CORTEX mcp --server URL`)
// Lists and calls tools (a good call, bad arguments, an unknown tool, a long call with progress,
// a workflow), reads a resource and a prompt, then adds a manifest to MANIFESTS_DIR and waits for
// notifications/tools/list_changed. Prints one JSON object with what it saw. Used by
// tests/integration/mcp_test.cc.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { mkdirSync, writeFileSync } from 'node:fs';

const [, , mode, ...args] = process.argv;
let transport;
let manifests;
let token;
if (mode === 'http') {
  const [url, dir, key] = args;
  manifests = dir;
  token = key;
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  transport = new StreamableHTTPClientTransport(new URL(`${url}/mcp`), { requestInit: { headers } });
} else {
  const [cortex, url, dir, key] = args;
  manifests = dir;
  token = key;
  const env = { ...process.env };
  if (token) env.CORTEX_TOKEN = token;
  transport = new StdioClientTransport({ command: cortex, args: ['mcp', '--server', url], env, stderr: 'inherit' });
}

const client = new Client({ name: 'cortex-test', version: '1.0.0' });
const out = {};
let listChanged = 0;
client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
  listChanged += 1;
});
await client.connect(transport);
out.server = client.getServerVersion();
out.capabilities = client.getServerCapabilities();
out.protocolVersion = transport.protocolVersion ?? null;

const tools = (await client.listTools()).tools;
out.tools = tools.map((t) => t.name).sort();
out.adderSchema = tools.find((t) => t.name === 'adder')?.inputSchema ?? null;

out.add = await client.callTool({ name: 'adder', arguments: { a: 2, b: 3 } });
out.badArgs = await client.callTool({ name: 'adder', arguments: { a: 'two' } });
try {
  await client.callTool({ name: 'no_such_tool', arguments: {} });
  out.unknown = 'no error';
} catch (e) {
  out.unknown = { code: e.code, message: e.message };
}

const progress = [];
out.slow = await client.callTool({ name: 'slow', arguments: {} }, undefined, {
  onprogress: (p) => progress.push(p),
  timeout: 60000,
});
out.progress = progress;

if (!token || args.includes('--operator')) {
  out.workflow = await client.callTool({ name: 'workflow_sum_twice', arguments: { x: 4 } });
}

const resources = (await client.listResources()).resources;
out.resources = resources.map((r) => r.uri).sort();
out.resource = (await client.readResource({ uri: 'cortex://manifest/Tool/adder' })).contents[0];
const prompts = (await client.listPrompts()).prompts;
out.prompts = prompts.map((p) => p.name).sort();
out.prompt = await client.getPrompt({ name: 'helper', arguments: { message: 'Hello there' } });

// A new manifest on disk: the server reloads it and says so.
mkdirSync(`${manifests}/tools/late`, { recursive: true });
writeFileSync(`${manifests}/tools/late/run.sh`, "#!/bin/sh\necho '{\"late\": true}'\n", { mode: 0o755 });
writeFileSync(
  `${manifests}/tools/late/tool.yml`,
  'kind: Tool\nname: late\ndescription: Added while a client was connected.\n' +
    'implementation: {type: shell, entrypoint: run.sh}\n',
);
const deadline = Date.now() + 15000;
while (listChanged === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
out.listChanged = listChanged;
out.toolsAfter = (await client.listTools()).tools.map((t) => t.name).sort();

await client.close();
console.log(JSON.stringify(out));
process.exit(0);
