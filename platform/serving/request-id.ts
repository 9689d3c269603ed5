/**
 * Request ids: taken from the client's `x-request-id` when it is a sane token, otherwise minted.
 * The router forwards it to subgraphs (HTTP header, or the `requestId` extension of a WS
 * subscribe message) so one id follows a request through every log line.
 */
import { randomUUID } from 'node:crypto';

export const REQUEST_ID_HEADER = 'x-request-id';
export const REQUEST_ID_EXTENSION = 'requestId';

const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export function acceptRequestId(candidate: unknown): string {
  return typeof candidate === 'string' && SAFE_REQUEST_ID.test(candidate) ? candidate : randomUUID();
}
