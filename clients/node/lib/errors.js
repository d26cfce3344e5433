/**
 * Errors raised by the library. Each has a string `code`: the daemon's own
 * reason when musterd refused something, or one of the library's.
 */

export class MusterError extends Error {
  /**
   * @param {string} message
   * @param {{ code?: string, cause?: unknown }} [options]
   */
  constructor(message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MusterError';
    this.code = options.code ?? 'error';
  }
}

/** musterd refused the heartbeat token: fatal, the worker stops. */
export class UnauthorizedError extends MusterError {
  constructor(message = 'musterd refused the heartbeat token', options = {}) {
    super(message, { ...options, code: 'unauthorized' });
    this.name = 'UnauthorizedError';
  }
}

/** A frame larger than the daemon's `max_frame_bytes`; nothing was sent. */
export class FrameTooLargeError extends MusterError {
  /**
   * @param {number} bytes
   * @param {number} limit
   * @param {string} [what]
   */
  constructor(bytes, limit, what = 'frame') {
    super(`${what} of ${bytes} bytes exceeds the ${limit}-byte frame limit`, { code: 'too_large' });
    this.name = 'FrameTooLargeError';
    this.bytes = bytes;
    this.limit = limit;
  }
}

/**
 * What a task handler throws to fail its task. `retryable: false` says
 * another attempt would fail the same way: the task ends `failed` at once.
 */
export class TaskError extends Error {
  /**
   * @param {string} message
   * @param {{ retryable?: boolean, exitCode?: number, cause?: unknown }} [options]
   */
  constructor(message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TaskError';
    this.retryable = options.retryable ?? true;
    if (options.exitCode !== undefined) this.exitCode = options.exitCode;
  }
}

/** The reason of a task's signal when musterd cancelled the task. */
export class TaskCancelledError extends MusterError {
  constructor(message = 'the task was cancelled') {
    super(message, { code: 'cancelled' });
    this.name = 'TaskCancelledError';
  }
}

/** The reason of a task's signal when its `timeout_ms` passed. */
export class TaskTimeoutError extends MusterError {
  constructor(ms) {
    super(`the task timed out after ${ms} ms`, { code: 'timed_out' });
    this.name = 'TaskTimeoutError';
    this.timeoutMs = ms;
  }
}

/** An HTTP API answer other than success. */
export class HttpError extends MusterError {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {unknown} [body]
   */
  constructor(status, code, message, body) {
    super(message, { code });
    this.name = 'HttpError';
    this.status = status;
    this.body = body;
  }
}
