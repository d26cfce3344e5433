/**
 * Framing: one JSON object per line, ended by "\n". A frame (the JSON text,
 * without its newline) is at most `max_frame_bytes` (65,536 by default)
 * bytes of UTF-8; a longer one is refused here, before anything is sent.
 */

import { FrameTooLargeError } from './errors.js';

/** The daemon's default `max_frame_bytes`. */
export const MAX_FRAME_BYTES = 65536;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * `s` with lone UTF-16 surrogates replaced by U+FFFD: JSON that names a
 * lone surrogate is not valid UTF-8 text, and musterd would refuse it.
 * @param {string} s
 */
export function wellFormed(s) {
  if (typeof s.toWellFormed === 'function') return s.toWellFormed();
  return s.replace(LONE_SURROGATE, '\uFFFD');
}

function replacer(_key, value) {
  return typeof value === 'string' ? wellFormed(value) : value;
}

/**
 * The JSON text of `frame`, well-formed, without a newline.
 * @param {object} frame
 * @returns {string}
 */
export function toJson(frame) {
  const json = JSON.stringify(frame, replacer);
  if (typeof json !== 'string') throw new TypeError('a frame must be a JSON object');
  return json;
}

/**
 * One frame as a line ready to write, its newline included.
 * @param {object} frame
 * @param {number} [maxBytes]
 * @returns {string}
 * @throws {FrameTooLargeError} when the JSON text exceeds `maxBytes`
 */
export function encodeFrame(frame, maxBytes = MAX_FRAME_BYTES) {
  const json = toJson(frame);
  const bytes = Buffer.byteLength(json, 'utf8');
  if (bytes > maxBytes) {
    throw new FrameTooLargeError(bytes, maxBytes, typeof frame.type === 'string' ? `${frame.type} frame` : 'frame');
  }
  return json + '\n';
}

/**
 * The longest prefix of `s` that is at most `maxBytes` bytes of UTF-8,
 * cut at a character boundary.
 * @param {string} s
 * @param {number} maxBytes
 */
export function truncateUtf8(s, maxBytes) {
  if (maxBytes <= 0) return '';
  if (s.length <= maxBytes / 3 || Buffer.byteLength(s, 'utf8') <= maxBytes) return s;
  const buf = Buffer.from(s, 'utf8');
  let end = maxBytes;
  // Back off continuation bytes (10xxxxxx) to the start of a character.
  while (end > 0 && (buf[end] & 0xc0) === 0x80) end--;
  return buf.subarray(0, end).toString('utf8');
}

/**
 * Splits a byte stream into lines: "\n" ends a line, a "\r" before it is
 * dropped, empty lines are skipped. A line is decoded only once whole, so a
 * character split between two chunks comes out intact.
 */
export class LineSplitter {
  /**
   * @param {number} [maxLineBytes] a longer line makes `push` throw
   */
  constructor(maxLineBytes = 16 * 1024 * 1024) {
    this.maxLineBytes = maxLineBytes;
    /** @type {Buffer[]} */
    this.parts = [];
    this.size = 0;
  }

  /**
   * @param {Buffer | string} chunk
   * @returns {string[]} the lines completed by this chunk
   */
  push(chunk) {
    const data = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    const lines = [];
    let start = 0;
    for (;;) {
      const nl = data.indexOf(0x0a, start);
      if (nl === -1) break;
      let line = data.subarray(start, nl);
      if (this.parts.length > 0) {
        this.parts.push(line);
        line = Buffer.concat(this.parts, this.size + line.length);
        this.parts = [];
        this.size = 0;
      }
      if (line.length > this.maxLineBytes) {
        throw new FrameTooLargeError(line.length, this.maxLineBytes, 'line');
      }
      let end = line.length;
      if (end > 0 && line[end - 1] === 0x0d) end--;
      if (end > 0) lines.push(line.toString('utf8', 0, end));
      start = nl + 1;
    }
    if (start < data.length) {
      const rest = data.subarray(start);
      this.size += rest.length;
      if (this.size > this.maxLineBytes) {
        const bytes = this.size;
        this.parts = [];
        this.size = 0;
        throw new FrameTooLargeError(bytes, this.maxLineBytes, 'line');
      }
      // Copy: the caller may reuse its buffer.
      this.parts.push(Buffer.from(rest));
    }
    return lines;
  }

  /** Bytes held of a line not yet ended. */
  get pending() {
    return this.size;
  }
}
