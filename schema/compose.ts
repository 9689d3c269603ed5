/**
 * `npm run compose [-- --config supergraph.yaml] [--out-dir schema]`: writes the supergraph and the
 * public API schema; on composition errors prints them and exits 1 without writing anything.
 */
import { writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { PUBLIC_SCHEMA_FILE, SUPERGRAPH_FILE, composeFromConfig } from './composition.ts';

const { values } = parseArgs({
  options: { config: { type: 'string', default: 'supergraph.yaml' }, 'out-dir': { type: 'string', default: 'schema' } },
});
const outcome = composeFromConfig(resolve(values.config));
if (!outcome.ok) {
  console.error(`composition failed:\n${outcome.errors.map((error) => `  ${error}`).join('\n')}`);
  process.exit(1);
}
const supergraphFile = join(values['out-dir'], basename(SUPERGRAPH_FILE));
const publicFile = join(values['out-dir'], basename(PUBLIC_SCHEMA_FILE));
writeFileSync(supergraphFile, outcome.supergraphSdl);
writeFileSync(publicFile, outcome.publicSdl);
console.log(`wrote ${supergraphFile} and ${publicFile}`);
