//! Builds every plugin in `plugins/` once, compiles every `plugins/fixtures/*.wat`, and writes
//! `$OUT_DIR/plugins.rs`: one path constant per artifact plus `foreach_plugin!`, which the
//! integration tests use so that a plugin without a test fails the build (the model is
//! wasmtime's `crates/test-programs/artifacts/build.rs`).
//!
//! The plugins keep their own target directory (`plugins/target`), so this build and
//! `cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml` share
//! artifacts, and nothing here depends on the outer build's profile or flags.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// A Rust plugin: its package name and its built component.
struct Plugin {
    package: String,
    wasm: PathBuf,
}

/// A hand-written WAT fixture compiled to binary.
struct Fixture {
    stem: String,
    wasm: PathBuf,
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let repo = manifest_dir
        .parent()
        .expect("tests/ lives in the repository root")
        .to_path_buf();
    let plugins_dir = repo.join("plugins");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets it"));

    let members = workspace_members(&plugins_dir);
    rerun_if_changed(&repo, &plugins_dir, &members);

    build_plugins(&plugins_dir);
    let release = plugins_dir.join("target").join(TARGET).join("release");
    let plugins: Vec<Plugin> = members
        .iter()
        .map(|member| {
            let package = package_name(&plugins_dir.join(member));
            let wasm = release.join(format!("{}.wasm", package.replace('-', "_")));
            assert!(
                wasm.is_file(),
                "plugin `{package}` built, but {} is missing; is it a `cdylib`?",
                wasm.display()
            );
            Plugin { package, wasm }
        })
        .collect();

    let fixtures = compile_fixtures(&plugins_dir.join("fixtures"), &out_dir.join("fixtures"));

    let generated = generate(&plugins, &fixtures);
    fs::write(out_dir.join("plugins.rs"), generated).expect("write $OUT_DIR/plugins.rs");
}

/// The member directories listed in `plugins/Cargo.toml`, globs (`dir/*`) expanded.
fn workspace_members(plugins_dir: &Path) -> Vec<String> {
    let manifest = plugins_dir.join("Cargo.toml");
    let text = fs::read_to_string(&manifest)
        .unwrap_or_else(|error| panic!("read {}: {error}", manifest.display()));
    let value: toml::Table = toml::from_str(&text)
        .unwrap_or_else(|error| panic!("parse {}: {error}", manifest.display()));
    let members = value
        .get("workspace")
        .and_then(|workspace| workspace.get("members"))
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("{} has no [workspace] members", manifest.display()));

    let mut dirs = Vec::new();
    for member in members {
        let member = member
            .as_str()
            .unwrap_or_else(|| panic!("{}: members must be strings", manifest.display()));
        match member.strip_suffix("/*") {
            Some(parent) => {
                let entries = fs::read_dir(plugins_dir.join(parent))
                    .unwrap_or_else(|error| panic!("list plugins/{parent}: {error}"));
                let mut found: Vec<String> = entries
                    .filter_map(Result::ok)
                    .filter(|entry| entry.path().join("Cargo.toml").is_file())
                    .map(|entry| format!("{parent}/{}", entry.file_name().to_string_lossy()))
                    .collect();
                found.sort();
                dirs.extend(found);
            }
            None => dirs.push(member.to_owned()),
        }
    }
    dirs
}

/// `[package] name` of the crate in `dir`.
fn package_name(dir: &Path) -> String {
    let manifest = dir.join("Cargo.toml");
    let text = fs::read_to_string(&manifest)
        .unwrap_or_else(|error| panic!("read {}: {error}", manifest.display()));
    let value: toml::Table = toml::from_str(&text)
        .unwrap_or_else(|error| panic!("parse {}: {error}", manifest.display()));
    value
        .get("package")
        .and_then(|package| package.get("name"))
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("{} has no [package] name", manifest.display()))
        .to_owned()
}

/// Directories are fine for `rerun-if-changed` (cargo recurses), but never `plugins/` as a
/// whole: the inner build writes `plugins/target` and would make every build stale.
fn rerun_if_changed(repo: &Path, plugins_dir: &Path, members: &[String]) {
    let mut paths = vec![
        plugins_dir.join("Cargo.toml"),
        plugins_dir.join("Cargo.lock"),
        plugins_dir.join("fixtures"),
        repo.join("sdk"),
        repo.join("wit"),
        // The SDK inherits its dependencies from the root workspace.
        repo.join("Cargo.toml"),
    ];
    paths.extend(members.iter().map(|member| plugins_dir.join(member)));
    for path in paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// One `cargo build` of the plugins workspace, isolated from the outer build's settings.
fn build_plugins(plugins_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(plugins_dir.join("Cargo.toml"))
        .current_dir(plugins_dir);

    // What the outer cargo sets for this build script must not leak into the inner build: its
    // flags (coverage, sanitizers) do not apply to wasm, its target dir would move
    // `plugins/target`, and a workspace wrapper (clippy-driver under `cargo clippy`) would
    // change the fingerprints and rebuild the plugins on every switch.
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
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_TARGET_")
            || key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_PROFILE_")
        {
            command.env_remove(key);
        }
    }

    let output = command
        .output()
        .unwrap_or_else(|error| panic!("could not run cargo to build the plugins: {error}"));
    if !output.status.success() {
        panic!(
            "building the plugins failed ({}):\n{}\n\nhint: run `rustup target add {TARGET}`, \
             then `cargo build --release --target {TARGET} --manifest-path plugins/Cargo.toml` \
             to see the error directly",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Compile every `*.wat` in `src` to `dst/<stem>.wasm`, in name order.
fn compile_fixtures(src: &Path, dst: &Path) -> Vec<Fixture> {
    fs::create_dir_all(dst).unwrap_or_else(|error| panic!("create {}: {error}", dst.display()));
    let mut sources: Vec<PathBuf> = fs::read_dir(src)
        .unwrap_or_else(|error| panic!("list {}: {error}", src.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wat"))
        .collect();
    sources.sort();

    sources
        .into_iter()
        .map(|source| {
            let stem = source
                .file_stem()
                .and_then(|stem| stem.to_str())
                .unwrap_or_else(|| panic!("{}: file name is not UTF-8", source.display()))
                .to_owned();
            let bytes = wat::parse_file(&source)
                .unwrap_or_else(|error| panic!("compile fixture {}: {error}", source.display()));
            let wasm = dst.join(format!("{stem}.wasm"));
            fs::write(&wasm, bytes)
                .unwrap_or_else(|error| panic!("write {}: {error}", wasm.display()));
            Fixture { stem, wasm }
        })
        .collect()
}

/// `fixture-trap` → `FIXTURE_TRAP`.
fn const_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

fn generate(plugins: &[Plugin], fixtures: &[Fixture]) -> String {
    let mut out = String::from(
        "// @generated by tests/build.rs: absolute paths of the built plugins and fixtures.\n\n",
    );

    for plugin in plugins {
        writeln!(
            out,
            "/// `plugins/{}`, built for {TARGET}.\npub const {}: &str = {:?};",
            plugin.package,
            const_name(&plugin.package),
            plugin.wasm.display().to_string(),
        )
        .expect("write to String");
    }
    for fixture in fixtures {
        writeln!(
            out,
            "/// `plugins/fixtures/{}.wat`, compiled.\npub const {}: &str = {:?};",
            fixture.stem,
            const_name(&fixture.stem),
            fixture.wasm.display().to_string(),
        )
        .expect("write to String");
    }

    out.push_str("\n/// Every Rust plugin as `(package name, path)`.\npub const PLUGINS: &[(&str, &str)] = &[\n");
    for plugin in plugins {
        writeln!(
            out,
            "    ({:?}, {}),",
            plugin.package,
            const_name(&plugin.package)
        )
        .expect("write to String");
    }
    out.push_str("];\n\n/// Every WAT fixture as `(file stem, path)`.\npub const FIXTURES: &[(&str, &str)] = &[\n");
    for fixture in fixtures {
        writeln!(
            out,
            "    ({:?}, {}),",
            fixture.stem,
            const_name(&fixture.stem)
        )
        .expect("write to String");
    }
    out.push_str("];\n");

    out.push_str(
        "\n/// Invokes `$mac!(snake_name, CONST_NAME);` once per Rust plugin, e.g.\n\
         /// `$mac!(fixture_trap, FIXTURE_TRAP);`. The test suite uses it to require one test\n\
         /// per plugin.\n\
         #[macro_export]\n\
         macro_rules! foreach_plugin {\n    ($mac:ident) => {\n",
    );
    for plugin in plugins {
        writeln!(
            out,
            "        $mac!({}, {});",
            plugin.package.replace('-', "_"),
            const_name(&plugin.package)
        )
        .expect("write to String");
    }
    out.push_str("    };\n}\n");
    out
}
