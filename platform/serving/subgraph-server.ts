/**
 * Runs one subgraph: an `@apollo/server` + `@apollo/subgraph` schema served over HTTP (Apollo's
 * integration API on node:http) and over graphql-ws for subscriptions, on one port, with
 * /healthz, /readyz and /metrics. The request id arrives in the `x-request-id` header (HTTP) or the
 * `requestId` extension of the subscribe message (WS) and tags every log line.
 *
 * Nothing is served without the router's identity token (platform/identity/identity-token.ts): an HTTP
 * request without a valid one gets 401 and no data; a WebSocket must present the router's service
 * token in `connection_init` (else closed with 4403) and every operation its caller's token. The
 * verified principal is in every resolver's context, and graphql-shield rules read it.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { ApolloServer, HeaderMap, type ApolloServerPlugin, type BaseContext } from '@apollo/server';
import { ApolloServerPluginInlineTraceDisabled, ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import { buildSubgraphSchema } from '@apollo/subgraph';
import { useServer } from 'graphql-ws/use/ws';
import { GraphQLError, defaultFieldResolver, subscribe, type DocumentNode, type GraphQLFormattedError, type GraphQLSchema } from 'graphql';
import { applyMiddleware } from 'graphql-middleware';
import type { IMiddlewareGenerator } from 'graphql-middleware';
import type { Registry } from 'prom-client';
import { ErrorCode, codeOf, codedError } from '../errors.ts';
import {
  CLIENT_ADDRESS_HEADER,
  IDENTITY_CONNECTION_PARAM,
  IDENTITY_EXTENSION,
  IDENTITY_HEADER,
  type IdentityTokens,
} from '../identity/identity-token.ts';
import type { Principal } from '../identity/principal.ts';
import {
  closeWebSockets,
  createWebSocketServer,
  listen,
  readBody,
  sendJson,
  sendRequestFailure,
  serveOperationalEndpoints,
  stopAccepting,
} from './http-server.ts';
import { endOnShutdown, shuttingDownResult } from './end-on-shutdown.ts';
import { InFlight } from './in-flight.ts';
import type { Config, SubgraphName } from '../config.ts';
import type { Logger } from '../logger.ts';
import { REQUEST_ID_EXTENSION, REQUEST_ID_HEADER, acceptRequestId } from './request-id.ts';
import { SPEND_EXTENSION, noSpend, spent, type Spend } from '../metering/spend.ts';
import { WARNINGS_EXTENSION, type Warning } from './warnings.ts';

export const GRAPHQL_PATH = '/graphql';

/** What every subgraph resolver gets; subgraphs extend it with their own services. */
export interface RequestContext extends BaseContext {
  requestId: string;
  log: Logger;
  /** Aborted when the caller goes away (HTTP connection closed, WS operation completed). */
  signal: AbortSignal;
  /** Added to the response's `extensions.warnings` (for a stream: its next result). */
  warnings: Warning[];
  /** What the operation's model calls cost; reported in `extensions.spend` to an agent run. */
  spend: Spend;
  /** Who is calling, verified from the router's identity token. */
  principal: Principal;
  /** The caller's address as the router saw it, when it said. */
  clientAddress: string | null;
}

export interface SubgraphServerOptions<TContext extends RequestContext> {
  name: string;
  typeDefs: DocumentNode;
  // Typed by codegen at each subgraph; Apollo's map type is looser than the generated one.
  resolvers: object;
  host: string;
  port: number;
  log: Logger;
  registry: Registry;
  maxBodyBytes: number;
  wsMaxPayloadBytes: number;
  /** Verifies the router's identity tokens, addressed to this subgraph by `name`. */
  identity: IdentityTokens;
  /** The subgraph's graphql-shield rules. */
  permissions: IMiddlewareGenerator<unknown, TContext, unknown>;
  extendContext(base: RequestContext): TContext;
}

/** Where a subgraph listens and the request sizes it accepts (the router's limits), from the config. */
export function listenSettings(config: Config, name: SubgraphName) {
  const { host, port } = config.subgraphs[name];
  return { host, port, maxBodyBytes: config.router.maxBodyBytes, wsMaxPayloadBytes: config.router.wsMaxPayloadBytes };
}

export interface RunningSubgraph {
  name: string;
  port: number;
  url: string;
  /** Drains in-flight operations until `deadline` (epoch ms), then closes everything. */
  stop(deadline: number): Promise<void>;
}

/**
 * Keeps errors that carry one of our codes (set where they were raised, by us, graphql-js or
 * Apollo's request handling) and masks everything else as INTERNAL_SERVER_ERROR, logging the
 * original. The decision reads the original error, not the formatted one: Apollo stamps
 * INTERNAL_SERVER_ERROR on every uncoded error before formatting, message and all.
 */
export function maskError(formatted: GraphQLFormattedError, original: unknown, log: Logger): GraphQLFormattedError {
  const code = codeOf(original);
  if (code && code !== ErrorCode.INTERNAL_SERVER_ERROR) {
    const { stacktrace: _stacktrace, ...extensions } = formatted.extensions ?? {};
    return { ...formatted, extensions: { ...extensions, code } };
  }
  const requestCode = original instanceof GraphQLError ? original.extensions?.code : undefined;
  if (requestCode === 'BAD_REQUEST' || requestCode === 'OPERATION_RESOLUTION_FAILURE') {
    return { message: formatted.message, extensions: { code: ErrorCode.BAD_USER_INPUT } };
  }
  log.error({ err: original }, 'unexpected error');
  return {
    message: 'Internal server error',
    ...(formatted.path && { path: formatted.path }),
    extensions: { code: ErrorCode.INTERNAL_SERVER_ERROR },
  };
}

/** One info line per HTTP operation, tagged with the request id by the context's logger. */
function logOperations<TContext extends RequestContext>(): ApolloServerPlugin<TContext> {
  return {
    async requestDidStart() {
      const started = performance.now();
      return {
        async willSendResponse({ contextValue, operationName, errors, response }) {
          if (contextValue.warnings.length && response.body.kind === 'single') {
            response.body.singleResult.extensions = {
              ...response.body.singleResult.extensions,
              [WARNINGS_EXTENSION]: contextValue.warnings,
            };
          }
          if (contextValue.principal.actor && spent(contextValue.spend) && response.body.kind === 'single') {
            response.body.singleResult.extensions = { ...response.body.singleResult.extensions, [SPEND_EXTENSION]: contextValue.spend };
          }
          contextValue.log.info(
            { operation: operationName ?? 'anonymous', durationMs: Math.round(performance.now() - started), errors: errors?.length ?? 0 },
            'operation completed',
          );
        },
      };
    },
  };
}

function headerMap(request: IncomingMessage): HeaderMap {
  const headers = new HeaderMap();
  for (const [name, value] of Object.entries(request.headers)) {
    if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(', ') : value);
  }
  return headers;
}

/**
 * Refuses subscription fields with their own `resolve`: graphql-middleware would then guard only
 * `resolve` (per event, after the stream started), never `subscribe` (see subscription-payloads.ts).
 */
function guardableSubscriptions(schema: GraphQLSchema): GraphQLSchema {
  for (const field of Object.values(schema.getSubscriptionType()?.getFields() ?? {})) {
    if (field.resolve && field.resolve !== defaultFieldResolver) {
      throw new Error(
        `Subscription.${field.name} has its own resolve; yield { ${field.name}: event } payloads instead, so its permission rule guards subscribe`,
      );
    }
  }
  return schema;
}

const unauthenticated = (message: string) => codedError(ErrorCode.UNAUTHENTICATED, message);

export async function startSubgraphServer<TContext extends RequestContext>(
  options: SubgraphServerOptions<TContext>,
): Promise<RunningSubgraph> {
  const { log, registry, identity, name: audience } = options;
  const schema = applyMiddleware(
    guardableSubscriptions(buildSubgraphSchema({ typeDefs: options.typeDefs, resolvers: options.resolvers as never })),
    options.permissions,
  );
  /** The caller of a request, or undefined (after logging why) when its token is refused. */
  const verify = async (token: unknown, requestLog: Logger): Promise<Principal | undefined> => {
    try {
      return await identity.verify(token, audience);
    } catch (error) {
      requestLog.warn({ reason: (error as Error).message }, 'request refused: no valid identity token');
      return undefined;
    }
  };
  const apollo = new ApolloServer<TContext>({
    schema,
    includeStacktraceInErrorResponses: false,
    // We own shutdown (`stop` drains first); Apollo's default would stop it on the first SIGTERM.
    stopOnTerminationSignals: false,
    // No Apollo Studio here: no inline traces for the router, no landing page.
    plugins: [ApolloServerPluginInlineTraceDisabled(), ApolloServerPluginLandingPageDisabled(), logOperations<TContext>()],
    formatError: (formatted, original) => maskError(formatted, original, log),
  });
  await apollo.start();

  let ready = true;
  const inFlight = new InFlight();

  async function handleGraphQL(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const aborter = new AbortController();
    response.on('close', () => aborter.abort());
    let body: unknown;
    if (request.method === 'POST') {
      const raw = await readBody(request, options.maxBodyBytes);
      try {
        body = raw.length ? JSON.parse(raw.toString('utf8')) : undefined;
      } catch {
        sendJson(response, 400, { errors: [{ message: 'request body is not JSON', extensions: { code: ErrorCode.BAD_USER_INPUT } }] });
        return;
      }
    }
    // The router sends the id as a header and, for every transport, as an extension.
    const extensions = (body as { extensions?: Record<string, unknown> } | undefined)?.extensions;
    const requestId = acceptRequestId(request.headers[REQUEST_ID_HEADER] ?? extensions?.[REQUEST_ID_EXTENSION]);
    const requestLog = log.child({ requestId });
    const principal = await verify(request.headers[IDENTITY_HEADER], requestLog);
    if (!principal) {
      sendJson(response, 401, { errors: [unauthenticated('this service answers only the modelgraph router').toJSON()] });
      return;
    }
    const result = await apollo.executeHTTPGraphQLRequest({
      httpGraphQLRequest: {
        method: request.method ?? 'GET',
        headers: headerMap(request),
        search: new URL(request.url ?? '/', 'http://subgraph').search,
        body,
      },
      context: async () => {
        const address = request.headers[CLIENT_ADDRESS_HEADER];
        const clientAddress = typeof address === 'string' ? address : null;
        return options.extendContext({
          requestId,
          log: requestLog,
          signal: aborter.signal,
          warnings: [],
          spend: noSpend(),
          principal,
          clientAddress,
        });
      },
    });
    const headers: Record<string, string> = { [REQUEST_ID_HEADER]: requestId };
    for (const [name, value] of result.headers) headers[name] = value;
    response.writeHead(result.status ?? 200, headers);
    if (result.body.kind === 'complete') {
      response.end(result.body.string);
      return;
    }
    for await (const chunk of result.body.asyncIterator) response.write(chunk);
    response.end();
  }

  const server = createServer((request, response) => {
    const end = inFlight.begin();
    response.on('close', end);
    void (async () => {
      if (await serveOperationalEndpoints(request, response, { registry, isReady: () => ready })) return;
      if ((request.url ?? '/').split('?')[0] !== GRAPHQL_PATH) {
        sendJson(response, 404, { error: 'not found' });
        return;
      }
      await handleGraphQL(request, response);
    })().catch((error: unknown) => sendRequestFailure(response, error, log));
  });

  const wsServer = createWebSocketServer(server, GRAPHQL_PATH, options.wsMaxPayloadBytes, () =>
    ready ? { accept: true } : { accept: false, status: 503, reason: 'server is shutting down' },
  );
  const shuttingDown = new AbortController();
  // Open operations per socket, so a completed operation or a closed socket aborts its work.
  interface OpenOperation {
    abort: AbortController;
    end: () => void;
    log: Logger;
    name: string;
    started: number;
  }
  const operations = new WeakMap<object, Map<string, OpenOperation>>();
  /** Principals verified in onSubscribe, picked up by `context` for the same operation. */
  const verified = new WeakMap<object, Map<string, Principal>>();
  const finish = (socketContext: object, id: string) => {
    const operation = operations.get(socketContext)?.get(id);
    if (!operation) return;
    operations.get(socketContext)?.delete(id);
    operation.abort.abort();
    // graphql-ws sends `complete` right after onComplete returns; count the operation as ended
    // once that is queued, so shutdown never closes a socket ahead of it.
    setImmediate(operation.end);
    operation.log.info(
      { operation: operation.name, durationMs: Math.round(performance.now() - operation.started), transport: 'ws' },
      'operation completed',
    );
  };
  const formatErrors = (errors: readonly GraphQLError[]) => errors.map((error) => maskError(error.toJSON(), error, log));
  const wsHandle = useServer(
    {
      schema,
      // Only the router may open a socket: its service token comes in connection_init (else 4403).
      onConnect: async (ctx) => {
        try {
          await identity.verifyService(ctx.connectionParams?.[IDENTITY_CONNECTION_PARAM], audience);
          return true;
        } catch (error) {
          log.warn({ reason: (error as Error).message }, 'websocket refused: no valid router token');
          return false;
        }
      },
      onSubscribe: async (ctx, id, payload) => {
        // While draining, new operations on open sockets are refused, so they go elsewhere.
        if (!ready) return shuttingDownResult().errors;
        const requestLog = log.child({ requestId: acceptRequestId(payload.extensions?.[REQUEST_ID_EXTENSION]) });
        const principal = await verify(payload.extensions?.[IDENTITY_EXTENSION], requestLog);
        if (!principal) return [unauthenticated('operation without a valid identity token')];
        verified.set(ctx, (verified.get(ctx) ?? new Map<string, Principal>()).set(id, principal));
        return undefined;
      },
      // Streams still open when the grace period ends get a final SHUTTING_DOWN result.
      subscribe: async (args) => {
        const result = await subscribe(args);
        return Symbol.asyncIterator in result ? endOnShutdown(result, shuttingDown.signal) : result;
      },
      context: (ctx, id, payload) => {
        const requestId = acceptRequestId(payload.extensions?.[REQUEST_ID_EXTENSION]);
        finish(ctx, id);
        const abort = new AbortController();
        const requestLog = log.child({ requestId });
        const open = operations.get(ctx) ?? new Map<string, OpenOperation>();
        const name = payload.operationName ?? 'anonymous';
        operations.set(ctx, open.set(id, { abort, end: inFlight.begin(), log: requestLog, name, started: performance.now() }));
        const principal = verified.get(ctx)?.get(id);
        verified.get(ctx)?.delete(id);
        // onSubscribe verified it; graphql-ws calls context only after onSubscribe accepted.
        if (!principal) throw unauthenticated('operation without a valid identity token');
        return options.extendContext({
          requestId,
          log: requestLog,
          signal: abort.signal,
          warnings: [],
          spend: noSpend(),
          principal,
          clientAddress: null,
        });
      },
      onNext: (_ctx, _id, _payload, args, result) => {
        // Warnings go out once, with the first result after they were raised.
        const warnings = (args.contextValue as RequestContext).warnings.splice(0);
        if (!result.errors && !warnings.length) return undefined;
        return {
          ...result,
          ...(result.errors && { errors: formatErrors(result.errors) }),
          ...(warnings.length && { extensions: { ...result.extensions, [WARNINGS_EXTENSION]: warnings } }),
        };
      },
      onError: (_ctx, _id, _payload, errors) => formatErrors(errors),
      onComplete: (ctx, id) => finish(ctx, id),
      onClose: (ctx) => {
        for (const id of operations.get(ctx)?.keys() ?? []) finish(ctx, id);
      },
    },
    wsServer,
  );

  const port = await listen(server, options.host, options.port);
  log.info({ port, path: GRAPHQL_PATH }, `subgraph ${options.name} listening`);

  let stopped: Promise<void> | undefined;
  return {
    name: options.name,
    port,
    url: `http://${options.host}:${port}${GRAPHQL_PATH}`,
    stop(deadline) {
      stopped ??= stop(deadline);
      return stopped;
    },
  };

  async function stop(deadline: number): Promise<void> {
    ready = false;
    const http = stopAccepting(server);
    if ((await inFlight.whenIdle(deadline)) === 'expired') {
      log.warn({ open: inFlight.count }, 'shutdown deadline passed; ending open operations with SHUTTING_DOWN');
      shuttingDown.abort();
      await inFlight.whenIdle(Date.now() + 1_000);
    }
    await closeWebSockets(wsServer, () => wsHandle.dispose());
    await http.closeAll();
    await apollo.stop();
    log.info(`subgraph ${options.name} stopped`);
  }
}
