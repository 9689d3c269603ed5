/**
 * Counts work in progress (requests, open subscriptions) so that shutdown can wait until there is
 * none, without polling.
 */
export class InFlight {
  #count = 0;
  #waiters: (() => void)[] = [];

  get count(): number {
    return this.#count;
  }

  /** Marks one unit of work as started; call the returned function once when it ends. */
  begin(): () => void {
    this.#count++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.#count--;
      if (this.#count === 0) for (const resolve of this.#waiters.splice(0)) resolve();
    };
  }

  /** Resolves 'idle' when nothing is in flight, or 'expired' at `deadline` (epoch ms). */
  async whenIdle(deadline: number): Promise<'idle' | 'expired'> {
    if (this.#count === 0) return 'idle';
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<'idle'>((resolve) => this.#waiters.push(() => resolve('idle')));
    const expired = new Promise<'expired'>((resolve) => {
      timer = setTimeout(() => resolve('expired'), Math.max(0, deadline - Date.now()));
    });
    const outcome = await Promise.race([idle, expired]);
    clearTimeout(timer);
    return outcome;
  }
}
