//! Builds every plugin of a plugins directory into a WebAssembly component, whatever its
//! language, with one call. The `tollgate build-plugins` command and the test suite's build
//! script both use it, so there is one definition of how a plugin is built.
//!
//! A plugin is found by what its directory holds:
//! - **Rust**: a member of the directory's cargo workspace (`Cargo.toml`), built with
//!   `cargo build --release --target wasm32-wasip2` into `target/wasm32-wasip2/release/`;
//! - **Python**: an `app.py` (the module exporting `WitWorld`), built with `componentize-py`
//!   against the WIT world and the Python SDK (`sdk/python`);
//! - **JavaScript**: an `index.js` (the ES module exporting `describe` and `run`), built with
//!   `componentize-js` against the WIT world.
//!
//! Python and JavaScript components land in `target/components/<name>.wasm` and are rebuilt
//! only when a source, the SDK or the WIT world is newer than the component: each build runs
//! an interpreter's pre-initialisation and takes tens of seconds.

mod fresh;
mod interpreted;
mod rust;

use std::path::{Path, PathBuf};

pub use interpreted::Toolchain;

/// The target every component is built for.
pub const TARGET: &str = "wasm32-wasip2";

/// The language a plugin is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Rust,
    Python,
    JavaScript,
}

impl Language {
    /// Lower case, for machine-readable output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Python => "python",
            Self::JavaScript => "javascript",
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Rust => "Rust",
            Self::Python => "Python",
            Self::JavaScript => "JavaScript",
        })
    }
}

/// A plugin found in the plugins directory, not yet built.
#[derive(Debug, Clone)]
pub struct Source {
    /// The package name (Rust) or the directory name (Python, JavaScript).
    pub name: String,
    pub language: Language,
    pub dir: PathBuf,
}

/// A built plugin.
#[derive(Debug, Clone)]
pub struct Built {
    pub name: String,
    pub language: Language,
    pub wasm: PathBuf,
    /// False when an up-to-date component was already there (Python, JavaScript). Always
    /// true for Rust plugins, whose freshness cargo decides.
    pub rebuilt: bool,
}

/// Why a plugin could not be found or built. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error(
        "no {tool} for the {language} plugin `{plugin}`: run plugins/setup.sh (it installs the pinned \
         toolchains), or set {env} to its path"
    )]
    ToolchainMissing {
        plugin: String,
        language: &'static str,
        tool: &'static str,
        env: &'static str,
    },
    #[error("could not run {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("building the {language} plugin `{plugin}` failed ({status}):\n{output}\nhint: {hint}")]
    Failed {
        plugin: String,
        language: &'static str,
        status: String,
        output: String,
        hint: String,
    },
    #[error("plugin `{plugin}` built, but {} is missing; is it a `cdylib`?", wasm.display())]
    Missing { plugin: String, wasm: PathBuf },
}

/// A plugins directory: a cargo workspace of Rust plugins plus Python and JavaScript plugin
/// directories beside them. `wit/` and `sdk/` are found in its parent, as in this repository.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub dir: PathBuf,
    pub wit: PathBuf,
    pub sdk: PathBuf,
}

impl Workspace {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        // Absolute, because the toolchains run from other working directories.
        let dir = dir.into();
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        let root = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        Self {
            wit: root.join("wit"),
            sdk: root.join("sdk"),
            dir,
        }
    }

    /// Every plugin, Rust ones in workspace order then the others by directory name.
    pub fn sources(&self) -> Result<Vec<Source>, BuildError> {
        let members = rust::members(&self.dir)?;
        let mut sources = Vec::new();
        for member in &members {
            let dir = self.dir.join(member);
            sources.push(Source {
                name: rust::package_name(&dir)?,
                language: Language::Rust,
                dir,
            });
        }
        let mut others = Vec::new();
        for entry in read_dir(&self.dir)? {
            let language = if entry.join("app.py").is_file() {
                Language::Python
            } else if entry.join("index.js").is_file() {
                Language::JavaScript
            } else {
                continue;
            };
            let name = entry
                .file_name()
                .and_then(|name| name.to_str())
                .ok_or_else(|| BuildError::Io {
                    path: entry.clone(),
                    reason: "directory name is not UTF-8".into(),
                })?
                .to_owned();
            others.push(Source {
                name,
                language,
                dir: entry,
            });
        }
        others.sort_by(|a, b| a.name.cmp(&b.name));
        sources.extend(others);
        Ok(sources)
    }

    /// Where a plugin's component is written.
    pub fn artifact(&self, source: &Source) -> PathBuf {
        let file = format!("{}.wasm", source.name.replace('-', "_"));
        match source.language {
            Language::Rust => self
                .dir
                .join("target")
                .join(TARGET)
                .join("release")
                .join(file),
            Language::Python | Language::JavaScript => {
                self.dir.join("target").join("components").join(file)
            }
        }
    }

    /// Builds every plugin: one cargo build for the Rust ones, then each stale Python or
    /// JavaScript one. `progress` hears about each interpreted build before it starts.
    pub fn build_all(&self, progress: impl FnMut(&Source)) -> Result<Vec<Built>, BuildError> {
        self.build(&self.sources()?, progress)
    }

    /// [`Self::build_all`] for sources already found with [`Self::sources`].
    pub fn build(
        &self,
        sources: &[Source],
        mut progress: impl FnMut(&Source),
    ) -> Result<Vec<Built>, BuildError> {
        let mut built = Vec::new();
        if sources.iter().any(|s| s.language == Language::Rust) {
            rust::build(&self.dir)?;
        }
        for source in sources {
            let wasm = self.artifact(source);
            let rebuilt = match source.language {
                Language::Rust => {
                    if !wasm.is_file() {
                        return Err(BuildError::Missing {
                            plugin: source.name.clone(),
                            wasm,
                        });
                    }
                    true
                }
                Language::Python | Language::JavaScript => {
                    let inputs = self.inputs(source);
                    if fresh::is_fresh(&wasm, &inputs) {
                        false
                    } else {
                        progress(source);
                        interpreted::build(self, source, &wasm)?;
                        true
                    }
                }
            };
            built.push(Built {
                name: source.name.clone(),
                language: source.language,
                wasm,
                rebuilt,
            });
        }
        Ok(built)
    }

    /// What a plugin's component is built from, the pinned toolchain included: a change to
    /// any of them rebuilds it.
    pub fn inputs(&self, source: &Source) -> Vec<PathBuf> {
        let mut inputs = vec![source.dir.clone(), self.wit.clone()];
        match source.language {
            Language::Rust => inputs.extend(["src", "wit", "Cargo.toml"].map(|p| self.sdk.join(p))),
            Language::Python => {
                inputs.push(self.sdk.join("python").join("tollgate"));
                inputs.push(self.dir.join("requirements.txt"));
            }
            Language::JavaScript => {
                // The SDK's modules, not its tests or docs.
                let sdk = self.sdk.join("js");
                let mut modules: Vec<PathBuf> = std::fs::read_dir(&sdk)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|ext| ext == "js"))
                    .collect();
                modules.sort();
                inputs.extend(modules);
                inputs.push(self.dir.join("package-lock.json"));
            }
        }
        inputs
    }
}

/// The subdirectories of `dir`, in no particular order.
fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let io = |e: std::io::Error| BuildError::Io {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A plugins directory: a Rust workspace with one member (and a glob), a Python plugin, a
    /// JavaScript plugin and a directory that is none of them.
    fn plugins_dir() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("plugins");
        for (path, text) in [
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"hello\", \"extra/*\"]\n",
            ),
            ("hello/Cargo.toml", "[package]\nname = \"hello\"\n"),
            ("extra/b-tool/Cargo.toml", "[package]\nname = \"b-tool\"\n"),
            ("extra/a-tool/Cargo.toml", "[package]\nname = \"a-tool\"\n"),
            ("py-tool/app.py", "WitWorld = None\n"),
            ("js-tool/index.js", "export function run() {}\n"),
            ("fixtures/x.wat", "(component)\n"),
        ] {
            let path = dir.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        root
    }

    #[test]
    fn finds_each_plugin_by_what_its_directory_holds() {
        let root = plugins_dir();
        let ws = Workspace::new(root.path().join("plugins"));
        assert_eq!(ws.wit, root.path().join("wit"));
        let found: Vec<_> = ws
            .sources()
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.language))
            .collect();
        assert_eq!(
            found,
            [
                ("hello".to_owned(), Language::Rust),
                ("a-tool".to_owned(), Language::Rust),
                ("b-tool".to_owned(), Language::Rust),
                ("js-tool".to_owned(), Language::JavaScript),
                ("py-tool".to_owned(), Language::Python),
            ]
        );
        let py = &ws.sources().unwrap()[4];
        assert_eq!(
            ws.artifact(py),
            root.path().join("plugins/target/components/py_tool.wasm")
        );
        assert!(
            ws.inputs(py)
                .contains(&root.path().join("sdk/python/tollgate"))
        );
    }

    #[test]
    fn a_bad_workspace_manifest_names_the_file_and_the_problem() {
        let root = plugins_dir();
        let manifest = root.path().join("plugins/Cargo.toml");
        fs::write(&manifest, "[workspace]\nmembers = 3\n").unwrap();
        let err = Workspace::new(root.path().join("plugins"))
            .sources()
            .unwrap_err()
            .to_string();
        assert!(err.contains(&manifest.display().to_string()), "{err}");
        assert!(err.contains("no [workspace] members"), "{err}");
    }

    #[test]
    fn a_missing_toolchain_says_how_to_install_it() {
        let root = plugins_dir();
        let ws = Workspace::new(root.path().join("plugins"));
        let py = ws.sources().unwrap().remove(4);
        let err = interpreted::Toolchain::find_in(&ws, &py, None, "").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("componentize-py"), "{text}");
        assert!(text.contains("plugins/setup.sh"), "{text}");
        assert!(text.contains("TOLLGATE_COMPONENTIZE_PY"), "{text}");
    }
}
