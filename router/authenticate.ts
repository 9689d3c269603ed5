/**
 * Authentication at the router: a presented credential becomes a principal, or a refusal with a
 * reason that goes to the audit log (never the credential itself).
 *
 * - API keys (`mg_<id>_<secret>`) are looked up by SHA-256 in the access store, with a short
 *   in-process cache. Any replica's update or revocation reaches every router through the store's
 *   change feed (Redis pub/sub), which drops the cached entry at once and lets the server close
 *   that key's open connections.
 * - JWTs are verified against the configured JWKS, issuer and audience (jose), and their claims
 *   mapped to tenant, scopes and allowed models.
 * - No credential: refused, unless the config grants anonymous callers a tenant and scopes.
 */
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';
import { LRUCache } from 'lru-cache';
import { EVERY_KEY, hashSecret, keyIdOf, looksLikeApiKey, type AccessStore, type ApiKeyRecord } from '../platform/access/access-store.ts';
import type { AuditLog } from '../platform/access/audit-log.ts';
import type { Config } from '../platform/config.ts';
import type { Logger } from '../platform/logger.ts';
import { IdentityTokenError, type IdentityTokens } from '../platform/identity/identity-token.ts';
import { isScope, type Principal } from '../platform/identity/principal.ts';

export type AuthOutcome =
  | { ok: true; principal: Principal /** When the credential stops working (epoch ms). */; expiresAt: number | null }
  | { ok: false; reason: string; message: string };

/** Who asks, for the audit event of a refusal. */
export interface Presenter {
  sourceAddress: string | null;
}

const TOUCH_EVERY_MS = 60_000;
const MAX_CACHED = 10_000;
/**
 * Refused credentials recorded per source address and minute; the rest are counted and the
 * count goes with the next recorded one, so a flood cannot push older events out of the log.
 */
const AUDITED_FAILURES_PER_MINUTE = 20;
const MAX_AUDIT_FIELD = 200;

function keyPrincipal(key: ApiKeyRecord): Principal {
  const { tokensPerMinute, usdPerDay, usdPerMonth, requestsPerMinute, maxConcurrentRequests = null } = key.limits;
  return {
    kind: 'API_KEY',
    subject: key.id,
    tenantId: key.tenantId,
    keyId: key.id,
    scopes: key.scopes,
    allowedModels: key.allowedModels,
    limits: { tokensPerMinute, usdPerDay, usdPerMonth },
    requestsPerMinute,
    maxConcurrentRequests,
  };
}

const refusal = (reason: string, message: string): AuthOutcome => ({ ok: false, reason, message });

/** The principal with its credential's expiry, which travels to subgraphs (agent runs stop at it). */
export const withExpiry = (principal: Principal, expiresAt: number | null): Principal =>
  expiresAt === null ? principal : { ...principal, expiresAt };

/** The credential in an HTTP request: `Authorization: Bearer <credential>` or `x-api-key`. */
export function credentialFromHeaders(headers: Record<string, string | string[] | undefined>): string | undefined {
  const authorization = headers.authorization;
  if (typeof authorization === 'string') return /^bearer\s+(.+)$/i.exec(authorization.trim())?.[1] ?? authorization;
  const apiKey = headers['x-api-key'];
  return typeof apiKey === 'string' ? apiKey : undefined;
}

/** The credential in a graphql-ws `connection_init` payload: `authorization` (Bearer or bare) or `apiKey`. */
export function credentialFromConnectionParams(params: Readonly<Record<string, unknown>> | undefined): string | undefined {
  const value = params?.authorization ?? params?.Authorization ?? params?.apiKey ?? params?.['x-api-key'];
  if (typeof value !== 'string') return undefined;
  return /^bearer\s+(.+)$/i.exec(value.trim())?.[1] ?? value;
}

export class Authenticator {
  readonly #store: AccessStore;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  readonly #settings: Config['access'];
  /** hash of a presented key → its record, or null for an unknown one. */
  readonly #keys: LRUCache<string, { record: ApiKeyRecord | null }>;
  readonly #touched = new Map<string, number>();
  readonly #jwks: ReturnType<typeof createRemoteJWKSet> | undefined;
  readonly #stopFeed: () => void;
  readonly #changeListeners = new Set<(keyId: string) => void>();
  /** Counts key changes seen, so a lookup that raced one is not cached. */
  #changes = 0;
  /** Per source address: failures in the current minute, and those not recorded. */
  readonly #failures = new LRUCache<string, { windowStart: number; count: number; suppressed: number }>({ max: MAX_CACHED });

  readonly #onRefused: (reason: string) => void;

  constructor(
    settings: Config['access'],
    store: AccessStore,
    audit: AuditLog,
    log: Logger,
    onRefused: (reason: string) => void = () => undefined,
  ) {
    this.#onRefused = onRefused;
    this.#settings = settings;
    this.#store = store;
    this.#audit = audit;
    this.#log = log;
    this.#keys = new LRUCache({ max: MAX_CACHED, ttl: Math.max(settings.keyCacheSeconds, 0) * 1000 || 1 });
    this.#jwks = settings.jwt ? createRemoteJWKSet(new URL(settings.jwt.jwksUrl)) : undefined;
    this.#stopFeed = store.onKeyChanged((keyId) => {
      this.#changes += 1;
      if (keyId === EVERY_KEY) this.#keys.clear();
      for (const [hash, entry] of this.#keys.entries()) if (entry.record?.id === keyId) this.#keys.delete(hash);
      for (const listener of this.#changeListeners) listener(keyId);
    });
  }

  /** Resolves once other replicas' key changes reach this router. */
  listening(): Promise<void> {
    return this.#store.listening();
  }

  /** How many key changes this router has seen; a caller compares two readings to detect a race. */
  changeCount(): number {
    return this.#changes;
  }

  /** Calls `listener` with every changed key id (or EVERY_KEY), after the cache has dropped it. */
  onKeyChanged(listener: (keyId: string) => void): () => void {
    this.#changeListeners.add(listener);
    return () => void this.#changeListeners.delete(listener);
  }

  async authenticate(credential: string | undefined, presenter: Presenter): Promise<AuthOutcome> {
    const outcome = await this.#judge(credential);
    if (!outcome.ok) await this.#recordFailure(credential, outcome.reason, presenter);
    return outcome;
  }

  /**
   * An agent run calling for its owner (platform/identity/identity-token.ts `DELEGATION_HEADER`):
   * the token must be ours, and an owner's API key is read again, so a revoked or expired key stops
   * its runs' calls at once and a narrowed grant applies to the next one.
   */
  async authenticateDelegation(token: string, identity: IdentityTokens, presenter: Presenter): Promise<AuthOutcome> {
    let outcome: AuthOutcome;
    try {
      const principal = await identity.verifyDelegation(token);
      if (principal.kind === 'API_KEY') {
        // A key's standing is read again: revoked, expired or narrowed applies to the next call.
        const current = principal.keyId
          ? await this.recheckKey(principal.keyId)
          : refusal('invalid_delegation', 'a delegation for an API key names the key');
        outcome = current.ok
          ? { ...current, principal: withExpiry({ ...current.principal, actor: principal.actor! }, current.expiresAt) }
          : current;
      } else if (principal.expiresAt !== undefined && principal.expiresAt <= Date.now()) {
        // A JWT cannot be read again: the run acts for its subject only until the token's expiry.
        outcome = refusal('expired', 'the credential the agent run acts for has expired');
      } else {
        outcome = { ok: true, principal, expiresAt: principal.expiresAt ?? null };
      }
    } catch (error) {
      if (!(error instanceof IdentityTokenError)) throw error;
      outcome = refusal('invalid_delegation', 'the delegation token was refused');
    }
    if (!outcome.ok) await this.#recordFailure(undefined, outcome.reason, presenter);
    return outcome;
  }

  /** The current standing of a key (after a change): its principal, or a refusal. */
  async recheckKey(keyId: string): Promise<AuthOutcome> {
    const record = await this.#store.key(keyId);
    return record ? this.#judgeKey(record) : refusal('unknown_key', 'the API key no longer exists');
  }

  close(): void {
    this.#stopFeed();
    this.#changeListeners.clear();
  }

  async #judge(credential: string | undefined): Promise<AuthOutcome> {
    if (credential === undefined || credential === '') {
      const anonymous = this.#settings.anonymous;
      if (!anonymous) return refusal('missing_credential', 'send an API key (Authorization: Bearer <key>) or a JWT');
      return {
        ok: true,
        expiresAt: null,
        principal: {
          kind: 'ANONYMOUS',
          subject: 'anonymous',
          tenantId: anonymous.tenant,
          keyId: null,
          scopes: anonymous.scopes,
          allowedModels: null,
        },
      };
    }
    // API keys never contain dots (ours are base64url; a bootstrap key may be any string without one).
    if (this.#jwks && !looksLikeApiKey(credential) && credential.split('.').length === 3) return this.#judgeJwt(credential);
    return this.#judgeApiKey(credential);
  }

  async #judgeApiKey(secret: string): Promise<AuthOutcome> {
    const hash = hashSecret(secret);
    let cached = this.#keys.get(hash);
    if (!cached) {
      const changesBefore = this.#changes;
      cached = { record: (await this.#store.keyBySecret(secret)) ?? null };
      // A change that arrived during the read may be newer than what was read: do not keep it.
      if (this.#changes === changesBefore) this.#keys.set(hash, cached);
    }
    if (!cached.record) return refusal('unknown_key', 'unknown API key (or a JWT this deployment does not accept)');
    const outcome = this.#judgeKey(cached.record);
    if (outcome.ok) this.#touch(cached.record.id);
    return outcome;
  }

  #judgeKey(record: ApiKeyRecord): AuthOutcome {
    if (record.revokedAt) return refusal('revoked', 'the API key was revoked');
    const expiresAt = record.expiresAt ? Date.parse(record.expiresAt) : null;
    if (expiresAt !== null && expiresAt <= Date.now()) return refusal('expired', 'the API key has expired');
    return { ok: true, principal: keyPrincipal(record), expiresAt };
  }

  async #judgeJwt(token: string): Promise<AuthOutcome> {
    const jwt = this.#settings.jwt!;
    let payload: JWTPayload;
    try {
      // `exp` is required: jose checks it only when present, and a token without one never expires.
      ({ payload } = await jwtVerify(token, this.#jwks!, {
        issuer: jwt.issuer,
        audience: jwt.audience,
        algorithms: jwt.algorithms,
        requiredClaims: ['exp', 'sub'],
      }));
    } catch (error) {
      const code = String((error as { code?: string }).code ?? 'ERR_JWT_INVALID');
      return refusal(code.replace(/^ERR_/, '').toLowerCase(), 'the JWT was refused (signature, issuer, audience or expiry)');
    }
    const tenant = payload[jwt.claims.tenant];
    if (typeof payload.sub !== 'string' || typeof tenant !== 'string' || tenant === '') {
      return refusal('jwt_claims_missing', `the JWT needs "sub" and "${jwt.claims.tenant}" claims`);
    }
    const rawScopes = payload[jwt.claims.scopes];
    const scopes = (typeof rawScopes === 'string' ? rawScopes.split(/\s+/) : Array.isArray(rawScopes) ? rawScopes : []).filter(isScope);
    const models = payload[jwt.claims.models];
    // Absent allows every model; present but malformed must not (it would widen the grant).
    if (models !== undefined && !(Array.isArray(models) && models.every((model) => typeof model === 'string'))) {
      return refusal('jwt_claims_invalid', `the JWT's "${jwt.claims.models}" claim must be an array of model ids`);
    }
    const allowedModels = (models as string[] | undefined) ?? null;
    return {
      ok: true,
      expiresAt: typeof payload.exp === 'number' ? payload.exp * 1000 : null,
      principal: { kind: 'JWT', subject: payload.sub, tenantId: tenant, keyId: null, scopes: [...new Set(scopes)], allowedModels },
    };
  }

  #touch(keyId: string): void {
    const now = Date.now();
    if (now - (this.#touched.get(keyId) ?? 0) < TOUCH_EVERY_MS) return;
    this.#touched.set(keyId, now);
    this.#store.touchKey(keyId, new Date(now)).catch((error: unknown) => this.#log.warn({ err: error, keyId }, 'could not record key use'));
  }

  async #recordFailure(credential: string | undefined, reason: string, { sourceAddress }: Presenter): Promise<void> {
    // A key's id is public (it names the key in logs); the rest of the credential never leaves here.
    const target = credential ? (keyIdOf(credential) ?? null) : null;
    this.#onRefused(reason);
    const suppressed = this.#countFailure(sourceAddress ?? 'unknown');
    if (suppressed === undefined) return;
    this.#log.warn({ reason, keyId: target, sourceAddress, ...(suppressed && { notRecorded: suppressed }) }, 'authentication refused');
    const noted = suppressed ? `${reason}; ${suppressed} more refused from this address in the previous minute, not recorded` : reason;
    await this.#audit
      .record({
        actor: 'anonymous',
        actorTenant: null,
        action: 'auth.failure',
        target,
        tenant: null,
        sourceAddress,
        outcome: 'FAILED',
        reason: noted.slice(0, MAX_AUDIT_FIELD),
      })
      .catch((error: unknown) => this.#log.error({ err: error }, 'audit event lost'));
  }

  /**
   * Counts a failure from `source`: undefined when it is over this minute's allowance (not to be
   * recorded), else how many went unrecorded before it (0 usually).
   */
  #countFailure(source: string): number | undefined {
    const now = Date.now();
    let window = this.#failures.get(source);
    let carried = 0;
    if (!window || now - window.windowStart >= 60_000) {
      carried = window?.suppressed ?? 0;
      window = { windowStart: now, count: 0, suppressed: 0 };
      this.#failures.set(source, window);
    }
    window.count += 1;
    if (window.count > AUDITED_FAILURES_PER_MINUTE) {
      window.suppressed += 1;
      return undefined;
    }
    return carried;
  }
}
