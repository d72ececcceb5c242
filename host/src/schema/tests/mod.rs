//! The schema rules, tested: what is refused at load (`refused`), and what is accepted and
//! validates within bounds (`accepted`).

use super::*;
use serde_json::json;

pub(super) fn refused(schema: &Value) -> SchemaError {
    match compile(&schema.to_string()) {
        Ok((_, compiled)) => panic!("accepted ({compiled:?}): {schema}"),
        Err(error) => error,
    }
}

pub(super) fn accepted(schema: &Value) -> InputSchema {
    compile(&schema.to_string())
        .unwrap_or_else(|error| panic!("refused: {error}\n{schema}"))
        .1
}

/// `n` definitions, each applying `keyword` to two references to the next: 2^n paths.
pub(super) fn fan_out(n: usize, keyword: &str, unevaluated: bool) -> Value {
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
pub(super) fn chain_per_level(n: usize) -> Value {
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

pub(super) fn nested_arrays(depth: usize, leaf: Value) -> Value {
    (0..depth).fold(leaf, |inner, _| Value::Array(vec![inner]))
}

mod accepted;
mod refused;
