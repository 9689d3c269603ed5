#!/usr/bin/env -S node --import tsx
/**
 * modelgraph [all|router|subgraph <name>] [--config <file>]
 *
 *   all (default)      every subgraph and the router in this process (`npm start`)
 *   router             the router alone; subgraph addresses come from the config
 *   subgraph <name>    one subgraph alone (names: inference, embeddings, agents, usage, access)
 *
 * SIGTERM or SIGINT stops gracefully: no new connections, in-flight requests and streams finish
 * until router.shutdownGraceMs, then open streams end with SHUTTING_DOWN, and the process exits 0.
 * A second signal stops at once (exit 1).
 */
import { parseArgs } from 'node:util';
import { ConfigError, SUBGRAPH_NAMES, loadConfig, type SubgraphName } from './platform/config.ts';
import { createLogger } from './platform/logger.ts';
import { startStack, type Role } from './stack.ts';

const USAGE = `usage: modelgraph [all | router | subgraph <${SUBGRAPH_NAMES.join('|')}>] [--config <file>]`;

function parseRole(positionals: string[]): Role {
  const [command = 'all', name] = positionals;
  if (command === 'all' || command === 'router') return { kind: command };
  if (command === 'subgraph' && SUBGRAPH_NAMES.includes(name as SubgraphName)) return { kind: 'subgraph', name: name as SubgraphName };
  throw new ConfigError(USAGE);
}

/**
 * The one time a generated admin key is shown: on standard error, apart from the JSON log on
 * standard output (log shippers usually take stdout). With Redis it persists, so later starts print
 * nothing; without Redis every start makes (and prints) a new one. Deployments set the variable.
 */
function printBootstrapKey(key: string, envName: string): void {
  process.stderr.write(
    [
      '',
      '  modelgraph made a platform-admin API key. It is shown this once; keep it somewhere safe:',
      '',
      `      ${key}`,
      '',
      `  Send it as "Authorization: Bearer <key>". To choose your own, set ${envName}.`,
      '',
      '',
    ].join('\n'),
  );
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const role = parseRole(positionals);
  const config = loadConfig({ flag: values.config });
  const log = createLogger({ level: config.log.level, name: 'modelgraph' });
  // Signal handlers come first: a SIGTERM during start-up waits for the start, then stops.
  let stack: Awaited<ReturnType<typeof startStack>> | undefined;
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      // A second signal: the operator does not want to wait for the grace period.
      log.warn({ signal }, 'stopping now, without waiting for open requests and streams');
      log.flush();
      process.exit(1);
    }
    stopping = true;
    log.info({ signal, graceMs: config.router.shutdownGraceMs }, 'stopping');
    void started
      .then(() => stack!.stop(Date.now() + config.router.shutdownGraceMs))
      .then(
        () => {
          log.info('stopped');
          log.flush();
          process.exit(0);
        },
        (error: unknown) => {
          log.error({ err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  const started = startStack(config, log, role).then((running) => {
    stack = running;
  });
  await started;
  if (stack?.bootstrapKey) printBootstrapKey(stack.bootstrapKey, config.access.bootstrapKeyEnv);
  if (stack?.router) {
    log.info({ url: stack.router.url }, `modelgraph is ready at ${stack.router.url}`);
  }
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    console.error(`modelgraph: ${error.message}`);
  } else {
    console.error('modelgraph: failed to start:', error);
  }
  process.exit(1);
});
