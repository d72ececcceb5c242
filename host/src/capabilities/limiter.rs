//! The policy's memory, table and instance bounds, counted over a whole store.

use crate::policy::Policy;
use wasmtime::ResourceLimiter;

/// Enforces the policy's memory, table and instance bounds on a whole store (one call of a
/// tool), and remembers which one was hit so the failure is classified as resource exhaustion
/// rather than a generic trap.
///
/// Invariant: `memory_held` is at least the bytes of every linear memory plus the wasm-GC heap
/// in the store, `table_held` at least the elements of every table, and neither passes its
/// limit. wasmtime reports the creation (as growth from 0) and each growth of every one of
/// them to the store's limiter, the GC heap included: in wasmtime 48 the heap is a
/// `vm::Memory` allocated and grown with the store's limiter (`StoreOpaque::allocate_gc_store`
/// and `grow_gc_heap`). It does not say which one is growing, so the limiter sums the growths
/// it allows. Nothing in a store ever shrinks, so the sum only rises. A growth allowed here
/// that then fails elsewhere is not taken back: wasmtime also reports failures of growths the
/// limiter never saw, so subtracting could let a tool hold more than the count says, while
/// keeping it only makes a tool whose growth already failed hit the limit sooner.
pub struct Limiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    memory_held: usize,
    table_held: usize,
    pub(crate) exceeded: Option<String>,
}

impl Limiter {
    pub(super) fn new(policy: &Policy) -> Self {
        let l = &policy.limits;
        Self {
            memory_bytes: usize::try_from(l.memory_bytes).unwrap_or(usize::MAX),
            table_elements: usize::try_from(l.table_elements).unwrap_or(usize::MAX),
            instances: usize::try_from(l.instances).unwrap_or(usize::MAX),
            memory_held: 0,
            table_held: 0,
            exceeded: None,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past a memory's own declared maximum the engine refuses the growth anyway. That is
        // the tool's bound, not the policy's: neither counted nor reported as the limit.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let total = self
            .memory_held
            .saturating_add(desired.saturating_sub(current));
        if total > self.memory_bytes {
            self.exceeded = Some(format!(
                "memory limit of {} bytes (limits.memory_bytes, over all its memories and GC \
                 heap): asked for {total} bytes in all while holding {}",
                self.memory_bytes, self.memory_held
            ));
            return Ok(false);
        }
        self.memory_held = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // As for memories: past the table's own maximum (or the pool's) it fails anyway.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let total = self
            .table_held
            .saturating_add(desired.saturating_sub(current));
        if total > self.table_elements {
            self.exceeded = Some(format!(
                "table limit of {} elements (limits.table_elements, over all its tables): \
                 asked for {total} elements in all while holding {}",
                self.table_elements, self.table_held
            ));
            return Ok(false);
        }
        self.table_held = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }
    fn tables(&self) -> usize {
        self.instances
    }
    fn memories(&self) -> usize {
        self.instances
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_counts_memory_over_every_memory_and_names_the_limit() {
        let policy: Policy = toml::from_str("[limits]\nmemory_bytes = 1000\n").unwrap();
        let mut limiter = Limiter::new(&policy);
        assert!(limiter.memory_growing(0, 600, None).unwrap());
        // A second memory: alone it fits, with the first it does not.
        assert!(!limiter.memory_growing(0, 600, None).unwrap());
        let why = limiter.exceeded.clone().expect("the limit is named");
        assert!(why.contains("limits.memory_bytes"), "{why}");
        // Past a memory's own maximum is the tool's bound, not the policy's.
        limiter.exceeded = None;
        assert!(!limiter.memory_growing(0, 100, Some(50)).unwrap());
        assert!(limiter.exceeded.is_none());
    }
}
