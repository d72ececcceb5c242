//! Python and JavaScript plugins: the interpreter and the tool's source pre-initialised into a
//! component by `componentize-py` or `componentize-js`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{BuildError, Language, Source, Workspace};

/// WASI features a JavaScript tool is built without: it has no HTTP of its own (effects and
/// `wasi:http` grants are the host's) and is not an HTTP handler.
const JS_DISABLED: &[&str] = &["http", "fetch-event"];

/// A componentize tool, found where `plugins/setup.sh` installs it.
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub program: PathBuf,
}

impl Toolchain {
    /// The tool for `language`: `$env` if set, else the one `plugins/setup.sh` installed
    /// in the plugins directory, else the first on `PATH`.
    pub fn find(ws: &Workspace, source: &Source) -> Result<Self, BuildError> {
        let (_, env, _) = Self::names(ws, source);
        let path = std::env::var_os("PATH").unwrap_or_default();
        Self::find_in(ws, source, std::env::var_os(env), &path)
    }

    /// The tool's name, its override variable and where `plugins/setup.sh` installs it.
    fn names(ws: &Workspace, source: &Source) -> (&'static str, &'static str, PathBuf) {
        match source.language {
            Language::Python => (
                "componentize-py",
                "TOLLGATE_COMPONENTIZE_PY",
                ws.dir.join(".venv/bin/componentize-py"),
            ),
            Language::JavaScript => (
                "componentize-js",
                "TOLLGATE_COMPONENTIZE_JS",
                ws.dir.join("node_modules/.bin/componentize-js"),
            ),
            Language::Rust => unreachable!("Rust plugins are built by cargo"),
        }
    }

    /// [`Self::find`] with the override and `PATH` given.
    pub(crate) fn find_in(
        ws: &Workspace,
        source: &Source,
        overridden: Option<std::ffi::OsString>,
        path: impl AsRef<std::ffi::OsStr>,
    ) -> Result<Self, BuildError> {
        let (tool, env, installed) = Self::names(ws, source);
        let found = overridden
            .map(PathBuf::from)
            .or_else(|| installed.is_file().then_some(installed))
            .or_else(|| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(tool))
                    .find(|candidate| candidate.is_file())
            });
        match found {
            Some(program) => Ok(Self { program }),
            None => Err(BuildError::ToolchainMissing {
                plugin: source.name.clone(),
                language: source.language.as_str(),
                tool,
                env,
            }),
        }
    }
}

/// The command line, for a hint a person can paste.
fn shown(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Copies the files under `from` to `to`, leaving out caches.
fn copy_tree(from: &Path, to: &Path) -> Result<(), BuildError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| BuildError::Io {
            path,
            reason: e.to_string(),
        }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_name() == "__pycache__" {
            continue;
        }
        if src.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(io(&src))?;
        }
    }
    Ok(())
}

/// Builds `source` into `wasm`, through a temporary file so that a failed build never leaves
/// a component that looks up to date.
pub fn build(ws: &Workspace, source: &Source, wasm: &Path) -> Result<(), BuildError> {
    let toolchain = Toolchain::find(ws, source)?;
    let dir = wasm.parent().expect("artifacts live in a directory");
    std::fs::create_dir_all(dir).map_err(|e| BuildError::Io {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let partial = wasm.with_extension("wasm.partial");
    // The component is stamped with the time its inputs were read, not when the build ended,
    // so an edit made during the build still makes it stale.
    let started = std::time::SystemTime::now();
    let mut command = Command::new(&toolchain.program);
    match source.language {
        Language::Python => {
            // componentize-py writes `__pycache__/` into its path directories, which would
            // make the sources look changed after every build: it builds from a copy.
            let stage = dir.join(".stage").join(&source.name);
            let (sdk, app) = (stage.join("sdk"), stage.join("app"));
            let _ = std::fs::remove_dir_all(&stage);
            copy_tree(
                &ws.sdk.join("python").join("tollgate"),
                &sdk.join("tollgate"),
            )?;
            copy_tree(&source.dir, &app)?;
            command
                .current_dir(&stage)
                .arg("-d")
                .arg(&ws.wit)
                .args(["-w", "tool", "componentize", "-p"])
                .arg(&sdk)
                .arg("-p")
                .arg(&app)
                .arg("app")
                .arg("-o")
                .arg(&partial);
        }
        Language::JavaScript => {
            // componentize-js resolves imports against its working directory, not the entry
            // module's: it runs from the repository root with the entry given relative to it,
            // so `../../sdk/js/tollgate.js` resolves from the plugin's directory as in Node.
            let root = ws.wit.parent().unwrap_or(Path::new("."));
            let entry = source.dir.join("index.js");
            let entry = entry.strip_prefix(root).unwrap_or(&entry).to_path_buf();
            command
                .current_dir(root)
                .arg(entry)
                .arg("-w")
                .arg(&ws.wit)
                .args(["-n", "tool", "-d"])
                .args(JS_DISABLED)
                .arg("-o")
                .arg(&partial);
        }
        Language::Rust => unreachable!("Rust plugins are built by cargo"),
    }
    let output = command.output().map_err(|e| BuildError::Spawn {
        program: toolchain.program.display().to_string(),
        reason: e.to_string(),
    })?;
    if !output.status.success() || !partial.is_file() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        return Err(BuildError::Failed {
            plugin: source.name.clone(),
            language: source.language.as_str(),
            status: output.status.to_string(),
            output: text,
            hint: format!(
                "the build ran `{}` in {}; run it there to see the error directly",
                shown(&command),
                command
                    .get_current_dir()
                    .unwrap_or(Path::new("."))
                    .display()
            ),
        });
    }
    std::fs::File::options()
        .write(true)
        .open(&partial)
        .and_then(|file| file.set_modified(started))
        .map_err(|e| BuildError::Io {
            path: partial.clone(),
            reason: e.to_string(),
        })?;
    std::fs::rename(&partial, wasm).map_err(|e| BuildError::Io {
        path: wasm.to_path_buf(),
        reason: e.to_string(),
    })
}
