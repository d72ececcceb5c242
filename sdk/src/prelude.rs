//! Everything a tool author usually needs: `use tollgate_sdk::prelude::*;`.

pub use crate::{Context, Error, ErrorClass, Tool, checkpoint, effects, export_tool, log};
pub use schemars::JsonSchema;
pub use serde::{Deserialize, Serialize};
