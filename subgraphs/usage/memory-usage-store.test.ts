import { describe, expect, it } from 'vitest';
import type { UsageEvent } from '../../platform/metering/usage-event.ts';
import { COUNTED_IDS, MemoryUsageStore } from './memory-usage-store.ts';

const event = (id: string): UsageEvent => ({
  id,
  time: new Date().toISOString(),
  tenant: 't',
  key: 'k',
  model: 'm',
  version: '1',
  provider: 'p',
  kind: 'chat',
  promptTokens: 1,
  completionTokens: 1,
  totalTokens: 2,
  costUsd: 0,
  latencyMs: 1,
  timeToFirstTokenMs: null,
  outcome: 'ok',
  tags: [],
});

describe('MemoryUsageStore', () => {
  it('counts a recent duplicate once, and remembers a bounded number of ids however many it counts', async () => {
    const store = new MemoryUsageStore();
    for (let index = 0; index < COUNTED_IDS * 2; index++) await store.emit(event(`e${index}`));
    expect(await store.drain({ maxEvents: COUNTED_IDS * 2 })).toBe(COUNTED_IDS * 2);
    // The newest ids are remembered: a duplicate of one is not counted again.
    await store.emit(event(`e${COUNTED_IDS * 2 - 1}`));
    expect(await store.drain()).toBe(0);
    // The oldest were let go: memory stays bounded (in one process nothing redelivers that late).
    await store.emit(event('e0'));
    expect(await store.drain()).toBe(1);
  });
});
