/**
 * The worker: a TCP session with musterd (hello, welcome, heartbeats at the
 * interval the welcome gives), over TLS when asked, task handlers, and
 * reconnects along a list of addresses. Or, with `transport: "udp"`,
 * heartbeats alone as datagrams.
 */

import { EventEmitter } from 'node:events';
import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import { inspect } from 'node:util';
import { Backoff } from './backoff.js';
import {
  MusterError,
  UnauthorizedError,
  FrameTooLargeError,
  TaskCancelledError,
  TaskTimeoutError,
} from './errors.js';
import { LineSplitter, MAX_FRAME_BYTES, encodeFrame, toJson, truncateUtf8, wellFormed } from './frame.js';
import {
  MAX_TASK_TYPE,
  MAX_TASK_TYPES,
  MAX_TEXT,
  checkLabels,
  checkWorkerId,
  defaultWorkerId,
  formatAddr,
  parseAddr,
  parseAddrs,
  parseLabels,
  readTokenFile,
  wholeNumber,
} from './options.js';
import { envFlag, workerTls } from './tls.js';

/** At most this many lines in one `task_log` frame. */
const MAX_LOG_LINES = 1024;
/** Longest `task_progress` message, and `task_update` error, in bytes. */
const MAX_PROGRESS_MESSAGE = 1024;
const MAX_ERROR = 4096;
/** At most this many tasks a hello re-reports. */
const MAX_RUNNING = 1024;
/** Addresses kept at most (the given ones and those welcomes named). */
const MAX_ADDRS = 64;
const MAX_RUN_MS = 30 * 24 * 3600 * 1000;
const MAX_CPU_PERCENT = 409600;
const MAX_RUNNING_TASKS = 256;
/** A session that lasted this long after its welcome starts the backoff afresh. */
const STABLE_MS = 3000;
/** Heartbeats sooner than the interval, for a change of state: at most ten a second. */
const MIN_BEAT_GAP_MS = 100;
/** setTimeout's longest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Codes that refuse a hello for good: trying again cannot help. */
const FATAL_HELLO_CODES = new Set(['unauthorized', 'worker_mismatch', 'bad_worker_id', 'reserved_id', 'bad_field', 'too_large']);
/** Heartbeat fields the library writes itself. */
const RESERVED_FIELDS = new Set(['type', 'worker_id', 'seq', 'token']);
const STATUSES = new Set(['idle', 'working', 'error']);
const NOT_HELD = /\btask (\S+) is not held\b/;

const noop = () => {};

/**
 * A task's signal, made the first time it is asked for. Most handlers never
 * look at theirs, and an AbortSignal is dear to make: on Node 20 each one
 * gets two hidden classes of its own (about 260 bytes, in the old
 * generation until a full GC). Made for every task, signals filled the old
 * generation under load, and the full GCs that followed started V8's memory
 * reducer, which then ran three more full GCs once the worker fell idle.
 */
function taskSignal(entry) {
  if (entry.controller === null) {
    entry.controller = new AbortController();
    if (entry.aborted) entry.controller.abort(entry.abortReason);
  }
  return entry.controller.signal;
}

/** Abort a task's signal (now if it was made, else when it is). */
function abortTask(entry, reason) {
  if (entry.aborted) return;
  entry.aborted = true;
  entry.abortReason = reason;
  entry.controller?.abort(reason);
}

/**
 * What a handler is given: one task to run.
 */
export class Task {
  #worker;
  #entry;

  constructor(worker, entry) {
    this.#worker = worker;
    this.#entry = entry;
    /** @type {string} */
    this.id = entry.id;
    /** @type {string} */
    this.type = entry.type;
    /** @type {unknown} */
    this.payload = entry.payload;
    /** @type {number | undefined} */
    this.timeoutMs = entry.timeoutMs;
    /** @type {string | undefined} */
    this.traceparent = entry.traceparent;
    /** @type {string | undefined} */
    this.tracestate = entry.tracestate;
  }

  /** Aborted when musterd cancels the task, its timeout passes, or the worker stops. */
  get signal() {
    return taskSignal(this.#entry);
  }

  /** Which attempt this is, from 1. */
  get attempt() {
    return this.#entry.attempt;
  }

  /**
   * Lines for the task's log (each argument one or more lines).
   * @param {...unknown} lines
   */
  log(...lines) {
    this.#worker._taskLog(this.#entry, lines);
  }

  /**
   * How far the task has come: `fraction` from 0 to 1, and/or a message.
   * @param {number | null} [fraction]
   * @param {string} [message]
   */
  progress(fraction, message) {
    this.#worker._taskProgress(this.#entry, fraction, message);
  }
}

/** The daemon's refusal of a hello whose worker id is not its client certificate's CN: fatal. */
function mismatch(id, where, message) {
  return new MusterError(
    `musterd at ${where} refused worker id ${id}: it is not the client certificate's (worker_mismatch): ${message}`,
    { code: 'worker_mismatch' },
  );
}

function describe(value) {
  if (typeof value === 'string') return value;
  if (value instanceof Error) return value.stack ?? String(value);
  return inspect(value, { breakLength: Infinity, depth: 4 });
}

/** `s` cut so that its JSON string form is at most `budget` bytes inside its quotes. */
function truncateForJson(s, budget) {
  let cut = truncateUtf8(s, budget);
  for (;;) {
    const over = Buffer.byteLength(JSON.stringify(cut), 'utf8') - 2 - budget;
    if (over <= 0) return cut;
    cut = truncateUtf8(cut, Math.max(0, Buffer.byteLength(cut, 'utf8') - over));
  }
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function checkNumber(name, v, max) {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > max) {
    throw new RangeError(`${name}: must be a number from 0 to ${max}`);
  }
}

function checkWhole(name, v) {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${name}: must be a whole number`);
}

function checkText(name, v) {
  if (typeof v !== 'string') throw new TypeError(`${name}: must be a string`);
  if (Buffer.byteLength(v, 'utf8') > MAX_TEXT) throw new RangeError(`${name}: longer than ${MAX_TEXT} bytes`);
}

/** One heartbeat field as musterd checks it; throws what it would refuse. */
function checkField(key, v) {
  switch (key) {
    case 'status':
      if (!STATUSES.has(v)) throw new TypeError('status: must be idle, working or error');
      return;
    case 'cpu_usage':
      return checkNumber(key, v, MAX_CPU_PERCENT);
    case 'memory_usage':
    case 'gpu_usage':
      return checkNumber(key, v, 100);
    case 'queue_depth':
      return checkWhole(key, v);
    case 'current_job': {
      if (v === null) return;
      if (!isObject(v)) throw new TypeError('current_job: must be an object or null');
      if (v.id != null && typeof v.id !== 'number') checkText('current_job.id', v.id);
      if (v.type != null) checkText('current_job.type', v.type);
      if (v.files != null) checkWhole('current_job.files', v.files);
      if (v.started_at != null) checkWhole('current_job.started_at', v.started_at);
      return;
    }
    case 'resource_usage': {
      if (!isObject(v)) throw new TypeError('resource_usage: must be an object');
      for (const k of ['rss_mb', 'heap_used_mb', 'heap_total_mb', 'external_mb', 'peak_rss_mb']) {
        if (v[k] != null) checkNumber(`resource_usage.${k}`, v[k], Number.MAX_VALUE);
      }
      for (const k of ['threads', 'fds', 'io_read_bytes', 'io_write_bytes']) {
        if (v[k] != null) checkWhole(`resource_usage.${k}`, v[k]);
      }
      return;
    }
    case 'running_tasks':
      if (!Array.isArray(v) || !v.every(isObject)) throw new TypeError('running_tasks: must be a list of objects');
      if (v.length > MAX_RUNNING_TASKS) throw new RangeError(`running_tasks: more than ${MAX_RUNNING_TASKS} entries`);
      return;
    case 'labels':
      checkLabels(v);
      return;
    default:
      // A field this library does not know: musterd ignores what it does
      // not know, so it only has to be JSON.
      return;
  }
}

export class Worker extends EventEmitter {
  /**
   * @param {import('../index.js').WorkerOptions} [options]
   */
  constructor(options = {}) {
    super();
    const env = options.env ?? process.env;
    this.id = checkWorkerId(options.id ?? env.MUSTER_WORKER_ID ?? defaultWorkerId());
    this._transport = options.transport ?? 'tcp';
    if (this._transport !== 'tcp' && this._transport !== 'udp') {
      throw new TypeError('transport: tcp or udp');
    }
    const wantTls = options.tls === undefined ? envFlag(env.MUSTER_TLS) : options.tls !== false;
    if (wantTls && this._transport === 'udp') {
      throw new TypeError(options.tls === undefined
        ? 'transport udp cannot use TLS, and MUSTER_TLS asks for it (pass tls: false for a UDP worker)'
        : 'transport udp cannot use TLS: datagrams go in the clear');
    }
    /** TLS settings, or null for plain TCP. */
    this._tls = wantTls ? workerTls(options.tls ?? true, env) : null;
    this._tlsWarned = false;
    /** The addresses given; then those the latest welcome named. */
    this._given = parseAddrs(options.addrs ?? env.MUSTER_ADDRS ?? env.MUSTER_HEARTBEAT_ADDR ?? '127.0.0.1:8090');
    this._addrs = [...this._given];
    this._tokenFile = options.tokenFile ?? (options.token === undefined ? env.MUSTER_HEARTBEAT_TOKEN_FILE : undefined);
    if (this._tokenFile === '') this._tokenFile = undefined;
    /** @type {string | undefined} */
    this._token = options.token;
    if (this._token !== undefined) checkText('token', this._token);
    this.labels = checkLabels(options.labels ?? parseLabels(env.MUSTER_LABELS));
    const capacity = options.capacity ?? env.MUSTER_CAPACITY;
    this.capacity = capacity === undefined || capacity === '' ? 1 : wholeNumber(capacity, 'capacity');
    if (this.capacity > 0xffffffff) throw new RangeError('capacity: at most 4294967295');
    this.hostname = truncateUtf8(options.hostname ?? os.hostname(), MAX_TEXT);
    this.pid = options.pid ?? process.pid;
    this._intervalMs = options.heartbeatIntervalMs ?? 5000;
    if (!(this._intervalMs > 0)) throw new RangeError('heartbeatIntervalMs: must be above 0');
    this._maxFrameBytes = options.maxFrameBytes ?? MAX_FRAME_BYTES;
    this._connectTimeoutMs = options.connectTimeoutMs ?? 5000;
    this._maxOwedBytes = options.maxOwedBytes ?? 8 * 1024 * 1024;
    this._reofferGraceMs = options.reofferGraceMs ?? 0;
    this._backoff = new Backoff(options.backoff);
    this._stableMs = options.stableSessionMs ?? STABLE_MS;

    /** @type {Map<string, (task: Task) => unknown>} */
    this._handlers = new Map();
    /** Heartbeat fields as set(). */
    this._state = {};
    this._seq = 0;
    /** 'new' | 'running' | 'closing' | 'closed' */
    this._life = 'new';
    /** Tasks this worker runs, or ran and still has to report. */
    this._tasks = new Map();
    this._handlersRunning = 0;
    this._idleWaiters = [];
    /** Frames waiting for a connection: task updates and logs, runs. */
    this._owed = [];
    this._owedBytes = 0;
    /** The connection that said welcome, if any. */
    this._conn = null;
    /** The connection being made or in use. */
    this._sock = null;
    this._connSeq = 0;
    this._at = 0;
    this._failed = 0;
    this._beatTimer = null;
    this._soonTimer = null;
    this._lastBeatAt = 0;
    this._keepAlive = null;
    this._sleep = null;
    this._timers = new Set();
    this._welcome = null;
    this._udp = null;
    this._runPromise = null;
    this._closePromise = null;
  }

  /** Whether a connection has said welcome and is up. */
  get connected() {
    return this._conn !== null;
  }

  /** The heartbeat addresses, as `host:port`, in the order they are tried. */
  get addrs() {
    return this._addrs.map(formatAddr);
  }

  /** Whether the heartbeat connection is TLS. */
  get tls() {
    return this._tls !== null;
  }

  /** The address of the connection in use, if any. */
  get address() {
    return this._conn ? formatAddr(this._conn.addr) : null;
  }

  /**
   * Take tasks of `type`: `handler(task)` resolves with the result, or
   * throws to fail it. Call before run().
   * @param {string} type
   * @param {(task: Task) => unknown} handler
   */
  task(type, handler) {
    if (this._life !== 'new') throw new MusterError('register task handlers before run()', { code: 'running' });
    if (this._transport === 'udp') throw new MusterError('tasks need the tcp transport', { code: 'tcp_only' });
    if (typeof type !== 'string' || type === '' || Buffer.byteLength(type, 'utf8') > MAX_TASK_TYPE) {
      throw new TypeError(`task type: 1-${MAX_TASK_TYPE} bytes`);
    }
    if (typeof handler !== 'function') throw new TypeError('task handler: must be a function');
    if (!this._handlers.has(type) && this._handlers.size >= MAX_TASK_TYPES) {
      throw new RangeError(`at most ${MAX_TASK_TYPES} task types`);
    }
    this._handlers.set(type, handler);
    return this;
  }

  /**
   * State for the next heartbeat to carry. A key set to undefined (or null,
   * but for current_job, where null clears the job) is no longer sent;
   * `status` left unset is idle or working as tasks run.
   * @param {Record<string, unknown>} fields
   */
  set(fields) {
    if (!isObject(fields)) throw new TypeError('set: want an object of heartbeat fields');
    const next = { ...this._state };
    const given = [];
    for (const [k, v] of Object.entries(fields)) {
      if (RESERVED_FIELDS.has(k)) throw new TypeError(`set: ${k} is the library's to send`);
      if (v === undefined || (v === null && k !== 'current_job')) {
        delete next[k];
        continue;
      }
      next[k] = v;
      given.push(k);
    }
    // The largest heartbeat this state makes, refused before anything is sent.
    encodeFrame(this._heartbeatFrame(next, Number.MAX_SAFE_INTEGER, 'working'), this._maxFrameBytes);
    for (const k of given) checkField(k, next[k]);
    const changed = toJson(next) !== toJson(this._state);
    this._state = next;
    if (changed) this._beatSoon();
  }

  /**
   * One finished run, for the run metrics: a `run` frame.
   * @param {number} durationSeconds
   * @param {boolean} ok
   * @param {{ exitCode?: number, signal?: number }} [extra]
   */
  recordRun(durationSeconds, ok, extra = {}) {
    if (typeof durationSeconds !== 'number' || !Number.isFinite(durationSeconds) || durationSeconds < 0) {
      throw new RangeError('recordRun: the duration is a number of seconds, 0 or more');
    }
    const ms = Math.round(durationSeconds * 1e6) / 1e3;
    if (ms > MAX_RUN_MS) throw new RangeError('recordRun: at most 30 days');
    if (typeof ok !== 'boolean') throw new TypeError('recordRun: ok must be true or false');
    const frame = { type: 'run', duration_ms: ms, ok };
    for (const [key, name] of [['exitCode', 'exit_code'], ['signal', 'signal']]) {
      const v = extra[key];
      if (v === undefined || v === null) continue;
      if (!Number.isInteger(v) || v < -(2 ** 31) || v >= 2 ** 31) throw new RangeError(`recordRun: ${key} must be a 32-bit integer`);
      frame[name] = v;
    }
    if (this._life === 'closed') return;
    if (this._transport === 'udp') {
      this._sendDatagram(frame);
      return;
    }
    const line = encodeFrame(frame, this._maxFrameBytes);
    if (!this._write(line)) this._owe({ line, kind: 'run', entry: null });
  }

  /**
   * Connect and work until close(). Rejects when the worker stops for good:
   * an UnauthorizedError when musterd refuses the token.
   * @returns {Promise<void>}
   */
  run() {
    if (this._runPromise) return this._runPromise;
    if (this._life !== 'new') return Promise.resolve();
    this._life = 'running';
    this._runPromise = new Promise((resolve, reject) => {
      this._resolveRun = resolve;
      this._rejectRun = reject;
    });
    // The one handle that keeps the process alive while the worker works;
    // every other timer is unref'd.
    this._keepAlive = setInterval(noop, 1 << 30);
    if (this._tokenFile !== undefined) {
      try {
        this._token = readTokenFile(this._tokenFile);
      } catch (e) {
        this._fail(new MusterError(`cannot read the token file: ${e.message}`, { code: 'token_file', cause: e }));
        return this._runPromise;
      }
    }
    if (this._transport === 'udp') this._startUdp();
    else this._loop();
    return this._runPromise;
  }

  /**
   * Stop: take no more tasks, give the running ones up to `timeoutMs` to
   * end (then abort their signals), deliver what they reported, say `bye`.
   * run() resolves once done.
   * @param {{ timeoutMs?: number }} [options]
   * @returns {Promise<void>}
   */
  close(options = {}) {
    if (!this._closePromise) this._closePromise = this._close(options);
    return this._closePromise;
  }

  async _close({ timeoutMs = 10000 } = {}) {
    if (this._life === 'new') {
      this._life = 'closed';
      return;
    }
    if (this._life === 'closed') return;
    this._life = 'closing';
    if (this._handlersRunning > 0) {
      await this._waitIdle(timeoutMs);
      if (this._life === 'closed') return;
      if (this._handlersRunning > 0) {
        for (const e of this._tasks.values()) {
          if (!e.settled && !e.aborted) {
            e.closeAborted = true;
            abortTask(e, new MusterError('the worker is closing', { code: 'closing' }));
          }
        }
        await this._waitIdle(1000);
        if (this._life === 'closed') return;
      }
    }
    if (this._owed.length > 0 && !this._conn && this._transport === 'tcp') {
      // What the tasks said waits for a connection: give it a moment.
      await new Promise((resolve) => {
        const done = () => {
          clearTimeout(t);
          this.off('connect', done);
          resolve();
        };
        const t = setTimeout(done, Math.min(timeoutMs, 5000));
        t.unref();
        this.on('connect', done);
      });
      if (this._life === 'closed') return;
    }
    this._life = 'closed';
    if (this._udp) {
      const sock = this._udp;
      await new Promise((resolve) => {
        const t = setTimeout(resolve, 1000);
        t.unref();
        try {
          sock.send(toJson(this._udpFrame({ type: 'bye' })), this._addrs[0].port, this._addrs[0].host, () => {
            clearTimeout(t);
            resolve();
          });
        } catch {
          clearTimeout(t);
          resolve();
        }
      });
    } else {
      const conn = this._conn;
      if (conn && !conn.sock.destroyed) {
        await new Promise((resolve) => {
          const t = setTimeout(() => {
            conn.sock.destroy();
            resolve();
          }, 1000);
          t.unref();
          conn.sock.once('close', () => {
            clearTimeout(t);
            resolve();
          });
          conn.sock.end(encodeFrame({ type: 'bye' }));
        });
      }
    }
    this._cleanup();
    this._resolveRun?.();
  }

  // --- the connection loop -------------------------------------------------

  async _loop() {
    while (this._life === 'running' || this._life === 'closing') {
      const addr = this._addrs[this._at % this._addrs.length];
      let r;
      try {
        r = await this._session(addr);
      } catch (err) {
        this._fail(err);
        return;
      }
      if (this._life === 'closed') return;
      // The next address at once; a wait once every address failed.
      this._at = (this._at + 1) % this._addrs.length;
      if (r.ok) {
        this._failed = 0;
        this._backoff.reset();
        continue;
      }
      this._failed += 1;
      if (this._failed >= this._addrs.length) {
        this._failed = 0;
        await this._wait(this._backoff.next());
      }
    }
  }

  _wait(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this._sleep = null;
        resolve();
      }, ms);
      t.unref();
      this._sleep = () => {
        clearTimeout(t);
        this._sleep = null;
        resolve();
      };
    });
  }

  /** Re-read the token file (a rotated token is picked up at the next connect). */
  _currentToken() {
    if (this._tokenFile !== undefined) {
      try {
        this._token = readTokenFile(this._tokenFile);
      } catch {
        // Keep the one read before.
      }
    }
    return this._token;
  }

  /**
   * One connection, from connect to close. Resolves `{ ok }` (ok: it said
   * welcome and held), rejects with the error that stops the worker.
   */
  _session(addr) {
    return new Promise((resolve, reject) => {
      const conn = {
        id: ++this._connSeq,
        addr,
        sock: null,
        welcomed: false,
        welcomeAt: 0,
        refused: false,
        fatal: null,
        error: null,
        /** TCP up; TLS handshake done (TLS only). */
        tcpUp: false,
        secured: false,
        reported: [],
      };
      const sock = this._tls
        ? tls.connect(this._tls.connectOptions(addr.host, addr.port))
        : net.createConnection({ host: addr.host, port: addr.port });
      conn.sock = sock;
      this._sock = sock;
      const splitter = new LineSplitter();
      const timer = setTimeout(() => {
        sock.destroy(new Error(`no welcome from ${formatAddr(addr)} within ${this._connectTimeoutMs} ms`));
      }, this._connectTimeoutMs);
      timer.unref();
      sock.setNoDelay(true);
      sock.on('connect', () => {
        conn.tcpUp = true;
        sock.setKeepAlive(true, 10000);
      });
      // Over TLS the hello waits for the handshake: the daemon's
      // certificate checked against the CA and the host dialled.
      sock.on(this._tls ? 'secureConnect' : 'connect', () => {
        conn.secured = this._tls !== null;
        let hello;
        try {
          hello = this._helloLine(conn);
        } catch (e) {
          conn.fatal = e;
          sock.destroy();
          return;
        }
        sock.write(hello);
      });
      sock.on('data', (chunk) => {
        let lines;
        try {
          lines = splitter.push(chunk);
        } catch (e) {
          sock.destroy(e);
          return;
        }
        for (const line of lines) {
          if (sock.destroyed) return;
          let msg;
          try {
            msg = JSON.parse(line);
          } catch {
            continue;
          }
          if (!isObject(msg)) continue;
          if (conn.welcomed) {
            this._onMessage(msg, conn);
          } else if (msg.type === 'welcome') {
            conn.welcomed = true;
            conn.welcomeAt = Date.now();
            clearTimeout(timer);
            this._onWelcome(msg, conn);
          } else if (msg.type === 'error') {
            this._onHelloError(msg, conn);
          }
        }
      });
      sock.on('error', (e) => {
        conn.error = e;
      });
      sock.on('close', () => {
        clearTimeout(timer);
        if (this._sock === sock) this._sock = null;
        if (this._conn === conn) {
          this._conn = null;
          clearInterval(this._beatTimer);
          this._beatTimer = null;
          this.emit('disconnect', { address: formatAddr(addr), error: conn.error ?? undefined });
        }
        if (conn.fatal) {
          reject(conn.fatal);
          return;
        }
        if (!conn.welcomed && conn.error && this._life !== 'closed') this._connectFailed(conn);
        // A session that held starts the doubling afresh; one refused
        // before its welcome, or closed soon after it, counts as a failure.
        const held = conn.welcomed && Date.now() - conn.welcomeAt >= this._stableMs;
        resolve({ ok: held && !conn.refused, error: conn.error });
      });
    });
  }

  /**
   * A connection that failed before its welcome (refused, timed out, a
   * failed TLS handshake): a `connectError` event. With no listener, a
   * TLS failure is told once as a process warning: a wrong CA or name is
   * a setting to fix, and the worker would otherwise retry unseen.
   */
  _connectFailed(conn) {
    const error = conn.error;
    const code = typeof error.code === 'string' ? error.code : '';
    // Before the handshake's end; or the daemon's TLS alert after it (TLS
    // 1.3 checks the client certificate once the client thinks it is done).
    const isTls = this._tls !== null && conn.tcpUp && (!conn.secured || /^ERR_(SSL|TLS)_/.test(code));
    const address = formatAddr(conn.addr);
    if (this.listenerCount('connectError') > 0) {
      this.emit('connectError', { address, error, tls: isTls });
    } else if (isTls && !this._tlsWarned) {
      this._tlsWarned = true;
      process.emitWarning(
        `muster: worker ${this.id}: TLS with musterd at ${address} failed: ${String(error.message).trim()}${code ? ` (${code})` : ''}; retrying with backoff (listen to 'connectError' for every failure)`,
        { code: 'MUSTER_TLS' },
      );
    }
  }

  _helloLine(conn) {
    const takes = this._handlers.size > 0;
    const frame = { type: 'hello', worker_id: this.id, pid: this.pid, hostname: this.hostname };
    frame.capacity = takes ? this.capacity : 0;
    if (takes) frame.task_types = [...this._handlers.keys()];
    // Labels set() since replace the constructor's.
    const labels = this._state.labels ?? this.labels;
    if (Object.keys(labels).length > 0) frame.labels = labels;
    const token = this._currentToken();
    if (token !== undefined) frame.token = token;
    let reported = [];
    for (const e of this._tasks.values()) {
      if (reported.length >= MAX_RUNNING) break;
      if (e.dropped || e.detached || e.released) continue;
      if (!e.settled || (e.end && !e.endSent)) reported.push(e);
    }
    for (;;) {
      if (reported.length > 0) frame.running = reported.map((e) => ({ task_id: e.id, lease: e.lease }));
      else delete frame.running;
      try {
        const line = encodeFrame(frame, this._maxFrameBytes);
        conn.reported = reported;
        return line;
      } catch (e) {
        if (!(e instanceof FrameTooLargeError) || reported.length === 0) throw e;
        reported = reported.slice(0, Math.floor(reported.length / 2));
      }
    }
  }

  _onHelloError(msg, conn) {
    const code = String(msg.code ?? '');
    const message = String(msg.message ?? '');
    const where = formatAddr(conn.addr);
    this._emitDaemonError(code, message, where);
    if (code === 'unauthorized') {
      conn.fatal = new UnauthorizedError(`musterd at ${where} refused the heartbeat token: ${message}`);
    } else if (code === 'worker_mismatch') {
      conn.fatal = mismatch(this.id, where, message);
    } else if (FATAL_HELLO_CODES.has(code)) {
      conn.fatal = new MusterError(`musterd at ${where} refused the hello (${code}): ${message}`, { code });
    } else {
      // worker_cap, shutting_down, or a code this library does not know:
      // another address, or a wait.
      conn.refused = true;
      conn.sock.destroy();
      return;
    }
    conn.sock.destroy();
  }

  _onWelcome(msg, conn) {
    this._conn = conn;
    this._welcome = msg;
    const interval = Number(msg.heartbeat_interval_ms);
    const every = Number.isFinite(interval) && interval > 0 ? Math.min(interval, MAX_TIMER_MS) : this._intervalMs;
    this._learn(msg.nodes, conn);
    for (const e of conn.reported) {
      if (this._tasks.get(e.id) === e) e.reReported = conn.id;
    }
    if (conn.reported.length > 0) {
      // Until the daemon answers lease or cancel, a cancel is that answer.
      // Tasks re-reported only for their end are kept a while, to answer
      // the daemon sending one again with that end.
      this._timer(() => this._endReReport(conn), 5000);
    }
    const owed = this._owed;
    this._owed = [];
    this._owedBytes = 0;
    for (const item of owed) {
      if (item.entry && (item.entry.dropped || item.entry.detached)) continue;
      conn.sock.write(item.line);
      if (item.entry) {
        this._noteSent(item.entry, conn);
        if (item.kind === 'end') {
          item.entry.endSent = true;
          this._retire(item.entry);
        }
      }
    }
    this.emit('connect', { address: formatAddr(conn.addr), welcome: msg });
    this._beat();
    clearInterval(this._beatTimer);
    this._beatTimer = setInterval(() => this._beat(), every);
    this._beatTimer.unref();
  }

  /**
   * A while after a welcome, the tasks that ended before it and were
   * re-reported for their end are forgotten. One still running stays
   * marked until the daemon's answer (lease: kept; cancel: not kept).
   */
  _endReReport(conn) {
    for (const e of [...this._tasks.values()]) {
      if (e.reReported !== conn.id || !e.settled) continue;
      e.reReported = null;
      this._retire(e);
    }
  }

  /**
   * The latest welcome's nodes replace those of earlier ones, after the
   * addresses given (at most 64 in all).
   */
  _learn(nodes, conn) {
    if (!Array.isArray(nodes)) return;
    const list = [...this._given];
    const known = new Set(list.map(formatAddr));
    for (const n of nodes) {
      if (list.length >= MAX_ADDRS) break;
      let a;
      try {
        a = parseAddr(n);
      } catch {
        continue;
      }
      const key = formatAddr(a);
      if (!known.has(key)) {
        known.add(key);
        list.push(a);
      }
    }
    this._addrs = list;
    // Go on from the address in use.
    const here = list.findIndex((a) => formatAddr(a) === formatAddr(conn.addr));
    this._at = here === -1 ? list.length - 1 : here;
  }

  _onMessage(msg, conn) {
    switch (msg.type) {
      case 'task':
        this._onTask(msg, conn);
        break;
      case 'cancel':
        this._onCancel(msg.task_id, conn);
        break;
      case 'lease': {
        const e = typeof msg.task_id === 'string' ? this._tasks.get(msg.task_id) : undefined;
        if (e && Number.isSafeInteger(msg.lease) && msg.lease >= 0) {
          e.lease = msg.lease;
          // The daemon keeps it: a cancel from now on is a cancel.
          e.reReported = null;
          this._retire(e);
        }
        break;
      }
      case 'error':
        this._onErrorFrame(msg, conn);
        break;
      case 'welcome':
        this._learn(msg.nodes, conn);
        break;
      default:
        // A frame type this library does not know: ignored.
        break;
    }
  }

  _emitDaemonError(code, message, address) {
    const err = new MusterError(message === '' ? code : `${code}: ${message}`, { code });
    err.address = address;
    this.emit('daemonError', err);
  }

  _onErrorFrame(msg, conn) {
    const code = String(msg.code ?? '');
    const message = String(msg.message ?? '');
    const where = formatAddr(conn.addr);
    this._emitDaemonError(code, message, where);
    switch (code) {
      case 'task_not_held': {
        const id = typeof msg.task_id === 'string' ? msg.task_id : NOT_HELD.exec(message)?.[1];
        if (id) this._notHeld(id, conn);
        break;
      }
      case 'superseded':
        // Another process said hello as this worker; the newer one wins.
        conn.fatal = new MusterError(`another connection said hello as worker ${this.id}: ${message}`, { code });
        conn.sock.destroy();
        break;
      case 'unauthorized':
        conn.fatal = new UnauthorizedError(`musterd at ${where} refused the heartbeat token: ${message}`);
        conn.sock.destroy();
        break;
      case 'worker_mismatch':
        conn.fatal = mismatch(this.id, where, message);
        conn.sock.destroy();
        break;
      case 'shutting_down':
        // The daemon closes next: the reconnect follows, as for any close.
        break;
      default:
        // idle_timeout, too_large (a line too long) and hello_required come
        // before the daemon closes: the reconnect follows. The other
        // refusals leave the connection up.
        break;
    }
  }

  _fail(err) {
    if (this._life === 'closed') return;
    this._life = 'closed';
    for (const e of this._tasks.values()) {
      if (!e.settled) abortTask(e, err);
    }
    this._cleanup();
    this._rejectRun?.(err);
  }

  _cleanup() {
    clearInterval(this._beatTimer);
    this._beatTimer = null;
    clearTimeout(this._soonTimer);
    this._soonTimer = null;
    clearInterval(this._keepAlive);
    this._keepAlive = null;
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    for (const e of this._tasks.values()) {
      clearTimeout(e.timer);
      clearTimeout(e.graceTimer);
    }
    this._sleep?.();
    if (this._sock && !this._sock.destroyed) this._sock.destroy();
    this._sock = null;
    this._conn = null;
    if (this._udp) {
      try {
        this._udp.close();
      } catch {
        // Closed already.
      }
      this._udp = null;
    }
    for (const w of this._idleWaiters.splice(0)) w();
  }

  _timer(fn, ms) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    t.unref();
    this._timers.add(t);
    return t;
  }

  _waitIdle(ms) {
    if (this._handlersRunning === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        resolve();
      };
      const t = setTimeout(() => {
        const i = this._idleWaiters.indexOf(done);
        if (i !== -1) this._idleWaiters.splice(i, 1);
        resolve();
      }, Math.min(ms, MAX_TIMER_MS));
      this._idleWaiters.push(done);
    });
  }

  // --- writing ---------------------------------------------------------------

  /** Write a line on the welcomed connection; false when there is none. */
  _write(line) {
    const conn = this._conn;
    if (!conn || conn.sock.destroyed || !conn.sock.writable) return false;
    conn.sock.write(line);
    return true;
  }

  /** Keep a frame for the next connection; past the cap, old logs and runs go first. */
  _owe(item) {
    item.bytes = Buffer.byteLength(item.line, 'utf8');
    this._owed.push(item);
    this._owedBytes += item.bytes;
    for (const kind of ['log', 'run']) {
      while (this._owedBytes > this._maxOwedBytes) {
        const i = this._owed.findIndex((o) => o.kind === kind);
        if (i === -1) break;
        this._owedBytes -= this._owed[i].bytes;
        this._owed.splice(i, 1);
      }
    }
  }

  _unowe(entry) {
    const kept = this._owed.filter((o) => o.entry !== entry);
    if (kept.length !== this._owed.length) {
      this._owed = kept;
      this._owedBytes = kept.reduce((n, o) => n + o.bytes, 0);
    }
  }

  _noteSent(entry, conn) {
    if (entry.sentConn !== conn.id) {
      entry.sentConn = conn.id;
      entry.sentCount = 0;
    }
    entry.sentCount += 1;
  }

  /** A frame about a task: now, or when the next connection is up (progress: now or never). */
  _sendFor(entry, frame, kind) {
    if (entry.dropped || entry.detached) return;
    if (entry.released) {
      if (kind !== 'progress') entry.deferred.push(frame);
      return;
    }
    const line = encodeFrame(frame, this._maxFrameBytes);
    if (this._write(line)) {
      this._noteSent(entry, this._conn);
    } else if (kind !== 'progress') {
      this._owe({ line, kind, entry });
    }
  }

  _sendEnd(entry) {
    if (entry.dropped || entry.detached || entry.released) return;
    if (this._write(entry.endLine)) {
      this._noteSent(entry, this._conn);
      entry.endSent = true;
      this._retire(entry);
    } else {
      this._owe({ line: entry.endLine, kind: 'end', entry });
    }
  }

  /** An ended task whose end went out is forgotten (kept a while when re-reported). */
  _retire(entry) {
    if (!entry.settled || !entry.endSent || entry.reReported || entry.released) return;
    if (this._tasks.get(entry.id) === entry) this._tasks.delete(entry.id);
  }

  _forget(entry) {
    clearTimeout(entry.graceTimer);
    this._unowe(entry);
    if (this._tasks.get(entry.id) === entry) this._tasks.delete(entry.id);
  }

  _beat() {
    if (!this._conn) return;
    this._lastBeatAt = Date.now();
    clearTimeout(this._soonTimer);
    this._soonTimer = null;
    this._seq += 1;
    let line;
    try {
      line = encodeFrame(this._heartbeatFrame(this._state, this._seq), this._maxFrameBytes);
    } catch {
      return;
    }
    this._write(line);
  }

  /** A heartbeat sooner than the interval, for a change of state; at most ten a second. */
  _beatSoon() {
    if (this._soonTimer || this._life === 'new' || this._life === 'closed') return;
    const udp = this._transport === 'udp';
    if (!udp && !this._conn) return;
    const wait = Math.max(0, this._lastBeatAt + MIN_BEAT_GAP_MS - Date.now());
    this._soonTimer = setTimeout(() => {
      this._soonTimer = null;
      if (udp) this._udpBeat();
      else this._beat();
    }, wait);
    this._soonTimer.unref();
  }

  _heartbeatFrame(state, seq, status) {
    const frame = this._transport === 'udp' ? this._udpFrame({ type: 'heartbeat' }) : { type: 'heartbeat' };
    frame.seq = seq;
    Object.assign(frame, state);
    if (frame.status === undefined) frame.status = status ?? (this._handlersRunning > 0 ? 'working' : 'idle');
    return frame;
  }

  // --- UDP -----------------------------------------------------------------

  _udpFrame(frame) {
    const out = { type: frame.type, worker_id: this.id };
    if (this._token !== undefined) out.token = this._token;
    return Object.assign(out, frame);
  }

  _startUdp() {
    const to = this._addrs[0];
    const sock = dgram.createSocket(net.isIPv6(to.host) ? 'udp6' : 'udp4');
    sock.on('error', noop);
    sock.unref();
    this._udp = sock;
    this._udpBeat();
    this._beatTimer = setInterval(() => this._udpBeat(), this._intervalMs);
    this._beatTimer.unref();
  }

  _udpBeat() {
    this._lastBeatAt = Date.now();
    clearTimeout(this._soonTimer);
    this._soonTimer = null;
    this._seq += 1;
    this._sendDatagram(this._heartbeatFrame(this._state, this._seq));
  }

  _sendDatagram(frame) {
    if (!this._udp) return;
    const f = frame.worker_id === undefined ? this._udpFrame(frame) : frame;
    let line;
    try {
      line = encodeFrame(f, this._maxFrameBytes);
    } catch {
      return;
    }
    const to = this._addrs[0];
    this._udp.send(line.slice(0, -1), to.port, to.host, noop);
  }

  // --- tasks ---------------------------------------------------------------

  _onTask(msg, conn) {
    const id = msg.task_id;
    if (typeof id !== 'string' || id === '') return;
    const attempt = Number.isSafeInteger(msg.attempt) ? msg.attempt : 1;
    const lease = Number.isSafeInteger(msg.lease) && msg.lease >= 0 ? msg.lease : 0;
    const prev = this._tasks.get(id);
    if (prev && !prev.dropped) {
      const live = !prev.settled && !prev.cancelled && !prev.timedOut && !prev.closeAborted;
      const done = prev.settled && prev.end && prev.end.state !== 'cancelled';
      if (prev.released || live || done) {
        // Sent again a task this worker still runs, or has just run: after
        // a reconnect the daemon gives it back to the worker that has it.
        // It goes on where it is, under the new attempt.
        clearTimeout(prev.graceTimer);
        prev.released = false;
        prev.reReported = null;
        prev.attempt = attempt;
        prev.lease = lease;
        // What was said of it on this connection before is answered
        // task_not_held for the old attempt, not this one.
        prev.staleConn = conn.id;
        prev.staleErrors = prev.sentConn === conn.id ? prev.sentCount : 0;
        this._sendFor(prev, { type: 'task_update', task_id: id, state: 'running' }, 'update');
        const deferred = prev.deferred;
        prev.deferred = [];
        for (const f of deferred) this._sendFor(prev, f, 'log');
        if (prev.settled && prev.end) {
          prev.endSent = false;
          this._sendEnd(prev);
        } else if (prev.settled) {
          this._finish(prev);
        }
        return;
      }
      // The old run was stopped: this offer starts afresh, and nothing more
      // is said of the old one.
      prev.detached = true;
      if (!prev.settled) abortTask(prev, new TaskCancelledError());
      this._forget(prev);
    }
    if (this._life !== 'running') return;
    // More than the capacity said: left to time out and go to another worker.
    if (this._handlersRunning >= this.capacity) return;
    const type = typeof msg.task_type === 'string' ? msg.task_type : '';
    const handler = this._handlers.get(type);
    if (!handler) {
      this._write(encodeFrame({
        type: 'task_update',
        task_id: id,
        state: 'failed',
        error: truncateUtf8(`no handler for task type ${JSON.stringify(type)}`, MAX_ERROR),
      }));
      return;
    }
    const timeoutMs = Number.isSafeInteger(msg.timeout_ms) && msg.timeout_ms > 0 ? msg.timeout_ms : undefined;
    const entry = {
      id,
      type,
      payload: msg.payload ?? null,
      attempt,
      lease,
      timeoutMs,
      traceparent: typeof msg.traceparent === 'string' ? msg.traceparent : undefined,
      tracestate: typeof msg.tracestate === 'string' ? msg.tracestate : undefined,
      controller: null,
      aborted: false,
      abortReason: undefined,
      settled: false,
      cancelled: false,
      timedOut: false,
      closeAborted: false,
      dropped: false,
      detached: false,
      released: false,
      outcome: null,
      reReported: null,
      end: null,
      endLine: null,
      endSent: false,
      lines: [],
      progress: null,
      flushQueued: false,
      deferred: [],
      sentConn: 0,
      sentCount: 0,
      staleConn: 0,
      staleErrors: 0,
      timer: null,
      graceTimer: null,
    };
    if (prev) {
      entry.staleConn = conn.id;
      entry.staleErrors = prev.sentConn === conn.id ? prev.sentCount : 0;
    }
    this._tasks.set(id, entry);
    this._handlersRunning += 1;
    if (this._handlersRunning === 1 && this._state.status === undefined) this._beatSoon();
    this._sendFor(entry, { type: 'task_update', task_id: id, state: 'running' }, 'update');
    if (timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS) {
      entry.timer = setTimeout(() => {
        if (entry.settled || entry.aborted) return;
        entry.timedOut = true;
        abortTask(entry, new TaskTimeoutError(timeoutMs));
      }, timeoutMs);
      entry.timer.unref();
    }
    const task = new Task(this, entry);
    let p;
    try {
      p = Promise.resolve(handler(task));
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      (v) => this._settle(entry, true, v),
      (e) => this._settle(entry, false, e),
    );
  }

  _onCancel(id, conn) {
    if (typeof id !== 'string') return;
    const e = this._tasks.get(id);
    // Ended already: nothing to stop (its end is sent, or on its way).
    if (!e || e.dropped || e.released || e.settled || e.cancelled) return;
    if (e.reReported === conn.id) {
      // The answer to the re-report: the task is not this worker's any
      // more. It is stopped, and nothing more is said of it; with a
      // reofferGraceMs, only once that passed without the daemon sending
      // it again.
      e.reReported = null;
      if (this._reofferGraceMs > 0) {
        e.released = true;
        e.graceTimer = setTimeout(() => this._silence(e), this._reofferGraceMs);
        e.graceTimer.unref();
      } else {
        this._silence(e);
      }
      return;
    }
    e.cancelled = true;
    abortTask(e, new TaskCancelledError('musterd cancelled the task'));
  }

  /** Not this worker's task any more: stop it, say nothing more of it. */
  _silence(e) {
    e.released = false;
    e.dropped = true;
    e.deferred = [];
    if (!e.settled) abortTask(e, new TaskCancelledError('the task is not this worker\'s any more'));
    this._forget(e);
  }

  _notHeld(id, conn) {
    const e = this._tasks.get(id);
    if (!e) return;
    if (e.staleConn === conn.id && e.staleErrors > 0) {
      e.staleErrors -= 1;
      return;
    }
    if (e.released) return;
    e.dropped = true;
    if (!e.settled) abortTask(e, new MusterError(`task ${id} is no longer this worker's`, { code: 'task_not_held' }));
    this._forget(e);
  }

  _settle(entry, ok, value) {
    if (entry.settled) return;
    entry.settled = true;
    this._handlersRunning -= 1;
    if (this._handlersRunning === 0 && this._state.status === undefined) this._beatSoon();
    clearTimeout(entry.timer);
    if (this._handlersRunning === 0) for (const w of this._idleWaiters.splice(0)) w();
    if (entry.dropped || entry.detached || this._life === 'closed') {
      this._forget(entry);
      return;
    }
    entry.outcome = { ok, value };
    // Its last lines and progress go before its end.
    this._flushTask(entry);
    if (!entry.released) this._finish(entry);
  }

  /** Send the end of a settled task. */
  _finish(entry) {
    const { ok, value } = entry.outcome;
    let end = null;
    if (entry.cancelled) {
      end = { type: 'task_update', task_id: entry.id, state: 'cancelled' };
    } else if (ok) {
      end = this._successFrame(entry, value);
    } else if (entry.closeAborted) {
      // Stopped by close(): bye gives it back to the queue.
      end = null;
    } else if (entry.timedOut) {
      end = {
        type: 'task_update',
        task_id: entry.id,
        state: 'failed',
        error: `timed out after ${entry.timeoutMs} ms`,
        retryable: false,
      };
    } else {
      end = this._failureFrame(entry, value);
    }
    if (!end) {
      this._forget(entry);
      return;
    }
    entry.end = end;
    entry.endLine = encodeFrame(end, this._maxFrameBytes);
    this._sendEnd(entry);
  }

  _successFrame(entry, value) {
    const frame = { type: 'task_update', task_id: entry.id, state: 'succeeded' };
    if (value !== undefined) frame.result = value;
    try {
      encodeFrame(frame, this._maxFrameBytes);
      return frame;
    } catch (e) {
      const why = e instanceof FrameTooLargeError
        ? `the result is too large: ${e.message}`
        : `the result is not JSON: ${e instanceof Error ? e.message : String(e)}`;
      return { type: 'task_update', task_id: entry.id, state: 'failed', error: truncateUtf8(wellFormed(why), MAX_ERROR), retryable: false };
    }
  }

  _failureFrame(entry, err) {
    let message;
    if (err instanceof Error) message = err.message || err.name || 'failed';
    else if (typeof err === 'string') message = err;
    else message = describe(err);
    const frame = {
      type: 'task_update',
      task_id: entry.id,
      state: 'failed',
      error: truncateUtf8(wellFormed(message || 'failed'), MAX_ERROR),
    };
    if (err !== null && typeof err === 'object') {
      if (err.retryable === false) frame.retryable = false;
      const code = err.exitCode;
      if (Number.isInteger(code) && code >= -(2 ** 31) && code < 2 ** 31) frame.exit_code = code;
    }
    return frame;
  }

  _taskLog(entry, lines) {
    if (entry.settled || entry.dropped || entry.detached) return;
    for (const l of lines) {
      let s = describe(l);
      if (s.endsWith('\n')) s = s.slice(0, s.endsWith('\r\n') ? -2 : -1);
      for (const part of s.split(/\r?\n/)) entry.lines.push(wellFormed(part));
    }
    this._queueFlush(entry);
  }

  _taskProgress(entry, fraction, message) {
    const frame = { type: 'task_progress', task_id: entry.id };
    if (fraction !== undefined && fraction !== null) {
      if (typeof fraction !== 'number' || !Number.isFinite(fraction) || fraction < 0 || fraction > 1) {
        throw new RangeError('progress: the fraction is a number from 0 to 1');
      }
      frame.fraction = fraction;
    }
    if (message !== undefined && message !== null) {
      frame.message = truncateUtf8(wellFormed(String(message)), MAX_PROGRESS_MESSAGE);
    }
    if (frame.fraction === undefined && frame.message === undefined) {
      throw new TypeError('progress: give a fraction, a message, or both');
    }
    if (entry.settled || entry.dropped || entry.detached) return;
    entry.progress = frame;
    this._queueFlush(entry);
  }

  _queueFlush(entry) {
    if (entry.flushQueued) return;
    entry.flushQueued = true;
    setImmediate(() => this._flushTask(entry));
  }

  /** Send what a task said since the last flush: its log lines, then its latest progress. */
  _flushTask(entry) {
    entry.flushQueued = false;
    if (entry.dropped || entry.detached || this._life === 'closed' && entry.settled === false) {
      entry.lines = [];
      entry.progress = null;
      return;
    }
    if (entry.lines.length > 0) {
      const lines = entry.lines;
      entry.lines = [];
      for (const frame of this._logFrames(entry.id, lines)) this._sendFor(entry, frame, 'log');
    }
    if (entry.progress) {
      const p = entry.progress;
      entry.progress = null;
      this._sendFor(entry, p, 'progress');
    }
  }

  /** Lines as task_log frames: at most 1024 lines and the frame limit each; a line too long is cut. */
  _logFrames(taskId, lines) {
    const base = Buffer.byteLength(toJson({ type: 'task_log', task_id: taskId, lines: [] }), 'utf8');
    const room = this._maxFrameBytes - base;
    const frames = [];
    let chunk = [];
    let size = 0;
    for (let line of lines) {
      let bytes = Buffer.byteLength(JSON.stringify(line), 'utf8');
      if (bytes > room) {
        line = truncateForJson(line, room - 2);
        bytes = Buffer.byteLength(JSON.stringify(line), 'utf8');
      }
      const cost = bytes + (chunk.length > 0 ? 1 : 0);
      if (chunk.length > 0 && (size + cost > room || chunk.length >= MAX_LOG_LINES)) {
        frames.push({ type: 'task_log', task_id: taskId, lines: chunk });
        chunk = [];
        size = 0;
      }
      size += bytes + (chunk.length > 0 ? 1 : 0);
      chunk.push(line);
    }
    if (chunk.length > 0) frames.push({ type: 'task_log', task_id: taskId, lines: chunk });
    return frames;
  }
}
