// The classified failure a tool returns and host calls raise. The class, not the message,
// decides what the host does next (retry, fail, escalate), so every constructor names one.

import { reasonText, toJson } from './json.js';

/** The WIT `error-class` names, in declaration order. */
export const ERROR_CLASSES = Object.freeze(
  ['transient', 'validation', 'permission', 'timeout', 'conflict', 'fatal']);

export class ToolError extends Error {
  /**
   * @param {string} cls one of ERROR_CLASSES
   * @param {string} message one line a human can act on
   * @param {*} [details] any JSON value; `undefined` means none
   */
  constructor(cls, message, details) {
    super(message);
    if (!ERROR_CLASSES.includes(cls)) {
      throw new TypeError(`unknown error class ${JSON.stringify(cls)}; expected one of ${ERROR_CLASSES.join(', ')}`);
    }
    this.name = 'ToolError';
    this.cls = cls;
    this.details = details;
  }

  static transient(message, details) { return new ToolError('transient', message, details); }
  static validation(message, details) { return new ToolError('validation', message, details); }
  static permission(message, details) { return new ToolError('permission', message, details); }
  static timeout(message, details) { return new ToolError('timeout', message, details); }
  static conflict(message, details) { return new ToolError('conflict', message, details); }
  static fatal(message, details) { return new ToolError('fatal', message, details); }

  toString() { return `${this.cls}: ${this.message}`; }
}

/**
 * The WIT `tool-error` record for `error`. Details travel as JSON text; details that cannot be
 * serialized are dropped from the record but named in the message rather than failing twice.
 */
export function toWitError(error) {
  if (error.details === undefined) {
    return { class: error.cls, message: error.message, details: undefined };
  }
  try {
    return { class: error.cls, message: error.message, details: toJson(error.details) };
  } catch (reason) {
    return { class: error.cls, message: `${error.message} (details dropped: ${reasonText(reason)})`, details: undefined };
  }
}

/**
 * A ToolError from a WIT `tool-error` record. Details that are not valid JSON (a host should
 * never send them) are kept as a string rather than dropped, as the Rust SDK does.
 */
export function fromWitError(record) {
  let details;
  if (record.details !== undefined && record.details !== null) {
    try {
      details = JSON.parse(record.details);
    } catch {
      details = record.details;
    }
  }
  return new ToolError(record.class, String(record.message), details);
}

/** True for a WIT `tool-error` record: `{ class, message, details? }`. */
export function isWitError(value) {
  return value !== null && typeof value === 'object' && !(value instanceof Error) &&
    ERROR_CLASSES.includes(value.class) && typeof value.message === 'string';
}

/**
 * A ToolError for whatever a host import threw. componentize-js raises an import's `err` as a
 * ComponentError whose `payload` is the WIT record; anything else (a bad argument, say) is
 * returned unchanged for `fromThrown` to classify.
 */
export function fromHostError(thrown) {
  if (thrown !== null && typeof thrown === 'object' && isWitError(thrown.payload)) {
    return fromWitError(thrown.payload);
  }
  return thrown;
}

/**
 * A ToolError for anything a tool threw. A thrown non-ToolError would make componentize-js
 * trap, so it becomes `fatal` "unhandled <name>: <message>" instead.
 */
export function fromThrown(thrown) {
  if (thrown instanceof ToolError) return thrown;
  const host = fromHostError(thrown);
  if (host instanceof ToolError) return host;
  if (isWitError(thrown)) return fromWitError(thrown); // the raw record shape, as the WIT has it
  if (thrown instanceof Error || (thrown !== null && typeof thrown === 'object' &&
      typeof thrown.name === 'string' && 'message' in thrown)) {
    return ToolError.fatal(`unhandled ${thrown.name}: ${thrown.message}`);
  }
  return ToolError.fatal(`unhandled ${thrown === null ? 'null' : typeof thrown}: ${reasonText(thrown)}`);
}
