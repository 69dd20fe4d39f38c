// The official OpenAI client talking to Cortex's /v1 endpoint as if an agent were a model:
//   node openai_client.mjs BASE_URL MODEL QUESTION
// Prints one JSON object: the models listed, a completion, a streamed completion, and the error
// an unknown model gets. Used by tests/integration/agent_example_test.cc.
import OpenAI from 'openai';

const [, , baseURL, model, question] = process.argv;
const client = new OpenAI({ baseURL, apiKey: 'not-checked-yet', maxRetries: 0, timeout: 60000 });
const out = {};

out.models = (await client.models.list()).data.map((m) => m.id);

const c = await client.chat.completions.create({
  model,
  messages: [
    { role: 'system', content: 'Answer briefly.' },
    { role: 'user', content: question },
  ],
});
out.completion = {
  content: c.choices[0].message.content,
  finish: c.choices[0].finish_reason,
  usage: c.usage,
};

const stream = await client.chat.completions.create({
  model,
  messages: [{ role: 'user', content: question }],
  stream: true,
  stream_options: { include_usage: true },
});
const s = { text: '', chunks: 0, finish: null, usage: null };
for await (const chunk of stream) {
  s.chunks += 1;
  const choice = chunk.choices[0];
  if (choice?.delta?.content) s.text += choice.delta.content;
  if (choice?.finish_reason) s.finish = choice.finish_reason;
  if (chunk.usage) s.usage = chunk.usage;
}
out.stream = s;

try {
  await client.chat.completions.create({ model: 'nobody', messages: [{ role: 'user', content: 'hi' }] });
  out.unknown = 'no error';
} catch (e) {
  out.unknown = { status: e.status, message: e.message };
}

console.log(JSON.stringify(out));
