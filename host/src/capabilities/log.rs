//! The `log` interface: structured events into the run's journal and the host's tracing,
//! bounded per attempt by `limits.max_log_bytes` and per run by the storage budget, both at
//! the size the ledger stores, so a flooding tool cannot fill the ledger.

use super::ToolState;
use crate::bindings::log;
use crate::journal::{self, Event};

impl log::Host for ToolState {
    async fn event(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let (level_name, tracing_level) = match level {
            log::Level::Trace => ("trace", tracing::Level::TRACE),
            log::Level::Debug => ("debug", tracing::Level::DEBUG),
            log::Level::Info => ("info", tracing::Level::INFO),
            log::Level::Warn => ("warn", tracing::Level::WARN),
            log::Level::Error => ("error", tracing::Level::ERROR),
        };
        let Some(ctx) = self.attempt.clone() else {
            tracing::debug!(level = level_name, "tool log during describe: {message}");
            return Ok(());
        };
        let fields: serde_json::Map<String, serde_json::Value> = fields
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        let entry = journal::entry_at_level(ctx.at(), level_name, Event::Log(fields), message);
        // Counted as stored, row cost included: an empty event is not free, and fields
        // count as the JSON the ledger keeps, escapes and all.
        let size = tollgate_ledger::stored::journal_entry(&entry);
        let cap = ctx.policy.limits.max_log_bytes;
        let next = self.log_bytes.saturating_add(size);
        if next > cap {
            if !self.log_truncated {
                self.log_truncated = true;
                ctx.ledger.journal(journal::entry(
                    ctx.at(),
                    Event::LogTruncated { max_log_bytes: cap },
                    format!("tool logged more than {cap} bytes; further events dropped"),
                ));
            }
            return Ok(());
        }
        self.log_bytes = next;
        let message = crate::clip::text(&entry.message, 1024);
        match tracing_level {
            tracing::Level::ERROR => {
                tracing::error!(run_id = %ctx.run_id, tool = %ctx.tool, "{message}")
            }
            tracing::Level::WARN => {
                tracing::warn!(run_id = %ctx.run_id, tool = %ctx.tool, "{message}")
            }
            tracing::Level::INFO => {
                tracing::info!(run_id = %ctx.run_id, tool = %ctx.tool, "{message}")
            }
            _ => tracing::debug!(run_id = %ctx.run_id, tool = %ctx.tool, "{message}"),
        }
        ctx.journal_charged(entry);
        Ok(())
    }
}
