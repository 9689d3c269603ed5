/**
 * Money, as modelgraph counts it: whole nano-dollars (1e-9 USD) in plain integers. Prices,
 * reservations, settlements, sums and budgets are computed in nano-dollars; USD floats appear only
 * at the edges (configured prices and limits, GraphQL fields, usage events, error extensions and
 * messages) and are converted by the functions here, nowhere else. A nano-dollar is the precision
 * answers are priced at, so a sum of many calls equals the sum of their costs exactly (up to 2^53
 * nano-dollars, about 9 million USD, per sum; Redis counters are 64-bit).
 *
 * One rounding rule:
 * - a reservation (the worst case held before a call) rounds UP to the next nano-dollar, so it never
 *   holds less than the call may cost;
 * - everything else rounds to the NEAREST nano-dollar: the price of real usage, a settlement, a
 *   sum, and a configured limit (exact for any amount given to nine decimals).
 */

/** An integer number of nano-dollars. */
export type Nanos = number;

export const NANOS_PER_USD = 1_000_000_000;

/** Nano-dollars per token at a price of 1 USD per million tokens. */
const NANOS_PER_TOKEN_PER_USD_PER_MILLION = NANOS_PER_USD / 1_000_000;

/** An amount given in USD (a configured limit, a settled or summed cost), to the nearest nano-dollar. */
export const usdToNanos = (usd: number): Nanos => Math.round(usd * NANOS_PER_USD);

/** Nano-dollars as USD, for an edge. */
export const nanosToUsd = (nanos: Nanos): number => nanos / NANOS_PER_USD;

/** A model version's prices, in USD per million tokens (as configured). */
export interface Pricing {
  inputPerMillionTokens: number;
  outputPerMillionTokens: number;
}

export interface PricedTokens {
  promptTokens: number;
  completionTokens: number;
}

const exactNanos = (pricing: Pricing, { promptTokens, completionTokens }: PricedTokens) =>
  (promptTokens * pricing.inputPerMillionTokens + completionTokens * pricing.outputPerMillionTokens) * NANOS_PER_TOKEN_PER_USD_PER_MILLION;

/** What tokens that were really used cost: to the nearest nano-dollar. */
export const priceNanos = (pricing: Pricing, tokens: PricedTokens): Nanos => Math.round(exactNanos(pricing, tokens));

/** The most tokens a call may use can cost, to reserve before it: up to the next nano-dollar. */
export const reservationNanos = (pricing: Pricing, tokens: PricedTokens): Nanos => Math.ceil(exactNanos(pricing, tokens));

/** The most whole tokens `nanos` pays for at `usdPerMillionTokens` (a positive price). */
export const tokensPaidBy = (nanos: Nanos, usdPerMillionTokens: number): number =>
  Math.floor(nanos / (usdPerMillionTokens * NANOS_PER_TOKEN_PER_USD_PER_MILLION));
