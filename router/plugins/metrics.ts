/**
 * Router request metrics: operations by name, type and outcome; execution latency; open
 * subscriptions. Outcomes: `ok`, `error` (errors in the result), `rejected` (did not parse or
 * validate, so nothing ran).
 */
import { getOperationAST, type DocumentNode, type ExecutionResult } from 'graphql';
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { OperationLabels } from '../../platform/metrics.ts';

export interface RouterMetrics {
  requests: Counter<'operation' | 'type' | 'outcome'>;
  duration: Histogram<'operation' | 'type'>;
  openSubscriptions: Gauge;
  /** Refused credentials by reason (a small fixed set: missing, unknown, revoked, expired, jwt_*). */
  authFailures: Counter<'reason'>;
  /** Operations refused before execution by a rate limit or demand control, by field or reason. */
  rejections: Counter<'reason' | 'field'>;
  /** Decisions a limit took without its state (Redis unreachable), by limit and what its fail mode decided. */
  degradedDecisions: Counter<'limit' | 'decision'>;
}

export function createRouterMetrics(registry: Registry): RouterMetrics {
  return {
    requests: new Counter({
      name: 'modelgraph_router_operations_total',
      help: 'GraphQL operations received by the router, by operation name, type and outcome.',
      labelNames: ['operation', 'type', 'outcome'],
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'modelgraph_router_operation_duration_seconds',
      help: 'Execution time of queries and mutations (subscriptions: time to their first result).',
      labelNames: ['operation', 'type'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    openSubscriptions: new Gauge({
      name: 'modelgraph_router_open_subscriptions',
      help: 'Subscriptions currently streaming through the router (WebSocket and SSE).',
      registers: [registry],
    }),
    rejections: new Counter({
      name: 'modelgraph_router_rejections_total',
      help: 'Operations refused before any subgraph call: reason rate_limited (with the field) or cost.',
      labelNames: ['reason', 'field'],
      registers: [registry],
    }),
    authFailures: new Counter({
      name: 'modelgraph_router_authentication_failures_total',
      help: 'Requests and WebSocket connections refused because of their credential, by reason.',
      labelNames: ['reason'],
      registers: [registry],
    }),
    degradedDecisions: new Counter({
      name: 'modelgraph_router_degraded_decisions_total',
      help: 'Calls a limit let through (fail open) or refused (fail closed) because its state could not be read.',
      labelNames: ['limit', 'decision'],
      registers: [registry],
    }),
  };
}

function outcome(result: ExecutionResult): 'ok' | 'error' {
  return result.errors?.length ? 'error' : 'ok';
}

export function useRouterMetrics(metrics: RouterMetrics, names = new OperationLabels()): GatewayPlugin {
  const labels = (document: DocumentNode, operationName: string | null | undefined) => {
    const operation = getOperationAST(document, operationName);
    return { operation: names.label(operation?.name?.value ?? operationName), type: operation?.operation ?? 'unknown' };
  };
  return {
    onParse() {
      return ({ result }) => {
        // A document that does not parse has no trustworthy operation name.
        if (result instanceof Error) metrics.requests.inc({ operation: 'unparsed', type: 'unknown', outcome: 'rejected' });
      };
    },
    onValidate({ params }) {
      return ({ valid }) => {
        if (!valid) metrics.requests.inc({ ...labels(params.documentAST, undefined), outcome: 'rejected' });
      };
    },
    onExecute({ args }) {
      const operation = labels(args.document, args.operationName);
      const stopTimer = metrics.duration.startTimer(operation);
      return {
        onExecuteDone({ result }) {
          stopTimer();
          if (Symbol.asyncIterator in result) return; // incremental delivery: counted as ok below
          metrics.requests.inc({ ...operation, outcome: outcome(result) });
        },
      };
    },
    onSubscribe({ args }) {
      const operation = labels(args.document, args.operationName);
      const stopTimer = metrics.duration.startTimer(operation);
      return {
        onSubscribeResult({ result }) {
          stopTimer();
          if (!(Symbol.asyncIterator in result)) {
            metrics.requests.inc({ ...operation, outcome: outcome(result) });
            return;
          }
          metrics.requests.inc({ ...operation, outcome: 'ok' });
          metrics.openSubscriptions.inc();
          return { onEnd: () => metrics.openSubscriptions.dec() };
        },
      };
    },
  };
}
