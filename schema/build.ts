/**
 * `npm run build [-- --out-dir dist]`: the production build, JavaScript that `node dist/cli.js`
 * runs with no TypeScript tooling loaded.
 *
 * 1. Empties the out dir, so a source file deleted since the last build does not live on in it.
 * 2. Compiles tsconfig.build.json (the product code, no tests or benchmarks), with tsc rewriting
 *    `./x.ts` imports to `./x.js`.
 * 3. Copies the files the code reads by path to the same place relative to the compiled code:
 *    `new URL('../schema/supergraph.graphql', import.meta.url)` in `<out>/router/server.js` must
 *    find `<out>/schema/supergraph.graphql`. Those are the subgraph SDL, the supergraph and the
 *    public API schema, every `schema/*.graphql`. (The config is read from the working directory,
 *    not from beside the code, and has embedded defaults, so no config file is copied.)
 * 4. Makes `<out>/cli.js` (the package's `bin`) run on plain node: tsc keeps cli.ts's development
 *    shebang, `node --import tsx`, which would load the TypeScript loader in production.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative, resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';

const root = resolve(import.meta.dirname, '..');
/** Folders whose files of these extensions the code opens at run time, relative to its own URL. */
const ASSETS: Record<string, readonly string[]> = { schema: ['.graphql'] };
const SHEBANG = '#!/usr/bin/env node';

const { values } = parseArgs({ options: { 'out-dir': { type: 'string', default: 'dist' } } });
const outDir = resolve(root, values['out-dir']);
// Emptying the out dir must never reach the sources: refuse the repository, a folder above it, or
// any folder with TypeScript in it (a build holds none).
const holdsSources = (dir: string) =>
  !relative(dir, root).startsWith('..') || readdirSync(dir, { recursive: true, encoding: 'utf8' }).some((file) => file.endsWith('.ts'));
if (existsSync(outDir) && holdsSources(outDir)) {
  console.error(`build: refusing --out-dir ${outDir}: it holds sources, and the build empties it first`);
  process.exit(1);
}
const started = Date.now();
rmSync(outDir, { recursive: true, force: true });

const tsc = join(createRequire(import.meta.url).resolve('typescript/package.json'), '..', 'bin', 'tsc');
try {
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', outDir], { cwd: root, stdio: 'inherit' });
} catch {
  console.error('build: tsc failed (its errors are above)');
  process.exit(1);
}

let copied = 0;
for (const [folder, extensions] of Object.entries(ASSETS)) {
  mkdirSync(join(outDir, folder), { recursive: true });
  for (const file of readdirSync(join(root, folder))) {
    if (!extensions.some((extension) => file.endsWith(extension))) continue;
    copyFileSync(join(root, folder, file), join(outDir, folder, file));
    copied += 1;
  }
}

const cli = join(outDir, 'cli.js');
const compiled = readFileSync(cli, 'utf8');
// Replaced in place (one line for one line), so the source map still lines up.
writeFileSync(cli, compiled.startsWith('#!') ? compiled.replace(/^#!.*/, SHEBANG) : `${SHEBANG}\n${compiled}`);
chmodSync(cli, 0o755);

const shown = relative(process.cwd(), outDir) || '.';
console.log(`built ${shown.split(sep).join('/')}/ (${copied} assets) in ${Date.now() - started} ms`);
