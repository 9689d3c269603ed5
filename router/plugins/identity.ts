/**
 * Identity propagation: every subgraph call carries a short-lived token, signed by the router and
 * addressed to that subgraph, with the caller's principal (platform/identity/identity-token.ts), and the
 * caller's address for audit events. Both go as headers; the WebSocket transport moves them into
 * the operation's extensions, since one socket serves every caller.
 */
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import { CLIENT_ADDRESS_HEADER, IDENTITY_HEADER, type IdentityTokens } from '../../platform/identity/identity-token.ts';
import type { Principal } from '../../platform/identity/principal.ts';

/** What the server puts in the runtime's context for each request or WS operation. */
export interface CallerContext {
  principal?: Principal;
  clientAddress?: string | null;
}

export function callerOf(context: unknown): CallerContext {
  return (context ?? {}) as CallerContext;
}

/** `inProcess`: subgraphs called in this process, which take the principal itself and need no token. */
export function usePropagatedIdentity(tokens: IdentityTokens, inProcess: ReadonlySet<string> = new Set()): GatewayPlugin {
  return {
    async onSubgraphExecute({ subgraphName, executionRequest, setExecutionRequest }) {
      if (inProcess.has(subgraphName)) return;
      const { principal, clientAddress } = callerOf(executionRequest.context);
      // Without a principal the subgraph refuses the call (401), which is the safe outcome.
      if (!principal) return;
      const headers: Record<string, string> = { [IDENTITY_HEADER]: await tokens.sign(principal, subgraphName) };
      if (clientAddress) headers[CLIENT_ADDRESS_HEADER] = clientAddress;
      const existing = executionRequest.extensions?.headers as Record<string, string> | undefined;
      setExecutionRequest({ ...executionRequest, extensions: { ...executionRequest.extensions, headers: { ...existing, ...headers } } });
    },
  };
}
