//! JSON-lines logs: requests and responses (for a log shipper, as the
//! ODAHU feedback loop did through FluentD) and feedback.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::Error;

/// One prediction, as logged.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// RFC 3339 time.
    pub time: String,
    /// The request id (also on the response).
    pub request_id: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// `oip`, `mlflow`, `legion`.
    pub protocol: &'static str,
    /// HTTP status.
    pub status: u16,
    /// Time taken.
    pub latency_ms: f64,
    /// The request body.
    pub input: serde_json::Value,
    /// The prediction or the error.
    pub output: serde_json::Value,
}

/// One piece of feedback.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackRecord {
    /// RFC 3339 time.
    pub time: String,
    /// The prediction's request id.
    pub request_id: String,
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// What the client sent.
    pub payload: serde_json::Value,
}

/// A JSON-lines sink written by a background task, so a slow disk never
/// holds up a prediction. Lines are flushed as written.
#[derive(Clone)]
pub struct JsonLines {
    tx: mpsc::UnboundedSender<String>,
}

impl JsonLines {
    /// Appends to `path`, or writes to stdout for `-`.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let mut out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| Error::Log {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| Error::Log {
                        path: path.to_path_buf(),
                        source,
                    })?,
            )
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let name = path.display().to_string();
        tokio::task::spawn_blocking(move || {
            while let Some(line) = rx.blocking_recv() {
                if let Err(e) = writeln!(out, "{line}").and_then(|_| out.flush()) {
                    tracing::warn!("cannot write {name}: {e}");
                }
            }
        });
        Ok(JsonLines { tx })
    }

    /// Queues one record.
    pub fn write<T: Serialize>(&self, record: &T) {
        if let Ok(line) = serde_json::to_string(record) {
            let _ = self.tx.send(line);
        }
    }
}
