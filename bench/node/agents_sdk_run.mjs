// The OpenAI Agents SDK for JavaScript running one single-tool conversation N times against a
// scripted OpenAI-compatible server (bench/agent_bench starts it and scripts its turns): the
// model asks for the `stamp` tool, whose function spawns the same script Cortex runs, then
// answers. Prints one JSON line per run: {wall_ms, tool_ms, ok}; tool_ms is the time the script
// itself ran (its own start and end stamps), as for Cortex.
//
//   node agents_sdk_run.mjs BASE_URL SCRIPT RUNS
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import OpenAI from 'openai';
import { Agent, run, tool, setTracingDisabled } from '@openai/agents';
import { OpenAIChatCompletionsModel } from '@openai/agents-openai';

const [baseURL, script, runsArg] = process.argv.slice(2);
const runs = Number(runsArg || 10);
setTracingDisabled(true);
const exec = promisify(execFile);

let lastTool = 0;
const stamp = tool({
  name: 'stamp',
  description: 'Prints when it started and ended.',
  parameters: { type: 'object', properties: {}, required: [], additionalProperties: false },
  strict: false,
  execute: async () => {
    const { stdout } = await exec('/bin/sh', [script]);
    const out = JSON.parse(stdout);
    lastTool = (out.end_ns - out.start_ns) / 1e6;
    return stdout;
  },
});

const client = new OpenAI({ baseURL, apiKey: 'scripted' });
const agent = new Agent({
  name: 'stamper',
  instructions: 'You stamp.',
  model: new OpenAIChatCompletionsModel(client, 'scripted-model'),
  tools: [stamp],
});

for (let i = 0; i < runs; i++) {
  const start = process.hrtime.bigint();
  let ok = false;
  try {
    const result = await run(agent, 'Stamp, please.', { stream: true });
    for await (const _ of result) { /* consume the events, as a UI would */ }
    await result.completed;
    ok = String(result.finalOutput || '').includes('done');
  } catch (e) {
    process.stderr.write(String(e) + '\n');
  }
  const wall = Number(process.hrtime.bigint() - start) / 1e6;
  process.stdout.write(JSON.stringify({ wall_ms: wall, tool_ms: lastTool, ok }) + '\n');
}
