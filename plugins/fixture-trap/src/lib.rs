//! `fixture-trap`: a test fixture that fails inside the guest in the way its input asks, to
//! prove that a misbehaving tool ends its attempt and never the host.

use std::hint::black_box;

use tollgate_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// `panic!`: a trap after the panic message is written to stderr.
    Panic,
    /// The wasm `unreachable` instruction.
    Unreachable,
    /// Spin forever; only the host's deadline (epoch interruption) stops it.
    Loop,
    /// Recurse until the engine's wasm stack is exhausted.
    Recursion,
    /// Allocate 1 MiB chunks, kept alive, until allocation fails.
    Oom,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    mode: Mode,
}

struct FixtureTrap;

impl Tool for FixtureTrap {
    const NAME: &'static str = "fixture-trap";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Test fixture: traps by panic, unreachable, endless loop, stack overflow or OOM.";
    type Input = Input;
    type Output = ();

    fn run(_ctx: &Context, input: Input) -> Result<(), Error> {
        match input.mode {
            Mode::Panic => panic!("fixture-trap: panic requested"),
            Mode::Unreachable => core::arch::wasm32::unreachable(),
            Mode::Loop => spin(),
            Mode::Recursion => {
                black_box(recurse(black_box(0)));
                Err(Error::fatal("recursion returned"))
            }
            Mode::Oom => exhaust_memory(),
        }
    }
}

fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Recurses through an opaque function pointer: the call can be neither inlined nor turned
/// into a loop, and each frame lives on the engine's wasm stack (a few words of shadow stack
/// each), so it is the host's stack limit that runs out, as a `StackOverflow` trap.
fn recurse(depth: u64) -> u64 {
    let next: fn(u64) -> u64 = black_box(recurse);
    next(black_box(depth + 1)).wrapping_add(depth)
}

fn exhaust_memory() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch the chunk so the pages are really committed.
        chunks.push(vec![1u8; 1 << 20]);
        black_box(&mut chunks);
    }
}

tollgate_sdk::export_tool!(FixtureTrap);
