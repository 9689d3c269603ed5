/**
 * The usage event of each embeddings request that reached the model: exactly one, when it ends
 * (answered, in part or wholly from the cache, or failed upstream). Refused requests (bad input)
 * called no model and leave none.
 */
import { codeOf } from '../../platform/errors.ts';
import { meteredCall, type MeteredDemand } from '../../platform/metering/metered-call.ts';
import { reservationNanos } from '../../platform/metering/money.ts';
import { NO_SPEND, type Spend } from '../../platform/metering/spend.ts';
import { emitUsage } from '../../platform/metering/usage-event.ts';
import { checkTags } from '../../platform/metering/usage-tags.ts';
import { cacheEntryNames } from '../../platform/redis/keys.ts';
import type { CatalogModel } from '../../providers/catalog.ts';
import { countTextTokens } from '../../providers/tokens.ts';
import type { EmbeddingsContext } from './context.ts';
import type { EmbeddingsAnswer, EmbeddingsRequest } from './embedder.ts';

/**
 * The worst case (every input's tokens, as if none were cached, at the model's input price),
 * reserved in the caller's token limits and budgets like a chat's; nothing for a name that is no
 * embedding model (the embedder refuses it).
 */
function demandOf(context: EmbeddingsContext, request: EmbeddingsRequest): MeteredDemand | undefined {
  const model = context.catalog.isRoute(request.model) ? undefined : context.catalog.resolve(request.model);
  if (!model) return undefined;
  const tokens = request.inputs.reduce((sum, text) => sum + countTextTokens(text), 0);
  return { models: model, demand: { tokens, costNanos: reservationNanos(model.pricing, { promptTokens: tokens, completionTokens: 0 }) } };
}

/** Embeds, settling the reservation to what went upstream (cached and joined inputs cost nothing), and emits the usage event. */
export async function embedWithUsage(context: EmbeddingsContext, request: EmbeddingsRequest): Promise<EmbeddingsAnswer> {
  const tags = checkTags(request.tags);
  const startedAt = performance.now();
  return meteredCall(context, demandOf(context, request), async (held) => {
    let spent: Spend = NO_SPEND;
    const emit = (model: CatalogModel, outcome: string) =>
      emitUsage(context.usage, context.log, {
        principal: context.principal,
        model,
        kind: 'embeddings',
        usage: spent,
        startedAt,
        timeToFirstTokenMs: null,
        outcome,
        tags,
      });
    try {
      const answer = await context.embedder.embed(request, {
        cacheScope: cacheEntryNames.scope(context.cacheShared, context.principal.tenantId),
        budget: context.inputBudget,
      });
      spent = answer.usage;
      emit(answer.model, answer.usage.cachedInputs === request.inputs.length ? 'cached' : 'ok');
      return answer;
    } catch (error) {
      // Inputs that went upstream before the failure are paid for (the embedder says which).
      spent = (error as { spent?: Spend }).spent ?? spent;
      const code = codeOf(error);
      const model = context.catalog.resolve(request.model);
      if (code?.startsWith('UPSTREAM_') && model) emit(model, code);
      throw error;
    } finally {
      await held.settle(spent, context.catalog.resolve(request.model));
    }
  });
}
