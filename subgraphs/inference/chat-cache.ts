/**
 * The response cache for whole chats: when a request may be answered from it, under which key,
 * and what is stored. The key is a SHA-256 of the normalised request and the model version that
 * names it, within a scope: the caller's tenant, so that one tenant never reads another's answers
 * (or, when `cache.shareAcrossTenants` says so, one scope for the whole deployment).
 */
import { createHash } from 'node:crypto';
import type { ChatCacheInput } from '../../codegen/inference.resolvers.ts';
import { cacheEntryNames } from '../../platform/redis/keys.ts';
import type { CatalogModel } from '../../providers/catalog.ts';
import { targetKey } from '../../providers/catalog.ts';
import type { ChatRequest, FinishReason, TokenUsage, ToolCall } from '../../providers/contract.ts';

export interface CachedChat {
  id?: string;
  content: string;
  toolCalls: ToolCall[];
  finishReason: FinishReason;
  usage: TokenUsage;
  /** The version that produced the answer (`id@version`). */
  servedBy: string;
}

/** JSON with object keys sorted at every level, so equal requests hash equally. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** Whether this request may be answered from (and stored in) the cache. */
export function cacheable(request: ChatRequest, control: ChatCacheInput | null | undefined): boolean {
  const policy = control?.policy ?? 'AUTO';
  if (policy === 'BYPASS') return false;
  return policy === 'ALWAYS' || request.temperature === 0;
}

/**
 * `ref` is what the client asked for (a route, alias, id or pin) and `model` the version it names:
 * answers are only ever stored when that version produced them, so a pin never gets a fallback's
 * answer and a route never gets another route's.
 */
export function cacheKey(scope: string, ref: string, model: CatalogModel, request: ChatRequest): string {
  const digest = createHash('sha256')
    .update(canonicalJson({ v: 2, ref, model: targetKey(model), request }))
    .digest('hex');
  return cacheEntryNames.chat(scope, digest);
}
