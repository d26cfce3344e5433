#!/usr/bin/env node
// The conformance runner (clients/conformance/README.md): a worker made
// with the library's public API, driven over standard input.

import { appendFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Client, TaskError, Worker } from '../index.js';

const LANG = 'node';
const env = process.env;

/** Resolves after `ms`, or early when `signal` aborts. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

function say(line) {
  return new Promise((resolve) => process.stdout.write(line + '\n', resolve));
}

function oneLine(s) {
  return String(s).replace(/[\r\n]+/g, ' ');
}

async function exit(code, line) {
  if (line !== undefined) await say(line);
  process.exit(code);
}

let worker;
let client;
try {
  worker = new Worker({
    // id, addresses and token file from MUSTER_WORKER_ID, MUSTER_ADDRS
    // and MUSTER_HEARTBEAT_TOKEN_FILE; TLS from MUSTER_TLS,
    // MUSTER_TLS_CA_FILE, MUSTER_TLS_CERT_FILE and MUSTER_TLS_KEY_FILE.
    labels: { client: LANG },
    capacity: 4,
  });
  // An https:// MUSTER_URL is checked against MUSTER_TLS_CA_FILE.
  client = new Client(env.MUSTER_URL);
} catch (e) {
  await exit(3, `fatal ${oneLine(e.message)}`);
}

worker.task('echo', async (task) => {
  task.log(`hello from ${LANG}`);
  task.progress(0.5, 'halfway');
  return { echo: task.payload, client: LANG };
});

worker.task('fail', async () => {
  throw new TaskError('boom', { retryable: false });
});

worker.task('flaky', async (task) => {
  if (task.attempt === 1) throw new TaskError('try again', { retryable: true });
  return { attempt: task.attempt };
});

worker.task('wait', async (task) => {
  await sleep(60_000, task.signal);
  if (task.signal.aborted) task.log('cancel seen');
  return null;
});

worker.task('slow', async (task) => {
  if (env.MUSTER_CONFORMANCE_RUNS) appendFileSync(env.MUSTER_CONFORMANCE_RUNS, `${task.id}\n`);
  await sleep(3000, task.signal);
  return { slept: true };
});

worker.run().then(
  () => {},
  (err) => exit(3, `fatal ${oneLine(err.message)}`),
);
await say('ready');

async function command(line) {
  const sp = line.indexOf(' ');
  const verb = sp === -1 ? line : line.slice(0, sp);
  const rest = sp === -1 ? '' : line.slice(sp + 1).trim();
  switch (verb) {
    case 'set':
      try {
        worker.set(JSON.parse(rest));
        return 'ok';
      } catch (e) {
        return `error ${e.message}`;
      }
    case 'run': {
      const [seconds, outcome] = rest.split(/\s+/);
      worker.recordRun(Number(seconds), outcome === 'ok');
      return 'ok';
    }
    case 'submit': {
      // TYPE JSON KEY: the JSON may hold spaces.
      const first = rest.indexOf(' ');
      const last = rest.lastIndexOf(' ');
      if (first === -1 || last === first) return 'error usage: submit TYPE JSON KEY';
      const type = rest.slice(0, first);
      const payload = JSON.parse(rest.slice(first + 1, last));
      const key = rest.slice(last + 1);
      const task = await client.submit(type, payload, key === '-' ? {} : { idempotencyKey: key });
      return `task ${task.id}`;
    }
    case 'wait':
      try {
        const task = await client.wait(rest, { timeoutMs: 30_000 });
        return `state ${task.state}`;
      } catch (e) {
        if (e.code === 'timeout' && e.task) return `state ${e.task.state}`;
        throw e;
      }
    case 'show':
      return `task ${JSON.stringify(await client.show(rest))}`;
    case 'cancel':
      await client.cancel(rest);
      return 'ok';
    case 'bye':
      await worker.close();
      await exit(0);
      return undefined;
    default:
      return `error unknown command ${JSON.stringify(verb)}`;
  }
}

// One command at a time, each answered with one line.
const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const raw of input) {
  const line = raw.trim();
  if (line === '') continue;
  let answer;
  try {
    answer = await command(line);
  } catch (e) {
    answer = `error ${e.message}`;
  }
  if (answer !== undefined) await say(oneLine(answer));
}
// Standard input closed: as bye.
await worker.close();
await exit(0);
