//! # legion-serve
//!
//! Legion's model server: `legion serve`, and the entrypoint of every
//! packaged image as the standalone, statically linked `legion-serve`
//! binary. It has no wasmtime in it (`cargo tree -p legion-serve`).
//!
//! A Rust HTTP front (parsing, validation against the signature, batching,
//! back-pressure, metrics, logs) before a pool of Python worker processes
//! that only load the model and run `predict`, fed compact binary frames.
//!
//! - [`model`]: the served model folder and its spec;
//! - [`names`]: checked model names and versions;
//! - [`signature`]: signatures and the one table of element types;
//! - [`table`]: the columnar table every dialect becomes, and predictions;
//! - [`frame`]: the binary frames to and from workers;
//! - [`protocol`]: Open Inference Protocol v2, MLflow scoring, Legion/ODAHU,
//!   one module each;
//! - [`pool`]: worker processes and adaptive batching;
//! - [`http`]: the router, request ids, limits, the shared prediction path;
//! - [`metrics`], [`log`]: Prometheus metrics, request and feedback logs;
//! - [`lines`]: reading child output lossily.

#![deny(missing_docs)]

pub mod frame;
pub mod http;
pub mod lines;
pub mod log;
pub mod metrics;
pub mod model;
pub mod names;
pub mod pool;
pub mod protocol;
pub mod signature;
pub mod table;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::IntoFuture;

use tokio::net::TcpListener;

pub use model::{ModelSpec, ServedModel};
pub use names::{InvalidName, ModelName, ModelVersion};
pub use signature::{DataType, Signature, TensorSpec};

/// The worker script, shipped inside the binary and passed to Python
/// inline.
pub const WORKER_PY: &str = include_str!("worker.py");

/// Errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server stopped with an error.
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    /// The model spec could not be read or written.
    #[error("{}: {source}", path.display())]
    SpecFile {
        /// The spec file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The model spec is not valid.
    #[error("{}: {source}", path.display())]
    BadSpec {
        /// The spec file.
        path: PathBuf,
        /// What is wrong, with its position.
        #[source]
        source: serde_json::Error,
    },
    /// The model folder's load cache could not be written.
    #[error("cannot write the load cache {}: {source}", path.display())]
    Cache {
        /// The cache folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A log file could not be opened.
    #[error("cannot open the log {}: {source}", path.display())]
    Log {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The model failed to load as many times as allowed.
    #[error("the model could not be loaded ({attempts} attempts per worker): {source}")]
    ModelLoad {
        /// Attempts each worker made.
        attempts: u32,
        /// The last failure.
        #[source]
        source: Arc<pool::PoolError>,
    },
}

/// How to serve: the flags `legion serve` and `legion-serve` share. Each
/// can also be set by its environment variable, as a container would.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Port to listen on.
    #[arg(long, env = "LEGION_SERVE_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "LEGION_SERVE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Python worker processes.
    #[arg(long, env = "LEGION_SERVE_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Most rows merged into one predict call.
    #[arg(long, env = "LEGION_SERVE_MAX_BATCH_SIZE", default_value_t = 256)]
    pub max_batch_size: usize,
    /// Under concurrent load, longest a worker holds a batch that is not
    /// full to merge more requests into it (0: only what is already queued).
    /// A lone request at low load is never held back.
    #[arg(long, env = "LEGION_SERVE_MAX_BATCH_DELAY_MS", default_value_t = 2)]
    pub max_batch_delay_ms: u64,
    /// Requests that may wait for a worker; beyond it, 503 with Retry-After.
    #[arg(long, env = "LEGION_SERVE_MAX_QUEUE", default_value_t = 512)]
    pub max_queue: usize,
    /// Largest request body in bytes; beyond it, 413.
    #[arg(long, env = "LEGION_SERVE_MAX_BODY_BYTES", default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Longest a prediction may take, queue included; beyond it, 504.
    #[arg(long, env = "LEGION_SERVE_TIMEOUT_MS", default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Failed model loads in a row after which the server stops with the
    /// loader's error instead of retrying.
    #[arg(long, env = "LEGION_SERVE_MAX_LOAD_ATTEMPTS", default_value_t = 3)]
    pub max_load_attempts: u32,
    /// Log every request and response as JSON lines to this file (`-` for stdout).
    #[arg(long, env = "LEGION_SERVE_REQUEST_LOG", value_name = "FILE")]
    pub request_log: Option<PathBuf>,
    /// Where POST /feedback appends, as JSON lines (`-` for stdout).
    #[arg(long, env = "LEGION_SERVE_FEEDBACK_LOG", value_name = "FILE")]
    pub feedback_log: Option<PathBuf>,
}

impl ServeArgs {
    /// The address to listen on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// Listens on `addr`. Bind before preparing the model, so that
/// `/v2/health/live` answers while it loads.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Serves `model` on `listener` until `shutdown` resolves, then stops
/// taking connections, answers what is in flight, and stops the workers.
/// Returns an error if the model cannot be loaded (after
/// `max_load_attempts` tries per worker).
pub async fn serve(
    listener: TcpListener,
    model: ServedModel,
    args: &ServeArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let started = Instant::now();
    let metrics = Arc::new(metrics::Metrics::new());
    let pool = pool::Pool::start(
        pool::PoolConfig {
            workers: args.workers.max(1),
            max_batch_rows: args.max_batch_size.max(1),
            max_batch_delay: Duration::from_millis(args.max_batch_delay_ms),
            max_queue: args.max_queue.max(1),
            max_load_attempts: args.max_load_attempts.max(1),
        },
        pool::PythonLauncher {
            python: model.python.clone(),
            model_dir: model.files.clone(),
            flavor: model.spec.flavor.clone(),
        },
        metrics.clone(),
    );
    let request_log = args
        .request_log
        .as_deref()
        .map(log::JsonLines::open)
        .transpose()?;
    let feedback_log = log::JsonLines::open(args.feedback_log.as_deref().unwrap_or("-".as_ref()))?;
    let addr = listener.local_addr().map_err(Error::Http)?;
    tracing::info!(model = %format!("{}:{}", model.spec.name, model.spec.version), digest = %model.spec.digest, %addr, workers = args.workers, "serving");
    let state = Arc::new(http::AppState {
        model: model.spec,
        pool,
        metrics,
        limits: http::Limits {
            max_body_bytes: args.max_body_bytes,
            request_timeout: Duration::from_millis(args.timeout_ms.max(1)),
        },
        request_log,
        feedback_log,
    });
    let server = axum::serve(listener, http::router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .into_future();
    let ready = async {
        if state.pool.loaded().await.is_ok() {
            tracing::info!(ready_in_ms = started.elapsed().as_millis() as u64, "ready");
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        r = server => r.map_err(Error::Http)?,
        e = state.pool.failed() => {
            return Err(Error::ModelLoad { attempts: args.max_load_attempts.max(1), source: e });
        }
        () = ready => {}
    }
    tracing::info!("drained; stopping workers");
    Ok(())
}

/// Logs to stderr, as both binaries do: `LEGION_LOG` sets the filter
/// (default `info`); colour only on a terminal and without `NO_COLOR`.
///
/// A server (`background`) hands each line to a thread of its own that
/// writes it, so that a slow stderr (a pipe nobody drains fast enough, a
/// log file on a busy disk) never holds the async threads answering
/// requests: while another process wrote to the disk, one such write held
/// the API's only worker for tens of milliseconds. Lines are kept in order
/// and never dropped (past 128k waiting, the logger waits); the returned
/// guard writes the rest when dropped, so keep it until the end of `main`.
/// A command line writes each line in place, in order with its own
/// messages on stderr.
#[must_use = "dropping the guard stops the background writer"]
pub fn init_logging(background: bool) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEGION_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_target(false)
        .without_time();
    if background {
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .thread_name("legion-log")
            .finish(std::io::stderr());
        fmt.with_writer(writer).init();
        Some(guard)
    } else {
        fmt.with_writer(std::io::stderr).init();
        None
    }
}

/// A multi-threaded runtime, or the message to print if there is none.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
