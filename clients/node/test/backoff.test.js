import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff } from '../lib/backoff.js';

test('250 ms doubling up to 5 s, at the middle of the jitter', () => {
  const b = new Backoff({ random: () => 0.5 });
  assert.deepEqual(Array.from({ length: 8 }, () => b.next()), [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
  b.reset();
  assert.equal(b.next(), 250);
});

test('each wait is between half and one and a half of its step', () => {
  const low = new Backoff({ random: () => 0 });
  assert.deepEqual([low.next(), low.next(), low.next()], [125, 250, 500]);
  const high = new Backoff({ random: () => 0.999999 });
  assert.deepEqual([high.next(), high.next(), high.next()], [375, 750, 1500]);
  for (let i = 0; i < 10; i++) high.next();
  assert.equal(high.next(), 7500);
  const out = new Backoff({ random: () => 7 });
  assert.equal(out.next(), 375, 'a random source out of [0, 1) is clamped');
});

test('the jitter spreads the waits', () => {
  const seen = new Set();
  for (let i = 0; i < 200; i++) {
    const w = new Backoff().next();
    assert.ok(w >= 125 && w <= 375, String(w));
    seen.add(w);
  }
  assert.ok(seen.size > 20, 'not all in step');
  const steps = [];
  const b = new Backoff();
  for (let i = 0; i < 12; i++) steps.push(b.next());
  const bases = [250, 500, 1000, 2000, 4000, 5000, 5000, 5000, 5000, 5000, 5000, 5000];
  steps.forEach((w, i) => assert.ok(w >= bases[i] / 2 && w <= bases[i] * 1.5, `${i}: ${w}`));
});

test('options are checked', () => {
  assert.throws(() => new Backoff({ initialMs: 0 }), RangeError);
  assert.throws(() => new Backoff({ initialMs: 10, maxMs: 5 }), RangeError);
  const b = new Backoff({ initialMs: 10, maxMs: 30, random: () => 0.5 });
  assert.deepEqual([b.next(), b.next(), b.next()], [10, 20, 30]);
});
