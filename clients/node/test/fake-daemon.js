// An in-process stand-in for musterd's heartbeat port: it answers hello
// with welcome (or what the test says), records every frame, and lets a
// test send task, cancel, lease and error frames. With `tls` (options for
// tls.createServer) it listens over TLS, as musterd's TLS heartbeat port.

import net from 'node:net';
import tls from 'node:tls';
import { LineSplitter } from '../lib/frame.js';

export async function fakeDaemon(options = {}) {
  const interval = options.interval ?? 50;
  const frames = [];
  const waiters = [];
  const conns = [];
  const serve = (sock) => {
    const conn = { sock, id: conns.length + 1, frames: [] };
    conns.push(conn);
    const splitter = new LineSplitter();
    sock.on('error', () => {});
    sock.on('data', (chunk) => {
      for (const line of splitter.push(chunk)) {
        const frame = JSON.parse(line);
        const rec = { frame, conn, bytes: Buffer.byteLength(line), at: Date.now() };
        frames.push(rec);
        conn.frames.push(frame);
        if (frame.type === 'hello') {
          const replies = options.onHello?.(frame, conn);
          if (replies === undefined) {
            send(conn, {
              type: 'welcome',
              version: 1,
              worker_id: frame.worker_id,
              heartbeat_interval_ms: interval,
              inactivity_timeout_ms: interval * 6,
              ...(options.nodes ? { nodes: options.nodes } : {}),
            });
          } else {
            for (const r of replies) send(conn, r);
          }
        }
        options.onFrame?.(frame, conn);
        for (const w of [...waiters]) w();
      }
    });
  };
  const server = options.tls ? tls.createServer(options.tls, serve) : net.createServer(serve);
  /** TLS connections that failed their handshake (tlsClientError). */
  const tlsErrors = [];
  server.on('tlsClientError', (e) => tlsErrors.push(e));
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;

  function send(conn, obj) {
    if (!conn.sock.destroyed) conn.sock.write(JSON.stringify(obj) + '\n');
  }

  /** The first frame from `from` on that matches. */
  function waitFor(pred, { timeout = 3000, from = 0 } = {}) {
    return new Promise((resolve, reject) => {
      const look = () => {
        for (let i = from; i < frames.length; i++) {
          if (pred(frames[i].frame, frames[i].conn)) {
            done();
            resolve({ ...frames[i], index: i });
            return true;
          }
        }
        return false;
      };
      const t = setTimeout(() => {
        done();
        reject(new Error(`no matching frame within ${timeout} ms; got ${frames.map((f) => f.frame.type).join(',')}`));
      }, timeout);
      const w = () => look();
      const done = () => {
        clearTimeout(t);
        const i = waiters.indexOf(w);
        if (i !== -1) waiters.splice(i, 1);
      };
      if (!look()) waiters.push(w);
    });
  }

  return {
    port,
    addr: `127.0.0.1:${port}`,
    frames,
    conns,
    tlsErrors,
    send,
    waitFor,
    of: (type) => frames.filter((f) => f.frame.type === type).map((f) => f.frame),
    close: () =>
      new Promise((resolve) => {
        for (const c of conns) c.sock.destroy();
        server.close(() => resolve());
      }),
  };
}

/** An address nothing listens on. */
export async function deadAddr() {
  const s = net.createServer();
  await new Promise((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = s.address().port;
  await new Promise((resolve) => s.close(resolve));
  return `127.0.0.1:${port}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
