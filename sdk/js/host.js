// Effects, checkpoints and log over the WIT imports. `bindHost` takes the import functions as
// arguments so this module stays pure: node tests pass fakes, tollgate.js passes the real ones.

import { reasonText, toJson } from './json.js';
import { ToolError, fromHostError } from './error.js';

/** The recorded result of an effect. */
export class Outcome {
  constructor({ body, replayed, dispatches }) {
    /** The downstream response body (JSON text when the connector returned JSON). */
    this.body = body;
    /** True when the outcome was already recorded and nothing was dispatched this time. */
    this.replayed = replayed;
    /** How many times the host has dispatched this key downstream, over all runs. */
    this.dispatches = dispatches;
  }

  /** The body parsed as JSON; a body that is not JSON is `fatal` (a retry replays the same body). */
  json() {
    try {
      return JSON.parse(this.body);
    } catch (reason) {
      throw ToolError.fatal(`effect outcome: ${reasonText(reason)}`);
    }
  }

  /** The body parsed as JSON when it is JSON, else the body itself as a string. */
  bodyValue() {
    try {
      return JSON.parse(this.body);
    } catch {
      return this.body;
    }
  }
}

/** A saved checkpoint as the host returns it; `state` is the raw bytes. */
export class Checkpoint {
  constructor({ name, state, attempt }) {
    this.name = name;
    this.state = state;
    /** The attempt that saved it. */
    this.attempt = attempt;
  }

  /** The state parsed as UTF-8 JSON; bytes that are not JSON are `fatal` (a retry reads the same). */
  json() {
    try {
      return JSON.parse(utf8.decode(this.state));
    } catch (reason) {
      throw ToolError.fatal(`checkpoint \`${this.name}\`: ${reasonText(reason)}`);
    }
  }
}

export const LEVELS = Object.freeze(['trace', 'debug', 'info', 'warn', 'error']);

const utf8 = {
  encode: (text) => new TextEncoder().encode(text),
  // fatal: reject invalid UTF-8 instead of inventing U+FFFD characters.
  decode: (bytes) => new TextDecoder('utf-8', { fatal: true }).decode(bytes),
};

/** The payload text sent for `payload`: a string as is, anything else as compact JSON. */
export function payloadText(kind, payload) {
  if (typeof payload === 'string') return payload;
  try {
    return toJson(payload);
  } catch (reason) {
    throw ToolError.fatal(`effect \`${kind}\` payload: ${reasonText(reason)}`);
  }
}

/** A log field's value as text: strings as is, objects as JSON, the rest with String(). */
export function fieldText(value) {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object') {
    try {
      return toJson(value);
    } catch {
      return String(value);
    }
  }
  return String(value);
}

/** `fields` (an object, a Map or [key, value] pairs) as the WIT `list<tuple<string, string>>`. */
export function fieldList(fields) {
  const entries = Array.isArray(fields) ? fields
    : fields instanceof Map ? [...fields]
      : Object.entries(fields ?? {});
  return entries.map(([key, value]) => [String(key), fieldText(value)]);
}

// Host imports raise their `err` as a ComponentError; callers should see a ToolError.
function call(fn, ...args) {
  try {
    return fn(...args);
  } catch (thrown) {
    throw fromHostError(thrown);
  }
}

/**
 * The SDK's host API over the import functions `{ perform, save, get, latest, event }`
 * (tollgate:tool/effects, checkpoints and log).
 */
export function bindHost(wit) {
  const effects = {
    /**
     * Perform effect `kind` exactly once per idempotency `key`. An object payload is sent as
     * compact JSON in its key order: the same key with different bytes is a `conflict`, so
     * build payloads deterministically. Host errors are rethrown as ToolError unchanged.
     */
    perform(kind, key, payload) {
      return new Outcome(call(wit.perform, kind, key, payloadText(kind, payload)));
    },
  };

  const checkpoint = {
    /** Save `state` as UTF-8 JSON under `name`; durable when this returns. */
    save(name, state) {
      let text;
      try {
        text = toJson(state);
      } catch (reason) {
        throw ToolError.fatal(`checkpoint \`${name}\`: ${reasonText(reason)}`);
      }
      call(wit.save, name, utf8.encode(text));
    },
    /** Save raw bytes (a Uint8Array) under `name`. */
    saveRaw(name, bytes) {
      call(wit.save, name, bytes);
    },
    /** The latest state saved under `name`, parsed from JSON; null when this run has none. */
    load(name) {
      const saved = checkpoint.get(name);
      return saved === null ? null : saved.json();
    },
    /** The latest checkpoint named `name` as a Checkpoint (raw bytes), or null. */
    get(name) {
      const saved = call(wit.get, name);
      return saved == null ? null : new Checkpoint(saved);
    },
    /** The most recently saved checkpoint of this run, whatever its name, or null. */
    latest() {
      const saved = call(wit.latest);
      return saved == null ? null : new Checkpoint(saved);
    },
  };

  const event = (level, message, fields = {}) => {
    if (!LEVELS.includes(level)) throw new TypeError(`unknown log level ${JSON.stringify(level)}`);
    call(wit.event, level, String(message), fieldList(fields));
  };
  const log = { event };
  for (const level of LEVELS) log[level] = (message, fields = {}) => event(level, message, fields);

  return { effects, checkpoint, log: Object.freeze(log) };
}
