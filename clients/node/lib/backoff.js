/**
 * Reconnect waits: 250 ms doubling up to 5 s, each wait a random factor of
 * 0.5 to 1.5 times the current step, so that a fleet does not reconnect in
 * step.
 */

export const INITIAL_BACKOFF_MS = 250;
export const MAX_BACKOFF_MS = 5000;

export class Backoff {
  /**
   * @param {{ initialMs?: number, maxMs?: number, random?: () => number }} [options]
   */
  constructor(options = {}) {
    this.initialMs = options.initialMs ?? INITIAL_BACKOFF_MS;
    this.maxMs = options.maxMs ?? MAX_BACKOFF_MS;
    if (!(this.initialMs > 0) || !(this.maxMs >= this.initialMs)) {
      throw new RangeError('backoff: need 0 < initialMs <= maxMs');
    }
    this.random = options.random ?? Math.random;
    this.step = this.initialMs;
  }

  /** The next wait in milliseconds; the step doubles for the one after. */
  next() {
    const r = Math.min(Math.max(this.random(), 0), 1);
    const wait = this.step * (0.5 + r);
    this.step = Math.min(this.step * 2, this.maxMs);
    return Math.round(wait);
  }

  /** Back to the first step (after a connection that held). */
  reset() {
    this.step = this.initialMs;
  }
}
