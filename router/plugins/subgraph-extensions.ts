/**
 * Lifts what subgraphs report in their responses' extensions into the client's response (the
 * gateway merges subgraph data and errors but drops their extensions): `warnings`, concatenated,
 * and `spend` (what an agent run's operation cost in model calls), summed. What is collected while
 * an operation runs goes out with its result (for a stream: with its next result).
 */
import type { ExecutionResult } from 'graphql';
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import { SPEND_EXTENSION, addSpend, spendOf, type Spend } from '../../platform/metering/spend.ts';
import { WARNINGS_EXTENSION, warningsOf, type Warning } from '../../platform/serving/warnings.ts';

interface Lifted {
  warnings: Warning[];
  spend?: Spend;
}

function withLifted(result: ExecutionResult, { warnings, spend }: Lifted): ExecutionResult {
  if (!warnings.length && !spend) return result;
  return {
    ...result,
    extensions: {
      ...result.extensions,
      ...(warnings.length && { [WARNINGS_EXTENSION]: [...warningsOf(result.extensions), ...warnings] }),
      ...(spend && { [SPEND_EXTENSION]: spend }),
    },
  };
}

export function useSubgraphExtensions(): GatewayPlugin {
  const pending = new WeakMap<object, Lifted>();
  const collect = (context: unknown, result: ExecutionResult) => {
    const warnings = warningsOf(result.extensions);
    const spend = spendOf(result.extensions);
    if ((!warnings.length && !spend) || typeof context !== 'object' || context === null) return;
    const lifted = pending.get(context) ?? { warnings: [] };
    lifted.warnings.push(...warnings);
    if (spend) lifted.spend = lifted.spend ? addSpend(lifted.spend, spend) : spend;
    pending.set(context, lifted);
  };
  const drain = (context: unknown): Lifted => {
    if (typeof context !== 'object' || context === null) return { warnings: [] };
    const lifted = pending.get(context) ?? { warnings: [] };
    pending.delete(context);
    return lifted;
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
          if (!(Symbol.asyncIterator in result)) setResult(withLifted(result, drain(args.contextValue)));
        },
      };
    },
    onSubscribe({ args }) {
      return {
        onSubscribeResult({ result, setResult }) {
          if (!(Symbol.asyncIterator in result)) {
            setResult(withLifted(result, drain(args.contextValue)));
            return;
          }
          return { onNext: ({ result: next, setResult: setNext }) => setNext(withLifted(next, drain(args.contextValue))) };
        },
      };
    },
  };
}
