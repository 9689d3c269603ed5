/**
 * The one HTTP client every adapter uses: an undici keep-alive pool per provider, with the four
 * timeouts of the provider config. Connect and first-byte timeouts are undici's; the idle timeout
 * is undici's body timeout (the longest silence between two chunks); the total deadline is an
 * AbortSignal combined with the caller's.
 */
import { Agent, fetch, type Response } from 'undici';
import { type ProviderError, errorFromException } from './errors.ts';

export interface Timeouts {
  connectMs: number;
  firstByteMs: number;
  idleMs: number;
  totalMs: number;
}

export interface PostOptions {
  headers: Record<string, string>;
  signal: AbortSignal;
  /** The error a non-2xx response is: each provider words its error bodies its own way. */
  refusal: (response: Response) => Promise<ProviderError>;
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
  async postJson(url: string, body: unknown, { headers, signal, refusal }: PostOptions): Promise<Response> {
    const deadline = AbortSignal.any([signal, AbortSignal.timeout(this.#totalMs)]);
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
        body: JSON.stringify(body),
        signal: deadline,
        dispatcher: this.#agent,
        // Providers answer, they do not redirect; and only without redirects does undici's fetch
        // send the request as built instead of cloning it (a tee of the body stream per call).
        redirect: 'error',
      });
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw errorFromException(this.#provider, error, 'connect');
    }
    if (response.ok) return response;
    throw await refusal(response);
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }
}
