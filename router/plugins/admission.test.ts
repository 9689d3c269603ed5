import { afterEach, describe, expect, it, vi } from 'vitest';
import { Admission, OVERLOAD_MEMORY_MS, OVERLOADED_WAIT_MS } from './admission.ts';

const settings = { maxOperations: 2, maxStreams: 1, maxQueued: 1, queueTimeoutMs: 50 };

afterEach(() => {
  vi.useRealTimers();
});

describe('Admission', () => {
  it('takes back, when it runs out, an operation slot held for over 10 minutes (an operation whose end was never seen)', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const reclaimed: string[] = [];
    const admission = new Admission({ ...settings, maxQueued: 0 }, (kind) => reclaimed.push(kind));
    const lost = await admission.enter('operations');
    await admission.enter('operations');
    expect(await admission.enter('operations')).toBeUndefined();
    vi.setSystemTime(Date.now() + 11 * 60_000);
    const next = await admission.enter('operations');
    expect(next).toBeTypeOf('function');
    expect(reclaimed).toEqual(['operations', 'operations']);
    // The lost operation ending late frees nothing that is not its own.
    lost!();
    expect(admission.load('operations').used).toBe(1);
  });

  it('admits up to its maximum, lets one wait for the next free slot, and refuses the rest at once', async () => {
    const admission = new Admission(settings);
    const first = await admission.enter('operations');
    const second = await admission.enter('operations');
    expect(first && second).toBeTruthy();
    const waiting = admission.enter('operations');
    expect(await admission.enter('operations')).toBeUndefined();
    expect(admission.load('operations')).toEqual({ used: 2, queued: 1 });
    first!();
    first!();
    const third = await waiting;
    expect(third).toBeTypeOf('function');
    expect(admission.load('operations')).toEqual({ used: 2, queued: 0 });
    second!();
    third!();
    expect(admission.load('operations')).toEqual({ used: 0, queued: 0 });
  });

  it('refuses one that waited queueTimeoutMs without a slot, and counts streams apart from operations', async () => {
    const admission = new Admission(settings);
    const stream = await admission.enter('streams');
    expect(await admission.enter('operations')).toBeTypeOf('function');
    expect(await admission.enter('streams')).toBeUndefined();
    expect(admission.load('streams')).toEqual({ used: 1, queued: 0 });
    stream!();
    expect(await admission.enter('streams')).toBeTypeOf('function');
    expect(admission.refusal('streams')).toMatchObject({
      extensions: { code: 'OVERLOADED', limit: 'maxStreams', max: 1, retryAfterMs: 1_000 },
    });
  });
});

describe('Admission under a standing queue', () => {
  it('lets a newcomer wait only briefly once the queue has not been empty for queueTimeoutMs, though no one timed out', async () => {
    vi.useFakeTimers();
    const admission = new Admission({ maxOperations: 1, maxStreams: 1, maxQueued: 10, queueTimeoutMs: 100 });
    const running = (await admission.enter('operations'))!;
    const first = admission.enter('operations');
    vi.advanceTimersByTime(60);
    const second = admission.enter('operations');
    vi.advanceTimersByTime(10);
    running();
    // Admitted within its time: no one has timed out, but `second` keeps the queue non-empty.
    const admitted = (await first)!;
    vi.advanceTimersByTime(31);
    const newcomer = admission.enter('operations');
    vi.advanceTimersByTime(OVERLOADED_WAIT_MS + 1);
    expect(await newcomer).toBeUndefined();
    admitted();
    expect(await second).toBeTypeOf('function');
  });
});

describe('Admission after a caller waited out the queue', () => {
  it('lets newcomers wait only briefly for OVERLOAD_MEMORY_MS, even once the queue has emptied', async () => {
    vi.useFakeTimers();
    const admission = new Admission({ maxOperations: 1, maxStreams: 1, maxQueued: 10, queueTimeoutMs: 100 });
    const running = (await admission.enter('operations'))!;
    const waitedOut = admission.enter('operations');
    vi.advanceTimersByTime(101);
    expect(await waitedOut).toBeUndefined();
    expect(admission.load('operations').queued).toBe(0);
    // The queue is empty, but it just failed to absorb the load: a newcomer is told at once.
    const newcomer = admission.enter('operations');
    vi.advanceTimersByTime(OVERLOADED_WAIT_MS + 1);
    expect(await newcomer).toBeUndefined();
    // Once the overload is forgotten, the queue absorbs a burst again.
    vi.advanceTimersByTime(OVERLOAD_MEMORY_MS);
    const later = admission.enter('operations');
    vi.advanceTimersByTime(50);
    running();
    expect(await later).toBeTypeOf('function');
  });
});

describe('Admission handing a freed slot over', () => {
  it('gives it to the longest waiter at once, so a caller arriving in the same tick cannot take it too', async () => {
    const admission = new Admission({ maxOperations: 1, maxStreams: 1, maxQueued: 1, queueTimeoutMs: 1_000 });
    const running = (await admission.enter('operations'))!;
    const waiting = admission.enter('operations');
    running();
    // The waiter holds the freed slot already: a newcomer finds none free, and waits.
    expect(admission.load('operations')).toEqual({ used: 1, queued: 0 });
    const newcomer = admission.enter('operations');
    expect(newcomer).toBeInstanceOf(Promise);
    const admitted = (await waiting)!;
    expect(admission.load('operations')).toEqual({ used: 1, queued: 1 });
    admitted();
    expect(await newcomer).toBeTypeOf('function');
  });
});
