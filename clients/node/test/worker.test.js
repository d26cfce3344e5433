import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FrameTooLargeError, TaskError, UnauthorizedError, Worker } from '../index.js';
import { deadAddr, fakeDaemon, sleep } from './fake-daemon.js';

const fast = { initialMs: 20, maxMs: 40 };

function worker(addr, options = {}) {
  return new Worker({ id: 'w1', addrs: addr, env: {}, backoff: fast, ...options });
}

test('hello, welcome, then heartbeats at its interval with seq rising', async () => {
  const d = await fakeDaemon({ interval: 40 });
  const dir = mkdtempSync(join(tmpdir(), 'muster-'));
  writeFileSync(join(dir, 'token'), 's3cret\nignored\n');
  const w = worker(d.addr, { labels: { pool: 'a' }, capacity: 3, tokenFile: join(dir, 'token') });
  w.task('resize', async () => 1).task('scan', async () => 2);
  const done = w.run();
  const { frame: hello } = await d.waitFor((f) => f.type === 'hello');
  assert.equal(hello.worker_id, 'w1');
  assert.equal(hello.capacity, 3);
  assert.deepEqual(hello.task_types, ['resize', 'scan']);
  assert.deepEqual(hello.labels, { pool: 'a' });
  assert.equal(hello.token, 's3cret');
  assert.equal(hello.pid, process.pid);
  assert.equal(hello.running, undefined, 'nothing to re-report');
  const t0 = Date.now();
  await d.waitFor((f) => f.type === 'heartbeat' && f.seq === 4);
  assert.ok(Date.now() - t0 >= 80, 'beats come at the welcome\'s interval');
  const beats = d.of('heartbeat');
  assert.deepEqual(beats.map((b) => b.seq), [1, 2, 3, 4]);
  assert.equal(beats[0].status, 'idle');
  assert.equal(beats[0].token, undefined, 'the hello carried it');
  assert.equal(w.connected, true);
  await w.close();
  await done;
  assert.equal(d.frames.at(-1).frame.type, 'bye');
  await d.close();
});

test('set() rides the next heartbeat; too large a frame is refused before sending, the connection kept', async () => {
  const d = await fakeDaemon({ interval: 30 });
  const w = worker(d.addr);
  const done = w.run();
  await d.waitFor((f) => f.type === 'heartbeat');
  w.set({ status: 'working', queue_depth: 3, current_job: { id: 'j1', type: 'resize' }, cpu_usage: 12.5, memory_usage: 40 });
  const { frame } = await d.waitFor((f) => f.type === 'heartbeat' && f.queue_depth === 3);
  assert.equal(frame.status, 'working');
  assert.deepEqual(frame.current_job, { id: 'j1', type: 'resize' });
  assert.equal(frame.cpu_usage, 12.5);
  const before = d.frames.length;
  assert.throws(() => w.set({ current_job: { id: 'j2', type: 'x'.repeat(70000) } }), (e) => e instanceof FrameTooLargeError && e.code === 'too_large');
  assert.throws(() => w.set({ status: 'sleepy' }), TypeError);
  assert.throws(() => w.set({ queue_depth: -1 }), RangeError);
  assert.throws(() => w.set({ seq: 9 }), TypeError);
  w.set({ queue_depth: 4, current_job: null });
  const { frame: next, index } = await d.waitFor((f) => f.type === 'heartbeat' && f.queue_depth === 4, { from: before });
  assert.equal(next.current_job, null, 'null clears the job');
  assert.ok(d.frames.slice(before, index + 1).every((f) => f.bytes < 65536), 'nothing large was sent');
  assert.equal(d.conns.length, 1, 'the same connection');
  w.set({ status: undefined });
  const { frame: auto } = await d.waitFor((f) => f.type === 'heartbeat' && f.status === 'idle', { from: index + 1 });
  assert.equal(auto.queue_depth, 4, 'what was set stays');
  w.recordRun(1.5, true);
  w.recordRun(0.25, false, { exitCode: 2 });
  const { frame: run } = await d.waitFor((f) => f.type === 'run' && f.ok === false);
  assert.deepEqual(run, { type: 'run', duration_ms: 250, ok: false, exit_code: 2 });
  assert.deepEqual(d.of('run')[0], { type: 'run', duration_ms: 1500, ok: true });
  assert.throws(() => w.recordRun(-1, true), RangeError);
  await w.close();
  await done;
  await d.close();
});

test('a task: running, its log and progress, then its result', async () => {
  const d = await fakeDaemon();
  const w = worker(d.addr);
  let seen;
  w.task('echo', async (task) => {
    seen = task;
    task.log('hello', 'two\nlines');
    task.progress(0.5, 'halfway');
    return { echo: task.payload };
  });
  const done = w.run();
  const { conn } = await d.waitFor((f) => f.type === 'heartbeat');
  d.send(conn, { type: 'task', task_id: 't1', task_type: 'echo', payload: { a: 1 }, attempt: 2, traceparent: '00-abc' });
  await d.waitFor((f) => f.type === 'task_update' && f.state === 'succeeded');
  const about = d.frames.filter((f) => f.frame.task_id === 't1').map((f) => f.frame);
  assert.deepEqual(about, [
    { type: 'task_update', task_id: 't1', state: 'running' },
    { type: 'task_log', task_id: 't1', lines: ['hello', 'two', 'lines'] },
    { type: 'task_progress', task_id: 't1', fraction: 0.5, message: 'halfway' },
    { type: 'task_update', task_id: 't1', state: 'succeeded', result: { echo: { a: 1 } } },
  ]);
  assert.equal(seen.id, 't1');
  assert.equal(seen.type, 'echo');
  assert.equal(seen.attempt, 2);
  assert.equal(seen.traceparent, '00-abc');
  assert.equal(seen.signal.aborted, false);
  assert.throws(() => seen.progress(2), RangeError);
  await w.close();
  await done;
  await d.close();
});

test('failures: TaskError retryable false, plain errors retryable, exit codes, no handler', async () => {
  const d = await fakeDaemon();
  const w = worker(d.addr, { capacity: 4 });
  w.task('fail', async () => {
    throw new TaskError('boom', { retryable: false });
  });
  w.task('flaky', async () => {
    const e = new Error('try again');
    e.exitCode = 3;
    throw e;
  });
  w.task('sync', () => {
    throw 'thrown string';
  });
  const done = w.run();
  const { conn } = await d.waitFor((f) => f.type === 'heartbeat');
  d.send(conn, { type: 'task', task_id: 'a', task_type: 'fail', payload: null, attempt: 1 });
  d.send(conn, { type: 'task', task_id: 'b', task_type: 'flaky', payload: null, attempt: 1 });
  d.send(conn, { type: 'task', task_id: 'c', task_type: 'sync', payload: null, attempt: 1 });
  d.send(conn, { type: 'task', task_id: 'd', task_type: 'nope', payload: null, attempt: 1 });
  const ends = await Promise.all(['a', 'b', 'c', 'd'].map((id) => d.waitFor((f) => f.task_id === id && f.state === 'failed')));
  assert.match(ends[3].frame.error, /no handler for task type "nope"/);
  assert.deepEqual(ends[0].frame, { type: 'task_update', task_id: 'a', state: 'failed', error: 'boom', retryable: false });
  assert.deepEqual(ends[1].frame, { type: 'task_update', task_id: 'b', state: 'failed', error: 'try again', exit_code: 3 });
  assert.deepEqual(ends[2].frame, { type: 'task_update', task_id: 'c', state: 'failed', error: 'thrown string' });
  await w.close();
  await done;
  await d.close();
});

test('cancel aborts the signal; the task is reported cancelled when the handler settles', async () => {
  const d = await fakeDaemon();
  const w = worker(d.addr);
  let reason;
  w.task('wait', (task) => new Promise((resolve) => {
    task.signal.addEventListener('abort', () => {
      reason = task.signal.reason;
      task.log('cancel seen');
      resolve('done anyway');
    });
  }));
  const done = w.run();
  const { conn } = await d.waitFor((f) => f.type === 'heartbeat');
  d.send(conn, { type: 'task', task_id: 't9', task_type: 'wait', payload: {}, attempt: 1 });
  await d.waitFor((f) => f.task_id === 't9' && f.state === 'running');
  const beat = await d.waitFor((f) => f.type === 'heartbeat' && f.status === 'working');
  assert.ok(beat);
  d.send(conn, { type: 'cancel', task_id: 't9' });
  const { frame } = await d.waitFor((f) => f.task_id === 't9' && f.state === 'cancelled');
  assert.deepEqual(frame, { type: 'task_update', task_id: 't9', state: 'cancelled' });
  assert.equal(reason.code, 'cancelled');
  assert.deepEqual(d.of('task_log').at(-1).lines, ['cancel seen']);
  await w.close();
  await done;
  await d.close();
});

test('a signal first read after the cancel is aborted already, with its reason', async () => {
  const d = await fakeDaemon();
  const w = worker(d.addr, { capacity: 2 });
  let seen;
  let release;
  w.task('hold', (task) => {
    seen = task;
    return new Promise((resolve) => { release = resolve; });
  });
  const done = w.run();
  const { conn } = await d.waitFor((f) => f.type === 'heartbeat');
  d.send(conn, { type: 'task', task_id: 'h1', task_type: 'hold', payload: {}, attempt: 1 });
  await d.waitFor((f) => f.task_id === 'h1' && f.state === 'running');
  d.send(conn, { type: 'cancel', task_id: 'h1' });
  // Answered at once, so read after the cancel: it has been handled.
  d.send(conn, { type: 'task', task_id: 'x1', task_type: 'none', payload: {}, attempt: 1 });
  await d.waitFor((f) => f.task_id === 'x1' && f.state === 'failed');
  const signal = seen.signal;
  assert.ok(signal instanceof AbortSignal);
  assert.equal(seen.signal, signal, 'the same signal each time');
  assert.equal(signal.aborted, true);
  assert.equal(signal.reason.code, 'cancelled');
  release();
  await d.waitFor((f) => f.task_id === 'h1' && f.state === 'cancelled');
  await w.close();
  await done;
  await d.close();
});

test('timeout_ms aborts the signal and fails the task for good', async () => {
  const d = await fakeDaemon();
  const w = worker(d.addr);
  w.task('slow', (task) => new Promise((_, reject) => task.signal.addEventListener('abort', () => reject(task.signal.reason))));
  const done = w.run();
  const { conn } = await d.waitFor((f) => f.type === 'heartbeat');
  d.send(conn, { type: 'task', task_id: 's1', task_type: 'slow', payload: {}, attempt: 1, timeout_ms: 60 });
  const { frame } = await d.waitFor((f) => f.task_id === 's1' && f.state === 'failed');
  assert.equal(frame.retryable, false);
  assert.match(frame.error, /timed out after 60 ms/);
  await w.close();
  await done;
  await d.close();
});

test('at most capacity handlers at once', async () => {
  const d = await fakeDaemon();
  const w = worker(d.addr, { capacity: 1 });
  let release;
  w.task('job', () => new Promise((r) => { release = r; }));
  const done = w.run();
  const { conn } = await d.waitFor((f) => f.type === 'heartbeat');
  d.send(conn, { type: 'task', task_id: 'one', task_type: 'job', payload: {}, attempt: 1 });
  d.send(conn, { type: 'task', task_id: 'two', task_type: 'job', payload: {}, attempt: 1 });
  await d.waitFor((f) => f.task_id === 'one' && f.state === 'running');
  await sleep(80);
  assert.equal(d.frames.filter((f) => f.frame.task_id === 'two').length, 0, 'the second is left to time out');
  release(7);
  await d.waitFor((f) => f.task_id === 'one' && f.state === 'succeeded');
  await w.close();
  await done;
  await d.close();
});

test('an unauthorized hello is fatal: run() rejects, no retry', async () => {
  const d = await fakeDaemon({
    onHello: () => [{ type: 'error', code: 'unauthorized', message: 'hello needs the heartbeat token' }],
  });
  const w = worker(d.addr, { token: 'wrong' });
  const t0 = Date.now();
  await assert.rejects(w.run(), (e) => e instanceof UnauthorizedError && e.code === 'unauthorized');
  assert.ok(Date.now() - t0 < 2000);
  await sleep(150);
  assert.equal(d.conns.length, 1, 'no second try');
  await w.close();
  await d.close();
});

test('after a reconnect the hello re-reports running tasks with their lease; updates and logs wait for it', async () => {
  const d = await fakeDaemon();
  const w = worker(d.addr);
  let task;
  let finish;
  w.task('long', (t) => {
    task = t;
    return new Promise((r) => { finish = r; });
  });
  const done = w.run();
  const { conn } = await d.waitFor((f) => f.type === 'heartbeat');
  d.send(conn, { type: 'task', task_id: 'L1', task_type: 'long', payload: {}, attempt: 1, lease: 7 });
  await d.waitFor((f) => f.task_id === 'L1' && f.state === 'running');
  const disconnected = new Promise((r) => w.once('disconnect', r));
  conn.sock.destroy();
  await disconnected;
  task.log('said while away');
  task.progress(0.9);
  await sleep(5);
  const second = await d.waitFor((f, c) => f.type === 'hello' && c !== conn);
  assert.deepEqual(second.frame.running, [{ task_id: 'L1', lease: 7 }]);
  const log = await d.waitFor((f) => f.type === 'task_log' && f.task_id === 'L1');
  assert.equal(log.conn, second.conn, 'the log waited for the new connection');
  assert.ok(log.index > second.index);
  // The node that took it over gives a new lease, for the next reconnect.
  d.send(second.conn, { type: 'lease', task_id: 'L1', lease: 9 });
  await sleep(20);
  second.conn.sock.destroy();
  const third = await d.waitFor((f, c) => f.type === 'hello' && c !== conn && c !== second.conn);
  assert.deepEqual(third.frame.running, [{ task_id: 'L1', lease: 9 }]);
  finish({ ok: true });
  const end = await d.waitFor((f) => f.task_id === 'L1' && f.state === 'succeeded');
  assert.equal(end.conn, third.conn);
  await w.close();
  await done;
  await d.close();
});

test('a task that ends while the daemon is away is reported once it is back', async () => {
  const d = await fakeDaemon();
  const w = worker(d.addr);
  let finish;
  w.task('long', () => new Promise((r) => { finish = r; }));
  const done = w.run();
  const { conn } = await d.waitFor((f) => f.type === 'heartbeat');
  d.send(conn, { type: 'task', task_id: 'E1', task_type: 'long', payload: {}, attempt: 1 });
  await d.waitFor((f) => f.task_id === 'E1' && f.state === 'running');
  const disconnected = new Promise((r) => w.once('disconnect', r));
  conn.sock.destroy();
  await disconnected;
  finish('result');
  const hello = await d.waitFor((f, c) => f.type === 'hello' && c !== conn);
  assert.deepEqual(hello.frame.running, [{ task_id: 'E1', lease: 0 }], 'its end is not delivered yet');
  const end = await d.waitFor((f) => f.task_id === 'E1' && f.state === 'succeeded');
  assert.equal(end.conn, hello.conn);
  assert.equal(end.frame.result, 'result');
  await w.close();
  await done;
  await d.close();
});

test('a re-reported task the daemon cancels and sends again goes on, started once', async () => {
  let hellos = 0;
  const d = await fakeDaemon({
    onHello: (f, conn) => {
      hellos += 1;
      const welcome = { type: 'welcome', version: 1, worker_id: f.worker_id, heartbeat_interval_ms: 50, inactivity_timeout_ms: 300 };
      if (hellos === 1) return [welcome];
      // A single node after a restart: not held, so cancel; then queued
      // again and sent to this worker, attempt 2.
      return [welcome, { type: 'cancel', task_id: 'R1' }];
    },
  });
  const w = worker(d.addr, { reofferGraceMs: 500 });
  let starts = 0;
  let aborted = false;
  let finish;
  w.task('slow', (task) => {
    starts += 1;
    task.signal.addEventListener('abort', () => { aborted = true; });
    return new Promise((r) => { finish = r; });
  });
  const done = w.run();
  const { conn } = await d.waitFor((f) => f.type === 'heartbeat');
  d.send(conn, { type: 'task', task_id: 'R1', task_type: 'slow', payload: {}, attempt: 1 });
  await d.waitFor((f) => f.task_id === 'R1' && f.state === 'running');
  conn.sock.destroy();
  const hello = await d.waitFor((f, c) => f.type === 'hello' && c !== conn);
  await sleep(50);
  d.send(hello.conn, { type: 'task', task_id: 'R1', task_type: 'slow', payload: {}, attempt: 2 });
  const running = await d.waitFor((f, c) => c === hello.conn && f.task_id === 'R1' && f.state === 'running');
  assert.ok(running);
  await sleep(600);
  assert.equal(aborted, false, 'not stopped');
  finish({ slept: true });
  await d.waitFor((f) => f.task_id === 'R1' && f.state === 'succeeded');
  assert.equal(starts, 1);
  assert.equal(d.frames.filter((f) => f.frame.state === 'cancelled').length, 0);
  await w.close();
  await done;
  await d.close();
});

for (const grace of [0, 150]) {
  test(`a re-reported task the daemon cancels is stopped and nothing more is said of it (grace ${grace} ms)`, async () => {
    let hellos = 0;
    const d = await fakeDaemon({
      onHello: (f) => {
        hellos += 1;
        const welcome = { type: 'welcome', version: 1, worker_id: f.worker_id, heartbeat_interval_ms: 50, inactivity_timeout_ms: 300 };
        return hellos === 1 ? [welcome] : [welcome, { type: 'cancel', task_id: 'G1' }];
      },
    });
    const w = worker(d.addr, { reofferGraceMs: grace });
    let reason;
    let abortedAt = 0;
    w.task('slow', (task) => new Promise((resolve) => {
      task.signal.addEventListener('abort', () => {
        reason = task.signal.reason;
        abortedAt = Date.now();
        task.log('stopping');
        resolve('a result nobody wants');
      });
    }));
    const done = w.run();
    const { conn } = await d.waitFor((f) => f.type === 'heartbeat');
    d.send(conn, { type: 'task', task_id: 'G1', task_type: 'slow', payload: {}, attempt: 1 });
    await d.waitFor((f) => f.task_id === 'G1' && f.state === 'running');
    conn.sock.destroy();
    const hello = await d.waitFor((f, c) => f.type === 'hello' && c !== conn);
    assert.deepEqual(hello.frame.running, [{ task_id: 'G1', lease: 0 }]);
    await sleep(grace + 150);
    assert.equal(reason?.code, 'cancelled');
    const after = abortedAt - hello.at;
    assert.ok(grace === 0 ? after < 100 : after >= grace - 30, `aborted ${after} ms after the hello`);
    assert.deepEqual(d.frames.filter((f) => f.frame.task_id === 'G1').map((f) => f.frame.state ?? f.frame.type), ['running']);
    await w.close();
    await done;
    await d.close();
  });
}

test('a re-reported task answered lease is kept: a cancel after it is a cancel', async () => {
  let hellos = 0;
  const d = await fakeDaemon({
    onHello: (f) => {
      hellos += 1;
      const welcome = { type: 'welcome', version: 1, worker_id: f.worker_id, heartbeat_interval_ms: 50, inactivity_timeout_ms: 300 };
      return hellos === 1 ? [welcome] : [welcome, { type: 'lease', task_id: 'K1', lease: 0 }];
    },
  });
  const w = worker(d.addr);
  w.task('slow', (task) => new Promise((resolve) => task.signal.addEventListener('abort', () => resolve())));
  const done = w.run();
  const { conn } = await d.waitFor((f) => f.type === 'heartbeat');
  d.send(conn, { type: 'task', task_id: 'K1', task_type: 'slow', payload: {}, attempt: 1 });
  await d.waitFor((f) => f.task_id === 'K1' && f.state === 'running');
  conn.sock.destroy();
  const hello = await d.waitFor((f, c) => f.type === 'hello' && c !== conn);
  await sleep(50);
  d.send(hello.conn, { type: 'cancel', task_id: 'K1' });
  const { frame } = await d.waitFor((f) => f.task_id === 'K1' && f.state === 'cancelled');
  assert.equal(frame.type, 'task_update');
  await w.close();
  await done;
  await d.close();
});

test('task_not_held drops the task\'s reports and aborts it', async () => {
  const d = await fakeDaemon();
  const w = worker(d.addr);
  let task;
  let finish;
  w.task('job', (t) => {
    task = t;
    return new Promise((r) => { finish = r; });
  });
  const errors = [];
  w.on('daemonError', (e) => errors.push(e.code));
  const done = w.run();
  const { conn } = await d.waitFor((f) => f.type === 'heartbeat');
  d.send(conn, { type: 'task', task_id: 'N1', task_type: 'job', payload: {}, attempt: 1 });
  await d.waitFor((f) => f.task_id === 'N1' && f.state === 'running');
  d.send(conn, { type: 'error', code: 'task_not_held', message: 'not held', task_id: 'N1' });
  await sleep(50);
  assert.equal(task.signal.aborted, true);
  assert.equal(task.signal.reason.code, 'task_not_held');
  task.log('ignored');
  finish('late');
  await sleep(50);
  assert.deepEqual(d.frames.filter((f) => f.frame.task_id === 'N1').map((f) => f.frame.type), ['task_update']);
  assert.deepEqual(errors, ['task_not_held']);
  // A daemon whose error frame names the task only in its message.
  d.send(conn, { type: 'task', task_id: 'N2', task_type: 'job', payload: {}, attempt: 1 });
  await d.waitFor((f) => f.task_id === 'N2' && f.state === 'running');
  d.send(conn, { type: 'error', code: 'task_not_held', message: 'task N2 is not held by w1' });
  await sleep(50);
  assert.equal(task.id, 'N2');
  assert.equal(task.signal.reason?.code, 'task_not_held');
  finish('late too');
  assert.equal(d.conns.length, 1, 'the connection stays');
  await w.close();
  await done;
  await d.close();
});

test('a dead first address is passed over at once; welcome nodes join the list', async () => {
  const dead = await deadAddr();
  const d = await fakeDaemon({ nodes: ['10.9.9.9:8090'] });
  const w = new Worker({ id: 'w1', addrs: `${dead},${d.addr}`, env: {} });
  const t0 = Date.now();
  const done = w.run();
  await d.waitFor((f) => f.type === 'heartbeat');
  assert.ok(Date.now() - t0 < 500, 'no backoff before the second address');
  assert.deepEqual(w.addrs, [dead, d.addr, '10.9.9.9:8090']);
  assert.equal(w.address, d.addr);
  await w.close();
  await done;
  await d.close();
});

test('once every address failed it backs off, doubling', async () => {
  const d = await fakeDaemon({ onHello: (f, conn) => { conn.sock.destroy(); return []; } });
  const w = worker(d.addr, { backoff: { initialMs: 40, maxMs: 160, random: () => 0.5 } });
  const done = w.run();
  await sleep(500);
  // Tries at about 0, 40, 120, 280, 440 ms.
  const n = d.conns.length;
  assert.ok(n >= 2 && n <= 6, `${n} tries`);
  await w.close();
  await done;
  await d.close();
});

test('a session closed soon after its welcome counts as a failure: the reconnect waits', async () => {
  let first = true;
  const d = await fakeDaemon({
    onFrame: (f, conn) => {
      if (f.type === 'heartbeat' && first) {
        first = false;
        d.send(conn, { type: 'error', code: 'shutting_down', message: 'musterd is shutting down' });
        conn.sock.end();
      }
    },
  });
  const w = worker(d.addr, { backoff: { initialMs: 200, maxMs: 200, random: () => 0.5 } });
  const done = w.run();
  const { at } = await d.waitFor((f) => f.type === 'heartbeat');
  const again = await d.waitFor((f, c) => f.type === 'hello' && c.id === 2);
  assert.ok(again.at - at >= 150, `waited ${again.at - at} ms`);
  await w.close();
  await done;
  await d.close();
});

test('a session that held is followed by a reconnect at once, the doubling afresh', async () => {
  const d = await fakeDaemon();
  const w = worker(d.addr, { stableSessionMs: 100, backoff: { initialMs: 400, maxMs: 400, random: () => 0.5 } });
  const done = w.run();
  const { conn } = await d.waitFor((f) => f.type === 'heartbeat');
  await sleep(150);
  const t0 = Date.now();
  conn.sock.destroy();
  const again = await d.waitFor((f, c) => f.type === 'hello' && c !== conn);
  assert.ok(again.at - t0 < 200, `reconnected after ${again.at - t0} ms`);
  await w.close();
  await done;
  await d.close();
});

test('the nodes of the latest welcome replace those of earlier ones', async () => {
  let hellos = 0;
  const d = await fakeDaemon({
    onHello: (f) => {
      hellos += 1;
      const nodes = hellos === 1 ? ['10.0.0.1:8090', '10.0.0.2:8090'] : ['10.0.0.3:8090'];
      return [{ type: 'welcome', version: 1, worker_id: f.worker_id, heartbeat_interval_ms: 50, inactivity_timeout_ms: 300, nodes }];
    },
  });
  const w = worker(d.addr, { connectTimeoutMs: 200 });
  const done = w.run();
  const { conn } = await d.waitFor((f) => f.type === 'heartbeat');
  assert.deepEqual(w.addrs, [d.addr, '10.0.0.1:8090', '10.0.0.2:8090']);
  conn.sock.destroy();
  // The two named nodes are tried (and fail) before the given address again.
  await d.waitFor((f, c) => f.type === 'heartbeat' && c !== conn, { timeout: 5000 });
  assert.deepEqual(w.addrs, [d.addr, '10.0.0.3:8090']);
  await w.close();
  await done;
  await d.close();
});

test('a change of state is sent sooner than the interval, at most ten a second', async () => {
  const d = await fakeDaemon({ interval: 10000 });
  const w = worker(d.addr);
  const done = w.run();
  await d.waitFor((f) => f.type === 'heartbeat');
  const t0 = Date.now();
  for (let i = 1; i <= 20; i++) {
    w.set({ queue_depth: i });
    await sleep(10);
  }
  await d.waitFor((f) => f.type === 'heartbeat' && f.queue_depth === 20);
  const beats = d.of('heartbeat');
  const elapsed = Date.now() - t0;
  assert.ok(beats.length >= 2, 'sent sooner');
  assert.ok(beats.length - 1 <= Math.ceil(elapsed / 100) + 1, `${beats.length} beats in ${elapsed} ms`);
  const n = beats.length;
  w.set({ queue_depth: 20 });
  await sleep(150);
  assert.equal(d.of('heartbeat').length, n, 'no beat for a set that changes nothing');
  await w.close();
  await done;
  await d.close();
});

test('superseded stops the worker', async () => {
  const d = await fakeDaemon({
    onFrame: (f, conn) => {
      if (f.type === 'heartbeat') d.send(conn, { type: 'error', code: 'superseded', message: 'another connection said hello for this worker' });
    },
  });
  const w = worker(d.addr);
  await assert.rejects(w.run(), (e) => e.code === 'superseded');
  await d.close();
});

test('udp: heartbeats as datagrams carrying worker_id and token', async () => {
  const sock = dgram.createSocket('udp4');
  const got = [];
  sock.on('message', (m) => got.push(JSON.parse(m.toString())));
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  const w = new Worker({ id: 'u1', addrs: `127.0.0.1:${sock.address().port}`, transport: 'udp', token: 'tk', heartbeatIntervalMs: 30, env: {} });
  assert.throws(() => w.task('x', async () => 1));
  const done = w.run();
  w.set({ queue_depth: 2 });
  w.recordRun(0.1, true);
  await sleep(120);
  await w.close();
  await done;
  await sleep(20);
  sock.close();
  const beats = got.filter((f) => f.type === 'heartbeat');
  assert.ok(beats.length >= 2);
  assert.ok(beats.every((b) => b.worker_id === 'u1' && b.token === 'tk'));
  assert.ok(beats.some((b) => b.queue_depth === 2));
  assert.deepEqual(got.find((f) => f.type === 'run'), { type: 'run', worker_id: 'u1', token: 'tk', duration_ms: 100, ok: true });
  assert.equal(got.at(-1).type, 'bye');
});

test('options come from the environment', () => {
  const w = new Worker({
    env: {
      MUSTER_ADDRS: 'a:1, [::1]:2',
      MUSTER_WORKER_ID: 'env-1',
      MUSTER_LABELS: 'zone=eu,tier=gpu',
      MUSTER_CAPACITY: '5',
    },
  });
  assert.equal(w.id, 'env-1');
  assert.deepEqual(w.addrs, ['a:1', '[::1]:2']);
  assert.deepEqual(w.labels, { zone: 'eu', tier: 'gpu' });
  assert.equal(w.capacity, 5);
  assert.throws(() => new Worker({ id: 'bad id', env: {} }), TypeError);
  assert.throws(() => new Worker({ id: 'registry', env: {} }), TypeError);
  assert.throws(() => new Worker({ env: { MUSTER_CAPACITY: 'x' } }), TypeError);
  assert.throws(() => new Worker({ addrs: 'nope', env: {} }), TypeError);
});

test('a closed worker leaves nothing that keeps the process alive', async () => {
  const d = await fakeDaemon();
  const dead = await deadAddr();
  const lib = new URL('../index.js', import.meta.url).href;
  const script = `
    import { Worker } from ${JSON.stringify(lib)};
    const w = new Worker({ id: 'child', addrs: process.argv[1], env: {} });
    w.task('x', async () => 1);
    const done = w.run();
    setTimeout(() => w.close(), 300);
    await done;
  `;
  for (const addr of [d.addr, dead]) {
    const t0 = Date.now();
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, addr], { stdio: 'inherit' });
    const code = await new Promise((r) => child.on('exit', r));
    assert.equal(code, 0);
    assert.ok(Date.now() - t0 < 3000, `exited after ${Date.now() - t0} ms`);
  }
  await d.close();
});

