/**
 * The layout the README promises: imports go down only (stack.ts → router/, subgraphs/ →
 * providers/ → platform/), subgraphs never import each other, and the README's layout section
 * names exactly the folders there are.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tracked = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], { cwd: root, encoding: 'utf8' })
  .split('\n')
  .filter(Boolean);

/** Relative import and export specifiers (static and dynamic), resolved to repository paths. */
function importsOf(file: string): string[] {
  const source = readFileSync(join(root, file), 'utf8');
  const specifiers = [...source.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)['"](\.{1,2}\/[^'"]+)['"]/gm)].map(
    (match) => match[1]!,
  );
  return specifiers.map((specifier) => relative(root, normalize(join(root, dirname(file), specifier))));
}

/** The folder a file belongs to for layering: `platform`, `providers`, `router`, `subgraphs/<name>`, ... */
function roomOf(path: string): string {
  const [top, second] = path.split('/');
  return top === 'subgraphs' ? `subgraphs/${second}` : path.includes('/') ? top! : path;
}

/** What each room's product code may import, besides itself. */
function allowed(room: string): (target: string) => boolean {
  const below =
    (...rooms: string[]) =>
    (target: string) =>
      rooms.includes(roomOf(target));
  if (room === 'platform') return below();
  if (room === 'providers') return below('platform');
  if (room === 'router') return below('providers', 'platform', 'codegen');
  if (room.startsWith('subgraphs/')) return below('providers', 'platform', 'codegen');
  throw new Error(`no rule for ${room}`);
}

const productCode = tracked.filter(
  (file) => /^(platform|providers|router|subgraphs)\//.test(file) && file.endsWith('.ts') && !file.endsWith('.test.ts'),
);

describe('layout', () => {
  it('has product code in every room it checks', () => {
    const rooms = new Set(productCode.map(roomOf));
    for (const room of ['platform', 'providers', 'router', 'subgraphs/inference', 'subgraphs/usage']) expect(rooms).toContain(room);
  });

  it('imports only down: platform nothing above it, providers only platform, subgraphs and the router neither each other nor stack.ts', () => {
    const upward: string[] = [];
    for (const file of productCode) {
      const room = roomOf(file);
      const may = allowed(room);
      for (const target of importsOf(file)) {
        if (roomOf(target) !== room && !may(target)) upward.push(`${file} → ${target}`);
      }
    }
    expect(upward).toEqual([]);
  });

  it('names in the README layout exactly the top-level folders and the platform rooms there are', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('### Layout'), readme.indexOf('### Libraries'));
    const block = section.slice(section.indexOf('```') + 3, section.lastIndexOf('```'));
    const named = (pattern: RegExp) => new Set([...block.matchAll(pattern)].map((match) => match[1]!));
    const folders = new Set(tracked.filter((file) => file.includes('/')).map((file) => `${file.split('/')[0]}/`));
    folders.add('subgraphs/<name>/');
    folders.delete('subgraphs/');
    expect(named(/^(\S+\/)\s/gm)).toEqual(folders);
    const rooms = new Set(tracked.filter((file) => /^platform\/[^/]+\//.test(file)).map((file) => `${file.split('/')[1]}/`));
    expect(named(/^ {2}(\S+\/)\s/gm)).toEqual(rooms);
    const rootFiles = tracked.filter((file) => !file.includes('/') && /\.(ts|yaml)$/.test(file) && file !== 'vitest.config.ts');
    for (const file of rootFiles) expect(block).toMatch(new RegExp(`^${file.replace('.', '\\.')}\\s`, 'm'));
  });
});
