//! A run's milestones (its attempts, retries, lock waits, effect intents and escalations) as
//! this process journals them, for whoever here follows the run: the MCP server forwards
//! them to its caller as progress notifications as they happen, without reading the ledger
//! back. That also covers a run recorded `async`, whose entries reach the ledger only after
//! its caller has the answer.
//!
//! Process-wide, because entries are built in many places that share no handle, and every
//! one passes [`crate::journal::entry_at_level`]: while nobody follows a run, an entry costs
//! one atomic load here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;

use crate::journal::EventName;

/// The events a follower hears of.
pub const MILESTONES: &[EventName] = &[
    EventName::AttemptStarted,
    EventName::AttemptFailed,
    EventName::RetryScheduled,
    EventName::LockWaiting,
    EventName::LockAcquired,
    EventName::EffectIntent,
    EventName::EffectRedispatch,
    EventName::EscalationOpened,
];

/// Milestones that wait for a slow follower before later ones are dropped: progress is best
/// effort, and a tool must not grow the host's memory through it.
const BACKLOG: usize = 64;

/// One milestone of a followed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Milestone {
    pub event: EventName,
    pub message: String,
}

type Followers = HashMap<String, mpsc::Sender<Milestone>>;

static FOLLOWERS: LazyLock<Mutex<Followers>> = LazyLock::new(Mutex::default);
/// How many runs are followed: the fast path for every entry when none is.
static FOLLOWED: AtomicUsize = AtomicUsize::new(0);

fn followers() -> MutexGuard<'static, Followers> {
    // A follower's map holds no invariant a panic could break halfway.
    FOLLOWERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Follows `run_id` from now until the returned handle is dropped. A run has one follower:
/// a later one takes over, and the earlier hears nothing more.
pub fn follow(run_id: &str) -> Following {
    let (sender, receiver) = mpsc::channel(BACKLOG);
    if followers()
        .insert(run_id.to_owned(), sender.clone())
        .is_none()
    {
        FOLLOWED.fetch_add(1, Ordering::SeqCst);
    }
    Following {
        run_id: run_id.to_owned(),
        sender,
        receiver,
    }
}

/// Hands a journaled entry to its run's follower, if it has one and the entry is a
/// milestone. Never waits: a follower whose backlog is full misses it.
pub(crate) fn note(run_id: &str, event: EventName, message: &str) {
    if FOLLOWED.load(Ordering::Relaxed) == 0 || !MILESTONES.contains(&event) {
        return;
    }
    if let Some(follower) = followers().get(run_id) {
        _ = follower.try_send(Milestone {
            event,
            message: message.to_owned(),
        });
    }
}

/// A run followed; see [`follow`].
#[derive(Debug)]
pub struct Following {
    run_id: String,
    /// Ours in the map, to tell whether a later follower took over.
    sender: mpsc::Sender<Milestone>,
    receiver: mpsc::Receiver<Milestone>,
}

impl Following {
    /// The next milestone, once there is one.
    pub async fn next(&mut self) -> Option<Milestone> {
        self.receiver.recv().await
    }

    /// A milestone already noted, if any.
    pub fn try_next(&mut self) -> Option<Milestone> {
        self.receiver.try_recv().ok()
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut followers = followers();
        if followers
            .get(&self.run_id)
            .is_some_and(|sender| sender.same_channel(&self.sender))
        {
            followers.remove(&self.run_id);
            FOLLOWED.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_hears_its_runs_milestones_and_nothing_else() {
        let mut following = follow("run-m1");
        note("run-m1", EventName::AttemptStarted, "attempt 1 started");
        note("run-m1", EventName::Log, "not a milestone");
        note("run-other", EventName::AttemptStarted, "another run");
        assert_eq!(
            following.try_next(),
            Some(Milestone {
                event: EventName::AttemptStarted,
                message: "attempt 1 started".into()
            })
        );
        assert_eq!(following.try_next(), None);
    }

    #[test]
    fn a_slow_follower_misses_milestones_past_its_backlog_and_the_host_never_waits() {
        let mut following = follow("run-m2");
        for i in 0..BACKLOG * 4 {
            note("run-m2", EventName::EffectIntent, &format!("intent {i}"));
        }
        let heard = std::iter::from_fn(|| following.try_next()).count();
        assert_eq!(heard, BACKLOG);
    }

    #[test]
    fn a_later_follower_takes_over_and_the_earlier_ones_drop_leaves_it_in_place() {
        let mut first = follow("run-m3");
        let mut second = follow("run-m3");
        drop(std::mem::replace(&mut first, follow("run-m3-unrelated")));
        note("run-m3", EventName::RetryScheduled, "retry");
        assert!(
            second.try_next().is_some(),
            "the later follower still hears"
        );
        assert_eq!(first.try_next(), None);
        drop(second);
        assert!(!followers().contains_key("run-m3"));
    }
}
