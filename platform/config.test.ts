import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelCatalog } from '../providers/catalog.ts';
import { ConfigError, loadConfig, parseConfig } from './config.ts';
import type { Cluster } from 'ioredis';
import pino from 'pino';
import { createRedis, redisPlace } from './redis/client.ts';

const model = { id: 'gpt-x', provider: 'local', version: '1', capabilities: ['CHAT'], contextWindow: 100, maxOutputTokens: 10 };

function configFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'modelgraph-config-'));
  const file = join(dir, 'modelgraph.yaml');
  writeFileSync(file, text);
  return file;
}

describe('config', () => {
  it('works offline with nothing configured: local echo and hashing-embed on port 4000', () => {
    const config = parseConfig({});
    expect(config.router.port).toBe(4000);
    expect(config.providers).toEqual({ local: { type: 'local', streamDelayMs: 0 } });
    expect(config.models.map((entry) => entry.id)).toEqual(['echo', 'hashing-embed']);
    expect(new ModelCatalog(config).resolve('default')?.id).toBe('echo');
  });

  it.each([
    [{ router: { port: 'abc' } }, 'router.port'],
    [{ router: { prot: 4000 } }, 'router'],
    [{ models: [{ ...model, provider: 'nope' }] }, 'models[0].provider: unknown provider "nope"'],
    [{ models: [{ ...model, contextWindow: -1 }] }, 'models[0].contextWindow'],
    [{ models: [model, { ...model }] }, 'models[1]: "gpt-x@1" is already used by models[0]'],
    [{ providers: { openai: { type: 'openai-compatible', baseUrl: 'not a url' } } }, 'providers.openai.baseUrl'],
    [
      { providers: { openai: { type: 'openai-compatible', baseUrl: 'https://x.test/v1', apiKeyEnv: 'sk-123' } } },
      'providers.openai.apiKeyEnv',
    ],
    [{ models: [{ ...model, capabilities: ['EMBEDDINGS'] }] }, 'models[0].dimensions: required'],
    [{ models: [{ ...model, provider: 'local', capabilities: ['CHAT', 'JSON_SCHEMA'] }] }, 'models[0].capabilities: JSON_SCHEMA'],
    [{ models: [{ ...model, provider: 'local', capabilities: ['CHAT', 'VISION'] }] }, 'models[0].capabilities: VISION'],
  ])('refuses %j naming %s', (document, field) => {
    expect(() => parseConfig(document)).toThrow(ConfigError);
    expect(() => parseConfig(document)).toThrow(field);
  });

  it('takes a subgraph address alone, as `modelgraph router` deployments configure it', () => {
    const config = parseConfig({ subgraphs: { inference: { url: 'http://inference.internal:8080/graphql' } } });
    expect(config.subgraphs.inference).toEqual({ host: '127.0.0.1', port: 4001, url: 'http://inference.internal:8080/graphql' });
  });

  it('reads the file named by --config, then MODELGRAPH_CONFIG, and overrides from REDIS_URL and LOG_LEVEL', () => {
    const file = configFile('router:\n  port: 4100\n');
    expect(loadConfig({ flag: file, env: {} }).router.port).toBe(4100);
    const fromEnv = loadConfig({ env: { MODELGRAPH_CONFIG: file, REDIS_URL: 'redis://127.0.0.1:6390', LOG_LEVEL: 'warn' } });
    expect(fromEnv.router.port).toBe(4100);
    expect(fromEnv.redis.url).toBe('redis://127.0.0.1:6390');
    expect(fromEnv.log.level).toBe('warn');
  });

  it('takes a Sentinel-managed or clustered Redis, one of url, sentinel and cluster, and lets REDIS_URL replace either', () => {
    const sentinel = parseConfig({
      redis: { sentinel: { masterName: 'mymaster', sentinels: ['redis://10.0.0.1:26379'] }, passwordEnv: 'REDIS_PASSWORD' },
    });
    expect(sentinel.redis.sentinel).toEqual({ masterName: 'mymaster', sentinels: ['redis://10.0.0.1:26379'], db: 0 });
    expect(redisPlace(sentinel.redis)).toBe('sentinel master mymaster/0 via 10.0.0.1:26379');
    const cluster = parseConfig({ redis: { cluster: { nodes: ['redis://:secret@10.0.0.1:7000', 'redis://10.0.0.2'] } } });
    expect(redisPlace(cluster.redis)).toBe('cluster 10.0.0.1:7000,10.0.0.2:6379');
    expect(redisPlace(parseConfig({ redis: { url: 'redis://:secret@10.0.0.3:6380/2' } }).redis)).toBe('10.0.0.3:6380/2');
    expect(() => parseConfig({ redis: { url: 'redis://10.0.0.3', cluster: { nodes: ['redis://10.0.0.1:7000'] } } })).toThrow(
      'give one of url, sentinel and cluster',
    );
    expect(() => parseConfig({ redis: { url: 'redis://10.0.0.3', passwordEnv: 'REDIS_PASSWORD' } })).toThrow(
      'a url carries its own credentials',
    );
    expect(() => parseConfig({ redis: { cluster: { nodes: ['10.0.0.1:7000'] } } })).toThrow('must be a redis:// or rediss:// URL');
    // A password variable named but not set stops the start, naming it (not a connection without one).
    expect(() =>
      createRedis(
        parseConfig({ redis: { cluster: { nodes: ['redis://127.0.0.1:1'] }, passwordEnv: 'MG_TEST_UNSET' } }).redis,
        pino({ level: 'silent' }),
        {},
      ),
    ).toThrow('the environment variable MG_TEST_UNSET is not set');
    // A cluster's nodes authenticate with the credentials their URLs carry, unless username/passwordEnv say otherwise.
    const clustered = createRedis(
      parseConfig({ redis: { cluster: { nodes: ['redis://127.0.0.1:1', 'redis://ops:s3cret@127.0.0.1:2'] } } }).redis,
      pino({ level: 'silent' }),
      {},
    ) as Cluster;
    clustered.disconnect();
    expect(clustered.options.redisOptions).toMatchObject({ username: 'ops', password: 's3cret' });
    const fromEnv = createRedis(
      parseConfig({ redis: { cluster: { nodes: ['redis://ops:s3cret@127.0.0.1:2'] }, passwordEnv: 'MG_TEST_SET' } }).redis,
      pino({ level: 'silent' }),
      { MG_TEST_SET: 'from-env' },
    ) as Cluster;
    fromEnv.disconnect();
    expect(fromEnv.options.redisOptions).toMatchObject({ password: 'from-env' });
    expect(fromEnv.options.redisOptions?.username).toBeUndefined();
    const file = configFile('redis:\n  cluster: { nodes: [redis://10.0.0.1:7000] }\n  passwordEnv: REDIS_PASSWORD\n');
    const overridden = loadConfig({ flag: file, env: { REDIS_URL: 'redis://127.0.0.1:6390' } }).redis;
    expect(overridden).toEqual({ url: 'redis://127.0.0.1:6390', keyPrefix: 'modelgraph:' });
  });

  it('refuses a named file that does not exist, and a file that is not YAML, naming the file', () => {
    expect(() => loadConfig({ flag: '/nonexistent/modelgraph.yaml', env: {} })).toThrow(
      'config file not found: /nonexistent/modelgraph.yaml',
    );
    const broken = configFile('router: [port: 1\n');
    expect(() => loadConfig({ flag: broken, env: {} })).toThrow(`invalid ${broken}: not YAML`);
  });

  it('takes API keys from the named environment variable and refuses to start when it is unset', () => {
    const config = parseConfig({
      providers: { openai: { type: 'openai-compatible', baseUrl: 'http://127.0.0.1:9/v1', apiKeyEnv: 'TEST_OPENAI_KEY' } },
      models: [{ ...model, provider: 'openai' }],
    });
    expect(() => new ModelCatalog(config, {})).toThrow('providers.openai.apiKeyEnv: environment variable TEST_OPENAI_KEY is not set');
    expect(new ModelCatalog(config, { TEST_OPENAI_KEY: 'sk-x' }).resolve('gpt-x@1')?.id).toBe('gpt-x');
  });

  it('builds OpenAI-compatible servers from presets, with their usual key variable', () => {
    const groq = parseConfig({
      providers: { groq: { type: 'openai-compatible', preset: 'groq' } },
      models: [{ ...model, provider: 'groq' }],
    });
    expect(() => new ModelCatalog(groq, {})).toThrow('providers.groq.apiKeyEnv: environment variable GROQ_API_KEY is not set');
    expect(new ModelCatalog(groq, { GROQ_API_KEY: 'k' }).resolve('gpt-x')?.provider).toBe('groq');
    const ollama = parseConfig({
      providers: { ollama: { type: 'openai-compatible', preset: 'ollama' } },
      models: [{ ...model, provider: 'ollama' }],
    });
    expect(new ModelCatalog(ollama, {}).resolve('gpt-x')?.provider).toBe('ollama');
    expect(() => parseConfig({ providers: { x: { type: 'openai-compatible' } } })).toThrow(
      'providers.x.baseUrl: needs a baseUrl or a preset',
    );
  });

  it('configures Azure OpenAI with exactly one credential, and Anthropic with its key', () => {
    expect(() => parseConfig({ providers: { azure: { type: 'azure-openai', endpoint: 'https://r.openai.azure.com' } } })).toThrow(
      'providers.azure.apiKeyEnv: needs exactly one of apiKeyEnv and entraTokenEnv',
    );
    const config = parseConfig({
      providers: {
        azure: { type: 'azure-openai', endpoint: 'https://r.openai.azure.com', entraTokenEnv: 'AZURE_TOKEN' },
        claude: { type: 'anthropic', apiKeyEnv: 'ANTHROPIC_API_KEY' },
      },
      models: [
        { ...model, provider: 'azure' },
        { ...model, id: 'claude-x', provider: 'claude' },
      ],
    });
    expect(() => new ModelCatalog(config, { AZURE_TOKEN: 't' })).toThrow(
      'providers.claude.apiKeyEnv: environment variable ANTHROPIC_API_KEY is not set',
    );
    expect(new ModelCatalog(config, { AZURE_TOKEN: 't', ANTHROPIC_API_KEY: 'k' }).resolve('claude-x')?.provider).toBe('claude');
  });

  it('configures Gemini with its key and Bedrock with AWS credentials from the environment', () => {
    const config = parseConfig({
      providers: { google: { type: 'gemini', apiKeyEnv: 'GEMINI_API_KEY' }, aws: { type: 'bedrock', region: 'eu-west-1' } },
      models: [
        { ...model, id: 'gemini-x', provider: 'google' },
        { ...model, id: 'claude-on-bedrock', provider: 'aws', upstream: 'anthropic.claude-3-5-sonnet-20241022-v2:0' },
      ],
    });
    expect(() => new ModelCatalog(config, { GEMINI_API_KEY: 'k' })).toThrow(
      'providers.aws.accessKeyIdEnv: environment variable AWS_ACCESS_KEY_ID is not set',
    );
    const catalog = new ModelCatalog(config, { GEMINI_API_KEY: 'k', AWS_ACCESS_KEY_ID: 'AKIA', AWS_SECRET_ACCESS_KEY: 's' });
    expect(catalog.resolve('claude-on-bedrock')?.upstream).toBe('anthropic.claude-3-5-sonnet-20241022-v2:0');
    expect(() => parseConfig({ providers: { aws: { type: 'bedrock', region: 'moon' } } })).toThrow('providers.aws.region');
  });

  it('refuses routes to unknown or retired models, naming the route field', () => {
    const models = [model, { ...model, version: '0', status: 'RETIRED' }];
    expect(() => parseConfig({ models, routes: { smart: { targets: [{ model: 'nope@1' }] } } })).toThrow(
      'routes.smart.targets[0].model: no configured model "nope@1"',
    );
    expect(() => parseConfig({ models, routes: { smart: { targets: [{ model: 'gpt-x@1' }], fallbacks: ['gpt-x@0'] } } })).toThrow(
      'routes.smart.fallbacks[0]: "gpt-x@0" is retired',
    );
    // A bare id names its default version, as in the catalog: the retired first version does not matter.
    const retiredFirst = [
      { ...model, version: '0', status: 'RETIRED' },
      { ...model, default: true },
    ];
    expect(
      parseConfig({ models: retiredFirst, routes: { smart: { targets: [{ model: 'gpt-x' }] } } }).routes.smart?.targets[0]?.model,
    ).toBe('gpt-x');
  });

  it('refuses a local model the local provider does not have, naming the model', () => {
    const config = parseConfig({ models: [{ ...model, id: 'gpt-4o' }] });
    expect(() => new ModelCatalog(config)).toThrow('models[0].upstream: the local provider has no chat model "gpt-4o"');
  });
});

describe('the shipped modelgraph.yaml', () => {
  it('is valid, offline, and equal to the embedded defaults', () => {
    const root = new URL('..', import.meta.url).pathname;
    const shipped = loadConfig({ cwd: root, env: {} });
    expect(shipped).toEqual(parseConfig({}));
    expect(Object.values(shipped.providers).every((provider) => provider.type === 'local')).toBe(true);
  });
});
