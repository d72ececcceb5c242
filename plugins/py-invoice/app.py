# py-invoice: the Rust `invoice` tool (plugins/invoice) in Python, behaving the same way.
# Validates an invoice, then posts it to the ERP through the `erp.post-invoice` effect exactly
# once per invoice ID. The key is `post-invoice:<invoice_id>`; the payload is the invoice
# re-serialized in the Rust struct's field order, so both tools send the same bytes and a run
# of either replays the other's recorded outcome.
#
# Build with every other plugin: `tollgate build-plugins` (after `plugins/setup.sh`).

from tollgate import Tool, ToolError, checkpoint, effects, log

POST_INVOICE = "erp.post-invoice"
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

# The Rust tool's schema (schemars, from `struct Invoice`), keys in its order.
INPUT_SCHEMA = {
    "$defs": {
        "Line": {
            "additionalProperties": False,
            "properties": {
                "description": {"type": "string"},
                "quantity": {"format": "uint32", "minimum": 1, "type": "integer"},
                "unit_price_cents": {"format": "uint64", "minimum": 0, "type": "integer"},
            },
            "required": ["description", "quantity", "unit_price_cents"],
            "type": "object",
        }
    },
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "additionalProperties": False,
    "properties": {
        "currency": {
            "description": "ISO 4217 code, e.g. `EUR`.",
            "pattern": "^[A-Z]{3}$",
            "type": "string",
        },
        "customer": {"maxLength": 200, "minLength": 1, "type": "string"},
        "invoice_id": {"pattern": "^INV-[A-Za-z0-9-]{1,40}$", "type": "string"},
        "lines": {"items": {"$ref": "#/$defs/Line"}, "maxItems": 100, "minItems": 1, "type": "array"},
        "total_cents": {
            "description": "Must equal the sum of `quantity * unit_price_cents` over the lines.",
            "format": "uint64",
            "minimum": 0,
            "type": "integer",
        },
    },
    "required": ["invoice_id", "customer", "currency", "lines", "total_cents"],
    "title": "Invoice",
    "type": "object",
}

tool = Tool(
    "py-invoice",
    "0.1.0",
    "Validates an invoice and posts it to the ERP exactly once per invoice ID.",
    INPUT_SCHEMA,
    effects=[POST_INVOICE],
)


@tool.run
def run(ctx, data):
    invoice = parse_invoice(data)
    validate(invoice)

    if checkpoint.load("validated") is None:
        checkpoint.save("validated", {"invoice_id": invoice["invoice_id"],
                                      "total_cents": invoice["total_cents"]})
        log.info("validated", invoice_id=invoice["invoice_id"],
                 total_cents=str(invoice["total_cents"]))

    key = f"post-invoice:{invoice['invoice_id']}"
    outcome = effects.perform(POST_INVOICE, key, invoice)
    erp = outcome.body_value()

    checkpoint.save("posted", {"invoice_id": invoice["invoice_id"], "erp": erp})

    return {
        "invoice_id": invoice["invoice_id"],
        "posted": True,
        "replayed": outcome.replayed,
        "erp": erp,
        "run_id": ctx.run_id,
        "attempt": ctx.attempt,
    }


def validate(invoice):
    """Checks the schema cannot express: the lines must add up to the total, in u64 cents."""
    got = invoice["total_cents"]
    expected = sum(line["quantity"] * line["unit_price_cents"] for line in invoice["lines"])
    if expected > U64_MAX:
        raise ToolError.validation("lines: total overflows 64-bit cents", {"got": got})
    if expected != got:
        raise ToolError.validation(f"total_cents is {got} but the lines add up to {expected}",
                                   {"expected": expected, "got": got})


# Input, typed as the Rust tool's serde structs read it (unknown fields denied, unsigned
# integers in range). The host has already checked the schema; these mirror serde's errors.

def parse_invoice(data):
    """The invoice with its fields in the Rust struct's order: the payload's byte order."""
    return _record(data, "struct Invoice", {
        "invoice_id": _string,
        "customer": _string,
        "currency": _string,
        "lines": _lines,
        "total_cents": _u64,
    })


def _lines(value):
    if not isinstance(value, list):
        raise _invalid_type(value, "a sequence")
    return [_record(line, "struct Line", {
        "description": _string,
        "quantity": _u32,
        "unit_price_cents": _u64,
    }) for line in value]


def _record(value, expected, fields):
    if not isinstance(value, dict):
        raise _invalid_type(value, expected)
    parsed = {}
    for name, item in value.items():  # input order, as serde reports the first problem
        if name not in fields:
            names = ", ".join(f"`{field}`" for field in fields)
            raise _input_error(f"unknown field `{name}`, expected one of {names}")
        parsed[name] = fields[name](item)
    for name in fields:
        if name not in parsed:
            raise _input_error(f"missing field `{name}`")
    return {name: parsed[name] for name in fields}


def _string(value):
    if not isinstance(value, str):
        raise _invalid_type(value, "a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _input_error("lone surrogate in hex escape") from None
    return value


def _u32(value):
    return _unsigned(value, U32_MAX, "u32")


def _u64(value):
    return _unsigned(value, U64_MAX, "u64")


def _unsigned(value, maximum, name):
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_type(value, name)
    if not 0 <= value <= maximum:
        raise _input_error(f"invalid value: integer `{value}`, expected {name}")
    return value


def _invalid_type(value, expected):
    if isinstance(value, bool):
        unexpected = f"boolean `{str(value).lower()}`"
    elif isinstance(value, int):
        unexpected = f"integer `{value}`"
    elif isinstance(value, float):
        unexpected = f"floating point `{value!r}`"
    elif isinstance(value, str):
        unexpected = f'string "{value}"'
    elif value is None:
        unexpected = "null"
    else:
        unexpected = "sequence" if isinstance(value, list) else "map"
    return _input_error(f"invalid type: {unexpected}, expected {expected}")


def _input_error(reason):
    return ToolError.validation(f"input: {reason}")


WitWorld = tool.world()
