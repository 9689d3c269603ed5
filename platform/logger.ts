/**
 * pino JSON logs. Every line of a request carries its `requestId`, the same one in the router and
 * in the subgraph that served it. Credentials are redacted by path wherever they appear.
 */
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
}

export function createLogger({ level, name, destination }: LoggerSettings): Logger {
  const options: LoggerOptions = {
    level,
    name,
    base: { pid: process.pid },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  // Synchronous writes to standard output: every line, the last ones before exit included, lands.
  return pino(options, destination ?? pino.destination({ dest: 1, sync: true }));
}
