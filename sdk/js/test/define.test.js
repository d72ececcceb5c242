import { test } from 'node:test';
import assert from 'node:assert/strict';

import { defineTool } from '../define.js';
import { Context } from '../context.js';
import { ToolError } from '../error.js';

const witCtx = { runId: 'run-2026-01-01-x', attempt: 2, tool: 'greeter', deadlineMs: 1n };

function greeter(run) {
  return defineTool({
    name: 'greeter',
    version: '1.2.3',
    description: 'Greets someone.',
    inputSchema: { $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'object', required: ['name'] },
    effects: ['mail.send'],
    run: run ?? ((ctx, input) => {
      if (input.name === '') throw ToolError.validation('name is empty', { field: 'name' });
      return { greeting: `hello, ${input.name}`, run_id: ctx.runId, attempt: ctx.attempt };
    }),
  });
}

// The record componentize-js turns into the result's `err`.
function errOf(fn) {
  try {
    fn();
  } catch (thrown) {
    assert.ok(!(thrown instanceof Error), 'a plain record, which componentize-js maps to err (an Error would trap)');
    return thrown;
  }
  assert.fail('expected an error');
}

test('describe reports the descriptor with the schema as JSON text', () => {
  assert.deepEqual(greeter().describe(), {
    name: 'greeter',
    version: '1.2.3',
    description: 'Greets someone.',
    inputSchema: '{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","required":["name"]}',
    effects: ['mail.send'],
    capabilities: [],
  });
});

test('run passes the context and serializes the output compactly', () => {
  assert.equal(greeter().run(witCtx, '{"name":"Ada"}'),
    '{"greeting":"hello, Ada","run_id":"run-2026-01-01-x","attempt":2}');
});

test('input that is not JSON is validation "input: <reason>"', () => {
  const err = errOf(() => greeter().run(witCtx, 'not json'));
  assert.equal(err.class, 'validation');
  assert.match(err.message, /^input: /);
  assert.equal(err.details, undefined);
});

test('tool errors pass through with details as JSON text', () => {
  assert.deepEqual(errOf(() => greeter().run(witCtx, '{"name":""}')),
    { class: 'validation', message: 'name is empty', details: '{"field":"name"}' });
});

test('a stray exception is fatal, never a trap', () => {
  const tool = greeter(() => null.boom);
  const err = errOf(() => tool.run(witCtx, '{}'));
  assert.equal(err.class, 'fatal');
  assert.match(err.message, /^unhandled TypeError: /);
});

test('output: undefined is null, BigInt is exact, the unserializable is fatal', () => {
  assert.equal(greeter(() => undefined).run(witCtx, '{}'), 'null');
  assert.equal(greeter(() => ({ total: 2n ** 64n - 1n })).run(witCtx, '{}'), '{"total":18446744073709551615}');
  const cyclic = {};
  cyclic.self = cyclic;
  const err = errOf(() => greeter(() => cyclic).run(witCtx, '{}'));
  assert.equal(err.class, 'fatal');
  assert.match(err.message, /^output: .*cyclic/);
  const promised = errOf(() => greeter(async () => 1).run(witCtx, '{}'));
  assert.deepEqual([promised.class, promised.message.startsWith('output: run returned a Promise')], ['fatal', true]);
});

test('a mistaken definition fails when the module loads', () => {
  assert.throws(() => defineTool({ version: '1', description: 'd', inputSchema: {}, run() {} }), /`name`/);
  assert.throws(() => defineTool({ name: 'n', version: '1', description: 'd', run() {} }), /inputSchema/);
  assert.throws(() => defineTool({ name: 'n', version: '1', description: 'd', inputSchema: {} }), /`run`/);
});

test('Context exposes the attempt and the time left', () => {
  const ctx = new Context({ ...witCtx, deadlineMs: BigInt(Date.now() + 60_000) });
  assert.equal(ctx.runId, 'run-2026-01-01-x');
  assert.equal(ctx.attempt, 2);
  assert.equal(ctx.tool, 'greeter');
  assert.equal(typeof ctx.deadlineMs, 'number');
  assert.ok(ctx.remainingMs() > 50_000 && ctx.remainingMs() <= 60_000);
  assert.equal(new Context(witCtx).remainingMs(), 0, 'zero once the deadline passed');
  assert.ok(Object.isFrozen(ctx));
});
