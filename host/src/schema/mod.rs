//! What a tool's input schema may be, and what validating an input against it may cost.
//!
//! Invariant: a schema that loads validates any input in bounded time, memory and stack. Every
//! input value costs at most [`MAX_CHECKS_PER_VALUE`] subschema checks, at most
//! [`MAX_NESTED_CHECKS`] of them nested inside one another, and patterns are matched by a
//! linear-time engine within a fixed size. A schema that cannot keep that promise is refused
//! at load with an error naming what is wrong, where (a `#/…` pointer into the schema) and how
//! to fix it.
//!
//! The tool controls its schema, and the host validates every input against it before the
//! tool runs, where no tool limit applies. So the bounds come from reading the schema before
//! `jsonschema` compiles it, as a graph whose nodes are subschemas. Some edges keep the input
//! value where it is (`$ref`, `allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`,
//! `dependentSchemas`); others move to a child value (`properties`, `items`, …). The reading
//! refuses:
//! - a loop of the first kind, which never reaches into the input and so never ends;
//! - more checks on one input value than the cap, counting every path through the first kind
//!   (which catches exponential fan-out through shared `$defs`), and every way several
//!   subschemas can apply to the same child value level after level;
//! - more nested checks than the cap, which would overflow the stack of the validating
//!   thread;
//! - references outside the document, dynamic references and embedded resources, whose
//!   targets the reading could not follow;
//! - more distinct patterns than the cap, or a pattern the engine cannot match in linear time
//!   within its size limit.
//!
//! An input then costs at most its size times the schema's checks per value.
//! [`InputSchema::violations`] refuses, before validating, an input nested deeper than
//! [`MAX_INPUT_DEPTH`] (the bounds assume no deeper) or costing more than
//! [`MAX_VALIDATION_WORK`]; it lists violations one by one only when an error for every check
//! would still fit a smaller budget.

use graph::Graph;
use serde_json::Value;

/// Largest schema text a tool may describe.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;
/// Deepest JSON nesting of the schema text.
pub const MAX_SCHEMA_NESTING: usize = 64;
/// Most subschema checks one input value may cost.
pub const MAX_CHECKS_PER_VALUE: u64 = 10_000;
/// Most subschema checks nested inside one another while validating an input. `jsonschema`
/// recurses once per check, a few hundred bytes of stack each in release builds, and the
/// validating thread may be a 2 MiB async worker.
pub const MAX_NESTED_CHECKS: u64 = 1_000;
/// Most distinct regular expressions (`pattern` values and `patternProperties` keys).
pub const MAX_PATTERNS: usize = 64;
/// Largest compiled form of one pattern, and of its lazy DFA cache.
pub const MAX_PATTERN_BYTES: usize = 256 * 1024;
/// Deepest input the bounds allow for: the default recursion limit of `serde_json`, which
/// parses every input.
pub const MAX_INPUT_DEPTH: usize = 128;
/// Most steps the reading itself may take: beyond this a schema is too intricate to bound.
const MAX_ANALYSIS_STEPS: u64 = 50_000_000;
/// Violations listed for one input; the rest are counted.
const MAX_LISTED_VIOLATIONS: usize = 20;
/// Longest violation message kept; messages quote the input.
const MAX_MESSAGE_CHARS: usize = 300;
/// Longest input path kept in a violation, from its end, which says most.
const MAX_PATH_CHARS: usize = 200;
/// Longest piece of tool-controlled text (a key, a reference) quoted in an error.
const MAX_SHOWN_CHARS: usize = 200;
/// Steps of a `$ref` loop named in its error; a longer loop is cut short.
const MAX_LOOP_STEPS: usize = 8;
/// Most work, in subschema checks times input values and key bytes, for validating one input:
/// a check costs up to about 1.5 µs, so a few seconds of one core at most.
pub const MAX_VALIDATION_WORK: u64 = 2_000_000;
/// Most work, as above, for listing violations: `jsonschema` collects every violation before
/// returning any, one error per failed check.
const MAX_LISTING_WORK: u64 = 100_000;

/// Why an input schema is refused. Each message says what is wrong, where, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "it is {bytes} bytes, over the limit of {limit}: describe the input more compactly, sharing repeated parts through `$defs` and `$ref`"
    )]
    TooLarge { bytes: usize, limit: usize },
    #[error("it is not JSON ({reason}): `describe` must return the schema as JSON text")]
    NotJson { reason: String },
    #[error(
        "it nests more than {limit} levels deep at {at}: move inner parts into `$defs` and refer to them with `$ref`"
    )]
    TooDeep { at: String, limit: usize },
    #[error(
        "`{keyword}` at {at} is \"{reference}\", which is not in this schema: the host resolves no files or URLs, so copy the schema it names under `$defs` and refer to it as \"#/$defs/<name>\""
    )]
    NotLocal {
        at: String,
        keyword: &'static str,
        reference: String,
    },
    #[error(
        "`$ref` at {at} is \"{reference}\", which points at nothing in this schema ({reason}): point it at an existing subschema, such as \"#/$defs/<name>\""
    )]
    Unresolved {
        at: String,
        reference: String,
        reason: String,
    },
    #[error(
        "`{keyword}` at {at} is not supported (its target depends on the path taken to reach it): use `$ref` to a `$defs` entry instead"
    )]
    DynamicRef { at: String, keyword: &'static str },
    #[error(
        "`{keyword}` at {at} starts an embedded schema resource, which only the root may do: remove it, and refer to this subschema as \"{at}\""
    )]
    EmbeddedResource { at: String, keyword: &'static str },
    #[error("the anchor \"{name}\" is defined twice, at {first} and at {second}: rename one")]
    DuplicateAnchor {
        name: String,
        first: String,
        second: String,
    },
    #[error(
        "its `$ref`s loop without reaching into the input: {path}. Validating any input would never finish: break the loop, or make it pass through a keyword that moves into the input (`properties`, `items`, `prefixItems`, `additionalProperties`, `patternProperties`, `contains`, …)"
    )]
    RefLoop { path: String },
    #[error(
        "it expands to more than {limit} subschema checks on a single input value at {at}, counting every path through `$ref`, `allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else` and `dependentSchemas` (twice under `unevaluatedProperties`/`unevaluatedItems`): combine fewer subschemas that refer to the same definitions"
    )]
    TooManyChecks { at: String, limit: u64 },
    #[error(
        "it can make more than {limit} subschema checks on one input value {depth} levels into the input, starting at {at}: several subschemas apply to the same child value and multiply at every level (for example two `allOf` branches whose `items` refer to the same definition); apply each definition once per child value"
    )]
    TooManyNestedChecks {
        at: String,
        depth: usize,
        limit: u64,
    },
    #[error(
        "it can nest more than {limit} subschema checks inside one another, starting at {at} (a chain of `$ref`, `allOf`, `anyOf`, … at every level of a deeply nested input): shorten the chains"
    )]
    TooDeeplyNestedChecks { at: String, limit: u64 },
    #[error(
        "it has {count} distinct patterns (`pattern` values and `patternProperties` keys), over the limit of {limit}: use `enum`, `format` or length limits for the rest"
    )]
    TooManyPatterns { count: usize, limit: usize },
    #[error("it is too intricate to bound its validation cost within {limit} steps: simplify it")]
    TooIntricate { limit: u64 },
    #[error("it is not a valid JSON Schema: {message} (at {at}){hint}")]
    Invalid {
        at: String,
        message: String,
        hint: &'static str,
    },
}

/// A compiled input schema whose validation cost is bounded (see the module docs).
pub struct InputSchema {
    validator: jsonschema::Validator,
    /// Most subschema checks one input value can cost against this schema.
    checks_per_value: u64,
}

impl std::fmt::Debug for InputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputSchema")
            .field("checks_per_value", &self.checks_per_value)
            .finish_non_exhaustive()
    }
}

/// Checks and compiles the schema text a tool describes. Returns the parsed schema and its
/// validator, or why the schema is refused.
pub fn compile(text: &str) -> Result<(Value, InputSchema), SchemaError> {
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(SchemaError::TooLarge {
            bytes: text.len(),
            limit: MAX_SCHEMA_BYTES,
        });
    }
    let schema: Value = serde_json::from_str(text).map_err(|e| {
        // serde_json stops at 128 levels, before a pointer can be given.
        if e.to_string().starts_with("recursion limit exceeded") {
            SchemaError::TooDeep {
                at: format!("line {}, column {}", e.line(), e.column()),
                limit: MAX_SCHEMA_NESTING,
            }
        } else {
            SchemaError::NotJson {
                reason: shown(&e.to_string()),
            }
        }
    })?;
    check_nesting(&schema)?;
    let graph = Graph::build(&schema)?;
    let patterns = graph.patterns.len();
    if patterns > MAX_PATTERNS {
        return Err(SchemaError::TooManyPatterns {
            count: patterns,
            limit: MAX_PATTERNS,
        });
    }
    let checks_per_value = graph.bound()?;
    let validator = jsonschema::options()
        .with_pattern_options(
            // The `regex` engine matches in linear time; `fancy-regex`, the default, backtracks
            // (up to a million steps per match) for lookaround and backreferences.
            jsonschema::PatternOptions::regex()
                .size_limit(MAX_PATTERN_BYTES)
                .dfa_size_limit(MAX_PATTERN_BYTES),
        )
        .build(&schema)
        .map_err(|e| {
            let message = e.to_string();
            let bad_pattern = matches!(
                e.kind(),
                jsonschema::error::ValidationErrorKind::Format { format } if format == "regex"
            );
            let hint = if bad_pattern {
                "; patterns are matched in linear time: no lookaround or backreferences, and each must compile to at most 256 KiB (check lengths with `minLength`/`maxLength` rather than large repetition counts)"
            } else {
                ""
            };
            SchemaError::Invalid {
                at: fragment(e.instance_path().as_str()),
                message: shown(&message),
                hint,
            }
        })?;
    Ok((
        schema,
        InputSchema {
            validator,
            checks_per_value,
        },
    ))
}

impl InputSchema {
    /// Most subschema checks one input value can cost.
    pub fn checks_per_value(&self) -> u64 {
        self.checks_per_value
    }

    /// Checks `input` against the schema: every violation, one per line, as many as can be
    /// listed within bounded memory.
    pub fn violations(&self, input: &Value) -> Result<(), Vec<String>> {
        let size = measure(input);
        if size.depth > MAX_INPUT_DEPTH {
            return Err(vec![format!(
                "the input nests {} levels deep, over the limit of {MAX_INPUT_DEPTH}: flatten it",
                size.depth
            )]);
        }
        let work = size.weight.saturating_mul(self.checks_per_value);
        if work > MAX_VALIDATION_WORK {
            return Err(vec![format!(
                "the input is too large for this tool's schema: {} values and key bytes, at up to {} schema checks each, is over the {MAX_VALIDATION_WORK} checks one input may cost; send a smaller input",
                size.weight, self.checks_per_value
            )]);
        }
        if self.validator.is_valid(input) {
            return Ok(());
        }
        if work > MAX_LISTING_WORK {
            return Err(vec![format!(
                "the input does not match the schema; it is too large to list each violation ({} values and key bytes, up to {} schema checks each): check it against the schema in smaller parts",
                size.weight, self.checks_per_value
            )]);
        }
        let mut listed = Vec::new();
        let mut unlisted = 0usize;
        for error in self.validator.iter_errors(input) {
            if listed.len() == MAX_LISTED_VIOLATIONS {
                unlisted += 1;
                continue;
            }
            let at = error.instance_path().as_str();
            let message = truncate(error.to_string(), MAX_MESSAGE_CHARS);
            listed.push(if at.is_empty() {
                message
            } else {
                format!(
                    "{}: {message}",
                    truncate_front(&escaped(at), MAX_PATH_CHARS)
                )
            });
        }
        if unlisted > 0 {
            listed.push(format!("… and {unlisted} more"));
        }
        if listed.is_empty() {
            // `is_valid` and `iter_errors` disagree only if `jsonschema` has a bug; refuse
            // rather than let an input through unchecked.
            listed.push("the input does not match the schema".to_owned());
        }
        Err(listed)
    }
}

fn truncate(mut text: String, max_chars: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max_chars) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn truncate_front(text: &str, max_chars: usize) -> String {
    match text.char_indices().rev().nth(max_chars) {
        Some((cut, c)) => format!("…{}", text.get(cut + c.len_utf8()..).unwrap_or_default()),
        None => text.to_owned(),
    }
}

/// How an input's size enters the listing bound.
struct InputSize {
    /// Values plus the bytes of object keys: violations hold lists of unexpected keys.
    weight: u64,
    /// Arrays and objects nested inside one another.
    depth: usize,
}

fn measure(input: &Value) -> InputSize {
    let mut weight = 0u64;
    let mut deepest = 0usize;
    let mut stack = vec![(input, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        weight = weight.saturating_add(1);
        match value {
            Value::Array(items) => {
                deepest = deepest.max(depth);
                stack.extend(items.iter().map(|item| (item, depth + 1)));
            }
            Value::Object(map) => {
                deepest = deepest.max(depth);
                for (key, item) in map {
                    weight = weight.saturating_add(key.len() as u64);
                    stack.push((item, depth + 1));
                }
            }
            _ => {}
        }
    }
    InputSize {
        weight,
        depth: deepest,
    }
}

/// A JSON pointer as a `$ref` would write it, shown as tool-controlled text.
fn fragment(pointer: &str) -> String {
    format!("#{}", shown(pointer))
}

/// `text` with control characters escaped, so that it stays on one line and cannot drive a
/// terminal.
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Tool-controlled text as it may appear in a one-line error: escaped, and cut short.
fn shown(text: &str) -> String {
    truncate(escaped(text), MAX_SHOWN_CHARS)
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Refuses schema text nested deeper than [`MAX_SCHEMA_NESTING`], naming where.
fn check_nesting(schema: &Value) -> Result<(), SchemaError> {
    let mut stack = vec![(schema, String::new(), 1usize)];
    while let Some((value, pointer, depth)) = stack.pop() {
        if !(value.is_array() || value.is_object()) {
            continue;
        }
        if depth > MAX_SCHEMA_NESTING {
            return Err(SchemaError::TooDeep {
                at: fragment(&pointer),
                limit: MAX_SCHEMA_NESTING,
            });
        }
        match value {
            Value::Array(items) => stack.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (item, format!("{pointer}/{i}"), depth + 1)),
            ),
            Value::Object(map) => stack.extend(
                map.iter()
                    .map(|(key, item)| (item, format!("{pointer}/{}", escape(key)), depth + 1)),
            ),
            _ => {}
        }
    }
    Ok(())
}

mod graph;
#[cfg(test)]
mod tests;
