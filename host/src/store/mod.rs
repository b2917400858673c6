//! Legion's state: toolchains, runs, their events.
//!
//! SQLite in the data directory is the embedded default; PostgreSQL
//! (`--database postgres://…`) lets several API replicas share it. Both
//! are reached through sqlx's `Any` driver with one set of queries
//! (`$N` parameters, which both read); the few statements that differ —
//! schema, claiming a run — are chosen by [`Backend`]. Every write is a
//! single statement or a transaction, committed before the command
//! reports success, so what the user was told is what is on disk.

mod deployments;
mod inline;
mod logs;
mod runs;
mod toolchains;

use std::path::{Path, PathBuf};
use std::sync::Once;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

pub use deployments::{DeploymentRecord, DeploymentState};
pub use runs::{
    JobRef, Lease, RunCursor, RunEvent, RunFilter, RunKind, RunPlan, RunRecord, RunRequest,
    RunState,
};
pub use toolchains::ToolchainRow;

use crate::Error;

/// Which database a store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A file in the data directory.
    Sqlite,
    /// A server.
    Postgres,
}

/// SQLite's schema, applied in order; the index of the last applied
/// statement is kept in SQLite's `user_version`.
const SQLITE_MIGRATIONS: &[&str] = &[
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
    // Registered toolchains' wasm, so that every replica sharing the
    // database can load a toolchain one of them registered.
    "CREATE TABLE toolchain_blobs (
        digest TEXT PRIMARY KEY,
        bytes  BLOB NOT NULL
    )",
    // Deployments the API serves: what is asked (spec), where it is, and
    // the replica serving it, leased like runs.
    "CREATE TABLE deployments (
        name        TEXT PRIMARY KEY,
        spec        TEXT NOT NULL,
        model       TEXT NOT NULL,
        state       TEXT NOT NULL,
        url         TEXT,
        reason      TEXT,
        owner       TEXT,
        lease_until INTEGER,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    )",
    // Run logs copied into a shared database (`store::logs`), in chunks
    // keyed by their byte position.
    "CREATE TABLE run_logs (
        run_id TEXT NOT NULL,
        pos    INTEGER NOT NULL,
        bytes  BLOB NOT NULL,
        PRIMARY KEY (run_id, pos)
    )",
    // Where a toolchain was pulled from (`REGISTRY/REPO@sha256:…`).
    "ALTER TABLE toolchains ADD COLUMN origin TEXT",
    // An API replica's lease on all its runs: one row renewed a second,
    // not every live run's (thousands of queued runs made that renewal a
    // write of thousands of rows, which every create waited behind).
    "CREATE TABLE replicas (
        name        TEXT PRIMARY KEY,
        lease_until INTEGER NOT NULL
    )",
    "INSERT INTO replicas (name, lease_until)
        SELECT owner, MAX(COALESCE(lease_until, 0)) FROM runs WHERE owner IS NOT NULL GROUP BY owner",
    // The few runs with a cancel asked for, looked for each second by
    // their replica: without it that look walked every live run it owns
    // (tens of thousands queued under load, ~10 ms a second).
    "CREATE INDEX runs_cancels ON runs (owner, cancel_requested) WHERE cancel_requested = 1",
];

/// PostgreSQL's schema, applied in order in one transaction under an
/// advisory lock (replicas starting together apply it once); the count
/// applied is kept in `legion_schema`. Integers are `BIGINT` throughout:
/// the `Any` driver reads them as `i64`.
const POSTGRES_MIGRATIONS: &[&str] = &[
    "CREATE TABLE toolchains (
        name        TEXT PRIMARY KEY,
        digest      TEXT NOT NULL,
        interfaces  TEXT NOT NULL,
        contract    TEXT NOT NULL,
        info        TEXT NOT NULL,
        config      TEXT NOT NULL,
        builtin     BIGINT NOT NULL,
        size        BIGINT NOT NULL,
        added_at    BIGINT NOT NULL
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
        exit_code        BIGINT,
        reason           TEXT,
        created_at       BIGINT NOT NULL,
        started_at       BIGINT,
        finished_at      BIGINT,
        model_digest     TEXT,
        model_ref        TEXT,
        pushed_ref       TEXT,
        source_commit    TEXT,
        workspace        TEXT NOT NULL,
        log_path         TEXT NOT NULL,
        pid              BIGINT,
        kind             TEXT NOT NULL DEFAULT 'training',
        image_ref        TEXT,
        image_digest     TEXT,
        job              TEXT,
        owner            TEXT,
        lease_until      BIGINT,
        spec             TEXT,
        cancel_requested BIGINT NOT NULL DEFAULT 0
    )",
    "CREATE INDEX runs_created ON runs (created_at)",
    "CREATE INDEX runs_owner ON runs (owner, state)",
    "CREATE TABLE events (
        seq           BIGSERIAL PRIMARY KEY,
        run_id        TEXT NOT NULL,
        kind          TEXT NOT NULL,
        state         TEXT NOT NULL,
        model_name    TEXT NOT NULL,
        model_version TEXT NOT NULL,
        toolchain     TEXT NOT NULL,
        at            BIGINT NOT NULL
    )",
    // A sequence hands out numbers in call order, not commit order: an
    // event numbered 10 could become visible after 11, and a stream at 11
    // would never see it. One writer of events at a time (a lock held to
    // the commit) makes the numbers follow the commits.
    "CREATE FUNCTION legion_run_event() RETURNS trigger LANGUAGE plpgsql AS $body$
     BEGIN
        IF TG_OP = 'INSERT' OR OLD.state <> NEW.state THEN
            PERFORM pg_advisory_xact_lock(7236001);
            INSERT INTO events (run_id, kind, state, model_name, model_version, toolchain, at)
            VALUES (NEW.id, NEW.kind, NEW.state, NEW.model_name, NEW.model_version, NEW.toolchain,
                    (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT);
        END IF;
        RETURN NEW;
     END $body$",
    "CREATE TRIGGER runs_event AFTER INSERT OR UPDATE OF state ON runs
     FOR EACH ROW EXECUTE FUNCTION legion_run_event()",
    "CREATE TABLE toolchain_blobs (
        digest TEXT PRIMARY KEY,
        bytes  BYTEA NOT NULL
    )",
    "CREATE TABLE deployments (
        name        TEXT PRIMARY KEY,
        spec        TEXT NOT NULL,
        model       TEXT NOT NULL,
        state       TEXT NOT NULL,
        url         TEXT,
        reason      TEXT,
        owner       TEXT,
        lease_until BIGINT,
        created_at  BIGINT NOT NULL,
        updated_at  BIGINT NOT NULL
    )",
    "CREATE TABLE run_logs (
        run_id TEXT NOT NULL,
        pos    BIGINT NOT NULL,
        bytes  BYTEA NOT NULL,
        PRIMARY KEY (run_id, pos)
    )",
    "ALTER TABLE toolchains ADD COLUMN origin TEXT",
    "CREATE TABLE replicas (
        name        TEXT PRIMARY KEY,
        lease_until BIGINT NOT NULL
    )",
    "INSERT INTO replicas (name, lease_until)
        SELECT owner, MAX(COALESCE(lease_until, 0)) FROM runs WHERE owner IS NOT NULL GROUP BY owner",
    "CREATE INDEX runs_cancels ON runs (owner, cancel_requested) WHERE cancel_requested = 1",
];

/// The advisory lock migrations take.
const MIGRATION_LOCK: i64 = 7236000;

/// The state database.
#[derive(Debug, Clone)]
pub struct Store {
    /// Reads (and, on PostgreSQL, writes).
    pool: AnyPool,
    /// Writes. On SQLite one connection: the database has one writer at a
    /// time, and connections of one pool racing for that lock wait in
    /// SQLite's busy handler, which sleeps (1, 2, 5 … 100 ms) — requests
    /// stalled on an idle CPU. One writer connection queues them in the
    /// pool instead, woken as soon as it is free.
    writer: AnyPool,
    /// The file, or the server's URL without its password: for messages.
    path: PathBuf,
    backend: Backend,
    /// Copies run logs into a shared database ([`logs`]).
    shipper: std::sync::Arc<logs::Shipper>,
    /// Runs waiting to be inserted together.
    inserts: std::sync::Arc<runs::InsertQueue>,
    /// Dropped with the last clone of the store: background work on it
    /// (SQLite's checkpoints) stops then.
    alive: std::sync::Arc<()>,
    /// SQLite: point reads made on the asking thread ([`inline`]).
    inline: Option<std::sync::Arc<inline::InlineReads>>,
}

fn install_drivers() {
    static DRIVERS: Once = Once::new();
    DRIVERS.call_once(sqlx::any::install_default_drivers);
}

/// How often the WAL is copied into an SQLite database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// WAL frames (4 KiB pages: ~400 MiB) past which a committing connection
/// checkpoints by itself: only a back-stop, for when nothing else
/// checkpoints or the disk cannot keep up.
///
/// While writes go on without a pause, [`spawn_checkpoints`]'s passive
/// checkpoints copy the WAL into the database but never catch up with its
/// end, so the WAL is not started again and grows. A checkpoint made by
/// the writer itself (SQLite's default, 1,000 frames) does catch up, but
/// holds every write queued behind it for two fsyncs, and the write after
/// it a third (the new WAL header is synced). At 10,000 frames (the value
/// before this one) that was about once a second of creates, and most of
/// the p99 of accepting a run: 55 ms on a quiet disk, up to 855 ms while
/// another process wrote to the same disk; 12 – 19 ms at this value
/// (`docs/benchmarks.md`, "The writer does not checkpoint").
///
/// Readers pay nothing for the longer WAL: a read looks only at frames
/// written after the last checkpoint. The WAL file keeps its largest size
/// (up to ~400 MiB after a long burst) and is reused from its start: it
/// is not cut back (`journal_size_limit`), because freeing that much at
/// once held the writer for 0.4 s on a disk mounted with `discard`.
const WRITER_CHECKPOINT_AT: u32 = 100_000;

/// Copies the WAL into the database every [`CHECKPOINT_EVERY`] on a
/// reader connection (`PASSIVE`: it never waits for, nor blocks, the
/// writer), until the store is dropped or closed. Outside a runtime
/// SQLite's own checkpoints do it.
fn spawn_checkpoints(store: &Store) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (pool, path) = (store.pool.clone(), store.path.clone());
    let alive = std::sync::Arc::downgrade(&store.alive);
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(CHECKPOINT_EVERY).await;
            if pool.is_closed() || alive.strong_count() == 0 {
                return;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                if pool.is_closed() {
                    return;
                }
                tracing::debug!(db = %path.display(), error = %e, "checkpoint");
            }
        }
    });
}

/// `url` without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(unparsable database URL)".into(),
    }
}

impl Store {
    /// Opens the database `url` names: `postgres://…` (or
    /// `postgresql://…`), or `sqlite://PATH`.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Self::open(Path::new(path)).await;
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::InvalidArgument {
                field: "--database".into(),
                message: format!("'{}' is neither postgres://… nor sqlite://…", redact(url)),
            });
        }
        install_drivers();
        let shown = PathBuf::from(redact(url));
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| Error::Database {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        let store = Store {
            writer: pool.clone(),
            pool,
            path: shown,
            backend: Backend::Postgres,
            shipper: logs::shipper(),
            inserts: Default::default(),
            alive: Default::default(),
            inline: None,
        };
        store.migrate_postgres().await?;
        Ok(store)
    }

    /// Opens (creating if needed) the SQLite database at `path` and brings
    /// its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        install_drivers();
        let db_err = |e: sqlx::Error| Error::Database {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
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
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let connect = |n: u32| {
            AnyPoolOptions::new()
                .max_connections(n)
                // A connection to a local file does not go stale the way a
                // socket does; sqlx still tests each one as it is given
                // back. Testing it again as it is taken was a third round
                // trip to the connection's thread for every statement.
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // The busy timeout still serves other processes
                        // (the command line) writing the same file.
                        // Checkpoints (copying the WAL into the database,
                        // with fsyncs) run beside the writer
                        // (`spawn_checkpoints`), not inside a commit:
                        // see `WRITER_CHECKPOINT_AT`.
                        let pragmas = format!(
                            "PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
                             PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_AT}"
                        );
                        conn.execute(pragmas.as_str()).await?;
                        Ok(())
                    })
                })
                .connect(&url)
        };
        let pool = connect(4).await.map_err(db_err)?;
        let writer = connect(1).await.map_err(db_err)?;

        let store = Store {
            pool,
            writer,
            path: path.to_path_buf(),
            backend: Backend::Sqlite,
            shipper: logs::shipper(),
            inserts: Default::default(),
            alive: Default::default(),
            // One for each thread that may read at once: the runtime's
            // workers and the runs' threads, one of each per CPU.
            inline: Some(std::sync::Arc::new(inline::InlineReads::new(
                path.to_path_buf(),
                2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
            ))),
        };
        spawn_checkpoints(&store);
        let migrated = store.migrate_sqlite().await;
        let _ = lock.unlock();
        migrated?;
        Ok(store)
    }

    /// Applies the missing migrations. `BEGIN IMMEDIATE` takes the write
    /// lock before reading the schema version, so two processes opening a
    /// new database at once apply each migration exactly once.
    async fn migrate_sqlite(&self) -> Result<(), Error> {
        let mut conn = self.writer.acquire().await.map_err(|e| self.err(e))?;
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&mut *conn)
            .await
            .map_err(|e| self.err(e))?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(|e| self.err(e))?;
        let applied = async {
            let version: i64 = sqlx::query_scalar("PRAGMA user_version")
                .fetch_one(&mut *conn)
                .await?;
            for (i, sql) in SQLITE_MIGRATIONS
                .iter()
                .enumerate()
                .skip(version.max(0) as usize)
            {
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

    /// Applies the missing migrations in one transaction, under an
    /// advisory lock so that replicas starting together apply each once.
    async fn migrate_postgres(&self) -> Result<(), Error> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
            sqlx::query("CREATE TABLE IF NOT EXISTS legion_schema (version BIGINT NOT NULL)")
                .execute(&mut *tx)
                .await?;
            let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM legion_schema")
                .fetch_one(&mut *tx)
                .await?;
            let version = version.unwrap_or(0).max(0) as usize;
            for sql in POSTGRES_MIGRATIONS.iter().skip(version) {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            if version < POSTGRES_MIGRATIONS.len() {
                sqlx::query("DELETE FROM legion_schema")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO legion_schema (version) VALUES ($1)")
                    .bind(POSTGRES_MIGRATIONS.len() as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        };
        run.await.map_err(|e| self.err(e))
    }

    pub(crate) fn err(&self, e: sqlx::Error) -> Error {
        Error::Database {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Closes the pool (flushing SQLite's WAL).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit does not checkpoint (the task beside the writer does)
    /// until the WAL is far past SQLite's threshold. Read from the
    /// connections themselves, as SQLite applies them.
    #[tokio::test]
    async fn commits_leave_checkpoints_to_the_task_beside_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        for pool in [&store.writer, &store.pool] {
            let mut conn = pool.acquire().await.unwrap();
            let at: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(at, i64::from(WRITER_CHECKPOINT_AT));
        }
    }
}
