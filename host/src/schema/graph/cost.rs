//! The most checks validating one input value can cost, summed over the graph.

use super::{Graph, Node, ROOT, Step};
use crate::schema::{
    MAX_ANALYSIS_STEPS, MAX_CHECKS_PER_VALUE, MAX_INPUT_DEPTH, MAX_LOOP_STEPS, MAX_NESTED_CHECKS,
    SchemaError, fragment,
};
use std::collections::HashMap;
use std::fmt::Write as _;

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
    pub(in crate::schema) fn bound(&self) -> Result<u64, SchemaError> {
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
