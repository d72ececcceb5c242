import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Checkpoint, Outcome, bindHost, fieldList } from '../host.js';
import { ToolError } from '../error.js';

const outcome = (body) => new Outcome({ body, replayed: false, dispatches: 1 });

test('bodyValue parses JSON and keeps other text as a string', () => {
  assert.deepEqual(outcome('{"id":"erp-1"}').bodyValue(), { id: 'erp-1' });
  assert.equal(outcome('accepted').bodyValue(), 'accepted');
  assert.equal(outcome('').bodyValue(), '');
  assert.equal(outcome('42').bodyValue(), 42);
});

test('json() of a body that is not JSON is fatal', () => {
  assert.deepEqual(outcome('[1]').json(), [1]);
  assert.throws(() => outcome('accepted').json(),
    (error) => error instanceof ToolError && error.cls === 'fatal' && error.message.startsWith('effect outcome: '));
});

// Fake imports recording their calls; `fail` makes the next call raise like componentize-js.
function fakeHost() {
  const calls = [];
  const saved = new Map();
  let fail = null;
  const raise = () => {
    if (fail) {
      const payload = fail;
      fail = null;
      throw Object.assign(Object.create(null), { message: '[object Object] (see error.payload)', payload });
    }
  };
  const wit = {
    perform(kind, key, payload) {
      calls.push(['perform', kind, key, payload]);
      raise();
      return { body: '{"erp_id":"E1"}', replayed: false, dispatches: 1 };
    },
    save(name, state) {
      calls.push(['save', name, state]);
      raise();
      saved.set(name, { name, state, attempt: 1 });
      return undefined;
    },
    get: (name) => saved.get(name),
    latest: () => [...saved.values()].at(-1),
    event: (...args) => calls.push(['event', ...args]),
  };
  return { calls, saved, host: bindHost(wit), failNext: (payload) => { fail = payload; } };
}

test('perform sends objects as compact JSON and strings as is', () => {
  const { calls, host } = fakeHost();
  const result = host.effects.perform('erp.post-invoice', 'post-invoice:INV-1', { b: 'é', a: [1, 2n] });
  assert.deepEqual(calls[0], ['perform', 'erp.post-invoice', 'post-invoice:INV-1', '{"b":"é","a":[1,2]}']);
  assert.ok(result instanceof Outcome);
  assert.deepEqual([result.body, result.replayed, result.dispatches], ['{"erp_id":"E1"}', false, 1]);
  assert.deepEqual(result.json(), { erp_id: 'E1' });
  host.effects.perform('k', 'key', '{ "as": "is" }');
  assert.equal(calls[1][3], '{ "as": "is" }');
});

test('perform rethrows host errors as ToolError, unchanged', () => {
  const { host, failNext } = fakeHost();
  failNext({ class: 'conflict', message: 'key reused', details: '{"key":"k"}' });
  assert.throws(() => host.effects.perform('erp.x', 'k', {}), (error) =>
    error instanceof ToolError && error.cls === 'conflict' && error.message === 'key reused' &&
    error.details.key === 'k');
});

test('an unserializable payload is fatal and names the kind', () => {
  const { calls, host } = fakeHost();
  const cyclic = {};
  cyclic.self = cyclic;
  assert.throws(() => host.effects.perform('erp.x', 'k', cyclic), (error) =>
    error.cls === 'fatal' && error.message.startsWith('effect `erp.x` payload: '));
  assert.throws(() => host.effects.perform('erp.x', 'k', undefined), /effect `erp.x` payload/);
  assert.equal(calls.length, 0, 'nothing reached the host');
});

test('checkpoints are UTF-8 JSON bytes and load back', () => {
  const { calls, host } = fakeHost();
  assert.equal(host.checkpoint.load('validated'), null);
  assert.equal(host.checkpoint.latest(), null);
  host.checkpoint.save('validated', { invoice_id: 'INV-é', total_cents: 1000 });
  const bytes = calls[0][2];
  assert.ok(bytes instanceof Uint8Array);
  assert.deepEqual(Buffer.from(bytes), Buffer.from('{"invoice_id":"INV-é","total_cents":1000}', 'utf8'));
  assert.deepEqual(host.checkpoint.load('validated'), { invoice_id: 'INV-é', total_cents: 1000 });
  const latest = host.checkpoint.latest();
  assert.ok(latest instanceof Checkpoint);
  assert.deepEqual([latest.name, latest.attempt], ['validated', 1]);
});

test('state that is not JSON is fatal and names the checkpoint', () => {
  const { host } = fakeHost();
  host.checkpoint.saveRaw('raw', new Uint8Array([0xff]));
  assert.throws(() => host.checkpoint.load('raw'), (error) => error.cls === 'fatal' && error.message.startsWith('checkpoint `raw`: '));
  host.checkpoint.saveRaw('text', new TextEncoder().encode('nope'));
  assert.throws(() => host.checkpoint.load('text'), /checkpoint `text`: /);
  assert.throws(() => host.checkpoint.save('s', undefined), /checkpoint `s`: /);
});

test('a refused save surfaces the host error', () => {
  const { host, failNext } = fakeHost();
  failNext({ class: 'validation', message: 'checkpoint too large' });
  assert.throws(() => host.checkpoint.save('big', 'x'), (error) => error.cls === 'validation' && error.details === undefined);
});

test('log levels and fields become strings', () => {
  const { calls, host } = fakeHost();
  host.log.info('validated', { invoice_id: 'INV-1', total_cents: 1000, ok: true, o: { a: [1] }, n: null });
  host.log.warn('plain');
  host.log.debug('pairs', [['k', 2n]]);
  host.log.event('error', 'map', new Map([['m', 1]]));
  assert.deepEqual(calls, [
    ['event', 'info', 'validated', [['invoice_id', 'INV-1'], ['total_cents', '1000'], ['ok', 'true'], ['o', '{"a":[1]}'], ['n', 'null']]],
    ['event', 'warn', 'plain', []],
    ['event', 'debug', 'pairs', [['k', '2']]],
    ['event', 'error', 'map', [['m', '1']]],
  ]);
  assert.deepEqual(Object.keys(host.log).sort(), ['debug', 'error', 'event', 'info', 'trace', 'warn']);
  assert.throws(() => host.log.event('loud', 'x'), /unknown log level/);
  assert.deepEqual(fieldList(undefined), []);
});
