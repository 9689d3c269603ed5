/**
 * Generated files are generated: the committed supergraph, public API schema and codegen output
 * must equal what their npm scripts produce now, and composition errors stop `npm run compose`.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { generate } from '@graphql-codegen/cli';
import { Kind, buildSchema, parse, type EnumTypeDefinitionNode } from 'graphql';
import { describe, expect, it } from 'vitest';
import config from '../codegen/codegen.ts';
import { ErrorCode } from '../platform/errors.ts';
import { PUBLIC_SCHEMA_FILE, SUPERGRAPH_FILE, composeFromConfig } from '../schema/composition.ts';

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '..');
const tsx = join(root, 'node_modules/.bin/tsx');

describe('generated files', () => {
  it('schema/supergraph.graphql and schema/api.graphql are up to date (run `npm run compose`)', () => {
    const outcome = composeFromConfig(join(root, 'supergraph.yaml'));
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    expect(readFileSync(join(root, SUPERGRAPH_FILE), 'utf8')).toBe(outcome.supergraphSdl);
    expect(readFileSync(join(root, PUBLIC_SCHEMA_FILE), 'utf8')).toBe(outcome.publicSdl);
  });

  it('codegen/ is up to date (run `npm run codegen`)', async () => {
    const outputs = await generate({ ...config, cwd: root, silent: true }, false);
    expect(outputs.length).toBe(Object.keys(config.generates).length);
    for (const output of outputs) {
      expect(readFileSync(resolve(root, output.filename), 'utf8'), output.filename).toBe(output.content);
    }
  });

  it('publishes exactly the error codes the code uses, as enum ErrorCode in the API schema', () => {
    const schema = buildSchema(readFileSync(join(root, PUBLIC_SCHEMA_FILE), 'utf8'));
    const published = schema.getType('ErrorCode');
    expect(published && 'getValues' in published).toBe(true);
    const values = (published as import('graphql').GraphQLEnumType).getValues().map((value) => value.name);
    expect(values.sort()).toEqual(Object.values(ErrorCode).sort());
  });

  it('declares the same ErrorCode enum in every subgraph that returns codes as data', () => {
    for (const file of ['schema/inference.graphql', 'schema/agents.graphql']) {
      const declared = declaredErrorCodes(readFileSync(join(root, file), 'utf8'));
      expect(declared.sort(), file).toEqual(Object.values(ErrorCode).sort());
    }
  });

  it('`npm run compose` prints the composition errors and exits non-zero on a broken subgraph', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'modelgraph-compose-'));
    copyFileSync(join(root, 'schema/inference.graphql'), join(dir, 'inference.graphql'));
    // A second subgraph that redefines an owned, non-shareable field: a composition error.
    writeFileSync(
      join(dir, 'rogue.graphql'),
      'extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@key"])\n' +
        'type Model @key(fields: "id") { id: ID! provider: Int! }\ntype Query { rogue: Model }\n',
    );
    writeFileSync(
      join(dir, 'supergraph.yaml'),
      'federation_version: =2.7.0\nsubgraphs:\n' +
        '  inference:\n    routing_url: http://127.0.0.1:4001/graphql\n    schema:\n      file: ./inference.graphql\n' +
        '  rogue:\n    routing_url: http://127.0.0.1:4009/graphql\n    schema:\n      file: ./rogue.graphql\n',
    );
    const failure = await run(tsx, ['schema/compose.ts', '--config', join(dir, 'supergraph.yaml'), '--out-dir', dir], { cwd: root }).then(
      () => undefined,
      (error: { code: number; stderr: string }) => error,
    );
    expect(failure?.code).toBe(1);
    expect(failure?.stderr).toContain('composition failed');
    expect(failure?.stderr).toMatch(/\[[A-Z_]+\] .*Model\.provider/);
  });

  it('`npm run compose` writes both files to the output folder on success', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'modelgraph-compose-'));
    const { stdout } = await run(tsx, ['schema/compose.ts', '--out-dir', dir], { cwd: root });
    expect(stdout).toContain('wrote');
    expect(readFileSync(join(dir, 'supergraph.graphql'), 'utf8')).toBe(readFileSync(join(root, SUPERGRAPH_FILE), 'utf8'));
  });
});

/** The values of `enum ErrorCode` in a subgraph's SDL. */
function declaredErrorCodes(sdl: string): string[] {
  const definition = parse(sdl).definitions.find(
    (node): node is EnumTypeDefinitionNode => node.kind === Kind.ENUM_TYPE_DEFINITION && node.name.value === 'ErrorCode',
  );
  return definition?.values?.map((value) => value.name.value) ?? [];
}
