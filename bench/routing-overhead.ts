/**
 * The added latency of the routing layer (target order, circuit breaker, retry policy, deadline)
 * on the no-failure path: the same chat on the local echo model, called directly and through
 * `Router`, whole and streamed, in one process with no network.
 *
 *   npx tsx bench/routing-overhead.ts [--calls 20000]
 */
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import type { ChatModel, ChatRequest } from '../providers/contract.ts';
import { createLocalProvider } from '../providers/local.ts';
import { Router } from '../providers/routing.ts';

const { values } = parseArgs({ options: { calls: { type: 'string', default: '20000' } } });
const calls = Number(values.calls);
const chat: ChatModel = createLocalProvider('local', { streamDelayMs: 0 }).chatModel('echo');
const request: ChatRequest = { messages: [{ role: 'user', content: 'The quick brown fox jumps over the lazy dog.' }] };
const router = new Router({
  attemptsPerTarget: 2,
  initialDelayMs: 250,
  maxDelayMs: 4_000,
  deadlineMs: 60_000,
  firstTokenMs: 30_000,
  breakerFailures: 5,
  breakerHalfOpenAfterMs: 30_000,
});
const targets = [{ key: 'echo@1', chat, info: 'echo@1' }];
const options = () => ({ signal: new AbortController().signal, requestId: 'bench' });

async function measure(run: () => Promise<void>): Promise<{ meanUs: number; p99Us: number }> {
  for (let index = 0; index < 2_000; index++) await run(); // warm-up
  const samples = new Float64Array(calls);
  for (let index = 0; index < calls; index++) {
    const started = performance.now();
    await run();
    samples[index] = (performance.now() - started) * 1000;
  }
  samples.sort();
  return { meanUs: samples.reduce((sum, value) => sum + value, 0) / calls, p99Us: samples[Math.floor(calls * 0.99)]! };
}

const drain = async (stream: AsyncIterable<unknown>) => {
  for await (const _part of stream) void _part;
};

const rows = [
  ['whole, direct', await measure(async () => void (await chat.generate(request, options())))],
  ['whole, through Router', await measure(async () => void (await router.generate(targets, request, options())))],
  ['streamed, direct', await measure(() => drain(chat.stream(request, options())))],
  ['streamed, through Router', await measure(() => drain(router.stream(targets, request, options())))],
] as const;

console.log(
  `machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}; ${calls} sequential calls each, local echo model\n`,
);
console.log('| path | mean µs | p99 µs |');
console.log('|---|---|---|');
for (const [name, result] of rows) console.log(`| ${name} | ${result.meanUs.toFixed(1)} | ${result.p99Us.toFixed(1)} |`);
console.log(
  `\nadded by routing: whole ${(rows[1][1].meanUs - rows[0][1].meanUs).toFixed(1)} µs, streamed ${(rows[3][1].meanUs - rows[2][1].meanUs).toFixed(1)} µs (mean)`,
);
