import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeFrame, LineSplitter, MAX_FRAME_BYTES, truncateUtf8, wellFormed } from '../lib/frame.js';
import { FrameTooLargeError } from '../lib/errors.js';

test('a frame is one JSON line ended by a newline', () => {
  const line = encodeFrame({ type: 'task_log', task_id: 't1', lines: ['a\nb', 'c\r\n'] });
  assert.ok(line.endsWith('\n'));
  assert.equal(line.indexOf('\n'), line.length - 1, 'no newline inside');
  assert.deepEqual(JSON.parse(line), { type: 'task_log', task_id: 't1', lines: ['a\nb', 'c\r\n'] });
});

test('the limit counts UTF-8 bytes of the JSON text, without its newline', () => {
  const shell = JSON.stringify({ type: 'heartbeat', x: '' }).length;
  const exact = { type: 'heartbeat', x: 'a'.repeat(MAX_FRAME_BYTES - shell) };
  assert.equal(encodeFrame(exact).length, MAX_FRAME_BYTES + 1);
  const over = { type: 'heartbeat', x: 'a'.repeat(MAX_FRAME_BYTES - shell + 1) };
  assert.throws(() => encodeFrame(over), (e) => e instanceof FrameTooLargeError && e.code === 'too_large' && e.bytes === MAX_FRAME_BYTES + 1);
  // é is two bytes: half as many fit.
  const wide = { type: 'heartbeat', x: 'é'.repeat((MAX_FRAME_BYTES - shell) / 2 + 1) };
  assert.throws(() => encodeFrame(wide), FrameTooLargeError);
  assert.throws(() => encodeFrame({ type: 'run' }, 10), FrameTooLargeError);
});

test('lone surrogates become U+FFFD, so the JSON is valid UTF-8', () => {
  const line = encodeFrame({ type: 'task_log', task_id: 't', lines: ['a\uD800b', '\uD83D\uDE00'] });
  assert.deepEqual(JSON.parse(line).lines, ['a\uFFFDb', '\uD83D\uDE00']);
  assert.equal(wellFormed('x\uDC00'), 'x\uFFFD');
});

test('truncateUtf8 cuts at a character boundary', () => {
  assert.equal(truncateUtf8('héllo', 2), 'h');
  assert.equal(truncateUtf8('héllo', 3), 'hé');
  assert.equal(truncateUtf8('😀😀', 5), '😀');
  assert.equal(truncateUtf8('abc', 10), 'abc');
  assert.equal(truncateUtf8('abc', 0), '');
});

test('lines split anywhere come out whole', () => {
  const text = '{"type":"welcome"}\r\n{"type":"task","payload":"é😀"}\n\n{"type":"cancel"}\n';
  const bytes = Buffer.from(text);
  for (let cut = 1; cut < bytes.length; cut++) {
    const s = new LineSplitter();
    const got = [...s.push(bytes.subarray(0, cut)), ...s.push(bytes.subarray(cut))];
    assert.deepEqual(got, ['{"type":"welcome"}', '{"type":"task","payload":"é😀"}', '{"type":"cancel"}'], `cut at ${cut}`);
    assert.equal(s.pending, 0);
  }
  const s = new LineSplitter();
  assert.deepEqual(s.push('{"a":1}\n{"b"'), ['{"a":1}']);
  assert.equal(s.pending, 4);
  assert.deepEqual(s.push(':2}\n'), ['{"b":2}']);
});

test('a line past the splitter limit is refused', () => {
  const s = new LineSplitter(8);
  assert.throws(() => s.push('0123456789'), FrameTooLargeError);
  assert.throws(() => new LineSplitter(8).push('0123456789\n'), FrameTooLargeError);
  assert.deepEqual(new LineSplitter(8).push('01234567\n'), ['01234567']);
});
