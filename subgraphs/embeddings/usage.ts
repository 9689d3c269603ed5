/**
 * The usage event of each embeddings request that reached the model: exactly one, when it ends
 * (answered, in part or wholly from the cache, or failed upstream). Refused requests (bad input)
 * called no model and leave none.
 */
import { randomUUID } from 'node:crypto';
import { codeOf } from '../../platform/errors.ts';
import { holderOf } from '../../platform/principal.ts';
import { checkTags } from '../../platform/usage-tags.ts';
import type { EmbeddingsContext } from './context.ts';
import type { EmbeddingsAnswer, EmbeddingsRequest } from './embedder.ts';

export async function embedWithUsage(context: EmbeddingsContext, request: EmbeddingsRequest): Promise<EmbeddingsAnswer> {
  const tags = checkTags(request.tags);
  const startedAt = performance.now();
  const base = { tenant: context.principal.tenantId, key: holderOf(context.principal), kind: 'embeddings' as const, timeToFirstTokenMs: null, tags };
  try {
    const answer = await context.embedder.embed(request, { cacheScope: context.cacheShared ? 'shared' : `tenant:${context.principal.tenantId}`, budget: context.inputBudget });
    const { usage, model } = answer;
    emit(context, {
      ...base,
      model: model.id,
      version: model.version,
      provider: model.provider,
      promptTokens: usage.promptTokens,
      completionTokens: 0,
      totalTokens: usage.totalTokens,
      costUsd: usage.costUsd,
      latencyMs: Math.round(performance.now() - startedAt),
      outcome: usage.cachedInputs === request.inputs.length ? 'cached' : 'ok',
    });
    return answer;
  } catch (error) {
    const code = codeOf(error);
    const model = context.catalog.resolve(request.model);
    if (code?.startsWith('UPSTREAM_') && model) {
      emit(context, { ...base, model: model.id, version: model.version, provider: model.provider, promptTokens: 0, completionTokens: 0, totalTokens: 0, costUsd: 0, latencyMs: Math.round(performance.now() - startedAt), outcome: code });
    }
    throw error;
  }
}

function emit(context: EmbeddingsContext, fields: Omit<Parameters<EmbeddingsContext['usage']['emit']>[0], 'id' | 'time'>): void {
  const event = { id: randomUUID(), time: new Date().toISOString(), ...fields };
  context.usage.emit(event).catch((error: unknown) => context.log.error({ err: error, usageEvent: event }, 'usage event lost'));
}
