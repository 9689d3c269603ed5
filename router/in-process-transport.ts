/**
 * How the router calls a subgraph that runs in its own process: a gateway-runtime transport whose
 * executor hands the planned subgraph operation, with the caller the router authenticated, to the
 * subgraph's local executor (platform/serving/in-process.ts) — no HTTP, WebSocket, identity token
 * or JSON in between. Queries, mutations, entity fetches and subscriptions all go this way; the
 * subgraph's shield rules and context are the same as over the network.
 */
import type { DisposableExecutor, Transport } from '@graphql-mesh/transport-common';
import { getOperationAST, type ExecutionResult } from 'graphql';
import type { Logger } from '../platform/logger.ts';
import type { LocalCall, LocalSubgraph } from '../platform/serving/in-process.ts';
import { acceptRequestId } from '../platform/serving/request-id.ts';
import { callerOf } from './plugins/identity.ts';
import { requestIdOf } from './plugins/request-id.ts';
import { downstreamFailure } from './subgraph-ws-transport.ts';

export const IN_PROCESS_KIND = 'in-process';

export interface InProcessTransport extends Transport {
  /** Ends every call still running (the router is closing). */
  close(): void;
  /** Aborted by `close`. */
  closing: AbortSignal;
}

export function createInProcessTransport(locals: readonly LocalSubgraph[], log: Logger): InProcessTransport {
  const byName = new Map(locals.map((local) => [local.name as string, local]));
  const closing = new AbortController();
  return {
    close: () => closing.abort(),
    closing: closing.signal,
    getSubgraphExecutor({ transportEntry }) {
      const serviceName = transportEntry.subgraph;
      const local = byName.get(serviceName);
      if (!local) throw new Error(`subgraph ${serviceName} does not run in this process`);
      const failed = (error: unknown): ExecutionResult => {
        log.error({ err: error, serviceName }, 'in-process subgraph call failed');
        return downstreamFailure(serviceName);
      };
      const executor = async (request: Parameters<DisposableExecutor>[0]) => {
        const { principal, clientAddress } = callerOf(request.context);
        const call: LocalCall = {
          document: request.document,
          variables: request.variables as Record<string, unknown> | undefined,
          ...(request.operationName && { operationName: request.operationName }),
          principal,
          clientAddress: clientAddress ?? null,
          requestId: acceptRequestId(requestIdOf(request.context)),
          ...(request.signal && { signal: request.signal }),
          closing: closing.signal,
        };
        const type = request.operationType ?? getOperationAST(request.document, request.operationName)?.operation;
        try {
          return await (type === 'subscription' ? local.subscribe(call) : local.execute(call));
        } catch (error) {
          return failed(error);
        }
      };
      // Results are untyped here, as over HTTP: the gateway reads them against its plan.
      return executor as DisposableExecutor;
    },
  };
}
