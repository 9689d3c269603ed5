/**
 * The internal identity token: how the router tells a subgraph who is calling. A short-lived JWT
 * (HS256, jose) signed with a secret the router and subgraphs share, addressed to one subgraph
 * (`aud`), carrying the principal. Subgraphs accept nothing without a valid one, so a subgraph
 * reached directly, or with a forged, expired or re-addressed token, serves nothing.
 *
 * Over HTTP it travels in the `x-modelgraph-identity` header. Subscriptions share one WebSocket
 * per subgraph, so the connection itself carries a service token (`connectionParams`) and every
 * operation its caller's token (subscribe `extensions`).
 */
import { randomBytes } from 'node:crypto';
import { SignJWT, jwtVerify } from 'jose';
import { LRUCache } from 'lru-cache';
import { isScope, type Principal, type PrincipalKind, type SpendLimits } from './principal.ts';

export const IDENTITY_HEADER = 'x-modelgraph-identity';
export const IDENTITY_EXTENSION = 'identity';
export const IDENTITY_CONNECTION_PARAM = 'identity';
/** The caller's network address, as the router saw it (for audit events); sent beside the token. */
export const CLIENT_ADDRESS_HEADER = 'x-modelgraph-client-address';
/**
 * An agent run calling the router for its owner (a model call or a tool's operation) presents a
 * delegation token: the owner's principal with an `actor`, addressed to the router.
 */
export const DELEGATION_HEADER = 'x-modelgraph-delegation';
const DELEGATION_AUDIENCE = 'modelgraph-router';

const ISSUER = 'modelgraph-router';
const ALGORITHM = 'HS256';
/** The service principal that opens the router's WebSockets to subgraphs. */
const ROUTER_SUBJECT = 'modelgraph-router';

export class IdentityTokenError extends Error {}

/** A fresh random secret, for a single process that signs and verifies its own tokens. */
export const randomIdentitySecret = () => randomBytes(32).toString('base64url');

interface Claims {
  lim?: unknown;
  tid?: unknown;
  kid?: unknown;
  knd?: unknown;
  scp?: unknown;
  mdl?: unknown;
  svc?: unknown;
  act?: unknown;
  cex?: unknown;
}

const KINDS: readonly PrincipalKind[] = ['API_KEY', 'JWT', 'ANONYMOUS'];

const LIMIT_NAMES = ['tokensPerMinute', 'usdPerDay', 'usdPerMonth'] as const;
const isLimits = (value: unknown): value is SpendLimits =>
  typeof value === 'object' &&
  value !== null &&
  LIMIT_NAMES.every((name) => {
    const limit = (value as Record<string, unknown>)[name];
    return limit === null || typeof limit === 'number';
  });

function principalFrom(subject: string | undefined, claims: Claims): Principal {
  const { tid, kid, knd, scp, mdl, lim, act, cex } = claims;
  const valid =
    typeof subject === 'string' &&
    typeof tid === 'string' &&
    (kid === null || typeof kid === 'string') &&
    KINDS.includes(knd as PrincipalKind) &&
    Array.isArray(scp) &&
    scp.every(isScope) &&
    (mdl === null || (Array.isArray(mdl) && mdl.every((id) => typeof id === 'string'))) &&
    (lim === undefined || isLimits(lim)) &&
    (act === undefined || (typeof act === 'string' && act.length > 0)) &&
    (cex === undefined || (typeof cex === 'number' && Number.isFinite(cex)));
  if (!valid) throw new IdentityTokenError('identity token carries no valid principal');
  return {
    kind: knd as PrincipalKind,
    subject,
    tenantId: tid,
    keyId: kid,
    scopes: scp,
    allowedModels: mdl as string[] | null,
    ...(lim !== undefined && { limits: lim as SpendLimits }),
    ...(typeof act === 'string' && { actor: act }),
    ...(typeof cex === 'number' && { expiresAt: cex }),
  };
}

export class IdentityTokens {
  /** Imported once: jose would import a raw secret on every call (~0.2 ms each). */
  readonly #secret: Promise<CryptoKey>;
  readonly #ttlSeconds: number;
  /** Signed tokens reused for half their life: signing per subgraph call would cost more than the call. */
  readonly #signed: LRUCache<string, { token: string; expiresAt: number }>;
  /**
   * Tokens already verified, until they expire: the router reuses a token for many calls, and the
   * same string with the same signature needs no second check.
   */
  readonly #verified: LRUCache<string, { claims: Claims & { sub?: string; aud?: unknown }; expiresAt: number }>;

  constructor(secret: string, ttlSeconds = 60) {
    this.#secret = crypto.subtle.importKey('raw', new TextEncoder().encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, [
      'sign',
      'verify',
    ]);
    this.#ttlSeconds = ttlSeconds;
    this.#signed = new LRUCache({ max: 10_000 });
    this.#verified = new LRUCache({ max: 10_000 });
  }

  async sign(principal: Principal, audience: string): Promise<string> {
    const cacheKey = `${audience}\n${JSON.stringify(principal)}`;
    const cached = this.#signed.get(cacheKey);
    // Reused while more than half its life is left, judged by the same clock that verifies it.
    if (cached && cached.expiresAt - Date.now() > (this.#ttlSeconds * 1000) / 2) return cached.token;
    const claims = {
      tid: principal.tenantId,
      kid: principal.keyId,
      knd: principal.kind,
      scp: principal.scopes,
      mdl: principal.allowedModels,
      ...(principal.limits && { lim: principal.limits }),
      ...(principal.actor && { act: principal.actor }),
      ...(principal.expiresAt !== undefined && { cex: principal.expiresAt }),
    };
    const expiresAt = Math.floor(Date.now() / 1000) * 1000 + this.#ttlSeconds * 1000;
    const token = await this.#jwt(claims, principal.subject, audience);
    this.#signed.set(cacheKey, { token, expiresAt });
    return token;
  }

  /** The router's own token, for opening a WebSocket to a subgraph. */
  async signService(audience: string): Promise<string> {
    return this.#jwt({ svc: true }, ROUTER_SUBJECT, audience);
  }

  async verify(token: unknown, audience: string): Promise<Principal> {
    const { sub, ...claims } = await this.#verify(token, audience);
    if (claims.svc) throw new IdentityTokenError('a service token does not identify a caller');
    return principalFrom(sub, claims);
  }

  /** A token with which an agent run calls the router for its owner (`principal.actor` names the run). */
  async signDelegation(principal: Principal): Promise<string> {
    if (!principal.actor) throw new IdentityTokenError('a delegation names the actor that acts for the principal');
    return this.sign(principal, DELEGATION_AUDIENCE);
  }

  /** The owner's principal (with its actor) from a delegation token, or IdentityTokenError. */
  async verifyDelegation(token: unknown): Promise<Principal> {
    const principal = await this.verify(token, DELEGATION_AUDIENCE);
    if (!principal.actor) throw new IdentityTokenError('not a delegation: no actor');
    return principal;
  }

  async verifyService(token: unknown, audience: string): Promise<void> {
    const { sub, svc } = await this.#verify(token, audience);
    if (svc !== true || sub !== ROUTER_SUBJECT) throw new IdentityTokenError('not a router service token');
  }

  async #jwt(claims: Record<string, unknown>, subject: string, audience: string): Promise<string> {
    return new SignJWT(claims)
      .setProtectedHeader({ alg: ALGORITHM })
      .setSubject(subject)
      .setIssuer(ISSUER)
      .setAudience(audience)
      .setIssuedAt()
      .setExpirationTime(`${this.#ttlSeconds}s`)
      .sign(await this.#secret);
  }

  async #verify(token: unknown, audience: string): Promise<Claims & { sub?: string }> {
    if (typeof token !== 'string' || token.length === 0) throw new IdentityTokenError('no identity token');
    const known = this.#verified.get(token);
    if (known && known.expiresAt > Date.now()) {
      if (known.claims.aud !== audience) throw new IdentityTokenError('identity token refused: addressed to another service');
      return known.claims;
    }
    try {
      const { payload } = await jwtVerify(token, await this.#secret, { issuer: ISSUER, audience, algorithms: [ALGORITHM] });
      const claims = payload as Claims & { sub?: string; aud?: unknown };
      this.#verified.set(token, { claims, expiresAt: (payload.exp ?? 0) * 1000 });
      return claims;
    } catch (error) {
      throw new IdentityTokenError(`identity token refused: ${(error as { code?: string }).code ?? 'invalid'}`);
    }
  }
}
