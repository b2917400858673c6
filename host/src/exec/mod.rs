//! Executors: where a plan's steps run.
//!
//! [`Executor`] is the seam: [`local::LocalExecutor`] runs steps as
//! processes on this machine (the embedded default); the Kubernetes
//! executor runs them as Jobs. Both get the same plan, the same workspace
//! layout and the same event stream, and both keep the full log.

pub mod kube;
pub mod local;
pub mod log;
pub mod pyenv;
pub mod threads;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::plan::{ModelId, Plan};
use crate::store::RunRecord;
use crate::Error;

pub use log::RunLog;

/// A run's folders. Steps see them as `LEGION_SOURCE_DIR`,
/// `LEGION_DATA_DIR`, `LEGION_OUTPUT_DIR` and `LEGION_WORKSPACE`.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The run's folder.
    pub root: PathBuf,
}

impl Workspace {
    /// The workspace at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Workspace { root: root.into() }
    }
    /// Training code.
    pub fn source(&self) -> PathBuf {
        self.root.join("source")
    }
    /// Input data.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    /// What the training writes.
    pub fn output(&self) -> PathBuf {
        self.root.join("output")
    }
    /// A batch job's stored model (a link to its unpacked files); absent
    /// in a training's workspace.
    pub fn model(&self) -> PathBuf {
        self.root.join("model")
    }
    /// Creates the folders (those there already are kept).
    pub fn create(&self) -> Result<(), Error> {
        for dir in [self.root.clone(), self.source(), self.data(), self.output()] {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(())
    }
    /// Where the local executor writes the process group of the step
    /// running now, so a host that restarts after a crash can stop it.
    pub fn step_group_file(&self) -> PathBuf {
        self.root.join("step.pgid")
    }
    /// Starts the workspace over for another attempt of the same run (its
    /// host died): a step the dead host left running is killed, and the
    /// source, data and output folders are emptied. The log stays.
    pub fn restart(&self) -> Result<(), Error> {
        let file = self.step_group_file();
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Ok(pgid) = text.trim().parse::<i32>() {
                if pgid > 1 {
                    // SAFETY: killpg only sends a signal to the group the
                    // step was started in (process_group(0)).
                    unsafe {
                        libc::killpg(pgid, libc::SIGKILL);
                    }
                }
            }
            let _ = std::fs::remove_file(&file);
        }
        for dir in [self.source(), self.data(), self.output()] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&dir, e)),
            }
        }
        self.create()
    }
    /// The `LEGION_*` variables of a step, also substituted as `${NAME}` in
    /// its command, args and env values; `LEGION_MODEL_DIR` only where the
    /// workspace has a model (a batch job).
    pub fn variables(&self, run_id: &str, model: &ModelId) -> Vec<(String, String)> {
        let s = |p: &Path| p.display().to_string();
        let mut vars = vec![
            ("LEGION_RUN_ID".into(), run_id.to_string()),
            ("LEGION_WORKSPACE".into(), s(&self.root)),
            ("LEGION_SOURCE_DIR".into(), s(&self.source())),
            ("LEGION_DATA_DIR".into(), s(&self.data())),
            ("LEGION_OUTPUT_DIR".into(), s(&self.output())),
            ("LEGION_MODEL_NAME".into(), model.name.clone()),
            ("LEGION_MODEL_VERSION".into(), model.version.clone()),
        ];
        if self.model().exists() {
            vars.push(("LEGION_MODEL_DIR".into(), s(&self.model())));
        }
        vars
    }
}

/// Replaces `${NAME}` for each of `vars` in `text`.
pub fn substitute(text: &str, vars: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

/// Everything an executor needs besides the plan.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Run id.
    pub run_id: String,
    /// The model being trained.
    pub model: ModelId,
    /// The run's folders.
    pub workspace: Workspace,
    /// Time allowed for all steps together.
    pub timeout: Duration,
    /// The Python environment's folder (a venv), if the plan asked for one.
    pub python_env: Option<PathBuf>,
    /// The run's log.
    pub log: RunLog,
}

/// How a plan's execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every step exited 0.
    Succeeded,
    /// A step failed: non-zero exit, killed by a signal, or could not start.
    Failed {
        /// The step.
        step: String,
        /// Its exit code, if it exited.
        exit_code: Option<i32>,
        /// What happened.
        message: String,
    },
    /// The run's timeout passed; the step was killed.
    TimedOut {
        /// The step running then.
        step: String,
        /// The timeout.
        after: Duration,
    },
    /// Cancelled (Ctrl-C, API); the step was killed.
    Cancelled {
        /// The step running then.
        step: String,
    },
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// What a person watching a run sees. All methods default to nothing.
pub trait RunEvents: Send + Sync {
    /// A phase of the run began (fetch, plan, environment, collect, store).
    fn phase(&self, _name: &str) {}
    /// Step `index` of `total` started.
    fn step_started(&self, _step: &str, _index: usize, _total: usize) {}
    /// A line of output.
    fn line(&self, _step: &str, _stream: Stream, _line: &str) {}
    /// A step ended.
    fn step_finished(&self, _step: &str, _exit_code: Option<i32>, _elapsed: Duration) {}
    /// The run's Kubernetes Job was created (cluster runs).
    fn job_created(&self, _namespace: &str, _name: &str) {}
    /// The run was written to the store (it exists from here on).
    fn recorded(&self, _run: &RunRecord) {}
    /// The toolchain's plan passed the policy and is stored in the run;
    /// execution starts.
    fn planned(&self, _run: &RunRecord) {}
}

/// No one is watching.
pub struct Quiet;
impl RunEvents for Quiet {}

/// Runs plans.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs `plan`'s steps in order until one fails, the timeout passes or
    /// `cancel` fires, streaming output to `ctx.log` and `events`.
    async fn run(
        &self,
        plan: &Plan,
        ctx: &RunContext,
        events: &dyn RunEvents,
        cancel: CancellationToken,
    ) -> Result<Outcome, Error>;
}
