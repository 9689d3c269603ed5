/**
 * Graceful shutdown of client streams: every subscription result the router hands out (WebSocket
 * or SSE) can be ended by `signal` with a final SHUTTING_DOWN error. The server counts open streams
 * itself and aborts `signal` only for those that outlive the grace period.
 */
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import { endOnShutdown } from '../../platform/serving/end-on-shutdown.ts';

export function useGracefulStreams(signal: AbortSignal): GatewayPlugin {
  return {
    onSubscribe() {
      return {
        onSubscribeResult({ result, setResult }) {
          if (Symbol.asyncIterator in result) setResult(endOnShutdown(result, signal));
        },
      };
    },
  };
}
