//! The schema read as a graph: every subschema a node, every way one applies another an
//! edge. [`cost`] sums what validating one input value can cost over it.

use super::{SchemaError, escape, fragment, shown};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

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
pub(super) struct Graph<'a> {
    nodes: Vec<Node<'a>>,
    pub(super) patterns: BTreeSet<&'a str>,
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
    pub(super) fn build(root: &'a Value) -> Result<Self, SchemaError> {
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

mod cost;
