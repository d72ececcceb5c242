use super::*;
use serde_json::json;

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
