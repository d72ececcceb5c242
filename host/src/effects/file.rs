//! The `file` connector: writes each effect's payload to one file per idempotency key inside
//! a configured directory, atomically (temp file, fsync, rename, fsync of the directory).
//!
//! All access goes through a cap-std `Dir`, so no key can name a path outside that directory.
//! Writing the same key again with the same bytes succeeds without change; with other bytes
//! it is a conflict. Reading a key's file answers whether its effect happened.

use super::connector::{BoxFuture, Connector, ConnectorError, Dispatch, Reconciled, Response};
use crate::failure::FailureClass;
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct FileConnector {
    dir: Arc<Dir>,
    path: PathBuf,
    display: String,
}

impl FileConnector {
    pub fn open(path: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let dir = Dir::open_ambient_dir(path, ambient_authority())
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(Self {
            dir: Arc::new(dir),
            path: path.to_owned(),
            display: path.display().to_string(),
        })
    }

    fn write(&self, call: Dispatch<'_>) -> Result<Response, ConnectorError> {
        let name = file_name(call.key);
        let io_err = |what: &str, e: std::io::Error| {
            ConnectorError::new(
                FailureClass::Transient,
                format!("file {}/{name}: {what}: {e}", self.display),
            )
        };
        match self.holds(&name, call.payload) {
            Ok(Some(true)) => return Ok(self.response(&name, call.payload.len())),
            Ok(Some(false)) => {
                return Err(ConnectorError::new(
                    FailureClass::Conflict,
                    format!(
                        "file {}/{name} already holds different content for key `{}`",
                        self.display, call.key
                    ),
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(io_err("read", e)),
        }
        let tmp = format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple());
        let mut file = self.dir.create(&tmp).map_err(|e| io_err("create", e))?;
        file.write_all(call.payload.as_bytes())
            .map_err(|e| io_err("write", e))?;
        file.sync_all().map_err(|e| io_err("fsync", e))?;
        drop(file);
        self.dir
            .rename(&tmp, &self.dir, &name)
            .map_err(|e| io_err("rename", e))?;
        // The rename is durable only once the directory entry is. cap-std holds the directory
        // as an O_PATH handle, which cannot be fsync'd, so sync a plain read-only handle.
        std::fs::File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("fsync dir", e))?;
        Ok(self.response(&name, call.payload.len()))
    }

    /// Whether the file `name` holds exactly `payload`; `None` when there is no such file.
    /// Reads at most one byte more than the payload, whatever the file has grown to.
    fn holds(&self, name: &str, payload: &str) -> std::io::Result<Option<bool>> {
        use std::io::Read as _;
        let file = match self.dir.open(name) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut existing = Vec::with_capacity(payload.len());
        file.take(
            u64::try_from(payload.len())
                .unwrap_or(u64::MAX)
                .saturating_add(1),
        )
        .read_to_end(&mut existing)?;
        Ok(Some(existing == payload.as_bytes()))
    }

    /// Whether the effect of `key` happened: its file is there with this payload.
    fn look(&self, key: &str, payload: &str) -> Reconciled {
        let name = file_name(key);
        match self.holds(&name, payload) {
            Ok(Some(true)) => Reconciled::Happened(self.response(&name, payload.len())),
            Ok(Some(false)) => Reconciled::Unknown {
                status: None,
                message: format!(
                    "file {}/{name} holds other content than this effect's payload",
                    self.display
                ),
            },
            Ok(None) => Reconciled::NotHappened { status: None },
            Err(e) => Reconciled::Unknown {
                status: None,
                message: format!("file {}/{name}: read: {e}", self.display),
            },
        }
    }

    fn response(&self, name: &str, bytes: usize) -> Response {
        Response {
            status: None,
            body: serde_json::json!({ "file": name, "bytes": bytes }).to_string(),
        }
    }
}

/// A readable, collision-free file name for `key`: its safe characters plus a digest suffix.
fn file_name(key: &str) -> String {
    let safe: String = key
        .chars()
        .take(80)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    format!(
        "{}-{}.json",
        safe.trim_start_matches('.'),
        digest.get(..16).unwrap_or(&digest)
    )
}

impl Connector for FileConnector {
    fn honours_idempotency_keys(&self) -> bool {
        true
    }
    /// The file is the record: reading it answers, and a write either renamed its file into
    /// place or did not, so nothing lands late.
    fn can_reconcile(&self) -> bool {
        true
    }
    fn reconcile<'a>(&'a self, call: Dispatch<'a>) -> BoxFuture<'a, Reconciled> {
        let this = self.clone();
        let (key, payload) = (call.key.to_owned(), call.payload.to_owned());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.look(&key, &payload))
                .await
                .unwrap_or_else(|e| Reconciled::Unknown {
                    status: None,
                    message: format!("file connector task failed: {e}"),
                })
        })
    }
    fn describe(&self) -> String {
        format!("file {}", self.display)
    }
    fn max_response_bytes(&self) -> u64 {
        // `{"file": "<name>", "bytes": n}`, the name at most 80 characters of the key (each
        // up to 4 bytes) plus a digest suffix.
        512
    }
    fn dispatch<'a>(
        &'a self,
        call: Dispatch<'a>,
    ) -> BoxFuture<'a, Result<Response, ConnectorError>> {
        let this = self.clone();
        let call = (
            call.key.to_owned(),
            call.payload.to_owned(),
            call.run_id.to_owned(),
            call.attempt,
            call.kind.to_owned(),
            call.fence,
        );
        Box::pin(async move {
            let (key, payload, run_id, attempt, kind, fence) = call;
            tokio::task::spawn_blocking(move || {
                this.write(Dispatch {
                    run_id: &run_id,
                    attempt,
                    kind: &kind,
                    key: &key,
                    payload: &payload,
                    fence,
                })
            })
            .await
            .unwrap_or_else(|e| {
                Err(ConnectorError::new(
                    FailureClass::Fatal,
                    format!("file connector task failed: {e}"),
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(key: &'a str, payload: &'a str) -> Dispatch<'a> {
        Dispatch {
            run_id: "r",
            attempt: 1,
            kind: "files.export",
            key,
            payload,
            fence: None,
        }
    }

    #[test]
    fn writes_once_per_key_and_detects_changed_content() {
        let tmp = tempfile::tempdir().unwrap();
        let connector = FileConnector::open(tmp.path()).unwrap();
        let first = connector.write(call("export:1", "{\"a\":1}")).unwrap();
        let again = connector.write(call("export:1", "{\"a\":1}")).unwrap();
        assert_eq!(first, again);
        let err = connector.write(call("export:1", "{\"a\":2}")).unwrap_err();
        assert_eq!(err.class, FailureClass::Conflict);
        let files: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "no temp files left behind");
    }

    #[test]
    fn reading_the_file_tells_whether_an_effect_happened() {
        let tmp = tempfile::tempdir().unwrap();
        let connector = FileConnector::open(tmp.path()).unwrap();
        assert_eq!(
            connector.look("export:1", "{}"),
            Reconciled::NotHappened { status: None }
        );
        let written = connector.write(call("export:1", "{\"a\":1}")).unwrap();
        assert_eq!(
            connector.look("export:1", "{\"a\":1}"),
            Reconciled::Happened(written)
        );
        assert!(matches!(
            connector.look("export:1", "{\"a\":2}"),
            Reconciled::Unknown { .. }
        ));
    }

    #[test]
    fn keys_cannot_escape_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let inner = tmp.path().join("out");
        let connector = FileConnector::open(&inner).unwrap();
        connector.write(call("../../etc/passwd", "{}")).unwrap();
        let names: Vec<_> = std::fs::read_dir(&inner)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(
            names[0].to_string_lossy().starts_with("_.._etc_passwd-"),
            "{names:?}"
        );
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
