//! Where a ledger lives: a SQLite file (the default), or a PostgreSQL database named by URL.
//! One string selects it (`ledger = …` in the config, `--ledger`, `TOLLGATE_LEDGER`), so the
//! operator never names a backend separately.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::contract::Ledger;
use crate::error::LedgerError;
use crate::pg::{PgLedger, PgOptions, redact};
use crate::sqlite::{LedgerOptions, SqliteLedger};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file at this path.
    File(PathBuf),
    /// A PostgreSQL database (`postgres://…` or `postgresql://…`).
    Postgres(String),
}

impl Location {
    /// A URL with a PostgreSQL scheme is a database; anything else is a file path.
    pub fn parse(given: &Path) -> Self {
        match given.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Self::Postgres(url.to_owned())
            }
            _ => Self::File(given.to_owned()),
        }
    }

    /// Opens (and migrates, or creates as `options.create` allows) the ledger here.
    pub fn open(&self, options: LedgerOptions) -> Result<Arc<dyn Ledger>, LedgerError> {
        Ok(match self {
            Self::File(path) => Arc::new(SqliteLedger::open(path, options)?),
            Self::Postgres(url) => Arc::new(PgLedger::open(
                url,
                PgOptions {
                    create: options.create,
                    ..PgOptions::default()
                },
            )?),
        })
    }
}

impl fmt::Display for Location {
    /// The file's path, or the URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_select_postgres_and_everything_else_is_a_file() {
        for url in [
            "postgres://u@h/db",
            "postgresql://u:p@h:5433/db?sslmode=disable",
        ] {
            assert_eq!(
                Location::parse(Path::new(url)),
                Location::Postgres(url.to_owned())
            );
        }
        for path in [
            ".tollgate/ledger.db",
            "/var/lib/postgres://x",
            "postgres.db",
        ] {
            assert_eq!(
                Location::parse(Path::new(path)),
                Location::File(PathBuf::from(path))
            );
        }
    }

    #[test]
    fn a_location_never_shows_a_password() {
        let shown = Location::parse(Path::new("postgres://tollgate:s3cret@db:5432/ledger"));
        assert_eq!(shown.to_string(), "postgres://tollgate:***@db:5432/ledger");
    }
}
