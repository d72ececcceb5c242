use super::*;
use serde_json::json;

// ---- accepted ------------------------------------------------------------------------

#[test]
fn recursion_through_properties_and_items_is_accepted() {
    let tree = accepted(&json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": "#/$defs/Node",
        "$defs": {"Node": {
            "type": "object",
            "properties": {
                "value": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                "left": {"$ref": "#/$defs/Node"},
                "right": {"$ref": "#/$defs/Node"}
            },
            "required": ["value"]
        }}
    }));
    let mut input = json!({"value": "bad"});
    for _ in 0..60 {
        input = json!({"value": 1, "children": [input.clone()], "left": {"value": 2}});
    }
    let problems = tree.violations(&input).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    // The path is kept from its end, which says most.
    assert!(
        problems[0].starts_with('…')
            && problems[0].ends_with("/children/0/value: \"bad\" is not of type \"integer\""),
        "{problems:?}"
    );

    accepted(&json!({
        "type": "object",
        "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}
    }));
    accepted(&json!({"properties": {"next": {"$ref": "#"}}}));
    // Any JSON value, as a recursive type generates it.
    let value = accepted(&json!({
        "$defs": {"Value": {"anyOf": [
            {"type": "null"}, {"type": "boolean"}, {"type": "number"}, {"type": "string"},
            {"type": "array", "items": {"$ref": "#/$defs/Value"}},
            {"type": "object", "additionalProperties": {"$ref": "#/$defs/Value"}}
        ]}},
        "$ref": "#/$defs/Value"
    }));
    assert!(
        value
            .violations(&nested_arrays(120, json!({"a": [1]})))
            .is_ok()
    );
    // A tuple under draft 7, and definitions there.
    accepted(&json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"pair": {"type": "array", "items": [{"type": "string"}, {"$ref": "#/definitions/pair"}]}},
        "$ref": "#/definitions/pair"
    }));
}

#[test]
fn schemas_the_sdks_generate_are_accepted() {
    // schemars for `plugins/invoice` (the Python and JavaScript tools describe the same).
    let invoice = accepted(&json!({
        "$defs": {"Line": {"additionalProperties": false, "properties": {
            "description": {"type": "string"},
            "quantity": {"format": "uint32", "minimum": 1, "type": "integer"},
            "unit_price_cents": {"format": "uint64", "minimum": 0, "type": "integer"}},
            "required": ["description", "quantity", "unit_price_cents"], "type": "object"}},
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "additionalProperties": false,
        "properties": {
            "currency": {"pattern": "^[A-Z]{3}$", "type": "string"},
            "customer": {"maxLength": 200, "minLength": 1, "type": "string"},
            "invoice_id": {"pattern": "^INV-[A-Za-z0-9-]{1,40}$", "type": "string"},
            "lines": {"items": {"$ref": "#/$defs/Line"}, "maxItems": 100, "minItems": 1, "type": "array"},
            "total_cents": {"format": "uint64", "minimum": 0, "type": "integer"}},
        "required": ["invoice_id", "customer", "currency", "lines", "total_cents"],
        "title": "Invoice", "type": "object"
    }));
    let problems = invoice
        .violations(
            &json!({"invoice_id": "nope", "currency": "euro", "lines": [], "total_cents": 1}),
        )
        .unwrap_err();
    let text = problems.join("\n");
    for expected in ["customer", "/invoice_id", "/currency", "/lines"] {
        assert!(text.contains(expected), "{expected}: {text}");
    }
    // schemars for enums with data, optional fields, `$ref` siblings and `unevaluatedProperties`.
    accepted(&json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Input",
        "type": "object",
        "properties": {
            "mode": {"$ref": "#/$defs/Mode"},
            "shape": {"anyOf": [{"$ref": "#/$defs/Shape"}, {"type": "null"}]},
            "tags": {"type": ["array", "null"], "items": {"type": "string"}, "uniqueItems": true},
            "extra": {"type": "object", "additionalProperties": {"type": "number"}}
        },
        "required": ["mode"],
        "unevaluatedProperties": false,
        "$defs": {
            "Mode": {"oneOf": [
                {"const": "fast", "type": "string", "description": "Fast."},
                {"const": "slow", "type": "string"},
                {"type": "object", "properties": {"custom": {"$ref": "#/$defs/Mode"}}, "required": ["custom"], "additionalProperties": false}
            ]},
            "Shape": {"oneOf": [
                {"type": "object", "properties": {"circle": {"type": "object", "properties": {"r": {"type": "number"}}}}},
                {"type": "object", "properties": {"square": {"type": "number"}}}
            ]}
        }
    }));
    // An anchor, an escaped and a percent-encoded pointer.
    accepted(&json!({
        "$defs": {"a/b": {"$anchor": "ab", "type": "integer"}, "c d": {"type": "string"}},
        "properties": {"x": {"$ref": "#ab"}, "y": {"$ref": "#/$defs/a~1b"}, "z": {"$ref": "#/$defs/c%20d"}}
    }));
    accepted(&json!(true));
    accepted(&json!({}));
}

// ---- validation stays bounded --------------------------------------------------------

#[test]
fn schemas_at_the_caps_validate_promptly() {
    let input = json!([[1, "x", {"k": "y"}], "x", {"k": "y"}]);
    for schema in [
        fan_out(12, "anyOf", false),
        fan_out(12, "allOf", false),
        fan_out(6, "allOf", true),
        chain_per_level(6),
    ] {
        let compiled = accepted(&schema);
        let started = std::time::Instant::now();
        let _ = compiled.violations(&input);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?} for {schema}",
            started.elapsed()
        );
    }
}

#[test]
fn large_flat_schemas_are_accepted_promptly() {
    // About 200 KiB: 2000 fields, each a reference to one of 50 shared definitions.
    let defs: serde_json::Map<String, Value> = (0..50)
        .map(|i| {
            let fields: serde_json::Map<String, Value> = (0..20)
                .map(|j| (format!("f{j}"), json!({"type": "string", "maxLength": 64})))
                .collect();
            (
                format!("D{i}"),
                json!({"type": "object", "properties": fields}),
            )
        })
        .collect();
    let properties: serde_json::Map<String, Value> = (0..2_000)
        .map(|i| {
            (
                format!("field{i}"),
                json!({"$ref": format!("#/$defs/D{}", i % 50)}),
            )
        })
        .collect();
    let schema = json!({"type": "object", "properties": properties, "$defs": defs});
    let text = schema.to_string();
    assert!(
        text.len() > 100_000 && text.len() < MAX_SCHEMA_BYTES,
        "{}",
        text.len()
    );
    let started = std::time::Instant::now();
    let compiled = compile(&text)
        .map(|(_, c)| c)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(compiled.checks_per_value(), 2);
}

#[test]
fn violations_are_listed_within_bounds() {
    let schema = accepted(&json!({"type": "array", "items": {"type": "string"}}));
    let problems = schema
        .violations(&json!((0..100).collect::<Vec<_>>()))
        .unwrap_err();
    assert_eq!(problems.len(), MAX_LISTED_VIOLATIONS + 1, "{problems:?}");
    assert_eq!(problems.last().map(String::as_str), Some("… and 80 more"));
    // A long value is quoted only in part.
    let schema = accepted(&json!({"type": "integer"}));
    let problems = schema.violations(&json!("x".repeat(10_000))).unwrap_err();
    assert!(
        problems[0].chars().count() <= MAX_MESSAGE_CHARS + 1,
        "{problems:?}"
    );
    // Past the listing budget, one line says so instead of a violation per check.
    let schema = accepted(&json!({"items": {"allOf": [{"type": "string"}, {"type": "string"}]}}));
    let problems = schema.violations(&json!(vec![0; 60_000])).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("too large to list"), "{problems:?}");
    // Inputs deeper than the bounds allow for are refused before validation.
    let problems = schema
        .violations(&nested_arrays(MAX_INPUT_DEPTH + 1, json!(1)))
        .unwrap_err();
    assert!(problems[0].contains("nests"), "{problems:?}");
}
