//! Whether a built component is newer than everything it is built from.

use std::path::Path;
use std::time::SystemTime;

/// Directories that are outputs or caches, never inputs.
const SKIPPED: &[&str] = &["target", "node_modules", "__pycache__", ".venv"];

/// True when `output` exists and no file under `inputs` was modified after it.
pub fn is_fresh(output: &Path, inputs: &[impl AsRef<Path>]) -> bool {
    let Some(built) = modified(output) else {
        return false;
    };
    inputs
        .iter()
        .all(|input| newest(input.as_ref()).is_none_or(|newest| newest <= built))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of `path` or anything beneath it.
fn newest(path: &Path) -> Option<SystemTime> {
    let own = modified(path);
    let Ok(entries) = std::fs::read_dir(path) else {
        return own;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            !SKIPPED.iter().any(|skip| name == *skip)
        })
        .filter_map(|entry| newest(&entry.path()))
        .chain(own)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File};
    use std::time::Duration;

    fn touch(path: &Path, at: SystemTime) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(at)
            .unwrap();
    }

    #[test]
    fn stale_when_missing_fresh_when_newer_stale_again_after_an_input_changes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("node_modules")).unwrap();
        let input = src.join("app.py");
        let ignored = src.join("node_modules").join("dep.js");
        let out = dir.path().join("out.wasm");
        fs::write(&input, "x").unwrap();
        fs::write(&ignored, "x").unwrap();
        assert!(!is_fresh(&out, &[&src]), "no output yet");

        let t0 = SystemTime::now() - Duration::from_secs(100);
        touch(&input, t0);
        fs::write(&out, "wasm").unwrap();
        touch(&out, t0 + Duration::from_secs(10));
        // Directories' own times move as entries are written; pin them too.
        File::open(&src).unwrap().set_modified(t0).unwrap();
        File::open(src.join("node_modules"))
            .unwrap()
            .set_modified(t0)
            .unwrap();
        touch(&ignored, t0 + Duration::from_secs(50));
        assert!(
            is_fresh(&out, &[&src]),
            "older input (node_modules is not an input)"
        );

        touch(&input, t0 + Duration::from_secs(20));
        assert!(!is_fresh(&out, &[&src]), "input changed after the build");
    }
}
