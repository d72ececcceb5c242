// defineTool: turns a plain `run(ctx, input)` into the world's `describe` and `run` exports.
// Invariant: whatever the tool does, `run` answers with JSON text or a classified error;
// bad input JSON is `validation` and a stray exception is `fatal`, never a trap.

import { reasonText, toJson } from './json.js';
import { ToolError, fromThrown, toWitError } from './error.js';
import { Context } from './context.js';

/**
 * @param {object} tool
 * @param {string} tool.name as agents and policies refer to it
 * @param {string} tool.version semantic version
 * @param {string} tool.description
 * @param {object|string} tool.inputSchema JSON Schema (draft 2020-12) of the input
 * @param {string[]} [tool.effects] effect kinds the tool may perform
 * @param {string[]} [tool.capabilities] other capabilities, e.g. `http:api.example.com`
 * @param {(ctx: Context, input: any) => any} tool.run returns the output (any JSON value)
 * @returns {{describe: Function, run: Function}} export both from the tool's module
 */
export function defineTool({ name, version, description, inputSchema, effects = [], capabilities = [], run }) {
  // Checked when the module loads, i.e. while componentize-js builds: a mistake fails the build.
  for (const [field, value] of Object.entries({ name, version, description })) {
    if (typeof value !== 'string' || value === '') throw new TypeError(`defineTool: \`${field}\` must be a non-empty string`);
  }
  if (inputSchema === undefined) throw new TypeError('defineTool: `inputSchema` is required');
  if (typeof run !== 'function') throw new TypeError('defineTool: `run` must be a function');
  const descriptor = Object.freeze({
    name,
    version,
    description,
    inputSchema: typeof inputSchema === 'string' ? inputSchema : toJson(inputSchema),
    effects: Object.freeze([...effects].map(String)),
    capabilities: Object.freeze([...capabilities].map(String)),
  });

  return {
    describe() {
      return { ...descriptor, effects: [...descriptor.effects], capabilities: [...descriptor.capabilities] };
    },
    run(ctx, input) {
      try {
        return runOnce(run, ctx, input);
      } catch (thrown) {
        // componentize-js turns a thrown plain WIT record into the result's `err`.
        throw toWitError(fromThrown(thrown));
      }
    },
  };
}

function runOnce(run, ctx, input) {
  let value;
  try {
    value = JSON.parse(input);
  } catch (reason) {
    throw ToolError.validation(`input: ${reasonText(reason)}`);
  }
  const output = run(new Context(ctx), value);
  // Host imports are synchronous, so a Promise here is a mistake that would serialize as `{}`.
  if (output !== null && typeof output === 'object' && typeof output.then === 'function') {
    throw ToolError.fatal('output: run returned a Promise; tools run synchronously (drop `async`)');
  }
  try {
    // `undefined` (no return) is `null`, as Rust's `()` serializes.
    return toJson(output === undefined ? null : output);
  } catch (reason) {
    throw ToolError.fatal(`output: ${reasonText(reason)}`);
  }
}
