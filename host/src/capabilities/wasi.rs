//! The WASI subset every tool gets: clocks, random, stdio captured into the run's journal
//! (bounded), an environment and a filesystem holding only what the policy grants (nothing by
//! default, so a Rust tool's standard library links but reaches no file and no variable).
//! Sockets are linked but always refused ([`super::sockets`]); HTTP lives in [`super::http`].

use super::ToolState;
use crate::policy::{FsMode, Policy};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::random::{WasiRandom, WasiRandomView as _};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// WASI interfaces (version track 0.2) the linker provides.
pub const PROVIDED: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// The tool's stdout and stderr, kept in memory up to the policy's log bound.
#[derive(Clone)]
pub struct CapturedStdio {
    pub stdout: MemoryOutputPipe,
    pub stderr: MemoryOutputPipe,
}

/// A granted directory that could not be opened when the run started.
#[derive(Debug, thiserror::Error)]
#[error(
    "fs grant {host} (guest {guest}) cannot be opened: {reason}; fix the directory or the grant in the tool's policy"
)]
pub struct GrantError {
    pub host: String,
    pub guest: String,
    pub reason: String,
}

/// A deny-by-default WASI context plus the policy's grants: named environment variables
/// (the host's values), preopened directories (cap-std beneath: no `..`, absolute path or
/// symlink leads outside them; read-only grants cannot be written, renamed or linked from),
/// no args, no sockets.
pub fn context(policy: &Policy) -> Result<(WasiCtx, CapturedStdio), GrantError> {
    let cap = usize::try_from(policy.limits.max_log_bytes).unwrap_or(usize::MAX);
    let stdio = CapturedStdio {
        stdout: MemoryOutputPipe::new(cap),
        stderr: MemoryOutputPipe::new(cap),
    };
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(stdio.stdout.clone())
        .stderr(stdio.stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for name in &policy.env {
        if let Ok(value) = std::env::var(name) {
            builder.env(name, value);
        }
    }
    for grant in &policy.fs {
        let perms = match grant.mode {
            FsMode::Ro => FsPerms::ReadOnly,
            FsMode::Rw => FsPerms::ReadWrite,
        };
        builder
            .preopened_dir(&grant.host, &grant.guest, perms)
            .map_err(|e| GrantError {
                host: grant.host.display().to_string(),
                guest: grant.guest.clone(),
                reason: format!("{e:#}"),
            })?;
    }
    Ok((builder.build(), stdio))
}

impl WasiView for ToolState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_io::IoView for ToolState {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

pub fn add_to_linker(l: &mut Linker<ToolState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::{cli, clocks, random};
    type T = ToolState;
    wasmtime_wasi_io::add_to_linker_async(l)?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(l, T::random)?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, T::random)?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, T::random)?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    super::fs::add_to_linker(l)
}

#[cfg(test)]
mod tests {
    use super::super::testing::Harness;
    use super::*;
    use wasmtime_wasi::filesystem::WasiFilesystemView as _;
    use wasmtime_wasi::p2::bindings::cli::environment::Host as _;
    use wasmtime_wasi::p2::bindings::filesystem::preopens::Host as _;

    #[test]
    fn nothing_is_granted_by_default() {
        let mut state = Harness::unrecorded("");
        assert!(state.cli().get_environment().unwrap().is_empty());
        assert!(state.cli().get_arguments().unwrap().is_empty());
        assert!(state.filesystem().get_directories().unwrap().is_empty());
    }

    #[test]
    fn only_granted_environment_variables_reach_the_tool() {
        // PATH and HOME are set for any test process; only the granted one is passed.
        let mut state = Harness::unrecorded("env = [\"PATH\"]\n");
        let env = state.cli().get_environment().unwrap();
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH"]);
        assert_eq!(env[0].1, std::env::var("PATH").unwrap());
    }

    #[test]
    fn a_granted_directory_is_preopened_at_its_guest_path() {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "[[fs]]\nhost = {:?}\nguest = \"/data\"\nmode = \"ro\"\n",
            dir.path().display().to_string()
        );
        let mut state = Harness::unrecorded(&toml);
        let dirs = state.filesystem().get_directories().unwrap();
        let guests: Vec<&str> = dirs.iter().map(|(_, g)| g.as_str()).collect();
        assert_eq!(guests, ["/data"]);
    }

    #[test]
    fn a_grant_of_a_missing_directory_names_it_and_the_fix() {
        let policy: Policy =
            toml::from_str("[[fs]]\nhost = \"/nonexistent/tollgate-test\"\nguest = \"/data\"\n")
                .unwrap();
        let Err(err) = context(&policy) else {
            panic!("a missing directory cannot be granted");
        };
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/tollgate-test") && text.contains("/data"),
            "{text}"
        );
        assert!(text.contains("fix the directory or the grant"), "{text}");
    }
}
