import { mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../logger.ts';
import type { UsageEvent, UsageSink } from './usage-event.ts';
import { UsageOutbox } from './usage-outbox.ts';

const log = createLogger({ level: 'silent', name: 'test' });
const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
const folder = () => {
  const dir = mkdtempSync(join(tmpdir(), 'mg-outbox-'));
  dirs.push(dir);
  return dir;
};

let serial = 0;
const event = (): UsageEvent => ({
  id: `event-${++serial}`,
  time: new Date().toISOString(),
  tenant: 't',
  key: 'k',
  model: 'm',
  version: '1',
  provider: 'p',
  kind: 'chat',
  promptTokens: 3,
  completionTokens: 4,
  totalTokens: 7,
  costUsd: 0.001,
  latencyMs: 5,
  timeToFirstTokenMs: null,
  outcome: 'ok',
  tags: [],
});

/** A usage stream that is down until `up` is set, and records what it stored. */
class FlakyStream implements UsageSink {
  up = true;
  stored: string[] = [];
  async emit(stored: UsageEvent): Promise<void> {
    if (!this.up) throw new Error('Stream isn’t writeable and enableOfflineQueue options is false');
    this.stored.push(stored.id);
  }
}

describe('UsageOutbox', () => {
  it('passes events to the stream while it answers, keeps them on disk while it does not, and delivers them once it does', async () => {
    const stream = new FlakyStream();
    const outbox = new UsageOutbox(stream, { dir: folder(), maxEvents: 100, retryMs: 60_000 }, log);
    const first = event();
    await outbox.emit(first);
    expect(stream.stored).toEqual([first.id]);
    stream.up = false;
    const kept = [event(), event(), event()];
    for (const each of kept) await outbox.emit(each);
    expect(outbox.held).toBe(3);
    // Redis is back, but events keep their order: the next one queues behind those held.
    stream.up = true;
    const after = event();
    await outbox.emit(after);
    expect(stream.stored).toEqual([first.id]);
    expect(await outbox.deliver()).toBe(0);
    expect(stream.stored).toEqual([first.id, ...kept.map((each) => each.id), after.id]);
    expect(outbox.held).toBe(0);
    await outbox.close();
  });

  it('refuses new calls with a coded 503 at maxEvents, still keeps the events of calls under way, and shows it in its metrics', async () => {
    const stream = new FlakyStream();
    stream.up = false;
    const outbox = new UsageOutbox(stream, { dir: folder(), maxEvents: 2, retryMs: 60_000 }, log);
    await outbox.emit(event());
    expect(outbox.refusal()).toBeUndefined();
    await outbox.emit(event());
    expect(outbox.refusal()).toMatchObject({ extensions: { code: 'SERVICE_UNAVAILABLE', retryAfterMs: 5_000 } });
    await outbox.emit(event());
    expect(outbox.held).toBe(3);
    const registry = new Registry();
    outbox.registerMetrics(registry);
    expect(await registry.getSingleMetricAsString('modelgraph_usage_outbox_events')).toMatch(/ 3$/);
    stream.up = true;
    await outbox.deliver();
    expect(outbox.refusal()).toBeUndefined();
    expect(stream.stored).toHaveLength(3);
  });

  it('delivers a segment again whole when the stream fails part-way through it (aggregation dedupes by id)', async () => {
    const stream = new FlakyStream();
    stream.up = false;
    const outbox = new UsageOutbox(stream, { dir: folder(), maxEvents: 1_000, retryMs: 60_000 }, log);
    const kept = Array.from({ length: 5 }, event);
    for (const each of kept) await outbox.emit(each);
    let budget = 2;
    stream.up = true;
    const emit = stream.emit.bind(stream);
    stream.emit = async (each) => {
      if (budget-- <= 0) throw new Error('down again');
      await emit(each);
    };
    expect(await outbox.deliver()).toBe(5);
    stream.emit = emit;
    expect(await outbox.deliver()).toBe(0);
    expect(new Set(stream.stored)).toEqual(new Set(kept.map((each) => each.id)));
  });

  it('delivers, after a restart, what a stopped outbox left on disk, and skips a line cut by a crash', async () => {
    const dir = folder();
    const down = new FlakyStream();
    down.up = false;
    const before = new UsageOutbox(down, { dir, maxEvents: 1_000, retryMs: 60_000 }, log);
    const kept = [event(), event()];
    for (const each of kept) await before.emit(each);
    await before.close();
    // A segment whose owner left no owner file (it crashed), cut mid-line.
    writeFileSync(
      join(dir, `${Date.now()}-0123456789abcdef-0c5e8a2e-3a4b-4c5d-8e9f-0123456789ab.jsonl`),
      `${JSON.stringify(event())}\n{"id":"cut`,
    );
    const stream = new FlakyStream();
    const after = new UsageOutbox(stream, { dir, maxEvents: 1_000, retryMs: 60_000 }, log);
    expect(after.held).toBe(4);
    expect(await after.deliver()).toBe(0);
    expect(stream.stored).toHaveLength(3);
    expect(stream.stored).toEqual(expect.arrayContaining(kept.map((each) => each.id)));
    expect(readdirSync(dir).filter((name) => name.endsWith('.jsonl'))).toEqual([]);
  });

  it('leaves a running outbox its segments, and takes them over once its owner file is stale', async () => {
    const dir = folder();
    const down = new FlakyStream();
    down.up = false;
    const running = new UsageOutbox(down, { dir, maxEvents: 1_000, retryMs: 60_000 }, log);
    await running.emit(event());
    const [owner] = readdirSync(dir).filter((name) => name.endsWith('.owner'));
    const stream = new FlakyStream();
    const other = new UsageOutbox(stream, { dir, maxEvents: 1_000, retryMs: 60_000 }, log);
    expect(other.held).toBe(0);
    expect(await other.deliver()).toBe(0);
    expect(stream.stored).toEqual([]);
    // The running one stops touching its owner file (it hangs, or its machine went away).
    const stale = new Date(Date.now() - 120_000);
    utimesSync(join(dir, owner!), stale, stale);
    expect(await other.deliver()).toBe(0);
    expect(stream.stored).toHaveLength(1);
  });

  it('sends events to the stream again once a delivery succeeds, so the outbox empties under steady traffic', async () => {
    const stream = new FlakyStream();
    stream.up = false;
    const outbox = new UsageOutbox(stream, { dir: folder(), maxEvents: 1_000, retryMs: 60_000 }, log);
    await outbox.emit(event());
    stream.up = true;
    await outbox.deliver();
    const direct = event();
    await outbox.emit(direct);
    expect(outbox.held).toBe(0);
    expect(stream.stored.at(-1)).toBe(direct.id);
  });

  it('keeps an event the stream does not answer (a hung connection) instead of waiting on it', async () => {
    const hung: UsageSink = { emit: () => new Promise(() => undefined) };
    const outbox = new UsageOutbox(hung, { dir: folder(), maxEvents: 1_000, retryMs: 60_000 }, log);
    await outbox.emit(event());
    expect(outbox.held).toBe(1);
  }, 10_000);
});
