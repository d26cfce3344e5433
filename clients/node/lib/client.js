/**
 * A small producer client for musterd's HTTP API: submit tasks, read them,
 * wait for their end, cancel them. Uses the global fetch (Node 18 and on)
 * for http://, and node:https for https://: the global fetch cannot be
 * given a CA (MUSTER_TLS_CA_FILE) or a client certificate.
 */

import https from 'node:https';
import { HttpError, MusterError } from './errors.js';
import { readTokenFile } from './options.js';
import { TlsConfig } from './tls.js';

/** The states a task ends in. */
export const ENDED_STATES = Object.freeze(['succeeded', 'failed', 'cancelled', 'timed_out', 'dead']);
const ENDED = new Set(ENDED_STATES);

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });

export class Client {
  /**
   * @param {string} [url] the daemon's HTTP base URL (default MUSTER_URL, or http://127.0.0.1:8080)
   * @param {import('../index.js').ClientOptions} [options]
   */
  constructor(url, options = {}) {
    const env = options.env ?? process.env;
    const base = url ?? env.MUSTER_URL ?? 'http://127.0.0.1:8080';
    this.url = String(base).replace(/\/+$/, '');
    const parsed = new URL(this.url); // throws on a URL that does not parse
    this.token = options.token ?? (options.tokenFile ? readTokenFile(options.tokenFile) : undefined);
    this.timeoutMs = options.timeoutMs ?? 10000;
    this._fetch = options.fetch;
    const tlsGiven = options.tls !== undefined && options.tls !== true && options.tls !== false;
    if (tlsGiven && this._fetch !== undefined) throw new TypeError('tls: not with a fetch of your own');
    if (parsed.protocol === 'https:' && this._fetch === undefined) {
      // node:https, which takes the daemon's CA (tls.ca or caFile, else
      // MUSTER_TLS_CA_FILE, else Node's roots) and any tls.connect option.
      const config = new TlsConfig(tlsGiven ? options.tls : {}, options.tls === false ? {} : env, { envPems: ['ca'] });
      this._fetch = httpsFetch(new https.Agent({ keepAlive: true, ...config.agentOptions() }));
    }
    this._fetch ??= globalThis.fetch;
    if (typeof this._fetch !== 'function') throw new MusterError('no fetch: Node 18 or later is needed', { code: 'no_fetch' });
  }

  async _request(method, path, { body, headers = {}, signal } = {}) {
    const h = { Accept: 'application/json', ...headers };
    if (this.token !== undefined) h.Authorization = `Bearer ${this.token}`;
    let payload;
    if (body !== undefined) {
      h['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const res = await this._fetch(this.url + path, {
      method,
      headers: h,
      body: payload,
      signal: signal ? anySignal([signal, timeout]) : timeout,
    });
    const text = await res.text();
    let data;
    try {
      data = text === '' ? undefined : JSON.parse(text);
    } catch {
      data = text;
    }
    if (!res.ok) {
      const code = data && typeof data === 'object' && typeof data.error === 'string' ? data.error : `http_${res.status}`;
      const message = data && typeof data === 'object' && typeof data.message === 'string'
        ? data.message
        : `${method} ${path}: HTTP ${res.status}`;
      throw new HttpError(res.status, code, message, data);
    }
    return { res, data };
  }

  /**
   * Submit a task. `fields` are the other fields POST /api/tasks takes
   * (priority, timeout_ms, max_attempts, labels, worker_id, delay_ms,
   * run_at, retry, depends_on, concurrency_key, unique_key).
   * The task returned has a non-enumerable `replayed`: true when an
   * Idempotency-Key repeat gave back the first task.
   * @param {string} type
   * @param {unknown} [payload]
   * @param {{ idempotencyKey?: string, traceparent?: string, tracestate?: string, signal?: AbortSignal, [field: string]: unknown }} [options]
   */
  async submit(type, payload, options = {}) {
    const { idempotencyKey, traceparent, tracestate, signal, ...fields } = options;
    const headers = {};
    if (idempotencyKey !== undefined) headers['Idempotency-Key'] = idempotencyKey;
    if (traceparent !== undefined) headers.traceparent = traceparent;
    if (tracestate !== undefined) headers.tracestate = tracestate;
    const body = { ...fields, type };
    if (payload !== undefined) body.payload = payload;
    const { res, data } = await this._request('POST', '/api/tasks', { body, headers, signal });
    if (data === null || typeof data !== 'object') {
      throw new HttpError(res.status, 'bad_response', 'POST /api/tasks: the answer is not a task', data);
    }
    Object.defineProperty(data, 'replayed', {
      value: res.headers.get('idempotent-replayed') === 'true',
      enumerable: false,
    });
    return data;
  }

  /**
   * The task as the API shows it; an HttpError with status 404 when there
   * is none.
   * @param {string} id
   */
  async show(id, { signal } = {}) {
    const { data } = await this._request('GET', `/api/tasks/${encodeURIComponent(id)}`, { signal });
    return data;
  }

  /**
   * Poll the task until it has ended (succeeded, failed, cancelled,
   * timed_out or dead); rejects with code "timeout" after `timeoutMs`.
   * @param {string} id
   * @param {{ timeoutMs?: number, intervalMs?: number, signal?: AbortSignal }} [options]
   */
  async wait(id, options = {}) {
    const { timeoutMs = Infinity, intervalMs = 1000, signal } = options;
    const deadline = Date.now() + timeoutMs;
    let every = Math.min(100, intervalMs);
    let task;
    for (;;) {
      try {
        task = await this.show(id, { signal });
        if (ENDED.has(task.state)) return task;
      } catch (e) {
        // The daemon unreachable or restarting (or answering 5xx): keep
        // polling until the deadline. Anything else is the answer.
        const transient = !(e instanceof HttpError) || e.status >= 500;
        if (!transient || signal?.aborted || Date.now() >= deadline) throw e;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        const err = new MusterError(
          `task ${id} has not ended within ${timeoutMs} ms${task ? ` (it is ${task.state})` : ''}`,
          { code: 'timeout' },
        );
        err.task = task;
        throw err;
      }
      await sleep(Math.min(every, left), signal);
      every = Math.min(every * 2, intervalMs);
    }
  }

  /**
   * Cancel: a queued task at once, a running one is asked to stop.
   * Resolves with the task as the API shows it then.
   * @param {string} id
   */
  async cancel(id, { signal } = {}) {
    const { data } = await this._request('DELETE', `/api/tasks/${encodeURIComponent(id)}`, { signal });
    return data;
  }
}

/**
 * As much of fetch as _request uses, over node:https with `agent`: the
 * answer's ok, status, headers.get() and text().
 * @param {https.Agent} agent
 * @returns {typeof fetch}
 */
function httpsFetch(agent) {
  return (url, init = {}) =>
    new Promise((resolve, reject) => {
      const { signal } = init;
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const req = https.request(url, { method: init.method ?? 'GET', headers: init.headers, agent });
      const onAbort = () => req.destroy(signal.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => signal?.removeEventListener('abort', onAbort);
      const why = (e) => (signal?.aborted ? signal.reason : e);
      req.on('error', (e) => {
        done();
        reject(why(e));
      });
      req.on('response', (res) => {
        const body = new Promise((ok, fail) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            done();
            ok(Buffer.concat(chunks).toString('utf8'));
          });
          res.on('error', (e) => {
            done();
            fail(why(e));
          });
          res.on('close', () => {
            done();
            if (!res.complete) fail(why(new MusterError('the answer was cut short', { code: 'http_aborted' })));
          });
        });
        body.catch(() => {});
        const status = res.statusCode ?? 0;
        resolve({
          ok: status >= 200 && status < 300,
          status,
          headers: {
            get(name) {
              const v = res.headers[String(name).toLowerCase()];
              if (v === undefined) return null;
              return Array.isArray(v) ? v.join(', ') : String(v);
            },
          },
          text: () => body,
        });
      });
      req.end(init.body);
    });
}

/** AbortSignal.any, which Node 18 lacks. */
function anySignal(signals) {
  if (typeof AbortSignal.any === 'function') return AbortSignal.any(signals);
  const c = new AbortController();
  for (const s of signals) {
    if (s.aborted) {
      c.abort(s.reason);
      break;
    }
    s.addEventListener('abort', () => c.abort(s.reason), { once: true });
  }
  return c.signal;
}
