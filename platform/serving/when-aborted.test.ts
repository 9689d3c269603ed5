import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { waitingOn, whenAborted } from './when-aborted.ts';

describe('whenAborted', () => {
  it('calls every listener still registered when the signal aborts, once, and none that were removed', () => {
    const controller = new AbortController();
    const calls: string[] = [];
    const removers = Array.from({ length: 50 }, (_, index) => whenAborted(controller.signal, () => calls.push(`op${index}`)));
    for (const remove of removers.slice(0, 45)) remove();
    expect(waitingOn(controller.signal)).toBe(5);
    controller.abort();
    controller.abort();
    expect(calls).toEqual(['op45', 'op46', 'op47', 'op48', 'op49']);
  });

  it('calls a listener at once on a signal that has aborted already', () => {
    const calls: number[] = [];
    whenAborted(AbortSignal.abort(), () => calls.push(1));
    expect(calls).toEqual([1]);
  });

  it('adds one listener to the signal however many operations wait on it', () => {
    const controller = new AbortController();
    const listeners = () => getEventListeners(controller.signal, 'abort').length;
    for (let index = 0; index < 20; index += 1) whenAborted(controller.signal, () => undefined);
    expect(listeners()).toBe(1);
  });
});
