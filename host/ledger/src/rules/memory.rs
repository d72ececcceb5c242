//! Rows in memory, for testing the rules without a database. A "transaction" is the
//! caller's: the tests apply one op at a time and look at the rows after.

use std::collections::BTreeMap;

use super::Tx;
use crate::error::LedgerError;
use crate::records::{
    Attempt, BreakerRecord, CallKeyRecord, Checkpoint, EffectRecord, Escalation, EscalationStatus,
    JournalEntry, LockRecord, Millis, NewEscalation, NewJournalEntry, NewRun, NodeRecord, Run,
    RunStatus,
};

#[derive(Debug, Default)]
pub(super) struct Memory {
    pub runs: BTreeMap<String, Run>,
    pub attempts: BTreeMap<(String, u32), Attempt>,
    pub effects: BTreeMap<(String, String), EffectRecord>,
    pub checkpoints: Vec<Checkpoint>,
    pub journal: Vec<JournalEntry>,
    pub escalations: BTreeMap<i64, Escalation>,
    pub locks: BTreeMap<String, LockRecord>,
    pub breakers: BTreeMap<(String, String), BreakerRecord>,
    pub call_keys: BTreeMap<String, CallKeyRecord>,
    pub nodes: BTreeMap<String, NodeRecord>,
}

impl Tx for Memory {
    fn run(&mut self, run_id: &str) -> Result<Option<Run>, LedgerError> {
        Ok(self.runs.get(run_id).cloned())
    }

    fn insert_run(&mut self, run: &NewRun) -> Result<(), LedgerError> {
        self.runs.insert(
            run.run_id.clone(),
            Run {
                run_id: run.run_id.clone(),
                tool: run.tool.clone(),
                input: run.input.clone(),
                status: RunStatus::Running,
                output: None,
                error_class: None,
                error_message: None,
                attempts: 0,
                created_at: run.now,
                updated_at: run.now,
                component: run.component.clone(),
                lock: run.lock.clone(),
            },
        );
        Ok(())
    }

    fn update_run(&mut self, run: &Run) -> Result<(), LedgerError> {
        let stored = self.runs.get_mut(&run.run_id).expect("updated run exists");
        stored.status = run.status;
        stored.output.clone_from(&run.output);
        stored.error_class.clone_from(&run.error_class);
        stored.error_message.clone_from(&run.error_message);
        stored.attempts = run.attempts;
        stored.updated_at = run.updated_at;
        Ok(())
    }

    fn touch_run(&mut self, run_id: &str, now: Millis) -> Result<(), LedgerError> {
        if let Some(run) = self.runs.get_mut(run_id) {
            run.updated_at = now;
        }
        Ok(())
    }

    fn attempt(&mut self, run_id: &str, attempt: u32) -> Result<Option<Attempt>, LedgerError> {
        Ok(self.attempts.get(&(run_id.to_owned(), attempt)).cloned())
    }

    fn latest_attempt(&mut self, run_id: &str) -> Result<Option<Attempt>, LedgerError> {
        Ok(self
            .attempts
            .values()
            .filter(|a| a.run_id == run_id)
            .max_by_key(|a| a.attempt)
            .cloned())
    }

    fn insert_attempt(&mut self, attempt: &Attempt) -> Result<(), LedgerError> {
        self.attempts
            .insert((attempt.run_id.clone(), attempt.attempt), attempt.clone());
        Ok(())
    }

    fn update_attempt(&mut self, attempt: &Attempt) -> Result<(), LedgerError> {
        self.insert_attempt(attempt)
    }

    fn effect(&mut self, kind: &str, key: &str) -> Result<Option<EffectRecord>, LedgerError> {
        Ok(self
            .effects
            .get(&(kind.to_owned(), key.to_owned()))
            .cloned())
    }

    fn insert_effect(&mut self, effect: &EffectRecord) -> Result<(), LedgerError> {
        self.effects
            .insert((effect.kind.clone(), effect.key.clone()), effect.clone());
        Ok(())
    }

    fn update_effect(&mut self, effect: &EffectRecord) -> Result<(), LedgerError> {
        self.insert_effect(effect)
    }

    fn replace_checkpoint(
        &mut self,
        run_id: &str,
        attempt: u32,
        name: &str,
        state: &[u8],
        now: Millis,
    ) -> Result<(), LedgerError> {
        self.checkpoints
            .retain(|c| !(c.run_id == run_id && c.name == name));
        let seq = i64::try_from(self.checkpoints.len()).unwrap_or(i64::MAX);
        self.checkpoints.push(Checkpoint {
            run_id: run_id.to_owned(),
            attempt,
            seq,
            name: name.to_owned(),
            state: state.to_vec(),
            created_at: now,
        });
        Ok(())
    }

    fn insert_journal(&mut self, entry: &NewJournalEntry) -> Result<bool, LedgerError> {
        if !self.runs.contains_key(&entry.run_id) {
            return Ok(false);
        }
        self.journal.push(JournalEntry {
            seq: i64::try_from(self.journal.len()).unwrap_or(i64::MAX) + 1,
            run_id: entry.run_id.clone(),
            attempt: entry.attempt,
            at: entry.at,
            level: entry.level.clone(),
            event: entry.event.clone(),
            message: entry.message.clone(),
            fields: entry.fields.clone(),
        });
        Ok(true)
    }

    fn escalation(&mut self, id: i64) -> Result<Option<Escalation>, LedgerError> {
        Ok(self.escalations.get(&id).cloned())
    }

    fn open_escalation(&mut self, run_id: &str) -> Result<Option<Escalation>, LedgerError> {
        Ok(self
            .escalations
            .values()
            .find(|e| e.run_id == run_id && e.status == EscalationStatus::Open)
            .cloned())
    }

    fn insert_escalation(&mut self, new: &NewEscalation) -> Result<i64, LedgerError> {
        let id = self
            .escalations
            .keys()
            .next_back()
            .map_or(1, |last| last + 1);
        self.escalations.insert(
            id,
            Escalation {
                id,
                run_id: new.run_id.clone(),
                reason: new.reason,
                summary: new.summary.clone(),
                effect_kind: new.effect_kind.clone(),
                effect_key: new.effect_key.clone(),
                payload_digest: new.payload_digest.clone(),
                evidence: new.evidence.clone(),
                status: EscalationStatus::Open,
                resolution: None,
                resolution_reason: None,
                resolved_by: None,
                created_at: new.now,
                resolved_at: None,
            },
        );
        Ok(id)
    }

    fn update_escalation(&mut self, escalation: &Escalation) -> Result<(), LedgerError> {
        self.escalations.insert(escalation.id, escalation.clone());
        Ok(())
    }

    fn lock(&mut self, key: &str) -> Result<Option<LockRecord>, LedgerError> {
        Ok(self.locks.get(key).cloned())
    }

    fn put_lock(&mut self, lock: &LockRecord) -> Result<(), LedgerError> {
        self.locks.insert(lock.key.clone(), lock.clone());
        Ok(())
    }

    fn breaker(
        &mut self,
        connector: &str,
        tool: &str,
    ) -> Result<Option<BreakerRecord>, LedgerError> {
        Ok(self
            .breakers
            .get(&(connector.to_owned(), tool.to_owned()))
            .cloned())
    }

    fn put_breaker(&mut self, breaker: &BreakerRecord) -> Result<(), LedgerError> {
        self.breakers.insert(
            (breaker.connector.clone(), breaker.tool.clone()),
            breaker.clone(),
        );
        Ok(())
    }

    fn call_key(&mut self, key: &str) -> Result<Option<CallKeyRecord>, LedgerError> {
        Ok(self.call_keys.get(key).cloned())
    }

    fn insert_call_key(&mut self, record: &CallKeyRecord) -> Result<(), LedgerError> {
        self.call_keys.insert(record.key.clone(), record.clone());
        Ok(())
    }

    fn node(&mut self, node_id: &str) -> Result<Option<NodeRecord>, LedgerError> {
        Ok(self.nodes.get(node_id).cloned())
    }

    fn put_node(&mut self, node: &NodeRecord) -> Result<(), LedgerError> {
        self.nodes.insert(node.node_id.clone(), node.clone());
        Ok(())
    }

    fn forget_nodes(&mut self, before: Millis) -> Result<(), LedgerError> {
        self.nodes.retain(|_, node| node.heartbeat_at >= before);
        Ok(())
    }
}
