//! The Python worker pool and adaptive batching.
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
//! (503), is restarted, and the restart is counted.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::metrics::Metrics;
use super::table::{decode_worker_frame, encode_request, Prediction, Table, WorkerFrame};

/// Largest frame a worker may send (a prediction for a very large batch).
const MAX_FRAME: usize = 512 << 20;

/// Why a prediction did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PredictError {
    /// The queue is full: try again later (503 + Retry-After).
    Overloaded,
    /// The worker died while handling the request (503).
    WorkerCrashed(String),
    /// The model's `predict` raised (the message is the model's).
    Model(String),
    /// The pool is shutting down.
    Closed,
}

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The Python interpreter (of the serving venv).
    pub python: PathBuf,
    /// The worker script.
    pub script: PathBuf,
    /// The unpacked model folder.
    pub model_dir: PathBuf,
    /// The model's flavor.
    pub flavor: String,
    /// Worker processes.
    pub workers: usize,
    /// Most rows in one `predict` call.
    pub max_batch_rows: usize,
    /// Longest a free worker waits for a batch to fill.
    pub max_batch_delay: Duration,
    /// Requests that may wait; more are refused.
    pub max_queue: usize,
}

struct Job {
    table: Table,
    reply: oneshot::Sender<Result<Prediction, PredictError>>,
}

/// The running pool.
pub struct Pool {
    queue: mpsc::Sender<Job>,
    ready: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Aborting the tasks drops the children, which kills them.
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Pool {
    /// Starts the workers. They load the model in the background;
    /// [`Pool::ready_workers`] says how many have.
    pub fn start(config: PoolConfig, metrics: Arc<Metrics>) -> Pool {
        let (tx, rx) = mpsc::channel(config.max_queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let ready = Arc::new(AtomicUsize::new(0));
        let config = Arc::new(config);
        let tasks = (0..config.workers.max(1))
            .map(|i| {
                tokio::spawn(worker_loop(
                    i,
                    config.clone(),
                    rx.clone(),
                    ready.clone(),
                    metrics.clone(),
                ))
            })
            .collect();
        Pool {
            queue: tx,
            ready,
            tasks,
            metrics,
        }
    }

    /// Workers with the model loaded.
    pub fn ready_workers(&self) -> usize {
        self.ready.load(Ordering::Relaxed)
    }

    /// Predicts `table`, waiting for a worker.
    pub async fn predict(&self, table: Table) -> Result<Prediction, PredictError> {
        let (reply, rx) = oneshot::channel();
        match self.queue.try_send(Job { table, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(PredictError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(PredictError::Closed),
        }
        self.metrics
            .queue_depth
            .set((self.queue.max_capacity() - self.queue.capacity()) as i64);
        rx.await.unwrap_or(Err(PredictError::Closed))
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

async fn spawn_worker(
    index: usize,
    config: &PoolConfig,
) -> Result<(Worker, serde_json::Value), String> {
    let mut child = Command::new(&config.python)
        .arg(&config.script)
        .arg(&config.model_dir)
        .arg(&config.flavor)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("PYTHONUNBUFFERED", "1")
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", config.python.display()))?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "worker", worker = index, "{line}");
            }
        });
    }
    match read_frame(&mut stdout).await? {
        WorkerFrame::Ready(info) => Ok((
            Worker {
                child,
                stdin,
                stdout,
            },
            info,
        )),
        other => Err(format!("expected a ready frame, got {other:?}")),
    }
}

async fn read_frame(stdout: &mut ChildStdout) -> Result<WorkerFrame, String> {
    let mut len = [0u8; 4];
    stdout
        .read_exact(&mut len)
        .await
        .map_err(|e| format!("worker exited ({e})"))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(format!(
            "worker sent a {len}-byte frame, more than the {MAX_FRAME} allowed"
        ));
    }
    let mut buf = vec![0u8; len];
    stdout
        .read_exact(&mut buf)
        .await
        .map_err(|e| format!("worker exited mid-frame ({e})"))?;
    decode_worker_frame(&buf)
}

async fn worker_loop(
    index: usize,
    config: Arc<PoolConfig>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    ready: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
) {
    let mut batch_id: u64 = 0;
    let mut last_jobs = 0usize;
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = Instant::now();
        let (mut worker, info) = match spawn_worker(index, &config).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(worker = index, "worker failed to load the model: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        tracing::info!(
            worker = index,
            loaded_in_ms = started.elapsed().as_millis() as u64,
            "worker ready: {info}"
        );
        ready.fetch_add(1, Ordering::Relaxed);
        metrics.workers_ready.inc();
        backoff = Duration::from_millis(200);
        let crash = loop {
            let Some(jobs) = next_batch(&rx, &config, &mut last_jobs, &metrics).await else {
                ready.fetch_sub(1, Ordering::Relaxed);
                metrics.workers_ready.dec();
                return;
            };
            if let Err(e) = run_batch(&mut worker, jobs, &mut batch_id, &metrics).await {
                break e;
            }
        };
        ready.fetch_sub(1, Ordering::Relaxed);
        metrics.workers_ready.dec();
        metrics.worker_restarts.inc();
        let _ = worker.child.kill().await;
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
    // Read while the lock is held: taking it again later would wait for
    // another worker parked in `recv`, i.e. for the next request.
    metrics.queue_depth.set(rx.len() as i64);
    Some(jobs)
}

/// Runs jobs through the worker, merging those with the same columns
/// into one call. Returns an error if the worker died (the jobs it held
/// are answered first).
async fn run_batch(
    worker: &mut Worker,
    jobs: Vec<Job>,
    batch_id: &mut u64,
    metrics: &Metrics,
) -> Result<(), String> {
    // Group consecutive jobs whose tables concatenate.
    let mut groups: Vec<(Table, Vec<(usize, Job)>)> = Vec::new();
    for job in jobs {
        let rows = job.table.rows();
        if let Some((table, members)) = groups.last_mut() {
            if table.append(&job.table) {
                members.push((rows, job));
                continue;
            }
        }
        groups.push((job.table.clone(), vec![(rows, job)]));
    }
    let mut groups = groups.into_iter();
    while let Some((table, members)) = groups.next() {
        *batch_id += 1;
        metrics.batch_rows.observe(table.rows() as f64);
        let frame = encode_request(*batch_id, &table);
        let sent = async {
            worker
                .stdin
                .write_all(&(frame.len() as u32).to_le_bytes())
                .await?;
            worker.stdin.write_all(&frame).await?;
            worker.stdin.flush().await
        }
        .await;
        let answer = match sent {
            Ok(()) => read_frame(&mut worker.stdout).await,
            Err(e) => Err(format!("cannot write to the worker: {e}")),
        };
        match answer {
            Ok(WorkerFrame::Result(id, prediction)) if id == *batch_id => {
                let total: usize = members.iter().map(|(r, _)| r).sum();
                if prediction.shape.first().copied() != Some(total) {
                    let msg = format!(
                        "the model returned {:?} values for {total} rows",
                        prediction.shape
                    );
                    for (_, j) in members {
                        let _ = j.reply.send(Err(PredictError::Model(msg.clone())));
                    }
                    continue;
                }
                let mut start = 0;
                for (rows, j) in members {
                    let _ = j.reply.send(Ok(prediction.slice(start, rows)));
                    start += rows;
                }
            }
            Ok(WorkerFrame::Error(_, message)) => {
                for (_, j) in members {
                    let _ = j.reply.send(Err(PredictError::Model(message.clone())));
                }
            }
            Ok(other) => {
                let e = format!("unexpected frame from the worker: {other:?}");
                fail_all(members, groups, &e);
                return Err(e);
            }
            Err(e) => {
                fail_all(members, groups, &e);
                return Err(e);
            }
        }
    }
    Ok(())
}

fn fail_all(
    members: Vec<(usize, Job)>,
    rest: impl Iterator<Item = (Table, Vec<(usize, Job)>)>,
    why: &str,
) {
    for (_, j) in members.into_iter().chain(rest.flat_map(|(_, m)| m)) {
        let _ = j
            .reply
            .send(Err(PredictError::WorkerCrashed(why.to_string())));
    }
}
