//! The model server: `legion serve` and the entrypoint of packaged images.
//!
//! A Rust HTTP front (parsing, validation against the signature, batching,
//! back-pressure, metrics, logs) before a pool of Python worker processes
//! that only load the model and run `predict`, fed compact binary frames.
//!
//! - [`model`]: finding, unpacking and preparing the served model;
//! - [`table`]: the columnar table every dialect becomes, and the frames;
//! - [`protocols`]: Open Inference Protocol v2, MLflow scoring, Legion/ODAHU;
//! - [`pool`]: worker processes and adaptive batching;
//! - [`http`]: routes, request ids, limits, errors;
//! - [`metrics`], [`log`]: Prometheus metrics, request and feedback logs.

pub mod http;
pub mod log;
pub mod metrics;
pub mod model;
pub mod pool;
pub mod protocols;
pub mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::home::Home;
use crate::Error;

/// The worker script, shipped inside the binary.
pub const WORKER_PY: &str = include_str!("worker.py");

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `name:version` or a digest.
    pub model: String,
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Worker processes.
    pub workers: usize,
    /// Most rows per `predict` call.
    pub max_batch_size: usize,
    /// Longest a free worker waits for a batch to fill.
    pub max_batch_delay: Duration,
    /// Requests that may wait for a worker; more get 503.
    pub max_queue: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Longest a prediction may take.
    pub request_timeout: Duration,
    /// Request/response log: a file, or `-` for stdout.
    pub request_log: Option<PathBuf>,
    /// Feedback log (default `<data>/serving/feedback.jsonl`).
    pub feedback_log: Option<PathBuf>,
}

/// Serves until `shutdown` resolves, then stops taking connections,
/// answers what is in flight, and stops the workers.
pub async fn serve(
    home: &Home,
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let started = Instant::now();
    let model = model::prepare(home, &opts.model).await?;
    let script = home.root().join("serving").join("legion_worker.py");
    crate::fsutil::write_atomic(&script, WORKER_PY.as_bytes())?;
    let metrics = Arc::new(metrics::Metrics::new());
    let pool = pool::Pool::start(
        pool::PoolConfig {
            python: model.env.join("bin").join("python"),
            script,
            model_dir: model.dir.clone(),
            flavor: model.config.manifest.flavor.clone(),
            workers: opts.workers,
            max_batch_rows: opts.max_batch_size,
            max_batch_delay: opts.max_batch_delay,
            max_queue: opts.max_queue,
        },
        metrics.clone(),
    );
    let request_log = opts
        .request_log
        .as_deref()
        .map(log::JsonLines::open)
        .transpose()?;
    let feedback_path = opts
        .feedback_log
        .clone()
        .unwrap_or_else(|| home.root().join("serving").join("feedback.jsonl"));
    let feedback_log = log::JsonLines::open(&feedback_path)?;
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|e| Error::Io {
            path: PathBuf::from(opts.addr.to_string()),
            message: format!("cannot listen: {e}"),
        })?;
    let addr = listener.local_addr().map_err(|e| Error::Io {
        path: PathBuf::from(opts.addr.to_string()),
        message: e.to_string(),
    })?;
    tracing::info!(model = %format!("{}:{}", model.name, model.version), digest = %model.digest, %addr, workers = opts.workers, "serving");
    let state = Arc::new(http::AppState {
        model,
        pool,
        metrics,
        limits: http::Limits {
            max_body_bytes: opts.max_body_bytes,
            request_timeout: opts.request_timeout,
        },
        request_log,
        feedback_log,
        started,
    });
    let app = http::router(state.clone());
    let ready_state = state.clone();
    tokio::spawn(async move {
        while ready_state.pool.ready_workers() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(
            ready_in_ms = ready_state.started.elapsed().as_millis() as u64,
            "ready"
        );
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Io {
            path: PathBuf::from(addr.to_string()),
            message: e.to_string(),
        })?;
    tracing::info!("drained; stopping workers");
    drop(state);
    Ok(())
}
