// JSON text exactly as serde_json's compact writer produces it for strings, integers,
// booleans, null, arrays and objects, so a JS tool can send the same effect payload bytes as a
// Rust tool (the ledger compares payload digests). Floats differ (JS writes `1.0` as `1`):
// keep them out of payloads.
//
// Strings go through JSON.stringify: ECMAScript escapes `"`, `\`, \b \f \n \r \t and the
// other C0 controls as lowercase \u00XX, and leaves non-ASCII (and DEL) as is: serde_json's
// table, byte for byte. We only add what JSON.stringify cannot do: BigInt as a bare integer
// (a u64 beyond 2^53 must not be quoted or rounded) and errors instead of silently dropping
// an unserializable top-level value.

/** Serialize `value` as compact JSON text; throws TypeError when it cannot. */
export function toJson(value) {
  let text;
  try {
    // Native and lean on memory; it only refuses BigInt (and cycles), which `write` handles.
    text = JSON.stringify(value);
  } catch {
    text = write(value, '', new Set());
  }
  if (text === undefined) {
    throw new TypeError(`${describe(value)} is not JSON-serializable`);
  }
  return text;
}

// Mirrors JSON.stringify's SerializeJSONProperty; `undefined` means "omit" (as in objects).
function write(value, key, seen) {
  if (value !== null && (typeof value === 'object' || typeof value === 'bigint') &&
      typeof value.toJSON === 'function') {
    value = value.toJSON(key);
  }
  if (value instanceof Number || value instanceof String || value instanceof Boolean) {
    value = value.valueOf();
  }
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      // Non-finite numbers become null, as in JSON.stringify and serde_json's f64.
      return Number.isFinite(value) ? JSON.stringify(value) : 'null';
    case 'bigint':
      return value.toString();
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object':
      break;
    default: // undefined, function, symbol
      return undefined;
  }
  if (value === null) return 'null';
  if (seen.has(value)) throw new TypeError('cyclic object value');
  seen.add(value);
  let text;
  if (Array.isArray(value)) {
    text = '[' + value.map((item, index) => write(item, String(index), seen) ?? 'null').join(',') + ']';
  } else {
    const members = [];
    // Object.keys order: integer-like keys ascending first, then insertion order (JS rules).
    for (const name of Object.keys(value)) {
      const member = write(value[name], name, seen);
      if (member !== undefined) members.push(JSON.stringify(name) + ':' + member);
    }
    text = '{' + members.join(',') + '}';
  }
  seen.delete(value);
  return text;
}

function describe(value) {
  return typeof value === 'function' ? 'a function' : String(typeof value === 'symbol' ? 'a symbol' : value);
}

/**
 * The text of a caught exception. Not every throw is an Error: SpiderMonkey reports running
 * out of memory as a bare string, for one.
 */
export function reasonText(reason) {
  if (reason !== null && typeof reason === 'object' && typeof reason.message === 'string') return reason.message;
  try {
    return String(reason);
  } catch {
    return Object.prototype.toString.call(reason);
  }
}
