//! `hostile-compute`: part of the hostile-tool suite. It abuses the resources every tool gets
//! without a grant (CPU, linear memory, the wasm stack, output, logs, stdout, the host's
//! resource table) and tries to see past its own instance (memory left behind by a previous
//! instance, the host's environment).
//!
//! The host must end each abuse as a classified failure of that attempt (deadline, memory
//! limit, stack overflow, output or log cap, resource limit) and never stall or crash itself;
//! a fresh instance must start from zeroed memory, and the environment must hold nothing the
//! operator did not put there.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;

use core::arch::wasm32::memory_grow;
use serde_json::{Value, json};
use tollgate_sdk::prelude::*;

/// Bytes in a wasm page.
const PAGE: usize = 64 * 1024;
/// Pages `residue-write` fills with [`RESIDUE_BYTE`].
const RESIDUE_WRITE_PAGES: usize = 64;
/// Pages `residue-read` scans: more than `residue-write` fills, so the scan covers that
/// region whatever the allocator did in between.
const RESIDUE_READ_PAGES: usize = 80;
const RESIDUE_BYTE: u8 = 0xA5;

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Attack {
    /// Spin forever; only the host's deadline (epoch interruption) stops it.
    InfiniteLoop,
    /// Grow linear memory 16 pages at a time until the host's limiter refuses, then panic
    /// with the number of pages obtained.
    MemoryGrow,
    /// Recurse until the engine's wasm stack is exhausted.
    DeepRecursion,
    /// Succeed with an output of about 8 MiB: `{"blob": "xxx…"}`.
    HugeOutput,
    /// Log 200 000 events of 1 KiB each, then succeed with `{"logged": 200000}`.
    LogFlood,
    /// Write 64 MiB to stdout in 64 KiB chunks, ignoring errors, then succeed with
    /// `{"written": n}`, the bytes stdout accepted.
    StdoutFlood,
    /// Create 10 000 000 host resources (stdout handles) and never drop them; succeed with
    /// `{"created": n}` if the host lets the loop finish.
    ResourceFlood,
    /// Grow memory by 64 pages and fill them with 0xA5: `{"base": address, "pages": 64}`.
    ResidueWrite,
    /// Grow memory by 80 pages and count the nonzero bytes in them:
    /// `{"base": address, "pages": 80, "nonzero_bytes": n}`.
    ResidueRead,
    /// Report the environment variables and arguments: `{"vars": {…}, "args": […]}`.
    Env,
    /// Not an attack: `iterations` rounds of integer mixing, `{"result": n}`. A CPU-bound
    /// workload for measuring what the deadline mechanism costs.
    BusyWork,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    attack: Attack,
    /// Rounds for `busy-work` (default 1 000 000).
    #[serde(default)]
    iterations: Option<u64>,
}

struct HostileCompute;

impl Tool for HostileCompute {
    const NAME: &'static str = "hostile-compute";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Hostile-tool suite: abuses CPU, memory, stack, output, logs, stdout and \
         host resources, and looks for memory residue and environment leaks.";
    type Input = Input;
    type Output = Value;

    fn run(_ctx: &Context, input: Input) -> Result<Value, Error> {
        match input.attack {
            Attack::InfiniteLoop => spin(),
            Attack::MemoryGrow => grow_until_refused(),
            Attack::DeepRecursion => {
                black_box(recurse(black_box(0)));
                Err(Error::fatal("recursion returned"))
            }
            Attack::HugeOutput => Ok(json!({"blob": "x".repeat(8 * 1024 * 1024)})),
            Attack::LogFlood => Ok(log_flood()),
            Attack::StdoutFlood => Ok(stdout_flood()),
            Attack::ResourceFlood => Ok(resource_flood()),
            Attack::ResidueWrite => residue_write(),
            Attack::ResidueRead => residue_read(),
            Attack::Env => Ok(environment()),
            Attack::BusyWork => {
                Ok(json!({"result": busy_work(input.iterations.unwrap_or(1_000_000))}))
            }
        }
    }
}

fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// A loop with a data dependency each round, so it runs every iteration (and crosses
/// the loop back-edges where deadline checks live).
fn busy_work(iterations: u64) -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..iterations {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(black_box(i));
    }
    x
}

fn grow_until_refused() -> ! {
    // Room for the panic message: once the limiter refuses, the allocator cannot grow either.
    let reserve: Vec<u8> = Vec::with_capacity(64 * 1024);
    black_box(&reserve);
    let mut pages = 0usize;
    while memory_grow::<0>(16) != usize::MAX {
        pages += 16;
    }
    drop(reserve);
    panic!("hostile-compute: memory.grow refused after {pages} more pages");
}

/// Recurses through an opaque function pointer: the call can be neither inlined nor turned
/// into a loop, so it is the host's stack limit that runs out, as a `StackOverflow` trap.
fn recurse(depth: u64) -> u64 {
    let next: fn(u64) -> u64 = black_box(recurse);
    next(black_box(depth + 1)).wrapping_add(depth)
}

fn log_flood() -> Value {
    const EVENTS: u32 = 200_000;
    let message = "x".repeat(1024);
    for _ in 0..EVENTS {
        log::info(&message);
    }
    json!({"logged": EVENTS})
}

fn stdout_flood() -> Value {
    const TOTAL: usize = 64 * 1024 * 1024;
    let chunk = vec![b'x'; 64 * 1024];
    let mut stdout = Counting {
        inner: std::io::stdout().lock(),
        accepted: 0,
    };
    for _ in 0..TOTAL / chunk.len() {
        // Errors are the host pushing back; keep pushing and count what it took.
        let _ = stdout.write_all(&chunk);
    }
    let _ = stdout.flush();
    json!({"written": stdout.accepted})
}

/// A writer that counts the bytes its inner writer accepted, including the part of a
/// `write_all` that was taken before it failed.
struct Counting<W> {
    inner: W,
    accepted: usize,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.accepted += written;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn resource_flood() -> Value {
    const HANDLES: u32 = 10_000_000;
    let mut created = 0u32;
    for _ in 0..HANDLES {
        // Each call adds an `output-stream` to the host's resource table; forgetting it means
        // the handle is never dropped, so the table only grows.
        std::mem::forget(wasi::cli::stdout::get_stdout());
        created += 1;
    }
    json!({"created": created})
}

/// Grows linear memory by `pages` outside the allocator; the new region's byte address.
fn grow_raw(pages: usize) -> Result<usize, Error> {
    let previous = memory_grow::<0>(pages);
    if previous == usize::MAX {
        return Err(
            Error::fatal(format!("memory.grow of {pages} pages refused"))
                .with_details(json!({"pages": pages})),
        );
    }
    Ok(previous * PAGE)
}

fn residue_write() -> Result<Value, Error> {
    let base = grow_raw(RESIDUE_WRITE_PAGES)?;
    let region = core::ptr::with_exposed_provenance_mut::<u8>(base);
    for offset in 0..RESIDUE_WRITE_PAGES * PAGE {
        // SAFETY: `memory.grow` just added these pages to linear memory; nothing else (the
        // allocator included) knows about them, so this is the only reference to them.
        // Volatile so that the writes, whose result nobody reads, are not optimised away.
        unsafe { region.add(offset).write_volatile(RESIDUE_BYTE) };
    }
    Ok(json!({"base": base, "pages": RESIDUE_WRITE_PAGES}))
}

fn residue_read() -> Result<Value, Error> {
    let base = grow_raw(RESIDUE_READ_PAGES)?;
    let region = core::ptr::with_exposed_provenance::<u8>(base);
    let mut nonzero_bytes = 0usize;
    for offset in 0..RESIDUE_READ_PAGES * PAGE {
        // SAFETY: `memory.grow` just added these pages to linear memory and nothing else
        // refers to them. Volatile so that each byte is really read from memory, never
        // assumed to be the zero a fresh `memory.grow` promises.
        if unsafe { region.add(offset).read_volatile() } != 0 {
            nonzero_bytes += 1;
        }
    }
    Ok(json!({"base": base, "pages": RESIDUE_READ_PAGES, "nonzero_bytes": nonzero_bytes}))
}

fn environment() -> Value {
    let vars: BTreeMap<String, String> = std::env::vars().collect();
    let args: Vec<String> = std::env::args().collect();
    json!({"vars": vars, "args": args})
}

tollgate_sdk::export_tool!(HostileCompute);
