/** `npm run compose [-- --config supergraph.yaml]`: writes the supergraph and the public API schema. */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { PUBLIC_SCHEMA_FILE, SUPERGRAPH_FILE, composeFromConfig } from './composition.ts';

const { values } = parseArgs({ options: { config: { type: 'string', default: 'supergraph.yaml' } } });
const outcome = composeFromConfig(resolve(values.config));
if (!outcome.ok) {
  console.error(`composition failed:\n${outcome.errors.map((error) => `  ${error}`).join('\n')}`);
  process.exit(1);
}
writeFileSync(SUPERGRAPH_FILE, outcome.supergraphSdl);
writeFileSync(PUBLIC_SCHEMA_FILE, outcome.publicSdl);
console.log(`wrote ${SUPERGRAPH_FILE} and ${PUBLIC_SCHEMA_FILE}`);
