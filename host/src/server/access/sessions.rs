//! Which agent opened each MCP session (2025 protocol versions), so that the access guard
//! lets only that agent use it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Sessions (2025 protocol versions) are bound to the agent that opened them, so another
/// agent's token cannot read its streams, resume them or close them. Each agent's newest
/// [`MAX_SESSIONS_PER_AGENT`] are remembered (an older one must be opened again), so no agent
/// can push another's sessions out.
#[derive(Debug, Default)]
pub(super) struct Sessions(Mutex<SessionOwners>);

#[derive(Debug, Default)]
struct SessionOwners {
    owner: HashMap<String, String>,
    /// Each agent's sessions, oldest first (closed ones linger until pushed out).
    opened: HashMap<String, VecDeque<String>>,
}

const MAX_SESSIONS_PER_AGENT: usize = 1_000;

impl Sessions {
    fn owners(&self) -> MutexGuard<'_, SessionOwners> {
        // The map holds no invariant a panic could break halfway.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn bind(&self, session: &str, agent: &str) {
        let mut owners = self.owners();
        let owners = &mut *owners;
        if owners
            .owner
            .insert(session.to_owned(), agent.to_owned())
            .is_some()
        {
            return;
        }
        let opened = owners.opened.entry(agent.to_owned()).or_default();
        opened.push_back(session.to_owned());
        while opened.len() > MAX_SESSIONS_PER_AGENT {
            if let Some(oldest) = opened.pop_front() {
                owners.owner.remove(&oldest);
            }
        }
    }

    pub(super) fn owned_by(&self, session: &str, agent: &str) -> bool {
        self.owners().owner.get(session).is_some_and(|a| a == agent)
    }

    pub(super) fn forget(&self, session: &str) {
        self.owners().owner.remove(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_belongs_to_the_agent_that_opened_it() {
        let sessions = Sessions::default();
        sessions.bind("s1", "a");
        assert!(sessions.owned_by("s1", "a"));
        assert!(!sessions.owned_by("s1", "b"));
        assert!(
            !sessions.owned_by("s2", "a"),
            "an unknown session is no one's"
        );
        sessions.forget("s1");
        assert!(!sessions.owned_by("s1", "a"));
        sessions.bind("b1", "b");
        for i in 0..=MAX_SESSIONS_PER_AGENT {
            sessions.bind(&format!("n{i}"), "a");
        }
        assert!(!sessions.owned_by("n0", "a"), "a's oldest is forgotten");
        assert!(sessions.owned_by(&format!("n{MAX_SESSIONS_PER_AGENT}"), "a"));
        assert!(
            sessions.owned_by("b1", "b"),
            "a cannot push b's sessions out"
        );
    }
}
