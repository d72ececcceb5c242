//! Secrets named in the operator config by where they live, never by value: `{ env = "NAME" }`
//! or `{ file = "/run/secrets/name" }`. The value is read when the server starts, so a
//! missing one stops it with an error that names the source, not the value.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum SecretSource {
    /// An environment variable of the server's process.
    Env { env: String },
    /// A file holding only the secret (a trailing newline is not part of it). A relative
    /// path is taken from the config file's directory.
    File { file: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {name} is not set (or not UTF-8): export it before starting")]
    MissingEnv { name: String },
    #[error("cannot read secret file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{from} is empty")]
    Empty { from: String },
}

impl SecretSource {
    /// The secret's value; `base` resolves a relative file path.
    pub fn read(&self, base: &Path) -> Result<String, SecretError> {
        let value = match self {
            SecretSource::Env { env } => {
                std::env::var(env).map_err(|_| SecretError::MissingEnv { name: env.clone() })?
            }
            SecretSource::File { file } => {
                let path = base.join(file);
                let mut text = std::fs::read_to_string(&path)
                    .map_err(|source| SecretError::Read { path, source })?;
                let kept = text.trim_end_matches(['\r', '\n']).len();
                text.truncate(kept);
                text
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty {
                from: self.to_string(),
            });
        }
        Ok(value)
    }
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env { env } => write!(f, "environment variable {env}"),
            SecretSource::File { file } => write!(f, "secret file {}", file.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_secret_is_read_relative_to_the_config_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.token"), "s3cret-value\n").unwrap();
        let source = SecretSource::File {
            file: "agent.token".into(),
        };
        assert_eq!(source.read(dir.path()).unwrap(), "s3cret-value");
    }

    #[test]
    fn a_missing_or_empty_secret_names_its_source_not_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let unset = SecretSource::Env {
            env: "TOLLGATE_TEST_SURELY_UNSET_VARIABLE".into(),
        };
        let message = unset.read(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("TOLLGATE_TEST_SURELY_UNSET_VARIABLE is not set"),
            "{message}"
        );
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let empty = SecretSource::File {
            file: "empty".into(),
        };
        let message = empty.read(dir.path()).unwrap_err().to_string();
        assert_eq!(message, "secret file empty is empty");
    }

    #[test]
    fn sources_parse_from_toml_tables() {
        #[derive(Deserialize)]
        struct T {
            a: SecretSource,
            b: SecretSource,
        }
        let t: T = toml::from_str("a = { env = \"X\" }\nb = { file = \"/run/s\" }").unwrap();
        assert_eq!(t.a, SecretSource::Env { env: "X".into() });
        assert_eq!(
            t.b,
            SecretSource::File {
                file: "/run/s".into()
            }
        );
    }
}
