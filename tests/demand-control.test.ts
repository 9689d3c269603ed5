/**
 * Demand control through the router: operations are priced from the supergraph's `@cost` and
 * `@listSize`, and one over the caller's tenant's maximum is refused before execution.
 */
import { readFileSync } from 'node:fs';
import { buildSchema, parse } from 'graphql';
import { afterEach, describe, expect, it } from 'vitest';
import { estimateCost } from '../router/plugins/demand-control.ts';
import { postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

// The supergraph the router serves keeps @cost and @listSize (the public API schema does not).
const API = buildSchema(readFileSync(new URL('../schema/supergraph.graphql', import.meta.url), 'utf8'));
const cost = (query: string, variables: Record<string, unknown> = {}) => estimateCost(API, parse(query), undefined, variables, 10);

let stack: TestStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

describe('cost estimates', () => {
  it('weighs fields by @cost, lists by @listSize, and mutations by 10', () => {
    expect(cost('{ models { id } }')).toBe(50); // assumedSize 50 × (1 + 0)
    expect(cost('{ models { id versions { id } } }')).toBe(50 * (1 + 10 * 1)); // versions: assumedSize 10
    expect(cost('mutation { chat(input: {model: "echo", messages: []}) { content usage { costUsd } } }')).toBe(10 + 10 + 1); // operation + @cost(weight: 10) + usage
    expect(cost('{ embeddings(input: {model: "m", inputs: ["x"]}) { dimensions } }')).toBe(5);
  });

  it('sizes connections by their slicing argument, variables included', () => {
    expect(cost('{ auditLog(first: 100) { edges { node { id } } } }')).toBe(1 + 100 * (1 + 1));
    expect(cost('query($n: Int!) { auditLog(first: $n) { edges { node { id } } } }', { n: 3 })).toBe(1 + 3 * (1 + 1));
    expect(cost('{ auditLog { edges { node { id } } } }')).toBe(1 + 50 * (1 + 1)); // the argument's default
  });

  it('counts fragments where they are spread', () => {
    expect(cost('{ models { ...F } } fragment F on Model { id versions { id } }')).toBe(cost('{ models { id versions { id } } }'));
  });
});

describe('demand control', () => {
  it('refuses an operation over the maximum before execution, with its estimate', async () => {
    stack = await startTestStack({ router: { port: 0, demandControl: { maxCost: 100 } } });
    const served = stack.logs.filter((line) => line.subgraph === 'inference' && line.msg === 'operation completed').length;
    const { status, body } = await postGraphQL(stack.url, '{ models { id versions { id } } }');
    expect(status).toBe(400);
    expect(body.errors?.[0]?.extensions).toMatchObject({ code: 'COST_ESTIMATED_TOO_EXPENSIVE', cost: 550, maxCost: 100 });
    expect(stack.logs.filter((line) => line.subgraph === 'inference' && line.msg === 'operation completed').length).toBe(served);
    expect((await postGraphQL(stack.url, '{ models { id } }')).body.errors).toBeUndefined();
  });

  it('applies a tenant’s own maximum', async () => {
    stack = await startTestStack({ router: { port: 0, demandControl: { maxCost: 100, tenants: { platform: 1_000 } } } });
    // The admin key belongs to the platform tenant, whose maximum is higher.
    expect((await postGraphQL(stack.url, '{ models { id versions { id } } }')).body.errors).toBeUndefined();
  });
});
