/**
 * Concurrency limits per key (`limits.maxConcurrentRequests`) and per tenant
 * (`metering.tenants.<id>.maxConcurrentRequests`), across replicas: each operation that calls a
 * model (chat, chatStream, embeddings — through any door; an agent run's calls too) holds a lease on its key's and its tenant's count while it runs
 * (router/concurrency-limiter.ts), freed on every way it ends — its result, an error, a stopped
 * stream, a caller who left — and, for a replica that died, by the lease's expiry. One over the
 * limit is refused with RATE_LIMITED (429, `Retry-After: 1`, `extensions.limit:
 * maxConcurrentRequests`). Without Redis the fail mode decides, as for rate limits.
 */
import { randomUUID } from 'node:crypto';
import { Kind, getOperationAST, type ExecutionArgs } from 'graphql';
import { ErrorCode, codedError } from '../../platform/errors.ts';
import type { Logger } from '../../platform/logger.ts';
import { concurrencyKey } from '../../platform/redis/keys.ts';
import type { ConcurrencyLimiter } from '../concurrency-limiter.ts';
import { heldWhileRunning, type Held } from './admission.ts';
import { degradedReporter, uncheckedRefusal, type FailMode } from './degraded.ts';
import { callerOf } from './identity.ts';

export interface ConcurrencySettings {
  keyPrefix: string;
  /** Tenants' limits, by tenant id. */
  tenants: Record<string, { maxConcurrentRequests?: number | undefined }>;
  failMode: FailMode;
  log: Logger;
  onRefused?: (scope: 'key' | 'tenant') => void;
  onDegraded?: (decision: 'allowed' | 'refused') => void;
  /** How long a lease lives without renewal (renewed every third of it while the operation runs). */
  leaseMs?: number;
}

/** The root fields that call a model: what the limits count (following a run's events does not). */
const MODEL_FIELDS = new Set(['chat', 'chatStream', 'embeddings']);
const callingByDocument = new WeakMap<object, boolean>();

function callsAModel(args: ExecutionArgs): boolean {
  let calls = callingByDocument.get(args.document);
  if (calls === undefined) {
    const operation = getOperationAST(args.document, args.operationName);
    calls =
      operation?.selectionSet.selections.some((selection) => selection.kind === Kind.FIELD && MODEL_FIELDS.has(selection.name.value)) ??
      false;
    callingByDocument.set(args.document, calls);
  }
  return calls;
}
const LEASE_MS = 60_000;
/** No model call holds a lease longer (a stream of a day is not a chat). */
const MAX_LEASE_LIFE_MS = 24 * 3_600_000;

function limited(scope: 'key' | 'tenant', max: number) {
  return codedError(
    ErrorCode.RATE_LIMITED,
    `this ${scope === 'key' ? 'key' : "key's tenant"} already has ${max} requests running (its maxConcurrentRequests); retry when one ends`,
    { limit: 'maxConcurrentRequests', scope, max, retryAfterMs: 1_000, http: { status: 429, headers: { 'retry-after': '1' } } },
  );
}

const unchecked = () => uncheckedRefusal('concurrency limits cannot be checked right now; retry', { limit: 'maxConcurrentRequests' });

export function useConcurrencyLimits(limiter: ConcurrencyLimiter, settings: ConcurrencySettings) {
  const { keyPrefix, tenants, failMode, log } = settings;
  const leaseMs = settings.leaseMs ?? LEASE_MS;
  const degraded = degradedReporter(log, 'concurrency limits', failMode, settings.onDegraded);
  // A lease not freed or not renewed is no decision: it frees itself when it expires.
  const unreleased = (error: unknown) => log.debug({ err: error }, 'a concurrency lease was not freed or renewed; it expires');
  return heldWhileRunning((_kind, args) => {
    const { principal } = callerOf(args.contextValue);
    // Most calls: no limit applies, and nothing is held (at once, without a promise).
    if (!principal || !callsAModel(args)) return undefined;
    const limits: { scope: 'key' | 'tenant'; holder: string; max: number }[] = [];
    if (principal.keyId && principal.maxConcurrentRequests) {
      limits.push({ scope: 'key', holder: principal.keyId, max: principal.maxConcurrentRequests });
    }
    const tenantMax = tenants[principal.tenantId]?.maxConcurrentRequests;
    if (tenantMax) limits.push({ scope: 'tenant', holder: principal.tenantId, max: tenantMax });
    if (limits.length === 0) return undefined;
    return holdAll(limits);
  });

  async function holdAll(limits: { scope: 'key' | 'tenant'; holder: string; max: number }[]): Promise<Held> {
    const lease = randomUUID();
    const held: string[] = [];
    const release = () => {
      for (const key of held.splice(0)) limiter.release(key, lease).catch(unreleased);
    };
    for (const { scope, holder, max } of limits) {
      const key = concurrencyKey(keyPrefix, scope, holder);
      let taken: boolean;
      try {
        taken = await limiter.acquire(key, lease, max, leaseMs);
      } catch (error) {
        degraded.note(error, { limit: 'maxConcurrentRequests' });
        if (failMode === 'open') continue;
        release();
        return { refusal: unchecked() };
      }
      if (!taken) {
        release();
        settings.onRefused?.(scope);
        return { refusal: limited(scope, max) };
      }
      held.push(key);
    }
    // A long stream keeps its leases; a replica that dies stops renewing them, and they expire;
    // so do those of an operation whose end was never seen, after MAX_LEASE_LIFE_MS.
    const taken = Date.now();
    const renewing = setInterval(() => {
      if (Date.now() - taken > MAX_LEASE_LIFE_MS) return clearInterval(renewing);
      for (const key of held) limiter.renew(key, lease, leaseMs).catch(unreleased);
    }, leaseMs / 3);
    renewing.unref();
    return {
      release: () => {
        clearInterval(renewing);
        release();
      },
    };
  }
}
