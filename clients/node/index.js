/**
 * muster: the Node.js worker library for musterd.
 *
 *   import { Worker } from 'muster';
 *   const worker = new Worker({ capacity: 4 });
 *   worker.task('resize', async (task) => ({ ok: true }));
 *   await worker.run();
 */

export { Worker, Task } from './lib/worker.js';
export { Client, ENDED_STATES } from './lib/client.js';
export {
  MusterError,
  UnauthorizedError,
  FrameTooLargeError,
  TaskError,
  TaskCancelledError,
  TaskTimeoutError,
  HttpError,
} from './lib/errors.js';
export { MAX_FRAME_BYTES, encodeFrame, LineSplitter } from './lib/frame.js';
export { Backoff } from './lib/backoff.js';
