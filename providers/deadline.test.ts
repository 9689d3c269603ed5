import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { deadline } from './deadline.ts';

describe('deadline', () => {
  it('aborts with a TimeoutError when the time runs out', async () => {
    const parent = new AbortController();
    const running = deadline(parent.signal, 5);
    const reason = await new Promise((resolve) => running.signal.addEventListener('abort', () => resolve(running.signal.reason)));
    expect(reason).toMatchObject({ name: 'TimeoutError' });
    expect(running.expired).toBe(true);
    expect(getEventListeners(parent.signal, 'abort')).toHaveLength(0);
  });

  it("aborts with the parent's reason, not as expired", () => {
    const parent = new AbortController();
    const running = deadline(parent.signal, 60_000);
    parent.abort(new Error('caller left'));
    expect(running.signal.reason).toMatchObject({ message: 'caller left' });
    expect(running.expired).toBe(false);
  });

  it('lets go of the parent and never fires once cleared', async () => {
    const parent = new AbortController();
    const running = deadline(parent.signal, 5);
    running.clear();
    expect(getEventListeners(parent.signal, 'abort')).toHaveLength(0);
    await new Promise((resolve) => setTimeout(resolve, 20));
    parent.abort();
    expect(running.signal.aborted).toBe(false);
  });
});
