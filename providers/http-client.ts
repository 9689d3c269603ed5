/**
 * The one HTTP client every adapter uses: an undici keep-alive pool per provider, with the four
 * timeouts of the provider config. Connect and first-byte timeouts are undici's; the idle timeout
 * is undici's body timeout (the longest silence between two chunks); the total deadline is an
 * AbortSignal combined with the caller's. Up to two 307/308 redirects within the same origin are
 * followed, with the same body (a gateway in front of a provider may move it); a third, one to
 * another origin (which would be handed the provider's credential) or any other 3xx is a failed call.
 * They are followed here rather than by undici's redirect interceptor, which costs every call
 * some 50 µs of handler wrapping for what almost never happens. Bodies are not compressed: no
 * `accept-encoding` is sent, and none should be configured.
 */
import type { Readable } from 'node:stream';
import { Agent, type Dispatcher } from 'undici';
import { deadline } from './deadline.ts';
import { ProviderError, errorFromException } from './errors.ts';

const ignoreError = () => undefined;

/** How much of a finished stream's rest is read to keep its connection (more: the connection is closed). */
const DRAIN_LIMIT_BYTES = 1024 * 1024;

const MAX_REDIRECTS = 2;
const REDIRECTS = new Set([307, 308]);

/** Some providers' front doors refuse requests without one. */
const USER_AGENT = 'modelgraph';

export interface Timeouts {
  connectMs: number;
  firstByteMs: number;
  idleMs: number;
  totalMs: number;
}

/**
 * A provider's answer: what the adapters read of it. The body is a Node stream of bytes (undici's
 * `request` API), not a web stream: no fetch Request, Response, body streams and their tees per call.
 */
export class UpstreamResponse {
  readonly status: number;
  readonly headers: { get(name: string): string | null };
  readonly #body: Dispatcher.ResponseData['body'];

  constructor(data: Dispatcher.ResponseData) {
    this.status = data.statusCode;
    const raw = data.headers;
    this.headers = {
      get: (name) => {
        const value = raw[name.toLowerCase()];
        return value === undefined ? null : Array.isArray(value) ? value.join(', ') : value;
      },
    };
    this.#body = data.body;
  }

  get ok(): boolean {
    return this.status >= 200 && this.status < 300;
  }

  /**
   * The body's bytes as they arrive. Leaving the loop early does not destroy the body (which would
   * close the connection): whoever stops reading calls `release()` or `cancel()`.
   */
  get body(): AsyncIterable<Uint8Array> {
    return (this.#body as Readable).iterator({ destroyOnReturn: false });
  }

  text(): Promise<string> {
    return this.#body.text();
  }

  /**
   * Done with an answer that finished (or failed) on its own: reads what is left of it, if little,
   * so that its connection goes back to the pool for the next call. Settles when it has (nobody
   * needs to wait for that).
   */
  async release(): Promise<void> {
    if (this.#body.destroyed) return;
    await this.#body.dump({ limit: DRAIN_LIMIT_BYTES }).catch(ignoreError);
  }

  /**
   * Stops reading the body and closes its connection (the caller left; the rest is not wanted).
   * undici reports an unfinished body so destroyed as an 'error' event (RequestAbortedError),
   * which nobody needs here.
   */
  cancel(): void {
    if (this.#body.destroyed) return;
    this.#body.once('error', ignoreError);
    this.#body.destroy();
  }
}

export interface PostOptions {
  headers: Record<string, string>;
  signal: AbortSignal;
  /** The error a non-2xx response is: each provider words its error bodies its own way. */
  refusal: (response: UpstreamResponse) => Promise<ProviderError>;
}

export class HttpClient {
  readonly #agent: Agent;
  readonly #totalMs: number;
  readonly #provider: string;

  constructor(provider: string, timeouts: Timeouts) {
    this.#provider = provider;
    this.#totalMs = timeouts.totalMs;
    this.#agent = new Agent({
      keepAliveTimeout: 30_000,
      connect: { timeout: timeouts.connectMs },
      headersTimeout: timeouts.firstByteMs,
      bodyTimeout: timeouts.idleMs,
    });
  }

  /**
   * POSTs JSON and returns a 2xx response. Throws the ProviderError `refusal` makes of any other
   * status, and one from errorFromException when no response arrives (unreachable, timed out).
   * Aborting `signal` rejects with its reason.
   */
  async postJson(url: string, body: unknown, { headers, signal, refusal }: PostOptions): Promise<UpstreamResponse> {
    // The total covers the body too: it is cleared once the body is read or dropped.
    const total = deadline(signal, this.#totalMs);
    let response: UpstreamResponse;
    try {
      const json = JSON.stringify(body);
      let target = new URL(url);
      for (let hops = 0; ; hops++) {
        const data = await this.#agent.request({
          origin: target.origin,
          path: `${target.pathname}${target.search}`,
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
            'user-agent': USER_AGENT,
            ...headers,
          },
          body: json,
          signal: total.signal,
        });
        const location = data.headers.location;
        if (REDIRECTS.has(data.statusCode) && typeof location === 'string') {
          await data.body.dump();
          // A loop, or a chain too long: the endpoint is as broken as one that does not answer.
          if (hops === MAX_REDIRECTS) throw new Error(`more than ${MAX_REDIRECTS} redirects`);
          const next = new URL(location, target);
          // The request carries the provider's credential: it goes nowhere but where it was sent.
          if (next.origin !== target.origin) throw this.#crossOrigin(target, next);
          target = next;
          continue;
        }
        data.body.once('close', total.clear);
        response = new UpstreamResponse(data);
        break;
      }
    } catch (error) {
      total.clear();
      if (signal.aborted) throw signal.reason;
      throw errorFromException(this.#provider, total.expired ? total.signal.reason : error, 'connect');
    }
    if (response.ok) return response;
    throw await refusal(response);
  }

  #crossOrigin(from: URL, to: URL): ProviderError {
    return new ProviderError(`${this.#provider} redirected to another origin, which is not followed`, {
      code: 'UPSTREAM_UNAVAILABLE',
      provider: this.#provider,
      retryable: true,
      upstreamMessage: `redirect from ${from.origin} to ${to.origin}`,
    });
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }
}
