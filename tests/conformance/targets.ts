/** Every adapter the conformance suite runs against. */
import { openaiTarget } from './openai.ts';
import type { ConformanceTarget } from './target.ts';

export const CONFORMANCE_TARGETS: ConformanceTarget[] = [openaiTarget];
