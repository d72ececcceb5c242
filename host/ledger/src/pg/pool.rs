//! A fixed set of connection threads: each owns one PostgreSQL connection and runs the jobs
//! callers hand it, one at a time.
//!
//! Why threads and not the caller's: the `postgres` client blocks on a Tokio runtime of its
//! own, which panics on a thread that is already driving Tokio tasks. Running every call on
//! these threads makes the ledger callable from anywhere (async tasks, `spawn_blocking`,
//! plain threads) and bounds the connections a process opens. A lost connection is
//! reconnected by the next job on that thread.

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use postgres::{Client, Config, NoTls};

use super::error::unavailable;
use crate::error::LedgerError;

/// One connection thread's connection, made on first use and remade after a loss.
pub(super) struct Conn {
    config: Config,
    location: Arc<str>,
    client: Option<Client>,
}

impl Conn {
    pub(super) fn new(config: Config, location: Arc<str>) -> Self {
        Self {
            config,
            location,
            client: None,
        }
    }

    /// The live connection, connecting first if there is none.
    pub(super) fn client(&mut self) -> Result<&mut Client, LedgerError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.reset();
        }
        match &mut self.client {
            Some(client) => Ok(client),
            slot @ None => {
                let client = self
                    .config
                    .connect(NoTls)
                    .map_err(|err| unavailable(&self.location, err))?;
                Ok(slot.insert(client))
            }
        }
    }

    /// Drops the connection, so the next call makes a fresh one.
    pub(super) fn reset(&mut self) {
        self.client = None;
        super::rows::forget_prepared();
    }

    pub(super) fn location(&self) -> &str {
        &self.location
    }
}

pub(super) type Job = Box<dyn FnOnce(&mut Conn) + Send>;

pub(super) struct Pool {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    pub(super) fn start(
        size: usize,
        config: &Config,
        location: &Arc<str>,
    ) -> Result<Self, LedgerError> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut threads = Vec::with_capacity(size);
        for i in 0..size.max(1) {
            let receiver = Arc::clone(&receiver);
            let conn = Conn::new(config.clone(), Arc::clone(location));
            let thread = std::thread::Builder::new()
                .name(format!("tollgate-pg-{i}"))
                .spawn(move || work(&receiver, conn))
                .map_err(|err| {
                    LedgerError::Internal(format!("cannot start a ledger connection thread: {err}"))
                })?;
            threads.push(thread);
        }
        Ok(Self {
            jobs: Some(jobs),
            threads,
        })
    }

    /// Runs `job` on a connection thread and waits for its answer.
    pub(super) fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Conn) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let (reply, answer): (SyncSender<Result<T, LedgerError>>, _) = mpsc::sync_channel(1);
        self.send(move |conn| {
            // The caller may have gone; its answer then has nowhere to go.
            let _ = reply.send(job(conn));
        })?;
        answer.recv().map_err(|_| LedgerError::WriterGone)?
    }

    /// A handle that queues jobs on this pool's threads. The pool's threads stop only once
    /// every handle is dropped, so a holder must drop it before the pool is.
    pub(super) fn handle(&self) -> Option<Sender<Job>> {
        self.jobs.clone()
    }

    /// Queues `job` without waiting for it.
    pub(super) fn send(
        &self,
        job: impl FnOnce(&mut Conn) + Send + 'static,
    ) -> Result<(), LedgerError> {
        self.jobs
            .as_ref()
            .ok_or(LedgerError::WriterGone)?
            .send(Box::new(job))
            .map_err(|_| LedgerError::WriterGone)
    }
}

fn work(receiver: &Mutex<Receiver<Job>>, mut conn: Conn) {
    loop {
        // The lock is held only to take a job, never while running one.
        let job = match receiver.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(&mut conn),
            Err(_) => return, // every sender is gone: the ledger was dropped
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the channel lets every thread finish its queued jobs and stop.
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
