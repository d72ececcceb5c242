import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { ERROR_CLASSES, ToolError, fromHostError, fromThrown, fromWitError, toWitError } from '../error.js';

// The WIT the SDK implements, read as the Python SDK's test reads it: the cases of
// `enum error-class`, doc comments stripped.
const WIT = new URL('../../../wit/types.wit', import.meta.url);

function witErrorClasses() {
  const body = readFileSync(WIT, 'utf8').match(/enum error-class \{([^}]*)\}/);
  assert.ok(body, `no \`enum error-class\` in ${WIT.pathname}`);
  return [...body[1].replace(/\/\/.*$/gm, '').matchAll(/^\s*([a-z-]+),/gm)].map((m) => m[1]);
}

test('class names match the WIT enum, in order', () => {
  const cases = witErrorClasses();
  assert.ok(cases.length > 0, 'the WIT enum has cases');
  assert.deepEqual([...ERROR_CLASSES], cases);
});

test('helpers set their class, message and details', () => {
  for (const cls of ERROR_CLASSES) {
    const error = ToolError[cls]('m', { k: 1 });
    assert.ok(error instanceof ToolError && error instanceof Error);
    assert.equal(error.cls, cls);
    assert.equal(error.message, 'm');
    assert.deepEqual(error.details, { k: 1 });
    assert.equal(String(error), `${cls}: m`);
  }
  assert.equal(ToolError.fatal('m').details, undefined);
  assert.throws(() => new ToolError('nope', 'm'), /unknown error class "nope"/);
});

test('details travel as JSON text and come back as values', () => {
  const error = ToolError.validation('total mismatch', { expected: 300, got: 200 });
  const wit = toWitError(error);
  assert.deepEqual(wit, { class: 'validation', message: 'total mismatch', details: '{"expected":300,"got":200}' });
  assert.deepEqual(fromWitError(wit), error);
  assert.equal(toWitError(ToolError.validation('x', 2n ** 64n - 1n)).details, '18446744073709551615');
  assert.equal(toWitError(ToolError.validation('x', null)).details, 'null', 'null is a JSON value');
  assert.equal(toWitError(ToolError.validation('x', 'text')).details, '"text"');
});

test('missing details stay missing', () => {
  const wit = toWitError(ToolError.fatal('boom'));
  assert.equal(wit.details, undefined);
  assert.equal(fromWitError(wit).details, undefined);
  assert.equal(fromWitError({ class: 'fatal', message: 'boom', details: null }).details, undefined);
});

test('details that cannot be serialized are dropped and named', () => {
  const cyclic = {};
  cyclic.self = cyclic;
  const wit = toWitError(ToolError.conflict('m', cyclic));
  assert.equal(wit.class, 'conflict');
  assert.equal(wit.details, undefined);
  assert.match(wit.message, /^m \(details dropped: .*cyclic/);
});

test('non-JSON details from the host are kept as a string', () => {
  const error = fromWitError({ class: 'conflict', message: 'key reused', details: 'not json' });
  assert.equal(error.cls, 'conflict');
  assert.equal(error.details, 'not json');
});

// componentize-js raises an import's `err` as a ComponentError (not an Error subclass) whose
// `payload` is the WIT record.
class ComponentError {
  constructor(payload) {
    this.message = '[object Object] (see error.payload)';
    this.payload = payload;
  }
}

test('host import errors become ToolErrors with the same class, message and details', () => {
  const thrown = new ComponentError({ class: 'permission', message: 'not granted', details: '{"kind":"erp.x"}' });
  const error = fromHostError(thrown);
  assert.ok(error instanceof ToolError);
  assert.deepEqual([error.cls, error.message, error.details], ['permission', 'not granted', { kind: 'erp.x' }]);
  assert.deepEqual(toWitError(fromThrown(thrown)), thrown.payload, 'and go back out unchanged');
  const other = new TypeError('bad argument');
  assert.equal(fromHostError(other), other, 'anything else is left for fromThrown');
});

test('anything else thrown is fatal "unhandled <name>: <message>"', () => {
  assert.deepEqual(toWitError(fromThrown(new TypeError('x is null'))),
    { class: 'fatal', message: 'unhandled TypeError: x is null', details: undefined });
  assert.equal(fromThrown(new RangeError('deep')).message, 'unhandled RangeError: deep');
  assert.equal(fromThrown('out of memory').message, 'unhandled string: out of memory');
  assert.equal(fromThrown(42).message, 'unhandled number: 42');
  assert.equal(fromThrown(undefined).message, 'unhandled undefined: undefined');
  assert.equal(fromThrown(null).message, 'unhandled null: null');
  assert.equal(fromThrown({ odd: true }).cls, 'fatal');
  const mine = ToolError.timeout('late');
  assert.equal(fromThrown(mine), mine);
});

test('a thrown WIT-shaped record is taken as that error', () => {
  const error = fromThrown({ class: 'timeout', message: 'raw', details: '{"z":1}' });
  assert.deepEqual([error.cls, error.message, error.details], ['timeout', 'raw', { z: 1 }]);
  assert.equal(fromThrown({ class: 'weird', message: 'raw' }).cls, 'fatal');
});
