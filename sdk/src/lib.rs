//! Write Tollgate tools in Rust.
//!
//! A tool is a type implementing [`Tool`]: typed JSON input (its JSON Schema is derived with
//! `schemars` and reported by `describe`), typed JSON output, and a classified [`Error`].
//! [`export_tool!`] turns it into a component of the `tollgate:tool` world. The modules
//! [`effects`], [`checkpoint`] and [`log`] wrap the host imports with serde types.
//!
//! ```ignore
//! use tollgate_sdk::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct In { name: String }
//!
//! #[derive(Serialize)]
//! struct Out { greeting: String }
//!
//! struct Hello;
//!
//! impl Tool for Hello {
//!     const NAME: &'static str = "hello";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     const DESCRIPTION: &'static str = "Greets someone.";
//!     type Input = In;
//!     type Output = Out;
//!
//!     fn run(_ctx: &Context, input: In) -> Result<Out, Error> {
//!         Ok(Out { greeting: format!("hello, {}", input.name) })
//!     }
//! }
//!
//! tollgate_sdk::export_tool!(Hello);
//! ```

// `allow`, not `expect`: the glue is unsafe by nature, but rustc does not currently report
// `unsafe_code` inside proc-macro output, so an expectation would go unfulfilled.
#[doc(hidden)]
#[allow(
    unsafe_code,
    reason = "wit-bindgen's canonical-ABI glue is unsafe by nature; the rest of the crate is safe"
)]
#[expect(
    clippy::too_many_arguments,
    reason = "the generated `run` export takes the flattened canonical-ABI arguments"
)]
pub mod bindings;

pub mod checkpoint;
mod context;
pub mod effects;
mod error;
pub mod log;
pub mod prelude;
mod tool;

pub use context::Context;
pub use error::{Error, ErrorClass};
pub use tool::Tool;

// Re-exported so that authors name one version of each; derive macros still need `serde` and
// `schemars` in the author's own Cargo.toml.
pub use schemars;
pub use serde;
pub use serde_json;

/// Glue called by [`export_tool!`]'s expansion; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::tool::{describe, run};
}

/// Export a [`Tool`] as the component's `describe` and `run`.
///
/// Invoke it once per plugin crate, at module level: `tollgate_sdk::export_tool!(MyTool);`.
#[macro_export]
macro_rules! export_tool {
    ($tool:ty) => {
        const _: () = {
            struct TollgateExport;

            impl $crate::bindings::Guest for TollgateExport {
                fn describe() -> $crate::bindings::Descriptor {
                    $crate::__private::describe::<$tool>()
                }

                fn run(
                    ctx: $crate::bindings::RunContext,
                    input: ::std::string::String,
                ) -> ::core::result::Result<::std::string::String, $crate::bindings::ToolError>
                {
                    $crate::__private::run::<$tool>(ctx, input)
                }
            }

    $crate::bindings::__export_tool_world!(TollgateExport with_types_in $crate::bindings);
        };
    };
}
