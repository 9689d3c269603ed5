/**
 * pino JSON logs. Every line of a request carries its `requestId`, the same one in the router and
 * in the subgraph that served it. Credentials are redacted by path wherever they appear.
 *
 * Lines go to standard output without ever making the process wait for its reader: a log shipper
 * that stalls, or a full pipe, must not stop requests and streams. What the reader has not taken
 * yet is held up to `LOG_BACKLOG_BYTES`; past that, lines are dropped and counted (a metric, and a
 * warning once the reader catches up), and `flushLogs()` lets the last lines land at shutdown.
 */
import type { Writable } from 'node:stream';
import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

export const REDACTED_PATHS = [
  'authorization',
  'apiKey',
  '*.authorization',
  '*.apiKey',
  '*.headers.authorization',
  '*.headers["x-api-key"]',
  '*.headers.cookie',
  'headers.authorization',
  'headers["x-api-key"]',
  'headers.cookie',
  // The router's identity tokens to subgraphs (a header over HTTP, an extension over WebSockets).
  '*.headers["x-modelgraph-identity"]',
  'headers["x-modelgraph-identity"]',
  'extensions.identity',
  '*.extensions.identity',
  '*.*.extensions.identity',
  'connectionParams',
  '*.connectionParams',
];

export interface LoggerSettings {
  level: LoggerOptions['level'];
  /** The component: router, subgraph name, cli. */
  name: string;
  /** Where lines go; standard output by default. Tests pass a stream to read them back. */
  destination?: pino.DestinationStream;
  /** Standard output's backlog before lines are dropped (`log.backlogBytes`). */
  backlogBytes?: number;
}

/** What standard output may hold for a reader that is behind before lines are dropped (default). */
export const LOG_BACKLOG_BYTES = 8 * 1024 * 1024;

/**
 * A pino destination over a stream that never blocks: a line is written while the stream holds
 * less than `backlogBytes` for its reader, and dropped (counted) otherwise. Over a pipe, Node's
 * standard output is asynchronous on POSIX; files and terminals are written synchronously by Node
 * and are not where a reader stalls.
 */
export class BoundedLogDestination {
  readonly #out: Writable;
  readonly #backlogBytes: number;
  /** Lines dropped since the start, and since the last warning about them. */
  dropped = 0;
  #unreported = 0;
  #reporting: NodeJS.Timeout | undefined;

  /** Set when the reader went away (EPIPE): every line is dropped from then on. */
  #broken = false;

  constructor(out: Writable, backlogBytes = LOG_BACKLOG_BYTES) {
    this.#out = out;
    this.#backlogBytes = backlogBytes;
    // A reader that went away must not crash the process: its lines are counted as dropped.
    out.on('error', () => {
      this.#broken = true;
    });
  }

  write(line: string): void {
    if (this.#broken || !this.#fits(line.length)) {
      this.dropped += 1;
      this.#unreported += 1;
      this.#reportLater();
      return;
    }
    this.#report();
    this.#out.write(line);
  }

  #fits(bytes: number): boolean {
    return this.#out.writableLength + bytes <= this.#backlogBytes;
  }

  /** Says how many lines were dropped, once there is room to say it. */
  #report(): void {
    if (this.#unreported === 0) return;
    const line = `${JSON.stringify({ level: 40, time: new Date().toISOString(), pid: process.pid, dropped: this.#unreported, msg: 'log lines dropped: the reader of standard output fell behind' })}\n`;
    if (!this.#fits(line.length)) {
      this.#reportLater();
      return;
    }
    this.#unreported = 0;
    this.#out.write(line);
  }

  /** Checks back every second (without keeping the process alive), in case no other line comes. */
  #reportLater(): void {
    if (this.#reporting) return;
    this.#reporting = setTimeout(() => {
      this.#reporting = undefined;
      this.#report();
    }, REPORT_EVERY_MS);
    this.#reporting.unref();
  }

  /**
   * Calls back once what is held has been taken by the reader, or after `FLUSH_WAIT_MS` (pino's
   * `logger.flush(cb)` calls this).
   */
  flush(callback: () => void = () => undefined): void {
    // Polled: 'drain' only comes after a write was refused, which a small backlog never is.
    const until = Date.now() + FLUSH_WAIT_MS;
    const check = () => {
      if (this.#broken || this.#out.writableLength === 0 || Date.now() >= until) callback();
      else setTimeout(check, 10);
    };
    check();
  }
}

/** The longest a stop waits for a slow reader to take the last lines. */
const FLUSH_WAIT_MS = 2_000;
const REPORT_EVERY_MS = 1_000;

let standardOutput: BoundedLogDestination | undefined;

/** The process's standard-output destination (made on first use). */
function stdoutDestination(backlogBytes?: number): BoundedLogDestination {
  standardOutput ??= new BoundedLogDestination(process.stdout, backlogBytes);
  return standardOutput;
}

/** Log lines dropped in this process because the reader of standard output fell behind. */
export const droppedLogLines = (): number => standardOutput?.dropped ?? 0;

/** Waits (a little) for standard output's reader to take the lines still held: call before exit. */
export const flushLogs = (): Promise<void> => new Promise((resolve) => (standardOutput ? standardOutput.flush(resolve) : resolve()));

export function createLogger({ level, name, destination, backlogBytes }: LoggerSettings): Logger {
  const options: LoggerOptions = {
    level,
    name,
    base: { pid: process.pid },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return pino(options, destination ?? stdoutDestination(backlogBytes));
}
