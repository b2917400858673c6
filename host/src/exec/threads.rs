//! The threads pipelines' futures are driven on.

use std::sync::Arc;

use crate::Error;

/// A run, made into its future on the thread that drives it.
pub type Job = Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send>;

/// The threads runs are driven on (the API's and the operator's), one per
/// CPU. A run's future holds plugin handles that are not `Send`, so it is
/// a local task of one of them. Its I/O and timers stay on the process's
/// runtime (`Handle::block_on`, not a runtime per thread as `tokio_util`'s
/// `LocalPoolHandle` makes): a database connection a run opens joins the
/// shared pool, and must not depend on a runtime only runs drive.
///
/// A run waiting `queued` for its turn holds no thread. When each run had
/// a blocking-pool thread of its own for its whole life, 512 queued runs
/// took every such thread, and the running ones, needing one for their
/// own blocking work, waited forever.
pub struct RunThreads {
    senders: Vec<tokio::sync::mpsc::UnboundedSender<Job>>,
    next: std::sync::atomic::AtomicUsize,
}

impl RunThreads {
    /// One thread per CPU on the current runtime.
    pub fn per_cpu() -> Result<Arc<Self>, Error> {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self::new(n, tokio::runtime::Handle::current())
    }

    /// `n` threads on the runtime of `handle`.
    pub fn new(n: usize, handle: tokio::runtime::Handle) -> Result<Arc<Self>, Error> {
        let mut senders = Vec::new();
        for i in 0..n.max(1) {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
            let handle = handle.clone();
            std::thread::Builder::new()
                .name(format!("legion-runs-{i}"))
                .spawn(move || {
                    let local = tokio::task::LocalSet::new();
                    handle.block_on(local.run_until(async move {
                        while let Some(job) = rx.recv().await {
                            tokio::task::spawn_local(job());
                        }
                    }));
                })
                .map_err(|e| Error::Engine {
                    context: "starting the threads runs are driven on",
                    source: e.into(),
                })?;
            senders.push(tx);
        }
        Ok(Arc::new(RunThreads {
            senders,
            next: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    /// Drives `job` on the next thread.
    pub fn spawn(&self, job: Job) {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.senders.len();
        if self.senders[i].send(job).is_err() {
            tracing::error!("the thread of run tasks {i} is gone: a run was not started");
        }
    }
}
