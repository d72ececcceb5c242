//! `tollgate build-plugins`: every plugin in a directory, in every language, into components.

use super::ExitStatus;
use anyhow::{Result, bail};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct BuildArgs {
    /// The plugins directory: a cargo workspace of Rust plugins, plus Python (`app.py`)
    /// and JavaScript (`index.js`) plugin directories.
    #[arg(long, default_value = "plugins")]
    dir: PathBuf,
}

pub fn build_plugins(args: BuildArgs) -> Result<ExitStatus> {
    let workspace = tollgate_plugin_build::Workspace::new(&args.dir);
    let built = workspace.build_all(|source| {
        eprintln!(
            "building {} ({}, {})",
            source.name,
            source.language.as_str(),
            source.dir.display()
        );
    })?;
    if built.is_empty() {
        bail!(
            "{} holds no plugin (a Cargo.toml workspace, or directories with app.py or index.js): \
             pass --dir <plugins directory>",
            args.dir.display()
        );
    }
    for plugin in built {
        println!(
            "{:<11} {:<20} {}",
            plugin.language.as_str(),
            plugin.name,
            plugin.wasm.display()
        );
    }
    Ok(ExitStatus::Success)
}
