//! Trainings and packagings the API starts, on the same pipeline as
//! `legion train` and `legion package` (`train::Trainer`,
//! `package::Packager`).
//!
//! - A create is answered once the run is recorded, planned by its
//!   toolchain and past the policy (202 with the run), or failed doing so
//!   (422, the run kept with its log).
//! - The replica that accepted a run executes it and holds a lease on it
//!   in the store, renewed while the replica lives. A replica that dies
//!   loses its leases; another one — or itself, restarted — claims each
//!   such run (one statement, so never two replicas) and starts it again
//!   from the request stored with it: same id, same log, another attempt.
//! - A cancel is written to the store, so whichever replica holds the run
//!   sees it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Api;
use crate::exec::local::LocalExecutor;
use crate::exec::threads::RunThreads;
use crate::exec::{RunEvents, RunLog};
use crate::fetch::SourceSpec;
use crate::operator::crd::{ModelPackagingSpec, ModelTrainingSpec};
use crate::operator::runs::{packaging_options, training_options};
use crate::package::Packager;
use crate::store::{Lease, RunRecord, RunState};
use crate::train::{now_ms, Trainer};
use crate::Error;

/// How long a create waits for the plan before answering 202 without it.
pub const PLAN_WAIT: Duration = Duration::from_secs(25);

/// What a run was made from, kept with it to start it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Stored {
    /// A training's request body.
    Training {
        /// The body.
        spec: ModelTrainingSpec,
    },
    /// A packaging's request body and the model its reference resolved to.
    Packaging {
        /// The body.
        spec: ModelPackagingSpec,
        /// `name:version` (or a digest, or a registry reference).
        model: String,
    },
}

/// What a create came to.
#[derive(Debug)]
pub enum Accepted {
    /// Planned and past the policy: it runs.
    Planned(RunRecord),
    /// Recorded, still planning after [`PLAN_WAIT`]: it goes on.
    Planning(RunRecord),
    /// Ended before it was planned (the plan or the policy refused it).
    Ended(RunRecord),
    /// Not even recorded after [`PLAN_WAIT`] (the machine is that busy):
    /// called off, so that the caller's retry cannot make a second run.
    Busy,
}

/// The runs this replica executes, and its lease on them.
pub struct Runner {
    /// This replica's name in the store (`HOST/PID/RANDOM`).
    pub replica: String,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    /// Folders on this machine API callers may name as sources, data or
    /// base images (canonical); nothing else local is readable to them.
    allowed: Vec<PathBuf>,
    active: Mutex<HashMap<String, CancellationToken>>,
    /// Runs that execute at once here; planned runs wait `queued`.
    gate: Arc<tokio::sync::Semaphore>,
    /// The threads runs are tasks of (one per CPU), started with the
    /// first run, on its runtime.
    threads: std::sync::OnceLock<Arc<RunThreads>>,
}

impl Runner {
    /// A runner named after this host and process.
    pub fn new(lease: Duration, allowed: &[PathBuf], max_runs: usize) -> Result<Self, Error> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        let allowed = allowed
            .iter()
            .map(|p| std::fs::canonicalize(p).map_err(|e| Error::io(p, e)))
            .collect::<Result<_, _>>()?;
        Ok(Runner {
            replica: format!(
                "{host}/{}/{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            lease,
            allowed,
            active: Mutex::new(HashMap::new()),
            gate: Arc::new(tokio::sync::Semaphore::new(max_runs.max(1))),
            threads: std::sync::OnceLock::new(),
        })
    }

    pub(crate) fn lease_until(&self) -> i64 {
        now_ms() + self.lease.as_millis() as i64
    }

    /// Stops driving runs, as the server stops ([`RunThreads::stop`]).
    pub async fn stop(&self) {
        if let Some(threads) = self.threads.get() {
            threads.stop().await;
        }
    }

    /// How many runs this replica executes now.
    pub fn active(&self) -> usize {
        self.active.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Cancels `id` if this replica runs it; `true` if it did.
    pub fn cancel_local(&self, id: &str) -> bool {
        match self.active.lock().ok().and_then(|a| a.get(id).cloned()) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Refuses a local path (source, data, base image) outside the folders
    /// this server allows: an API caller must not read the server's files.
    pub fn check_local(&self, field: &str, uri: &str) -> Result<(), Error> {
        let Some(path) = local_path(uri) else {
            return Ok(());
        };
        let refuse = |why: &str| Error::InvalidArgument {
            field: field.into(),
            message: format!("'{uri}' is a path on the server; {why}"),
        };
        if self.allowed.is_empty() {
            return Err(refuse(
                "this server reads no local paths (legion server --allow-path DIR): use a git URL or an oci:// source",
            ));
        }
        let canon = std::fs::canonicalize(&path).map_err(|_| refuse("it does not exist"))?;
        if self.allowed.iter().any(|a| canon.starts_with(a)) {
            Ok(())
        } else {
            Err(refuse(
                "it is not under a folder this server allows (--allow-path)",
            ))
        }
    }
}

/// The local path `uri` names, if it names one: a folder, a `file://`
/// URL, a git repository by path, an `oci:DIR:NAME` layout.
fn local_path(uri: &str) -> Option<PathBuf> {
    let uri = uri.split('#').next().unwrap_or(uri);
    if let Some(rest) = uri
        .strip_prefix("oci:")
        .filter(|_| !uri.starts_with("oci://"))
    {
        return Some(PathBuf::from(rest.split(':').next().unwrap_or(rest)));
    }
    if let Some(p) = uri.strip_prefix("file://") {
        return Some(PathBuf::from(p));
    }
    if uri.contains("://") || uri.starts_with("git@") {
        return None;
    }
    Some(PathBuf::from(uri))
}

/// Checks the local paths a training names.
pub fn check_training(runner: &Runner, spec: &ModelTrainingSpec) -> Result<(), Error> {
    if let SourceSpec::Local(_) | SourceSpec::Git { .. } = SourceSpec::parse(&spec.source.uri)? {
        runner.check_local("source.uri", &spec.source.uri)?;
    }
    for (i, d) in spec.data.iter().enumerate() {
        runner.check_local(&format!("data[{i}].uri"), &d.uri)?;
    }
    Ok(())
}

/// Checks the local paths a packaging names.
pub fn check_packaging(runner: &Runner, spec: &ModelPackagingSpec) -> Result<(), Error> {
    if let Some(base) = &spec.base {
        if base.starts_with("oci:") {
            runner.check_local("base", base)?;
        }
    }
    Ok(())
}

/// Starts a run and waits until it is planned (or ended, or
/// [`PLAN_WAIT`] passed). `Err` is input refused before the run existed.
pub async fn start(api: &Arc<Api>, stored: Stored) -> Result<Accepted, Error> {
    let (tx, rx) = oneshot::channel();
    let (rec_tx, mut rec_rx) = oneshot::channel();
    let cancel = CancellationToken::new();
    execute(
        api.clone(),
        stored,
        None,
        Some((tx, rec_tx)),
        cancel.clone(),
    )?;
    match tokio::time::timeout(PLAN_WAIT, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(Error::Engine {
            context: "a run the API started",
            source: "the run's task ended without an answer".into(),
        }),
        Err(_) => match rec_rx.try_recv() {
            Ok(run) => Ok(Accepted::Planning(run)),
            Err(_) => {
                // If it gets recorded after all, it ends cancelled at once.
                cancel.cancel();
                Ok(Accepted::Busy)
            }
        },
    }
}

/// Sent once each: the create's answer, and the run as first recorded.
type Answer = (
    oneshot::Sender<Result<Accepted, Error>>,
    oneshot::Sender<RunRecord>,
);

/// The events of a run the API executes.
struct Sink {
    api: Arc<Api>,
    cancel: CancellationToken,
    answer: Mutex<Option<oneshot::Sender<Result<Accepted, Error>>>>,
    first: Mutex<Option<oneshot::Sender<RunRecord>>>,
    id: Mutex<Option<String>>,
}

impl Sink {
    fn answer(&self, a: Result<Accepted, Error>) {
        if let Some(tx) = self.answer.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(a);
        }
    }
}

impl RunEvents for Sink {
    fn recorded(&self, run: &RunRecord) {
        if let Ok(mut a) = self.api.runner.active.lock() {
            a.insert(run.id.clone(), self.cancel.clone());
        }
        if let Ok(mut id) = self.id.lock() {
            *id = Some(run.id.clone());
        }
        if let Some(tx) = self.first.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(run.clone());
        }
    }

    fn planned(&self, run: &RunRecord) {
        self.answer(Ok(Accepted::Planned(run.clone())));
    }
}

/// Executes `stored` as run `id` (a new one when `None`) on a thread of
/// its own, answering `answer` once planned.
fn execute(
    api: Arc<Api>,
    stored: Stored,
    id: Option<String>,
    answer: Option<Answer>,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let spec = serde_json::to_string(&stored).map_err(|e| Error::json(Path::new("spec"), e))?;
    let lease = Lease {
        owner: api.runner.replica.clone(),
        until: api.runner.lease_until(),
        spec,
    };
    let threads = match api.runner.threads.get() {
        Some(t) => t.clone(),
        None => {
            let made = RunThreads::per_cpu()?;
            api.runner.threads.get_or_init(|| made).clone()
        }
    };
    threads.spawn(Box::new(move || {
        Box::pin(async move {
            let (answer, first) = match answer {
                Some((a, f)) => (Some(a), Some(f)),
                None => (None, None),
            };
            let sink = Sink {
                api: api.clone(),
                cancel,
                answer: Mutex::new(answer),
                first: Mutex::new(first),
                id: Mutex::new(None),
            };
            let cancel = sink.cancel.clone();
            let result = match stored {
                Stored::Training { spec } => match training_options(&spec, "") {
                    Ok(mut opts) => {
                        opts.run_id = id;
                        opts.lease = Some(lease);
                        opts.gate = Some(api.runner.gate.clone());
                        Trainer::new(&api.toolchains, &api.home, &LocalExecutor)
                            .train(opts, &sink, cancel)
                            .await
                    }
                    Err(message) => Err(Error::InvalidArgument {
                        field: "spec".into(),
                        message,
                    }),
                },
                Stored::Packaging { spec, model } => {
                    let mut opts = packaging_options(&spec, model);
                    opts.run_id = id;
                    opts.lease = Some(lease);
                    opts.gate = Some(api.runner.gate.clone());
                    Packager::new(&api.toolchains, &api.home)
                        .package(opts, &sink, cancel)
                        .await
                        .map(|p| p.run)
                }
            };
            let id = sink.id.lock().ok().and_then(|mut i| i.take());
            match result {
                Ok(run) => {
                    tracing::info!(run = %run.id, state = run.state.as_str(), "run ended");
                    sink.answer(Ok(Accepted::Ended(run)));
                }
                Err(e) => {
                    // After the run was recorded, an error is the store
                    // failing under it: the run must not stay `running`.
                    if let Some(id) = &id {
                        fail_when_reachable(&api, id, &e).await;
                    }
                    tracing::warn!(error = %e, "run refused or broken off");
                    sink.answer(Err(e));
                }
            }
            if let Some(id) = id {
                if let Ok(mut a) = api.runner.active.lock() {
                    a.remove(&id);
                }
            }
        })
    }));
    Ok(())
}

/// Marks run `id` failed by `error` once the store answers again (for up
/// to ten minutes), unless it is over already.
async fn fail_when_reachable(api: &Api, id: &str, error: &Error) {
    let store = api.toolchains.store();
    for _ in 0..600 {
        match store.get_run(id).await {
            Ok(Some(mut run)) if !run.state.is_final() => {
                run.state = RunState::Failed;
                run.reason = Some(format!("the host's own work failed: {error}"));
                run.finished_at = Some(now_ms());
                if store.update_run(&run).await.is_ok() {
                    if let Ok(log) = RunLog::open(Path::new(&run.log_path)) {
                        log.note(&format!("run {id} failed: {error}"));
                    }
                    return;
                }
            }
            Ok(_) => return,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tracing::error!(run = %id, "the store stayed unreachable: the run is left for another replica");
}

/// Keeps this replica's leases, passes on cancels asked elsewhere, and
/// claims the runs of replicas that died, until `stop`; then lets its
/// leases go so that another replica takes its runs at once.
pub async fn keep_leases(api: Arc<Api>, stop: CancellationToken) {
    let tick = (api.runner.lease / 3).min(Duration::from_secs(1));
    let store = api.toolchains.store();
    let me = api.runner.replica.clone();
    loop {
        if let Err(e) = store.renew_leases(&me, api.runner.lease_until()).await {
            tracing::warn!(error = %e, "renewing leases");
        }
        match store.cancels_for(&me).await {
            Ok(ids) => {
                for id in ids {
                    api.runner.cancel_local(&id);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading cancels"),
        }
        loop {
            match store
                .claim_expired(&me, now_ms(), api.runner.lease_until())
                .await
            {
                Ok(Some((id, spec))) => resume(&api, id, spec).await,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming runs of replicas that died");
                    break;
                }
            }
        }
        super::deployments::keep(&api).await;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
    }
    if let Err(e) = store.renew_leases(&me, 0).await {
        tracing::warn!(error = %e, "letting leases go");
    }
    super::deployments::release(&api).await;
}

/// Starts again a run claimed from a replica that died; one that cannot
/// be started again is failed with the reason, its log kept.
async fn resume(api: &Arc<Api>, id: String, spec: Option<String>) {
    let stored = spec.as_deref().map(serde_json::from_str::<Stored>);
    let why = match stored {
        Some(Ok(stored)) => {
            tracing::info!(run = %id, "starting a run again: its replica stopped");
            match execute(
                api.clone(),
                stored,
                Some(id.clone()),
                None,
                CancellationToken::new(),
            ) {
                Ok(()) => return,
                Err(e) => e.to_string(),
            }
        }
        Some(Err(e)) => format!("its stored request is unreadable: {e}"),
        None => "its replica stopped before it stored the request".into(),
    };
    let store = api.toolchains.store();
    if let Ok(Some(mut run)) = store.get_run(&id).await {
        run.state = RunState::Failed;
        run.reason = Some(format!("interrupted and not started again: {why}"));
        run.finished_at = Some(now_ms());
        if let Ok(log) = RunLog::open(Path::new(&run.log_path)) {
            log.note(&format!(
                "run {id} failed: {}",
                run.reason.as_deref().unwrap_or("")
            ));
        }
        if let Err(e) = store.update_run(&run).await {
            tracing::warn!(run = %id, error = %e, "failing an interrupted run");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_are_found_in_every_spelling() {
        assert_eq!(local_path("/src/proj"), Some(PathBuf::from("/src/proj")));
        assert_eq!(local_path("proj#main"), Some(PathBuf::from("proj")));
        assert_eq!(
            local_path("file:///r.git#v1"),
            Some(PathBuf::from("/r.git"))
        );
        assert_eq!(
            local_path("oci:/var/base:py"),
            Some(PathBuf::from("/var/base"))
        );
        assert_eq!(local_path("https://git.example/r.git"), None);
        assert_eq!(local_path("git@host:org/r.git"), None);
        assert_eq!(local_path("oci://reg/src@sha256:00"), None);
        assert_eq!(local_path("s3://bucket/key"), None);
    }

    #[test]
    fn only_allowed_folders_are_readable() {
        let allowed = tempfile::tempdir().unwrap();
        let inside = allowed.path().join("proj");
        std::fs::create_dir(&inside).unwrap();
        let r = Runner::new(Duration::from_secs(30), &[allowed.path().to_path_buf()], 2).unwrap();
        r.check_local("source.uri", inside.to_str().unwrap())
            .unwrap();
        r.check_local("source.uri", "https://git.example/r.git")
            .unwrap();
        let e = r.check_local("source.uri", "/etc").unwrap_err().to_string();
        assert!(
            e.contains("source.uri") && e.contains("--allow-path"),
            "{e}"
        );
        // `..` does not climb out: the path is resolved first.
        let climb = format!("{}/../../etc", inside.display());
        assert!(r.check_local("source.uri", &climb).is_err());
        let none = Runner::new(Duration::from_secs(30), &[], 2).unwrap();
        assert!(none.check_local("data[0].uri", "file:///tmp").is_err());
    }
}
