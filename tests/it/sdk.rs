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

/// How many lines of the files in `dir` whose names end in `suffix` start with `prefix`
/// (after indentation): the tests the files declare, so that every one of them must run.
fn declared(dir: &Path, suffix: &str, prefix: &str) -> (Vec<PathBuf>, u32) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    let count: usize = files
        .iter()
        .map(|file| {
            std::fs::read_to_string(file)
                .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
                .lines()
                .filter(|line| line.trim_start().starts_with(prefix))
                .count()
        })
        .sum();
    let count = u32::try_from(count).expect("a countable number of tests");
    assert!(count > 0, "no tests declared in {}", dir.display());
    (files, count)
}

#[test]
fn python_sdk_unit_tests_pass() {
    let (_, declared) = declared(&repo().join("sdk/python/tests"), ".py", "def test_");
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
    assert_eq!(ran, declared, "every declared test runs:\n{text}");
    // unittest reports a skip as `OK (skipped=N)` and counts it as run.
    assert!(
        !text.contains("skipped"),
        "a skipped test is not a passing one:\n{text}"
    );
}

#[test]
fn javascript_sdk_unit_tests_pass() {
    // The files by name (newer Node no longer expands a directory) and the TAP reporter
    // (newer Node defaults to another), so the counts below read the same on every Node.
    let (files, declared) = declared(&repo().join("sdk/js/test"), ".test.js", "test(");
    let mut command = Command::new("node");
    command.args(["--test", "--test-reporter=tap"]).args(&files);
    let text = passing(command);
    let count = |label: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(label)?.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no `{label}` line:\n{text}"))
    };
    assert_eq!(count("# fail "), 0, "{text}");
    assert_eq!(count("# skipped "), 0, "{text}");
    assert_eq!(count("# todo "), 0, "{text}");
    assert_eq!(count("# cancelled "), 0, "{text}");
    assert_eq!(
        count("# pass "),
        declared,
        "every declared test passes:\n{text}"
    );
}
