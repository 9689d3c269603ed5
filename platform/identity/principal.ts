/**
 * Who is calling: the principal the router authenticates (from an API key or a JWT) and every
 * subgraph receives, verified, in the internal identity token. Authorization reads only this.
 */

/** What a principal may do. The GraphQL `Scope` enum names them in SCREAMING_CASE. */
export const SCOPES = ['models:read', 'chat:invoke', 'embeddings:invoke', 'agents:run', 'usage:read', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** The tenant of the operators who run modelgraph; its admins administer every tenant. */
export const PLATFORM_TENANT = 'platform';

export type PrincipalKind = 'API_KEY' | 'JWT' | 'ANONYMOUS';

export interface Principal {
  kind: PrincipalKind;
  /** The API key id, the JWT subject, or 'anonymous'. */
  subject: string;
  tenantId: string;
  /** Set for API keys: revocation and per-key limits follow it. */
  keyId: string | null;
  scopes: Scope[];
  /** Model ids (or route ids) the principal may call; null allows every model. */
  allowedModels: string[] | null;
  /** The key's own token limit and budgets (absent or null: none); tenants' come from the config. */
  limits?: SpendLimits;
  /** The key's requests a minute (the router enforces it; absent or null: none). */
  requestsPerMinute?: number | null;
  /** The key's operations running at once (the router enforces it; absent or null: none). */
  maxConcurrentRequests?: number | null;
  /**
   * Set when an agent run acts for the principal (`agent-run:<id>`): its model and tool calls carry
   * the owner's grant, and nothing acting for a run may start another run.
   */
  actor?: string;
  /** When the caller's credential stops working (epoch ms; a JWT's `exp`, a key's expiry); absent: never. */
  expiresAt?: number;
}

export interface SpendLimits {
  tokensPerMinute: number | null;
  usdPerDay: number | null;
  usdPerMonth: number | null;
}

export const scopeToEnum = (scope: Scope) => scope.replace(':', '_').toUpperCase();
export function scopeFromEnum(value: string): Scope {
  const scope = value.toLowerCase().replace('_', ':');
  if (!isScope(scope)) throw new Error(`unknown scope ${value}`);
  return scope;
}

export function isScope(value: unknown): value is Scope {
  return typeof value === 'string' && (SCOPES as readonly string[]).includes(value);
}

export const hasScope = (principal: Principal, scope: Scope) => principal.scopes.includes(scope);

/** An admin of the platform tenant: administers every tenant. */
export const isPlatformAdmin = (principal: Principal) => principal.tenantId === PLATFORM_TENANT && hasScope(principal, 'admin');

/** True when the principal may administer (or read the administrative data of) `tenantId`. */
export const administers = (principal: Principal, tenantId: string) =>
  isPlatformAdmin(principal) || (hasScope(principal, 'admin') && principal.tenantId === tenantId);

export const mayUseModel = (principal: Principal, ids: readonly string[]) =>
  principal.allowedModels === null || ids.some((id) => principal.allowedModels!.includes(id));

/** How usage, limits, caps and the audit log name a caller: the key id, `jwt:<subject>`, or `anonymous`. */
export function holderOf(principal: Principal): string {
  if (principal.keyId) return principal.keyId;
  return principal.kind === 'JWT' ? `jwt:${principal.subject}` : principal.subject;
}
