// Type declarations for muster, the Node.js worker library for musterd.

import { EventEmitter } from 'node:events';
import type { ConnectionOptions } from 'node:tls';

/** The daemon's default `max_frame_bytes`. */
export const MAX_FRAME_BYTES: 65536;

/** The states a task ends in. */
export const ENDED_STATES: readonly ['succeeded', 'failed', 'cancelled', 'timed_out', 'dead'];

export type WorkerStatus = 'idle' | 'working' | 'error';

export interface BackoffOptions {
  /** First wait, in ms (250). */
  initialMs?: number;
  /** Longest step, in ms (5000); each wait is 0.5 to 1.5 times its step. */
  maxMs?: number;
  /** A number in [0, 1); Math.random by default. */
  random?: () => number;
}

/**
 * TLS settings: any tls.connect option (`ca`, `cert`, `key`, `servername`,
 * `rejectUnauthorized`, `minVersion`, ...), and the PEMs as file names
 * instead. A PEM left out comes from the environment (MUSTER_TLS_CA_FILE;
 * MUSTER_TLS_CERT_FILE and MUSTER_TLS_KEY_FILE as a pair, when neither
 * cert nor key is given; the Client takes the CA only); no CA at all:
 * Node's default roots. Files are read at
 * construction (a MusterError with code `tls_config` if one cannot be read
 * or is not a good PEM) and the worker reads them again at each connect.
 * `minVersion` is TLSv1.2 unless given. The server name is the host dialled
 * (none for an IP address: the certificate's IP SANs are checked) unless
 * `servername` names one.
 */
export interface TlsOptions extends Omit<ConnectionOptions, 'host' | 'port' | 'path' | 'socket' | 'secureContext'> {
  /** PEM file of the CA(s) that sign the daemon's certificate (not with `ca`). */
  caFile?: string;
  /** PEM file of the client certificate (not with `cert`). */
  certFile?: string;
  /** PEM file of the client certificate's key (not with `key`); left out with a certFile: the key is in that file. */
  keyFile?: string;
}

export interface WorkerOptions {
  /** The worker id (MUSTER_WORKER_ID; else HOSTNAME-PID). */
  id?: string;
  /** Heartbeat addresses, `host:port`, tried in order (MUSTER_ADDRS, comma-separated; else 127.0.0.1:8090). */
  addrs?: string | string[];
  /** File holding the heartbeat token (MUSTER_HEARTBEAT_TOKEN_FILE); read again at each connect. */
  tokenFile?: string;
  /** The heartbeat token itself, instead of a file. */
  token?: string;
  /** Labels for hello (MUSTER_LABELS, `k=v,k=v`). */
  labels?: Record<string, string>;
  /** Tasks taken at once (MUSTER_CAPACITY; else 1). */
  capacity?: number;
  /** `tcp` (default) or `udp`: heartbeats alone, as datagrams, no tasks. */
  transport?: 'tcp' | 'udp';
  /**
   * The heartbeat connection over TLS: `true`, or TLS settings (TLS on).
   * Left out: on when MUSTER_TLS is `1` or `true`. `false`: plain TCP
   * whatever the environment says. A TypeError with `transport: 'udp'`.
   */
  tls?: boolean | TlsOptions;
  /** The heartbeat interval over UDP, in ms (5000); over TCP the welcome's. */
  heartbeatIntervalMs?: number;
  /** Connect and welcome deadline, in ms (5000). */
  connectTimeoutMs?: number;
  /** The daemon's max_frame_bytes (65536). */
  maxFrameBytes?: number;
  /** Frames kept for the next connection at most, in bytes (8 MiB); old logs and runs go first. */
  maxOwedBytes?: number;
  /** How long a re-reported task the daemon answered `cancel` runs on, in case it is sent again (0: stopped at once). */
  reofferGraceMs?: number;
  /** Reconnect waits. */
  backoff?: BackoffOptions;
  /** A session that held this long after its welcome starts the backoff afresh (3000 ms). */
  stableSessionMs?: number;
  hostname?: string;
  pid?: number;
  /** Where the defaults are read (process.env). */
  env?: Record<string, string | undefined>;
}

export interface CurrentJob {
  id?: string | number;
  type?: string;
  files?: number;
  started_at?: number;
  [key: string]: unknown;
}

export interface ResourceUsage {
  rss_mb?: number;
  heap_used_mb?: number;
  heap_total_mb?: number;
  external_mb?: number;
  peak_rss_mb?: number;
  threads?: number;
  fds?: number;
  io_read_bytes?: number;
  io_write_bytes?: number;
}

/** Heartbeat fields; undefined (or null, but for current_job) stops sending a field. */
export interface WorkerState {
  /** Left unset: idle, or working while a task runs. */
  status?: WorkerStatus | null;
  queue_depth?: number | null;
  /** null clears the job. */
  current_job?: CurrentJob | null;
  /** Percent of one core, 0 to 409600. */
  cpu_usage?: number | null;
  /** Percent of host memory, 0 to 100. */
  memory_usage?: number | null;
  gpu_usage?: number | null;
  resource_usage?: ResourceUsage | null;
  running_tasks?: Record<string, unknown>[] | null;
  labels?: Record<string, string> | null;
  [field: string]: unknown;
}

export declare class Task<P = unknown> {
  readonly id: string;
  readonly type: string;
  readonly payload: P;
  /** Which attempt this is, from 1. */
  readonly attempt: number;
  readonly timeoutMs: number | undefined;
  readonly traceparent: string | undefined;
  readonly tracestate: string | undefined;
  /** Aborted when musterd cancels the task, its timeout passes, or the worker stops. */
  readonly signal: AbortSignal;
  /** Lines for the task's log; each argument is one line or more. */
  log(...lines: unknown[]): void;
  /** How far it has come: fraction from 0 to 1, and/or a message. */
  progress(fraction?: number | null, message?: string): void;
}

export type TaskHandler<P = unknown, R = unknown> = (task: Task<P>) => R | Promise<R>;

export interface Welcome {
  type: 'welcome';
  version: number;
  worker_id: string;
  heartbeat_interval_ms: number;
  inactivity_timeout_ms: number;
  nodes?: string[];
}

export interface WorkerEvents {
  connect: [{ address: string; welcome: Welcome }];
  disconnect: [{ address: string; error?: Error }];
  /**
   * A connection that failed before its welcome: refused, timed out, or its
   * TLS handshake failed (`tls: true`; `error.code` is Node's, such as
   * `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, `CERT_HAS_EXPIRED`,
   * `ERR_TLS_CERT_ALTNAME_INVALID`, or the daemon's alert). The worker backs
   * off and tries again. Without a listener a TLS failure is told once as a
   * process warning (code `MUSTER_TLS`).
   */
  connectError: [{ address: string; error: Error & { code?: string }; tls: boolean }];
  daemonError: [MusterError & { address: string }];
}

export declare class Worker extends EventEmitter {
  constructor(options?: WorkerOptions);
  readonly id: string;
  readonly capacity: number;
  readonly labels: Record<string, string>;
  /** Whether a connection said welcome and is up. */
  readonly connected: boolean;
  /** Whether the heartbeat connection is TLS. */
  readonly tls: boolean;
  /** The connection's address, or null. */
  readonly address: string | null;
  /** Addresses in the order tried (welcome's nodes included). */
  readonly addrs: string[];
  /** Take tasks of `type`; before run(). */
  task<P = unknown, R = unknown>(type: string, handler: TaskHandler<P, R>): this;
  /** State for the next heartbeat; throws FrameTooLargeError (nothing sent) or a TypeError/RangeError. */
  set(fields: WorkerState): void;
  /** A `run` frame: one finished run. */
  recordRun(durationSeconds: number, ok: boolean, extra?: { exitCode?: number; signal?: number }): void;
  /** Resolves after close(); rejects when the worker stops for good (UnauthorizedError, worker_mismatch, superseded). */
  run(): Promise<void>;
  /** Take no more tasks, give running ones `timeoutMs` (10000) to end, say bye. */
  close(options?: { timeoutMs?: number }): Promise<void>;

  on<E extends keyof WorkerEvents>(event: E, listener: (...args: WorkerEvents[E]) => void): this;
  once<E extends keyof WorkerEvents>(event: E, listener: (...args: WorkerEvents[E]) => void): this;
  off<E extends keyof WorkerEvents>(event: E, listener: (...args: WorkerEvents[E]) => void): this;
}

/** A task as the HTTP API shows it. */
export interface TaskRecord {
  id: string;
  type: string;
  payload: unknown;
  priority: number;
  state: 'waiting' | 'scheduled' | 'queued' | 'assigned' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'timed_out' | 'dead';
  attempt: number;
  max_attempts: number;
  worker_id: string | null;
  result: unknown;
  error: string | null;
  exit_code: number | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  progress?: { fraction?: number; message?: string; at: number };
  [field: string]: unknown;
}

export interface SubmitOptions {
  /** Sent as the Idempotency-Key header. */
  idempotencyKey?: string;
  traceparent?: string;
  tracestate?: string;
  signal?: AbortSignal;
  priority?: number;
  worker_id?: string;
  labels?: Record<string, string>;
  timeout_ms?: number;
  max_attempts?: number;
  delay_ms?: number;
  run_at?: string;
  retry?: { max_attempts?: number; backoff_base_ms?: number; backoff_max_ms?: number };
  depends_on?: string[];
  concurrency_key?: string;
  unique_key?: string;
  [field: string]: unknown;
}

export interface ClientOptions {
  /** Sent as `Authorization: Bearer TOKEN`. */
  token?: string;
  tokenFile?: string;
  /** Per request, in ms (10000). */
  timeoutMs?: number;
  /** Used instead of the global fetch (not with `tls`). */
  fetch?: typeof fetch;
  /**
   * For an https:// URL: TLS settings (`caFile` or `ca`, else
   * MUSTER_TLS_CA_FILE, else Node's roots; a client certificate if the
   * server asks). `false`: MUSTER_TLS_CA_FILE is not read.
   */
  tls?: boolean | TlsOptions;
  /** Where MUSTER_URL and MUSTER_TLS_CA_FILE are read (process.env). */
  env?: Record<string, string | undefined>;
}

export declare class Client {
  /** `url` defaults to MUSTER_URL, else http://127.0.0.1:8080. */
  constructor(url?: string, options?: ClientOptions);
  readonly url: string;
  /** POST /api/tasks; `replayed` (not enumerable) is true for an idempotent repeat. */
  submit<P = unknown>(type: string, payload?: P, options?: SubmitOptions): Promise<TaskRecord & { readonly replayed: boolean }>;
  show(id: string, options?: { signal?: AbortSignal }): Promise<TaskRecord>;
  /** Poll until the task has ended; rejects with code "timeout" (and `task`) past timeoutMs (no limit by default). */
  wait(id: string, options?: { timeoutMs?: number; intervalMs?: number; signal?: AbortSignal }): Promise<TaskRecord>;
  cancel(id: string, options?: { signal?: AbortSignal }): Promise<TaskRecord>;
}

export declare class MusterError extends Error {
  constructor(message: string, options?: { code?: string; cause?: unknown });
  readonly code: string;
}

export declare class UnauthorizedError extends MusterError {
  constructor(message?: string);
  readonly code: 'unauthorized';
}

export declare class FrameTooLargeError extends MusterError {
  constructor(bytes: number, limit: number, what?: string);
  readonly code: 'too_large';
  readonly bytes: number;
  readonly limit: number;
}

/** Thrown by a handler to fail its task; `retryable: false` ends it failed at once. */
export declare class TaskError extends Error {
  constructor(message: string, options?: { retryable?: boolean; exitCode?: number; cause?: unknown });
  readonly retryable: boolean;
  readonly exitCode?: number;
}

export declare class TaskCancelledError extends MusterError {
  readonly code: 'cancelled';
}

export declare class TaskTimeoutError extends MusterError {
  readonly code: 'timed_out';
  readonly timeoutMs: number;
}

export declare class HttpError extends MusterError {
  constructor(status: number, code: string, message: string, body?: unknown);
  readonly status: number;
  readonly body: unknown;
}

export declare function encodeFrame(frame: object, maxBytes?: number): string;

export declare class LineSplitter {
  constructor(maxLineBytes?: number);
  push(chunk: Uint8Array | string): string[];
  readonly pending: number;
}

export declare class Backoff {
  constructor(options?: BackoffOptions);
  next(): number;
  reset(): void;
}
