"""JSON text written exactly as the Rust SDK's serde_json writes it.

The host's idempotency check compares payload bytes, so a Python tool must send the same
bytes a Rust tool sends for the same value: compact, dict order kept, UTF-8 left as is, only
`"`, `\\` and control characters escaped, floats in serde_json's shortest form. Pure Python,
so it is unit-tested on the host without the WebAssembly bindings.
"""

import json
import math
from json.encoder import encode_basestring  # escapes the same characters as serde_json

__all__ = ["dumps", "loads", "field_text", "wire_text"]


def dumps(value) -> str:
    """`value` as compact JSON text. TypeError or ValueError when it is not JSON-able."""
    out = []
    _write(value, out, set())
    text = "".join(out)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"string is not valid Unicode: {error.reason}") from None
    return text


def loads(text, *, unique_keys=False):
    """Parse JSON text as serde_json would: no NaN or Infinity, no out-of-range floats.

    With `unique_keys`, a repeated object key is an error (as for a Rust struct) instead of
    the last one winning (as for a serde_json map).
    """
    hook = _unique_object if unique_keys else None
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                      object_pairs_hook=hook)


def field_text(value) -> str:
    """A log field's text: strings verbatim, other values as JSON, else `str()`."""
    if isinstance(value, str):
        return value
    try:
        return dumps(value)
    except (TypeError, ValueError, RecursionError):
        return str(value)


def _write(value, out, stack):
    if isinstance(value, str):
        out.append(encode_basestring(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_float(value))
    elif isinstance(value, (dict, list, tuple)):
        if id(value) in stack:
            raise ValueError("Circular reference detected")
        stack.add(id(value))
        if isinstance(value, dict):
            out.append("{")
            for index, (key, item) in enumerate(value.items()):
                out.append("," if index else "")
                out.append(encode_basestring(_key(key)))
                out.append(":")
                _write(item, out, stack)
            out.append("}")
        else:
            out.append("[")
            for index, item in enumerate(value):
                out.append("," if index else "")
                _write(item, out, stack)
            out.append("]")
        stack.discard(id(value))
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _key(key):
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return _float(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _float(value: float) -> str:
    """serde_json's form: shortest round-trip digits, fixed notation for exponents -5..=15
    (always with a fraction, `1.0`), else `1.5e+16` / `1e-7`."""
    if not math.isfinite(value):
        raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
    text = repr(value)  # the same shortest round-trip digits serde_json picks
    mantissa, _, exponent = text.partition("e")
    sign = "-" if mantissa.startswith("-") else ""
    whole, _, fraction = mantissa.lstrip("-").partition(".")
    all_digits = whole + fraction
    digits = all_digits.lstrip("0").rstrip("0")
    if not digits:
        return sign + "0.0"
    leading_zeros = len(all_digits) - len(all_digits.lstrip("0"))
    exp = len(whole) - 1 - leading_zeros + int(exponent or 0)  # power of the first digit
    if -5 <= exp <= 15:
        if exp >= len(digits) - 1:
            body = digits + "0" * (exp + 1 - len(digits)) + ".0"
        elif exp >= 0:
            body = digits[: exp + 1] + "." + digits[exp + 1 :]
        else:
            body = "0." + "0" * (-exp - 1) + digits
    else:
        body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        body += f"e{'+' if exp >= 0 else '-'}{abs(exp)}"
    return sign + body


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _unique_object(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate field `{key}`")
        obj[key] = value
    return obj


def wire_text(value):
    """`value` as a string the canonical ABI can carry: a lone surrogate (from a
    `surrogateescape` file name, say) has no UTF-8 form and would trap the lowering, so it is
    written as its `\\udcxx` escape instead."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
