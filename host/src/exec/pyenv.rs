//! Python environments for plans: one venv per distinct (Python version,
//! requirements), created on first use and reused by every later run that
//! asks for the same thing.
//!
//! A venv cannot be moved once created (its scripts name its path), so it is
//! built in place under an exclusive lock and marked ready only when pip has
//! finished; a half-built one (a crash, a failed install) is removed and
//! rebuilt on the next use.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use sha2::{Digest, Sha256};
use tokio::process::Command;

use super::RunLog;
use crate::plan::PythonEnvironment;
use crate::Error;

const READY: &str = ".legion-ready";

/// Where environments live, and which Python makes them.
#[derive(Debug, Clone)]
pub struct PythonEnvs {
    root: PathBuf,
}

impl PythonEnvs {
    /// Environments under `root` (`LEGION_ENV_DIR`, or `<data>/envs`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PythonEnvs { root: root.into() }
    }

    /// The folder of the environment for `env`.
    pub fn path(&self, env: &PythonEnvironment) -> PathBuf {
        self.root.join(key(env))
    }

    /// Returns the venv for `env`, creating it if needed; pip's output goes
    /// to `log`.
    pub async fn ensure(&self, env: &PythonEnvironment, log: &RunLog) -> Result<PathBuf, Error> {
        let dir = self.path(env);
        if dir.join(READY).is_file() {
            log.note(&format!("python environment {} (reused)", dir.display()));
            return Ok(dir);
        }
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let lock_path = dir.with_extension("lock");
        let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        // Another run may be building the same environment: wait for it.
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|_| lock))
            .await
            .map_err(|e| Error::io(&lock_path, std::io::Error::other(e)))?
            .map_err(|e| Error::io(&lock_path, e))?;
        let result = self.build(env, &dir, log).await;
        let _ = lock.unlock();
        result.map(|_| dir)
    }

    async fn build(&self, env: &PythonEnvironment, dir: &Path, log: &RunLog) -> Result<(), Error> {
        if dir.join(READY).is_file() {
            log.note(&format!(
                "python environment {} (built by another run)",
                dir.display()
            ));
            return Ok(());
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let python = interpreter(env.python_version.as_deref())?;
        log.note(&format!(
            "creating python environment {} with {python}",
            dir.display()
        ));
        let made = async {
            run(
                Command::new(&python).arg("-m").arg("venv").arg(dir),
                "python -m venv",
                log,
            )
            .await?;
            if !env.requirements.is_empty() {
                let reqs = dir.join("legion-requirements.txt");
                std::fs::write(&reqs, env.requirements.join("\n") + "\n")
                    .map_err(|e| Error::io(&reqs, e))?;
                let pip = dir.join("bin").join("pip");
                log.note(&format!("pip install {}", env.requirements.join(" ")));
                run(
                    Command::new(&pip)
                        .args([
                            "install",
                            "--disable-pip-version-check",
                            "--no-input",
                            "--progress-bar",
                            "off",
                            "-r",
                        ])
                        .arg(&reqs),
                    "pip install",
                    log,
                )
                .await?;
            }
            std::fs::write(dir.join(READY), "").map_err(|e| Error::io(dir, e))
        }
        .await;
        if made.is_err() {
            let _ = std::fs::remove_dir_all(dir);
        }
        made
    }
}

/// The key of an environment: its Python version and its requirement lines
/// (trimmed, in order: pip resolves in order, so order matters).
fn key(env: &PythonEnvironment) -> String {
    let mut h = Sha256::new();
    h.update(env.python_version.as_deref().unwrap_or("default"));
    for r in &env.requirements {
        h.update(b"\n");
        h.update(r.trim());
    }
    hex::encode(&h.finalize()[..8])
}

/// The interpreter for `version`: `LEGION_PYTHON` if set, else
/// `python<version>` or `python3` from `PATH`.
pub(crate) fn interpreter(version: Option<&str>) -> Result<String, Error> {
    if let Ok(p) = std::env::var("LEGION_PYTHON") {
        return Ok(p);
    }
    let candidates = match version {
        Some(v) => vec![format!("python{v}"), "python3".to_string()],
        None => vec!["python3".to_string()],
    };
    for c in &candidates {
        let Ok(out) = std::process::Command::new(c)
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
            .output()
        else {
            continue;
        };
        let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match version {
            Some(v) if !same_version(v, &found) => continue,
            _ => return Ok(c.clone()),
        }
    }
    Err(Error::InvalidArgument {
        field: "python version".into(),
        message: format!(
            "the plan asks for Python {} but none of {} is on PATH (set LEGION_PYTHON to an interpreter)",
            version.unwrap_or("3"),
            candidates.join(", ")
        ),
    })
}

/// Whether two versions agree on every component both name: `3`, `3.11`
/// and `3.11.7` agree; `3.1` and `3.11` do not.
fn same_version(a: &str, b: &str) -> bool {
    a.trim()
        .split('.')
        .zip(b.trim().split('.'))
        .all(|(x, y)| x == y)
}

/// Runs `cmd` to the end with its output in `log`; a failure names
/// `what` and quotes the last lines.
pub(crate) async fn run(cmd: &mut Command, what: &str, log: &RunLog) -> Result<(), Error> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| Error::Environment {
        message: format!("cannot run {what}: {e}"),
    })?;
    let pump = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
        let log = log.clone();
        async move {
            if let Some(pipe) = pipe {
                legion_serve::lines::for_each_line(pipe, |line| log.line(line)).await;
            }
        }
    };
    let out = pump(child.stdout.take().map(|p| Box::new(p) as _));
    let err = pump(child.stderr.take().map(|p| Box::new(p) as _));
    let (status, _, _) = tokio::join!(child.wait(), out, err);
    let status = status.map_err(|e| Error::Environment {
        message: format!("{what}: {e}"),
    })?;
    if !status.success() {
        let tail = log.tail(15).join("\n  ");
        return Err(Error::Environment {
            message: format!("{what} failed ({status}); last lines:\n  {tail}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_component() {
        assert!(same_version("3.11", "3.11"));
        assert!(same_version("3", "3.11"));
        assert!(same_version("3.11.7", "3.11"));
        assert!(!same_version("3.1", "3.11"));
        assert!(!same_version("3.11", "3.1"));
        assert!(!same_version("3.12", "3.11"));
    }
}
