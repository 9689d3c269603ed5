/**
 * The one Server-Sent Events parser: bytes → text → events, with eventsource-parser doing the
 * framing (multi-line data, comments, CRLF, chunk boundaries anywhere). It takes any async
 * iterable of bytes — a Node stream from undici's `request`, or a web stream from fetch — and
 * feeds the parser directly: no TextDecoderStream and transform stream per upstream call.
 */
import { createParser, type EventSourceMessage } from 'eventsource-parser';

export type { EventSourceMessage };

export async function* parseSse(body: AsyncIterable<Uint8Array>): AsyncGenerator<EventSourceMessage> {
  const decoder = new TextDecoder();
  let events: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (event) => events.push(event) });
  // Ending early (return() from the consumer) ends the loop, which closes the body.
  for await (const chunk of body) {
    parser.feed(decoder.decode(chunk, { stream: true }));
    if (events.length === 0) continue;
    const ready = events;
    events = [];
    yield* ready;
  }
  parser.feed(decoder.decode());
  yield* events;
}
