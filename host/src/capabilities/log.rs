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
                ctx.journal(journal::entry(
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

#[cfg(test)]
mod tests {
    use super::super::testing::Harness;
    use crate::bindings::log::{Host as _, Level};
    use crate::journal::EventName;

    #[tokio::test]
    async fn events_are_journaled_at_their_level_with_their_fields() {
        let mut h = Harness::new("", 1 << 20);
        h.state
            .event(
                Level::Warn,
                "low stock".into(),
                vec![("sku".into(), "A-1".into())],
            )
            .await
            .unwrap();
        let entry = h
            .journal()
            .into_iter()
            .find(|e| e.event == EventName::Log.as_str())
            .expect("journaled");
        assert_eq!(
            (entry.level.as_str(), entry.message.as_str()),
            ("warn", "low stock")
        );
        assert_eq!(entry.fields["sku"], "A-1");
    }

    #[tokio::test]
    async fn empty_events_count_against_the_cap_at_their_stored_size() {
        let mut h = Harness::new("[limits]\nmax_log_bytes = 4096\n", 1 << 20);
        for _ in 0..1_000 {
            h.state
                .event(Level::Info, String::new(), Vec::new())
                .await
                .unwrap();
        }
        let logged: u64 = h
            .journal()
            .iter()
            .filter(|e| e.event == EventName::Log.as_str())
            .map(|e| tollgate_ledger::stored::journal_entry(&to_new(e)))
            .sum();
        assert!(logged > 0 && logged <= 4096, "{logged} bytes logged");
        assert_eq!(h.count(EventName::LogTruncated), 1, "the cut is noted once");
    }

    #[tokio::test]
    async fn outside_a_run_events_go_nowhere_durable() {
        let mut state = Harness::unrecorded("");
        state
            .event(Level::Error, "describe".into(), Vec::new())
            .await
            .unwrap();
        assert_eq!(state.log_bytes, 0);
    }

    fn to_new(e: &tollgate_ledger::JournalEntry) -> tollgate_ledger::NewJournalEntry {
        tollgate_ledger::NewJournalEntry {
            run_id: e.run_id.clone(),
            attempt: e.attempt,
            at: e.at,
            level: e.level.clone(),
            event: e.event.clone(),
            message: e.message.clone(),
            fields: e.fields.clone(),
        }
    }
}
