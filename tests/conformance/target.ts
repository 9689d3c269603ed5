/**
 * A provider adapter under conformance test: how to start its emulator and build the adapter
 * against it. Each adapter contributes one target (tests/conformance/<provider>.ts); the suite in
 * tests/provider-conformance.test.ts runs the same cases against all of them.
 */
import type { Provider } from '../../providers/contract.ts';
import type { Timeouts } from '../../providers/http-client.ts';
import type { ProviderEmulator } from '../emulator/script.ts';

export interface ConformanceSubject {
  emulator: ProviderEmulator;
  /** Builds the adapter against the emulator with these timeouts and API key. */
  provider(timeouts: Timeouts, apiKey: string): Provider;
  chatModelId: string;
  /** Omit when the provider has no embeddings. */
  embeddingModelId?: string;
}

export interface ConformanceTarget {
  name: string;
  /** Whether the provider offers embeddings (then `embeddingModelId` is set). */
  embeddings: boolean;
  start(): Promise<ConformanceSubject>;
}
