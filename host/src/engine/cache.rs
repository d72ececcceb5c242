//! The on-disk cache of precompiled components.
//!
//! Deserializing a precompiled artifact runs native code the engine trusts blindly, so the
//! cache only ever loads bytes it wrote itself: each artifact carries an HMAC-SHA256 under a
//! secret key that lives in the cache directory (mode 0600). The file name is keyed by the
//! component's sha256, the wasmtime version and the engine's configuration, so a change to
//! any of them is a miss, never a mismatched load.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

type HmacSha256 = Hmac<Sha256>;
const MAC_LEN: usize = 32;
const KEY_FILE: &str = "cache.key";

/// Whether a load was served from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    /// Loaded a precompiled artifact: no compilation.
    Hit,
    /// Compiled, and stored the artifact for next time.
    Miss,
    /// No cache configured: compiled.
    Disabled,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot use cache directory {dir}: {source}; use another cache directory")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cache key {path} is damaged ({len} bytes, expected 32): delete it and the cache is rebuilt"
    )]
    BadKey { path: PathBuf, len: usize },
}

#[derive(Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    key: [u8; 32],
    engine_hash: String,
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ArtifactCache {
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, CacheError> {
        let dir_err = |source| CacheError::Dir {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        let key = load_or_create_key(dir)?;
        let mut hasher = ShaHasher::default();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hex::encode(hasher.0.finalize());
        Ok(Self {
            dir: dir.to_owned(),
            key,
            engine_hash,
        })
    }

    fn artifact_path(&self, digest: &str) -> PathBuf {
        let mut name = Sha256::new();
        name.update(digest.as_bytes());
        name.update(self.engine_hash.as_bytes());
        self.dir
            .join(format!("{}.cwasm", hex::encode(name.finalize())))
    }

    fn mac(&self, digest: &str, artifact: &[u8]) -> HmacSha256 {
        // new_from_slice accepts any key length for HMAC; the error arm cannot occur.
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        mac.update(self.engine_hash.as_bytes());
        mac.update(digest.as_bytes());
        mac.update(artifact);
        mac
    }

    /// Loads the precompiled artifact for the component with sha256 `digest`, or compiles
    /// `bytes` and stores the result.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.artifact_path(digest);
        if let Some(component) = self.try_load(engine, digest, &path) {
            return Ok((component, CacheOutcome::Hit));
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(digest, &component, &path) {
            tracing::warn!(path = %path.display(), error = %e, "could not write precompiled component; next load compiles again");
        }
        Ok((component, CacheOutcome::Miss))
    }

    fn try_load(&self, engine: &Engine, digest: &str, path: &Path) -> Option<Component> {
        let file = std::fs::read(path).ok()?;
        let split = file.len().checked_sub(MAC_LEN)?;
        let (artifact, tag) = file.split_at(split);
        if self.mac(digest, artifact).verify_slice(tag).is_err() {
            tracing::warn!(path = %path.display(), "precompiled component failed its integrity check; recompiling");
            return None;
        }
        // The HMAC proves this process's cache wrote these exact bytes for this engine
        // configuration, which is the precondition `deserialize` requires.
        #[expect(unsafe_code, reason = "artifact authenticated by HMAC above")]
        let loaded = unsafe { Component::deserialize(engine, artifact) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "precompiled component rejected by the engine; recompiling");
                None
            }
        }
    }

    fn store(&self, digest: &str, component: &Component, path: &Path) -> anyhow::Result<()> {
        let artifact = component
            .serialize()
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let tag = self.mac(digest, &artifact).finalize().into_bytes();
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&artifact)?;
        tmp.write_all(&tag)?;
        tmp.persist(path)?;
        Ok(())
    }
}

fn load_or_create_key(dir: &Path) -> Result<[u8; 32], CacheError> {
    let path = dir.join(KEY_FILE);
    let dir_err = |source| CacheError::Dir {
        dir: dir.to_owned(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let len = bytes.len();
            bytes
                .try_into()
                .map_err(|_| CacheError::BadKey { path, len })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(dir_err)?;
            // NamedTempFile is created 0600 on Unix: only this user can read the key.
            tmp.write_all(&key).map_err(dir_err)?;
            match tmp.persist_noclobber(&path) {
                Ok(_) => Ok(key),
                // Another process created the key first: use theirs.
                Err(_) => load_or_create_key(dir),
            }
        }
        Err(e) => Err(dir_err(e)),
    }
}

/// Feeds `Hash` output into SHA-256, for a cache key stable across processes.
#[derive(Default)]
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
