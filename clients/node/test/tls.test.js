// TLS: the heartbeat connection to a TLS listener (server certificate
// checked, client certificate presented), handshake failures backed off
// and told, worker_mismatch fatal, and the HTTP client over https://.
// Certificates are made with openssl into a temporary directory.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Client, Worker } from '../index.js';
import { fakeDaemon, sleep } from './fake-daemon.js';

const fast = { initialMs: 20, maxMs: 40 };
let dir;
/** File names: ca, server, client (CN w1), other CA. */
const f = {};
/** Their contents. */
const pem = {};

function openssl(...args) {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(name) {
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=muster test ${name}`);
}

function makeCert(name, ca, cn, ext) {
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`,
    '-set_serial', String(Date.now()), '-days', '2', '-out', `${name}.pem`, '-extfile', `${name}.ext`);
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'muster-tls-'));
  makeCa('ca');
  makeCa('other');
  makeCert('server', 'ca', 'musterd', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  makeCert('client', 'ca', 'w1', 'extendedKeyUsage=clientAuth\n');
  for (const n of ['ca', 'other', 'server', 'client']) {
    f[n] = join(dir, `${n}.pem`);
    f[`${n}Key`] = join(dir, `${n}.key`);
    pem[n] = readFileSync(f[n], 'utf8');
    pem[`${n}Key`] = readFileSync(f[`${n}Key`], 'utf8');
  }
});

after(() => rmSync(dir, { recursive: true, force: true }));

/** musterd's TLS heartbeat port: a client certificate from `ca` required; its CN is the worker. */
function tlsDaemon(options = {}) {
  return fakeDaemon({
    tls: { key: pem.serverKey, cert: pem.server, ca: pem.ca, requestCert: true, rejectUnauthorized: true },
    onHello: (hello, conn) => {
      const cn = conn.sock.getPeerCertificate().subject?.CN;
      if (cn !== hello.worker_id) {
        return [{ type: 'error', code: 'worker_mismatch', message: `the client certificate is worker ${cn}` }];
      }
      return undefined;
    },
    ...options,
  });
}

const mtls = () => ({ caFile: f.ca, certFile: f.client, keyFile: f.clientKey });

test('over TLS: the server certificate checked, the client certificate presented, then hello and heartbeats', async () => {
  const d = await tlsDaemon();
  const w = new Worker({ id: 'w1', addrs: d.addr, env: {}, backoff: fast, tls: mtls() });
  assert.equal(w.tls, true);
  const connected = new Promise((r) => w.once('connect', r));
  const done = w.run();
  const { frame: hello, conn } = await d.waitFor((fr) => fr.type === 'hello');
  assert.equal(hello.worker_id, 'w1');
  assert.equal(conn.sock.authorized, true);
  assert.equal(conn.sock.getPeerCertificate().subject.CN, 'w1');
  assert.match(conn.sock.getProtocol(), /^TLSv1\.[23]$/);
  assert.equal(conn.sock.servername, false, 'no SNI for an IP address');
  await connected;
  await d.waitFor((fr) => fr.type === 'heartbeat' && fr.seq === 2);
  await w.close();
  await done;
  assert.equal(d.frames.at(-1).frame.type, 'bye');
  await d.close();
});

test('the environment turns TLS on and names the files; a host name is sent as SNI and checked', async () => {
  const d = await tlsDaemon();
  const env = {
    MUSTER_TLS: 'true',
    MUSTER_TLS_CA_FILE: f.ca,
    MUSTER_TLS_CERT_FILE: f.client,
    MUSTER_TLS_KEY_FILE: f.clientKey,
    MUSTER_WORKER_ID: 'w1',
    MUSTER_ADDRS: `localhost:${d.port}`,
  };
  const w = new Worker({ env, backoff: fast });
  assert.equal(w.tls, true);
  const done = w.run();
  const { conn } = await d.waitFor((fr) => fr.type === 'heartbeat');
  assert.equal(conn.sock.servername, 'localhost');
  await w.close();
  await done;
  await d.close();
  // Off, and refused values.
  assert.equal(new Worker({ env: { MUSTER_TLS: '0', MUSTER_TLS_CA_FILE: '/nonexistent' } }).tls, false);
  assert.equal(new Worker({ env: { MUSTER_TLS: '1' }, tls: false }).tls, false);
  assert.throws(() => new Worker({ env: { MUSTER_TLS: 'maybe' } }), TypeError);
  assert.throws(() => new Worker({ env: { MUSTER_TLS: '1', MUSTER_TLS_CA_FILE: join(dir, 'missing.pem') } }), (e) => e.code === 'tls_config');
  assert.throws(() => new Worker({ env: {}, tls: { caFile: f.client, ca: pem.ca } }), TypeError);
  assert.throws(() => new Worker({ env: {}, tls: { keyFile: f.clientKey } }), TypeError, 'a key needs its certificate');
  assert.throws(() => new Worker({ env: { MUSTER_TLS: '1', MUSTER_TLS_KEY_FILE: f.clientKey } }), TypeError);
  assert.throws(() => new Worker({ env: {}, tls: { certFile: f.client, keyFile: f.ca } }), (e) => e.code === 'tls_config', 'not a key');
  assert.throws(() => new Worker({ env: {}, tls: { certFile: f.client } }), (e) => e.code === 'tls_config', 'no key in the certificate file');
  // A certificate file without a key file: the key is in it too.
  const both = join(dir, 'both.pem');
  writeFileSync(both, pem.client + pem.clientKey);
  assert.equal(new Worker({ env: { MUSTER_TLS: '1', MUSTER_TLS_CERT_FILE: both } }).tls, true);
});

test('udp cannot be TLS: refused at construction', () => {
  assert.throws(() => new Worker({ env: {}, transport: 'udp', tls: true }), /udp cannot use TLS/);
  assert.throws(() => new Worker({ env: { MUSTER_TLS: '1' }, transport: 'udp' }), /MUSTER_TLS/);
  assert.equal(new Worker({ env: { MUSTER_TLS: '1' }, transport: 'udp', tls: false }).tls, false);
});

test('a wrong CA fails the handshake: told as connectError, backed off, the worker never joins', async () => {
  const d = await tlsDaemon();
  const w = new Worker({ id: 'w1', addrs: d.addr, env: {}, backoff: fast, tls: { ...mtls(), caFile: f.other } });
  const errors = [];
  w.on('connectError', (e) => errors.push(e));
  let joined = false;
  w.on('connect', () => {
    joined = true;
  });
  let settled = false;
  const done = w.run().finally(() => {
    settled = true;
  });
  await sleep(300);
  assert.ok(errors.length >= 2, `retried: ${errors.length} failures`);
  const t0 = errors.length;
  assert.ok(errors.length < 20, `backed off: ${errors.length} tries in 300 ms`);
  for (const e of errors) {
    assert.equal(e.address, d.addr);
    assert.equal(e.tls, true);
    assert.match(e.error.code, /SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/);
  }
  assert.equal(d.of('hello').length, 0, 'no hello went out');
  assert.equal(joined, false);
  assert.equal(w.connected, false);
  assert.equal(settled, false, 'not fatal: run() goes on');
  await w.close();
  await done;
  assert.ok(errors.length - t0 <= 1);
  await d.close();
});

test('the files are read again at each connect: a CA put right is picked up and the worker joins', async () => {
  const d = await tlsDaemon();
  const caFile = join(dir, 'rotating-ca.pem');
  writeFileSync(caFile, pem.other);
  const w = new Worker({ id: 'w1', addrs: d.addr, env: {}, backoff: fast, tls: { ...mtls(), caFile } });
  const errors = [];
  w.on('connectError', (e) => errors.push(e));
  const connected = new Promise((r) => w.once('connect', r));
  const done = w.run();
  while (errors.length === 0) await sleep(10);
  writeFileSync(caFile, 'half-written');
  await sleep(60);
  assert.equal(d.of('hello').length, 0, 'a bad PEM leaves the last good one (the wrong CA)');
  writeFileSync(caFile, pem.ca);
  await connected;
  assert.equal(d.of('hello').length, 1);
  assert.equal(w.connected, true);
  await w.close();
  await done;
  await d.close();
});

test('a name that is not the certificate\'s fails; with no listener it is told once as a warning', async () => {
  const d = await tlsDaemon();
  const warnings = [];
  const onWarning = (wn) => {
    if (wn.code === 'MUSTER_TLS') warnings.push(wn);
  };
  process.on('warning', onWarning);
  const w = new Worker({ id: 'w1', addrs: d.addr, env: {}, backoff: fast, tls: { ...mtls(), servername: 'elsewhere.example' } });
  const done = w.run();
  await sleep(250);
  process.off('warning', onWarning);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0].message, /ERR_TLS_CERT_ALTNAME_INVALID/);
  assert.equal(d.of('hello').length, 0);
  await w.close();
  await done;
  await d.close();
});

test('no client certificate: the daemon refuses the handshake, the worker retries', async () => {
  const d = await tlsDaemon();
  const w = new Worker({ id: 'w1', addrs: d.addr, env: {}, backoff: fast, tls: { caFile: f.ca } });
  const errors = [];
  w.on('connectError', (e) => errors.push(e));
  const done = w.run();
  await sleep(250);
  assert.ok(errors.length >= 2, `retried: ${errors.length}`);
  assert.ok(errors.every((e) => e.tls), errors.map((e) => e.error.code).join(','));
  assert.equal(d.of('hello').length, 0);
  assert.ok(d.tlsErrors.length >= 2);
  await w.close();
  await done;
  await d.close();
});

test('worker_mismatch (a hello naming another worker than the certificate) is fatal', async () => {
  const d = await tlsDaemon();
  const w = new Worker({ id: 'w2', addrs: d.addr, env: {}, backoff: fast, tls: mtls() });
  const daemonErrors = [];
  w.on('daemonError', (e) => daemonErrors.push(e.code));
  await assert.rejects(w.run(), (e) => e.code === 'worker_mismatch' && /w2/.test(e.message));
  await sleep(100);
  assert.equal(d.conns.length, 1, 'no second try');
  assert.deepEqual(daemonErrors, ['worker_mismatch']);
  await w.close();
  await d.close();
});

/** The conformance runner, with `env`; its output lines as they come. */
function runner(env) {
  const child = spawn(process.execPath, [new URL('../conformance/runner.js', import.meta.url).pathname], {
    env: { PATH: process.env.PATH, ...env },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = [];
  const waiters = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    lines.push(l);
    for (const w of waiters.splice(0)) w();
  });
  const exited = new Promise((r) => child.on('exit', (code) => r(code)));
  const line = async (n) => {
    while (lines.length <= n) await new Promise((r) => waiters.push(r));
    return lines[n];
  };
  return { child, lines, line, exited };
}

test('the conformance runner over TLS from the environment; worker_mismatch prints fatal and exits 3', async () => {
  const d = await tlsDaemon();
  const env = {
    MUSTER_TLS: '1',
    MUSTER_TLS_CA_FILE: f.ca,
    MUSTER_TLS_CERT_FILE: f.client,
    MUSTER_TLS_KEY_FILE: f.clientKey,
    MUSTER_ADDRS: d.addr,
  };
  const ok = runner({ ...env, MUSTER_WORKER_ID: 'w1' });
  assert.equal(await ok.line(0), 'ready');
  const { frame: hello } = await d.waitFor((fr) => fr.type === 'hello' && fr.worker_id === 'w1');
  assert.deepEqual(hello.labels, { client: 'node' });
  ok.child.stdin.write('bye\n');
  assert.equal(await ok.exited, 0);

  const bad = runner({ ...env, MUSTER_WORKER_ID: 'w2' });
  assert.equal(await bad.exited, 3);
  assert.equal(bad.lines[0], 'ready');
  assert.match(bad.lines[1], /^fatal .*worker_mismatch/);
  await d.close();
});

test('the HTTP client over https:// with the CA given, or from MUSTER_TLS_CA_FILE; the wrong roots fail', async () => {
  const seen = [];
  const server = https.createServer({ key: pem.serverKey, cert: pem.server }, (req, res) => {
    seen.push({ method: req.method, url: req.url, auth: req.headers.authorization });
    if (req.url.endsWith('/slow')) return;
    res.writeHead(req.method === 'POST' ? 201 : 200, { 'Content-Type': 'application/json', 'Idempotent-Replayed': 'false' });
    res.end(JSON.stringify({ id: 't1', type: 'echo', state: req.method === 'POST' ? 'queued' : 'succeeded' }));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `https://127.0.0.1:${server.address().port}`;
  try {
    const c = new Client(url, { token: 'tok', tls: { caFile: f.ca }, env: {} });
    const t = await c.submit('echo', { a: 1 });
    assert.equal(t.id, 't1');
    assert.equal(t.replayed, false);
    assert.equal((await c.wait('t1', { timeoutMs: 2000 })).state, 'succeeded');
    assert.deepEqual(seen[0], { method: 'POST', url: '/api/tasks', auth: 'Bearer tok' });

    const fromEnv = new Client(undefined, { env: { MUSTER_URL: url, MUSTER_TLS_CA_FILE: f.ca } });
    assert.equal((await fromEnv.show('t1')).state, 'succeeded');
    // localhost is in the certificate too (and sent as SNI).
    const byName = new Client(`https://localhost:${server.address().port}`, { env: { MUSTER_TLS_CA_FILE: f.ca } });
    assert.equal((await byName.show('t1')).state, 'succeeded');

    await assert.rejects(new Client(url, { env: {} }).show('t1'), (e) => /SELF_SIGNED|UNABLE_TO_VERIFY/.test(e.code), 'Node\'s roots do not know the test CA');
    await assert.rejects(new Client(url, { env: { MUSTER_TLS_CA_FILE: f.other } }).show('t1'), (e) => /SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(e.code));
    const t0 = Date.now();
    await assert.rejects(new Client(url, { env: { MUSTER_TLS_CA_FILE: f.ca }, timeoutMs: 150 }).show('slow'), (e) => e.name === 'TimeoutError');
    assert.ok(Date.now() - t0 < 1000);
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});
