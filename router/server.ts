/**
 * The router: the Hive Gateway runtime embedded in our own node:http server, so our plugins run in
 * it and we own the edge. It serves the composed supergraph (schema/supergraph.graphql) on
 * /graphql over GraphQL over HTTP (GET and POST), GraphQL over SSE and graphql-ws, subscribes to
 * subgraphs over WebSockets, and answers /healthz, /readyz and /metrics.
 */
import { createServer, type IncomingMessage } from 'node:http';
import { readFileSync } from 'node:fs';
import { Logger as HiveLogger } from '@graphql-hive/logger';
import { PinoLogWriter } from '@graphql-hive/logger/writers/pino';
import { createGatewayRuntime, getGraphQLWSOptions } from '@graphql-hive/gateway-runtime';
import httpTransport from '@graphql-mesh/transport-http';
import wsTransport from '@graphql-mesh/transport-ws';
import { parse } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Config, SubgraphName } from '../platform/config.ts';
import { ErrorCode } from '../platform/errors.ts';
import { BodyTooLargeError, drainHttpServer, listen, sendJson, serveOperationalEndpoints } from '../platform/http-server.ts';
import { InFlight } from '../platform/in-flight.ts';
import type { Logger } from '../platform/logger.ts';
import { createRegistry } from '../platform/metrics.ts';
import { REQUEST_ID_HEADER, acceptRequestId } from '../platform/request-id.ts';
import { GRAPHQL_PATH } from '../platform/subgraph-server.ts';
import { createErrorMasker, useErrorCodes } from './plugins/error-codes.ts';
import { createRouterMetrics, useRouterMetrics } from './plugins/metrics.ts';
import { useSubgraphRequestId } from './plugins/request-id.ts';
import { useGracefulStreams } from './plugins/shutdown.ts';

export const SUPERGRAPH_FILE = new URL('../schema/supergraph.graphql', import.meta.url);

export interface RouterOptions {
  config: Config;
  log: Logger;
  /** Where each subgraph listens. */
  subgraphUrls: Record<SubgraphName, string>;
  withProcessMetrics?: boolean;
}

export interface RunningRouter {
  port: number;
  url: string;
  /** Stops accepting, waits for in-flight requests and streams until `deadline`, then ends them. */
  stop(deadline: number): Promise<void>;
}

function hiveLogger(log: Logger): HiveLogger {
  return new HiveLogger({ level: log.level === 'silent' ? false : (log.level as 'info'), writers: [new PinoLogWriter(log)] });
}

function transportEntries(subgraphUrls: Record<string, string>) {
  return Object.fromEntries(
    Object.entries(subgraphUrls).map(([name, location]) => [
      name,
      { location, options: { subscriptions: { kind: 'ws', location: GRAPHQL_PATH } } },
    ]),
  );
}

export async function startRouter({ config, log, subgraphUrls, withProcessMetrics = true }: RouterOptions): Promise<RunningRouter> {
  const settings = config.router;
  const registry = createRegistry('router', withProcessMetrics);
  const metrics = createRouterMetrics(registry);
  const shuttingDown = new AbortController();
  const streams = new InFlight();
  const requests = new InFlight();

  const runtime = createGatewayRuntime({
    supergraph: parse(readFileSync(SUPERGRAPH_FILE, 'utf8')),
    transports: { http: httpTransport, ws: wsTransport },
    transportEntries: transportEntries(subgraphUrls),
    logging: hiveLogger(log.child({ component: 'gateway' })),
    graphqlEndpoint: GRAPHQL_PATH,
    landingPage: false,
    graphiql: false,
    maskedErrors: { maskError: createErrorMasker(log) },
    upstreamCancellation: true,
    executionCancellation: true,
    subgraphErrors: { errorCode: ErrorCode.DOWNSTREAM_SERVICE_ERROR },
    plugins: () => [useErrorCodes(), useRouterMetrics(metrics), useSubgraphRequestId(), useGracefulStreams(shuttingDown.signal, streams)],
  });
  // The WS handler needs the schema loaded before the first subscription arrives.
  await runtime.getSchema();

  const server = createServer((request, response) => {
    const end = requests.begin();
    response.on('close', end);
    void (async () => {
      if (await serveOperationalEndpoints(request, response, { registry, isReady: () => !shuttingDown.signal.aborted })) return;
      const declared = Number(request.headers['content-length'] ?? 0);
      if (declared > settings.maxBodyBytes) throw new BodyTooLargeError(`request body over ${settings.maxBodyBytes} bytes`);
      request.headers[REQUEST_ID_HEADER] = acceptRequestId(request.headers[REQUEST_ID_HEADER]);
      if (shuttingDown.signal.aborted) response.setHeader('connection', 'close');
      await runtime(request, response);
    })().catch((error: unknown) => {
      if (error instanceof BodyTooLargeError) {
        sendJson(response, 413, { errors: [{ message: error.message, extensions: { code: ErrorCode.BAD_USER_INPUT } }] }, { connection: 'close' });
        return;
      }
      log.error({ err: error }, 'request failed');
      if (!response.headersSent) sendJson(response, 500, { errors: [{ message: 'Internal server error', extensions: { code: ErrorCode.INTERNAL_SERVER_ERROR } }] });
      else response.destroy();
    });
  });

  const wsServer = new WebSocketServer({ server, path: GRAPHQL_PATH, maxPayload: settings.wsMaxPayloadBytes });
  const wsHandle = useServer(
    getGraphQLWSOptions(runtime, (ctx) => {
      const extra = ctx.extra as { request?: IncomingMessage; socket?: WebSocket } | undefined;
      return { req: extra?.request, socket: extra?.socket, requestId: acceptRequestId(extra?.request?.headers[REQUEST_ID_HEADER]) };
    }),
    wsServer,
  );

  const port = await listen(server, settings.host, settings.port);
  log.info({ port, path: GRAPHQL_PATH }, 'router listening');

  return {
    port,
    url: `http://${settings.host}:${port}${GRAPHQL_PATH}`,
    async stop(deadline) {
      log.info('router shutting down: no new connections; waiting for in-flight requests and streams');
      wsServer.close();
      const httpDrained = drainHttpServer(server, deadline);
      if ((await streams.whenIdle(deadline)) === 'expired') {
        log.warn({ open: streams.count }, 'shutdown deadline passed; ending open streams with SHUTTING_DOWN');
      }
      shuttingDown.abort();
      await streams.whenIdle(Date.now() + 1_000);
      await wsHandle.dispose();
      for (const client of wsServer.clients) client.close(1001, 'server shutting down');
      await httpDrained;
      await runtime.dispose();
      log.info('router stopped');
    },
  };
}
