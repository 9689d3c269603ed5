/**
 * A subgraph called in the router's own process: the router's plan for it is executed on the
 * subgraph's schema (its graphql-shield rules applied, as over HTTP) with a context built from the
 * principal the router verified, instead of being serialized, signed, sent over loopback, parsed,
 * verified and run through Apollo Server's request pipeline. What the HTTP path adds to a response
 * is added here too: errors masked the same way, `warnings` and `spend` in the extensions, one
 * "operation completed" line per operation.
 *
 * No identity token is made or checked: the principal never leaves the process. A call without
 * one is refused as the HTTP server would refuse a request without a token.
 */
import { subscribe } from '@graphql-tools/executor';
import { GraphQLError, execute, type DocumentNode, type ExecutionResult, type GraphQLSchema } from 'graphql';
import type { SubgraphName } from '../config.ts';
import { ErrorCode, codedError } from '../errors.ts';
import type { Principal } from '../identity/principal.ts';
import type { Logger } from '../logger.ts';
import { SPEND_EXTENSION, spent } from '../metering/spend.ts';
import { WARNINGS_EXTENSION } from './warnings.ts';
import { whenAborted } from './when-aborted.ts';

/** One operation the router sends a subgraph, with who it is for. */
export interface LocalCall {
  document: DocumentNode;
  variables?: Record<string, unknown>;
  operationName?: string;
  principal: Principal | undefined;
  clientAddress: string | null;
  requestId: string;
  /** Aborted when the caller goes away. */
  signal?: AbortSignal;
  /** Aborted when the router closes: ends whatever is still running. */
  closing: AbortSignal;
}

export interface LocalSubgraph {
  name: SubgraphName;
  /** Its executable schema (rules applied), for deciding what it can answer alone. */
  schema: GraphQLSchema;
  /** Queries, mutations and entity fetches. */
  execute(call: LocalCall): Promise<ExecutionResult>;
  /** A subscription: a stream of results, or one result when it could not start. */
  subscribe(call: LocalCall): Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult>;
}

/** What a local subgraph needs from its server (subgraph-server.ts). */
export interface LocalSubgraphParts<TContext> {
  name: SubgraphName;
  schema: GraphQLSchema;
  log: Logger;
  /** The context the subgraph's resolvers get, as the HTTP server builds it. */
  contextFor(call: LocalCall & { principal: Principal }, log: Logger, signal: AbortSignal): TContext;
  /** The subgraph's error masking (subgraph-server.ts `maskError`). */
  mask(error: GraphQLError): { message: string; path?: readonly (string | number)[]; extensions?: Record<string, unknown> };
}

interface OperationContext {
  warnings: { length: number; splice(start: number): unknown[] };
  spend: Parameters<typeof spent>[0];
  principal: Principal;
}

const NOT_FOR_ANYONE = 'operation without a verified caller';

/** As the error would read after a trip over HTTP: masked, with only its message, path and extensions. */
function masked(parts: LocalSubgraphParts<unknown>, errors: readonly GraphQLError[]): GraphQLError[] {
  return errors.map((error) => {
    const formatted = parts.mask(error);
    return new GraphQLError(formatted.message, { ...(formatted.path && { path: formatted.path }), extensions: formatted.extensions });
  });
}

/** The result as the subgraph's HTTP server would send it: masked errors, warnings and an agent's spend. */
function finished(parts: LocalSubgraphParts<unknown>, result: ExecutionResult, context: OperationContext, withSpend: boolean) {
  const warnings = context.warnings.length ? context.warnings.splice(0) : undefined;
  const spend = withSpend && context.principal.actor && spent(context.spend) ? context.spend : undefined;
  if (!result.errors && !warnings && !spend) return result;
  return {
    ...result,
    ...(result.errors && { errors: masked(parts, result.errors) }),
    ...((warnings || spend) && {
      extensions: { ...result.extensions, ...(warnings && { [WARNINGS_EXTENSION]: warnings }), ...(spend && { [SPEND_EXTENSION]: spend }) },
    }),
  };
}

const refused = (): ExecutionResult => ({ errors: [codedError(ErrorCode.UNAUTHENTICATED, NOT_FOR_ANYONE)] });

/**
 * A stream that aborts the operation's signal when it ends, however it ends (its last event, an
 * unsubscribe, an error), so the subgraph's upstream call is cancelled with it. An iterator object,
 * not a generator: `return()` must reach the source while a `next()` is pending.
 */
function endingWith(
  source: AsyncIterator<ExecutionResult>,
  map: (result: ExecutionResult) => ExecutionResult,
  end: () => void,
): AsyncIterableIterator<ExecutionResult> {
  let ended = false;
  const finish = () => {
    if (ended) return;
    ended = true;
    end();
  };
  const stream: AsyncIterableIterator<ExecutionResult> = {
    async next() {
      if (ended) return { done: true, value: undefined };
      try {
        const next = await source.next();
        if (next.done) {
          finish();
          return next;
        }
        return { done: false, value: map(next.value) };
      } catch (error) {
        finish();
        throw error;
      }
    },
    async return() {
      finish();
      await source.return?.();
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]: () => stream,
  };
  return stream;
}

/** An AbortError, as abort() without a reason gives, made once (each one captures a stack). */
const OPERATION_ENDED = new DOMException('the operation ended', 'AbortError');

/**
 * A signal for one operation, aborted when its caller goes away or the router closes (as closing
 * the router's connections would abort a subgraph's HTTP requests). Its listeners are removed
 * when the operation ends (`release`), so long-lived signals do not gather them.
 */
export function operationSignal(caller: AbortSignal | undefined, closing: AbortSignal): { signal: AbortSignal; release(): void } {
  const controller = new AbortController();
  // One reason for every operation: abort() without one makes a DOMException (and its stack) each time.
  const abort = () => controller.abort(OPERATION_ENDED);
  const callerGone = () => controller.abort(caller?.reason ?? OPERATION_ENDED);
  if (caller?.aborted) callerGone();
  caller?.addEventListener('abort', callerGone, { once: true });
  const detachFromClosing = whenAborted(closing, abort);
  return {
    signal: controller.signal,
    release: () => {
      caller?.removeEventListener('abort', callerGone);
      detachFromClosing();
      abort();
    },
  };
}

export function localSubgraph<TContext extends OperationContext>(parts: LocalSubgraphParts<TContext>): LocalSubgraph {
  const { name, schema, log } = parts;
  const completed = (requestLog: Logger, call: LocalCall, started: number, errors: number, transport: string) =>
    requestLog.info(
      { operation: call.operationName ?? 'anonymous', durationMs: Math.round(performance.now() - started), errors, transport },
      'operation completed',
    );
  return {
    name,
    schema,
    async execute(call) {
      const { principal } = call;
      if (!principal) return refused();
      const started = performance.now();
      const requestLog = log.child({ requestId: call.requestId });
      const operation = operationSignal(call.signal, call.closing);
      const contextValue = parts.contextFor({ ...call, principal }, requestLog, operation.signal);
      let result: ExecutionResult;
      try {
        result = await execute({
          schema,
          document: call.document,
          variableValues: call.variables,
          operationName: call.operationName,
          contextValue,
        });
      } finally {
        operation.release();
      }
      completed(requestLog, call, started, result.errors?.length ?? 0, 'in-process');
      return finished(parts as LocalSubgraphParts<unknown>, result, contextValue, true);
    },
    async subscribe(call) {
      const { principal } = call;
      if (!principal) return refused();
      const started = performance.now();
      const requestLog = log.child({ requestId: call.requestId });
      const operation = operationSignal(call.signal, call.closing);
      const end = operation.release;
      const contextValue = parts.contextFor({ ...call, principal }, requestLog, operation.signal);
      // graphql-tools' subscribe, not graphql-js's: it coerces the variables once per subscription,
      // where graphql-js re-executes each event from the raw variables (a chat's whole prompt,
      // coerced again for every token).
      const result = (await subscribe({
        schema,
        document: call.document,
        variableValues: call.variables,
        operationName: call.operationName,
        contextValue,
      })) as AsyncIterableIterator<ExecutionResult> | ExecutionResult;
      if (!(Symbol.asyncIterator in result)) {
        end();
        completed(requestLog, call, started, result.errors?.length ?? 0, 'in-process');
        return finished(parts as LocalSubgraphParts<unknown>, result, contextValue, false);
      }
      let errors = 0;
      return endingWith(
        result,
        (next) => {
          errors += next.errors?.length ?? 0;
          return finished(parts as LocalSubgraphParts<unknown>, next, contextValue, false);
        },
        () => {
          end();
          completed(requestLog, call, started, errors, 'in-process');
        },
      );
    },
  };
}
