/**
 * What a limit does when its state cannot be read (Redis unreachable): counted for every call its
 * fail mode decided, and warned about at most every DEGRADED_WARNING_MS with how many calls that
 * was — not once per call, which an outage under load would turn into a flood.
 */
import { ErrorCode, codedError } from '../../platform/errors.ts';
import type { Logger } from '../../platform/logger.ts';

export type FailMode = 'open' | 'closed';

const DEGRADED_WARNING_MS = 10_000;

/** `limits` names them in the warning ("rate limits", "concurrency limits"). */
export function degradedReporter(
  log: Logger,
  limits: string,
  failMode: FailMode,
  onDegraded: ((decision: 'allowed' | 'refused') => void) | undefined,
) {
  let lastWarning = 0;
  let since = 0;
  return {
    /** One call decided without the limiter; `detail` goes with the warning. */
    note(error: unknown, detail: Record<string, unknown> = {}) {
      onDegraded?.(failMode === 'open' ? 'allowed' : 'refused');
      since += 1;
      const now = Date.now();
      if (now - lastWarning < DEGRADED_WARNING_MS) return;
      log.warn(
        { err: error, ...detail, failMode, calls: since },
        `${limits} not checked, calls ${failMode === 'open' ? 'let through' : 'refused'}: limiter unavailable`,
      );
      lastWarning = now;
      since = 0;
    },
  };
}

/** The refusal of a call whose limit could not be checked, under `failMode: closed` (503, retry in 1 s). */
export const uncheckedRefusal = (message: string, extensions: Record<string, unknown>) =>
  codedError(ErrorCode.SERVICE_UNAVAILABLE, message, {
    ...extensions,
    retryAfterMs: 1_000,
    http: { status: 503, headers: { 'retry-after': '1' } },
  });
