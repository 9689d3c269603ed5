import { GraphQLError, locatedError } from 'graphql';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ErrorCode, codedError } from '../errors.ts';
import { maskError } from './subgraph-server.ts';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { log, lines };
}

describe('subgraph error masking', () => {
  it('keeps an error coded where it was raised, located by graphql-js', () => {
    const { log, lines } = capture();
    const original = locatedError(codedError(ErrorCode.MODEL_NOT_FOUND, 'no model "x"', { model: 'x' }), undefined, ['chat']);
    const masked = maskError({ ...original.toJSON(), extensions: { ...original.extensions, stacktrace: ['at x'] } }, original, log);
    expect(masked).toMatchObject({ message: 'no model "x"', path: ['chat'], extensions: { code: 'MODEL_NOT_FOUND', model: 'x' } });
    expect(masked.extensions).not.toHaveProperty('stacktrace');
    expect(lines).toHaveLength(0);
  });

  it('masks and logs an uncoded error even though Apollo already stamped INTERNAL_SERVER_ERROR on it', () => {
    const { log, lines } = capture();
    const original = locatedError(new Error('connect ECONNREFUSED 10.0.0.7:5432 password=hunter2'), undefined, ['chat']);
    const formatted = { message: original.message, path: ['chat'], extensions: { code: 'INTERNAL_SERVER_ERROR' } };
    const masked = maskError(formatted, original, log);
    expect(masked).toEqual({ message: 'Internal server error', path: ['chat'], extensions: { code: 'INTERNAL_SERVER_ERROR' } });
    expect(lines[0]?.msg).toBe('unexpected error');
  });

  it('codes an operation its caller abandoned as CANCELLED, logged as that and not as an error', () => {
    const { log, lines } = capture();
    const aborted = locatedError(new DOMException('This operation was aborted', 'AbortError'), undefined, ['chat']);
    // graphql-tools wraps an error from a subscription's source once more.
    const original = new GraphQLError(aborted.message, { originalError: aborted });
    const masked = maskError({ message: original.message, path: ['chat'] }, original, log);
    expect(masked).toEqual({ message: 'The operation was cancelled.', path: ['chat'], extensions: { code: 'CANCELLED' } });
    expect(lines.map((line) => [line.level, line.msg])).toEqual([[30, 'operation cancelled']]);
  });

  it("drops a coded error's HTTP status, which was for the subgraph's own answer", () => {
    const { log } = capture();
    const original = new GraphQLError('Variable "$input" got invalid value', {
      extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } },
    });
    expect(maskError(original.toJSON(), original, log).extensions).toEqual({ code: 'BAD_USER_INPUT' });
  });

  it('keeps request errors from Apollo, re-coded from its own vocabulary', () => {
    const { log } = capture();
    const original = new GraphQLError('POST body missing', { extensions: { code: 'BAD_REQUEST' } });
    expect(maskError(original.toJSON(), original, log)).toEqual({ message: 'POST body missing', extensions: { code: 'BAD_USER_INPUT' } });
  });
});
