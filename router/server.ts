/**
 * The router: the Hive Gateway runtime embedded in our own node:http server, so our plugins run in
 * it and we own the edge. It serves the composed supergraph (schema/supergraph.graphql) on
 * /graphql over GraphQL over HTTP (GET and POST), GraphQL over SSE and graphql-ws, subscribes to
 * subgraphs over WebSockets, and answers /healthz, /readyz and /metrics.
 *
 * Every request is authenticated here before the runtime sees it (router/authenticate.ts): over
 * HTTP a refusal is a 401; a WebSocket authenticates in `connection_init` and is closed with 4403
 * on a bad credential, and later when its key is revoked or its credential expires.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import { Logger as HiveLogger } from '@graphql-hive/logger';
import { PinoLogWriter } from '@graphql-hive/logger/writers/pino';
import { createGatewayRuntime, getGraphQLWSOptions } from '@graphql-hive/gateway-runtime';
import httpTransport from '@graphql-mesh/transport-http';
import { parse } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import type { WebSocket } from 'ws';
import type { AccessServices } from '../platform/access/access-services.ts';
import type { Config, SubgraphName } from '../platform/config.ts';
import { shuttingDownResult } from '../platform/serving/end-on-shutdown.ts';
import { ErrorCode } from '../platform/errors.ts';
import { DELEGATION_HEADER, type IdentityTokens } from '../platform/identity/identity-token.ts';
import type { Principal } from '../platform/identity/principal.ts';
import {
  BodyTooLargeError,
  closeWebSockets,
  createWebSocketServer,
  listen,
  readBody,
  sendJson,
  sendRequestFailure,
  serveOperationalEndpoints,
  stopAccepting,
  type UpgradeVerdict,
} from '../platform/serving/http-server.ts';
import { InFlight } from '../platform/serving/in-flight.ts';
import type { Logger } from '../platform/logger.ts';
import { createRegistry } from '../platform/metrics.ts';
import { MemoryRateLimiter, RedisRateLimiter } from './rate-limiter.ts';
import { createRedis, redisAnswers } from '../platform/redis/client.ts';
import { REQUEST_ID_HEADER, acceptRequestId } from '../platform/serving/request-id.ts';
import { GRAPHQL_PATH } from '../platform/serving/subgraph-server.ts';
import { Authenticator, credentialFromConnectionParams, credentialFromHeaders, withExpiry, type AuthOutcome } from './authenticate.ts';
import { CredentialWatch } from './credential-watch.ts';
import { corsOptions, originAllowed } from './origin-policy.ts';
import { useDemandControl } from './plugins/demand-control.ts';
import { useEdgeLimits } from './plugins/edge-limits.ts';
import { useRateLimits } from './plugins/rate-limits.ts';
import { usePropagatedIdentity, type CallerContext } from './plugins/identity.ts';
import { tooManySubscriptions, useSubscriptionCaps } from './plugins/subscription-caps.ts';
import { createErrorMasker, useErrorCodes } from './plugins/error-codes.ts';
import { createRouterMetrics, useRouterMetrics } from './plugins/metrics.ts';
import { useSubgraphRequestId } from './plugins/request-id.ts';
import { useGracefulStreams } from './plugins/shutdown.ts';
import { useSubgraphExtensions } from './plugins/subgraph-extensions.ts';
import { createSubgraphWsTransport } from './subgraph-ws-transport.ts';

export const SUPERGRAPH_FILE = new URL('../schema/supergraph.graphql', import.meta.url);

export interface RouterOptions {
  config: Config;
  log: Logger;
  /** Where each subgraph listens. */
  subgraphUrls: Record<SubgraphName, string>;
  /** Signs the identity tokens subgraphs require. */
  identity: IdentityTokens;
  /** Where API keys are looked up and authentication failures audited. */
  access: AccessServices;
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

/**
 * The gateway runtime is built with `disposeOnProcessTerminate: true` (set by gateway-runtime, not
 * configurable), so @whatwg-node/server disposes it on SIGTERM/SIGINT at once, closing the
 * subgraph connections under the very streams we are draining. We own shutdown (`stop` disposes
 * the runtime last), so we detach those handlers once the runtime has registered them.
 */
function detachRuntimeTerminateHandlers(): void {
  for (const event of ['SIGTERM', 'SIGINT', 'exit'] as const) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (listener.name === 'terminateHandler') process.removeListener(event, listener);
    }
  }
}

function transportEntries(subgraphUrls: Record<string, string>) {
  return Object.fromEntries(
    Object.entries(subgraphUrls).map(([name, location]) => [
      name,
      { location, options: { subscriptions: { kind: 'ws', location: GRAPHQL_PATH } } },
    ]),
  );
}

const FORBIDDEN_ORIGIN = 'this browser origin may not use the API (router.allowedOrigins)';

/** WebSocket close code for a refused or withdrawn credential (graphql-ws CloseCode.Forbidden). */
const CLOSE_FORBIDDEN = 4403;

function unauthenticatedBody(message: string, requestId: string | undefined) {
  return { errors: [{ message, extensions: { code: ErrorCode.UNAUTHENTICATED, ...(requestId && { requestId }) } }] };
}

export async function startRouter({
  config,
  log,
  subgraphUrls,
  identity,
  access,
  withProcessMetrics = true,
}: RouterOptions): Promise<RunningRouter> {
  const settings = config.router;
  const { limits } = settings;
  const registry = createRegistry('router', withProcessMetrics);
  const metrics = createRouterMetrics(registry);
  const auth = new Authenticator(config.access, access.store, access.audit, log.child({ component: 'auth' }), (reason) =>
    metrics.authFailures.inc({ reason }),
  );
  if (config.access.anonymous) {
    log.warn(
      { tenant: config.access.anonymous.tenant, scopes: config.access.anonymous.scopes },
      'ANONYMOUS ACCESS IS ON: requests without a credential are served (access.anonymous in the config). Never expose this router beyond a trusted network.',
    );
  }
  let draining = false;
  const shuttingDown = new AbortController();
  /** HTTP responses in progress, SSE streams included. */
  const requests = new InFlight();
  /** graphql-ws operations in progress. */
  const wsOperations = new InFlight();

  const redis = config.redis.url ? createRedis(config.redis.url, log.child({ component: 'redis' })) : undefined;
  const limiter = redis ? new RedisRateLimiter(redis) : new MemoryRateLimiter();
  const runtime = createGatewayRuntime({
    supergraph: parse(readFileSync(SUPERGRAPH_FILE, 'utf8')),
    transports: { http: httpTransport, ws: createSubgraphWsTransport(log.child({ component: 'subgraph-ws' }), identity) },
    transportEntries: transportEntries(subgraphUrls),
    logging: hiveLogger(log.child({ component: 'gateway' })),
    graphqlEndpoint: GRAPHQL_PATH,
    landingPage: false,
    graphiql: false,
    cors: corsOptions(settings.allowedOrigins, limits.csrfRequestHeaders),
    maskedErrors: { maskError: createErrorMasker(log) },
    upstreamCancellation: true,
    executionCancellation: true,
    ...(limits.maxBatchSize > 1 && { batching: { limit: limits.maxBatchSize } }),
    ...(!limits.introspection && { disableIntrospection: { disableIf: () => true } }),
    csrfPrevention: { requestHeaders: limits.csrfRequestHeaders },
    subgraphErrors: { errorCode: ErrorCode.DOWNSTREAM_SERVICE_ERROR },
    plugins: () => [
      ...useEdgeLimits(limits),
      useErrorCodes({ suggestions: limits.fieldSuggestions }),
      useRouterMetrics(metrics),
      useSubscriptionCaps(limits.maxSubscriptionsPerPrincipal),
      useDemandControl(settings.demandControl, () => metrics.rejections.inc({ reason: 'cost', field: '' })),
      useRateLimits(limiter, config.redis.keyPrefix, settings.rateLimits, log.child({ component: 'rate-limits' }), (field) =>
        metrics.rejections.inc({ reason: 'rate_limited', field }),
      ),
      usePropagatedIdentity(identity),
      useSubgraphRequestId(),
      useSubgraphExtensions(),
      useGracefulStreams(shuttingDown.signal),
    ],
  });
  // The WS handler needs the schema loaded before the first subscription arrives.
  await runtime.getSchema();
  detachRuntimeTerminateHandlers();

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const isReady = async () => !draining && (!redis || (await redisAnswers(redis)));
    if (await serveOperationalEndpoints(request, response, { registry, isReady })) return;
    if (!originAllowed(request, settings.allowedOrigins)) {
      sendJson(response, 403, { errors: [{ message: FORBIDDEN_ORIGIN, extensions: { code: ErrorCode.FORBIDDEN } }] });
      return;
    }
    const requestId = acceptRequestId(request.headers[REQUEST_ID_HEADER]);
    request.headers[REQUEST_ID_HEADER] = requestId;
    const declared = request.headers['content-length'];
    if (declared !== undefined && Number(declared) > settings.maxBodyBytes) {
      throw new BodyTooLargeError(`request body over ${settings.maxBodyBytes} bytes`);
    }
    const clientAddress = request.socket.remoteAddress ?? null;
    // CORS preflights carry no credential; the runtime answers them and runs nothing.
    let caller: CallerContext = { clientAddress };
    if (request.method !== 'OPTIONS') {
      const changesBefore = auth.changeCount();
      const delegation = request.headers[DELEGATION_HEADER];
      const presenter = { sourceAddress: clientAddress };
      const checking =
        typeof delegation === 'string'
          ? auth.authenticateDelegation(delegation, identity, presenter)
          : auth.authenticate(credentialFromHeaders(request.headers), presenter);
      const outcome = await checking.catch((error: unknown) => {
        // The key store is unreachable: neither let the caller in nor call its credential bad.
        log.error({ err: error }, 'cannot check credentials: the access store is unreachable');
        return undefined;
      });
      if (!outcome) {
        sendJson(
          response,
          503,
          {
            errors: [
              { message: 'credentials cannot be checked right now; retry', extensions: { code: ErrorCode.SERVICE_UNAVAILABLE, requestId } },
            ],
          },
          { 'retry-after': '1' },
        );
        return;
      }
      if (!outcome.ok) {
        sendJson(response, 401, unauthenticatedBody(outcome.message, requestId), { 'www-authenticate': 'Bearer realm="modelgraph"' });
        return;
      }
      caller = { principal: withExpiry(outcome.principal, outcome.expiresAt), clientAddress };
      watch.hold(outcome, response, { end: () => response.destroy() }, changesBefore);
    }
    if (declared === undefined && request.method === 'POST') {
      // A chunked body has no declared size: read (and bound) it ourselves; the runtime takes it
      // from `body`. A declared size within the limit is enforced by Node's parser as it reads.
      const body = await readBody(request, settings.maxBodyBytes);
      if (body.length > 0) (request as IncomingMessage & { body?: Buffer }).body = body;
    }
    if (draining) response.setHeader('connection', 'close');
    await runtime(request, response, caller);
  }

  const watch = new CredentialWatch(auth, log.child({ component: 'auth' }), Math.max(config.access.keyCacheSeconds, 1) * 1000);

  const openResponses = new Set<ServerResponse>();
  const server = createServer((request, response) => {
    const end = requests.begin();
    openResponses.add(response);
    response.on('close', () => {
      openResponses.delete(response);
      end();
    });
    handle(request, response).catch((error: unknown) => sendRequestFailure(response, error, log));
  });

  /** At the end of the grace period, answers requests that have not started their response. */
  function answerUnfinishedWithShutdown(): void {
    for (const response of openResponses) {
      if (response.headersSent) continue;
      // The runtime may still try to write to it; that must not surface as an error.
      response.on('error', () => undefined);
      sendJson(
        response,
        503,
        { errors: shuttingDownResult().errors!.map((error) => error.toJSON()) },
        { connection: 'close', 'retry-after': '1' },
      );
    }
  }

  const verifyUpgrade = (request: IncomingMessage): UpgradeVerdict => {
    if (draining) return { accept: false, status: 503, reason: 'server is shutting down' };
    if (!originAllowed(request, settings.allowedOrigins)) return { accept: false, status: 403, reason: FORBIDDEN_ORIGIN };
    return { accept: true };
  };
  const wsServer = createWebSocketServer(server, GRAPHQL_PATH, settings.wsMaxPayloadBytes, verifyUpgrade);
  interface SocketExtra {
    request?: IncomingMessage;
    socket?: WebSocket;
    principal?: Principal;
  }
  const wsOptions = getGraphQLWSOptions(runtime, (ctx) => {
    const extra = ctx.extra as SocketExtra | undefined;
    const caller: CallerContext = { principal: extra?.principal, clientAddress: extra?.request?.socket.remoteAddress ?? null };
    return {
      req: extra?.request,
      socket: extra?.socket,
      requestId: acceptRequestId(extra?.request?.headers[REQUEST_ID_HEADER]),
      ...caller,
    };
  });
  /** Authenticates a socket from its connection_init payload (or, for non-browser clients, its upgrade headers). */
  async function authenticateSocket(extra: SocketExtra, params: Readonly<Record<string, unknown>> | undefined): Promise<boolean> {
    const credential = credentialFromConnectionParams(params) ?? (extra.request ? credentialFromHeaders(extra.request.headers) : undefined);
    let outcome: AuthOutcome;
    const changesBefore = auth.changeCount();
    try {
      outcome = await auth.authenticate(credential, { sourceAddress: extra.request?.socket.remoteAddress ?? null });
    } catch (error) {
      // The key store is unreachable: "try again later", not "forbidden".
      log.error({ err: error }, 'cannot check credentials: the access store is unreachable');
      extra.socket?.close(1013, 'credentials cannot be checked right now; retry');
      return false;
    }
    if (!outcome.ok || !extra.socket) return false;
    const socket = extra.socket;
    extra.principal = withExpiry(outcome.principal, outcome.expiresAt);
    watch.hold(
      outcome,
      socket,
      {
        end: () => socket.close(CLOSE_FORBIDDEN, 'Forbidden: credential withdrawn'),
        // The socket's next operations run with the key's new grant.
        refresh: (principal) => {
          extra.principal = principal;
        },
      },
      changesBefore,
    );
    return true;
  }
  // Count operations per socket until graphql-ws has sent their `complete`, so that shutdown
  // closes a socket only after its last message went out.
  const openOperations = new WeakMap<object, Map<string, () => void>>();
  const endOperation = (ctx: object, id: string) => {
    const end = openOperations.get(ctx)?.get(id);
    openOperations.get(ctx)?.delete(id);
    // graphql-ws sends `complete` right after onComplete returns; end once that is queued.
    if (end) setImmediate(end);
  };
  const wsHandle = useServer(
    {
      ...wsOptions,
      connectionInitWaitTimeout: limits.connectionInitTimeoutMs,
      onConnect: (ctx) => authenticateSocket(ctx.extra as SocketExtra, ctx.connectionParams),
      onSubscribe: (ctx, id, payload) => {
        // While draining, new operations on open sockets are refused, so they go elsewhere.
        if (draining) return shuttingDownResult().errors;
        const open = openOperations.get(ctx) ?? new Map<string, () => void>();
        if (open.size >= limits.maxSubscriptionsPerConnection)
          return [tooManySubscriptions('connection', limits.maxSubscriptionsPerConnection)];
        openOperations.set(ctx, open.set(id, wsOperations.begin()));
        return wsOptions.onSubscribe!(ctx, id, payload);
      },
      onComplete: (ctx, id) => endOperation(ctx, id),
      onClose: (ctx) => {
        for (const id of openOperations.get(ctx)?.keys() ?? []) endOperation(ctx, id);
      },
    },
    wsServer,
  );

  const port = await listen(server, settings.host, settings.port);
  log.info({ port, path: GRAPHQL_PATH }, 'router listening');

  let stopped: Promise<void> | undefined;
  return {
    port,
    url: `http://${settings.host}:${port}${GRAPHQL_PATH}`,
    stop(deadline) {
      stopped ??= stop(deadline);
      return stopped;
    },
  };

  async function stop(deadline: number): Promise<void> {
    draining = true;
    log.info(
      { requests: requests.count, wsOperations: wsOperations.count },
      'router draining: no new connections; in-flight work may finish',
    );
    const http = stopAccepting(server);
    const outcomes = await Promise.all([requests.whenIdle(deadline), wsOperations.whenIdle(deadline)]);
    if (outcomes.includes('expired')) {
      log.warn(
        { requests: requests.count, wsOperations: wsOperations.count },
        'shutdown deadline passed; ending open streams with SHUTTING_DOWN',
      );
      shuttingDown.abort();
      answerUnfinishedWithShutdown();
      const lastWords = Date.now() + 1_000;
      await Promise.all([requests.whenIdle(lastWords), wsOperations.whenIdle(lastWords)]);
    }
    await closeWebSockets(wsServer, () => wsHandle.dispose());
    await http.closeAll();
    await runtime.dispose();
    watch.close();
    auth.close();
    redis?.disconnect();
    log.info('router stopped');
  }
}
