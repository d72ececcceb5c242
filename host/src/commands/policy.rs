//! `tollgate policy check`: validate an operator config, naming the line of each problem.

use super::ExitStatus;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum PolicyCommand {
    /// Check a config file: every problem with its line; exit 0 when it is valid.
    Check {
        /// The config file (tollgate.toml).
        file: PathBuf,
    },
}

pub fn policy(command: PolicyCommand) -> Result<ExitStatus> {
    let PolicyCommand::Check { file } = command;
    let config = tollgate::Config::load(&file)?;
    let tools: Vec<&str> = config.tools.keys().map(String::as_str).collect();
    println!(
        "{}: valid ({} connector(s); policies for: {})",
        file.display(),
        config.connectors.len(),
        if tools.is_empty() {
            "no tool".to_owned()
        } else {
            tools.join(", ")
        }
    );
    Ok(ExitStatus::Success)
}
