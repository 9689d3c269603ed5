import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

export default defineConfig({
  resolve: {
    // One graphql instance for our ESM code and the CommonJS federation packages
    // (otherwise: "Cannot use GraphQLSchema from another module or realm").
    alias: { graphql: require.resolve('graphql/index.js') },
  },
  test: {
    include: ['tests/**/*.test.ts', 'providers/**/*.test.ts', 'platform/**/*.test.ts', 'subgraphs/**/*.test.ts', 'router/**/*.test.ts'],
    pool: 'forks',
    // A Redis Cluster on loopback for the Redis contract suites (tests/support/global-setup.ts).
    globalSetup: ['tests/support/global-setup.ts'],
    // tests/memory.test.ts measures the live heap after a forced collection.
    execArgv: ['--expose-gc'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
