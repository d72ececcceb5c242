//! Rust plugins: the members of the plugins cargo workspace, built by one `cargo build`.

use std::path::Path;
use std::process::Command;

use crate::{BuildError, TARGET};

fn manifest(path: &Path) -> Result<toml::Table, BuildError> {
    let text = std::fs::read_to_string(path).map_err(|e| BuildError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| BuildError::Manifest {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The member directories of `dir/Cargo.toml`, globs (`parent/*`) expanded; none when the
/// directory has no cargo workspace.
pub fn members(dir: &Path) -> Result<Vec<String>, BuildError> {
    let path = dir.join("Cargo.toml");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let value = manifest(&path)?;
    let members = value
        .get("workspace")
        .and_then(|workspace| workspace.get("members"))
        .and_then(toml::Value::as_array)
        .ok_or_else(|| BuildError::Manifest {
            path: path.clone(),
            reason: "no [workspace] members".into(),
        })?;
    let mut dirs = Vec::new();
    for member in members {
        let member = member.as_str().ok_or_else(|| BuildError::Manifest {
            path: path.clone(),
            reason: "members must be strings".into(),
        })?;
        match member.strip_suffix("/*") {
            Some(parent) => {
                let mut found: Vec<String> = crate::read_dir(&dir.join(parent))?
                    .into_iter()
                    .filter(|sub| sub.join("Cargo.toml").is_file())
                    .filter_map(|sub| {
                        let name = sub.file_name()?.to_str()?.to_owned();
                        Some(format!("{parent}/{name}"))
                    })
                    .collect();
                found.sort();
                dirs.extend(found);
            }
            None => dirs.push(member.to_owned()),
        }
    }
    Ok(dirs)
}

/// `[package] name` of the crate in `dir`.
pub fn package_name(dir: &Path) -> Result<String, BuildError> {
    let path = dir.join("Cargo.toml");
    manifest(&path)?
        .get("package")
        .and_then(|package| package.get("name"))
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| BuildError::Manifest {
            path,
            reason: "no [package] name".into(),
        })
}

/// One `cargo build` of the plugins workspace, isolated from any outer cargo's settings.
pub fn build(dir: &Path) -> Result<(), BuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .current_dir(dir);

    // When this runs inside a build script, what the outer cargo set must not leak into the
    // inner build: its flags (coverage, sanitizers) do not apply to wasm, its target dir would
    // move `plugins/target`, and a workspace wrapper (clippy-driver under `cargo clippy`)
    // would change the fingerprints and rebuild the plugins on every switch.
    for key in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_INCREMENTAL",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(key);
    }
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_TARGET_")
            || key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_PROFILE_")
        {
            command.env_remove(key);
        }
    }

    let output = command.output().map_err(|e| BuildError::Spawn {
        program: cargo.to_string_lossy().into_owned(),
        reason: e.to_string(),
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(BuildError::Failed {
        plugin: "(the Rust workspace)".into(),
        language: "rust",
        status: output.status.to_string(),
        output: String::from_utf8_lossy(&output.stderr).into_owned(),
        hint: format!(
            "run `rustup target add {TARGET}`, then `cargo build --release --target {TARGET} \
             --manifest-path {}` to see the error directly",
            dir.join("Cargo.toml").display()
        ),
    })
}
