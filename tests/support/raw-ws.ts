/**
 * A bare WebSocket speaking (or deliberately mis-speaking) graphql-transport-ws, for tests that
 * break the protocol on purpose: every message and the close frame are recorded, and tests await
 * them as events instead of sleeping.
 */
import WebSocket from 'ws';

export const GRAPHQL_TRANSPORT_WS = 'graphql-transport-ws';

export interface ProtocolMessage {
  type: string;
  id?: string;
  payload?: unknown;
}

export interface Closed {
  code: number;
  reason: string;
}

export interface RawSocket {
  readonly socket: WebSocket;
  /** Every message received, in order. */
  readonly messages: ProtocolMessage[];
  /** Errors the client side saw (a refused handshake, a frame the server rejected...). */
  readonly errors: Error[];
  /** Settles with the socket once the handshake succeeds; rejects if it never opens. */
  readonly opened: Promise<WebSocket>;
  /** Resolves with the close code and reason once the socket is closed, whoever closed it. */
  readonly closed: Promise<Closed>;
  /** Sends an object as JSON, or a string as it is. */
  send(message: ProtocolMessage | string): void;
  /** The first message (received so far or later) that matches; rejects if the socket closes first. */
  waitFor(match: (message: ProtocolMessage) => boolean, what?: string): Promise<ProtocolMessage>;
  /** Sends `connection_init` with `payload` and awaits `connection_ack`. */
  init(payload?: Record<string, unknown>): Promise<void>;
  close(): void;
}

export interface RawSocketOptions {
  /** Subprotocols offered in the handshake; `graphql-transport-ws` unless told otherwise. */
  protocols?: string | string[];
  headers?: Record<string, string>;
}

export function openRawSocket(url: string, { protocols = GRAPHQL_TRANSPORT_WS, headers }: RawSocketOptions = {}): RawSocket {
  const socket = new WebSocket(url, protocols, { headers });
  const messages: ProtocolMessage[] = [];
  const errors: Error[] = [];
  const waiters = new Set<{
    match: (message: ProtocolMessage) => boolean;
    resolve: (message: ProtocolMessage) => void;
    reject: (error: Error) => void;
    what: string;
  }>();
  let closedWith: Closed | undefined;

  socket.on('error', (error) => errors.push(error));
  socket.on('message', (data) => {
    let message: ProtocolMessage;
    try {
      message = JSON.parse(String(data)) as ProtocolMessage;
    } catch {
      message = { type: '(not JSON)', payload: String(data) };
    }
    messages.push(message);
    for (const waiter of waiters) {
      if (!waiter.match(message)) continue;
      waiters.delete(waiter);
      waiter.resolve(message);
    }
  });
  const closed = new Promise<Closed>((resolve) => {
    socket.once('close', (code, reason) => {
      closedWith = { code, reason: reason.toString('utf8') };
      for (const waiter of waiters) waiter.reject(new Error(`socket closed (${code} ${closedWith.reason}) before ${waiter.what}`));
      waiters.clear();
      resolve(closedWith);
    });
  });
  const opened = new Promise<WebSocket>((resolve, reject) => {
    socket.once('open', () => resolve(socket));
    socket.once('close', (code) => reject(new Error(`socket closed (${code}) before it opened`)));
  });
  // A test that expects the handshake to fail awaits `closed`; the rejection is not unhandled.
  opened.catch(() => undefined);

  const raw: RawSocket = {
    socket,
    messages,
    errors,
    opened,
    closed,
    send(message) {
      socket.send(typeof message === 'string' ? message : JSON.stringify(message));
    },
    waitFor(match, what = 'the awaited message') {
      const seen = messages.find(match);
      if (seen) return Promise.resolve(seen);
      if (closedWith) return Promise.reject(new Error(`socket closed (${closedWith.code} ${closedWith.reason}) before ${what}`));
      return new Promise((resolve, reject) => waiters.add({ match, resolve, reject, what }));
    },
    async init(payload) {
      await opened;
      raw.send({ type: 'connection_init', ...(payload && { payload }) });
      await raw.waitFor((message) => message.type === 'connection_ack', 'connection_ack');
    },
    close() {
      if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) socket.close(1000, 'done');
    },
  };
  return raw;
}

/** A `subscribe` message. */
export function subscribeMessage(id: string, query: string, variables?: Record<string, unknown>): ProtocolMessage {
  return { id, type: 'subscribe', payload: { query, ...(variables && { variables }) } };
}
