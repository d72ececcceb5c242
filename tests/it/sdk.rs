//! The Python and JavaScript SDKs' own unit tests (serde_json-identical payload bytes, error
//! mapping, the glue around the generated bindings), run on the host's interpreters so that
//! `cargo test` covers every SDK.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
        .to_path_buf()
}

/// Runs `command`, fails the test with its output unless it succeeds, and returns the output.
fn passing(mut command: Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn python_sdk_unit_tests_pass() {
    let mut command = Command::new("python3");
    command
        .args(["-B", "-m", "unittest", "-v"])
        .current_dir(repo().join("sdk/python"));
    let text = passing(command);
    let ran = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("Ran ")?
                .split(' ')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `Ran N tests` line:\n{text}"));
    assert!(ran >= 10, "only {ran} tests ran:\n{text}");
}

#[test]
fn javascript_sdk_unit_tests_pass() {
    // The files by name (newer Node no longer expands a directory) and the TAP reporter
    // (newer Node defaults to another), so the counts below read the same on every Node.
    let dir = repo().join("sdk/js/test");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".test.js"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no tests in {}", dir.display());
    let mut command = Command::new("node");
    command.args(["--test", "--test-reporter=tap"]).args(&files);
    let text = passing(command);
    let count = |label: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(label)?.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no `{label}` line:\n{text}"))
    };
    assert_eq!(count("# fail "), 0, "{text}");
    assert!(count("# pass ") >= 10, "{text}");
}
