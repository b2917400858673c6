//! A run's log file: every line of every step, with the host's own notes,
//! appended and flushed as it arrives so that a crash or a Ctrl-C loses
//! nothing and `legion runs logs --follow` sees lines at once.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::Error;

/// Lines of stderr a log keeps in memory, for a failure's reason.
const STDERR_KEPT: usize = 5;

/// Shared handle to a run's log file.
#[derive(Debug, Clone)]
pub struct RunLog {
    path: PathBuf,
    file: Arc<Mutex<Sink>>,
    /// The last lines steps wrote to stderr: a step's error message belongs
    /// in its failure's reason even when its stdout, flushed later (Python
    /// buffers stdout, not stderr), fills the end of the log.
    stderr: Arc<Mutex<VecDeque<String>>>,
}

/// Where a log's lines go.
#[derive(Debug)]
enum Sink {
    /// Kept in memory until [`RunLog::create`]: a run accepted and queued
    /// has no folder yet.
    Pending(Vec<u8>),
    /// The file.
    File(File),
}

impl RunLog {
    /// Opens (appending) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let log = Self::pending(path);
        log.create()?;
        Ok(log)
    }

    /// The log at `path`, its lines kept in memory until
    /// [`RunLog::create`] writes them there.
    pub fn pending(path: &Path) -> Self {
        RunLog {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(Sink::Pending(Vec::new()))),
            stderr: Arc::default(),
        }
    }

    /// Creates (or opens, appending) the file and writes the lines kept
    /// so far into it; from then on lines go straight to the file. Does
    /// nothing the second time.
    pub fn create(&self) -> Result<(), Error> {
        let mut sink = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Sink::Pending(kept) = &*sink {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| Error::io(&self.path, e))?;
            file.write_all(kept).map_err(|e| Error::io(&self.path, e))?;
            *sink = Sink::File(file);
        }
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line. A log that cannot be written is reported once per
    /// line on stderr rather than failing the run it describes.
    pub fn line(&self, text: &str) {
        let mut sink = self.file.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *sink {
            Sink::Pending(kept) => {
                kept.extend_from_slice(text.as_bytes());
                kept.push(b'\n');
            }
            Sink::File(f) => {
                if let Err(e) = writeln!(f, "{text}") {
                    eprintln!("warning: cannot write {}: {e}", self.path.display());
                }
            }
        }
    }

    /// Appends one line a step wrote to stderr, and keeps it for
    /// [`RunLog::stderr_tail`].
    pub fn stderr_line(&self, text: &str) {
        self.line(text);
        let mut kept = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == STDERR_KEPT {
            kept.pop_front();
        }
        kept.push_back(text.to_string());
    }

    /// The last lines steps wrote to stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        let kept = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().cloned().collect()
    }

    /// The last `n` lines of the log, followed by the last lines of stderr
    /// that are not among them: what a failure's reason shows.
    pub fn failure_tail(&self, n: usize) -> Vec<String> {
        let mut tail = self.tail(n);
        let missing: Vec<String> = self
            .stderr_tail()
            .into_iter()
            .filter(|l| !tail.contains(l))
            .collect();
        if !missing.is_empty() {
            tail.push("[legion] last lines of stderr:".to_string());
            tail.extend(missing);
        }
        tail
    }

    /// Appends a host note, marked so it stands out from step output.
    pub fn note(&self, text: &str) {
        self.line(&format!("[legion] {text}"));
    }

    /// The last `n` lines of the log.
    pub fn tail(&self, n: usize) -> Vec<String> {
        if let Sink::Pending(kept) = &*self.file.lock().unwrap_or_else(|e| e.into_inner()) {
            return last_lines(kept, n);
        }
        tail_lines(&self.path, n)
    }
}

/// The last `n` lines of a log file (empty if it cannot be read).
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    last_lines(&std::fs::read(path).unwrap_or_default(), n)
}

fn last_lines(text: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_log_keeps_its_lines_until_it_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("legion.log");
        let log = RunLog::pending(&path);
        log.note("accepted");
        log.line("planned");
        assert!(!path.exists(), "nothing on disk before create");
        assert_eq!(log.tail(1), ["planned"]);
        log.create().unwrap();
        log.line("started");
        log.create().unwrap(); // the second time changes nothing
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "[legion] accepted\nplanned\nstarted\n");
        assert_eq!(log.tail(2), ["planned", "started"]);
    }

    #[test]
    fn a_failure_tail_keeps_stderr_that_stdout_pushed_out() {
        let dir = tempfile::tempdir().unwrap();
        let log = RunLog::open(&dir.path().join("run.log")).unwrap();
        log.stderr_line("the data is broken");
        for i in 0..30 {
            log.line(&format!("line {i}"));
        }
        let tail = log.failure_tail(3);
        assert_eq!(
            tail,
            [
                "line 27",
                "line 28",
                "line 29",
                "[legion] last lines of stderr:",
                "the data is broken"
            ]
        );
        log.stderr_line("late");
        assert_eq!(
            log.failure_tail(2),
            [
                "line 29",
                "late",
                "[legion] last lines of stderr:",
                "the data is broken"
            ]
        );
    }
}
