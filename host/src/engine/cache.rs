//! The on-disk cache of precompiled components.
//!
//! Deserializing a precompiled artifact runs native code the engine trusts blindly, so the
//! cache only ever loads bytes it wrote itself: each artifact carries a MAC (keyed BLAKE3,
//! several times faster than HMAC-SHA256 over the tens of megabytes an interpreter's
//! artifact holds) under a secret key that lives in the cache directory. The file name is
//! keyed by the component's sha256, the wasmtime version and the engine's configuration, so
//! a change to any of them is a miss, never a mismatched load.
//!
//! Beside the artifacts, the cache remembers each component file's sha256 by the file's
//! identity ([`Stamp`]), under the same key, so that loading an unchanged component does not
//! read and hash it again.
//!
//! Invariant: the key is secret to the user running the host. It is read only from a
//! directory that user owns and no other user can write, and only from a file that user owns
//! with no group or other permission bits (the rule ssh applies to `~/.ssh`); anything else is
//! refused, because whoever can plant or read the key can sign their own native code as the
//! artifact of any component. New cache directories are created 0700 and new keys 0600.

use sha2::{Digest, Sha256};
use std::fs::{DirBuilder, File, Metadata, OpenOptions, Permissions};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

use self::sealed::Sealed;
use super::loaded::Stamp;

const MAC_LEN: usize = blake3::OUT_LEN;
const KEY_LEN: usize = blake3::KEY_LEN;
const KEY_FILE: &str = "cache.key";
/// Bits a trusted cache directory must not have: group or world write.
const DIR_FORBIDDEN: u32 = 0o022;
/// Bits a trusted key must not have: any group or world permission.
const KEY_FORBIDDEN: u32 = 0o077;

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

/// Why a cache directory or key cannot be trusted with native code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Owned by `owner`, not by the user running the host (`user`, the effective uid).
    Owner { owner: u32, user: u32 },
    /// Its permission bits (`mode`) let other users write the directory, or read or write
    /// the key.
    Mode { mode: u32 },
    /// The directory is not a directory, or the key not a regular file.
    Kind,
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
    BadKey { path: PathBuf, len: u64 },
    #[error("refusing cache directory {dir}: {}", dir_problem(.dir, *.exposure))]
    UntrustedDir { dir: PathBuf, exposure: Exposure },
    #[error("refusing cache key {path}: {}", key_problem(.path, *.exposure))]
    UntrustedKey { path: PathBuf, exposure: Exposure },
}

const FORGERY: &str = "could plant a cache key and have forged native code run as any component";
const ELSEWHERE: &str = "or use another cache directory, or none";

fn dir_problem(dir: &Path, exposure: Exposure) -> String {
    match exposure {
        Exposure::Owner { owner, user } => format!(
            "it is owned by uid {owner}, not by this user (uid {user}), and its owner {FORGERY}; \
             use a directory of your own, or no cache"
        ),
        Exposure::Mode { mode } => format!(
            "its mode is {mode:04o}, so other users can write it and {FORGERY}; run \
             `chmod 700 {}`, {ELSEWHERE}",
            dir.display()
        ),
        Exposure::Kind => "it is not a directory; use another cache directory, or none".to_owned(),
    }
}

fn key_problem(path: &Path, exposure: Exposure) -> String {
    const RENEW: &str = "delete it (a new key is made and the cache rebuilt)";
    match exposure {
        Exposure::Owner { owner, user } => format!(
            "it is owned by uid {owner}, not by this user (uid {user}), so its owner knows it \
             and could sign forged native code; {RENEW}, {ELSEWHERE}"
        ),
        Exposure::Mode { mode } => format!(
            "its mode is {mode:04o}, so other users can read or change it and sign forged \
             native code; run `chmod 600 {}` if no one else can have read it, else {RENEW}, \
             {ELSEWHERE}",
            path.display()
        ),
        Exposure::Kind => format!("it is not a regular file; {RENEW}, {ELSEWHERE}"),
    }
}

/// What, if anything, lets another user in: checked on metadata of the directory or of the
/// open key file. Ownership comes first since a chmod cannot fix it.
fn exposure(meta: &Metadata, right_kind: bool, user: u32, forbidden: u32) -> Option<Exposure> {
    if !right_kind {
        Some(Exposure::Kind)
    } else if meta.uid() != user {
        Some(Exposure::Owner {
            owner: meta.uid(),
            user,
        })
    } else if meta.mode() & forbidden != 0 {
        Some(Exposure::Mode {
            mode: meta.mode() & 0o7777,
        })
    } else {
        None
    }
}

/// The effective uid of this process: the user a cache must belong to.
#[expect(
    unsafe_code,
    reason = "geteuid(2) takes no arguments, cannot fail and touches no memory"
)]
fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions; it only reads this process's credentials.
    unsafe { libc::geteuid() }
}

#[derive(Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    key: [u8; KEY_LEN],
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
    /// Opens the cache in `dir`, creating it (and any missing parent) owner-only, after
    /// checking that no other user can plant or read its key.
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, CacheError> {
        let dir_err = |source| CacheError::Dir {
            dir: dir.to_owned(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(dir_err)?;
        let user = effective_uid();
        let meta = std::fs::metadata(dir).map_err(dir_err)?;
        if let Some(exposure) = exposure(&meta, meta.is_dir(), user, DIR_FORBIDDEN) {
            return Err(CacheError::UntrustedDir {
                dir: dir.to_owned(),
                exposure,
            });
        }
        // The parents of `dir` are not checked: whoever could swap `dir` for another
        // directory between this check and the key read still cannot make the read succeed
        // with a key they know, since the key itself is checked on the open file below, and
        // after that every artifact is verified against the key held in memory.
        let key = load_or_create_key(dir, user)?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
            engine_hash: engine_hash(engine),
        })
    }

    fn artifact_path(&self, digest: &str) -> PathBuf {
        let mut name = Sha256::new();
        name.update(digest.as_bytes());
        name.update(self.engine_hash.as_bytes());
        self.dir
            .join(format!("{}.cwasm", hex::encode(name.finalize())))
    }

    /// Where the digest of the component file at `path` is remembered.
    fn digest_path(&self, path: &Path) -> PathBuf {
        let name = blake3::hash(path.as_os_str().as_encoded_bytes());
        self.dir.join(format!("{}.digest", name.to_hex()))
    }

    /// The MAC of `parts` under this cache's key, for a record of `kind`: each part is
    /// length-prefixed, so no two different records hash alike.
    fn mac(&self, kind: &str, parts: &[&[u8]]) -> blake3::Hash {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        for part in std::iter::once(kind.as_bytes()).chain(parts.iter().copied()) {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac.finalize()
    }

    fn artifact_mac(&self, digest: &str, artifact: &[u8]) -> blake3::Hash {
        self.mac(
            "artifact",
            &[self.engine_hash.as_bytes(), digest.as_bytes(), artifact],
        )
    }

    /// The sha256 of the component file at `path` remembered for its identity `stamp`, if
    /// this cache wrote one for exactly that file version.
    pub fn digest_of(&self, path: &Path, stamp: Stamp) -> Option<String> {
        let (body, tag) = read_record(&self.digest_path(path)).ok()?;
        // `Hash` compares in constant time.
        if self.mac("digest", &[path.as_os_str().as_encoded_bytes(), &body]) != tag {
            return None;
        }
        let (stamp_bytes, digest) = body.split_at_checked(Stamp::LEN)?;
        (stamp_bytes == stamp.to_bytes())
            .then(|| String::from_utf8(digest.to_vec()).ok())
            .flatten()
    }

    /// Remembers that the component file at `path`, as identified by `stamp`, has sha256
    /// `digest`. A failure to write only costs the next load a hash.
    pub fn remember_digest(&self, path: &Path, stamp: Stamp, digest: &str) {
        let body = [&stamp.to_bytes()[..], digest.as_bytes()].concat();
        let tag = self.mac("digest", &[path.as_os_str().as_encoded_bytes(), &body]);
        if let Err(e) = self.write_record(&self.digest_path(path), &body, tag) {
            tracing::debug!(path = %path.display(), error = %e, "could not remember a component's digest");
        }
    }

    /// Writes `body` and its MAC `tag` to `dest` in one rename, so a reader finds the whole
    /// record or the one before it.
    fn write_record(&self, dest: &Path, body: &[u8], tag: blake3::Hash) -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(body)?;
        tmp.write_all(tag.as_bytes())?;
        tmp.persist(dest).map_err(|e| e.error)?;
        Ok(())
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

    /// The precompiled artifact of the component with sha256 `digest`, if the cache holds a
    /// sound one.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        self.try_load(engine, digest, &self.artifact_path(digest))
    }

    fn try_load(&self, engine: &Engine, digest: &str, path: &Path) -> Option<Component> {
        // Artifacts need no owner or mode check of their own: each is verified against the
        // key, which `open` made sure only this user knows, so bytes anyone else wrote or
        // changed fail verification and are compiled over; and they hold compiled code of
        // components, nothing secret.
        match Artifact::open(path) {
            Ok(artifact) => self.check_and_load(engine, digest, path, &artifact),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "precompiled component could not be read; recompiling");
                None
            }
        }
    }

    fn check_and_load(
        &self,
        engine: &Engine,
        digest: &str,
        path: &Path,
        artifact: &Artifact,
    ) -> Option<Component> {
        // `Hash` compares in constant time.
        if self.artifact_mac(digest, artifact.bytes()) != artifact.tag {
            tracing::warn!(path = %path.display(), "precompiled component failed its integrity check; recompiling");
            return None;
        }
        // The MAC proves this user's cache wrote these exact bytes for this engine
        // configuration, which is the precondition `deserialize` requires; sealed or in the
        // heap, they cannot change before the engine takes them. Without `/proc` (or where
        // memory files may not be executable) the engine copies them instead of mapping.
        #[expect(unsafe_code, reason = "artifact authenticated by its MAC above")]
        let loaded = artifact
            .path()
            .map(|sealed| unsafe { Component::deserialize_file(engine, sealed) })
            .filter(Result::is_ok)
            .unwrap_or_else(|| unsafe { Component::deserialize(engine, artifact.bytes()) });
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
        let tag = self.artifact_mac(digest, &artifact);
        self.write_record(path, &artifact, tag)?;
        Ok(())
    }
}

/// A record [`ArtifactCache::write_record`] wrote: its body and its MAC.
fn read_record(path: &Path) -> std::io::Result<(Vec<u8>, blake3::Hash)> {
    let mut body = std::fs::read(path)?;
    let split = body
        .len()
        .checked_sub(MAC_LEN)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "too short"))?;
    let tag: [u8; MAC_LEN] = body[split..].try_into().map_err(std::io::Error::other)?;
    body.truncate(split);
    Ok((body, blake3::Hash::from_bytes(tag)))
}

/// An artifact's bytes, read to be checked and loaded.
struct Artifact {
    body: Body,
    tag: blake3::Hash,
}

enum Body {
    /// Sealed in a memory file, which the engine can map.
    Sealed(Sealed),
    /// Read into the heap, where memory files cannot be made (a seccomp filter, or
    /// `vm.memfd_noexec`).
    Read(Vec<u8>),
}

impl Artifact {
    fn open(path: &Path) -> std::io::Result<Self> {
        match Sealed::open::<MAC_LEN>(path) {
            Ok((sealed, tag)) => Ok(Self {
                body: Body::Sealed(sealed),
                tag: blake3::Hash::from_bytes(tag),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(e),
            Err(sealing) => {
                tracing::debug!(path = %path.display(), error = %sealing, "artifact not sealed; reading it instead");
                Self::read(path)
            }
        }
    }

    fn read(path: &Path) -> std::io::Result<Self> {
        let (body, tag) = read_record(path)?;
        Ok(Self {
            body: Body::Read(body),
            tag,
        })
    }

    fn bytes(&self) -> &[u8] {
        match &self.body {
            Body::Sealed(sealed) => sealed.bytes(),
            Body::Read(bytes) => bytes,
        }
    }

    /// A path the engine can map the checked bytes from, if they are sealed.
    fn path(&self) -> Option<PathBuf> {
        match &self.body {
            Body::Sealed(sealed) => Some(sealed.path()),
            Body::Read(_) => None,
        }
    }
}

/// The engine's precompile compatibility hash, stable across processes.
fn engine_hash(engine: &Engine) -> String {
    let mut hasher = ShaHasher::default();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(hasher.0.finalize())
}

fn load_or_create_key(dir: &Path, user: u32) -> Result<[u8; KEY_LEN], CacheError> {
    let path = dir.join(KEY_FILE);
    let dir_err = |source| CacheError::Dir {
        dir: dir.to_owned(),
        source,
    };
    match open_key(&path) {
        Ok(file) => read_key(file, &path, user),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; KEY_LEN] = rand::random();
            let mut tmp = tempfile::Builder::new()
                .prefix(".cache.key")
                .permissions(Permissions::from_mode(0o600))
                .tempfile_in(dir)
                .map_err(dir_err)?;
            tmp.write_all(&key).map_err(dir_err)?;
            match tmp.persist_noclobber(&path) {
                Ok(_) => Ok(key),
                // Another process created the key first: use theirs, checked like any other.
                Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                    let file = open_key(&path).map_err(dir_err)?;
                    read_key(file, &path, user)
                }
                Err(e) => Err(dir_err(e.error)),
            }
        }
        Err(e) => Err(dir_err(e)),
    }
}

/// Opens the key without blocking: a FIFO in its place fails the kind check instead of
/// stalling the host.
fn open_key(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Reads the key from `file` once its owner, mode and kind pass. They are checked on the open
/// file, not on the path, so the file checked is the file read.
fn read_key(file: File, path: &Path, user: u32) -> Result<[u8; KEY_LEN], CacheError> {
    let io_err = |source| CacheError::Dir {
        dir: path.parent().unwrap_or(path).to_owned(),
        source,
    };
    let meta = file.metadata().map_err(io_err)?;
    if let Some(exposure) = exposure(&meta, meta.is_file(), user, KEY_FORBIDDEN) {
        return Err(CacheError::UntrustedKey {
            path: path.to_owned(),
            exposure,
        });
    }
    let mut bytes = Vec::with_capacity(KEY_LEN + 1);
    // Read one byte past a key so an oversized file is reported, never read whole.
    file.take(KEY_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    bytes.try_into().map_err(|_| CacheError::BadKey {
        path: path.to_owned(),
        len: meta.len(),
    })
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

mod sealed;
#[cfg(test)]
mod tests;
