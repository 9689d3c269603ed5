import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { errorFromStatus } from './errors.ts';
import { HttpClient } from './http-client.ts';
import { parseSse } from './sse.ts';
import { readJson } from './wire.ts';

const servers: Server[] = [];
const clients: HttpClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.close()));
  for (const server of servers.splice(0)) server.closeAllConnections();
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

/** A loopback server; `connections` counts the TCP connections it accepted. */
async function serve(handle: (request: IncomingMessage, response: ServerResponse) => void) {
  const state: { connections: number; url: string; socket?: Socket; onBody?: (body: string) => void } = { connections: 0, url: '' };
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      state.onBody?.(Buffer.concat(chunks).toString());
      handle(request, response);
    });
  });
  server.on('connection', (socket: Socket) => {
    state.connections++;
    state.socket = socket;
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}

function client(totalMs = 10_000) {
  const created = new HttpClient('test', { connectMs: 1_000, firstByteMs: 5_000, idleMs: 5_000, totalMs });
  clients.push(created);
  return created;
}

const refusal = async (response: { status: number; headers: { get(name: string): string | null }; text(): Promise<string> }) => {
  await response.text();
  return errorFromStatus('test', response.status, response.headers);
};
const post = (http: HttpClient, url: string, signal = new AbortController().signal) =>
  http.postJson(url, { hello: 1 }, { headers: {}, signal, refusal });

describe('HttpClient', () => {
  it('follows up to two redirects within the origin, sending the same body again', async () => {
    const bodies: string[] = [];
    const moved = await serve((request, response) => {
      if (request.url === '/v1/chat') return response.writeHead(308, { location: '/v2/chat' }).end();
      if (request.url === '/v2/chat') return response.writeHead(307, { location: `${moved.url}/v3/chat` }).end();
      response.end(`{"path":"${request.url}"}`);
    });
    moved.onBody = (body) => bodies.push(body);
    const answer = await post(client(), `${moved.url}/v1/chat`);
    expect(await answer.text()).toBe('{"path":"/v3/chat"}');
    expect(bodies).toEqual(['{"hello":1}', '{"hello":1}', '{"hello":1}']);
  });

  it('never follows a redirect to another origin, which would be handed the credential', async () => {
    const seen: (string | undefined)[] = [];
    const elsewhere = await serve((request, response) => {
      seen.push(request.headers.authorization);
      response.end('{}');
    });
    const moved = await serve((_request, response) => response.writeHead(307, { location: `${elsewhere.url}/v1/chat` }).end());
    const failure = await client()
      .postJson(
        `${moved.url}/v1/chat`,
        { hello: 1 },
        { headers: { authorization: 'Bearer sk-secret' }, signal: new AbortController().signal, refusal },
      )
      .catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: 'UPSTREAM_UNAVAILABLE', retryable: true });
    expect(seen).toEqual([]);
  });

  it('fails a call redirected more than twice as an unavailable upstream', async () => {
    const loop = await serve((request, response) => response.writeHead(307, { location: request.url! }).end());
    await expect(post(client(), `${loop.url}/v1/chat`)).rejects.toMatchObject({ code: 'UPSTREAM_UNAVAILABLE', retryable: true });
  });

  it('times out a body that outlasts the total deadline', async () => {
    const slow = await serve((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.write('{"partial":');
    });
    const signal = new AbortController().signal;
    const answer = await post(client(200), `${slow.url}/v1/chat`, signal);
    await expect(readJson('test', answer, { signal } as never)).rejects.toMatchObject({ code: 'UPSTREAM_TIMEOUT' });
  });

  it('keeps the connection of a stream released after its last event, and closes a cancelled one', async () => {
    const stream = await serve((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write('data: {"n":1}\n\n');
      // The end marker, and a moment later the end of the body.
      response.write('data: [DONE]\n\n');
      setTimeout(() => response.end(), 20);
    });
    const http = client();
    const readToDone = async () => {
      // undici puts a connection back in its pool a turn of the event loop after its response ended.
      await new Promise((resolve) => setImmediate(resolve));
      const answer = await post(http, stream.url);
      for await (const event of parseSse(answer.body)) if (event.data === '[DONE]') break;
      return answer;
    };
    for (let call = 0; call < 3; call++) await (await readToDone()).release();
    expect(stream.connections).toBe(1);
    const cancelled = await readToDone();
    const closed = once(stream.socket!, 'close');
    cancelled.cancel();
    await closed;
  });
});
