use super::*;
use serde_json::json;

fn refused(schema: &Value) -> SchemaError {
    match compile(&schema.to_string()) {
        Ok((_, compiled)) => panic!("accepted ({compiled:?}): {schema}"),
        Err(error) => error,
    }
}

fn accepted(schema: &Value) -> InputSchema {
    compile(&schema.to_string())
        .unwrap_or_else(|error| panic!("refused: {error}\n{schema}"))
        .1
}

/// `n` definitions, each applying `keyword` to two references to the next: 2^n paths.
fn fan_out(n: usize, keyword: &str, unevaluated: bool) -> Value {
    let mut defs = serde_json::Map::new();
    for i in 0..n {
        let mut def = if i + 1 == n {
            json!({"type": "object", "properties": {"k": {"type": "integer"}}})
        } else {
            let next = json!({"$ref": format!("#/$defs/d{}", i + 1)});
            json!({ keyword: [next.clone(), next] })
        };
        if unevaluated && let Some(map) = def.as_object_mut() {
            map.insert("unevaluatedProperties".into(), json!(false));
        }
        defs.insert(format!("d{i}"), def);
    }
    json!({"$ref": "#/$defs/d0", "$defs": defs})
}

/// `n` definitions chained by `$ref`, the last moving into the items of an array and
/// back to the first.
fn chain_per_level(n: usize) -> Value {
    let mut defs = serde_json::Map::new();
    for i in 0..n {
        let def = if i + 1 == n {
            json!({"type": "array", "items": {"$ref": "#/$defs/d0"}})
        } else {
            json!({"$ref": format!("#/$defs/d{}", i + 1)})
        };
        defs.insert(format!("d{i}"), def);
    }
    json!({"$ref": "#/$defs/d0", "$defs": defs})
}

fn nested_arrays(depth: usize, leaf: Value) -> Value {
    (0..depth).fold(leaf, |inner, _| Value::Array(vec![inner]))
}

// ---- refused: loops that never reach into the input ---------------------------------

#[test]
fn ref_loop_through_defs_is_refused_naming_each_step() {
    let error = refused(&json!({
        "$ref": "#/$defs/a",
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}
    }));
    let SchemaError::RefLoop { path } = &error else {
        panic!("{error}")
    };
    assert_eq!(path, "#/$defs/a --$ref--> #/$defs/b --$ref--> #/$defs/a");
    let message = error.to_string();
    assert!(
        message.contains("`properties`") && message.contains("`items`"),
        "{message}"
    );
}

#[test]
fn self_reference_of_the_root_is_refused() {
    let error = refused(&json!({"$ref": "#"}));
    assert_eq!(
        error,
        SchemaError::RefLoop {
            path: "# --$ref--> #".into()
        }
    );
    refused(&json!({"type": "object", "$ref": "#"}));
    refused(&json!({"$ref": ""}));
}

#[test]
fn loops_through_in_place_applicators_are_refused() {
    for keyword in ["allOf", "anyOf", "oneOf"] {
        let error = refused(&json!({
            "$defs": {"a": { keyword: [{"type": "string"}, {"$ref": "#/$defs/a"}] }},
            "$ref": "#/$defs/a"
        }));
        let SchemaError::RefLoop { path } = &error else {
            panic!("{keyword}: {error}")
        };
        assert_eq!(
            path,
            &format!("#/$defs/a → #/$defs/a/{keyword}/1 --$ref--> #/$defs/a"),
            "{keyword}"
        );
    }
    for keyword in ["not", "if", "then", "else"] {
        let error = refused(&json!({
            "$defs": {"a": { keyword: {"$ref": "#/$defs/a"} }},
            "$ref": "#/$defs/a"
        }));
        assert!(
            matches!(error, SchemaError::RefLoop { .. }),
            "{keyword}: {error}"
        );
    }
    for keyword in ["dependentSchemas", "dependencies"] {
        let error = refused(&json!({
            "$defs": {"a": { keyword: {"x": {"$ref": "#/$defs/a"}} }},
            "$ref": "#/$defs/a"
        }));
        assert!(
            matches!(error, SchemaError::RefLoop { .. }),
            "{keyword}: {error}"
        );
    }
}

#[test]
fn loops_through_anchors_older_drafts_and_unused_defs_are_refused() {
    refused(&json!({
        "$defs": {"a": {"$anchor": "x", "allOf": [{"$ref": "#x"}]}},
        "$ref": "#x"
    }));
    refused(&json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"a": {"$ref": "#/definitions/b"}, "b": {"$ref": "#/definitions/a"}},
        "$ref": "#/definitions/a"
    }));
    // Never referenced, but still a loop: refused wherever it sits.
    refused(&json!({
        "type": "string",
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}
    }));
    // A `$ref` into a place that is not a subschema is still followed.
    refused(&json!({"x-data": {"$ref": "#/x-data"}, "$ref": "#/x-data"}));
}

// ---- refused: expansion --------------------------------------------------------------

#[test]
fn exponential_fan_out_is_refused_where_it_passes_the_cap() {
    let error = refused(&fan_out(30, "anyOf", false));
    let SchemaError::TooManyChecks { at, limit } = &error else {
        panic!("{error}")
    };
    assert_eq!(*limit, MAX_CHECKS_PER_VALUE);
    // 2^(k+2) - 3 checks from the definition k levels above the last: d17 is the first
    // over the cap, and named.
    assert_eq!(at, "#/$defs/d17");
    assert!(error.to_string().contains("`anyOf`"), "{error}");
    refused(&fan_out(30, "allOf", false));
    refused(&fan_out(14, "oneOf", false));
    // 8189 checks: under the cap.
    accepted(&fan_out(12, "anyOf", false));
}

#[test]
fn unevaluated_keywords_count_their_subschemas_twice() {
    // 1 + 4 · (1 + …): 2729 checks with 6 definitions, 10 921 with 7.
    accepted(&fan_out(6, "allOf", true));
    let error = refused(&fan_out(7, "allOf", true));
    assert!(
        matches!(error, SchemaError::TooManyChecks { .. }),
        "{error}"
    );
}

#[test]
fn subschemas_that_multiply_at_every_level_of_the_input_are_refused() {
    let error = refused(&json!({
        "type": "array",
        "allOf": [{"items": {"$ref": "#"}}, {"items": {"$ref": "#"}}]
    }));
    let SchemaError::TooManyNestedChecks { at, depth, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(at, "#");
    assert!(*depth > 5 && *depth < 20, "{error}");
    // The same key meets `properties` and a matching pattern.
    refused(&json!({
        "properties": {"a": {"$ref": "#"}},
        "patternProperties": {"^a$": {"$ref": "#"}}
    }));
    // Two prefix items, each a whole copy of the root.
    refused(&json!({"prefixItems": [{"$ref": "#"}], "contains": {"$ref": "#"}}));
}

#[test]
fn long_chains_of_checks_are_refused_before_they_overflow_the_stack() {
    let error = refused(&chain_per_level(20));
    assert!(
        matches!(error, SchemaError::TooDeeplyNestedChecks { .. }),
        "{error}"
    );
    let mut defs = serde_json::Map::new();
    for i in 0..1_200 {
        let next = format!("#/$defs/d{}", i + 1);
        defs.insert(format!("d{i}"), json!({ "$ref": next }));
    }
    defs.insert("d1200".into(), json!({"type": "integer"}));
    let error = refused(&json!({"$ref": "#/$defs/d0", "$defs": defs}));
    assert!(
        matches!(error, SchemaError::TooDeeplyNestedChecks { .. }),
        "{error}"
    );
}

// ---- refused: references the reading cannot follow -----------------------------------

#[test]
fn references_outside_the_document_are_refused() {
    for reference in [
        "https://example.com/schema.json",
        "other.json#/$defs/a",
        "file:///etc/passwd",
        "urn:example:thing",
    ] {
        let error = refused(&json!({"properties": {"a": {"$ref": reference}}}));
        let SchemaError::NotLocal { at, .. } = &error else {
            panic!("{reference}: {error}")
        };
        assert_eq!(at, "#/properties/a");
        assert!(error.to_string().contains("#/$defs/<name>"), "{error}");
    }
}

#[test]
fn dynamic_references_and_embedded_resources_are_refused() {
    let error = refused(&json!({
        "$dynamicAnchor": "n",
        "anyOf": [{"type": "string"}, {"$dynamicRef": "#n"}]
    }));
    assert_eq!(
        error,
        SchemaError::DynamicRef {
            at: "#/anyOf/1".into(),
            keyword: "$dynamicRef"
        }
    );
    refused(&json!({
        "$schema": "https://json-schema.org/draft/2019-09/schema",
        "$recursiveAnchor": true,
        "anyOf": [{"type": "string"}, {"$recursiveRef": "#"}]
    }));
    let error = refused(&json!({
        "$id": "https://t.example/root",
        "$defs": {"a": {"$id": "a.json", "type": "string"}},
        "$ref": "#/$defs/a"
    }));
    assert_eq!(
        error,
        SchemaError::EmbeddedResource {
            at: "#/$defs/a".into(),
            keyword: "$id"
        }
    );
}

#[test]
fn references_to_nothing_are_refused() {
    let error = refused(&json!({"$ref": "#/$defs/missing", "$defs": {}}));
    assert!(matches!(error, SchemaError::Unresolved { .. }), "{error}");
    assert!(error.to_string().contains("no key \"missing\""), "{error}");
    refused(&json!({"$ref": "#nowhere"}));
    refused(&json!({"$ref": "#/allOf/1", "allOf": [{}]}));
    refused(&json!({"$ref": "#/%FF"}));
    let error = refused(&json!({
        "$defs": {"a": {"$anchor": "x"}, "b": {"$anchor": "x"}}
    }));
    assert!(
        matches!(error, SchemaError::DuplicateAnchor { .. }),
        "{error}"
    );
}

#[test]
fn tool_controlled_text_in_errors_is_escaped_and_cut_short() {
    let error = refused(&json!({"properties": {"\u{1b}[31mred\n": {"$ref": "x.json"}}}));
    let message = error.to_string();
    assert!(!message.chars().any(char::is_control), "{message:?}");
    assert!(message.contains("\\u{1b}[31mred\\n"), "{message}");
    let long = "y".repeat(10_000);
    let error = refused(&json!({"$ref": format!("#/{long}")}));
    assert!(error.to_string().len() < 2_000, "{error}");
    // A long loop is named by its first steps.
    let mut defs = serde_json::Map::new();
    for i in 0..50 {
        defs.insert(
            format!("d{i}"),
            json!({"$ref": format!("#/$defs/d{}", (i + 1) % 50)}),
        );
    }
    let error = refused(&json!({"$defs": defs}));
    assert!(error.to_string().contains("(50 steps in all)"), "{error}");
}

// ---- refused: size, nesting, syntax and patterns --------------------------------------

#[test]
fn schema_text_over_the_size_cap_is_refused() {
    let description = "x".repeat(MAX_SCHEMA_BYTES);
    let error = refused(&json!({"description": description}));
    assert!(matches!(error, SchemaError::TooLarge { .. }), "{error}");
}

#[test]
fn nesting_over_the_cap_is_refused_with_where() {
    let mut schema = json!({"type": "string"});
    for _ in 0..MAX_SCHEMA_NESTING / 2 {
        schema = json!({ "properties": { "a": schema } });
    }
    let error = refused(&schema);
    let SchemaError::TooDeep { at, .. } = &error else {
        panic!("{error}")
    };
    assert!(at.starts_with("#/properties/a/properties/a/"), "{error}");
    // Deeper than serde_json parses: where is a line and column.
    let text = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let error = compile(&text).map(|_| ()).unwrap_err();
    let SchemaError::TooDeep { at, .. } = &error else {
        panic!("{error}")
    };
    assert!(at.starts_with("line 1, column"), "{error}");
    // Just under the cap is fine.
    let mut schema = json!({"type": "string"});
    for _ in 0..(MAX_SCHEMA_NESTING - 1) / 2 {
        schema = json!({ "properties": { "a": schema } });
    }
    accepted(&schema);
}

#[test]
fn text_that_is_not_json_or_not_a_schema_is_refused() {
    let error = compile("{oops").map(|_| ()).unwrap_err();
    assert!(matches!(error, SchemaError::NotJson { .. }), "{error}");
    let error = refused(&json!({"properties": {"a": {"type": 5}}}));
    let SchemaError::Invalid { at, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(at, "#/properties/a/type");
}

#[test]
fn patterns_the_linear_engine_cannot_match_are_refused_with_how_to_fix() {
    for pattern in ["^(?=a)(a+)+$", "^(a+)+\\1$", "(\\w{1000}){1000}"] {
        let error = refused(&json!({"type": "string", "pattern": pattern}));
        let message = error.to_string();
        assert!(matches!(error, SchemaError::Invalid { .. }), "{message}");
        assert!(
            message.contains("no lookaround or backreferences"),
            "{message}"
        );
        assert!(message.contains("#/pattern"), "{message}");
    }
    let error = refused(&json!({"patternProperties": {"^(?!x)": {}}}));
    assert!(matches!(error, SchemaError::Invalid { .. }), "{error}");
}

#[test]
fn catastrophic_backtracking_patterns_match_in_linear_time() {
    let schema = accepted(&json!({"type": "string", "pattern": "^(a+)+$"}));
    let input = json!(format!("{}!", "a".repeat(100_000)));
    let started = std::time::Instant::now();
    assert!(schema.violations(&input).is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn too_many_distinct_patterns_are_refused() {
    let properties: serde_json::Map<String, Value> = (0..=MAX_PATTERNS)
        .map(|i| (format!("p{i}"), json!({"pattern": format!("^x{{{i}}}$")})))
        .collect();
    let error = refused(&json!({ "properties": properties }));
    assert_eq!(
        error,
        SchemaError::TooManyPatterns {
            count: MAX_PATTERNS + 1,
            limit: MAX_PATTERNS
        }
    );
    // Repeats count once.
    let properties: serde_json::Map<String, Value> = (0..=MAX_PATTERNS)
        .map(|i| (format!("p{i}"), json!({"pattern": "^x$"})))
        .collect();
    accepted(&json!({ "properties": properties }));
}

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
