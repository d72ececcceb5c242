//! Loading a tool: from a file to a validated, pre-linked component ready to run.
//!
//! Every way a file can fail to be a Tollgate tool gets its own error that says what was
//! wrong and how to fix it. Nothing a component contains can panic the host.

use crate::bindings::{Tool, ToolPre, types};
use crate::capabilities::{Deadlines, ToolState, guarded_store, is_provided};
use crate::engine::loaded::Stamp;
use crate::engine::{ArtifactCache, CacheOutcome};
use crate::policy::{Policy, is_valid_effect_kind};
use crate::schema::{InputSchema, SchemaError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};

/// What a tool says about itself, checked by the host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Descriptor {
    pub name: String,
    pub version: String,
    pub description: String,
    pub input_schema: serde_json::Value,
    pub effects: Vec<String>,
    pub capabilities: Vec<String>,
}

/// A loaded tool: compiled, linked against the deny-by-default linker, and described.
pub struct LoadedTool {
    pub path: PathBuf,
    /// sha256 of the component file, hex.
    pub digest: String,
    pub descriptor: Descriptor,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Whether the compiled code came from the precompiled cache when the file was read. A
    /// tool a runtime kept and returns again ([`crate::Runtime::inspect`]) keeps the outcome
    /// of that first read.
    pub cache: CacheOutcome,
    pub(crate) pre: ToolPre<ToolState>,
    pub(crate) validator: InputSchema,
}

impl std::fmt::Debug for LoadedTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedTool")
            .field("path", &self.path)
            .field("digest", &self.digest)
            .field("name", &self.descriptor.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no such file: {0} (check the path)")]
    NotFound(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} is a core WebAssembly module, not a component: build the tool for wasm32-wasip2 (`cargo build --target wasm32-wasip2`) or wrap it with `wasm-tools component new`"
    )]
    CoreModule(PathBuf),
    #[error(
        "{path} is not a WebAssembly component (no `\\0asm` header and not valid WAT: {}); pass a .wasm file built for wasm32-wasip2", crate::text::Escaped(.reason)
    )]
    NotWasm { path: PathBuf, reason: String },
    #[error("{path} is not a valid component: {}", crate::text::Escaped(.reason))]
    Invalid { path: PathBuf, reason: String },
    #[error("{path} imports {} this host does not provide: {}. {hint}", if .missing.len() == 1 { "an interface" } else { "interfaces" }, crate::text::Escaped(.missing.join(", ")))]
    MissingImports {
        path: PathBuf,
        missing: Vec<String>,
        hint: String,
    },
    #[error("{path} is not a Tollgate tool: it exports [{}] but a tool exports `describe` and `run` (world tollgate:tool/tool@0.1.0); build it with tollgate-sdk", crate::text::Escaped(.exports.join(", ")))]
    NotATool { path: PathBuf, exports: Vec<String> },
    #[error("{path} could not be linked: {}", crate::text::Escaped(.reason))]
    Link { path: PathBuf, reason: String },
    #[error("{path}: `describe` failed: {}", crate::text::Escaped(.reason))]
    Describe { path: PathBuf, reason: String },
    #[error("{path}: the tool's descriptor is invalid: {}", crate::text::Escaped(.problem))]
    BadDescriptor { path: PathBuf, problem: String },
    #[error("{path}: the input schema of `{tool}` is refused: {error}")]
    BadInputSchema {
        path: PathBuf,
        tool: String,
        error: Box<SchemaError>,
    },
    #[error(
        "{path} has sha256 {found}, but the policy of `{tool}` pins {pinned}: load the pinned build, or update `digest` under [tools.{tool}] after reviewing this one"
    )]
    DigestMismatch {
        path: PathBuf,
        tool: String,
        pinned: String,
        found: String,
    },
    #[error("{path} imports what the policy of `{tool}` does not grant:\n{}", .missing.iter().map(|(import, grant)| format!("  - {}: grant it with\n{}", crate::text::Escaped(import), grant.lines().map(|l| format!("      {l}")).collect::<Vec<_>>().join("\n"))).collect::<Vec<_>>().join("\n"))]
    NotGranted {
        path: PathBuf,
        tool: String,
        /// Each ungranted import with the policy lines that would grant it.
        missing: Vec<(String, String)>,
    },
    #[error(
        "{path}: the policy of `{tool}` asks for `record = \"async\"`, but the tool declares effects ({}): a tool with effects is always recorded synchronously, because its run's records are what keep each effect exactly-once; remove `record = \"async\"` under [tools.{tool}]", crate::text::Escaped(.effects.join(", "))
    )]
    AsyncRecordWithEffects {
        path: PathBuf,
        tool: String,
        effects: Vec<String>,
    },
}

/// Reads, compiles (or loads from cache), checks and describes the component at `path`.
/// With `stamp`, the file's identity taken before it is read, a cache that remembers the
/// file's digest for that identity serves it without the file being read or hashed at all.
pub(crate) async fn load(
    engine: &Engine,
    linker: &Linker<ToolState>,
    cache: Option<&ArtifactCache>,
    path: &Path,
    stamp: Option<Stamp>,
) -> Result<LoadedTool, LoadError> {
    let remembered = cache.zip(stamp).and_then(|(cache, stamp)| {
        let digest = cache.digest_of(path, stamp)?;
        let component = cache.load(engine, &digest)?;
        Some((digest, component))
    });
    let (digest, component, cache_outcome) = match remembered {
        Some((digest, component)) => (digest, component, CacheOutcome::Hit),
        None => read_and_compile(engine, cache, path, stamp)?,
    };
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let exports: Vec<(String, bool)> = ty
        .exports(engine)
        .map(|(name, item)| {
            (
                name.to_owned(),
                matches!(item.ty, ComponentItem::ComponentFunc(_)),
            )
        })
        .collect();
    let missing: Vec<String> = imports
        .iter()
        .filter(|i| !is_provided(i))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let hint = missing_hint(&missing);
        return Err(LoadError::MissingImports {
            path: path.to_owned(),
            missing,
            hint,
        });
    }
    let is_func = |name: &str| exports.iter().any(|(n, f)| n == name && *f);
    let export_names: Vec<String> = exports.iter().map(|(n, _)| n.clone()).collect();
    if !is_func("describe") || !is_func("run") {
        return Err(LoadError::NotATool {
            path: path.to_owned(),
            exports: export_names,
        });
    }
    let pre = linker
        .instantiate_pre(&component)
        .and_then(ToolPre::new)
        .map_err(|e| LoadError::Link {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        })?;
    let raw = describe(engine, &pre)
        .await
        .map_err(|e| LoadError::Describe {
            path: path.to_owned(),
            reason: e,
        })?;
    let (descriptor, validator) = check_descriptor(path, raw)?;
    Ok(LoadedTool {
        path: path.to_owned(),
        digest,
        descriptor,
        imports,
        exports: export_names,
        cache: cache_outcome,
        pre,
        validator,
    })
}

/// The component at `path` read, hashed and compiled (or loaded precompiled by its digest),
/// remembering its digest for `stamp` in the cache.
fn read_and_compile(
    engine: &Engine,
    cache: Option<&ArtifactCache>,
    path: &Path,
    stamp: Option<Stamp>,
) -> Result<(String, Component, CacheOutcome), LoadError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LoadError::NotFound(path.to_owned()));
        }
        Err(source) => {
            return Err(LoadError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let digest = hex::encode(Sha256::digest(&bytes));
    let bytes = to_component_binary(path, bytes)?;
    let (component, outcome) = match cache {
        Some(cache) => cache.load_or_compile(engine, &digest, &bytes),
        None => Component::new(engine, &bytes).map(|c| (c, CacheOutcome::Disabled)),
    }
    .map_err(|e| LoadError::Invalid {
        path: path.to_owned(),
        reason: format!("{e:#}"),
    })?;
    if let (Some(cache), Some(stamp)) = (cache, stamp) {
        cache.remember_digest(path, stamp, &digest);
    }
    Ok((digest, component, outcome))
}

/// Accepts a component binary or WAT text; refuses core modules and anything else.
fn to_component_binary(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, LoadError> {
    if bytes.starts_with(b"\0asm") {
        if wasmparser::Parser::is_core_wasm(&bytes) {
            return Err(LoadError::CoreModule(path.to_owned()));
        }
        return Ok(bytes);
    }
    let text = String::from_utf8(bytes).map_err(|_| LoadError::NotWasm {
        path: path.to_owned(),
        reason: "binary data".into(),
    })?;
    let binary = wat::parse_str(&text).map_err(|e| LoadError::NotWasm {
        path: path.to_owned(),
        reason: first_line(&e.to_string()),
    })?;
    if wasmparser::Parser::is_core_wasm(&binary) {
        return Err(LoadError::CoreModule(path.to_owned()));
    }
    Ok(binary)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_owned()
}

fn missing_hint(missing: &[String]) -> String {
    if missing.iter().any(|m| m.starts_with("tollgate:tool/")) {
        return "This host speaks tollgate:tool@0.1.x: rebuild the tool with a matching tollgate-sdk.".into();
    }
    "Tools get only the tollgate:tool interfaces and a minimal WASI; remove the dependency that needs the rest.".into()
}

impl LoadedTool {
    /// Refuses a tool its policy does not fit: another build than the pinned digest, or an
    /// import of an interface the policy does not grant.
    pub fn check_policy(&self, policy: &Policy) -> Result<(), LoadError> {
        let tool = &self.descriptor.name;
        if policy.record == crate::policy::Record::Async && !self.descriptor.effects.is_empty() {
            return Err(LoadError::AsyncRecordWithEffects {
                path: self.path.clone(),
                tool: tool.clone(),
                effects: self.descriptor.effects.clone(),
            });
        }
        if let Some(pinned) = policy.pinned_digest()
            && pinned != self.digest
        {
            return Err(LoadError::DigestMismatch {
                path: self.path.clone(),
                tool: tool.clone(),
                pinned,
                found: self.digest.clone(),
            });
        }
        let missing: Vec<(String, String)> = self
            .imports
            .iter()
            .filter(|import| {
                import.starts_with("wasi:http/outgoing-handler@") && policy.http.is_empty()
            })
            .map(|import| (import.clone(), http_grant_lines(tool)))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(LoadError::NotGranted {
                path: self.path.clone(),
                tool: tool.clone(),
                missing,
            })
        }
    }

    /// A ready policy for this tool: its digest pin, the effects it declares, a grant for
    /// each optional capability it imports, and the limits (defaults) to tune.
    pub fn policy_skeleton(&self) -> String {
        let name = &self.descriptor.name;
        let mut out = format!(
            "[tools.{name}]\ndigest = \"sha256:{}\"\neffects = {:?}\n# env = [\"LANG\"]                 # host variables the tool may read\n",
            self.digest, self.descriptor.effects
        );
        if self
            .imports
            .iter()
            .any(|i| i.starts_with("wasi:filesystem/preopens@"))
        {
            out.push_str(&format!(
                "# [[tools.{name}.fs]]                # directories the tool may see\n# host = \"/srv/data\"\n# guest = \"/data\"\n# mode = \"ro\"                    # or \"rw\"\n"
            ));
        }
        if self
            .imports
            .iter()
            .any(|i| i.starts_with("wasi:http/outgoing-handler@"))
        {
            out.push_str(&http_grant_lines(name));
            out.push('\n');
        }
        let limits = toml::to_string(&crate::policy::Limits::default()).unwrap_or_default();
        out.push_str(&format!(
            "[tools.{name}.limits]                # the defaults\n"
        ));
        for line in limits.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        out
    }
}

fn http_grant_lines(tool: &str) -> String {
    format!(
        "[[tools.{tool}.http]]\nhost = \"api.example.com:443\"      # exact host:port, or \"*.example.com\"\nmethods = [\"GET\", \"HEAD\"]"
    )
}

/// Calls the tool's `describe` in a throwaway store with the default limits.
async fn describe(engine: &Engine, pre: &ToolPre<ToolState>) -> Result<types::Descriptor, String> {
    let policy = Policy::default();
    let state = ToolState::new(&policy, "", None).map_err(|e| e.to_string())?;
    let budget = std::time::Duration::from_secs(5);
    let mut store = guarded_store(
        engine,
        state,
        &Deadlines {
            wall: budget,
            wall_rule: "the 5 s given to `describe`",
            cpu_ms: None,
        },
    );
    let call = async {
        let tool: Tool = pre.instantiate_async(&mut store).await?;
        tool.call_describe(&mut store).await
    };
    match tokio::time::timeout(budget, call).await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("did not return within {budget:?}")),
    }
}

fn check_descriptor(
    path: &Path,
    raw: types::Descriptor,
) -> Result<(Descriptor, InputSchema), LoadError> {
    let bad = |problem: String| LoadError::BadDescriptor {
        path: path.to_owned(),
        problem,
    };
    let name_ok = !raw.name.is_empty()
        && raw.name.len() <= 64
        && raw
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Err(bad(format!(
            "name `{}` must be 1-64 lowercase letters, digits, `-` or `_`",
            raw.name
        )));
    }
    if let Some(bad_kind) = raw.effects.iter().find(|k| !is_valid_effect_kind(k)) {
        return Err(bad(format!(
            "effect kind `{bad_kind}` is not valid (e.g. `erp.post-invoice`)"
        )));
    }
    // The schema is checked before anything validates against it: a tool controls it, and
    // validation runs on the host, outside every limit the tool runs under.
    let (schema, validator) =
        crate::schema::compile(&raw.input_schema).map_err(|error| LoadError::BadInputSchema {
            path: path.to_owned(),
            tool: raw.name.clone(),
            error: Box::new(error),
        })?;
    Ok((
        Descriptor {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            input_schema: schema,
            effects: raw.effects,
            capabilities: raw.capabilities,
        },
        validator,
    ))
}

impl LoadedTool {
    /// Checks `input` against the tool's schema; returns every violation, one per line (as
    /// many as can be listed within bounded memory).
    pub fn validate_input(&self, input: &serde_json::Value) -> Result<(), Vec<String>> {
        self.validator.violations(input)
    }
}
