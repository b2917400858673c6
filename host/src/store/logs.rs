//! Run logs kept in a shared database, for readers on other machines.
//!
//! A run's log is a file on the machine that runs it (`exec::log`): the
//! source of truth, appended and flushed line by line. When the store is
//! shared (PostgreSQL), the API replicas and the operator are separate
//! processes on separate machines — an API pod cannot read the operator
//! pod's files — so the log is also copied into `run_logs`, in chunks
//! keyed by their byte position in the file:
//!
//! - while the run is live, the writer's process copies what grew every
//!   [`SHIP_EVERY`] (one task per process, started with the first run);
//! - each write of a final state first copies the rest, so a reader that
//!   sees the run over and reads to the end has the whole log.
//!
//! On SQLite every reader is on the writer's machine and reads the file:
//! nothing is copied.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{Backend, RunRecord, Store};
use crate::Error;

/// How often a live run's new log bytes are copied.
pub const SHIP_EVERY: Duration = Duration::from_secs(1);
/// Largest chunk written at once.
const CHUNK: usize = 256 * 1024;

/// Where the copy of one live log stands.
#[derive(Debug)]
struct Shipped {
    path: PathBuf,
    /// Bytes of the file copied so far.
    file_pos: u64,
    /// Where the next chunk goes in the stored log.
    stored_pos: i64,
}

/// The live logs this process copies. One lock over all: a copy is a
/// read and an insert, and two copies of one log must not interleave (the
/// second would insert the same position with more bytes, and lose them
/// to the first's row).
/// The logs being copied. The map's lock is held only to look up or
/// change the map, never across a copy: a copy holds its own run's entry,
/// so a slow database delays that run's log, not every run's state writes.
#[derive(Debug, Default)]
pub(crate) struct Shipper {
    live: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Shipped>>>>,
    started: std::sync::atomic::AtomicBool,
}

impl Shipper {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Shipped>>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store {
    /// Whether processes on several machines share this store
    /// (PostgreSQL): run logs are then copied into it.
    pub fn shared(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// Called on each write of `run`: a live run's log is copied from now
    /// on; a final one's rest is copied before its state is written.
    pub(crate) async fn ship_log(&self, run: &RunRecord) {
        if !self.shared() || run.log_path.is_empty() {
            return;
        }
        let path = Path::new(&run.log_path);
        if run.state.is_final() {
            let entry = self.shipper.map().remove(&run.id);
            let entry = match entry {
                Some(e) => Some(e),
                None => self
                    .start_shipping(&run.id, path)
                    .await
                    .map(|e| Arc::new(tokio::sync::Mutex::new(e))),
            };
            if let Some(e) = entry {
                // Waits for a copy of this run's log under way, then
                // copies what is left.
                let mut e = e.lock().await;
                if let Err(err) = self.copy_new(&run.id, &mut e).await {
                    tracing::warn!(run = %run.id, error = %err, "cannot store the end of a run's log");
                }
            }
            return;
        }
        if !self.shipper.map().contains_key(&run.id) {
            if let Some(e) = self.start_shipping(&run.id, path).await {
                self.shipper
                    .map()
                    .entry(run.id.clone())
                    .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(e)));
            }
        }
        if !self
            .shipper
            .started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let store = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(SHIP_EVERY).await;
                    store.ship_live().await;
                }
            });
        }
    }

    /// Where copying `path` starts: where the stored copy ends, reading the
    /// file from there if it holds that much (the same file, reopened), else
    /// from its start (a new file for the same run, on a new machine).
    /// `None` if the file is not on this machine.
    async fn start_shipping(&self, id: &str, path: &Path) -> Option<Shipped> {
        let len = tokio::fs::metadata(path).await.ok()?.len();
        let stored_pos = match self.stored_log_len(id).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(run = %id, error = %e, "cannot read a stored log's length");
                return None;
            }
        };
        let file_pos = if len >= stored_pos as u64 {
            stored_pos as u64
        } else {
            0
        };
        Some(Shipped {
            path: path.to_path_buf(),
            file_pos,
            stored_pos,
        })
    }

    async fn ship_live(&self) {
        let live: Vec<_> = self
            .shipper
            .map()
            .iter()
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        for (id, e) in live {
            let mut e = e.lock().await;
            if let Err(err) = self.copy_new(&id, &mut e).await {
                tracing::warn!(run = %id, error = %err, "cannot store a run's log");
            }
        }
    }

    /// Copies what the file gained since the last copy.
    async fn copy_new(&self, id: &str, e: &mut Shipped) -> Result<(), Error> {
        let mut file = match tokio::fs::File::open(&e.path).await {
            Ok(f) => f,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(Error::io(&e.path, err)),
        };
        file.seek(std::io::SeekFrom::Start(e.file_pos))
            .await
            .map_err(|err| Error::io(&e.path, err))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|err| Error::io(&e.path, err))?;
            if n == 0 {
                return Ok(());
            }
            self.append_log(id, e.stored_pos, &buf[..n]).await?;
            e.file_pos += n as u64;
            e.stored_pos += n as i64;
        }
    }

    /// Stores `bytes` of run `id`'s log at byte `pos` (once: a chunk
    /// already there stays).
    pub async fn append_log(&self, id: &str, pos: i64, bytes: &[u8]) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO run_logs (run_id, pos, bytes) VALUES ($1, $2, $3)
             ON CONFLICT (run_id, pos) DO NOTHING",
        )
        .bind(id)
        .bind(pos)
        .bind(bytes.to_vec())
        .execute(&self.writer)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// How many bytes of run `id`'s log are stored.
    pub async fn stored_log_len(&self, id: &str) -> Result<i64, Error> {
        let end: Option<i64> = sqlx::query_scalar(
            "SELECT pos + LENGTH(bytes) FROM run_logs WHERE run_id = $1 ORDER BY pos DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(end.unwrap_or(0))
    }

    /// Run `id`'s stored log from byte `pos` (a position a previous read
    /// ended at, or 0), at most `limit` chunks: the bytes and where the
    /// next read starts.
    pub async fn stored_log(
        &self,
        id: &str,
        pos: i64,
        limit: i64,
    ) -> Result<(Vec<u8>, i64), Error> {
        let rows = sqlx::query(
            "SELECT pos, bytes FROM run_logs WHERE run_id = $1 AND pos >= $2 ORDER BY pos LIMIT $3",
        )
        .bind(id)
        .bind(pos)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let mut next = pos;
        for r in rows {
            let at: i64 = r.try_get("pos").map_err(|e| self.err(e))?;
            let bytes: Vec<u8> = r.try_get("bytes").map_err(|e| self.err(e))?;
            if at != next {
                // A gap: a copy in flight. What follows it waits.
                break;
            }
            next = at + bytes.len() as i64;
            out.extend_from_slice(&bytes);
        }
        Ok((out, next))
    }
}

/// A fresh shipper for a new store handle.
pub(crate) fn shipper() -> Arc<Shipper> {
    Arc::new(Shipper::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stored_log_reads_back_in_order_and_stops_at_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        assert!(!store.shared(), "SQLite readers read the file");
        assert_eq!(store.stored_log_len("r").await.unwrap(), 0);
        store.append_log("r", 0, b"one\n").await.unwrap();
        store.append_log("r", 4, b"two\n").await.unwrap();
        // A chunk already stored stays: a second copy changes nothing.
        store.append_log("r", 4, b"TWO and more\n").await.unwrap();
        store.append_log("other", 0, b"x\n").await.unwrap();
        assert_eq!(store.stored_log_len("r").await.unwrap(), 8);
        assert_eq!(
            store.stored_log("r", 0, 10).await.unwrap(),
            (b"one\ntwo\n".to_vec(), 8)
        );
        assert_eq!(
            store.stored_log("r", 4, 10).await.unwrap(),
            (b"two\n".to_vec(), 8)
        );
        assert_eq!(store.stored_log("r", 8, 10).await.unwrap(), (vec![], 8));
        // A chunk past a missing one waits for it.
        store.append_log("r", 12, b"four\n").await.unwrap();
        assert_eq!(
            store.stored_log("r", 0, 10).await.unwrap(),
            (b"one\ntwo\n".to_vec(), 8)
        );
        store.append_log("r", 8, b"3rd\n").await.unwrap();
        assert_eq!(
            store.stored_log("r", 0, 10).await.unwrap(),
            (b"one\ntwo\n3rd\nfour\n".to_vec(), 17)
        );
        // The limit bounds the chunks read at once.
        assert_eq!(
            store.stored_log("r", 0, 2).await.unwrap(),
            (b"one\ntwo\n".to_vec(), 8)
        );
    }
}
