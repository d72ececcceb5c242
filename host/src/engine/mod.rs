//! The wasmtime engine: one per process, shared by every tool and run.
//!
//! It owns the instance pool (so instantiation is a slot reuse, not an mmap), copy-on-write
//! memory images, the epoch ticker that enforces deadlines, and the cache of precompiled
//! components.

mod cache;
pub mod loaded;

pub use cache::{ArtifactCache, CacheError, CacheOutcome, Exposure};

use crate::policy::MAX_MEMORY_BYTES;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. A guest in a busy loop notices a passed deadline within
/// about one tick, and yields to the executor once per tick so runs share threads fairly.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Sizing of the instance pool.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Component instances that may be live at once (concurrent runs).
    pub max_instances: u32,
    /// Use the pooling allocator. Off only for comparisons.
    pub pooling: bool,
    /// Epoch interruption, which enforces `limits.timeout_ms` and `limits.cpu_ms` on a guest
    /// that computes. Off only for measuring what it costs: a spinning tool then runs
    /// until it returns.
    pub deadlines: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_instances: 256,
            pooling: true,
            deadlines: true,
        }
    }
}

/// The engine plus its epoch ticker. Dropping the last handle stops the ticker.
#[derive(Clone)]
pub struct EngineHandle {
    engine: Engine,
    _ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle").finish_non_exhaustive()
    }
}

impl EngineHandle {
    pub fn new(options: &EngineOptions) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(options.deadlines);
        config.memory_init_cow(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        if options.pooling {
            let mut pool = PoolingAllocationConfig::default();
            let n = options.max_instances.max(1);
            pool.total_component_instances(n);
            // A Rust tool is a few core instances (the tool plus adapter shims).
            pool.max_core_instances_per_component(32);
            pool.total_core_instances(n.saturating_mul(8));
            // These bound how many pool slots one tool can hold; how many bytes and elements
            // it holds across all of them is `limits.memory_bytes` / `limits.table_elements`,
            // enforced as totals by the store's limiter (`capabilities::Limiter`).
            pool.max_memories_per_component(4);
            pool.total_memories(n.saturating_mul(2));
            pool.max_tables_per_component(8);
            pool.total_tables(n.saturating_mul(4));
            // A store whose tool uses wasm GC gets one GC heap, which also takes a slot of the
            // memory pool (so `max_memory_size` caps it too) and counts in the same total as
            // the tool's linear memories.
            pool.total_gc_heaps(n);
            pool.total_stacks(n);
            // The slot size, hence the most any one memory or GC heap can reach; a policy's
            // `memory_bytes` cannot exceed it, so a growth the limiter allows always fits.
            pool.max_memory_size(usize::try_from(MAX_MEMORY_BYTES).unwrap_or(usize::MAX));
            pool.table_elements(100_000);
            // Reset a slot by zeroing only the pages the last run dirtied (found with the
            // PAGEMAP_SCAN ioctl where the kernel has it, Linux ≥ 6.7), keeping them resident:
            // no madvise and no page-fault storm on the next run. Without the ioctl, the
            // first 64 KiB are memset and the rest madvised.
            let pagemap = PoolingAllocationConfig::is_pagemap_scan_available();
            pool.pagemap_scan(wasmtime::Enabled::Auto);
            pool.linear_memory_keep_resident(if pagemap { 4 << 20 } else { 64 << 10 });
            pool.table_keep_resident(16 << 10);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            _ticker: Arc::new(ticker),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`].
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tollgate-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
