/**
 * TLS settings: the `tls` option and the MUSTER_TLS* environment, the PEM
 * files read (and read again at each connect, so that a rotated
 * certificate is picked up), and the options given to tls.connect.
 */

import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { MusterError } from './errors.js';

const ON = new Set(['1', 'true', 'yes', 'on']);
const OFF = new Set(['', '0', 'false', 'no', 'off']);
/** The PEM options that may also be given as file names. */
const PEMS = [
  ['ca', 'caFile'],
  ['cert', 'certFile'],
  ['key', 'keyFile'],
];
/** Options the library sets itself for each address. */
const OURS = ['host', 'port', 'path', 'socket', 'secureContext'];

/**
 * MUSTER_TLS as a boolean: 1, true, yes, on; 0, false, no, off or empty.
 * @param {string | undefined} v
 */
export function envFlag(v, name = 'MUSTER_TLS') {
  if (v === undefined) return false;
  const s = String(v).trim().toLowerCase();
  if (ON.has(s)) return true;
  if (OFF.has(s)) return false;
  throw new TypeError(`${name}=${JSON.stringify(v)}: want 1, true, 0 or false`);
}

function readPem(path, what) {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new MusterError(`tls: cannot read the ${what} file: ${e.message}`, { code: 'tls_config', cause: e });
  }
}

export class TlsConfig {
  /**
   * @param {Record<string, unknown>} options tls.connect options, with caFile, certFile, keyFile
   * @param {Record<string, string | undefined>} env where MUSTER_TLS_*_FILE are read
   * @param {{ envPems?: string[] }} [which] which PEMs the environment may give (all by default)
   */
  constructor(options, env, { envPems = ['ca', 'cert', 'key'] } = {}) {
    if (options === null || typeof options !== 'object' || Array.isArray(options)) {
      throw new TypeError('tls: true, false or an object of tls.connect options');
    }
    for (const k of OURS) {
      if (options[k] !== undefined) {
        throw new TypeError(`tls: ${k} is the library's to set (give ca, cert, key or caFile, certFile, keyFile)`);
      }
    }
    const rest = { ...options };
    /** @type {Record<string, string>} file names, read at each connect */
    this.files = {};
    for (const [pem, fileOpt] of PEMS) {
      const file = rest[fileOpt];
      delete rest[fileOpt];
      if (file === undefined) continue;
      if (rest[pem] !== undefined) throw new TypeError(`tls: ${pem} or ${fileOpt}, not both`);
      if (typeof file !== 'string' || file === '') throw new TypeError(`tls: ${fileOpt} must be a file name`);
      this.files[pem] = file;
    }
    const has = (pem) => rest[pem] !== undefined || this.files[pem] !== undefined;
    // The environment fills in the CA, and the certificate and its key
    // as a pair: only when the options give neither.
    if (!has('ca') && envPems.includes('ca') && env.MUSTER_TLS_CA_FILE) this.files.ca = env.MUSTER_TLS_CA_FILE;
    if (!has('cert') && !has('key') && rest.pfx === undefined && envPems.includes('cert')) {
      if (env.MUSTER_TLS_CERT_FILE) this.files.cert = env.MUSTER_TLS_CERT_FILE;
      if (env.MUSTER_TLS_KEY_FILE) this.files.key = env.MUSTER_TLS_KEY_FILE;
      if (this.files.key && !this.files.cert) {
        throw new TypeError('MUSTER_TLS_KEY_FILE is set without MUSTER_TLS_CERT_FILE');
      }
    }
    // A certificate file without a key file: the key is in it too.
    if (this.files.cert !== undefined && !has('key')) this.files.key = this.files.cert;
    if (rest.pfx === undefined && has('cert') !== has('key')) {
      throw new TypeError('tls: a client certificate goes with its key (cert and key, or certFile and keyFile)');
    }
    if (rest.minVersion === undefined) rest.minVersion = 'TLSv1.2';
    this.options = rest;
    /** The files' contents last read, and the context made of them. */
    this.pems = {};
    for (const [pem, file] of Object.entries(this.files)) this.pems[pem] = readPem(file, pem);
    try {
      this._context = tls.createSecureContext({ ...this.options, ...this.pems });
    } catch (e) {
      throw new MusterError(`tls: ${e.message}`, { code: 'tls_config', cause: e });
    }
  }

  /** The secure context, made again when a file changed (and still makes a good one). */
  context() {
    let changed = false;
    const pems = { ...this.pems };
    for (const [pem, file] of Object.entries(this.files)) {
      try {
        const text = readFileSync(file, 'utf8');
        if (text !== pems[pem]) {
          pems[pem] = text;
          changed = true;
        }
      } catch {
        // Keep what was read before, as for the token file.
      }
    }
    if (changed) {
      try {
        this._context = tls.createSecureContext({ ...this.options, ...pems });
        this.pems = pems;
      } catch {
        // Half-written during a rotation, say: the last good one serves.
      }
    }
    return this._context;
  }

  /**
   * Options for tls.connect to `host:port`. The server name (SNI, and the
   * name the certificate is checked against) is the host dialled, unless
   * the options name one; for an IP address none is sent, and the
   * certificate's IP addresses are checked against the host.
   */
  connectOptions(host, port) {
    const o = { ...this.options, host, port, secureContext: this.context() };
    if (o.servername === undefined && net.isIP(host) === 0) o.servername = host;
    return o;
  }

  /** Options for an https.Agent: the PEMs as read at construction. */
  agentOptions() {
    return { ...this.options, ...this.pems };
  }
}

/**
 * The `tls` option and the environment: null (plain TCP) or a TlsConfig.
 * `tls` undefined: MUSTER_TLS decides.
 * @param {boolean | Record<string, unknown> | undefined} option
 * @param {Record<string, string | undefined>} env
 */
export function workerTls(option, env) {
  if (option === false) return null;
  if (option === undefined && !envFlag(env.MUSTER_TLS)) return null;
  return new TlsConfig(option === true || option === undefined ? {} : option, env);
}
