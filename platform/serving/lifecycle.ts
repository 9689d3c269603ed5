/**
 * The one lifecycle of every modelgraph server, the router's and each subgraph's: a node:http
 * server and a WebSocket server (for graphql-ws) on one port, the work in progress counted, and a
 * stop that drains.
 *
 * Work in progress is every HTTP response (SSE streams included) until it closes, and every
 * graphql-ws operation until its `complete` has been queued on the socket, so shutdown never closes
 * a socket ahead of its last message. Stopping: end what must end first (`beforeStop`), then
 * refuse new connections, upgrades and operations
 * (`draining`) → wait for the work in progress until the deadline → if some is left, abort
 * `shutdownSignal` (open streams end with SHUTTING_DOWN), at the router answer requests that have
 * not started their response with 503, and give that one second → close WebSockets and connections → release
 * what the server holds.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { WebSocketServer } from 'ws';
import type { Logger } from '../logger.ts';
import { shuttingDownResult } from './end-on-shutdown.ts';
import {
  closeWebSockets,
  createWebSocketServer,
  listen,
  sendJson,
  sendRequestFailure,
  stopAccepting,
  type UpgradeVerdict,
} from './http-server.ts';
import { InFlight } from './in-flight.ts';

export const GRAPHQL_PATH = '/graphql';

/** How long streams get to send their SHUTTING_DOWN result once the deadline has passed. */
const LAST_WORDS_MS = 1_000;

export interface ServeOptions {
  /** Names the server in its log lines: `router`, `subgraph inference`. */
  label: string;
  host: string;
  port: number;
  wsMaxPayloadBytes: number;
  log: Logger;
  /** Answers one HTTP request; a throw is answered by `sendRequestFailure` (413, or a masked 500). */
  handle(request: IncomingMessage, response: ServerResponse): Promise<void>;
  /** Refuses a WebSocket upgrade for reasons of its own (upgrades while draining are refused already). */
  verifyUpgrade?(request: IncomingMessage): UpgradeVerdict;
  /** Serves graphql-ws on the WebSocket server; the handle is disposed when stopping. */
  webSockets(wsServer: WebSocketServer): { dispose(): void | Promise<void> };
  /** Work to end before draining starts, while everything behind this server still answers. */
  beforeStop?(deadline: number): Promise<void>;
  /** Releases what the server holds (gateway runtime, Apollo, stores), once its connections are closed. */
  release(): void | Promise<void>;
  /**
   * At the deadline, answer requests that have not started their response with 503 SHUTTING_DOWN
   * (the router: its clients retry elsewhere). A subgraph leaves them their last second instead.
   */
  refuseUnstartedAtDeadline?: boolean;
}

export interface RunningServer {
  port: number;
  url: string;
  /** Drains until `deadline` (epoch ms), then ends what is left and closes everything. Idempotent. */
  stop(deadline: number): Promise<void>;
}

/**
 * Created before the server so that what the server runs (a gateway plugin, a subscription
 * wrapper) can read `draining` and `shutdownSignal`; `serve` then starts listening.
 */
export class ServerLifecycle {
  #draining = false;
  readonly #shutdown = new AbortController();
  readonly #requests = new InFlight();
  readonly #operations = new InFlight();
  /** Per socket (graphql-ws context), its open operations and what ends each. */
  readonly #open = new WeakMap<object, Map<string, () => void>>();
  readonly #responses = new Set<ServerResponse>();

  /** True once stopping began: refuse new work, so clients go to another replica. */
  get draining(): boolean {
    return this.#draining;
  }

  /** Aborted when the grace period is over: open streams end with SHUTTING_DOWN. */
  get shutdownSignal(): AbortSignal {
    return this.#shutdown.signal;
  }

  /** Counts operation `id` of `socket` as open until `endOperation`; `onEnd` runs when it ends. */
  beginOperation(socket: object, id: string, onEnd?: () => void): void {
    const open = this.#open.get(socket) ?? new Map<string, () => void>();
    this.#open.set(socket, open);
    const end = this.#operations.begin();
    open.set(id, () => {
      onEnd?.();
      // graphql-ws sends `complete` right after onComplete returns; end once that is queued.
      setImmediate(end);
    });
  }

  /** How many operations `socket` has open. */
  openOperations(socket: object): number {
    return this.#open.get(socket)?.size ?? 0;
  }

  /** Ends operation `id` of `socket`, if it is open (at most once). */
  endOperation(socket: object, id: string): void {
    const end = this.#open.get(socket)?.get(id);
    if (!end) return;
    this.#open.get(socket)?.delete(id);
    end();
  }

  /** Ends every open operation of a socket that closed. */
  endOperations(socket: object): void {
    for (const id of [...(this.#open.get(socket)?.keys() ?? [])]) this.endOperation(socket, id);
  }

  async serve(options: ServeOptions): Promise<RunningServer> {
    const { label, log } = options;
    const server = createServer((request, response) => {
      const end = this.#requests.begin();
      this.#responses.add(response);
      response.on('close', () => {
        this.#responses.delete(response);
        end();
      });
      options.handle(request, response).catch((error: unknown) => sendRequestFailure(response, error, log));
    });
    const wsServer = createWebSocketServer(server, GRAPHQL_PATH, options.wsMaxPayloadBytes, (request) =>
      this.#draining
        ? { accept: false, status: 503, reason: 'server is shutting down' }
        : (options.verifyUpgrade?.(request) ?? { accept: true }),
    );
    const webSockets = options.webSockets(wsServer);
    let port: number;
    try {
      port = await listen(server, options.host, options.port);
    } catch (error) {
      // A taken port must not leave what the server holds behind.
      await webSockets.dispose();
      await options.release();
      throw error;
    }
    log.info({ port, path: GRAPHQL_PATH }, `${label} listening`);

    const stop = async (deadline: number) => {
      await options
        .beforeStop?.(deadline)
        .catch((error: unknown) => log.error({ err: error }, `${label}: ending work before the drain failed`));
      this.#draining = true;
      log.info(this.#counts(), `${label} draining: no new connections; in-flight work may finish`);
      const http = stopAccepting(server);
      if ((await this.#whenIdle(deadline)) === 'expired') {
        log.warn({ server: label, ...this.#counts() }, 'shutdown deadline passed; ending open streams with SHUTTING_DOWN');
        this.#shutdown.abort();
        if (options.refuseUnstartedAtDeadline) this.#answerUnstarted();
        await this.#whenIdle(Date.now() + LAST_WORDS_MS);
      }
      await closeWebSockets(wsServer, () => webSockets.dispose());
      await http.closeAll();
      await options.release();
      log.info(`${label} stopped`);
    };
    let stopped: Promise<void> | undefined;
    return {
      port,
      url: `http://${options.host}:${port}${GRAPHQL_PATH}`,
      stop(deadline) {
        stopped ??= stop(deadline);
        return stopped;
      },
    };
  }

  #counts() {
    return { requests: this.#requests.count, wsOperations: this.#operations.count };
  }

  async #whenIdle(deadline: number): Promise<'idle' | 'expired'> {
    const outcomes = await Promise.all([this.#requests.whenIdle(deadline), this.#operations.whenIdle(deadline)]);
    return outcomes.includes('expired') ? 'expired' : 'idle';
  }

  /** At the end of the grace period, answers requests that have not started their response. */
  #answerUnstarted(): void {
    const body = { errors: shuttingDownResult().errors!.map((error) => error.toJSON()) };
    for (const response of this.#responses) {
      if (response.headersSent) continue;
      // The handler may still try to write to it; that must not surface as an error.
      response.on('error', () => undefined);
      sendJson(response, 503, body, { connection: 'close', 'retry-after': '1' });
    }
  }
}
