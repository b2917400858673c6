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
    stop: tokio_util::sync::CancellationToken,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
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
        let stop = tokio_util::sync::CancellationToken::new();
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
            let handle = handle.clone();
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("legion-runs-{i}"))
                .spawn(move || {
                    let local = tokio::task::LocalSet::new();
                    handle.block_on(local.run_until(async move {
                        loop {
                            tokio::select! {
                                job = rx.recv() => match job {
                                    Some(job) => {
                                        tokio::task::spawn_local(job());
                                    }
                                    None => break,
                                },
                                () = stop.cancelled() => break,
                            }
                        }
                    }));
                    // Stopped: the runs still here are left as a crash
                    // leaves them, never polled again. Their steps go on
                    // and the next start takes them back (their leases
                    // were let go). Dropping them would kill those steps
                    // (`kill_on_drop`); polling them on would touch a
                    // runtime being shut down, which panics.
                    std::mem::forget(local);
                })
                .map_err(|e| Error::Engine {
                    context: "starting the threads runs are driven on",
                    source: e.into(),
                })?;
            senders.push(tx);
            threads.push(thread);
        }
        Ok(Arc::new(RunThreads {
            senders,
            next: std::sync::atomic::AtomicUsize::new(0),
            stop,
            threads: std::sync::Mutex::new(threads),
        }))
    }

    /// Stops driving runs, before the runtime they use shuts down, and
    /// waits for the threads to end. Runs sent afterwards are not started.
    pub async fn stop(&self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }

    /// Drives `job` on the next thread.
    pub fn spawn(&self, job: Job) {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.senders.len();
        if self.senders[i].send(job).is_err() {
            tracing::error!("the thread of run tasks {i} is gone: a run was not started");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Sets its flag when dropped: a run's step is killed when its future is.
    struct Step(Arc<AtomicBool>);
    impl Drop for Step {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// Stopped, the threads end before the runtime shuts down: a run in
    /// the middle of a timer is neither polled again (after shutdown that
    /// panicked) nor dropped (that would kill its step), and a run sent
    /// afterwards does not start.
    #[test]
    fn stopped_threads_leave_their_runs_as_a_crash_would() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let threads = RunThreads::new(2, rt.handle().clone()).unwrap();
        let ticks = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        let (started, mut first_tick) = tokio::sync::mpsc::unbounded_channel();
        {
            let (ticks, dropped) = (ticks.clone(), dropped.clone());
            threads.spawn(Box::new(move || {
                Box::pin(async move {
                    let _step = Step(dropped);
                    loop {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                        ticks.fetch_add(1, Ordering::SeqCst);
                        let _ = started.send(());
                    }
                })
            }));
        }
        rt.block_on(async {
            first_tick.recv().await.unwrap();
            threads.stop().await;
        });
        let late = Arc::new(AtomicBool::new(false));
        {
            let late = late.clone();
            threads.spawn(Box::new(move || {
                Box::pin(async move { late.store(true, Ordering::SeqCst) })
            }));
        }
        // The runtime still runs its timers: a run still driven would tick.
        let at_stop = ticks.load(Ordering::SeqCst);
        rt.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(50)).await });
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            at_stop,
            "a run was polled after stop"
        );
        drop(rt);
        assert!(!dropped.load(Ordering::SeqCst), "a stopped run was dropped");
        assert!(
            !late.load(Ordering::SeqCst),
            "a run sent after stop started"
        );
        assert!(threads.threads.lock().unwrap().is_empty());
    }
}
