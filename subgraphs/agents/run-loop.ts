/**
 * One agent run, start to end: call the model with the agent's tools, run the tool calls it asks
 * for (concurrently), give it the results, and repeat until it answers without tools or a limit
 * ends the run. Every change is an event appended to the run's stream together with the snapshot it
 * leads to, so a reader of the run and a follower of its events always agree.
 *
 * The model and every tool operation are called through the router as the run's owner
 * (router-client.ts). A tool the owner may not call, arguments that do not fit the operation's
 * variables, a tool outside the agent's list or an oversized result fail that tool call only: the
 * model is shown the coded error and decides what to do next.
 */
import type { Config } from '../../platform/config.ts';
import { ErrorCode } from '../../platform/errors.ts';
import type { Logger } from '../../platform/logger.ts';
import type { Principal } from '../../platform/identity/principal.ts';
import type { ModelCatalog } from '../../providers/catalog.ts';
import type { ChatMessage } from '../../providers/contract.ts';
import type { AgentMetrics } from './metrics.ts';
import { countChatTokens, countTextTokens } from '../../providers/tokens.ts';
import { parseToolArguments, type OperationTool } from './operation-tools.ts';
import type { AgentRunEventRecord, AgentRunRecord, AgentRunStatus, RunError, StepRecord, ToolCallRecord } from './records.ts';
import { firstError, type ChatInputWire, type GraphQLResult, type RouterClient } from './router-client.ts';
import { RunFinishedError, type RunStore } from './run-store.ts';
import { nanosToUsd, reservationNanos, tokensPaidBy, usdToNanos, type Pricing } from '../../platform/metering/money.ts';
import { NO_SPEND, addSpend, spendOf, type Spend } from '../../platform/metering/spend.ts';

export interface RunLoopDeps {
  runs: RunStore;
  router: RouterClient;
  catalog: ModelCatalog;
  settings: Config['agents'];
  log: Logger;
  metrics: AgentMetrics;
}

/** Why a run stops early; thrown as the abort reason of its signal. */
export class RunStop {
  constructor(
    readonly status: Extract<AgentRunStatus, 'FAILED' | 'CANCELLED'>,
    readonly error: RunError,
  ) {}
}

type ToolCall = { id: string; name: string; arguments: string };

const now = () => new Date().toISOString();

export class RunLoop {
  readonly #deps: RunLoopDeps;
  readonly #run: AgentRunRecord;
  readonly #principal: Principal;
  readonly #tools: OperationTool[];
  /** Aborted when the runner stops the run, and when the run itself ends: nothing it started outlives it. */
  readonly #controller = new AbortController();
  readonly #signal = this.#controller.signal;
  readonly #messages: ChatInputWire['messages'];
  /** Appends in order, one at a time: tool calls end concurrently, their events must not interleave. */
  #appending: Promise<unknown> = Promise.resolve();
  /** Set once the end is being recorded (or the run was ended elsewhere): later events are dropped. */
  #ended = false;

  constructor(run: AgentRunRecord, principal: Principal, tools: OperationTool[], signal: AbortSignal, deps: RunLoopDeps) {
    this.#run = run;
    this.#principal = principal;
    this.#tools = tools;
    this.#deps = deps;
    if (signal.aborted) this.#controller.abort(signal.reason);
    else signal.addEventListener('abort', () => this.#controller.abort(signal.reason), { once: true });
    this.#messages = [
      { role: 'SYSTEM', content: run.agent.instructions },
      { role: 'USER', content: run.input },
    ];
  }

  /** Runs to the end and records it; never throws for the run's own outcomes. */
  async execute(): Promise<void> {
    const run = this.#run;
    run.status = 'RUNNING';
    run.startedAt = now();
    let outcome: { status: AgentRunStatus; output: string | null; error: RunError | null };
    try {
      outcome = { status: 'SUCCEEDED', output: await this.#loop(), error: null };
    } catch (error) {
      const stop = error instanceof RunStop ? error : this.#signal.reason instanceof RunStop ? this.#signal.reason : undefined;
      if (!stop) this.#deps.log.error({ err: error, runId: run.id }, 'agent run failed unexpectedly');
      const { status, error: runError } =
        stop ?? new RunStop('FAILED', { code: ErrorCode.INTERNAL_SERVER_ERROR, message: 'the run failed unexpectedly' });
      outcome = { status, output: null, error: runError };
    }
    // Calls still in flight (siblings of a failed tool call) stop before the end is recorded.
    if (!this.#signal.aborted) this.#controller.abort(new RunStop('CANCELLED', { code: ErrorCode.CANCELLED, message: 'the run ended' }));
    await this.#finish(outcome.status, outcome.output, outcome.error);
  }

  async #loop(): Promise<string> {
    const { maxSteps } = this.#run.agent;
    for (let number = 1; ; number += 1) {
      this.#checkSignal();
      const maxTokens = this.#callMaxTokens();
      const step: StepRecord = { number, content: '', toolCalls: [], usage: NO_SPEND, startedAt: now(), finishedAt: null };
      this.#run.steps.push(step);
      await this.#append({ type: 'STEP_STARTED', at: step.startedAt, step: number }, true);
      const toolCalls = await this.#callModel(step, maxTokens);
      if (toolCalls.length === 0) {
        step.finishedAt = now();
        return step.content;
      }
      // The calls of the last allowed step would run with no model call left to read their results.
      if (number >= maxSteps) {
        step.finishedAt = now();
        throw new RunStop('FAILED', {
          code: ErrorCode.STEP_LIMIT_EXCEEDED,
          message: `the agent asked for tools after its last allowed step (maxSteps ${maxSteps})`,
        });
      }
      await this.#runTools(step, toolCalls);
      step.finishedAt = now();
    }
  }

  /** One model call, its text passed on as it comes; returns the tool calls it asks for. */
  async #callModel(step: StepRecord, maxTokens: number | undefined): Promise<ToolCall[]> {
    const { agent, tags } = this.#run;
    const input: ChatInputWire = {
      model: agent.model,
      messages: this.#messages,
      ...(this.#tools.length && {
        tools: this.#tools.map((tool) => ({ name: tool.name, description: tool.description, parameters: JSON.stringify(tool.parameters) })),
      }),
      ...(maxTokens !== undefined && { maxTokens }),
      tags,
    };
    for await (const event of this.#deps.router.chat(this.#principal, input, `${this.#run.id}-${step.number}`, this.#signal)) {
      if (event.kind === 'delta') {
        if (event.content === '') continue;
        step.content += event.content;
        await this.#append({ type: 'TEXT_DELTA', at: now(), step: step.number, content: event.content }, false);
        continue;
      }
      this.#charge(step, event.usage);
      if (event.kind === 'failed') {
        step.finishedAt = now();
        throw new RunStop('FAILED', event.error);
      }
      const calls = event.toolCalls;
      this.#messages.push({ role: 'ASSISTANT', content: step.content, ...(calls.length && { toolCalls: calls }) });
      return calls;
    }
    throw new RunStop('FAILED', { code: ErrorCode.UPSTREAM_STREAM_INTERRUPTED, message: 'the model stream ended before it finished' });
  }

  #charge(step: StepRecord, usage: Spend): void {
    step.usage = addSpend(step.usage, usage);
    this.#run.usage = addSpend(this.#run.usage, usage);
  }

  async #runTools(step: StepRecord, calls: ToolCall[]): Promise<void> {
    // Each call joins the snapshot with its own event, so a snapshot never runs ahead of its cursor.
    for (const call of calls) {
      step.toolCalls.push({ id: call.id, tool: call.name, arguments: call.arguments, result: null, error: null });
      await this.#append(
        { type: 'TOOL_CALLED', at: now(), step: step.number, callId: call.id, tool: call.name, arguments: call.arguments },
        true,
      );
    }
    // Independent calls run at once; each result is recorded as it arrives. One that fails the
    // run (its result could not be recorded) ends it, and the end aborts the others.
    const settled = await Promise.allSettled(step.toolCalls.map((call, index) => this.#runTool(step, call, index)));
    const failure = settled.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
    if (failure) throw failure.reason;
    this.#checkSignal();
    // The model reads the results in the order it asked for them.
    for (const call of step.toolCalls) {
      this.#messages.push({
        role: 'TOOL',
        toolCallId: call.id,
        content: call.error && call.result === null ? JSON.stringify({ error: call.error }) : call.result!,
      });
    }
  }

  async #runTool(step: StepRecord, call: ToolCallRecord, index: number): Promise<void> {
    const outcome = await this.#toolOutcome(call, `${this.#run.id}-${step.number}-${index}`);
    call.result = outcome.result;
    call.error = outcome.error;
    // Model calls the tool's operation made (a chat, embeddings) are the run's spending too.
    if (outcome.spend) this.#charge(step, outcome.spend);
    this.#deps.metrics.toolCalls.inc({ outcome: outcome.error?.code ?? 'OK' });
    await this.#append(
      { type: 'TOOL_RESULTED', at: now(), step: step.number, callId: call.id, tool: call.tool, result: call.result, error: call.error },
      true,
    );
  }

  /** `requestId` is ours: the model's call ids may hold anything, and go nowhere near a header. */
  async #toolOutcome(
    call: ToolCallRecord,
    requestId: string,
  ): Promise<{ result: string | null; error: RunError | null; spend?: Spend | undefined }> {
    const tool = this.#tools.find((candidate) => candidate.name === call.tool);
    if (!tool) {
      const names = this.#tools.map((candidate) => candidate.name).join(', ') || 'none';
      return {
        result: null,
        error: { code: ErrorCode.TOOL_NOT_ALLOWED, message: `there is no tool "${call.tool}" for this agent (its tools: ${names})` },
      };
    }
    const parsed = parseToolArguments(call.arguments);
    if (!parsed.ok)
      return {
        result: null,
        error: { code: ErrorCode.BAD_USER_INPUT, message: `the arguments of "${tool.name}" are not a JSON object: ${parsed.error}` },
      };
    const coerced = tool.coerce(parsed.value);
    if (!coerced.ok)
      return {
        result: null,
        error: {
          code: ErrorCode.BAD_USER_INPUT,
          message: `the arguments of "${tool.name}" do not fit its parameters: ${coerced.errors.join('; ')}`,
        },
      };
    let answer: GraphQLResult;
    try {
      answer = await this.#deps.router.execute(
        this.#principal,
        { query: tool.document, variables: coerced.variables, operationName: tool.operationName },
        requestId,
        this.#signal,
      );
    } catch (error) {
      if (this.#signal.aborted) return { result: null, error: stopError(this.#signal.reason) };
      throw error;
    }
    const spend = spendOf(answer.extensions);
    const result = JSON.stringify(compact(answer));
    const max = this.#deps.settings.maxToolResultBytes;
    if (Buffer.byteLength(result) > max) {
      return {
        result: null,
        error: {
          code: ErrorCode.TOOL_RESULT_TOO_LARGE,
          message: `the result of "${tool.name}" is ${Buffer.byteLength(result)} bytes, over the ${max}-byte limit; ask for less`,
        },
        spend,
      };
    }
    return { result, error: answer.errors?.length ? firstError(answer.errors) : null, spend };
  }

  /**
   * The most output tokens the next call may ask for within the run's token and USD limits, priced
   * at the dearest version the model could be served by; undefined when the run has no limits.
   */
  #callMaxTokens(): number | undefined {
    const { agent, usage } = this.#run;
    if (agent.maxTokens === null && agent.maxUsd === null) return undefined;
    const plan = this.#deps.catalog.plan(agent.model);
    if (!plan) return undefined;
    const targets = [plan.model, ...plan.targets.map((target) => target.info)];
    const messages: ChatMessage[] = this.#messages.map((message) =>
      message.role === 'TOOL'
        ? { role: 'tool', content: message.content, toolCallId: message.toolCallId ?? '' }
        : { role: message.role.toLowerCase() as 'user', content: message.content },
    );
    const prompt =
      countChatTokens(messages) +
      (this.#tools.length
        ? countTextTokens(JSON.stringify(this.#tools.map(({ name, description, parameters }) => ({ name, description, parameters }))))
        : 0);
    let most = Math.min(plan.model.maxOutputTokens, plan.model.contextWindow - prompt);
    if (most < 1)
      throw new RunStop('FAILED', {
        code: ErrorCode.CONTEXT_WINDOW_EXCEEDED,
        message: `the conversation (${prompt} tokens) no longer fits the context window of "${plan.model.id}" (${plan.model.contextWindow})`,
      });
    if (agent.maxTokens !== null) {
      most = Math.min(most, agent.maxTokens - usage.totalTokens - prompt);
      if (most < 1)
        throw new RunStop('FAILED', {
          code: ErrorCode.TOKEN_LIMIT_EXCEEDED,
          message: `the run has ${Math.max(0, agent.maxTokens - usage.totalTokens)} of its ${agent.maxTokens} tokens left, not enough for the next step's prompt (${prompt}) and any output`,
        });
    }
    if (agent.maxUsd !== null) {
      const dearest: Pricing = {
        inputPerMillionTokens: Math.max(...targets.map((model) => model.pricing.inputPerMillionTokens)),
        outputPerMillionTokens: Math.max(...targets.map((model) => model.pricing.outputPerMillionTokens)),
      };
      const unspent = usdToNanos(agent.maxUsd) - usdToNanos(usage.costUsd);
      // The prompt's price is a worst case, like a reservation's: rounded up.
      const left = unspent - reservationNanos(dearest, { promptTokens: prompt, completionTokens: 0 });
      if (dearest.outputPerMillionTokens > 0) most = Math.min(most, tokensPaidBy(left, dearest.outputPerMillionTokens));
      if (left <= 0 || most < 1)
        throw new RunStop('FAILED', {
          code: ErrorCode.BUDGET_EXCEEDED,
          message: `the run has $${nanosToUsd(Math.max(0, unspent)).toFixed(6)} of its $${agent.maxUsd} left, not enough for the next step`,
        });
    }
    return Math.max(1, most);
  }

  #checkSignal(): void {
    if (this.#signal.aborted)
      throw this.#signal.reason instanceof RunStop
        ? this.#signal.reason
        : new RunStop('CANCELLED', { code: ErrorCode.CANCELLED, message: 'the run was stopped' });
  }

  async #finish(status: AgentRunStatus, output: string | null, error: RunError | null): Promise<void> {
    if (this.#ended) return;
    const run = this.#run;
    run.status = status;
    run.output = output;
    run.error = error;
    run.finishedAt = now();
    for (const step of run.steps) step.finishedAt ??= run.finishedAt;
    this.#deps.metrics.runsFinished.inc({ status, code: error?.code ?? '' });
    const end = this.#append({ type: 'RUN_FINISHED', at: run.finishedAt, status, output, error, usage: run.usage }, true);
    this.#ended = true;
    await end.catch((failure: unknown) =>
      // Unrecorded (Redis is gone, or the run was already ended as abandoned): once the lease lapses, readers end it.
      this.#deps.log.error({ err: failure, runId: run.id, status }, 'could not record the end of an agent run'),
    );
  }

  /**
   * Appends an event (with the snapshot it leads to, taken now), after those before it. A run
   * found already ended (a reader took it for abandoned while this replica could not renew its
   * lease) stops at once: its outcome is decided, and it must not act for its owner any longer.
   */
  #append(event: AgentRunEventRecord, withSnapshot: boolean): Promise<unknown> {
    if (this.#ended) return Promise.resolve();
    const snapshot = withSnapshot ? structuredClone(this.#run) : undefined;
    const appended = this.#appending.then(() => this.#deps.runs.append(this.#run.id, event, snapshot));
    // A failed append fails this caller; the next one still runs.
    this.#appending = appended.catch((error: unknown) => {
      if (error instanceof RunFinishedError && !this.#ended) {
        this.#ended = true;
        this.#controller.abort(new RunStop('FAILED', { code: ErrorCode.INTERNAL_SERVER_ERROR, message: 'the run was ended elsewhere' }));
      }
    });
    return appended;
  }
}

function stopError(reason: unknown): RunError {
  return reason instanceof RunStop ? reason.error : { code: ErrorCode.CANCELLED, message: 'the run was stopped' };
}

/** What the model and the run record keep of a GraphQL result: data, and errors with message, code and path. */
function compact(result: GraphQLResult): GraphQLResult {
  return {
    ...(result.data !== undefined && { data: result.data }),
    ...(result.errors?.length && {
      errors: result.errors.map((error) => ({
        message: error.message,
        ...(error.path && { path: error.path }),
        extensions: { code: typeof error.extensions?.code === 'string' ? error.extensions.code : ErrorCode.INTERNAL_SERVER_ERROR },
      })),
    }),
  };
}
