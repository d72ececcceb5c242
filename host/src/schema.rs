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

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

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

/// The draft a schema is read under, from its root `$schema` (2020-12 without one), as
/// `jsonschema` detects it. Only the keywords whose meaning changed matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Draft {
    Draft4,
    Before2020,
    Draft2020,
}

impl Draft {
    fn of(schema: &Value) -> Self {
        match schema.get("$schema").and_then(Value::as_str) {
            Some(uri) if uri.contains("draft-04") => Draft::Draft4,
            Some(uri)
                if uri.contains("draft-06")
                    || uri.contains("draft-07")
                    || uri.contains("2019-09") =>
            {
                Draft::Before2020
            }
            _ => Draft::Draft2020,
        }
    }
}

/// How one subschema reaches another without moving in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// An applicator keyword: the target's pointer names it.
    Keyword,
    Ref,
}

/// A subschema and its edges. Indices are into [`Graph::nodes`].
#[derive(Debug, Default)]
struct Node<'a> {
    pointer: String,
    /// Subschemas applied to the same input value, one entry per application.
    in_place: Vec<(usize, Step)>,
    /// `unevaluatedProperties`/`unevaluatedItems` evaluate the in-place subschemas again to
    /// learn what they evaluated.
    unevaluated: bool,
    properties: Vec<(&'a str, usize)>,
    pattern_properties: Vec<usize>,
    additional_properties: Option<usize>,
    unevaluated_properties: Option<usize>,
    /// Schemas for the item at an index: `prefixItems`, or array-form `items`.
    prefix_items: Vec<(usize, usize)>,
    /// Schemas for items past the prefix: `items` (2020-12), `additionalItems`.
    rest_items: Vec<usize>,
    /// Schemas for every item: `items` (before 2020-12), `contains`, `unevaluatedItems`.
    all_items: Vec<usize>,
    property_names: Option<usize>,
    content_schema: Option<usize>,
}

impl Node<'_> {
    /// Every subschema applied to a child value of this node's value.
    fn descendants(&self) -> impl Iterator<Item = usize> + '_ {
        self.properties
            .iter()
            .map(|&(_, child)| child)
            .chain(self.pattern_properties.iter().copied())
            .chain(self.additional_properties)
            .chain(self.unevaluated_properties)
            .chain(self.prefix_items.iter().map(|&(_, child)| child))
            .chain(self.rest_items.iter().copied())
            .chain(self.all_items.iter().copied())
            .chain(self.property_names)
            .chain(self.content_schema)
    }

    fn multiplier(&self) -> u64 {
        if self.unevaluated { 2 } else { 1 }
    }
}

/// Every subschema of a document, with its edges, and the distinct patterns.
struct Graph<'a> {
    nodes: Vec<Node<'a>>,
    patterns: BTreeSet<&'a str>,
}

/// Builds a [`Graph`]: walks every schema position from the root, then follows `$ref`s, whose
/// targets may be anywhere in the document.
struct Builder<'a> {
    root: &'a Value,
    draft: Draft,
    nodes: Vec<Node<'a>>,
    values: Vec<&'a Value>,
    by_pointer: HashMap<String, usize>,
    unwalked: Vec<usize>,
    /// `$ref`s met so far: (node, reference).
    refs: Vec<(usize, &'a str)>,
    anchors: HashMap<&'a str, usize>,
    patterns: BTreeSet<&'a str>,
}

const ROOT: usize = 0;

impl<'a> Graph<'a> {
    fn build(root: &'a Value) -> Result<Self, SchemaError> {
        let mut builder = Builder {
            root,
            draft: Draft::of(root),
            nodes: Vec::new(),
            values: Vec::new(),
            by_pointer: HashMap::new(),
            unwalked: Vec::new(),
            refs: Vec::new(),
            anchors: HashMap::new(),
            patterns: BTreeSet::new(),
        };
        builder.node(String::new(), root);
        let mut resolved = 0;
        // Anchors are known only once every node they could sit on has been walked.
        let mut by_anchor = Vec::new();
        loop {
            while let Some(id) = builder.unwalked.pop() {
                builder.walk(id)?;
            }
            let Some(&(from, reference)) = builder.refs.get(resolved) else {
                break;
            };
            resolved += 1;
            match builder.resolve(from, reference)? {
                Target::Node(target) => builder.nodes[from].in_place.push((target, Step::Ref)),
                Target::Anchor(name) => by_anchor.push((from, reference, name)),
            }
        }
        for (from, reference, name) in by_anchor {
            let Some(&target) = builder.anchors.get(name) else {
                return Err(SchemaError::Unresolved {
                    at: fragment(&builder.nodes[from].pointer),
                    reference: shown(reference),
                    reason: format!("no `$anchor` is named \"{}\"", shown(name)),
                });
            };
            builder.nodes[from].in_place.push((target, Step::Ref));
        }
        Ok(Graph {
            nodes: builder.nodes,
            patterns: builder.patterns,
        })
    }
}

enum Target<'a> {
    Node(usize),
    Anchor(&'a str),
}

impl<'a> Builder<'a> {
    /// The node at `pointer`, created (and queued for walking) on first sight.
    fn node(&mut self, pointer: String, value: &'a Value) -> usize {
        if let Some(&id) = self.by_pointer.get(&pointer) {
            return id;
        }
        let id = self.nodes.len();
        self.by_pointer.insert(pointer.clone(), id);
        self.nodes.push(Node {
            pointer,
            ..Node::default()
        });
        self.values.push(value);
        self.unwalked.push(id);
        id
    }

    fn child(&mut self, parent: usize, keyword: &str, value: &'a Value) -> usize {
        let pointer = format!("{}/{}", self.nodes[parent].pointer, escape(keyword));
        self.node(pointer, value)
    }

    fn grandchild(&mut self, parent: usize, keyword: &str, key: &str, value: &'a Value) -> usize {
        let pointer = format!(
            "{}/{}/{}",
            self.nodes[parent].pointer,
            escape(keyword),
            escape(key)
        );
        self.node(pointer, value)
    }

    fn at(&self, id: usize) -> String {
        fragment(&self.nodes[id].pointer)
    }

    /// Records the edges of node `id` and queues its subschemas. Keywords of every draft are
    /// read wherever they appear: an edge too many only makes a bound looser.
    fn walk(&mut self, id: usize) -> Result<(), SchemaError> {
        let Some(Value::Object(map)) = self.values.get(id).copied() else {
            return Ok(());
        };
        for (keyword, value) in map {
            match keyword.as_str() {
                "$ref" => {
                    if let Some(reference) = value.as_str() {
                        self.refs.push((id, reference));
                    }
                }
                "$dynamicRef" => {
                    return Err(SchemaError::DynamicRef {
                        at: self.at(id),
                        keyword: "$dynamicRef",
                    });
                }
                "$recursiveRef" => {
                    return Err(SchemaError::DynamicRef {
                        at: self.at(id),
                        keyword: "$recursiveRef",
                    });
                }
                // A nested `$id` rebases every reference under it; draft 4 spells it `id`.
                "$id" if id != ROOT => {
                    return Err(SchemaError::EmbeddedResource {
                        at: self.at(id),
                        keyword: "$id",
                    });
                }
                "id" if id != ROOT && self.draft == Draft::Draft4 && value.is_string() => {
                    return Err(SchemaError::EmbeddedResource {
                        at: self.at(id),
                        keyword: "id",
                    });
                }
                "$anchor" | "$dynamicAnchor" => {
                    if let Some(name) = value.as_str()
                        && let Some(&first) = self.anchors.get(name)
                        && first != id
                    {
                        return Err(SchemaError::DuplicateAnchor {
                            name: shown(name),
                            first: self.at(first),
                            second: self.at(id),
                        });
                    } else if let Some(name) = value.as_str() {
                        self.anchors.insert(name, id);
                    }
                }
                "allOf" | "anyOf" | "oneOf" => {
                    for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                        let child = self.grandchild(id, keyword, &i.to_string(), item);
                        self.nodes[id].in_place.push((child, Step::Keyword));
                    }
                }
                "not" | "if" | "then" | "else" => {
                    let child = self.child(id, keyword, value);
                    self.nodes[id].in_place.push((child, Step::Keyword));
                }
                "dependentSchemas" | "dependencies" => {
                    // `dependencies` also takes arrays of names, which are no schemas.
                    for (name, item) in value.as_object().into_iter().flatten() {
                        if item.is_object() || item.is_boolean() {
                            let child = self.grandchild(id, keyword, name, item);
                            self.nodes[id].in_place.push((child, Step::Keyword));
                        }
                    }
                }
                "properties" => {
                    for (name, item) in value.as_object().into_iter().flatten() {
                        let child = self.grandchild(id, keyword, name, item);
                        self.nodes[id].properties.push((name.as_str(), child));
                    }
                }
                "patternProperties" => {
                    for (pattern, item) in value.as_object().into_iter().flatten() {
                        self.patterns.insert(pattern.as_str());
                        let child = self.grandchild(id, keyword, pattern, item);
                        self.nodes[id].pattern_properties.push(child);
                    }
                }
                "additionalProperties" => {
                    let child = self.child(id, keyword, value);
                    self.nodes[id].additional_properties = Some(child);
                }
                "unevaluatedProperties" => {
                    let child = self.child(id, keyword, value);
                    self.nodes[id].unevaluated_properties = Some(child);
                    self.nodes[id].unevaluated = true;
                }
                "propertyNames" => {
                    let child = self.child(id, keyword, value);
                    self.nodes[id].property_names = Some(child);
                }
                "prefixItems" => {
                    for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                        let child = self.grandchild(id, keyword, &i.to_string(), item);
                        self.nodes[id].prefix_items.push((i, child));
                    }
                }
                "items" => match value {
                    Value::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let child = self.grandchild(id, keyword, &i.to_string(), item);
                            self.nodes[id].prefix_items.push((i, child));
                        }
                    }
                    _ => {
                        let child = self.child(id, keyword, value);
                        if self.draft == Draft::Draft2020 {
                            self.nodes[id].rest_items.push(child);
                        } else {
                            self.nodes[id].all_items.push(child);
                        }
                    }
                },
                "additionalItems" => {
                    let child = self.child(id, keyword, value);
                    self.nodes[id].rest_items.push(child);
                }
                "contains" => {
                    let child = self.child(id, keyword, value);
                    self.nodes[id].all_items.push(child);
                }
                "unevaluatedItems" => {
                    let child = self.child(id, keyword, value);
                    self.nodes[id].all_items.push(child);
                    self.nodes[id].unevaluated = true;
                }
                "contentSchema" => {
                    let child = self.child(id, keyword, value);
                    self.nodes[id].content_schema = Some(child);
                }
                "$defs" | "definitions" => {
                    for (name, item) in value.as_object().into_iter().flatten() {
                        self.grandchild(id, keyword, name, item);
                    }
                }
                "pattern" => {
                    if let Some(pattern) = value.as_str() {
                        self.patterns.insert(pattern);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Where `reference`, met at node `from`, points: a node for a JSON pointer (created if
    /// new), or an anchor name to look up once every node is walked. Resolves as
    /// `referencing` does: the fragment is percent-decoded, then split at `/`; array indices
    /// are parsed as numbers, object keys unescaped (`~1` is `/`, `~0` is `~`).
    fn resolve(&mut self, from: usize, reference: &'a str) -> Result<Target<'a>, SchemaError> {
        let at = fragment(&self.nodes[from].pointer);
        let unresolved = |reason: String| SchemaError::Unresolved {
            at: at.clone(),
            reference: shown(reference),
            reason,
        };
        // A nested `$id` is refused, so every fragment is relative to the document.
        let Some(fragment_text) = reference.strip_prefix('#') else {
            if reference.is_empty() {
                return Ok(Target::Node(ROOT));
            }
            return Err(SchemaError::NotLocal {
                at,
                keyword: "$ref",
                reference: shown(reference),
            });
        };
        if fragment_text.is_empty() {
            return Ok(Target::Node(ROOT));
        }
        let Some(pointer) = fragment_text.strip_prefix('/') else {
            return Ok(Target::Anchor(fragment_text));
        };
        let decoded = percent_decode(pointer)
            .ok_or_else(|| unresolved("its percent-encoding is not UTF-8".to_owned()))?;
        let mut value = self.root;
        let mut canonical = String::new();
        for segment in decoded.split('/') {
            match value {
                Value::Array(items) => {
                    let next = segment
                        .parse::<usize>()
                        .ok()
                        .and_then(|index| items.get(index).map(|item| (index, item)));
                    let Some((index, item)) = next else {
                        return Err(unresolved(format!(
                            "no item \"{}\" in an array",
                            shown(segment)
                        )));
                    };
                    let _ = write!(canonical, "/{index}");
                    value = item;
                }
                Value::Object(map) => {
                    let key = unescape(segment);
                    let Some(item) = map.get(&key) else {
                        return Err(unresolved(format!("no key \"{}\"", shown(&key))));
                    };
                    let _ = write!(canonical, "/{}", escape(&key));
                    value = item;
                }
                _ => {
                    return Err(unresolved(format!(
                        "\"{}\" goes past a leaf",
                        shown(segment)
                    )));
                }
            }
        }
        Ok(Target::Node(self.node(canonical, value)))
    }
}

/// `%XX` sequences decoded, others kept; `None` if the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (byte, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A JSON pointer segment's key: `~1` is `/`, `~0` is `~`, any other `~` stays.
fn unescape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    let mut chars = segment.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('~', Some('1')) => {
                out.push('/');
                chars.next();
            }
            ('~', Some('0')) => {
                out.push('~');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// What the subschemas under one node do to the child values of its input value, summed over
/// every in-place path from the node: for each child, the most checks it can cost. A child
/// key named in some `properties` may cost more or less than any other key (`delta`); so
/// may an item at a `prefixItems` index.
#[derive(Debug, Default, Clone)]
struct Children<'a> {
    other_key: u64,
    key_delta: HashMap<&'a str, i64>,
    other_index: u64,
    index_delta: HashMap<usize, i64>,
    /// The key itself, as a string (`propertyNames`).
    property_name: u64,
    /// A string's decoded content (`contentSchema`).
    content: u64,
}

impl<'a> Children<'a> {
    fn add(&mut self, other: &Children<'a>, times: u64, steps: &mut u64) {
        let times_signed = i64::try_from(times).unwrap_or(i64::MAX);
        self.other_key = self
            .other_key
            .saturating_add(other.other_key.saturating_mul(times));
        self.other_index = self
            .other_index
            .saturating_add(other.other_index.saturating_mul(times));
        self.property_name = self
            .property_name
            .saturating_add(other.property_name.saturating_mul(times));
        self.content = self
            .content
            .saturating_add(other.content.saturating_mul(times));
        for (&key, &delta) in &other.key_delta {
            let entry = self.key_delta.entry(key).or_default();
            *entry = entry.saturating_add(delta.saturating_mul(times_signed));
        }
        for (&index, &delta) in &other.index_delta {
            let entry = self.index_delta.entry(index).or_default();
            *entry = entry.saturating_add(delta.saturating_mul(times_signed));
        }
        *steps = steps.saturating_add((other.key_delta.len() + other.index_delta.len()) as u64);
    }

    /// The most checks any one child value can cost.
    fn most(&self) -> u64 {
        fn widest(base: u64, deltas: impl Iterator<Item = i64>) -> u64 {
            let extra = deltas.max().unwrap_or(0).max(0);
            base.saturating_add(u64::try_from(extra).unwrap_or(0))
        }
        widest(self.other_key, self.key_delta.values().copied())
            .max(widest(self.other_index, self.index_delta.values().copied()))
            .max(self.property_name)
            .max(self.content)
    }
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl<'a> Graph<'a> {
    /// The node's own edges to child values, each costing what `cost` says its target does.
    fn own_children(&self, node: &Node<'a>, cost: &[u64]) -> Children<'a> {
        let of = |id: Option<usize>| id.and_then(|id| cost.get(id).copied()).unwrap_or(0);
        let sum = |ids: &[usize]| {
            ids.iter()
                .fold(0u64, |sum, &id| sum.saturating_add(of(Some(id))))
        };
        // A key no `properties` names meets every pattern that matches it, or else
        // `additionalProperties` (and `unevaluatedProperties`, if nothing else evaluated it):
        // count every pattern as matching.
        let patterns = sum(&node.pattern_properties);
        let other_key = patterns
            .max(of(node.additional_properties).saturating_add(of(node.unevaluated_properties)));
        let mut key_delta = HashMap::new();
        for &(name, child) in &node.properties {
            let named = of(Some(child)).saturating_add(patterns);
            key_delta.insert(name, signed(named).saturating_sub(signed(other_key)));
        }
        let every_item = sum(&node.all_items);
        let other_index = every_item.saturating_add(sum(&node.rest_items));
        let mut at_index: HashMap<usize, u64> = HashMap::new();
        for &(index, child) in &node.prefix_items {
            let entry = at_index.entry(index).or_insert(every_item);
            *entry = entry.saturating_add(of(Some(child)));
        }
        let index_delta = at_index
            .into_iter()
            .map(|(index, cost)| (index, signed(cost).saturating_sub(signed(other_index))))
            .collect();
        Children {
            other_key,
            key_delta,
            other_index,
            index_delta,
            property_name: of(node.property_names),
            content: of(node.content_schema),
        }
    }

    /// Refuses in-place loops; returns the nodes with every in-place target before its
    /// sources.
    fn in_place_order(&self) -> Result<Vec<usize>, SchemaError> {
        const NEW: u8 = 0;
        const OPEN: u8 = 1;
        const DONE: u8 = 2;
        let mut state = vec![NEW; self.nodes.len()];
        let mut order = Vec::with_capacity(self.nodes.len());
        for start in 0..self.nodes.len() {
            if state.get(start) != Some(&NEW) {
                continue;
            }
            // (node, index of its next in-place edge); the stack is the path from `start`.
            let mut stack = vec![(start, 0usize)];
            if let Some(s) = state.get_mut(start) {
                *s = OPEN;
            }
            while let Some(&mut (id, ref mut next)) = stack.last_mut() {
                let edge = self.nodes.get(id).and_then(|n| n.in_place.get(*next));
                *next += 1;
                let Some(&(target, _)) = edge else {
                    if let Some(s) = state.get_mut(id) {
                        *s = DONE;
                    }
                    order.push(id);
                    stack.pop();
                    continue;
                };
                match state.get(target).copied() {
                    Some(NEW) => {
                        if let Some(s) = state.get_mut(target) {
                            *s = OPEN;
                        }
                        stack.push((target, 0));
                    }
                    Some(OPEN) => return Err(self.loop_error(&stack, target)),
                    _ => {}
                }
            }
        }
        Ok(order)
    }

    /// The loop closed by an edge to `target` from the top of `stack`, as pointers and steps.
    fn loop_error(&self, stack: &[(usize, usize)], target: usize) -> SchemaError {
        let from = stack.iter().position(|&(id, _)| id == target).unwrap_or(0);
        let steps = stack.get(from..).unwrap_or_default();
        let mut path = String::new();
        for &(id, next) in steps.iter().take(MAX_LOOP_STEPS) {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            if path.is_empty() {
                path.push_str(&fragment(&node.pointer));
            }
            // `next` has moved past the edge taken.
            let step = next
                .checked_sub(1)
                .and_then(|i| node.in_place.get(i))
                .copied();
            if let Some((to, step)) = step {
                let arrow = match step {
                    Step::Ref => " --$ref--> ",
                    Step::Keyword => " → ",
                };
                let to = self.nodes.get(to).map(|n| n.pointer.as_str()).unwrap_or("");
                path.push_str(arrow);
                path.push_str(&fragment(to));
            }
        }
        if steps.len() > MAX_LOOP_STEPS {
            let _ = write!(path, " → … ({} steps in all)", steps.len());
        }
        SchemaError::RefLoop { path }
    }

    /// The most subschema checks one input value can cost, or why the schema cannot be
    /// bounded. See the module docs for what is counted.
    fn bound(&self) -> Result<u64, SchemaError> {
        let order = self.in_place_order()?;
        let count = self.nodes.len();
        let at = |id: usize| {
            self.nodes
                .get(id)
                .map(|n| fragment(&n.pointer))
                .unwrap_or_default()
        };
        // Checks of one value entering each node, and the longest in-place chain from it.
        let mut checks = vec![0u64; count];
        let mut chain = vec![0u64; count];
        for &id in &order {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            let (mut below, mut longest) = (0u64, 0u64);
            for &(child, _) in &node.in_place {
                below = below.saturating_add(checks.get(child).copied().unwrap_or(0));
                longest = longest.max(chain.get(child).copied().unwrap_or(0));
            }
            let total = below.saturating_mul(node.multiplier()).saturating_add(1);
            if total > MAX_CHECKS_PER_VALUE {
                return Err(SchemaError::TooManyChecks {
                    at: at(id),
                    limit: MAX_CHECKS_PER_VALUE,
                });
            }
            if longest + 1 > MAX_NESTED_CHECKS {
                return Err(SchemaError::TooDeeplyNestedChecks {
                    at: at(id),
                    limit: MAX_NESTED_CHECKS,
                });
            }
            checks[id] = total;
            chain[id] = longest + 1;
        }
        // Level by level into the input: the most checks any value up to `depth` levels below
        // a node's value can cost (`most`), and the deepest nesting of checks (`nested`).
        let mut most = checks.clone();
        let mut nested = chain.clone();
        let mut steps = 0u64;
        for depth in 1..=MAX_INPUT_DEPTH {
            let mut children: Vec<Children<'a>> = vec![Children::default(); count];
            let mut next_most = vec![0u64; count];
            let mut next_nested = vec![0u64; count];
            for &id in &order {
                let Some(node) = self.nodes.get(id) else {
                    continue;
                };
                let mut sum = self.own_children(node, &most);
                let mut deepest = node
                    .descendants()
                    .map(|child| nested.get(child).copied().unwrap_or(0))
                    .max()
                    .unwrap_or(0);
                for &(child, _) in &node.in_place {
                    if let Some(below) = children.get(child) {
                        sum.add(below, node.multiplier(), &mut steps);
                    }
                    deepest = deepest.max(next_nested.get(child).copied().unwrap_or(0));
                }
                steps =
                    steps.saturating_add(1 + (sum.key_delta.len() + sum.index_delta.len()) as u64);
                if steps > MAX_ANALYSIS_STEPS {
                    return Err(SchemaError::TooIntricate {
                        limit: MAX_ANALYSIS_STEPS,
                    });
                }
                let value_checks = checks.get(id).copied().unwrap_or(0).max(sum.most());
                if value_checks > MAX_CHECKS_PER_VALUE {
                    return Err(SchemaError::TooManyNestedChecks {
                        at: at(id),
                        depth,
                        limit: MAX_CHECKS_PER_VALUE,
                    });
                }
                if deepest + 1 > MAX_NESTED_CHECKS {
                    return Err(SchemaError::TooDeeplyNestedChecks {
                        at: at(id),
                        limit: MAX_NESTED_CHECKS,
                    });
                }
                next_most[id] = value_checks;
                next_nested[id] = deepest + 1;
                children[id] = sum;
            }
            let settled = next_most == most && next_nested == nested;
            most = next_most;
            nested = next_nested;
            if settled {
                break;
            }
        }
        Ok(most.get(ROOT).copied().unwrap_or(1))
    }
}

#[cfg(test)]
mod tests {
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
        let schema =
            accepted(&json!({"items": {"allOf": [{"type": "string"}, {"type": "string"}]}}));
        let problems = schema.violations(&json!(vec![0; 60_000])).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("too large to list"), "{problems:?}");
        // Inputs deeper than the bounds allow for are refused before validation.
        let problems = schema
            .violations(&nested_arrays(MAX_INPUT_DEPTH + 1, json!(1)))
            .unwrap_err();
        assert!(problems[0].contains("nests"), "{problems:?}");
    }
}
