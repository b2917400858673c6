//! A run's log file: every line of every step, with the host's own notes,
//! appended and flushed as it arrives so that a crash or a Ctrl-C loses
//! nothing and `legion runs logs --follow` sees lines at once.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::Error;

/// Shared handle to a run's log file.
#[derive(Debug, Clone)]
pub struct RunLog {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl RunLog {
    /// Opens (appending) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(RunLog {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line. A log that cannot be written is reported once per
    /// line on stderr rather than failing the run it describes.
    pub fn line(&self, text: &str) {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(f, "{text}") {
            eprintln!("warning: cannot write {}: {e}", self.path.display());
        }
    }

    /// Appends a host note, marked so it stands out from step output.
    pub fn note(&self, text: &str) {
        self.line(&format!("[legion] {text}"));
    }

    /// The last `n` lines of the file.
    pub fn tail(&self, n: usize) -> Vec<String> {
        tail_lines(&self.path, n)
    }
}

/// The last `n` lines of a log file (empty if it cannot be read).
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
