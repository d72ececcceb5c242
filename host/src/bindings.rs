//! The guest boundary: host bindings generated from the WIT world in `wit/`, and nothing else.
//!
//! Every import is async (effects and checkpoints wait on the ledger and connectors without
//! blocking the executor) and trappable (a host-side failure such as an in-doubt effect ends
//! the attempt; a tool cannot catch it and carry on).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "tollgate:tool/tool@0.1.0",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::tollgate::tool::{checkpoints, effects, log, types};
