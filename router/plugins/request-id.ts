/**
 * Carries the request id to subgraphs on every transport. Over HTTP the gateway runtime already
 * forwards the `x-request-id` header; subscriptions to subgraphs run over WebSockets, where there is
 * no per-operation header, so the id also travels as the `requestId` extension of each operation.
 */
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import { REQUEST_ID_EXTENSION, REQUEST_ID_HEADER } from '../../platform/serving/request-id.ts';

interface MaybeRequestContext {
  requestId?: string;
  request?: { headers?: { get(name: string): string | null } };
}

export function requestIdOf(context: unknown): string | undefined {
  const candidate = context as MaybeRequestContext | undefined;
  return candidate?.requestId ?? candidate?.request?.headers?.get(REQUEST_ID_HEADER) ?? undefined;
}

export function useSubgraphRequestId(): GatewayPlugin {
  return {
    onSubgraphExecute({ executionRequest, setExecutionRequest }) {
      const requestId = requestIdOf(executionRequest.context);
      if (requestId) {
        setExecutionRequest({ ...executionRequest, extensions: { ...executionRequest.extensions, [REQUEST_ID_EXTENSION]: requestId } });
      }
    },
  };
}
