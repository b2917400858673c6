//! Legion's state: toolchains now, runs and logs with the training issue.
//!
//! SQLite in the data directory is the embedded default. Every write is a
//! single statement or a transaction, committed before the command reports
//! success, so what the user was told is what is on disk.

mod runs;
mod toolchains;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use runs::{
    JobRef, Lease, RunCursor, RunEvent, RunFilter, RunKind, RunPlan, RunRecord, RunRequest,
    RunState,
};
pub use toolchains::ToolchainRow;

use crate::Error;

/// Schema, applied in order; the index of the last applied statement is
/// kept in SQLite's `user_version`.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE toolchains (
        name        TEXT PRIMARY KEY,
        digest      TEXT NOT NULL,
        interfaces  TEXT NOT NULL,
        contract    TEXT NOT NULL,
        info        TEXT NOT NULL,
        config      TEXT NOT NULL,
        builtin     INTEGER NOT NULL,
        size        INTEGER NOT NULL,
        added_at    INTEGER NOT NULL
    )",
    "CREATE TABLE runs (
        id               TEXT PRIMARY KEY,
        toolchain        TEXT NOT NULL,
        toolchain_digest TEXT NOT NULL,
        model_name       TEXT NOT NULL,
        model_version    TEXT NOT NULL,
        state            TEXT NOT NULL,
        request          TEXT NOT NULL,
        plan             TEXT,
        exit_code        INTEGER,
        reason           TEXT,
        created_at       INTEGER NOT NULL,
        started_at       INTEGER,
        finished_at      INTEGER,
        model_digest     TEXT,
        model_ref        TEXT,
        pushed_ref       TEXT,
        source_commit    TEXT,
        workspace        TEXT NOT NULL,
        log_path         TEXT NOT NULL,
        pid              INTEGER
    )",
    "CREATE INDEX runs_created ON runs (created_at)",
    "ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'training'",
    "ALTER TABLE runs ADD COLUMN image_ref TEXT",
    "ALTER TABLE runs ADD COLUMN image_digest TEXT",
    "ALTER TABLE runs ADD COLUMN job TEXT",
    // The API's runs: the replica holding the run, until when, the request
    // it was made from (to start it again), and a cancel asked elsewhere.
    "ALTER TABLE runs ADD COLUMN owner TEXT",
    "ALTER TABLE runs ADD COLUMN lease_until INTEGER",
    "ALTER TABLE runs ADD COLUMN spec TEXT",
    "ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX runs_owner ON runs (owner, state)",
    // Every state a run enters, in order: the API's event stream and its
    // resumable cursor. Written by triggers, so no writer can forget one.
    "CREATE TABLE events (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id        TEXT NOT NULL,
        kind          TEXT NOT NULL,
        state         TEXT NOT NULL,
        model_name    TEXT NOT NULL,
        model_version TEXT NOT NULL,
        toolchain     TEXT NOT NULL,
        at            INTEGER NOT NULL
    )",
    "CREATE TRIGGER runs_inserted AFTER INSERT ON runs BEGIN
        INSERT INTO events (run_id, kind, state, model_name, model_version, toolchain, at)
        VALUES (NEW.id, NEW.kind, NEW.state, NEW.model_name, NEW.model_version, NEW.toolchain,
                CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
    END",
    "CREATE TRIGGER runs_state AFTER UPDATE OF state ON runs WHEN OLD.state <> NEW.state BEGIN
        INSERT INTO events (run_id, kind, state, model_name, model_version, toolchain, at)
        VALUES (NEW.id, NEW.kind, NEW.state, NEW.model_name, NEW.model_version, NEW.toolchain,
                CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
    END",
];

/// The state database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings
    /// its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let db_err = |e: sqlx::Error| Error::Database {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(db_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // Turning a new database into WAL mode takes an exclusive lock
        // that SQLite's busy timeout does not wait for, so two processes
        // opening a new database at once could fail with "database is
        // locked". Opening (and migrating) is serialised by a lock file.
        let lock_path = path.with_extension("db.lock");
        let lock = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
            file.lock().map_err(|e| Error::io(&lock_path, e))?;
            Ok::<_, Error>(file)
        })
        .await
        .map_err(|e| Error::Database {
            path: path.to_path_buf(),
            message: format!("waiting for the open lock: {e}"),
        })??;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(db_err)?;
        let store = Store {
            pool,
            path: path.to_path_buf(),
        };
        let migrated = store.migrate().await;
        let _ = lock.unlock();
        migrated?;
        Ok(store)
    }

    /// Applies the missing migrations. `BEGIN IMMEDIATE` takes the write
    /// lock before reading the schema version, so two processes opening a
    /// new database at once apply each migration exactly once.
    async fn migrate(&self) -> Result<(), Error> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.err(e))?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(|e| self.err(e))?;
        let applied = async {
            let version: i64 = sqlx::query_scalar("PRAGMA user_version")
                .fetch_one(&mut *conn)
                .await?;
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
                sqlx::query(sql).execute(&mut *conn).await?;
                sqlx::query(&format!("PRAGMA user_version = {}", i + 1))
                    .execute(&mut *conn)
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        let end = if applied.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let ended = sqlx::query(end).execute(&mut *conn).await;
        applied.map_err(|e| self.err(e))?;
        ended.map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(crate) fn err(&self, e: sqlx::Error) -> Error {
        Error::Database {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Closes the pool, flushing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
