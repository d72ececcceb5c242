//! `tollgate inspect`: what a tool is, what it imports, and the policy it would need.

use super::{ExitStatus, Global, LedgerUse, print_json};
use anyhow::Result;
use std::path::PathBuf;
use tollgate::text::{self, Escaped};

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The tool component (.wasm).
    plugin: PathBuf,
}

pub async fn inspect(global: &Global, args: InspectArgs) -> Result<ExitStatus> {
    let runtime = global.runtime(LedgerUse::Ignores)?;
    let tool = runtime.inspect(&args.plugin).await?;
    let policy = tool.policy_skeleton();
    let fits = tool
        .check_policy(&runtime.config().policy_for(&tool.descriptor.name))
        .err()
        .map(|e| e.to_string());
    if global.json() {
        print_json(&serde_json::json!({
            "path": tool.path,
            "digest": tool.digest,
            "descriptor": tool.descriptor,
            "imports": tool.imports,
            "exports": tool.exports,
            "cache": tool.cache,
            "policy_skeleton": policy,
            "refused_by_current_policy": fits,
        }))?;
        return Ok(ExitStatus::Success);
    }
    let d = &tool.descriptor;
    println!(
        "{} {}  {}",
        Escaped(&d.name),
        Escaped(&d.version),
        Escaped(&d.description)
    );
    println!("component  {}", Escaped(tool.path.display().to_string()));
    println!("sha256     {}", tool.digest);
    println!("exports    {}", Escaped(tool.exports.join(", ")));
    println!("imports");
    for import in &tool.imports {
        println!("  {}", Escaped(import));
    }
    println!(
        "effects    {}",
        Escaped(if d.effects.is_empty() {
            "(none)".to_owned()
        } else {
            d.effects.join(", ")
        })
    );
    if !d.capabilities.is_empty() {
        println!("asks for   {}", Escaped(d.capabilities.join(", ")));
    }
    println!("input schema\n{}", text::to_json_pretty(&d.input_schema)?);
    println!(
        "\npolicy it needs (add to tollgate.toml, with a [connectors.\"<kind>\"] per effect):\n{}",
        text::escape_keeping_newlines(&policy)
    );
    if let Some(refusal) = fits {
        println!(
            "the current policy refuses it: {}",
            text::escape_keeping_newlines(&refusal)
        );
    }
    Ok(ExitStatus::Success)
}
