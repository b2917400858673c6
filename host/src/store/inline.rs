//! Point reads on SQLite made on the calling thread.
//!
//! sqlx runs every SQLite statement on a thread of the connection's own
//! and tests a connection again (another statement, on that thread) each
//! time its pool takes it back. For a read by primary key those hand-offs
//! between threads were most of the cost: measured on one core, ~70 of the
//! ~130 µs of CPU a `GET /api/v1/trainings/{id}` took. In WAL mode a
//! reader never waits for the writer, and such a read takes a few
//! microseconds, so it is made right where it is asked for, on a
//! read-only connection of rusqlite (the same SQLite library sqlx links).
//!
//! Only short point reads come here; anything that scans stays on sqlx.
//! A connection in use elsewhere, or any error of SQLite's (a busy
//! database during WAL recovery, a connection that cannot open), sends
//! the read back to sqlx: this never waits, never sleeps in SQLite's busy
//! handler on an async thread, and never answers differently from sqlx.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

/// A few read-only connections to one SQLite file, opened when first used.
pub(crate) struct InlineReads {
    path: PathBuf,
    conns: Vec<Mutex<Option<Connection>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for InlineReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineReads")
            .field("path", &self.path)
            .field("connections", &self.conns.len())
            .finish()
    }
}

impl InlineReads {
    /// Up to `n` connections to the database at `path`.
    pub(crate) fn new(path: PathBuf, n: usize) -> Self {
        InlineReads {
            path,
            conns: (0..n.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Runs `read` on a connection no one else holds; `None` when there is
    /// none free or SQLite failed (the caller then reads through sqlx).
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Option<T> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.conns.len();
        for i in 0..n {
            let Ok(mut slot) = self.conns[(start + i) % n].try_lock() else {
                continue;
            };
            if slot.is_none() {
                *slot = self.open().ok();
            }
            let conn = slot.as_ref()?;
            return match read(conn) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::debug!(error = %e, "an inline read went to sqlx");
                    None
                }
            };
        }
        None
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Busy means "ask sqlx", at once: never a sleep on this thread.
        conn.busy_timeout(std::time::Duration::ZERO)?;
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads() -> (tempfile::TempDir, InlineReads) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (7);",
        )
        .unwrap();
        (dir, InlineReads::new(path, 2))
    }

    fn value(c: &Connection) -> rusqlite::Result<i64> {
        c.query_row("SELECT v FROM t", [], |r| r.get(0))
    }

    /// A read takes a free connection, never waits for a held one, and
    /// hands SQLite's errors back as "ask sqlx".
    #[test]
    fn a_read_never_waits_and_an_error_goes_back_to_sqlx() {
        let (_dir, reads) = reads();
        assert_eq!(reads.read(value), Some(7));
        let first = reads.conns[0].lock().unwrap();
        assert_eq!(reads.read(value), Some(7), "the other connection");
        let second = reads.conns[1].lock().unwrap();
        assert_eq!(reads.read(value), None, "both held: no wait");
        drop((first, second));
        assert_eq!(
            reads.read(|c| c.query_row("SELECT nope FROM t", [], |r| r.get::<_, i64>(0))),
            None
        );
        assert_eq!(
            reads.read(|c| c.execute("INSERT INTO t VALUES (8)", [])),
            None,
            "read-only"
        );
        assert_eq!(reads.read(value), Some(7));
    }

    /// A file that is not there is not created: the read goes to sqlx.
    #[test]
    fn a_missing_database_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.db");
        let reads = InlineReads::new(path.clone(), 1);
        assert_eq!(reads.read(value), None);
        assert!(!path.exists());
    }
}
