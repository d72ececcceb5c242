//! Time, waiting and randomness as dependencies: everything whose behaviour depends on "now"
//! (leases, deadlines, ledger timestamps), on waiting (backoff, lock polls, lease renewal) or
//! on chance (jitter, run IDs) goes through [`Clock`], [`Sleeper`] and [`Random`], so tests
//! run in virtual time with reproducible choices.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> Millis;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Millis) -> Self {
        Self(Arc::new(AtomicI64::new(start)))
    }

    pub fn advance(&self, ms: Millis) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Waiting as a dependency: retry backoff sleeps through it, so tests can skip the wait and
/// advance a [`ManualClock`] instead.
pub trait Sleeper: Send + Sync + 'static {
    fn sleep(
        &self,
        duration: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Real waiting, on tokio's timer.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(
        &self,
        duration: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Chance as a dependency: retry and lock-poll jitter, and the random part of run IDs.
pub trait Random: Send + Sync + 'static {
    /// Uniform in [0, 1).
    fn unit(&self) -> f64;
    /// Ten random bytes, for the random part of a UUID v7.
    fn uuid_bytes(&self) -> [u8; 10];
}

/// The thread-local generator of `rand`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadRandom;

impl Random for ThreadRandom {
    fn unit(&self) -> f64 {
        rand::random::<f64>()
    }
    fn uuid_bytes(&self) -> [u8; 10] {
        rand::random()
    }
}

/// A generator that gives the same sequence for the same seed, for tests.
#[derive(Debug)]
pub struct SeededRandom(std::sync::Mutex<rand::rngs::StdRng>);

impl SeededRandom {
    pub fn new(seed: u64) -> Self {
        use rand::SeedableRng as _;
        Self(std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(
            seed,
        )))
    }

    fn with<T>(&self, f: impl FnOnce(&mut rand::rngs::StdRng) -> T) -> T {
        let mut rng = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut rng)
    }
}

impl Random for SeededRandom {
    fn unit(&self) -> f64 {
        self.with(rand::Rng::random::<f64>)
    }
    fn uuid_bytes(&self) -> [u8; 10] {
        self.with(rand::Rng::random)
    }
}

/// A UUID v7 for `now`, its random part from `random`: sortable by time, unique without
/// coordination.
pub fn uuid_v7(now: Millis, random: &dyn Random) -> uuid::Uuid {
    let ms = u64::try_from(now).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &random.uuid_bytes()).into_uuid()
}

/// Formats `ms` as RFC 3339 UTC with millisecond precision, for humans.
pub use tollgate_ledger::format_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(250);
        assert_eq!(clock.now_ms(), 1_250);
    }

    #[test]
    fn seeded_random_repeats_and_uuids_sort_by_time() {
        let (a, b) = (SeededRandom::new(7), SeededRandom::new(7));
        assert_eq!(a.unit().to_bits(), b.unit().to_bits());
        assert!((0.0..1.0).contains(&a.unit()));
        let early = uuid_v7(1_000, &a);
        let late = uuid_v7(2_000, &a);
        assert_eq!(early.get_version_num(), 7);
        assert!(early < late);
    }

    #[test]
    fn formats_utc_millis() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
    }
}
