/**
 * Logging never blocks serving: modelgraph runs as a real process whose standard output is a pipe;
 * the test stops reading it (as a stalled log shipper would) and requests keep being answered,
 * the lines that did not fit counted as dropped, and a warning says so once the reader is back.
 */
import { afterEach, expect, it } from 'vitest';
import { newKeySecret } from '../platform/access/access-store.ts';
import { spawnModelgraph, writeConfig, type ModelgraphProcess } from './support/process.ts';

const KEY = newKeySecret('logs').secret;
let running: ModelgraphProcess | undefined;
afterEach(async () => {
  running?.kill();
  await running?.exit;
  running = undefined;
});

it('keeps serving while the reader of its standard output stops reading, dropping and counting the lines that do not fit', async () => {
  const config = writeConfig({
    router: { port: 0 },
    subgraphs: { inference: { port: 0 }, embeddings: { port: 0 }, agents: { port: 0 }, usage: { port: 0 }, access: { port: 0 } },
    log: { level: 'info', backlogBytes: 16 * 1024 },
  });
  running = spawnModelgraph(['all', '--config', config], { MODELGRAPH_BOOTSTRAP_KEY: KEY });
  const ready = await running.waitForLine((line) => typeof line.msg === 'string' && line.msg.startsWith('modelgraph is ready'));
  const url = ready.url as string;
  running.child.stdout!.pause();
  const chat = async () => {
    const response = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        query: 'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "still here"}]}) { content } }',
      }),
    });
    return ((await response.json()) as { data?: { chat?: { content: string } } }).data?.chat?.content;
  };
  // Each chat logs a few lines at info: far more than the pipe, the reader's buffer and the backlog hold.
  const answers: (string | undefined)[] = [];
  for (let round = 0; round < 40; round++) answers.push(...(await Promise.all(Array.from({ length: 20 }, chat))));
  expect(answers.filter((answer) => answer === 'still here')).toHaveLength(800);
  const metrics = await (await fetch(url.replace('/graphql', '/metrics'))).text();
  const dropped = Number(/modelgraph_log_lines_dropped_total\{[^}]*\} (\d+)/.exec(metrics)?.[1]);
  expect(dropped).toBeGreaterThan(0);
  // The reader is back: a warning counts what it missed.
  running.child.stdout!.resume();
  const warning = await running.waitForLine((line) => line.msg === 'log lines dropped: the reader of standard output fell behind');
  expect(warning.dropped).toBeGreaterThan(0);
});

it('keeps serving when the reader of its standard output goes away', async () => {
  const config = writeConfig({
    router: { port: 0 },
    subgraphs: { inference: { port: 0 }, embeddings: { port: 0 }, agents: { port: 0 }, usage: { port: 0 }, access: { port: 0 } },
    log: { level: 'info' },
  });
  running = spawnModelgraph(['all', '--config', config], { MODELGRAPH_BOOTSTRAP_KEY: KEY });
  const ready = await running.waitForLine((line) => typeof line.msg === 'string' && line.msg.startsWith('modelgraph is ready'));
  const url = ready.url as string;
  // The pipe's reading end closes: the next writes fail with EPIPE.
  running.child.stdout!.destroy();
  for (let index = 0; index < 50; index++) {
    const response = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ query: 'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "alone"}]}) { content } }' }),
    });
    expect(((await response.json()) as { data?: { chat?: { content: string } } }).data?.chat?.content).toBe('alone');
  }
  expect(running.child.exitCode).toBeNull();
});
