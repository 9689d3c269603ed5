/**
 * Lifts `extensions.warnings` from subgraph responses into the client's response: the gateway
 * merges subgraph data and errors but drops their extensions. Warnings collected while an
 * operation runs go out with its result (for a stream: with its next result).
 */
import type { ExecutionResult } from 'graphql';
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import { WARNINGS_EXTENSION, warningsOf, type Warning } from '../../platform/warnings.ts';

function withWarnings(result: ExecutionResult, warnings: Warning[]): ExecutionResult {
  if (!warnings.length) return result;
  return { ...result, extensions: { ...result.extensions, [WARNINGS_EXTENSION]: [...warningsOf(result.extensions), ...warnings] } };
}

export function useSubgraphWarnings(): GatewayPlugin {
  const pending = new WeakMap<object, Warning[]>();
  const collect = (context: unknown, result: ExecutionResult) => {
    const warnings = warningsOf(result.extensions);
    if (!warnings.length || typeof context !== 'object' || context === null) return;
    pending.set(context, [...(pending.get(context) ?? []), ...warnings]);
  };
  const drain = (context: unknown): Warning[] => {
    if (typeof context !== 'object' || context === null) return [];
    const warnings = pending.get(context) ?? [];
    pending.delete(context);
    return warnings;
  };
  return {
    onSubgraphExecute({ executionRequest }) {
      const context = executionRequest.context;
      return ({ result }) => {
        if (Symbol.asyncIterator in result) return { onNext: ({ result: next }) => collect(context, next) };
        collect(context, result);
        return undefined;
      };
    },
    onExecute({ args }) {
      return {
        onExecuteDone({ result, setResult }) {
          if (!(Symbol.asyncIterator in result)) setResult(withWarnings(result, drain(args.contextValue)));
        },
      };
    },
    onSubscribe({ args }) {
      return {
        onSubscribeResult({ result, setResult }) {
          if (!(Symbol.asyncIterator in result)) {
            setResult(withWarnings(result, drain(args.contextValue)));
            return;
          }
          return { onNext: ({ result: next, setResult: setNext }) => setNext(withWarnings(next, drain(args.contextValue))) };
        },
      };
    },
  };
}
