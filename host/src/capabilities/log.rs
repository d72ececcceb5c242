//! The `log` interface: structured events into the run's journal and the host's tracing,
//! bounded per run so a flooding tool cannot fill the ledger.

use super::ToolState;
use crate::bindings::log;
use crate::ledger::NewJournalEntry;

impl log::Host for ToolState {
    async fn event(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let size = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        let (level_name, tracing_level) = match level {
            log::Level::Trace => ("trace", tracing::Level::TRACE),
            log::Level::Debug => ("debug", tracing::Level::DEBUG),
            log::Level::Info => ("info", tracing::Level::INFO),
            log::Level::Warn => ("warn", tracing::Level::WARN),
            log::Level::Error => ("error", tracing::Level::ERROR),
        };
        let Some(ctx) = &self.attempt else {
            tracing::debug!(level = level_name, "tool log during describe: {message}");
            return Ok(());
        };
        let cap = ctx.policy.limits.max_log_bytes;
        let next = self
            .log_bytes
            .saturating_add(u64::try_from(size).unwrap_or(u64::MAX));
        if next > cap {
            if !self.log_truncated {
                self.log_truncated = true;
                ctx.ledger.journal(NewJournalEntry {
                    run_id: ctx.run_id.clone(),
                    attempt: Some(ctx.attempt),
                    at: ctx.clock.now_ms(),
                    level: "warn".into(),
                    event: "log.truncated".into(),
                    message: format!("tool logged more than {cap} bytes; further events dropped"),
                    fields: serde_json::json!({ "max_log_bytes": cap }),
                });
            }
            return Ok(());
        }
        self.log_bytes = next;
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
        let fields: serde_json::Map<String, serde_json::Value> = fields
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        ctx.ledger.journal(NewJournalEntry {
            run_id: ctx.run_id.clone(),
            attempt: Some(ctx.attempt),
            at: ctx.clock.now_ms(),
            level: level_name.into(),
            event: "log".into(),
            message,
            fields: serde_json::Value::Object(fields),
        });
        Ok(())
    }
}
