/**
 * Options and the environment: addresses, labels, worker ids, tokens.
 */

import { readFileSync } from 'node:fs';
import os from 'node:os';

const WORKER_ID = /^[A-Za-z0-9._:@-]{1,128}$/;
const RESERVED_IDS = new Set(['registry', 'scale', 'snapshot']);

/** At most this many labels; keys 1-128 bytes, values up to 1024. */
export const MAX_LABELS = 64;
export const MAX_LABEL_KEY = 128;
export const MAX_LABEL_VALUE = 1024;
/** Longest task type the daemon takes, in bytes; at most 64 types. */
export const MAX_TASK_TYPE = 128;
export const MAX_TASK_TYPES = 64;
/** Longest token, and other text fields of hello (hostname). */
export const MAX_TEXT = 256;

/**
 * @param {string} id
 * @returns {string}
 */
export function checkWorkerId(id) {
  if (typeof id !== 'string' || !WORKER_ID.test(id)) {
    throw new TypeError(`worker id ${JSON.stringify(id)}: must be 1-128 bytes of A-Za-z0-9._:@-`);
  }
  if (RESERVED_IDS.has(id)) throw new TypeError(`worker id ${JSON.stringify(id)} is reserved`);
  return id;
}

/** A worker id from the host name and the process id. */
export function defaultWorkerId() {
  const host = os.hostname().replace(/[^A-Za-z0-9._:@-]/g, '-').slice(0, 100) || 'node';
  return `${host}-${process.pid}`;
}

/**
 * One `host:port` (IPv6 hosts in brackets: `[::1]:8090`).
 * @param {string} s
 * @returns {{ host: string, port: number }}
 */
export function parseAddr(s) {
  const text = String(s).trim();
  let host;
  let port;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(text);
  if (v6) {
    host = v6[1];
    port = v6[2];
  } else {
    const i = text.lastIndexOf(':');
    if (i <= 0 || text.indexOf(':') !== i) throw new TypeError(`address ${JSON.stringify(text)}: want host:port`);
    host = text.slice(0, i);
    port = text.slice(i + 1);
  }
  const n = Number(port);
  if (!/^\d+$/.test(port) || n < 1 || n > 65535) {
    throw new TypeError(`address ${JSON.stringify(text)}: bad port`);
  }
  return { host, port: n };
}

/**
 * `host:port` addresses: a list, or one comma-separated string.
 * @param {string | string[]} addrs
 */
export function parseAddrs(addrs) {
  const list = (Array.isArray(addrs) ? addrs : String(addrs).split(','))
    .map((a) => String(a).trim())
    .filter((a) => a !== '');
  if (list.length === 0) throw new TypeError('no heartbeat address');
  return list.map(parseAddr);
}

/** @param {{ host: string, port: number }} a */
export function formatAddr(a) {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/**
 * `k=v,k=v` as an object (MUSTER_LABELS).
 * @param {string | undefined} s
 * @returns {Record<string, string>}
 */
export function parseLabels(s) {
  /** @type {Record<string, string>} */
  const out = {};
  if (s === undefined || s.trim() === '') return out;
  for (const part of s.split(',')) {
    if (part.trim() === '') continue;
    const i = part.indexOf('=');
    if (i <= 0) throw new TypeError(`label ${JSON.stringify(part)}: want key=value`);
    out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

/**
 * Labels as musterd takes them: at most 64, keys 1-128 bytes, values
 * strings of at most 1024 bytes.
 * @param {unknown} labels
 * @returns {Record<string, string>}
 */
export function checkLabels(labels) {
  if (labels === null || typeof labels !== 'object' || Array.isArray(labels)) {
    throw new TypeError('labels: must be an object of strings');
  }
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) throw new RangeError(`labels: more than ${MAX_LABELS}`);
  /** @type {Record<string, string>} */
  const out = {};
  for (const [k, v] of entries) {
    const kb = Buffer.byteLength(k, 'utf8');
    if (kb < 1 || kb > MAX_LABEL_KEY) throw new RangeError('labels: keys are 1-128 bytes');
    if (typeof v !== 'string') throw new TypeError(`labels: value of ${JSON.stringify(k)} must be a string`);
    if (Buffer.byteLength(v, 'utf8') > MAX_LABEL_VALUE) {
      throw new RangeError(`labels: value of ${JSON.stringify(k)} is over ${MAX_LABEL_VALUE} bytes`);
    }
    out[k] = v;
  }
  return out;
}

/**
 * A token file as musterd reads one: its first line, trimmed.
 * @param {string} path
 * @returns {string}
 */
export function readTokenFile(path) {
  const text = readFileSync(path, 'utf8');
  const token = (text.split(/\r?\n/, 1)[0] ?? '').trim();
  if (token === '') throw new Error(`${path} holds no token`);
  return token;
}

/**
 * A whole number of at least 0 from an option or an environment string.
 * @param {unknown} v
 * @param {string} name
 */
export function wholeNumber(v, name) {
  const n = typeof v === 'string' ? Number(v.trim()) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || (typeof v === 'string' && v.trim() === '')) {
    throw new TypeError(`${name}: must be a whole number, not ${JSON.stringify(v)}`);
  }
  return n;
}
