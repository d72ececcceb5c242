import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import { toJson, reasonText } from '../json.js';

// serde_json's compact writer, byte for byte: the ledger compares payload digests, so a JS
// tool replays a Rust tool's effect only if these bytes are identical.

// What the Rust plugins/invoice sent to the ERP for this invoice (captured from the wire),
// and the payload digest the host recorded for it.
const RUST_PAYLOAD = "{\"invoice_id\":\"INV-U1\",\"customer\":\"M\u00fcller & S\u00f6hne \\\"GmbH\\\" \\\\ / \u2713 \ud83d\ude00 \u2028\u2029 \u007f\",\"currency\":\"EUR\",\"lines\":[{\"description\":\"tab\\there\\nnl\\r\\b\\f \\u0000\\u0001\\u001f\\u000b end\",\"quantity\":3,\"unit_price_cents\":333},{\"description\":\"\u65e5\u672c\u8a9e\",\"quantity\":1,\"unit_price_cents\":1}],\"total_cents\":1000}";
const RUST_DIGEST = 'eb7c429ea0ea22dd1d5e6ae6acc4725f5e280d5f685330e4ec7e7b7fa69e4023';

test('an invoice serializes to the bytes the Rust tool sent', () => {
  const invoice = {
    invoice_id: 'INV-U1',
    customer: 'M\u00fcller & S\u00f6hne "GmbH" \\ / \u2713 \ud83d\ude00 \u2028\u2029 \u007f',
    currency: 'EUR',
    lines: [
      { description: 'tab\there\nnl\r\b\f \u0000\u0001\u001f\u000b end', quantity: 3, unit_price_cents: 333 },
      { description: '\u65e5\u672c\u8a9e', quantity: 1, unit_price_cents: 1 },
    ],
    total_cents: 1000,
  };
  const text = toJson(invoice);
  assert.equal(text, RUST_PAYLOAD);
  assert.equal(createHash('sha256').update(text, 'utf8').digest('hex'), RUST_DIGEST);
});

// serde_json's ESCAPE table (ser.rs): \b \t \n \f \r short forms, other C0 controls as
// \u00xx with lowercase hex, `"` and `\`; everything else (DEL, `/`, non-ASCII) verbatim.
function serdeEscape(text) {
  let out = '"';
  for (const ch of text) {
    const code = ch.codePointAt(0);
    const short = { 0x08: '\\b', 0x09: '\\t', 0x0a: '\\n', 0x0c: '\\f', 0x0d: '\\r', 0x22: '\\"', 0x5c: '\\\\' }[code];
    if (short) out += short;
    else if (code < 0x20) out += '\\u00' + code.toString(16).padStart(2, '0');
    else out += ch;
  }
  return out + '"';
}

test('every ASCII character and some non-ASCII escape as serde_json does', () => {
  for (let code = 0; code < 0x80; code++) {
    const ch = String.fromCharCode(code);
    assert.equal(toJson(ch), serdeEscape(ch), `U+${code.toString(16).padStart(4, '0')}`);
  }
  for (const text of ['\u0080', '\u00a0', '\u00e9', '\u2028', '\u2029', '\ufeff', '\uffff', '\u{1f600}', '\u{10ffff}']) {
    assert.equal(toJson(text), serdeEscape(text));
    assert.equal(toJson(text), `"${text}"`, 'non-ASCII stays UTF-8, unescaped');
  }
  assert.equal(toJson('\u001f'), '"\\u001f"', 'lowercase hex');
  assert.equal(toJson({ 'k\n"': 'v' }), '{"k\\n\\"":"v"}', 'keys escape like values');
});

test('compact: no spaces, insertion order kept, nested values', () => {
  assert.equal(toJson({ b: 1, a: [true, false, null, 'x', { z: {}, y: [] }] }),
    '{"b":1,"a":[true,false,null,"x",{"z":{},"y":[]}]}');
  assert.equal(toJson([]), '[]');
  assert.equal(toJson('s'), '"s"');
  assert.equal(toJson(0), '0');
  assert.equal(toJson(-7), '-7');
  assert.equal(toJson(Number.MAX_SAFE_INTEGER), '9007199254740991');
  // A JS object lists integer-like keys first, ascending: unlike a serde struct.
  assert.equal(toJson({ b: 1, 2: 2, 1: 1 }), '{"1":1,"2":2,"b":1}');
});

test('BigInt is written as a bare integer, like a u64', () => {
  assert.equal(toJson(2n ** 64n - 1n), '18446744073709551615');
  assert.equal(toJson({ expected: 18014398509481982000n, got: 5 }), '{"expected":18014398509481982000,"got":5}');
  assert.equal(toJson([1n, { a: -3n }]), '[1,{"a":-3}]');
});

test('the BigInt path follows JSON.stringify for everything else', () => {
  const value = { big: 1n, skip: undefined, fn() {}, arr: [undefined, () => 1], date: new Date(0), boxed: new String('s'), nan: NaN };
  const expected = JSON.stringify({ ...value, big: 0 }).replace('"big":0', '"big":1');
  assert.equal(toJson(value), expected);
});

test('unserializable values throw', () => {
  assert.throws(() => toJson(undefined), TypeError);
  assert.throws(() => toJson(() => 1), TypeError);
  const cyclic = { n: 1n };
  cyclic.self = cyclic;
  assert.throws(() => toJson(cyclic), /cyclic/);
});

test('reasonText reads Errors and bare throws', () => {
  assert.equal(reasonText(new SyntaxError('bad')), 'bad');
  assert.equal(reasonText('out of memory'), 'out of memory');
  assert.equal(reasonText(undefined), 'undefined');
  assert.equal(reasonText(Object.create(null)), '[object Object]');
});
