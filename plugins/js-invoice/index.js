// js-invoice: validates an invoice, then posts it to the ERP through the `erp.post-invoice`
// effect, exactly once per invoice ID however often the run is retried or resumed. The same
// tool as plugins/invoice (Rust): same key, and the same payload bytes, so either can replay
// the other's effect.
//
// Build with every other plugin: `tollgate build-plugins` (after `plugins/setup.sh`).

import { defineTool, ToolError, effects, checkpoint, log } from '../../sdk/js/tollgate.js';

const POST_INVOICE = 'erp.post-invoice';
const U32_MAX = 4294967295;
const U64_MAX = 2n ** 64n - 1n;

// The Rust tool's derived schema (keys in the order it reports them).
const INPUT_SCHEMA = {
  $defs: {
    Line: {
      additionalProperties: false,
      properties: {
        description: { type: 'string' },
        quantity: { format: 'uint32', minimum: 1, type: 'integer' },
        unit_price_cents: { format: 'uint64', minimum: 0, type: 'integer' },
      },
      required: ['description', 'quantity', 'unit_price_cents'],
      type: 'object',
    },
  },
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  additionalProperties: false,
  properties: {
    currency: { description: 'ISO 4217 code, e.g. `EUR`.', pattern: '^[A-Z]{3}$', type: 'string' },
    customer: { maxLength: 200, minLength: 1, type: 'string' },
    invoice_id: { pattern: '^INV-[A-Za-z0-9-]{1,40}$', type: 'string' },
    lines: { items: { $ref: '#/$defs/Line' }, maxItems: 100, minItems: 1, type: 'array' },
    total_cents: {
      description: 'Must equal the sum of `quantity * unit_price_cents` over the lines.',
      format: 'uint64',
      minimum: 0,
      type: 'integer',
    },
  },
  required: ['invoice_id', 'customer', 'currency', 'lines', 'total_cents'],
  title: 'Invoice',
  type: 'object',
};

// The host validates input against the schema first; these checks cover what it cannot
// (JS numbers are exact only up to 2^53-1, Rust's are u32/u64) and keep a stray shape from
// becoming an "unhandled TypeError".
function string(value, field) {
  if (typeof value !== 'string') throw ToolError.validation(`${field}: must be a string`, { field });
  return value;
}

function integer(value, field, max) {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw ToolError.validation(`${field}: must be an integer from 0 to ${max}`, { field, max });
  }
  return value;
}

/** The invoice with only its known fields, in the Rust struct's field order. */
function readInvoice(input) {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw ToolError.validation('input: must be a JSON object');
  }
  if (!Array.isArray(input.lines)) throw ToolError.validation('lines: must be an array', { field: 'lines' });
  return {
    invoice_id: string(input.invoice_id, 'invoice_id'),
    customer: string(input.customer, 'customer'),
    currency: string(input.currency, 'currency'),
    lines: input.lines.map((line, index) => {
      const at = `lines[${index}]`;
      if (line === null || typeof line !== 'object') throw ToolError.validation(`${at}: must be an object`, { field: at });
      return {
        description: string(line.description, `${at}.description`),
        quantity: integer(line.quantity, `${at}.quantity`, U32_MAX),
        unit_price_cents: integer(line.unit_price_cents, `${at}.unit_price_cents`, Number.MAX_SAFE_INTEGER),
      };
    }),
    total_cents: integer(input.total_cents, 'total_cents', Number.MAX_SAFE_INTEGER),
  };
}

/** Checks the schema cannot express; the sum is a BigInt so it cannot round. */
function validate(invoice) {
  const expected = invoice.lines.reduce(
    (total, line) => total + BigInt(line.quantity) * BigInt(line.unit_price_cents), 0n);
  const got = invoice.total_cents;
  if (expected > U64_MAX) {
    throw ToolError.validation('lines: total overflows 64-bit cents', { got });
  }
  if (expected !== BigInt(got)) {
    throw ToolError.validation(`total_cents is ${got} but the lines add up to ${expected}`, { expected, got });
  }
}

export const { describe, run } = defineTool({
  name: 'js-invoice',
  version: '0.1.0',
  description: 'Validates an invoice and posts it to the ERP exactly once per invoice ID.',
  inputSchema: INPUT_SCHEMA,
  effects: [POST_INVOICE],

  run(ctx, input) {
    const invoice = readInvoice(input);
    validate(invoice);

    if (checkpoint.load('validated') === null) {
      checkpoint.save('validated', { invoice_id: invoice.invoice_id, total_cents: invoice.total_cents });
      log.info('validated', { invoice_id: invoice.invoice_id, total_cents: invoice.total_cents });
    }

    // Same key and bytes as the Rust tool: a retry, or the other tool, replays this effect.
    const key = `post-invoice:${invoice.invoice_id}`;
    const outcome = effects.perform(POST_INVOICE, key, invoice);
    const erp = outcome.bodyValue();

    checkpoint.save('posted', { invoice_id: invoice.invoice_id, erp });

    return {
      invoice_id: invoice.invoice_id,
      posted: true,
      replayed: outcome.replayed,
      erp,
      run_id: ctx.runId,
      attempt: ctx.attempt,
    };
  },
});
