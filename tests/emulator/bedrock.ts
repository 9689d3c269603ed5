/**
 * A provider emulator that speaks AWS Bedrock's Converse and ConverseStream wire format, on a free
 * loopback port: JSON answers, binary AWS event-stream frames (with the random `p` padding field
 * Bedrock adds to every event), errors as {message} plus x-amzn-ErrorType. Like the real service it
 * refuses unsigned requests, and it recomputes each SigV4 signature for the credentials it was told
 * to trust, so every test through it also proves the signing. Tests script what it answers next; by
 * default it echoes the last user message.
 */
import { Sha256 } from '@aws-crypto/sha256-js';
import { EventStreamCodec, type MessageHeaders } from '@smithy/eventstream-codec';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';

import { playChunks, readRequest, sendBrokenBody, sendJson, serve } from './http.ts';
import {
  contentPieces,
  halves,
  scriptedUsage,
  type ProviderEmulator,
  type RecordedRequest,
  type Scripted,
  type ScriptedChat,
  type ScriptedError,
  EmulatorLog,
} from './script.ts';

export type { RecordedRequest, Scripted, ScriptedChat, ScriptedError };

export interface EmulatedCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface BedrockRecordedRequest extends RecordedRequest {
  /** The body exactly as received, which is what the signature covers. */
  rawBody: string;
}

export interface BedrockEmulator extends ProviderEmulator {
  requests: BedrockRecordedRequest[];
  /** The region signatures must be scoped to. */
  region: string;
  /** Accepts requests signed with these credentials; other access keys get 403 UnrecognizedClientException. */
  trust(credentials: EmulatedCredentials): void;
}

// --- event-stream frames -----------------------------------------------------------------------

const codec = new EventStreamCodec(toUtf8, fromUtf8);
const PADDING = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

const stringHeaders = (headers: Record<string, string>): MessageHeaders =>
  Object.fromEntries(Object.entries(headers).map(([name, value]) => [name, { type: 'string' as const, value }]));

/** One ConverseStream event, padded as Bedrock pads them (so frame sizes do not reveal token lengths). */
export function eventFrame(eventType: string, payload: object): Uint8Array {
  const p = PADDING.slice(0, 1 + (JSON.stringify(payload).length % PADDING.length));
  return codec.encode({
    headers: stringHeaders({ ':event-type': eventType, ':content-type': 'application/json', ':message-type': 'event' }),
    body: fromUtf8(JSON.stringify({ ...payload, p })),
  });
}

/** An in-stream exception, e.g. `throttlingException` or `internalServerException`. */
export function exceptionFrame(exceptionType: string, message: string): Uint8Array {
  return codec.encode({
    headers: stringHeaders({ ':exception-type': exceptionType, ':content-type': 'application/json', ':message-type': 'exception' }),
    body: fromUtf8(JSON.stringify({ message })),
  });
}

/** A frame whose trailing message CRC no longer matches its bytes. */
export function corruptFrame(frame: Uint8Array): Uint8Array {
  const copy = Uint8Array.from(frame);
  copy[copy.length - 1]! ^= 0xff;
  return copy;
}

// --- SigV4 -------------------------------------------------------------------------------------

interface Denial {
  type: string;
  message: string;
}

const AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=([^/,\s]+)\/(\d{8})\/([^/,\s]+)\/([^/,\s]+)\/aws4_request,\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/;
/** AWS refuses signatures more than five minutes away from its clock. */
const MAX_SKEW_MS = 5 * 60_000;

function parseAmzDate(value: string): Date | undefined {
  const match = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!match) return undefined;
  const [, year, month, day, hour, minute, second] = match.map(Number) as [number, number, number, number, number, number, number];
  return new Date(Date.UTC(year, month - 1, day, hour, minute, second));
}

function headerValue(request: IncomingMessage, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

/**
 * Checks a request the way AWS does and says why it is refused, or returns undefined. The
 * signature is recomputed with the same SigV4 library from the headers the client says it signed,
 * the raw path and the raw body; the payload hash and session token come from what we trust, not
 * from the request, so a changed body or a stolen token does not verify.
 */
async function checkSignature(
  request: IncomingMessage,
  rawBody: Buffer,
  region: string,
  trusted: Map<string, EmulatedCredentials>,
): Promise<Denial | undefined> {
  const authorization = headerValue(request, 'authorization');
  if (!authorization) return { type: 'MissingAuthenticationTokenException', message: 'Missing Authentication Token' };
  const match = AUTHORIZATION.exec(authorization);
  if (!match)
    return {
      type: 'IncompleteSignatureException',
      message: "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'.",
    };
  const [, accessKeyId, scopeDate, scopeRegion, service, signedHeaderList] = match as unknown as [
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  if (service !== 'bedrock')
    return { type: 'InvalidSignatureException', message: "Credential should be scoped to correct service: 'bedrock'." };
  if (scopeRegion !== region)
    return { type: 'InvalidSignatureException', message: `Credential should be scoped to a valid region, not '${scopeRegion}'.` };
  const amzDate = headerValue(request, 'x-amz-date') ?? '';
  const signingDate = parseAmzDate(amzDate);
  if (!signingDate)
    return { type: 'IncompleteSignatureException', message: "Authorization header requires existence of a valid 'X-Amz-Date' header." };
  if (!amzDate.startsWith(scopeDate))
    return {
      type: 'InvalidSignatureException',
      message: 'Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.',
    };
  if (Math.abs(Date.now() - signingDate.getTime()) > MAX_SKEW_MS)
    return { type: 'InvalidSignatureException', message: `Signature expired: ${amzDate} is too far from now.` };
  const signedHeaders = signedHeaderList.split(';');
  if (!signedHeaders.includes('host') || !signedHeaders.includes('x-amz-date')) {
    return { type: 'InvalidSignatureException', message: "'Host' and 'X-Amz-Date' must be signed headers." };
  }
  const credentials = trusted.get(accessKeyId);
  if (!credentials) return { type: 'UnrecognizedClientException', message: 'The security token included in the request is invalid.' };

  const headers: Record<string, string> = {};
  for (const name of signedHeaders) {
    if (name === 'x-amz-content-sha256' || name === 'x-amz-security-token') continue; // recomputed / ours
    const value = headerValue(request, name);
    if (value !== undefined) headers[name] = value;
  }
  const [path = '/', query = ''] = (request.url ?? '/').split('?', 2);
  const signer = new SignatureV4({
    service: 'bedrock',
    region,
    credentials,
    sha256: Sha256,
    applyChecksum: signedHeaders.includes('x-amz-content-sha256'),
  });
  const expected = await signer.sign(
    new HttpRequest({
      method: request.method ?? 'POST',
      protocol: 'http:',
      hostname: '127.0.0.1',
      path,
      query: Object.fromEntries(new URLSearchParams(query)),
      headers,
      body: rawBody,
    }),
    { signingDate },
  );
  if (expected.headers.authorization === authorization) return undefined;
  return {
    type: 'InvalidSignatureException',
    message:
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.',
  };
}

// --- answers -----------------------------------------------------------------------------------

/** Bedrock's error type and message for a scripted status; 529 is its model-not-ready overload. */
const ERRORS: Record<number, [type: string, message: string]> = {
  400: ['ValidationException', 'Malformed input request, please reformat your input and try again.'],
  401: ['UnrecognizedClientException', 'The security token included in the request is invalid.'],
  403: ['AccessDeniedException', "You don't have access to the model with the specified model ID."],
  404: ['ResourceNotFoundException', 'Could not resolve the foundation model from the provided model identifier.'],
  408: ['ModelTimeoutException', 'Model has timed out in processing the request. Try your request again.'],
  413: ['ValidationException', 'Input is too long for requested model.'],
  424: ['ModelErrorException', 'The model encountered an error while processing the request.'],
  429: ['ThrottlingException', 'Too many requests, please wait before trying again.'],
  500: ['InternalServerException', 'The system encountered an unexpected error during processing. Try your request again.'],
  503: ['ServiceUnavailableException', 'Bedrock is unable to process your request.'],
  529: ['ModelNotReadyException', 'Model is not ready to serve inference requests. Try your request again later.'],
};

function sendError(response: ServerResponse, answer: ScriptedError, denial?: Denial): void {
  const [type, message] = denial
    ? [denial.type, denial.message]
    : (ERRORS[answer.status] ?? [
        answer.status >= 500 ? 'InternalServerException' : 'ValidationException',
        `emulated error ${answer.status}`,
      ]);
  sendJson(response, answer.status, answer.body ?? { message }, {
    'x-amzn-requestid': randomUUID(),
    'x-amzn-errortype': `${type}:http://internal.amazon.com/coral/com.amazon.bedrock/`,
    ...answer.headers,
  });
}

function lastUserMessage(body: Record<string, unknown>): string {
  const messages = (body.messages ?? []) as { role: string; content: { text?: string }[] }[];
  const last = messages.findLast((message) => message.role === 'user');
  return (last?.content ?? []).flatMap((block) => (typeof block.text === 'string' ? [block.text] : [])).join('');
}

function usageOf(answer: ScriptedChat, body: Record<string, unknown>) {
  const usage = scriptedUsage(answer, body.messages);
  return usage && { inputTokens: usage.prompt, outputTokens: usage.completion, totalTokens: usage.prompt + usage.completion };
}

const stopReasonOf = (answer: ScriptedChat) => answer.finishReason ?? (answer.toolCalls?.length ? 'tool_use' : 'end_turn');

function sendConverse(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): void {
  const headers = { 'content-type': 'application/json', 'x-amzn-requestid': randomUUID() };
  const broken = { malformed: '{"output": {"message": {"role": "assistant", "content": [', stalled: '{"output": {"message": ' };
  if (sendBrokenBody(response, answer, headers, broken)) return;
  const content = [
    ...(answer.content !== '' || !answer.toolCalls?.length ? [{ text: answer.content }] : []),
    ...(answer.toolCalls ?? []).map((call) => ({
      toolUse: { toolUseId: call.id, name: call.name, input: JSON.parse(call.arguments) as unknown },
    })),
  ];
  const usage = usageOf(answer, body);
  sendJson(
    response,
    200,
    {
      output: { message: { role: 'assistant', content } },
      stopReason: stopReasonOf(answer),
      ...(usage && { usage }),
      metrics: { latencyMs: 42 },
    },
    headers,
  );
}

async function streamConverse(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): Promise<void> {
  response.writeHead(200, { 'content-type': 'application/vnd.amazon.eventstream', 'x-amzn-requestid': randomUUID() });
  response.write(eventFrame('messageStart', { role: 'assistant' }));
  const frames = contentPieces(answer.content, answer.chunkChars).map((text) =>
    eventFrame('contentBlockDelta', { contentBlockIndex: 0, delta: { text } }),
  );
  const whole = await playChunks(response, answer, frames, (frame) => response.write(frame), {
    // Half a frame, so the client sees a body that ends inside one.
    cut: (frame) => frame.subarray(0, frame.length >> 1),
    malformed: corruptFrame,
    error: () =>
      exceptionFrame(
        'internalServerException',
        answer.errorMessage ?? 'The system encountered an unexpected error during processing. Try your request again.',
      ),
  });
  if (!whole) return;
  const hasText = answer.content !== '';
  if (hasText) response.write(eventFrame('contentBlockStop', { contentBlockIndex: 0 }));
  answer.toolCalls?.forEach((call, position) => {
    const contentBlockIndex = position + (hasText ? 1 : 0);
    response.write(eventFrame('contentBlockStart', { contentBlockIndex, start: { toolUse: { toolUseId: call.id, name: call.name } } }));
    for (const input of halves(call.arguments))
      response.write(eventFrame('contentBlockDelta', { contentBlockIndex, delta: { toolUse: { input } } }));
    response.write(eventFrame('contentBlockStop', { contentBlockIndex }));
  });
  response.write(eventFrame('messageStop', { stopReason: stopReasonOf(answer) }));
  const usage = usageOf(answer, body);
  response.end(eventFrame('metadata', { ...(usage && { usage }), metrics: { latencyMs: 42 } }));
}

// --- the server --------------------------------------------------------------------------------

const ROUTE = /^\/model\/([^/?]+)\/(converse|converse-stream)(\?|$)/;

export async function startBedrockEmulator(
  options: { region?: string; credentials?: EmulatedCredentials[] } = {},
): Promise<BedrockEmulator> {
  const region = options.region ?? 'us-east-1';
  const trusted = new Map((options.credentials ?? []).map((credentials) => [credentials.accessKeyId, credentials]));
  const log = new EmulatorLog<Scripted, BedrockRecordedRequest>();

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const { recorded, raw, isJson } = await readRequest(request);
    const { body } = recorded;
    log.record({ ...recorded, rawBody: raw.toString('utf8') }, response);
    // Refused requests never reach the model, so they leave the script alone.
    const denial = await checkSignature(request, raw, region, trusted);
    if (denial) return sendError(response, { kind: 'error', status: 403 }, denial);
    if (!isJson)
      return sendError(
        response,
        { kind: 'error', status: 400 },
        { type: 'SerializationException', message: 'Could not parse the request body as JSON.' },
      );
    const answer: Scripted = log.queue.shift() ?? { kind: 'chat', content: lastUserMessage(body) };
    if (answer.kind === 'error') return sendError(response, answer);
    const route = ROUTE.exec(recorded.path);
    if (!route)
      return sendError(response, { kind: 'error', status: 404 }, { type: 'UnknownOperationException', message: 'Unknown operation' });
    if (route[2] === 'converse-stream') return streamConverse(response, answer, body);
    return sendConverse(response, answer, body);
  }

  return {
    ...(await serve(log, '', handle)),
    region,
    trust: (credentials) => void trusted.set(credentials.accessKeyId, credentials),
  };
}
