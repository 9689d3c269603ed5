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
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApolloServer, HeaderMap, type ApolloServerPlugin, type BaseContext } from '@apollo/server';
import { ApolloServerPluginInlineTraceDisabled, ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import { buildSubgraphSchema } from '@apollo/subgraph';
import type { ServerOptions } from 'graphql-ws';
import { useServer } from 'graphql-ws/use/ws';
import { subscribe } from '@graphql-tools/executor';
import { GraphQLError, defaultFieldResolver, parse, type GraphQLFormattedError, type GraphQLSchema } from 'graphql';
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
import { readBody, sendJson, serveOperationalEndpoints } from './http-server.ts';
import { endOnShutdown, shuttingDownResult } from './end-on-shutdown.ts';
import { GRAPHQL_PATH, ServerLifecycle, type RunningServer } from './lifecycle.ts';
import type { Config, SubgraphName } from '../config.ts';
import type { Logger } from '../logger.ts';
import { REQUEST_ID_EXTENSION, REQUEST_ID_HEADER, acceptRequestId } from './request-id.ts';
import { NO_SPEND, SPEND_EXTENSION, spent, type Spend } from '../metering/spend.ts';
import { WARNINGS_EXTENSION, type Warning } from './warnings.ts';
import { localSubgraph, type LocalSubgraph } from './in-process.ts';
import { documentCache } from './document-cache.ts';

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

/** What a subgraph is: its SDL, resolvers and shield rules, and what its resolvers get. */
export interface SubgraphDefinition<TContext extends RequestContext> {
  schemaFile: URL;
  // Typed by codegen at each subgraph; Apollo's map type is looser than the generated one.
  resolvers: object;
  /** The subgraph's graphql-shield rules. */
  permissions: IMiddlewareGenerator<unknown, TContext, unknown>;
  extendContext(base: RequestContext): TContext;
  /** Work to end before the server drains (agent runs, which call the router and other subgraphs). */
  beforeStop?(deadline: number): Promise<void>;
  /** Releases what the subgraph holds (stores, caches, Redis), after its server has stopped. */
  release?(): void | Promise<void>;
  /** Whether it can serve beyond not draining (its usage outbox has room); /readyz answers it. */
  ready?(): boolean;
}

/** Where a subgraph runs: its name (the identity tokens' audience), config, log and metrics registry. */
export interface SubgraphHost {
  name: SubgraphName;
  config: Config;
  log: Logger;
  registry: Registry;
  /** Verifies the router's identity tokens, addressed to this subgraph by `name`. */
  identity: IdentityTokens;
}

export interface RunningSubgraph extends RunningServer {
  name: SubgraphName;
  /** The same subgraph for a router in this process to call without a network hop. */
  local: LocalSubgraph;
}

/**
 * An abort at the root of the error (a DOMException or undici's AbortError), as a resolver
 * rethrows its signal's reason when its caller leaves, unsubscribes, or the server closes.
 */
function isAbort(original: unknown): boolean {
  let error = original;
  while (error instanceof GraphQLError && error.originalError) error = error.originalError;
  return error instanceof Error && error.name === 'AbortError';
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
    // `http` is a status for the subgraph's own HTTP answer (graphql-tools adds one to variable
    // errors), not for the router's caller.
    const { stacktrace: _stacktrace, http: _http, ...extensions } = formatted.extensions ?? {};
    return { ...formatted, extensions: { ...extensions, code } };
  }
  const requestCode = original instanceof GraphQLError ? original.extensions?.code : undefined;
  if (requestCode === 'BAD_REQUEST' || requestCode === 'OPERATION_RESOLUTION_FAILURE') {
    return { message: formatted.message, extensions: { code: ErrorCode.BAD_USER_INPUT } };
  }
  if (isAbort(original)) {
    // Its caller went away (a closed connection, an unsubscribe) or the server is closing: the
    // answer reaches nobody. Logged, for an abort from elsewhere would read the same.
    log.info({ err: { name: 'AbortError', message: String((original as Error).message) } }, 'operation cancelled');
    return {
      message: 'The operation was cancelled.',
      ...(formatted.path && { path: formatted.path }),
      extensions: { code: ErrorCode.CANCELLED },
    };
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

/** Verifies the identity token of a request or operation; refusals are logged (with why) and give undefined. */
type Verify = (token: unknown, requestLog: Logger) => Promise<Principal | undefined>;

function verifier(identity: IdentityTokens, audience: string): Verify {
  return async (token, requestLog) => {
    try {
      return await identity.verify(token, audience);
    } catch (error) {
      requestLog.warn({ reason: (error as Error).message }, 'request refused: no valid identity token');
      return undefined;
    }
  };
}

function baseContext(
  requestId: string,
  log: Logger,
  signal: AbortSignal,
  principal: Principal,
  clientAddress: string | null,
): RequestContext {
  return { requestId, log, signal, warnings: [], spend: { ...NO_SPEND }, principal, clientAddress };
}

/** GraphQL over HTTP on GRAPHQL_PATH through Apollo's integration API, for callers with a valid identity token. */
function graphqlOverHttp<TContext extends RequestContext>(
  apollo: ApolloServer<TContext>,
  { log, extendContext }: { log: Logger; extendContext: SubgraphDefinition<TContext>['extendContext'] },
  maxBodyBytes: number,
  verify: Verify,
): (request: IncomingMessage, response: ServerResponse) => Promise<void> {
  return async (request, response) => {
    const aborter = new AbortController();
    response.on('close', () => aborter.abort());
    let body: unknown;
    if (request.method === 'POST') {
      const raw = await readBody(request, maxBodyBytes);
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
    const address = request.headers[CLIENT_ADDRESS_HEADER];
    const clientAddress = typeof address === 'string' ? address : null;
    const result = await apollo.executeHTTPGraphQLRequest({
      httpGraphQLRequest: {
        method: request.method ?? 'GET',
        headers: headerMap(request),
        search: new URL(request.url ?? '/', 'http://subgraph').search,
        body,
      },
      context: async () => extendContext(baseContext(requestId, requestLog, aborter.signal, principal, clientAddress)),
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
  };
}

/**
 * graphql-ws for the router's subscriptions: only the router may open a socket (its service token
 * in connection_init, else 4403), every operation carries its caller's identity token, and a
 * completed operation or a closed socket aborts its work.
 */
function graphqlOverWebSocket<TContext extends RequestContext>(
  schema: GraphQLSchema,
  { log, identity, name: audience }: SubgraphHost,
  extendContext: SubgraphDefinition<TContext>['extendContext'],
  verify: Verify,
  lifecycle: ServerLifecycle,
): ServerOptions {
  /** Principals verified in onSubscribe, picked up by `context` for the same operation. */
  const verified = new WeakMap<object, Map<string, Principal>>();
  const formatErrors = (errors: readonly GraphQLError[]) => errors.map((error) => maskError(error.toJSON(), error, log));
  const documents = documentCache(schema);
  return {
    schema,
    ...documents,
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
      if (lifecycle.draining) return shuttingDownResult().errors;
      const requestLog = log.child({ requestId: acceptRequestId(payload.extensions?.[REQUEST_ID_EXTENSION]) });
      const principal = await verify(payload.extensions?.[IDENTITY_EXTENSION], requestLog);
      if (!principal) return [unauthenticated('operation without a valid identity token')];
      verified.set(ctx, (verified.get(ctx) ?? new Map<string, Principal>()).set(id, principal));
      return undefined;
    },
    // Streams still open when the grace period ends get a final SHUTTING_DOWN result.
    subscribe: async (args) => {
      const result = await subscribe(args);
      return Symbol.asyncIterator in result ? endOnShutdown(result, lifecycle.shutdownSignal) : result;
    },
    context: (ctx, id, payload) => {
      const requestId = acceptRequestId(payload.extensions?.[REQUEST_ID_EXTENSION]);
      lifecycle.endOperation(ctx, id);
      const abort = new AbortController();
      const requestLog = log.child({ requestId });
      const name = payload.operationName ?? 'anonymous';
      const started = performance.now();
      lifecycle.beginOperation(ctx, id, () => {
        abort.abort();
        requestLog.info({ operation: name, durationMs: Math.round(performance.now() - started), transport: 'ws' }, 'operation completed');
      });
      const principal = verified.get(ctx)?.get(id);
      verified.get(ctx)?.delete(id);
      // onSubscribe verified it; graphql-ws calls context only after onSubscribe accepted.
      if (!principal) throw unauthenticated('operation without a valid identity token');
      return extendContext(baseContext(requestId, requestLog, abort.signal, principal, null));
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
    onComplete: (ctx, id) => lifecycle.endOperation(ctx, id),
    onClose: (ctx) => lifecycle.endOperations(ctx),
  };
}

/** Serves a subgraph where the config says, with the router's request limits, until stopped. */
export async function startSubgraphServer<TContext extends RequestContext>(
  host: SubgraphHost,
  definition: SubgraphDefinition<TContext>,
): Promise<RunningSubgraph> {
  const { name, config, log, registry } = host;
  const typeDefs = parse(readFileSync(definition.schemaFile, 'utf8'));
  const schema = applyMiddleware(
    guardableSubscriptions(buildSubgraphSchema({ typeDefs, resolvers: definition.resolvers as never })),
    definition.permissions,
  );
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
  const verify = verifier(host.identity, name);
  const lifecycle = new ServerLifecycle();
  const handleGraphQL = graphqlOverHttp(apollo, { log, extendContext: definition.extendContext }, config.router.maxBodyBytes, verify);
  const running = await lifecycle.serve({
    label: `subgraph ${name}`,
    host: config.subgraphs[name].host,
    port: config.subgraphs[name].port,
    wsMaxPayloadBytes: config.router.wsMaxPayloadBytes,
    log,
    handle: async (request, response) => {
      const isReady = () => !lifecycle.draining && (definition.ready?.() ?? true);
      if (await serveOperationalEndpoints(request, response, { registry, isReady })) return;
      if ((request.url ?? '/').split('?')[0] !== GRAPHQL_PATH) {
        sendJson(response, 404, { error: 'not found' });
        return;
      }
      await handleGraphQL(request, response);
    },
    webSockets: (wsServer) => useServer(graphqlOverWebSocket(schema, host, definition.extendContext, verify, lifecycle), wsServer),
    ...(definition.beforeStop && { beforeStop: definition.beforeStop }),
    release: async () => {
      await apollo.stop();
      await definition.release?.();
    },
  });
  const local = localSubgraph({
    name,
    schema,
    log,
    contextFor: (call, requestLog, signal) =>
      definition.extendContext(baseContext(call.requestId, requestLog, signal, call.principal, call.clientAddress)),
    mask: (error) => maskError(error.toJSON(), error, log),
  });
  return { name, local, ...running };
}
