/**
 * Embeddings benchmark: 1,000 concurrent single-text requests through the router, batched across
 * requests (DataLoader, the default 5 ms window, batch size 128) versus unbatched (window 0: one
 * provider call per input), against the OpenAI wire-format emulator on loopback. The vector cache
 * is off so every input goes upstream.
 *
 *   npx tsx bench/embeddings-batching.ts [--requests 1000] [--window 5]
 *
 * Results go to standard output as Markdown; record them in bench/results.md.
 */
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { TEST_MODELS, postGraphQL, startTestStack } from '../tests/support/stack.ts';

const { values } = parseArgs({ options: { requests: { type: 'string', default: '1000' }, window: { type: 'string', default: '5' } } });
const requests = Number(values.requests);
const EMBED_MODEL = {
  id: 'embed-bench',
  provider: 'emulated',
  version: '1',
  capabilities: ['EMBEDDINGS'],
  contextWindow: 8192,
  maxOutputTokens: 1,
  dimensions: 8,
  maxBatchSize: 128,
};
const QUERY = 'query($input: EmbeddingsInput!) { embeddings(input: $input) { dimensions } }';

async function run(batchWindowMs: number) {
  const stack = await startTestStack({
    models: [...TEST_MODELS, EMBED_MODEL],
    embeddings: { batchWindowMs, cacheTtlSeconds: 0 },
    log: { level: 'warn' },
  });
  try {
    // Warm-up: connections, schema, key cache.
    await postGraphQL(stack.url, QUERY, { input: { model: 'embed-bench', inputs: ['warm-up'] } });
    const before = stack.emulator.requests.length;
    const started = performance.now();
    const answers = await Promise.all(
      Array.from({ length: requests }, (_, index) =>
        postGraphQL(stack.url, QUERY, { input: { model: 'embed-bench', inputs: [`text ${index} ${batchWindowMs}`] } }),
      ),
    );
    const seconds = (performance.now() - started) / 1000;
    return {
      seconds,
      perSecond: Math.round(requests / seconds),
      calls: stack.emulator.requests.length - before,
      errors: answers.filter((answer) => answer.body.errors).length,
    };
  } finally {
    await stack.stop();
  }
}

const batched = await run(Number(values.window));
const unbatched = await run(0);
console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}`);
console.log(`${requests} concurrent single-text requests through the router, emulated provider, cache off\n`);
console.log('| mode | wall s | req/s | provider calls | errors |');
console.log('|---|---|---|---|---|');
console.log(
  `| batched (window ${values.window} ms, batch 128) | ${batched.seconds.toFixed(2)} | ${batched.perSecond} | ${batched.calls} | ${batched.errors} |`,
);
console.log(
  `| unbatched (window 0) | ${unbatched.seconds.toFixed(2)} | ${unbatched.perSecond} | ${unbatched.calls} | ${unbatched.errors} |`,
);
