import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { Client, HttpError } from '../index.js';

/** A stand-in for musterd's task API. */
async function fakeApi() {
  const tasks = new Map();
  const keys = new Map();
  const seen = [];
  let n = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      seen.push({ method: req.method, url: req.url, headers: req.headers, body });
      const reply = (status, obj, headers = {}) => {
        res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
        res.end(JSON.stringify(obj));
      };
      const m = /^\/api\/tasks(?:\/([^/]+))?$/.exec(req.url);
      if (!m) return reply(404, { error: 'not_found', message: 'no such page' });
      if (req.method === 'POST' && !m[1]) {
        const key = req.headers['idempotency-key'];
        if (key && keys.has(key)) return reply(200, tasks.get(keys.get(key)), { 'Idempotent-Replayed': 'true' });
        const b = JSON.parse(body);
        if (!b.type) return reply(400, { error: 'bad_task', message: 'type: required' });
        const t = { id: `t${++n}`, type: b.type, payload: b.payload ?? null, priority: b.priority ?? 0, state: 'queued', polls: 0 };
        tasks.set(t.id, t);
        if (key) keys.set(key, t.id);
        return reply(201, t, { Location: `/api/tasks/${t.id}` });
      }
      const t = tasks.get(decodeURIComponent(m[1] ?? ''));
      if (!t) return reply(404, { error: 'not_found', message: 'no such task' });
      if (req.method === 'GET') {
        t.polls += 1;
        if (t.type !== 'stuck' && t.polls >= 3 && t.state === 'queued') t.state = 'succeeded';
        return reply(200, t);
      }
      if (req.method === 'DELETE') {
        t.state = 'cancelled';
        return reply(200, t);
      }
      return reply(405, { error: 'method', message: 'no' });
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    seen,
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }),
  };
}

test('submit with an Idempotency-Key twice gives one task', async () => {
  const api = await fakeApi();
  const c = new Client(api.url + '/', { token: 'tok' });
  const a = await c.submit('echo', { a: 1 }, { idempotencyKey: 'k1', priority: 5 });
  const b = await c.submit('echo', { a: 2 }, { idempotencyKey: 'k1' });
  assert.equal(a.id, b.id);
  assert.equal(a.replayed, false);
  assert.equal(b.replayed, true);
  assert.equal(JSON.stringify(b).includes('replayed'), false, 'not part of the task');
  const post = api.seen[0];
  assert.equal(post.method, 'POST');
  assert.equal(post.url, '/api/tasks');
  assert.equal(post.headers['idempotency-key'], 'k1');
  assert.equal(post.headers.authorization, 'Bearer tok');
  assert.deepEqual(JSON.parse(post.body), { priority: 5, type: 'echo', payload: { a: 1 } });
  const other = await c.submit('echo', {});
  assert.notEqual(other.id, a.id);
  assert.equal(api.seen[2].headers['idempotency-key'], undefined);
  await api.close();
});

test('show, wait until ended, cancel; errors carry status and code', async () => {
  const api = await fakeApi();
  const c = new Client(api.url);
  const t = await c.submit('echo', { x: 1 });
  assert.equal((await c.show(t.id)).state, 'queued');
  const ended = await c.wait(t.id, { timeoutMs: 5000, intervalMs: 20 });
  assert.equal(ended.state, 'succeeded');
  const stuck = await c.submit('stuck', null);
  await assert.rejects(c.wait(stuck.id, { timeoutMs: 150, intervalMs: 20 }), (e) => e.code === 'timeout' && e.task.state === 'queued');
  const cancelled = await c.cancel(stuck.id);
  assert.equal(cancelled.state, 'cancelled');
  assert.equal(api.seen.at(-1).method, 'DELETE');
  await assert.rejects(c.show('nope'), (e) => e instanceof HttpError && e.status === 404 && e.code === 'not_found' && e.message === 'no such task');
  await assert.rejects(c.wait('nope'), (e) => e.status === 404, 'a 404 is an answer, not a wait');
  await assert.rejects(c.submit(''), (e) => e.status === 400 && e.code === 'bad_task');
  await api.close();
});

test('wait rides out a daemon that is away for a moment', async () => {
  // Unreachable: polled until the deadline, then the last error.
  const gone = new Client('http://127.0.0.1:1', { timeoutMs: 500 });
  const t0 = Date.now();
  await assert.rejects(gone.wait('t1', { timeoutMs: 300, intervalMs: 50 }), (e) => !(e instanceof HttpError));
  assert.ok(Date.now() - t0 >= 250, 'kept trying');
  // 503 twice, then the task.
  let calls = 0;
  const server = http.createServer((req, res) => {
    calls += 1;
    res.writeHead(calls <= 2 ? 503 : 200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(calls <= 2 ? { error: 'unavailable', message: 'busy' } : { id: 't1', state: 'dead' }));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const c = new Client(`http://127.0.0.1:${server.address().port}`);
  assert.equal((await c.wait('t1', { timeoutMs: 5000, intervalMs: 20 })).state, 'dead');
  assert.equal(calls, 3);
  server.closeAllConnections?.();
  await new Promise((r) => server.close(r));
});
