/**
 * The usage event of each embeddings request that reached the model: exactly one, when it ends
 * (answered, in part or wholly from the cache, or failed upstream). Refused requests (bad input)
 * called no model and leave none.
 */
import { randomUUID } from 'node:crypto';
import { codeOf } from '../../platform/errors.ts';
import { holderOf } from '../../platform/identity/principal.ts';
import { checkTags } from '../../platform/metering/usage-tags.ts';
import { bucketsFor, reserve, settle } from '../../platform/metering/buckets.ts';
import type { Bucket } from '../../platform/metering/meter.ts';
import { countTextTokens } from '../../providers/tokens.ts';
import { priceUsd, targetKey } from '../../providers/catalog.ts';
import type { EmbeddingsContext } from './context.ts';
import type { EmbeddingsAnswer, EmbeddingsRequest } from './embedder.ts';

/**
 * Reserves the worst case (every input's tokens, as if none were cached, at the model's input
 * price) in the caller's token limits and budgets, like a chat; settles to what went upstream.
 */
async function reserveFor(context: EmbeddingsContext, request: EmbeddingsRequest): Promise<Bucket[]> {
  const model = context.catalog.isRoute(request.model) ? undefined : context.catalog.resolve(request.model);
  if (!model) return [];
  const tokens = request.inputs.reduce((sum, text) => sum + countTextTokens(text), 0);
  return reserve(context.meter, bucketsFor(context.principal, model, { tokens, usd: priceUsd(model, tokens, 0) }, context.metering));
}

export async function embedWithUsage(context: EmbeddingsContext, request: EmbeddingsRequest): Promise<EmbeddingsAnswer> {
  const tags = checkTags(request.tags);
  const startedAt = performance.now();
  const base = {
    tenant: context.principal.tenantId,
    key: holderOf(context.principal),
    kind: 'embeddings' as const,
    timeToFirstTokenMs: null,
    tags,
  };
  const reserved = await reserveFor(context, request);
  let spent = { totalTokens: 0, costUsd: 0 };
  try {
    const answer = await context.embedder.embed(request, {
      cacheScope: context.cacheShared ? 'shared' : `tenant:${context.principal.tenantId}`,
      budget: context.inputBudget,
    });
    const { usage, model } = answer;
    spent = usage;
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
    spent = (error as { spent?: typeof spent }).spent ?? spent;
    const code = codeOf(error);
    const model = context.catalog.resolve(request.model);
    if (code?.startsWith('UPSTREAM_') && model) {
      emit(context, {
        ...base,
        model: model.id,
        version: model.version,
        provider: model.provider,
        promptTokens: spent.totalTokens,
        completionTokens: 0,
        totalTokens: spent.totalTokens,
        costUsd: spent.costUsd,
        latencyMs: Math.round(performance.now() - startedAt),
        outcome: code,
      });
    }
    throw error;
  } finally {
    const model = context.catalog.resolve(request.model);
    await settle(
      context.meter,
      reserved,
      { promptTokens: spent.totalTokens, completionTokens: 0, totalTokens: spent.totalTokens },
      spent.costUsd,
      model && targetKey(model),
    ).catch((error: unknown) => context.log.error({ err: error }, 'could not settle a reservation'));
  }
}

function emit(context: EmbeddingsContext, fields: Omit<Parameters<EmbeddingsContext['usage']['emit']>[0], 'id' | 'time'>): void {
  const event = { id: randomUUID(), time: new Date().toISOString(), ...fields };
  context.usage.emit(event).catch((error: unknown) => context.log.error({ err: error, usageEvent: event }, 'usage event lost'));
}
