//! Components this process has loaded, kept by the identity of their file, so that loading
//! one again (a resume, a recovered run, an approval settled) costs a `stat` instead of
//! reading, hashing and verifying tens of megabytes.
//!
//! Invariant: a kept tool is exactly what [`crate::tool::load`] made of the file's bytes at
//! the time (its digest and its compiled code come from the same read), and it is returned
//! only while the file's identity is unchanged. Any write to a file changes its `ctime`,
//! which no user can set back; the one gap is a write within the same clock tick as the
//! read, so a file changed in the last [`SETTLE`] is never kept (git's "racily clean" rule).
//! A stale hit could therefore only ever return an earlier build that was itself verified,
//! never code whose digest was not checked.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::tool::LoadedTool;

/// How long a file must have been left alone before its load is kept.
const SETTLE: Duration = Duration::from_secs(2);

/// Most files kept at once: a long-lived server loads the few tools its config names, and
/// recovered runs name the same paths.
const MAX_KEPT: usize = 64;

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// Bytes of [`Stamp::to_bytes`].
    pub const LEN: usize = 7 * 8;

    /// The stamp as fixed-size bytes, for storing beside what it identifies.
    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let fields = [
            self.dev.to_le_bytes(),
            self.ino.to_le_bytes(),
            self.len.to_le_bytes(),
            self.mtime.0.to_le_bytes(),
            self.mtime.1.to_le_bytes(),
            self.ctime.0.to_le_bytes(),
            self.ctime.1.to_le_bytes(),
        ];
        let mut bytes = [0; Self::LEN];
        for (slot, field) in bytes.chunks_exact_mut(8).zip(fields) {
            slot.copy_from_slice(&field);
        }
        bytes
    }

    /// A stamp of no real file, for tests of what is stored by stamp.
    #[cfg(test)]
    pub fn made_up(ino: u64) -> Self {
        Self {
            dev: 1,
            ino,
            len: 2,
            mtime: (3, 4),
            ctime: (5, 6),
        }
    }

    /// The file's stamp, if it has one that can be trusted to change with its contents: a
    /// file changed too recently to tell has none.
    pub fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let changed = SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(meta.ctime()).ok()?,
                u32::try_from(meta.ctime_nsec()).ok()?,
            );
        let settled = SystemTime::now()
            .duration_since(changed)
            .is_ok_and(|age| age >= SETTLE);
        settled.then_some(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// The tools this process loaded, by path.
#[derive(Debug, Default)]
pub struct Loaded {
    kept: Mutex<HashMap<PathBuf, (Stamp, Arc<LoadedTool>)>>,
}

impl Loaded {
    /// The tool loaded from `path` when it had `stamp`, if it was kept.
    pub fn get(&self, path: &Path, stamp: Stamp) -> Option<Arc<LoadedTool>> {
        let kept = self.kept.lock().ok()?;
        kept.get(path)
            .filter(|(kept_stamp, _)| *kept_stamp == stamp)
            .map(|(_, tool)| Arc::clone(tool))
    }

    /// Keeps `tool`, loaded from `path`, which had `stamp` before it was read.
    pub fn keep(&self, path: &Path, stamp: Stamp, tool: &Arc<LoadedTool>) {
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        if kept.len() >= MAX_KEPT && !kept.contains_key(path) {
            // Rare enough (more distinct files than a config names) that starting over is
            // simpler than tracking which was used last.
            kept.clear();
        }
        kept.insert(path.to_owned(), (stamp, Arc::clone(tool)));
    }
}
