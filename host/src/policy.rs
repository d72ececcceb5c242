//! A tool's policy: what the operator grants one tool, and the bounds it runs within.
//!
//! Pure data and validation, no wasmtime types: the runtime turns a validated [`Policy`] into
//! grants. Deny by default: a tool with no policy gets no effects and the default limits.
//! Unknown fields are errors, so a misspelt grant never silently means "no grant".

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Largest linear memory a policy may grant; the engine's pool reserves slots this size.
pub const MAX_MEMORY_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Effect kinds the tool may perform, such as `erp.post-invoice`.
    #[serde(default)]
    pub effects: BTreeSet<String>,
    #[serde(default)]
    pub limits: Limits,
}

/// Resource bounds for one run of a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes of linear memory, over all of the tool's memories.
    pub memory_bytes: u64,
    /// Elements in any one table.
    pub table_elements: u64,
    /// Core and component instances.
    pub instances: u32,
    /// Wall-clock time of one attempt, in milliseconds (CPU included: the guest is
    /// interrupted when it passes).
    pub timeout_ms: u64,
    /// Bytes of JSON output.
    pub max_output_bytes: u64,
    /// Bytes of log events and captured stdout/stderr, each.
    pub max_log_bytes: u64,
    /// Bytes of one effect payload.
    pub max_payload_bytes: u64,
    /// Bytes of one checkpoint.
    pub max_checkpoint_bytes: u64,
    /// Effects one attempt may perform.
    pub max_effects_per_run: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            table_elements: 20_000,
            instances: 32,
            timeout_ms: 30_000,
            max_output_bytes: 1 << 20,
            max_log_bytes: 64 << 10,
            max_payload_bytes: 256 << 10,
            max_checkpoint_bytes: 1 << 20,
            max_effects_per_run: 100,
        }
    }
}

/// One invalid entry in a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {problem}")]
pub struct PolicyViolation {
    pub field: String,
    pub problem: String,
}

impl Policy {
    /// Checks every entry and returns all problems at once, so a policy is fixed in one pass.
    pub fn validate(&self) -> Result<(), Vec<PolicyViolation>> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, problem: String| {
            problems.push(PolicyViolation {
                field: field.to_owned(),
                problem,
            });
        };
        for kind in &self.effects {
            if !is_valid_effect_kind(kind) {
                bad(
                    "effects",
                    format!(
                        "`{kind}` is not a valid effect kind: use lowercase letters, digits, `.`, `-` and `_`, starting with a letter (e.g. `erp.post-invoice`)"
                    ),
                );
            }
        }
        let l = &self.limits;
        if l.memory_bytes == 0 || l.memory_bytes > MAX_MEMORY_BYTES {
            bad(
                "limits.memory_bytes",
                format!("must be between 1 and {MAX_MEMORY_BYTES}"),
            );
        }
        let positive: [(&str, u64); 7] = [
            ("limits.table_elements", l.table_elements),
            ("limits.instances", u64::from(l.instances)),
            ("limits.timeout_ms", l.timeout_ms),
            ("limits.max_output_bytes", l.max_output_bytes),
            ("limits.max_log_bytes", l.max_log_bytes),
            ("limits.max_payload_bytes", l.max_payload_bytes),
            ("limits.max_checkpoint_bytes", l.max_checkpoint_bytes),
        ];
        for (field, value) in positive {
            if value == 0 {
                bad(field, "must be greater than 0".to_owned());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    pub fn allows_effect(&self, kind: &str) -> bool {
        self.effects.contains(kind)
    }
}

/// `erp.post-invoice`, `files.export_v2`: a letter, then letters, digits and `.-_`.
pub fn is_valid_effect_kind(kind: &str) -> bool {
    let mut chars = kind.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && kind.len() <= 128
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_policy_grants_nothing_and_is_valid() {
        let policy: Policy = toml::from_str("").unwrap();
        assert!(policy.effects.is_empty());
        assert!(!policy.allows_effect("erp.post-invoice"));
        assert_eq!(policy.validate(), Ok(()));
    }

    #[test]
    fn unknown_field_is_an_error_not_ignored() {
        let err = toml::from_str::<Policy>("effect = [\"x\"]").unwrap_err();
        assert!(err.to_string().contains("unknown field `effect`"), "{err}");
    }

    #[test]
    fn reports_every_invalid_entry() {
        let policy: Policy = toml::from_str(
            "effects = [\"Bad Kind\", \"ok.kind\"]\n[limits]\nmemory_bytes = 0\ntimeout_ms = 0\n",
        )
        .unwrap();
        let problems = policy.validate().unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["effects", "limits.memory_bytes", "limits.timeout_ms"]
        );
    }

    #[test]
    fn effect_kind_syntax() {
        assert!(is_valid_effect_kind("erp.post-invoice"));
        assert!(is_valid_effect_kind("files.export_v2"));
        assert!(!is_valid_effect_kind(""));
        assert!(!is_valid_effect_kind("9lives"));
        assert!(!is_valid_effect_kind("ERP.post"));
        assert!(!is_valid_effect_kind("a b"));
    }
}
