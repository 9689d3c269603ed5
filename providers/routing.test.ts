import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ChatModel, ChatResult, ChatStreamPart } from './contract.ts';
import { ProviderError } from './errors.ts';
import { Router, weightedOrder, type RoutingSettings, type Target } from './routing.ts';

const settings: RoutingSettings = {
  attemptsPerTarget: 2,
  initialDelayMs: 1,
  maxDelayMs: 5,
  deadlineMs: 5_000,
  firstTokenMs: 1_000,
  breakerFailures: 3,
  breakerHalfOpenAfterMs: 60_000,
};

type Outcome = 'ok' | ProviderError;
const rateLimited = (retryAfterMs?: number) =>
  new ProviderError('429', {
    code: 'UPSTREAM_RATE_LIMITED',
    provider: 'p',
    status: 429,
    retryable: true,
    ...(retryAfterMs !== undefined && { retryAfterMs }),
  });
const unavailable = () => new ProviderError('503', { code: 'UPSTREAM_UNAVAILABLE', provider: 'p', status: 503, retryable: true });
const badRequest = () => new ProviderError('400', { code: 'UPSTREAM_BAD_REQUEST', provider: 'p', status: 400, retryable: false });

/** A chat model that answers from a script of outcomes (then 'ok'), counting its calls. */
function scripted(name: string, outcomes: Outcome[] = []) {
  const model = {
    provider: name,
    modelId: name,
    calls: 0,
    async generate(): Promise<ChatResult> {
      model.calls++;
      const outcome = outcomes.shift() ?? 'ok';
      if (outcome !== 'ok') throw outcome;
      return {
        content: `from ${name}`,
        toolCalls: [],
        finishReason: 'stop',
        usage: { promptTokens: 1, completionTokens: 2, totalTokens: 3 },
      };
    },
    async *stream(): AsyncGenerator<ChatStreamPart> {
      model.calls++;
      const outcome = outcomes.shift() ?? 'ok';
      if (outcome !== 'ok') {
        yield { type: 'error', error: outcome };
        return;
      }
      yield { type: 'text-delta', text: `from ${name}` };
      yield { type: 'finish', finishReason: 'stop', usage: { promptTokens: 1, completionTokens: 2, totalTokens: 3 } };
    },
  };
  return model satisfies ChatModel & { calls: number };
}

const target = (model: ReturnType<typeof scripted>): Target<string> => ({ key: model.modelId, chat: model, info: model.modelId });
const options = () => ({ signal: new AbortController().signal, requestId: 'r' });
const request = { messages: [{ role: 'user' as const, content: 'hi' }] };

/** A model whose streams break right after their first token. */
const cutAfterFirstToken = (modelId: string): ChatModel => ({
  provider: 'p',
  modelId,
  generate: () => Promise.reject(new Error('unused')),
  async *stream() {
    yield { type: 'text-delta', text: 'partial' };
    yield { type: 'error', error: new ProviderError('cut', { code: 'UPSTREAM_STREAM_INTERRUPTED', provider: 'p', retryable: false }) };
  },
});

afterEach(() => {
  vi.useRealTimers();
});

describe('routing', () => {
  it('falls back to the next target when the primary keeps answering 429, and says which served', async () => {
    const primary = scripted('primary', [rateLimited(), rateLimited()]);
    const fallback = scripted('fallback');
    const { result, served } = await new Router(settings).generate([target(primary), target(fallback)], request, options());
    expect(result.content).toBe('from fallback');
    expect(served).toEqual({ target: 'fallback', attempts: 3 });
    expect(primary.calls).toBe(2);
  });

  it('retries the same target after a transient failure, waiting as Retry-After says', async () => {
    const primary = scripted('primary', [rateLimited(20)]);
    const fallback = scripted('fallback');
    const started = Date.now();
    const { served } = await new Router({ ...settings, maxDelayMs: 50 }).generate([target(primary), target(fallback)], request, options());
    expect(served).toEqual({ target: 'primary', attempts: 2 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(19);
    expect(fallback.calls).toBe(0);
  });

  it('prefers the next target to a Retry-After longer than the longest backoff', async () => {
    const primary = scripted('primary', [rateLimited(1_000)]);
    const fallback = scripted('fallback');
    const { served } = await new Router(settings).generate([target(primary), target(fallback)], request, options());
    expect(served).toEqual({ target: 'fallback', attempts: 2 });
  });

  it('stops waiting to retry the moment the caller aborts', async () => {
    const primary = scripted('primary', [rateLimited(60_000)]);
    const caller = new AbortController();
    const pending = new Router({ ...settings, deadlineMs: 120_000, maxDelayMs: 120_000 }).generate([target(primary)], request, {
      signal: caller.signal,
      requestId: 'r',
    });
    await Promise.resolve();
    caller.abort(new Error('gone'));
    await expect(pending).rejects.toThrow('gone');
  });

  it("ends with the caller's reason, not 'no target', when the caller left before any attempt", async () => {
    const caller = new AbortController();
    caller.abort(new Error('gone'));
    const primary = scripted('primary');
    await expect(new Router(settings).generate([target(primary)], request, { signal: caller.signal, requestId: 'r' })).rejects.toThrow(
      'gone',
    );
  });

  it('fails with a coded, retryable timeout when the deadline passes during a call, and counts it against the target', async () => {
    const hanging: ChatModel = {
      provider: 'p',
      modelId: 'hanging',
      generate: (_request, { signal }) =>
        new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true })),
      stream: () => {
        throw new Error('unused');
      },
    };
    const router = new Router({ ...settings, attemptsPerTarget: 1, deadlineMs: 30, breakerFailures: 1 });
    await expect(router.generate([{ key: 'hanging', chat: hanging, info: 'hanging' }], request, options())).rejects.toMatchObject({
      code: 'UPSTREAM_TIMEOUT',
      retryable: true,
    });
    expect(router.circuit('hanging')).toBe('OPEN');
  });

  it('falls back when a target fails a stream before its first token, even with a non-retryable error part', async () => {
    const cut: ChatModel = {
      provider: 'p',
      modelId: 'cut',
      generate: () => Promise.reject(new Error('unused')),
      async *stream() {
        yield { type: 'error', error: new ProviderError('cut', { code: 'UPSTREAM_STREAM_INTERRUPTED', provider: 'p', retryable: false }) };
      },
    };
    const fallback = scripted('fallback');
    const parts = [];
    for await (const part of new Router({ ...settings, attemptsPerTarget: 1 }).stream(
      [{ key: 'cut', chat: cut, info: 'cut' }, target(fallback)],
      request,
      options(),
    ))
      parts.push(part);
    expect(parts[0]).toEqual({ type: 'served', served: { target: 'fallback', attempts: 2 } });
  });

  it('falls back on a target-specific refusal (401, 404) but not on a malformed request (400)', async () => {
    const unauthorized = new ProviderError('401', { code: 'UPSTREAM_AUTH_FAILED', provider: 'p', status: 401, retryable: false });
    const notFound = new ProviderError('404', { code: 'UPSTREAM_BAD_REQUEST', provider: 'p', status: 404, retryable: false });
    for (const error of [unauthorized, notFound]) {
      const { served } = await new Router(settings).generate(
        [target(scripted('primary', [error])), target(scripted('fallback'))],
        request,
        options(),
      );
      expect(served.target).toBe('fallback');
    }
  });

  it('counts failures after the first token against the target, so a target that always cuts streams opens', async () => {
    const cutter = cutAfterFirstToken('cutter');
    const router = new Router({ ...settings, breakerFailures: 2 });
    for (let call = 0; call < 2; call++)
      for await (const _part of router.stream([{ key: 'cutter', chat: cutter, info: 'cutter' }], request, options())) void _part;
    expect(router.circuit('cutter')).toBe('OPEN');
  });

  it('moves on at once when Retry-After would pass the deadline', async () => {
    const primary = scripted('primary', [rateLimited(60_000)]);
    const fallback = scripted('fallback');
    const { served } = await new Router(settings).generate([target(primary), target(fallback)], request, options());
    expect(served).toEqual({ target: 'fallback', attempts: 2 });
    expect(primary.calls).toBe(1);
  });

  it('does not retry or fall back on a request the provider refused as bad', async () => {
    const primary = scripted('primary', [badRequest()]);
    const fallback = scripted('fallback');
    await expect(new Router(settings).generate([target(primary), target(fallback)], request, options())).rejects.toMatchObject({
      code: 'UPSTREAM_BAD_REQUEST',
    });
    expect(primary.calls + fallback.calls).toBe(1);
  });

  it('fails with the last transient error when every target failed', async () => {
    const primary = scripted('primary', [unavailable(), unavailable()]);
    const fallback = scripted('fallback', [rateLimited(), rateLimited()]);
    await expect(new Router(settings).generate([target(primary), target(fallback)], request, options())).rejects.toMatchObject({
      code: 'UPSTREAM_RATE_LIMITED',
    });
  });

  it('opens a circuit after N consecutive failures, skips the target while open, and probes it after the pause', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const changes: string[] = [];
    const router = new Router({ ...settings, attemptsPerTarget: 1 }, (key, status) => changes.push(`${key}:${status}`));
    const flaky = scripted('flaky', [unavailable(), unavailable(), unavailable()]);
    const steady = scripted('steady');
    for (let call = 0; call < 3; call++) await router.generate([target(flaky), target(steady)], request, options());
    expect(router.circuit('flaky')).toBe('OPEN');
    expect(changes).toEqual(['flaky:OPEN']);
    await router.generate([target(flaky), target(steady)], request, options());
    expect(flaky.calls).toBe(3); // not called while open
    vi.setSystemTime(Date.now() + settings.breakerHalfOpenAfterMs + 1);
    const { served } = await router.generate([target(flaky), target(steady)], request, options());
    expect(served.target).toBe('flaky'); // the probe succeeded
    expect(router.circuit('flaky')).toBe('CLOSED');
    expect(changes).toEqual(['flaky:OPEN', 'flaky:HALF_OPEN', 'flaky:CLOSED']);
  });

  it('falls back before the first token of a stream, and reports the target that served', async () => {
    const primary = scripted('primary', [unavailable(), unavailable()]);
    const fallback = scripted('fallback');
    const parts = [];
    for await (const part of new Router(settings).stream([target(primary), target(fallback)], request, options())) parts.push(part);
    expect(parts[0]).toEqual({ type: 'served', served: { target: 'fallback', attempts: 3 } });
    expect(parts.slice(1).map((part) => part.type)).toEqual(['text-delta', 'finish']);
  });

  it('gives up on a target whose stream sends no first token in time, and falls back', async () => {
    const silent: ChatModel = {
      provider: 'p',
      modelId: 'silent',
      generate: () => Promise.reject(new Error('unused')),
      async *stream(_request, { signal }) {
        await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      },
    };
    const fallback = scripted('fallback');
    const parts = [];
    const router = new Router({ ...settings, attemptsPerTarget: 1, firstTokenMs: 20 });
    for await (const part of router.stream([{ key: 'silent', chat: silent, info: 'silent' }, target(fallback)], request, options()))
      parts.push(part);
    expect(parts[0]).toEqual({ type: 'served', served: { target: 'fallback', attempts: 2 } });
    expect(parts.at(-1)?.type).toBe('finish');
  });

  it('aborts the silent target upstream when it gives up on it', async () => {
    let aborted = false;
    const silent: ChatModel = {
      provider: 'p',
      modelId: 'silent',
      generate: () => Promise.reject(new Error('unused')),
      async *stream(_request, { signal }) {
        await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
        aborted = true;
      },
    };
    const router = new Router({ ...settings, attemptsPerTarget: 1, firstTokenMs: 20 });
    for await (const _part of router.stream(
      [{ key: 'silent', chat: silent, info: 'silent' }, target(scripted('fallback'))],
      request,
      options(),
    ))
      void _part;
    expect(aborted).toBe(true);
  });

  it('lets a committed stream run past the first-token deadline', async () => {
    const slow: ChatModel = {
      provider: 'p',
      modelId: 'slow',
      generate: () => Promise.reject(new Error('unused')),
      async *stream(_request, { signal }) {
        yield { type: 'text-delta', text: 'first' };
        // Like an adapter: a slow provider, cancelled if our signal aborts.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 80);
          signal.addEventListener(
            'abort',
            () => {
              clearTimeout(timer);
              resolve();
            },
            { once: true },
          );
        });
        if (signal.aborted) return;
        yield { type: 'finish', finishReason: 'stop', usage: { promptTokens: 1, completionTokens: 1, totalTokens: 2 } };
      },
    };
    const router = new Router({ ...settings, deadlineMs: 20 });
    const parts = [];
    for await (const part of router.stream([{ key: 'slow', chat: slow, info: 'slow' }], request, options())) parts.push(part.type);
    expect(parts).toEqual(['served', 'text-delta', 'finish']);
  });

  /** A stream that sends nothing until its signal aborts, then ends as adapters do. */
  const silentModel = (modelId: string): ChatModel => ({
    provider: 'p',
    modelId,
    generate: () => Promise.reject(new Error('unused')),
    async *stream(_request, { signal }) {
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
    },
  });

  it('does not count a caller who leaves before the first token against the target', async () => {
    const router = new Router({ ...settings, attemptsPerTarget: 1, breakerFailures: 1 });
    const caller = new AbortController();
    const parts = router.stream([{ key: 'slow', chat: silentModel('slow'), info: 'slow' }], request, {
      signal: caller.signal,
      requestId: 'r',
    });
    const first = parts.next();
    setImmediate(() => caller.abort(new Error('gone')));
    await first;
    expect(router.circuit('slow')).toBe('CLOSED');
  });

  it('ends a stream whose first token misses the routing deadline with UPSTREAM_TIMEOUT', async () => {
    const router = new Router({ ...settings, attemptsPerTarget: 1, deadlineMs: 30 });
    const parts = [];
    for await (const part of router.stream([{ key: 'slow', chat: silentModel('slow'), info: 'slow' }], request, options()))
      parts.push(part);
    expect(parts.at(-1)).toMatchObject({ type: 'error', error: { code: 'UPSTREAM_TIMEOUT' } });
  });

  it('answers with the real error at once when a failure opens the circuit, instead of waiting to retry into it', async () => {
    const router = new Router({ ...settings, breakerFailures: 1, maxDelayMs: 60_000 });
    const started = Date.now();
    await expect(router.generate([target(scripted('primary', [rateLimited(30_000)]))], request, options())).rejects.toMatchObject({
      code: 'UPSTREAM_RATE_LIMITED',
    });
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('never switches targets after the first token: a later failure ends the stream', async () => {
    const failing = cutAfterFirstToken('midway');
    const fallback = scripted('fallback');
    const parts = [];
    for await (const part of new Router(settings).stream(
      [{ key: 'midway', chat: failing, info: 'midway' }, target(fallback)],
      request,
      options(),
    ))
      parts.push(part);
    expect(parts.map((part) => part.type)).toEqual(['served', 'text-delta', 'error']);
    expect(fallback.calls).toBe(0);
  });

  it('honours 90/10 canary weights within a few percent over 1,000 picks', () => {
    let seed = 42;
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const counts = { stable: 0, canary: 0 };
    const entries = [
      { name: 'stable' as const, weight: 90 },
      { name: 'canary' as const, weight: 10 },
    ];
    for (let pick = 0; pick < 1_000; pick++) counts[weightedOrder(entries, random)[0]!.name]++;
    expect(counts.canary).toBeGreaterThanOrEqual(70);
    expect(counts.canary).toBeLessThanOrEqual(130);
    expect(weightedOrder(entries, () => 0.95).map((entry) => entry.name)).toEqual(['canary', 'stable']);
  });
});
