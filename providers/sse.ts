/**
 * The one Server-Sent Events parser: bytes → text → events, with eventsource-parser doing the
 * framing (multi-line data, comments, CRLF, chunk boundaries anywhere).
 */
import { EventSourceParserStream, type EventSourceMessage } from 'eventsource-parser/stream';

export type { EventSourceMessage };

export function parseSse(body: ReadableStream<Uint8Array>): AsyncIterable<EventSourceMessage> {
  // Node's web-stream typings disagree on BufferSource vs Uint8Array; the runtime objects are fine.
  const decoder = new TextDecoderStream() as unknown as TransformStream<Uint8Array, string>;
  return body.pipeThrough(decoder).pipeThrough(new EventSourceParserStream()) as unknown as AsyncIterable<EventSourceMessage>;
}
