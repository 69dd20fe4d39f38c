// Cortex as an MCP client, against the official SDK's client calling the same stdio MCP server
// directly (issue 15's second figure). The server is tests/node/mcp_test_server.mjs; its `echo`
// tool is called N times each way, one call at a time:
//   direct:       SDK client --stdio--> server
//   cortex /mcp:  SDK client --HTTP /mcp--> Cortex --stdio (kept)--> server   (Tool remote_echo)
//   cortex REST:  fetch POST /execute/tool --> Cortex --stdio--> server
// Prints one JSON line: p50/p90 (ms) of each and the ratios to direct. bench/mcp_bench runs it.
//
//   node mcp_client_bench.mjs CORTEX_URL SERVER_SCRIPT N
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [cortexUrl, serverScript, nArg] = process.argv.slice(2);
const n = Number(nArg || 500);

function pct(values, p) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

async function timeCalls(call) {
  for (let i = 0; i < 20; i += 1) await call(i); // warm-up
  const ms = [];
  for (let i = 0; i < n; i += 1) {
    const t0 = process.hrtime.bigint();
    await call(i);
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return { p50: pct(ms, 50), p90: pct(ms, 90), p99: pct(ms, 99) };
}

function check(result, text) {
  const got = result?.content?.[0]?.text;
  if (result?.isError || got !== text) throw new Error(`unexpected answer: ${JSON.stringify(result)}`);
}

const direct = new Client({ name: 'bench-direct', version: '1' });
await direct.connect(new StdioClientTransport({ command: process.execPath, args: [serverScript] }));
const viaCortex = new Client({ name: 'bench-cortex', version: '1' });
await viaCortex.connect(new StreamableHTTPClientTransport(new URL(`${cortexUrl}/mcp`)));

const out = { calls: n };
out.direct = await timeCalls(async (i) =>
  check(await direct.callTool({ name: 'echo', arguments: { text: `m${i}` } }), `m${i}`));
out.cortex_mcp = await timeCalls(async (i) =>
  check(await viaCortex.callTool({ name: 'remote_echo', arguments: { text: `m${i}` } }), `m${i}`));
out.cortex_rest = await timeCalls(async (i) => {
  const r = await fetch(`${cortexUrl}/execute/tool`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'remote_echo', parameters: { text: `m${i}` } }),
  });
  const j = await r.json();
  if (j.status !== 'succeeded' || j.result !== `m${i}`) throw new Error(JSON.stringify(j));
});
out.ratio_mcp = out.cortex_mcp.p50 / out.direct.p50;
out.ratio_rest = out.cortex_rest.p50 / out.direct.p50;
console.log(JSON.stringify(out));
await direct.close();
await viaCortex.close();
process.exit(0);
