/**
 * modelgraph configuration: one YAML file, parsed with zod at start.
 *
 * The zod schemas are the single source of the config types. Secrets are never in the file: a
 * provider names the environment variable that holds its API key (`apiKeyEnv`), and the key is
 * read from the environment when the provider is built. A bad file stops the start with a message
 * that names the offending field (`models[2].provider: ...`).
 */
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { PRESET_NAMES } from './provider-presets.ts';
import { SCOPES } from './identity/principal.ts';

export const DEFAULT_CONFIG_FILE = 'modelgraph.yaml';
export const SUBGRAPH_NAMES = ['inference', 'embeddings', 'agents', 'usage', 'access'] as const;
export type SubgraphName = (typeof SUBGRAPH_NAMES)[number];

const port = z.number().int().min(0).max(65535);
function modelRefSchema() {
  return z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:/-]*(@[A-Za-z0-9][A-Za-z0-9._-]*)?$/, 'a model id, alias or id@version');
}
const host = z.string().min(1);

/** What one operation may ask of the router; each refused with OPERATION_LIMIT_EXCEEDED (or as named). */
const edgeLimitsSchema = z
  .object({
    maxDepth: z.number().int().positive().default(12),
    maxAliases: z.number().int().min(0).default(30),
    /** Lexical tokens in the document (refused while parsing, before any work). */
    maxTokens: z.number().int().positive().default(2_000),
    maxDirectives: z.number().int().min(0).default(20),
    /**
     * GraphQL Armor's estimated cost of the document (objects 2, scalars 1, × 1.5 per level of
     * depth, × `first`/`last`); what stops fragment explosions. Demand control per field is separate.
     */
    maxCost: z.number().int().positive().default(50_000),
    /** GraphQL-over-HTTP batched arrays: refused (BAD_USER_INPUT) unless this is above 1. */
    maxBatchSize: z.number().int().min(1).default(1),
    /** Schema introspection (`__schema`, `__type`); off unless enabled, as are "Did you mean" suggestions. */
    introspection: z.boolean().default(false),
    fieldSuggestions: z.boolean().default(false),
    /**
     * CSRF prevention: requests a browser could send without a preflight (GET, or POST with a
     * simple content type) must carry one of these headers.
     */
    csrfRequestHeaders: z
      .array(z.string().min(1))
      .default(['x-apollo-operation-name', 'apollo-require-preflight', 'graphql-require-preflight']),
    /** Open subscriptions per WebSocket connection, and per principal (key or JWT subject) on this replica. */
    maxSubscriptionsPerConnection: z.number().int().positive().default(20),
    maxSubscriptionsPerPrincipal: z.number().int().positive().default(100),
    /** A WebSocket that sends no `connection_init` within this time is closed (4408). */
    connectionInitTimeoutMs: z.number().int().positive().default(3_000),
  })
  .strict()
  .prefault({});

const routerSchema = z
  .object({
    host: host.default('127.0.0.1'),
    port: port.default(4000),
    /** How long SIGTERM waits for in-flight requests and streams before ending them. */
    shutdownGraceMs: z.number().int().min(0).default(10_000),
    /** Largest WebSocket frame a client may send, in bytes. */
    wsMaxPayloadBytes: z.number().int().min(1024).default(1_048_576),
    /** Largest HTTP request body, in bytes (chunked bodies included). */
    maxBodyBytes: z.number().int().min(1024).default(1_048_576),
    /**
     * Browser origins (scheme://host[:port]) allowed to call the API cross-origin, over HTTP (CORS)
     * and WebSocket; `*` allows any. Requests without an Origin header (non-browser clients) and
     * same-origin requests are always allowed.
     */
    allowedOrigins: z.array(z.union([z.literal('*'), z.url()])).default([]),
    limits: edgeLimitsSchema,
    /**
     * Subgraphs started in the router's own process (`modelgraph all`) are executed in process,
     * on their own schema with their own rules, with no HTTP hop. false calls them over HTTP and
     * WebSockets as if they were remote (the split layout's path, in one process).
     */
    inProcessSubgraphs: z.boolean().default(true),
    /**
     * Processes serving this host's ports (`modelgraph all` and `router`): a primary forks this
     * many workers, each a whole start, sharing the listening sockets; `auto` is one per core.
     * More than one needs Redis (`redis`), through which the workers share limits, keys and usage.
     */
    workers: z.union([z.number().int().min(1), z.literal('auto')]).default(1),
    /** Demand control: the estimated cost (`@cost`, `@listSize`) an operation may have. */
    demandControl: z
      .object({
        maxCost: z.number().int().positive().default(10_000),
        /** Per-tenant maximums, by tenant id, instead of `maxCost`. */
        tenants: z.record(z.string(), z.number().int().positive()).default({}),
        /** Assumed size of a list field without `@listSize`. */
        defaultListSize: z.number().int().positive().default(10),
      })
      .strict()
      .prefault({}),
    /**
     * What a rate limit does when it cannot be checked (Redis unreachable): `open` lets the call
     * through (the default: budgets and token limits, which fail closed, still guard spend), `closed`
     * refuses it with a coded 503.
     */
    rateLimitFailMode: z.enum(['open', 'closed']).default('open'),
    /** The same for concurrency limits (keys' and tenants' maxConcurrentRequests). */
    concurrencyFailMode: z.enum(['open', 'closed']).default('open'),
    /**
     * Admission control per process (per worker with router.workers): at most this many queries
     * and mutations, and subscriptions, at once; a few more wait up to queueTimeoutMs for a slot;
     * the rest get OVERLOADED (503). A whole chat holds its slot while the provider answers, so
     * size maxOperations near throughput × normal latency (Little's law) of a deployment.
     */
    admission: z
      .object({
        maxOperations: z.number().int().positive().default(2_048),
        maxStreams: z.number().int().positive().default(50_000),
        maxQueued: z.number().int().min(0).default(128),
        queueTimeoutMs: z.number().int().positive().default(250),
      })
      .strict()
      .prefault({}),
    /**
     * Replaces the schema's `@rateLimit` values for a field (by coordinate, e.g. `Mutation.chat`),
     * or adds a limit to a field without one, without recomposing the supergraph.
     */
    rateLimits: z
      .record(
        z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$/, 'a field coordinate such as Mutation.chat'),
        z
          .object({
            max: z.number().int().positive(),
            window: z.string().regex(/^\d+(ms|s|m|h|d)$/, 'like 500ms, 30s, 1m, 1h, 1d'),
            per: z.enum(['API_KEY', 'TENANT', 'IP']).default('API_KEY'),
          })
          .strict(),
      )
      .default({}),
  })
  .strict()
  .prefault({});

const subgraphSchema = (defaultPort: number) =>
  z
    .object({
      host: host.default('127.0.0.1'),
      port: port.default(defaultPort),
      /** Where the router reaches this subgraph; defaults to http://host:port/graphql. */
      url: z.url().optional(),
    })
    .strict();

const subgraphsSchema = z
  .object({
    inference: subgraphSchema(4001).prefault({}),
    embeddings: subgraphSchema(4002).prefault({}),
    agents: subgraphSchema(4003).prefault({}),
    usage: subgraphSchema(4004).prefault({}),
    access: subgraphSchema(4005).prefault({}),
  })
  .strict()
  .prefault({});

const timeoutsSchema = z
  .object({
    connectMs: z.number().int().positive().default(5_000),
    /** Time to response headers (for streams, in practice time to the first event). */
    firstByteMs: z.number().int().positive().default(30_000),
    /** Longest silence between two chunks of a response body. */
    idleMs: z.number().int().positive().default(30_000),
    totalMs: z.number().int().positive().default(300_000),
  })
  .strict()
  .prefault({});

const envVarName = z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'must be an environment variable name such as OPENAI_API_KEY');
const redisUrl = z.string().regex(/^rediss?:\/\/[^/?#]/, 'must be a redis:// or rediss:// URL');

const jwtSchema = z
  .object({
    /** Where the identity provider publishes its signing keys. */
    jwksUrl: z.url(),
    issuer: z.string().min(1),
    audience: z.string().min(1),
    algorithms: z.array(z.string().min(1)).default(['RS256', 'ES256']),
    /** Claim names: the tenant id (required in every token), scopes (a space-separated string or an array), allowed models (optional array). */
    claims: z
      .object({ tenant: z.string().default('tenant'), scopes: z.string().default('scope'), models: z.string().default('models') })
      .strict()
      .prefault({}),
  })
  .strict();

const accessSchema = z
  .object({
    /**
     * Anonymous callers (no credential) are refused unless this names what they get; then every
     * start logs a warning. A bad credential is refused either way.
     */
    anonymous: z
      .object({
        tenant: z.string().min(1).default('anonymous'),
        scopes: z.array(z.enum(SCOPES)).default(['models:read', 'chat:invoke', 'embeddings:invoke']),
      })
      .strict()
      .optional(),
    /** The variable holding the first platform-admin key; without it, the first start makes one and prints it once. */
    bootstrapKeyEnv: envVarName.default('MODELGRAPH_BOOTSTRAP_KEY'),
    /**
     * The variable holding the secret (32+ characters) that signs the router's identity tokens to
     * subgraphs. Required when the router and subgraphs run as separate processes; a single
     * process (`modelgraph all`) makes a random one.
     */
    identitySecretEnv: envVarName.default('MODELGRAPH_IDENTITY_SECRET'),
    /** How long the router trusts a looked-up API key before reading it again (revocation clears it at once). */
    keyCacheSeconds: z.number().int().min(0).default(30),
    jwt: jwtSchema.optional(),
    /** Audit events kept (approximately; the oldest are trimmed). */
    auditMaxEvents: z.number().int().positive().default(1_000_000),
  })
  .strict()
  .prefault({});

const agentName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, '1 to 64 letters, digits, _ . or - (starting with a letter or digit)');

/** An agent defined in the config; its tools are checked against the API schema at start. */
const agentDefinitionSchema = z
  .object({
    name: agentName,
    /** The tenant that owns it; without one, every tenant may run it (and none may change it). */
    tenant: z.string().min(1).optional(),
    model: modelRefSchema(),
    instructions: z.string().min(1),
    tools: z
      .array(z.object({ name: z.string().min(1), document: z.string().min(1), description: z.string().min(1).optional() }).strict())
      .default([]),
    maxSteps: z.number().int().positive().optional(),
    maxTokens: z.number().int().positive().optional(),
    maxUsd: z.number().positive().optional(),
    maxWallTimeSeconds: z.number().int().positive().optional(),
  })
  .strict();
export type AgentDefinitionConfig = z.infer<typeof agentDefinitionSchema>;

const agentsSchema = z
  .object({
    /**
     * Where agent runs call the router for their model and tool calls. Defaults to the router of
     * this process (`modelgraph all`), else http://router.host:router.port/graphql.
     */
    routerUrl: z.url().optional(),
    /** Used when an agent does not set its own. */
    defaults: z
      .object({ maxSteps: z.number().int().positive().default(8), maxWallTimeSeconds: z.number().int().positive().default(300) })
      .strict()
      .prefault({}),
    /** The most any agent may set. */
    limits: z
      .object({
        maxSteps: z.number().int().positive().default(50),
        // At most a week: a run's timer must stay within what setTimeout can wait.
        maxWallTimeSeconds: z.number().int().positive().max(604_800).default(3_600),
        maxTools: z.number().int().positive().default(32),
        maxInstructionsChars: z.number().int().positive().default(20_000),
        maxInputChars: z.number().int().positive().default(100_000),
      })
      .strict()
      .prefault({}),
    /** A tool result (the operation's JSON) larger than this is not given to the model: it gets TOOL_RESULT_TOO_LARGE. */
    maxToolResultBytes: z.number().int().positive().default(65_536),
    /** Runs executing at once on one replica; more wait as QUEUED. */
    maxConcurrentRuns: z.number().int().positive().default(20),
    /** Runs waiting on one replica; beyond, startAgentRun is refused with SERVICE_UNAVAILABLE. */
    maxQueuedRuns: z.number().int().min(0).default(200),
    /** How long a finished run and its events stay readable. */
    retentionSeconds: z
      .number()
      .int()
      .positive()
      .default(7 * 86_400),
    definitions: z.array(agentDefinitionSchema).default([]),
  })
  .strict()
  .superRefine((agents, ctx) => {
    for (const limit of ['maxSteps', 'maxWallTimeSeconds'] as const) {
      if (agents.defaults[limit] > agents.limits[limit]) {
        ctx.addIssue({ code: 'custom', path: ['defaults', limit], message: `must not exceed limits.${limit} (${agents.limits[limit]})` });
      }
    }
  })
  .prefault({});

const remote = {
  /** Name of the environment variable that holds the API key; omit for servers without auth. */
  apiKeyEnv: envVarName.optional(),
  headers: z.record(z.string(), z.string()).default({}),
  timeouts: timeoutsSchema,
};

const providerSchema = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('local'),
      /** Delay between streamed words, to make streaming visible in a demo. */
      streamDelayMs: z.number().int().min(0).default(0),
    })
    .strict(),
  z
    .object({
      type: z.literal('openai-compatible'),
      /** OpenAI, vLLM, Ollama, TGI, LM Studio, Groq, Mistral, DeepSeek: fills baseUrl and apiKeyEnv. */
      preset: z.enum(PRESET_NAMES).optional(),
      baseUrl: z.url().optional(),
      /**
       * Whether the server fetches images given by URL (the openai preset's default). Off for other
       * servers: a self-hosted one (vLLM, TGI) would fetch them from inside your network, so its
       * models take images as bytes only.
       */
      imageUrls: z.boolean().optional(),
      ...remote,
    })
    .strict()
    .refine((provider) => provider.baseUrl !== undefined || provider.preset !== undefined, {
      message: 'needs a baseUrl or a preset',
      path: ['baseUrl'],
    }),
  z
    .object({
      type: z.literal('azure-openai'),
      /** https://<resource>.openai.azure.com; models name their deployment as `upstream`. */
      endpoint: z.url(),
      apiVersion: z.string().min(1).default('2024-10-21'),
      /** Or, instead of an API key: the variable holding a Microsoft Entra ID bearer token. */
      entraTokenEnv: envVarName.optional(),
      ...remote,
    })
    .strict()
    .refine((provider) => (provider.apiKeyEnv === undefined) !== (provider.entraTokenEnv === undefined), {
      message: 'needs exactly one of apiKeyEnv and entraTokenEnv',
      path: ['apiKeyEnv'],
    }),
  z
    .object({
      type: z.literal('gemini'),
      baseUrl: z.url().default('https://generativelanguage.googleapis.com/v1beta'),
      ...remote,
    })
    .strict(),
  z
    .object({
      type: z.literal('bedrock'),
      region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'an AWS region such as us-east-1'),
      /** Defaults to https://bedrock-runtime.<region>.amazonaws.com. */
      endpoint: z.url().optional(),
      /** Names of the environment variables holding the credentials (AWS's usual ones by default). */
      accessKeyIdEnv: envVarName.default('AWS_ACCESS_KEY_ID'),
      secretAccessKeyEnv: envVarName.default('AWS_SECRET_ACCESS_KEY'),
      sessionTokenEnv: envVarName.optional(),
      timeouts: timeoutsSchema,
    })
    .strict(),
  z
    .object({
      type: z.literal('anthropic'),
      baseUrl: z.url().default('https://api.anthropic.com'),
      /** Sent when a request sets no maxTokens (Anthropic requires one). */
      defaultMaxTokens: z.number().int().positive().default(4096),
      version: z.string().default('2023-06-01'),
      ...remote,
    })
    .strict(),
]);
export type ProviderConfig = z.infer<typeof providerSchema>;

export const CAPABILITIES = ['CHAT', 'EMBEDDINGS', 'TOOLS', 'VISION', 'JSON_SCHEMA'] as const;

/** The local models neither see images nor answer to a schema: these need a remote provider. */
const REMOTE_CAPABILITIES = ['VISION', 'JSON_SCHEMA'] as const;
export const MODEL_STATUSES = ['ACTIVE', 'DEPRECATED', 'RETIRED'] as const;

const modelRef = modelRefSchema();

const modelSchema = z
  .object({
    id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:/-]*$/, 'letters, digits and . _ : / - only (@ separates a version)'),
    provider: z.string().min(1),
    /** The model name the provider knows; defaults to the id. */
    upstream: z.string().min(1).optional(),
    version: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/),
    aliases: z.array(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:/-]*$/)).default([]),
    capabilities: z.array(z.enum(CAPABILITIES)).min(1),
    /** Tokens per minute this model version may take across every caller (reserve, then reconcile). */
    tokensPerMinute: z.number().int().positive().optional(),
    contextWindow: z.number().int().positive(),
    maxOutputTokens: z.number().int().positive(),
    /** Embedding models only: vector length. */
    dimensions: z.number().int().positive().optional(),
    /** Embedding models only: most inputs per provider call. */
    maxBatchSize: z.number().int().positive().optional(),
    pricing: z
      .object({
        inputPerMillionTokens: z.number().min(0),
        outputPerMillionTokens: z.number().min(0),
      })
      .strict()
      .default({ inputPerMillionTokens: 0, outputPerMillionTokens: 0 }),
    /** The version a bare id resolves to; without one, the first configured version of the id. */
    default: z.boolean().default(false),
    /** DEPRECATED still answers (and says so); RETIRED is refused, naming the replacement. */
    status: z.enum(MODEL_STATUSES).default('ACTIVE'),
    /** ISO date from which a deprecated version is retired. */
    sunset: z.iso.date().optional(),
    /** What to use instead: a model id, alias or id@version. */
    replacement: modelRef.optional(),
  })
  .strict();
export type ModelConfig = z.infer<typeof modelSchema>;

/**
 * A route: what a client-facing name (a model id, an alias or a new name) is served by. Targets
 * share traffic by weight (canary rollouts across versions or providers); fallbacks are tried,
 * in order, when the targets fail before the first token.
 */
const routeSchema = z
  .object({
    targets: z.array(z.object({ model: modelRef, weight: z.number().positive().default(1) }).strict()).min(1),
    fallbacks: z.array(modelRef).default([]),
  })
  .strict();
export type RouteConfig = z.infer<typeof routeSchema>;

const routingSchema = z
  .object({
    /** Attempts per target, the first included. */
    attemptsPerTarget: z.number().int().min(1).max(10).default(2),
    initialDelayMs: z.number().int().min(0).default(250),
    maxDelayMs: z.number().int().min(0).default(4_000),
    /** All attempts, waits and fallbacks, until the whole answer or a stream's first token. */
    deadlineMs: z.number().int().positive().default(60_000),
    /** Longest wait for a stream's first token before its target counts as failed. */
    firstTokenMs: z.number().int().positive().default(30_000),
    breaker: z
      .object({
        /** N: a target's circuit opens when at least half of its last 2N calls failed. */
        failures: z.number().int().min(1).default(5),
        halfOpenAfterMs: z.number().int().positive().default(30_000),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .prefault({});

/** The models a config without `models` serves: both on the local provider. */
export const LOCAL_MODELS: z.input<typeof modelSchema>[] = [
  {
    id: 'echo',
    provider: 'local',
    version: '1',
    aliases: ['default'],
    capabilities: ['CHAT', 'TOOLS'],
    contextWindow: 8192,
    maxOutputTokens: 4096,
  },
  {
    id: 'hashing-embed',
    provider: 'local',
    version: '1',
    capabilities: ['EMBEDDINGS'],
    contextWindow: 8192,
    maxOutputTokens: 1,
    dimensions: 256,
    maxBatchSize: 256,
  },
];

export const configSchema = z
  .object({
    router: routerSchema,
    subgraphs: subgraphsSchema,
    redis: z
      .object({
        /** One Redis (its password and database in the URL). */
        url: redisUrl.optional(),
        /**
         * A Redis whose master Sentinel names: the client asks the sentinels for the master and
         * follows it through a failover. The sentinels' own credentials go in their URLs; the
         * data nodes' in `username` and `passwordEnv`.
         */
        sentinel: z
          .object({
            masterName: z.string().min(1),
            sentinels: z.array(redisUrl).min(1),
            db: z.number().int().min(0).default(0),
          })
          .strict()
          .optional(),
        /**
         * A Redis Cluster: a few of its nodes (the client discovers the rest and follows MOVED,
         * ASK and replica promotions). Every key a command or script touches together shares a
         * hash tag (platform/redis/keys.ts), so none crosses slots.
         */
        cluster: z
          .object({ nodes: z.array(redisUrl).min(1) })
          .strict()
          .optional(),
        /** The data nodes' ACL user, with `sentinel` or `cluster` (a `url` carries its own). */
        username: z.string().min(1).optional(),
        /** The NAME of the environment variable holding the data nodes' password, with `sentinel` or `cluster`. */
        passwordEnv: envVarName.optional(),
        /** Prepended to every key modelgraph writes, so deployments can share one Redis. */
        keyPrefix: z
          .string()
          .regex(/^[A-Za-z0-9:_-]*$/)
          .default('modelgraph:'),
      })
      .strict()
      .refine((redis) => [redis.url, redis.sentinel, redis.cluster].filter(Boolean).length <= 1, {
        message: 'give one of url, sentinel and cluster',
      })
      .refine((redis) => !redis.url || (redis.username === undefined && redis.passwordEnv === undefined), {
        message: 'username and passwordEnv go with sentinel or cluster; a url carries its own credentials',
      })
      .prefault({}),
    /**
     * Whole (non-streamed) chat answers, cached when the request is deterministic (temperature 0)
     * or opts in, keyed on the normalised request and the model version. In Redis when
     * configured, else in process memory.
     */
    cache: z
      .object({
        enabled: z.boolean().default(true),
        ttlSeconds: z.number().int().positive().default(3_600),
        /** Answers are cached per tenant; true shares them across tenants (only for non-sensitive prompts). */
        shareAcrossTenants: z.boolean().default(false),
        /** In-memory cache only: most entries kept. */
        maxEntries: z.number().int().positive().default(10_000),
      })
      .strict()
      .prefault({}),
    access: accessSchema,
    /**
     * Token limits and USD budgets per tenant (keys carry their own, set with updateApiKey).
     * Reserved before each model call (prompt + maximum output), settled to the real usage after.
     */
    metering: z
      .object({
        tenants: z
          .record(
            z.string(),
            z
              .object({
                tokensPerMinute: z.number().int().positive().optional(),
                usdPerDay: z.number().positive().optional(),
                usdPerMonth: z.number().positive().optional(),
                /** Operations of the tenant's keys running at once, across replicas. */
                maxConcurrentRequests: z.number().int().positive().optional(),
              })
              .strict(),
          )
          .default({}),
        /**
         * Where usage events wait while the usage stream (Redis) cannot take them; on a volume that
         * outlives the process in production. At `maxEvents` held, new model calls are refused (503).
         */
        outbox: z
          .object({
            dir: z.string().min(1).default(join(tmpdir(), 'modelgraph-usage-outbox')),
            maxEvents: z.number().int().positive().default(100_000),
            retryMs: z.number().int().positive().default(1_000),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    /** The embeddings subgraph: request limits, cross-request batching and the vector cache. */
    embeddings: z
      .object({
        /** Most inputs in one request (BAD_USER_INPUT beyond). */
        maxInputs: z.number().int().positive().default(2_048),
        /**
         * How long the first input waits for others (from any caller) to share a provider call; a
         * call goes at once when it reaches the model's `maxBatchSize`. 0 turns batching off.
         */
        batchWindowMs: z.number().int().min(0).default(5),
        /** Vectors are cached by model version, dimensions and the text's SHA-256 (Redis or memory). */
        cacheTtlSeconds: z
          .number()
          .int()
          .min(0)
          .default(7 * 86_400),
        /** In-memory cache only: most vectors kept (a 3,072-dimension vector takes ~16 KB as stored). */
        cacheMaxEntries: z.number().int().positive().default(10_000),
      })
      .strict()
      .prefault({}),
    /** The agents subgraph: defaults and limits of agents and runs, and agents defined here. */
    agents: agentsSchema,
    log: z
      .object({
        level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'silent']).default('info'),
        /** What standard output may hold for a reader that fell behind before lines are dropped. */
        backlogBytes: z
          .number()
          .int()
          .positive()
          .default(8 * 1024 * 1024),
      })
      .strict()
      .prefault({}),
    providers: z
      .record(z.string().regex(/^[a-z][a-z0-9-]*$/, 'lower-case letters, digits and -'), providerSchema)
      .prefault({ local: { type: 'local' } }),
    models: z.array(modelSchema).prefault(LOCAL_MODELS),
    routes: z.record(modelRef, routeSchema).default({}),
    routing: routingSchema,
  })
  .strict()
  .superRefine((config, ctx) => {
    const refs = new Map<string, number>();
    config.models.forEach((model, index) => {
      if (!(model.provider in config.providers)) {
        ctx.addIssue({
          code: 'custom',
          path: ['models', index, 'provider'],
          message: `unknown provider "${model.provider}" (configured: ${Object.keys(config.providers).join(', ') || 'none'})`,
        });
      }
      const providerType = config.providers[model.provider]?.type;
      for (const capability of REMOTE_CAPABILITIES) {
        if (providerType === 'local' && model.capabilities.includes(capability)) {
          ctx.addIssue({
            code: 'custom',
            path: ['models', index, 'capabilities'],
            message: `${capability} needs a remote provider; "${model.provider}" is local`,
          });
        }
      }
      if (model.capabilities.includes('EMBEDDINGS') && model.dimensions === undefined) {
        ctx.addIssue({ code: 'custom', path: ['models', index, 'dimensions'], message: 'required for an EMBEDDINGS model' });
      }
      for (const ref of [`${model.id}@${model.version}`, ...model.aliases]) {
        const previous = refs.get(ref);
        if (previous !== undefined) {
          ctx.addIssue({
            code: 'custom',
            path: ['models', index],
            message: `"${ref}" is already used by models[${previous}]`,
          });
        }
        refs.set(ref, index);
      }
    });
    // Route targets and fallbacks must name configured, unretired models.
    // Resolve as the catalog does: a pin exactly, an alias, else a bare id's default version.
    const known = (ref: string) => {
      const [id, version] = ref.split('@');
      if (version) return config.models.find((model) => model.id === id && model.version === version);
      const aliased = config.models.find((model) => model.aliases.includes(ref));
      const versions = config.models.filter((model) => model.id === ref);
      return aliased ?? versions.find((model) => model.default) ?? versions[0];
    };
    for (const [name, route] of Object.entries(config.routes)) {
      const refsOfRoute = [
        ...route.targets.map((target, index) => ({ ref: target.model, path: ['routes', name, 'targets', index, 'model'] })),
        ...route.fallbacks.map((ref, index) => ({ ref, path: ['routes', name, 'fallbacks', index] })),
      ];
      for (const { ref, path } of refsOfRoute) {
        const model = known(ref);
        if (!model) ctx.addIssue({ code: 'custom', path, message: `no configured model "${ref}"` });
        else if (model.status === 'RETIRED' || (model.sunset !== undefined && model.sunset <= new Date().toISOString().slice(0, 10))) {
          ctx.addIssue({ code: 'custom', path, message: `"${ref}" is retired` });
        }
      }
    }
  });

export type Config = z.infer<typeof configSchema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Formats zod issues as `path: message` lines, the path written as in the YAML file. */
function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.reduce<string>(
        (text, part) => (typeof part === 'number' ? `${text}[${part}]` : text ? `${text}.${String(part)}` : String(part)),
        '',
      );
      return `  ${path || '(root)'}: ${issue.message}`;
    })
    .join('\n');
}

/** Parses an already-loaded document (an object from YAML) into a Config, or throws ConfigError. */
export function parseConfig(document: unknown, source = 'config'): Config {
  const result = configSchema.safeParse(document ?? {});
  if (!result.success) {
    throw new ConfigError(`invalid ${source}:\n${describeIssues(result.error)}`);
  }
  return result.data;
}

export interface ConfigSource {
  /** `--config` flag value, if given. */
  flag?: string | undefined;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/**
 * Loads the config: `--config <file>`, else `MODELGRAPH_CONFIG`, else `modelgraph.yaml` in the
 * working directory, else the embedded defaults. A named file that does not exist is an error;
 * only the implicit default may be absent. `REDIS_URL` and `LOG_LEVEL` override the file.
 */
export function loadConfig({ flag, env = process.env, cwd = process.cwd() }: ConfigSource = {}): Config {
  const named = flag ?? env.MODELGRAPH_CONFIG;
  const file = resolve(cwd, named ?? DEFAULT_CONFIG_FILE);
  let document: Record<string, unknown> = {};
  if (existsSync(file)) {
    let parsed: unknown;
    try {
      parsed = parseYaml(readFileSync(file, 'utf8'));
    } catch (error) {
      throw new ConfigError(`invalid ${file}: not YAML: ${(error as Error).message}`);
    }
    if (parsed !== null && parsed !== undefined && (typeof parsed !== 'object' || Array.isArray(parsed))) {
      throw new ConfigError(`invalid ${file}: the top level must be a mapping`);
    }
    document = (parsed ?? {}) as Record<string, unknown>;
  } else if (named !== undefined) {
    throw new ConfigError(`config file not found: ${file}`);
  }
  const overrides = structuredClone(document);
  if (env.REDIS_URL) {
    // The variable names the Redis to use, in place of whatever the file says (one, Sentinel or Cluster).
    const {
      sentinel: _sentinel,
      cluster: _cluster,
      username: _username,
      passwordEnv: _passwordEnv,
      ...rest
    } = (overrides.redis as Record<string, unknown> | undefined) ?? {};
    overrides.redis = { ...rest, url: env.REDIS_URL };
  }
  if (env.LOG_LEVEL) overrides.log = { ...(overrides.log as object | undefined), level: env.LOG_LEVEL };
  return parseConfig(overrides, existsSync(file) ? file : 'embedded defaults');
}

/** The URL the router uses to reach a subgraph. */
export function subgraphUrl(config: Config, name: SubgraphName): string {
  const subgraph = config.subgraphs[name];
  return subgraph.url ?? `http://${subgraph.host}:${subgraph.port}/graphql`;
}
