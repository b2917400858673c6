//! `legion serve`: serve a stored model until Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::home::Home;
use crate::serve::{serve, ServeOptions};
use crate::Error;

/// `legion serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The model: `name:version` or its digest (`legion models ls`), or a
    /// registry reference (`127.0.0.1:5000/models/wine:1`), pulled first.
    pub model: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Python worker processes.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Most rows merged into one predict call.
    #[arg(long, default_value_t = 256)]
    pub max_batch_size: usize,
    /// Under concurrent load, longest a worker holds a batch that is not
    /// full to merge more requests into it (0: only what is already queued).
    /// A lone request at low load is never held back.
    #[arg(long, default_value_t = 2)]
    pub max_batch_delay_ms: u64,
    /// Requests that may wait for a worker; beyond it, 503 with Retry-After.
    #[arg(long, default_value_t = 512)]
    pub max_queue: usize,
    /// Largest request body in bytes; beyond it, 413.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Longest a prediction may take, queue included; beyond it, 504.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Log every request and response as JSON lines to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub request_log: Option<PathBuf>,
    /// Where POST /feedback appends (default <data>/serving/feedback.jsonl).
    #[arg(long, value_name = "FILE")]
    pub feedback_log: Option<PathBuf>,
}

/// Runs `legion serve`.
pub async fn run(args: ServeArgs, home: &Home) -> Result<(), Error> {
    let opts = ServeOptions {
        model: args.model,
        addr: SocketAddr::new(args.host, args.port),
        workers: args.workers.max(1),
        max_batch_size: args.max_batch_size.max(1),
        max_batch_delay: Duration::from_millis(args.max_batch_delay_ms),
        max_queue: args.max_queue.max(1),
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_millis(args.timeout_ms.max(1)),
        request_log: args.request_log,
        feedback_log: args.feedback_log,
    };
    serve(home, opts, shutdown_signal()).await
}

async fn shutdown_signal() {
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
