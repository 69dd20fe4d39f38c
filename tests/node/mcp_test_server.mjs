// An MCP server written with the official SDK (npm @modelcontextprotocol/sdk), for Cortex's MCP
// client tests and bench: Cortex starts it (stdio) through a Tool with implementation.type mcp.
//   node mcp_test_server.mjs            stdio
//   node mcp_test_server.mjs --http P   Streamable HTTP on 127.0.0.1:P/mcp
// Tools: echo (text), add (structured output), fail (isError), slow (progress notifications,
// honours cancellation), crash (the process exits), pid (its process id).
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createServer } from 'node:http';
import { z } from 'zod';

function build() {
  const server = new McpServer({ name: 'cortex-test-server', version: '1.0.0' });
  server.registerTool(
    'echo',
    { description: 'Echoes its text', inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: 'text', text }] }),
  );
  server.registerTool(
    'add',
    {
      description: 'Adds two numbers',
      inputSchema: { a: z.number(), b: z.number() },
      outputSchema: { sum: z.number() },
    },
    async ({ a, b }) => ({
      content: [{ type: 'text', text: JSON.stringify({ sum: a + b }) }],
      structuredContent: { sum: a + b },
    }),
  );
  server.registerTool('fail', { description: 'Always fails' }, async () => ({
    content: [{ type: 'text', text: 'it went wrong on purpose' }],
    isError: true,
  }));
  server.registerTool(
    'slow',
    { description: 'Reports progress, then answers', inputSchema: { steps: z.number() } },
    async ({ steps }, extra) => {
      for (let i = 1; i <= steps; i += 1) {
        if (extra.signal.aborted) throw new Error('cancelled');
        const token = extra._meta?.progressToken;
        if (token !== undefined) {
          await extra.sendNotification({
            method: 'notifications/progress',
            params: { progressToken: token, progress: i, total: steps, message: `step ${i}` },
          });
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      return { content: [{ type: 'text', text: `done after ${steps}` }] };
    },
  );
  server.registerTool('crash', { description: 'Exits the server' }, async () => {
    process.exit(3);
  });
  server.registerTool('pid', { description: 'Its process id' }, async () => ({
    content: [{ type: 'text', text: String(process.pid) }],
  }));
  return server;
}

if (process.argv[2] === '--http') {
  const port = Number(process.argv[3]);
  const transports = {};
  createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
    const sid = req.headers['mcp-session-id'];
    let transport = sid ? transports[sid] : undefined;
    if (!transport) {
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => crypto.randomUUID(),
        onsessioninitialized: (id) => {
          transports[id] = transport;
        },
      });
      await build().connect(transport);
    }
    await transport.handleRequest(req, res, body);
  }).listen(port, '127.0.0.1');
} else {
  await build().connect(new StdioServerTransport());
}
