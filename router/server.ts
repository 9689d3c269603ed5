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
import type { IncomingMessage, ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import { Logger as HiveLogger } from '@graphql-hive/logger';
import { PinoLogWriter } from '@graphql-hive/logger/writers/pino';
import { createGatewayRuntime, getGraphQLWSOptions, type GatewayRuntime } from '@graphql-hive/gateway-runtime';
import httpTransport from '@graphql-mesh/transport-http';
import { parse, type ExecutionResult, type FormattedExecutionResult, type GraphQLError } from 'graphql';
import type { ConnectionInitMessage, ServerOptions } from 'graphql-ws';
import { useServer, type Extra } from 'graphql-ws/use/ws';
import type { RedisClient } from '../platform/redis/client.ts';
import type { Registry } from 'prom-client';
import type { WebSocket } from 'ws';
import type { AccessServices } from '../platform/access/access-services.ts';
import type { Config, SubgraphName } from '../platform/config.ts';
import { shuttingDownResult } from '../platform/serving/end-on-shutdown.ts';
import { ErrorCode } from '../platform/errors.ts';
import { DELEGATION_HEADER, type IdentityTokens } from '../platform/identity/identity-token.ts';
import type { Principal } from '../platform/identity/principal.ts';
import { BodyTooLargeError, readBody, sendJson, serveOperationalEndpoints } from '../platform/serving/http-server.ts';
import type { Logger } from '../platform/logger.ts';
import { createRegistry } from '../platform/metrics.ts';
import { type RestDoors, type RestCaller, createRestDoors, isRestPath } from './rest/doors.ts';
import { restFormatOf, sendRestError } from './rest/errors.ts';
import { MemoryRateLimiter, RedisRateLimiter, type RateLimiter } from './rate-limiter.ts';
import { createRedis, redisAnswers, redisConfigured } from '../platform/redis/client.ts';
import { REQUEST_ID_HEADER, acceptRequestId } from '../platform/serving/request-id.ts';
import { MAX_JSON_DEPTH, nestsDeeperThan } from '../platform/serving/json-depth.ts';
import { GRAPHQL_PATH, ServerLifecycle, type RunningServer } from '../platform/serving/lifecycle.ts';
import { Authenticator, credentialFromConnectionParams, credentialFromHeaders, withExpiry, type AuthOutcome } from './authenticate.ts';
import { CredentialWatch } from './credential-watch.ts';
import { corsOptions, originAllowed, restCorsHeaders } from './origin-policy.ts';
import { Admission, useAdmission } from './plugins/admission.ts';
import { useConcurrencyLimits } from './plugins/concurrency-limits.ts';
import { MemoryConcurrencyLimiter, RedisConcurrencyLimiter, type ConcurrencyLimiter } from './concurrency-limiter.ts';
import { useDemandControl } from './plugins/demand-control.ts';
import { useEdgeLimits } from './plugins/edge-limits.ts';
import { useRateLimits } from './plugins/rate-limits.ts';
import { usePropagatedIdentity, type CallerContext } from './plugins/identity.ts';
import { tooManySubscriptions, useSubscriptionCaps } from './plugins/subscription-caps.ts';
import { createErrorMasker, useErrorCodes } from './plugins/error-codes.ts';
import { createRouterMetrics, useRouterMetrics, type RouterMetrics } from './plugins/metrics.ts';
import { useSubgraphRequestId } from './plugins/request-id.ts';
import { useGracefulStreams } from './plugins/shutdown.ts';
import { useInProcessShortcut } from './plugins/in-process-shortcut.ts';
import { useSubgraphExtensions } from './plugins/subgraph-extensions.ts';
import { createSubgraphWsTransport } from './subgraph-ws-transport.ts';
import { IN_PROCESS_KIND, createInProcessTransport, type InProcessTransport } from './in-process-transport.ts';
import type { LocalSubgraph } from '../platform/serving/in-process.ts';

export const SUPERGRAPH_FILE = new URL('../schema/supergraph.graphql', import.meta.url);

export interface RouterOptions {
  config: Config;
  log: Logger;
  /** Where each subgraph listens. */
  subgraphUrls: Record<SubgraphName, string>;
  /** Subgraphs running in this process, called without a network hop (router.inProcessSubgraphs). */
  localSubgraphs?: readonly LocalSubgraph[];
  /** Signs the identity tokens subgraphs require. */
  identity: IdentityTokens;
  /** Where API keys are looked up and authentication failures audited. */
  access: AccessServices;
  withProcessMetrics?: boolean;
  /** What else /readyz waits on in this process (the in-process subgraphs' usage outbox). */
  ready?: () => boolean;
}

/** Stopping stops accepting, waits for in-flight requests and streams until the deadline, then ends them. */
export type RunningRouter = RunningServer;

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

function transportEntries(subgraphUrls: Record<string, string>, local: ReadonlySet<string>) {
  return Object.fromEntries(
    Object.entries(subgraphUrls).map(([name, location]) => [
      name,
      local.has(name)
        ? { kind: IN_PROCESS_KIND, location }
        : { location, options: { subscriptions: { kind: 'ws', location: GRAPHQL_PATH } } },
    ]),
  );
}

const FORBIDDEN_ORIGIN = 'this browser origin may not use the API (router.allowedOrigins)';

/** WebSocket close code for a refused or withdrawn credential (graphql-ws CloseCode.Forbidden). */
const CLOSE_FORBIDDEN = 4403;

function unauthenticatedBody(message: string, requestId: string | undefined) {
  return { errors: [{ message, extensions: { code: ErrorCode.UNAUTHENTICATED, ...(requestId && { requestId }) } }] };
}

/**
 * A JSON request body as the runtime takes it pre-parsed: a non-empty object or array. That is what
 * @whatwg-node/server treats as a parsed body (`Object.keys(body).length > 0`); anything else,
 * malformed JSON included, goes to the runtime as bytes, which answers it with its coded 400.
 */
function parsedJsonBody(request: IncomingMessage, body: Buffer): object | undefined {
  if (!request.headers['content-type']?.includes('json')) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  return typeof parsed === 'object' && parsed !== null && Object.keys(parsed).length > 0 ? parsed : undefined;
}

/**
 * Refuses a request before it runs: in its REST door's error format when `restPath` is set, else
 * as a GraphQL error body.
 */
function refuseRequest(
  response: ServerResponse,
  restPath: string | undefined,
  requestId: string,
  { status, code, message, headers }: { status: number; code: ErrorCode; message: string; headers: Record<string, string> },
): void {
  // A `Retry-After` is also said in the error, as every retryable refusal does (`retryAfterMs`).
  const retryAfter = headers['retry-after'];
  const retry = retryAfter ? { retryAfterMs: Number(retryAfter) * 1000 } : {};
  if (restPath === undefined) {
    sendJson(response, status, { errors: [{ message, extensions: { code, ...retry, requestId } }] }, headers);
    return;
  }
  sendRestError(response, restFormatOf(restPath), { code, message, ...retry }, requestId, status);
}

/** A request to a REST door, authenticated: its JSON body read and parsed, then answered. */
async function serveRest(
  { rest, config }: RouterParts,
  request: IncomingMessage,
  response: ServerResponse,
  caller: RestCaller,
  refuse: (status: number, code: ErrorCode, message: string) => void,
): Promise<void> {
  let body: unknown;
  if (request.method === 'POST') {
    let raw: Buffer;
    try {
      raw = await readBody(request, config.router.maxBodyBytes);
    } catch (error) {
      if (error instanceof BodyTooLargeError) {
        response.setHeader('connection', 'close');
        return refuse(413, ErrorCode.BAD_USER_INPUT, error.message);
      }
      throw error;
    }
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      return refuse(400, ErrorCode.BAD_USER_INPUT, 'We could not parse the JSON body of your request.');
    }
    if (nestsDeeperThan(body)) return refuse(400, ErrorCode.BAD_USER_INPUT, `The JSON body nests more than ${MAX_JSON_DEPTH} levels.`);
  }
  await rest.handle(request, response, body, caller);
}

/** What the router's HTTP and WebSocket handlers share. */
interface RouterParts {
  config: Config;
  log: Logger;
  identity: IdentityTokens;
  auth: Authenticator;
  watch: CredentialWatch;
  runtime: GatewayRuntime;
  lifecycle: ServerLifecycle;
  registry: Registry;
  redis: RedisClient | undefined;
  rest: RestDoors;
  ready: () => boolean;
}

function createRuntime(
  {
    config,
    log,
    subgraphUrls,
    localSubgraphs = [],
    identity,
  }: Pick<RouterOptions, 'config' | 'log' | 'subgraphUrls' | 'localSubgraphs' | 'identity'>,
  metrics: RouterMetrics,
  { rates, concurrency }: { rates: RateLimiter; concurrency: ConcurrencyLimiter },
  shutdownSignal: AbortSignal,
  inProcess: InProcessTransport,
): GatewayRuntime {
  const settings = config.router;
  const { limits } = settings;
  const local = new Set<string>(localSubgraphs.map((subgraph) => subgraph.name));
  const supergraph = parse(readFileSync(SUPERGRAPH_FILE, 'utf8'));
  const admission = useAdmission(
    new Admission(settings.admission, (kind) =>
      log.warn({ kind }, 'an admission slot was held for over 10 minutes by an operation that never ended; taken back'),
    ),
    (kind) => metrics.rejections.inc({ reason: 'overloaded', field: kind }),
  );
  const running = useConcurrencyLimits(concurrency, {
    keyPrefix: config.redis.keyPrefix,
    tenants: config.metering.tenants,
    failMode: settings.concurrencyFailMode,
    log: log.child({ component: 'concurrency-limits' }),
    onRefused: (scope) => metrics.rejections.inc({ reason: 'concurrency', field: scope }),
    onDegraded: (decision) => metrics.degradedDecisions.inc({ limit: 'concurrency', decision }),
  });
  return createGatewayRuntime({
    supergraph,
    transports: {
      http: httpTransport,
      ws: createSubgraphWsTransport(log.child({ component: 'subgraph-ws' }), identity),
      [IN_PROCESS_KIND]: inProcess,
    },
    transportEntries: transportEntries(subgraphUrls, local),
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
      // Before every other policy: under overload a refusal must cost next to nothing.
      admission.gate,
      running.gate,
      useSubscriptionCaps(limits.maxSubscriptionsPerPrincipal),
      useDemandControl(settings.demandControl, () => metrics.rejections.inc({ reason: 'cost', field: '' })),
      useRateLimits(rates, {
        keyPrefix: config.redis.keyPrefix,
        overrides: settings.rateLimits,
        failMode: settings.rateLimitFailMode,
        log: log.child({ component: 'rate-limits' }),
        onRefused: (field) => metrics.rejections.inc({ reason: 'rate_limited', field }),
        onDegraded: (decision) => metrics.degradedDecisions.inc({ limit: 'rate', decision }),
      }),
      usePropagatedIdentity(identity, local),
      useSubgraphRequestId(),
      useSubgraphExtensions(),
      useGracefulStreams(shutdownSignal),
      // Last: every policy above has run (and may have stopped the operation).
      useInProcessShortcut(supergraph, localSubgraphs, inProcess.closing),
      admission.guard,
      running.guard,
    ],
  });
}

/**
 * One HTTP request: operational endpoints, origin and size checks, then authentication (a key, a
 * JWT, or an agent run's delegation) before the runtime sees it.
 */
function httpHandler(parts: RouterParts): (request: IncomingMessage, response: ServerResponse) => Promise<void> {
  const { config, log, identity, auth, watch, runtime, lifecycle, registry, redis, ready } = parts;
  const settings = config.router;
  const isReady = async () => !lifecycle.draining && ready() && (!redis || (await redisAnswers(redis)));
  return async (request, response) => {
    if (await serveOperationalEndpoints(request, response, { registry, isReady })) return;
    const requestId = acceptRequestId(request.headers[REQUEST_ID_HEADER]);
    request.headers[REQUEST_ID_HEADER] = requestId;
    // The REST doors (OpenAI's and Anthropic's APIs) answer in their API's error format from here on.
    const url = request.url ?? '/';
    const query = url.indexOf('?');
    const path = query < 0 ? url : url.slice(0, query);
    const rest = isRestPath(path);
    if (!originAllowed(request, settings.allowedOrigins)) {
      const refusal = { status: 403, code: ErrorCode.FORBIDDEN, message: FORBIDDEN_ORIGIN, headers: {} };
      refuseRequest(response, rest ? path : undefined, requestId, refusal);
      return;
    }
    if (rest) {
      // Browser apps on router.allowedOrigins may call the doors too, as they may GraphQL (their
      // refusals included, which a browser shows the app only with these headers).
      const cors = restCorsHeaders(request, settings.allowedOrigins, request.method === 'OPTIONS');
      for (const [name, value] of Object.entries(cors)) response.setHeader(name, value);
    }
    const refuse = (status: number, code: ErrorCode, message: string, headers: Record<string, string> = {}) =>
      refuseRequest(response, rest ? path : undefined, requestId, { status, code, message, headers });
    const declared = request.headers['content-length'];
    if (declared !== undefined && Number(declared) > settings.maxBodyBytes) {
      if (rest) {
        // The body is not read: the connection cannot carry another request after it.
        response.setHeader('connection', 'close');
        return refuse(413, ErrorCode.BAD_USER_INPUT, `request body over ${settings.maxBodyBytes} bytes`);
      }
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
        refuse(503, ErrorCode.SERVICE_UNAVAILABLE, 'credentials cannot be checked right now; retry', { 'retry-after': '1' });
        return;
      }
      if (!outcome.ok) {
        if (rest) refuse(401, ErrorCode.UNAUTHENTICATED, outcome.message);
        else sendJson(response, 401, unauthenticatedBody(outcome.message, requestId), { 'www-authenticate': 'Bearer realm="modelgraph"' });
        return;
      }
      caller = { principal: withExpiry(outcome.principal, outcome.expiresAt), clientAddress };
      watch.hold(outcome, response, { end: () => response.destroy() }, changesBefore);
    }
    if (rest) {
      if (lifecycle.draining) response.setHeader('connection', 'close');
      // A CORS preflight carries no credential: its answer is the headers above.
      if (!caller.principal) response.writeHead(204).end();
      else await serveRest(parts, request, response, { principal: caller.principal, clientAddress, requestId }, refuse);
      return;
    }
    if (request.method === 'POST') {
      // Read (and bound) the body here, chunked or not, and hand a JSON body to the runtime parsed:
      // it then skips its own body stream and size-counting transform (two web streams per request).
      const body = await readBody(request, settings.maxBodyBytes);
      if (body.length > 0) (request as IncomingMessage & { body?: unknown }).body = parsedJsonBody(request, body) ?? body;
    }
    if (lifecycle.draining) response.setHeader('connection', 'close');
    await runtime(request, response, caller);
  };
}

interface SocketExtra {
  request?: IncomingMessage;
  socket?: WebSocket;
  principal?: Principal;
}

/** Authenticates a socket from its connection_init payload (or, for non-browser clients, its upgrade headers). */
async function authenticateSocket(
  { auth, watch, log }: RouterParts,
  extra: SocketExtra,
  params: Readonly<Record<string, unknown>> | undefined,
): Promise<boolean> {
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

/** graphql-ws through the gateway runtime: authenticated sockets, operations capped per socket and counted until complete. */
function webSocketOptions(parts: RouterParts): ServerOptions<ConnectionInitMessage['payload'], Extra> {
  const { runtime, lifecycle } = parts;
  const { limits } = parts.config.router;
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
  return {
    ...wsOptions,
    connectionInitWaitTimeout: limits.connectionInitTimeoutMs,
    onConnect: (ctx) => authenticateSocket(parts, ctx.extra as SocketExtra, ctx.connectionParams),
    onSubscribe: (ctx, id, payload) => {
      // While draining, new operations on open sockets are refused, so they go elsewhere.
      if (lifecycle.draining) return shuttingDownResult().errors;
      if (lifecycle.openOperations(ctx) >= limits.maxSubscriptionsPerConnection) {
        return [tooManySubscriptions('connection', limits.maxSubscriptionsPerConnection)];
      }
      lifecycle.beginOperation(ctx, id);
      return wsOptions.onSubscribe!(ctx, id, payload);
    },
    // `extensions.http` tells the HTTP layer a refusal's status and headers (and is dropped
    // there); a WebSocket message has neither, so the hint goes before the result is sent.
    onNext: (_ctx, _id, _payload, _args, result) => (result.errors?.some(hasHttpHint) ? withoutHttpHints(result) : undefined),
    onComplete: (ctx, id) => lifecycle.endOperation(ctx, id),
    onClose: (ctx) => lifecycle.endOperations(ctx),
  };
}

const hasHttpHint = (error: GraphQLError) => error.extensions?.http !== undefined;

function withoutHttpHints(result: ExecutionResult): FormattedExecutionResult {
  return {
    ...result,
    errors: result.errors!.map((error) => {
      const { http: _http, ...extensions } = error.extensions ?? {};
      return { ...error.toJSON(), extensions };
    }),
  };
}

export async function startRouter(options: RouterOptions): Promise<RunningRouter> {
  const { config, log, identity, access, withProcessMetrics = true } = options;
  const settings = config.router;
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
  const lifecycle = new ServerLifecycle();
  const redis = redisConfigured(config.redis) ? createRedis(config.redis, log.child({ component: 'redis' })) : undefined;
  const limiters = redis
    ? { rates: new RedisRateLimiter(redis), concurrency: new RedisConcurrencyLimiter(redis) }
    : { rates: new MemoryRateLimiter(), concurrency: new MemoryConcurrencyLimiter() };
  const inProcess = createInProcessTransport(options.localSubgraphs ?? [], log.child({ component: 'in-process' }));
  const runtime = createRuntime(options, metrics, limiters, lifecycle.shutdownSignal, inProcess);
  // The WS handler needs the schema loaded before the first subscription arrives.
  await runtime.getSchema();
  detachRuntimeTerminateHandlers();
  const watch = new CredentialWatch(auth, log.child({ component: 'auth' }), Math.max(config.access.keyCacheSeconds, 1) * 1000);
  const rest = createRestDoors(runtime, log.child({ component: 'rest' }));
  const ready = options.ready ?? (() => true);
  const parts: RouterParts = { config, log, identity, auth, watch, runtime, lifecycle, registry, redis, rest, ready };
  return lifecycle.serve({
    label: 'router',
    refuseUnstartedAtDeadline: true,
    host: settings.host,
    port: settings.port,
    wsMaxPayloadBytes: settings.wsMaxPayloadBytes,
    log,
    handle: httpHandler(parts),
    verifyUpgrade: (request) =>
      originAllowed(request, settings.allowedOrigins) ? { accept: true } : { accept: false, status: 403, reason: FORBIDDEN_ORIGIN },
    webSockets: (wsServer) => useServer(webSocketOptions(parts), wsServer),
    release: async () => {
      // As closing its connections would end a remote subgraph's work.
      inProcess.close();
      await runtime.dispose();
      watch.close();
      auth.close();
      redis?.disconnect();
    },
  });
}
