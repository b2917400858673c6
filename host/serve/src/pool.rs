//! The worker pool and adaptive batching.
//!
//! Requests wait in one bounded queue. Each worker, when free, takes every
//! request waiting (up to the batch size). At low load a request therefore
//! goes straight to an idle worker, alone, with no added latency. Under
//! concurrent load (the worker's last batch merged several requests) a
//! batch that is not full waits up to the batch delay for as many requests
//! as the last one had, so a model with a large fixed cost per `predict`
//! call answers many rows per call.
//!
//! A worker that dies fails its in-flight requests with "worker crashed"
//! (503), is restarted, and the restart is counted. A model that cannot be
//! loaded `max_load_attempts` times in a row fails the pool: the server
//! stops with the loader's error instead of retrying forever. Dropping the
//! pool stops its workers.
//!
//! Workers are started by a [`Launch`]er: [`PythonLauncher`] in the server,
//! an in-process fake in unit tests, so batching is tested without Python.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch, Mutex};

use crate::frame::{decode_worker_frame, encode_request, FrameError, WorkerFrame};
use crate::metrics::Metrics;
use crate::table::{Prediction, Table};

/// Largest frame a worker may send (a prediction for a very large batch).
const MAX_FRAME: usize = 512 << 20;
/// Lines of a worker's stderr kept to explain a failure.
const STDERR_TAIL: usize = 20;

/// What went wrong with a worker.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The interpreter could not be started.
    #[error("cannot start {}: {source}", python.display())]
    Spawn {
        /// The interpreter.
        python: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The worker could not load the model.
    #[error("the model did not load: {message}")]
    Load {
        /// The loader's error.
        message: String,
    },
    /// The worker's pipe closed: it exited or was killed.
    #[error("the worker exited ({source}){}", tail_text(stderr))]
    Exited {
        /// The read or write that found it gone.
        #[source]
        source: std::io::Error,
        /// Its last lines of stderr.
        stderr: Vec<String>,
    },
    /// A frame larger than allowed.
    #[error("the worker sent a {len}-byte frame, more than the {MAX_FRAME} allowed")]
    FrameTooLarge {
        /// Its length.
        len: usize,
    },
    /// A frame that does not decode.
    #[error("the worker sent a bad frame: {0}")]
    BadFrame(#[from] FrameError),
    /// A frame that does not fit the conversation.
    #[error("unexpected frame from the worker: {0}")]
    UnexpectedFrame(String),
}

fn tail_text(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; its last output:\n  {}", lines.join("\n  "))
    }
}

/// Why a prediction did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PredictError {
    /// The queue is full: try again later (503 + Retry-After).
    #[error("overloaded: the request queue is full, retry later")]
    Overloaded,
    /// The worker died while handling the request (503).
    #[error("the worker crashed while predicting ({0}); it is being restarted, retry")]
    WorkerCrashed(#[source] Arc<PoolError>),
    /// The model's `predict` raised, or answered something unusable.
    #[error("the model failed: {0}")]
    Model(String),
    /// The pool is shutting down.
    #[error("the server is shutting down")]
    Closed,
}

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Worker processes.
    pub workers: usize,
    /// Most rows in one `predict` call.
    pub max_batch_rows: usize,
    /// Longest a free worker waits for a batch to fill.
    pub max_batch_delay: Duration,
    /// Requests that may wait; more are refused.
    pub max_queue: usize,
    /// Failed loads in a row after which the pool gives up.
    pub max_load_attempts: u32,
}

/// A worker's last lines of stderr, kept to explain a failure.
pub type StderrTail = Arc<StdMutex<VecDeque<String>>>;

fn lines_of(tail: &StderrTail) -> Vec<String> {
    tail.lock()
        .map(|t| t.iter().cloned().collect())
        .unwrap_or_default()
}

/// A started worker: its pipes, and the process if there is one.
pub struct WorkerIo {
    /// Where request frames go.
    pub input: Box<dyn AsyncWrite + Unpin + Send>,
    /// Where frames come from.
    pub output: Box<dyn AsyncRead + Unpin + Send>,
    /// The process, killed when this is dropped.
    pub child: Option<Child>,
    /// Its last lines of stderr.
    pub stderr: StderrTail,
}

/// What [`Launch::launch`] returns.
pub type LaunchFuture = Pin<Box<dyn Future<Output = Result<WorkerIo, PoolError>> + Send>>;

/// Starts workers.
pub trait Launch: Send + Sync + 'static {
    /// Starts worker `index`.
    fn launch(&self, index: usize) -> LaunchFuture;
}

/// Starts Python workers: `python -c WORKER_PY MODEL_DIR FLAVOR`. The
/// script is passed inline, so nothing is written to disk (images can run
/// with a read-only root file system).
#[derive(Debug, Clone)]
pub struct PythonLauncher {
    /// The interpreter.
    pub python: PathBuf,
    /// The model's files.
    pub model_dir: PathBuf,
    /// The model's flavor.
    pub flavor: String,
}

impl Launch for PythonLauncher {
    fn launch(&self, index: usize) -> LaunchFuture {
        let this = self.clone();
        Box::pin(async move {
            let mut child = Command::new(&this.python)
                .arg("-c")
                .arg(crate::WORKER_PY)
                .arg(&this.model_dir)
                .arg(&this.flavor)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .env("PYTHONUNBUFFERED", "1")
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| PoolError::Spawn {
                    python: this.python.clone(),
                    source,
                })?;
            let stderr = Arc::new(StdMutex::new(VecDeque::new()));
            if let Some(pipe) = child.stderr.take() {
                let tail = stderr.clone();
                tokio::spawn(crate::lines::for_each_line(pipe, move |line| {
                    tracing::info!(target: "worker", worker = index, "{line}");
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == STDERR_TAIL {
                            t.pop_front();
                        }
                        t.push_back(line.to_string());
                    }
                }));
            }
            let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(PoolError::Spawn {
                    python: this.python.clone(),
                    source: std::io::Error::other("its stdin or stdout is not a pipe"),
                });
            };
            Ok(WorkerIo {
                input: Box::new(input),
                output: Box::new(output),
                child: Some(child),
                stderr,
            })
        })
    }
}

/// Whether the model is loaded.
#[derive(Debug, Clone)]
pub enum LoadState {
    /// No worker has loaded it yet.
    Loading,
    /// A worker loaded it.
    Loaded,
    /// It failed to load too many times in a row.
    Failed(Arc<PoolError>),
}

struct Job {
    table: Table,
    reply: oneshot::Sender<Result<Prediction, PredictError>>,
}

/// The running pool.
pub struct Pool {
    queue: mpsc::Sender<Job>,
    ready: Arc<AtomicUsize>,
    state: watch::Receiver<LoadState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Aborting the tasks drops the workers, which kills them.
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What every worker task shares.
struct Shared {
    config: PoolConfig,
    launcher: Box<dyn Launch>,
    queue: Mutex<mpsc::Receiver<Job>>,
    ready: Arc<AtomicUsize>,
    state: watch::Sender<LoadState>,
    metrics: Arc<Metrics>,
}

impl Pool {
    /// Starts the workers. They load the model in the background;
    /// [`Pool::ready_workers`] says how many have, [`Pool::loaded`] waits.
    pub fn start(config: PoolConfig, launcher: impl Launch, metrics: Arc<Metrics>) -> Pool {
        let (tx, rx) = mpsc::channel(config.max_queue.max(1));
        let (state, state_rx) = watch::channel(LoadState::Loading);
        let ready = Arc::new(AtomicUsize::new(0));
        let workers = config.workers.max(1);
        let shared = Arc::new(Shared {
            config,
            launcher: Box::new(launcher),
            queue: Mutex::new(rx),
            ready: ready.clone(),
            state,
            metrics: metrics.clone(),
        });
        let tasks = (0..workers)
            .map(|i| tokio::spawn(worker_loop(i, shared.clone())))
            .collect();
        Pool {
            queue: tx,
            ready,
            state: state_rx,
            tasks,
            metrics,
        }
    }

    /// Workers with the model loaded.
    pub fn ready_workers(&self) -> usize {
        self.ready.load(Ordering::Relaxed)
    }

    /// Waits until a worker has loaded the model, or loading failed.
    pub async fn loaded(&self) -> Result<(), Arc<PoolError>> {
        let mut rx = self.state.clone();
        let state = rx
            .wait_for(|s| !matches!(s, LoadState::Loading))
            .await
            .map(|s| s.clone());
        match state {
            Ok(LoadState::Failed(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Waits until loading has failed for good (never returns while the
    /// model loads).
    pub async fn failed(&self) -> Arc<PoolError> {
        let mut rx = self.state.clone();
        if let Ok(s) = rx.wait_for(|s| matches!(s, LoadState::Failed(_))).await {
            if let LoadState::Failed(e) = &*s {
                return e.clone();
            }
        }
        // The pool is gone: nothing can fail any more.
        std::future::pending().await
    }

    /// Requests waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Predicts `table`, waiting for a worker.
    pub async fn predict(&self, table: Table) -> Result<Prediction, PredictError> {
        let (reply, rx) = oneshot::channel();
        match self.queue.try_send(Job { table, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(PredictError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(PredictError::Closed),
        }
        // Counted up here and down as workers take jobs: exact once quiet.
        self.metrics.queue_depth.inc();
        rx.await.unwrap_or(Err(PredictError::Closed))
    }
}

async fn read_frame(
    output: &mut (dyn AsyncRead + Unpin + Send),
    tail: &StderrTail,
) -> Result<WorkerFrame, PoolError> {
    let exited = |source| PoolError::Exited {
        source,
        stderr: lines_of(tail),
    };
    let mut len = [0u8; 4];
    output.read_exact(&mut len).await.map_err(exited)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(PoolError::FrameTooLarge { len });
    }
    let mut buf = vec![0u8; len];
    output.read_exact(&mut buf).await.map_err(exited)?;
    Ok(decode_worker_frame(&buf)?)
}

impl WorkerIo {
    async fn read(&mut self) -> Result<WorkerFrame, PoolError> {
        read_frame(self.output.as_mut(), &self.stderr).await
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), PoolError> {
        let sent = async {
            self.input
                .write_all(&(frame.len() as u32).to_le_bytes())
                .await?;
            self.input.write_all(frame).await?;
            self.input.flush().await
        }
        .await;
        sent.map_err(|source| PoolError::Exited {
            source,
            stderr: lines_of(&self.stderr),
        })
    }
}

/// Launches a worker and waits for its ready frame.
async fn start_worker(
    index: usize,
    shared: &Shared,
) -> Result<(WorkerIo, serde_json::Value), PoolError> {
    let mut io = shared.launcher.launch(index).await?;
    match io.read().await? {
        WorkerFrame::Ready(info) => Ok((io, info)),
        WorkerFrame::Error(_, message) => Err(PoolError::Load { message }),
        other => Err(PoolError::UnexpectedFrame(format!(
            "expected a ready frame, got {other:?}"
        ))),
    }
}

async fn worker_loop(index: usize, shared: Arc<Shared>) {
    let mut batch_id: u64 = 0;
    let mut last_jobs = 0usize;
    let mut failures = 0u32;
    let mut backoff = Duration::from_millis(100);
    let metrics = &shared.metrics;
    loop {
        let started = Instant::now();
        let (mut worker, info) = match start_worker(index, &shared).await {
            Ok(w) => w,
            Err(e) => {
                failures += 1;
                tracing::error!(
                    worker = index,
                    attempt = failures,
                    "the worker could not load the model: {e}"
                );
                if failures >= shared.config.max_load_attempts.max(1) {
                    shared.state.send_replace(LoadState::Failed(Arc::new(e)));
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        tracing::info!(
            worker = index,
            loaded_in_ms = started.elapsed().as_millis() as u64,
            "worker ready: {info}"
        );
        failures = 0;
        backoff = Duration::from_millis(100);
        shared.ready.fetch_add(1, Ordering::Relaxed);
        metrics.workers_ready.inc();
        shared.state.send_if_modified(|s| {
            let first = matches!(s, LoadState::Loading);
            if first {
                *s = LoadState::Loaded;
            }
            first
        });
        let crash = loop {
            let Some(jobs) =
                next_batch(&shared.queue, &shared.config, &mut last_jobs, metrics).await
            else {
                shared.ready.fetch_sub(1, Ordering::Relaxed);
                metrics.workers_ready.dec();
                return;
            };
            if let Err(e) = run_batch(&mut worker, jobs, &mut batch_id, metrics).await {
                break e;
            }
        };
        shared.ready.fetch_sub(1, Ordering::Relaxed);
        metrics.workers_ready.dec();
        metrics.worker_restarts.inc();
        if let Some(child) = worker.child.as_mut() {
            let _ = child.kill().await;
        }
        tracing::warn!(worker = index, "worker crashed ({crash}); restarting");
    }
}

/// Takes the next batch: everything waiting, up to the batch size. If the
/// batch is not full and the server is under concurrent load — this
/// worker's previous batch merged more than one request — it waits up to
/// the batch delay for more. A lone request at low load is never held back.
async fn next_batch(
    rx: &Mutex<mpsc::Receiver<Job>>,
    config: &PoolConfig,
    last_jobs: &mut usize,
    metrics: &Metrics,
) -> Option<Vec<Job>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut rows = first.table.rows();
    let mut jobs = vec![first];
    while rows < config.max_batch_rows {
        match rx.try_recv() {
            Ok(j) => {
                rows += j.table.rows();
                jobs.push(j);
            }
            Err(_) => break,
        }
    }
    let under_load = *last_jobs > 1 || jobs.len() > 1;
    if rows < config.max_batch_rows && under_load && !config.max_batch_delay.is_zero() {
        let until = tokio::time::Instant::now() + config.max_batch_delay;
        // Wait for as many requests as the last batch had: more than that
        // is not coming from the clients this worker is serving now.
        while rows < config.max_batch_rows && jobs.len() < (*last_jobs).max(2) {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(j)) => {
                    rows += j.table.rows();
                    jobs.push(j);
                }
                _ => break,
            }
        }
    }
    *last_jobs = jobs.len();
    metrics.queue_depth.dec_by(jobs.len() as i64);
    Some(jobs)
}

/// Consecutive jobs whose tables concatenate, merged into one table.
struct Group {
    table: Table,
    members: Vec<(usize, Job)>,
}

/// Groups consecutive jobs with the same columns. A job whose table does
/// not fit the group before it starts a new one.
fn group(jobs: Vec<Job>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for job in jobs {
        let rows = job.table.rows();
        if let Some(g) = groups.last_mut() {
            if g.table.append(&job.table) {
                g.members.push((rows, job));
                continue;
            }
        }
        groups.push(Group {
            table: job.table.clone(),
            members: vec![(rows, job)],
        });
    }
    groups
}

/// Answers each member with its own rows of `prediction`, or every member
/// with the same error if the prediction does not fit them.
fn answer(members: Vec<(usize, Job)>, prediction: Prediction) {
    let total: usize = members.iter().map(|(r, _)| r).sum();
    if let Err(msg) = prediction.check(total) {
        for (_, j) in members {
            let _ = j.reply.send(Err(PredictError::Model(msg.clone())));
        }
        return;
    }
    let mut start = 0;
    for (rows, j) in members {
        let part = prediction
            .slice(start, rows)
            .ok_or_else(|| PredictError::Model("the model returned too few rows".into()));
        let _ = j.reply.send(part);
        start += rows;
    }
}

/// Runs jobs through the worker, merging those with the same columns
/// into one call. If a merged call fails in the model, each of its
/// requests is run again alone, so a bad request gets its own error and
/// never another's: good requests batched with it still get their answers.
/// Returns an error if the worker died (the jobs it held are answered
/// first).
async fn run_batch(
    worker: &mut WorkerIo,
    jobs: Vec<Job>,
    batch_id: &mut u64,
    metrics: &Metrics,
) -> Result<(), Arc<PoolError>> {
    let mut groups = group(jobs).into_iter();
    while let Some(Group { table, members }) = groups.next() {
        match call(worker, &table, batch_id, metrics).await {
            Ok(Ok(prediction)) => answer(members, prediction),
            Ok(Err(message)) if members.len() == 1 => {
                for (_, j) in members {
                    let _ = j.reply.send(Err(PredictError::Model(message.clone())));
                }
            }
            Ok(Err(_)) => {
                let mut alone = members.into_iter();
                while let Some((rows, job)) = alone.next() {
                    match call(worker, &job.table, batch_id, metrics).await {
                        Ok(Ok(prediction)) => answer(vec![(rows, job)], prediction),
                        Ok(Err(message)) => {
                            let _ = job.reply.send(Err(PredictError::Model(message)));
                        }
                        Err(e) => {
                            let rest = alone.chain(groups.flat_map(|g| g.members));
                            fail_all(std::iter::once((rows, job)).chain(rest), &e);
                            return Err(e);
                        }
                    }
                }
            }
            Err(e) => {
                fail_all(
                    members.into_iter().chain(groups.flat_map(|g| g.members)),
                    &e,
                );
                return Err(e);
            }
        }
    }
    Ok(())
}

/// One `predict` call: the prediction, or the model's error message; or
/// the worker's failure.
async fn call(
    worker: &mut WorkerIo,
    table: &Table,
    batch_id: &mut u64,
    metrics: &Metrics,
) -> Result<Result<Prediction, String>, Arc<PoolError>> {
    *batch_id += 1;
    metrics.batch_rows.observe(table.rows() as f64);
    let frame = encode_request(*batch_id, table);
    worker.send(&frame).await.map_err(Arc::new)?;
    match worker.read().await.map_err(Arc::new)? {
        WorkerFrame::Result(id, prediction) if id == *batch_id => Ok(Ok(prediction)),
        WorkerFrame::Error(id, message) if id == *batch_id => Ok(Err(message)),
        other => Err(Arc::new(PoolError::UnexpectedFrame(format!(
            "expected the result of batch {batch_id}, got {other:?}"
        )))),
    }
}

fn fail_all(jobs: impl Iterator<Item = (usize, Job)>, why: &Arc<PoolError>) {
    for (_, j) in jobs {
        let _ = j.reply.send(Err(PredictError::WorkerCrashed(why.clone())));
    }
}

#[cfg(test)]
pub(crate) mod tests;
