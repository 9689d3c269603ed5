/**
 * Caps the subscriptions one principal (an API key, or a JWT subject) holds open on this replica,
 * over WebSockets and SSE alike; the cap per WebSocket connection is enforced by the server.
 */
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import { ErrorCode, codedError } from '../../platform/errors.ts';
import { holderOf } from '../../platform/identity/principal.ts';
import { callerOf } from './identity.ts';

export function tooManySubscriptions(scope: 'connection' | 'principal', max: number) {
  return codedError(
    ErrorCode.OPERATION_LIMIT_EXCEEDED,
    `at most ${max} open subscriptions per ${scope === 'connection' ? 'connection' : 'key'}`,
    {
      limit: scope === 'connection' ? 'subscriptionsPerConnection' : 'subscriptionsPerPrincipal',
      max,
    },
  );
}

export function useSubscriptionCaps(maxPerPrincipal: number): GatewayPlugin {
  const open = new Map<string, number>();
  const release = (holder: string) => {
    const left = (open.get(holder) ?? 1) - 1;
    if (left > 0) open.set(holder, left);
    else open.delete(holder);
  };
  return {
    onSubscribe({ args, setResultAndStopExecution }) {
      const { principal } = callerOf(args.contextValue);
      if (!principal) return;
      const holder = holderOf(principal);
      const count = open.get(holder) ?? 0;
      if (count >= maxPerPrincipal) {
        setResultAndStopExecution({ errors: [tooManySubscriptions('principal', maxPerPrincipal)] });
        return;
      }
      open.set(holder, count + 1);
      let released = false;
      const releaseOnce = () => {
        if (!released) release(holder);
        released = true;
      };
      return {
        onSubscribeError: releaseOnce,
        onSubscribeResult({ result }) {
          if (!(Symbol.asyncIterator in result)) {
            releaseOnce();
            return;
          }
          return { onEnd: releaseOnce };
        },
      };
    },
  };
}
