// TEMPORARY (not committed): live heap after streams, in-process.
import { print } from 'graphql';
import { writeHeapSnapshot } from 'node:v8';
import { ChatStreamDocument } from '../codegen/operations.ts';
import { collectSubscription, startTestStack } from '../tests/support/stack.ts';

const gc = (globalThis as unknown as { gc: () => void }).gc;
const heap = () => {
  gc();
  gc();
  return Math.round(process.memoryUsage().heapUsed / 1024 / 1024);
};
const stack = await startTestStack({
  log: { level: 'warn' },
  router: { port: 0, shutdownGraceMs: 2000, rateLimits: { 'Subscription.chatStream': { max: 1000000, window: '1m' } } },
});
const ws = stack.ws();
const sse = stack.sse();
const model = process.argv[2] ?? 'echo';
const run = async (n: number) => {
  for (let i = 0; i < n; i++) {
    const client = i % 2 ? ws : sse;
    const r = await collectSubscription(client, {
      query: print(ChatStreamDocument),
      variables: { input: { model, messages: [{ role: 'USER', content: 'one two three four five six' }] } },
    });
    if (r.error || !r.results.length) {
      console.log('fail', r.error);
      break;
    }
  }
};
await run(200);
const base = heap();
console.log('after warm-up', base, 'MB');
if (process.argv[3]) writeHeapSnapshot(`${process.argv[3]}-a.heapsnapshot`);
for (let round = 1; round <= 3; round++) {
  await run(1000);
  console.log(`after ${round * 1000} more streams`, heap(), 'MB');
}
if (process.argv[3]) {
  heap();
  writeHeapSnapshot(`${process.argv[3]}-b.heapsnapshot`);
}
await stack.stop();
process.exit(0);
