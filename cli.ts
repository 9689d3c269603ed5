#!/usr/bin/env -S node --import=tsx
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
 *
 * With router.workers above 1 (roles all and router), this process is a cluster primary that
 * serves nothing: it forks the workers, each a whole start on the same ports, and relays the
 * signals (platform/serving/workers.ts).
 */
import { parseArgs } from 'node:util';
import { ConfigError, SUBGRAPH_NAMES, loadConfig, type Config, type SubgraphName } from './platform/config.ts';
import { createLogger, flushLogs, type Logger } from './platform/logger.ts';
import {
  announceReady,
  checkWorkersShareState,
  isWorker,
  onStopRequest,
  runPrimary,
  workerCount,
  workerEnvironment,
  workerId,
} from './platform/serving/workers.ts';
import type { Role, RunningStack } from './stack.ts';

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
  const log = createLogger({ level: config.log.level, name: 'modelgraph', backlogBytes: config.log.backlogBytes });
  const workers = role.kind === 'subgraph' ? 1 : workerCount(config);
  if (workers > 1 && !isWorker()) {
    checkWorkersShareState(config, workers, log);
    const env = workerEnvironment(config, role.kind === 'all', process.env);
    const code = await runPrimary({ workers, log, env, graceMs: config.router.shutdownGraceMs });
    await flushLogs();
    process.exit(code);
  }
  await serve(config, isWorker() ? log.child({ worker: workerId() }) : log, role);
}

/** Runs the stack in this process, alone or as one worker of a cluster (see platform/serving/workers.ts). */
async function serve(config: Config, log: Logger, role: Role): Promise<void> {
  // Signal handlers come first: a SIGTERM during start-up waits for the start, then stops.
  let stack: RunningStack | undefined;
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, graceMs: config.router.shutdownGraceMs }, 'stopping');
    void started
      .then(() => stack!.stop(Date.now() + config.router.shutdownGraceMs))
      .then(
        async () => {
          log.info('stopped');
          await flushLogs();
          process.exit(0);
        },
        async (error: unknown) => {
          log.error({ err: error }, 'shutdown failed');
          await flushLogs();
          process.exit(1);
        },
      );
  };
  // A second signal: the operator does not want to wait for the grace period. A worker counts
  // only the signals it gets itself: a primary's request to stop repeats the first (Ctrl-C reaches both).
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (++signals === 1) {
      stop(signal);
      return;
    }
    log.warn({ signal }, 'stopping now, without waiting for open requests and streams');
    void flushLogs().then(() => process.exit(1));
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  if (isWorker()) onStopRequest(stop);
  // Loaded here, not at the top: a cluster primary serves nothing and need not load the stack.
  // (The shebang says --import=tsx: tsx 4.23 fails to parse a file with a dynamic import under
  // a shebang ending in `--import tsx`.)
  const started = import('./stack.ts').then(async ({ startStack }) => {
    stack = await startStack(config, log, role);
  });
  await started;
  if (stack?.bootstrapKey) printBootstrapKey(stack.bootstrapKey, config.access.bootstrapKeyEnv);
  if (!stack?.router) return;
  if (isWorker()) {
    log.info({ url: stack.router.url }, 'worker ready');
    announceReady(stack.router.url);
  } else {
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
