/// <reference types="vite/client" />
/**
 * Every adapter the conformance suite runs against: each file in this folder that exports a
 * `target` (one per provider adapter). Adding an adapter means adding its file here, nothing else.
 */
import type { ConformanceTarget } from './target.ts';

const modules = import.meta.glob<{ target?: ConformanceTarget }>('./*.ts', { eager: true });

export const CONFORMANCE_TARGETS: ConformanceTarget[] = Object.values(modules)
  .flatMap((module) => (module.target ? [module.target] : []))
  .sort((a, b) => a.name.localeCompare(b.name));
