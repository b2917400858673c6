//! A training, end to end: the one code path behind `legion train` (and,
//! later, the API and the operator).
//!
//! ```text
//! check the request -> plugin.plan-training of a local folder, in place
//!  -> record the run (queued; with its plan)
//!  [-> fetch a git or OCI source -> plugin.plan-training] -> policy.check
//!  -> wait for a slot -> workspace, log file, source copy, data (running)
//!  -> python environment -> executor.run -> plugin.collect-training
//!  -> store the model (OCI layout) [-> push] -> succeeded
//! ```
//!
//! Everything that can be checked before a run exists (toolchain, names,
//! source, push reference) is checked first, so bad input leaves no trace.
//! From then on every state change is written before it is reported, and
//! a failure at any point marks the run failed with the reason, keeping its
//! log and workspace.

pub mod phases;

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::exec::kube::executor::ClusterExecutor;
use crate::exec::kube::runner::JobEnd;
use crate::exec::pyenv::PythonEnvs;
use crate::exec::{Executor, Outcome, RunContext, RunEvents, RunLog, Workspace};
use crate::fetch::{self, SourceSpec};
use crate::home::Home;
use crate::names::{ModelName, ModelVersion};
use crate::oci::layout::Layout;
use crate::oci::model::ToolchainRef;
use crate::oci::registry::parse_reference;
use crate::plan::{DataBinding, ModelId, Pairs, Policy, Resources, TrainingRequest};
use crate::plugin::{Plugin, Toolchains};
use crate::store::{
    JobRef, Lease, RunKind, RunPlan, RunRecord, RunRequest, RunState, Store, ToolchainRow,
};
use crate::Error;

/// Default time a training may run (ODAHU's default too).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// What `legion train` asks for.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Local folder or `GIT_URL#REF`.
    pub source: String,
    /// Toolchain name.
    pub toolchain: String,
    /// Entry point.
    pub entrypoint: Option<String>,
    /// Extra arguments.
    pub args: Vec<String>,
    /// Hyper-parameters.
    pub params: Pairs,
    /// Model name (default: the source's name).
    pub name: Option<ModelName>,
    /// Model version (default `1`).
    pub version: Option<ModelVersion>,
    /// Data bindings.
    pub data: Vec<DataBinding>,
    /// Environment for the steps.
    pub env: Pairs,
    /// Image override.
    pub image: Option<String>,
    /// Working directory inside the source.
    pub work_dir: Option<String>,
    /// Compute asked for.
    pub resources: Resources,
    /// Registry reference to push the model to, instead of only the local store.
    pub push: Option<String>,
    /// Time allowed for the steps.
    pub timeout: Duration,
    /// The run's id, chosen by the caller (the operator names a run before
    /// it exists, so that a restart finds it); default: the model's name
    /// and a time-ordered suffix ([`crate::names::new_run_id`]).
    pub run_id: Option<String>,
    /// The API replica holding the run, when the API started it.
    pub lease: Option<Lease>,
    /// Runs that may execute at once (the API's `--max-runs`): a planned
    /// run waits, `queued`, for a permit.
    pub gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            source: String::new(),
            toolchain: String::new(),
            entrypoint: None,
            args: Vec::new(),
            params: Pairs::new(),
            name: None,
            version: None,
            data: Vec::new(),
            env: Pairs::new(),
            image: None,
            work_dir: None,
            resources: Resources::default(),
            push: None,
            timeout: DEFAULT_TIMEOUT,
            run_id: None,
            lease: None,
            gate: None,
        }
    }
}

/// Where a training's steps (and, on a cluster, its collect and store) run.
#[derive(Clone, Copy)]
pub enum Placement<'a> {
    /// Steps as processes through an executor; collect and store here.
    Local(&'a dyn Executor),
    /// One Kubernetes Job for steps, collect, store and push.
    Cluster(&'a ClusterExecutor),
}

/// Runs trainings for one data directory.
pub struct Trainer<'a> {
    toolchains: &'a Toolchains,
    home: &'a Home,
    placement: Placement<'a>,
}

/// What the checks before a run exists found.
struct Checked {
    spec: SourceSpec,
    model: ModelId,
    push: Option<oci_client::Reference>,
    row: ToolchainRow,
    plugin: Plugin,
    policy: Policy,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl<'a> Trainer<'a> {
    /// A trainer over `toolchains` in `home`, running steps with `executor`.
    pub fn new(toolchains: &'a Toolchains, home: &'a Home, executor: &'a dyn Executor) -> Self {
        Trainer {
            toolchains,
            home,
            placement: Placement::Local(executor),
        }
    }

    /// A trainer that runs each training as a Job on `cluster`.
    pub fn on_cluster(
        toolchains: &'a Toolchains,
        home: &'a Home,
        cluster: &'a ClusterExecutor,
    ) -> Self {
        Trainer {
            toolchains,
            home,
            placement: Placement::Cluster(cluster),
        }
    }

    /// Everything that can be checked before a run exists.
    async fn check(&self, opts: &TrainOptions) -> Result<Checked, Error> {
        let spec = SourceSpec::parse(&opts.source)?;
        let name = match &opts.name {
            Some(n) => n.clone(),
            None => {
                ModelName::new(spec.default_model_name()).map_err(|e| Error::InvalidArgument {
                    field: "--name".into(),
                    message: format!("the model needs a name: {e}"),
                })?
            }
        };
        let version = match &opts.version {
            Some(v) => v.clone(),
            None => ModelVersion::new("1")?,
        };
        let model = ModelId {
            name: name.to_string(),
            version: version.to_string(),
        };
        let push = opts
            .push
            .as_deref()
            .map(|p| parse_reference(p, &model.version))
            .transpose()?;
        let row = self.toolchains.get(&opts.toolchain).await?;
        crate::plan::parameters::check(&row.name, &row.info.parameters, &opts.params, "-P")?;
        if let Placement::Cluster(cluster) = self.placement {
            cluster.check_registry()?;
            crate::exec::kube::executor::check_data(&opts.data)?;
            if !row.builtin {
                return Err(Error::InvalidArgument {
                    field: "--toolchain".into(),
                    message: format!(
                        "toolchain '{}' was registered from a file on this machine; a pod runs only the toolchains built into the legion image",
                        row.name
                    ),
                });
            }
        }
        let plugin = self.toolchains.load_record(&row).await?;
        let policy = Policy::load(&self.home.policy())?;
        Ok(Checked {
            spec,
            model,
            push,
            row,
            plugin,
            policy,
        })
    }

    fn request(opts: &TrainOptions, model: &ModelId) -> TrainingRequest {
        TrainingRequest {
            model: model.clone(),
            entrypoint: opts.entrypoint.clone(),
            args: opts.args.clone(),
            hyper_parameters: opts.params.clone(),
            env: opts.env.clone(),
            image: opts.image.clone(),
            resources: opts.resources,
            source: crate::plan::Source {
                uri: opts.source.clone(),
                reference: None,
                commit: None,
            },
            data: opts.data.clone(),
            work_dir: opts.work_dir.clone(),
        }
    }

    /// What a cluster run would create, without creating it or recording a
    /// run: fetches and plans as a run would, checks the policy, and makes
    /// the Job (nothing is pushed; a step image not built yet is named by
    /// the tag a run would push).
    pub async fn dry_run(
        &self,
        opts: TrainOptions,
    ) -> Result<k8s_openapi::api::batch::v1::Job, Error> {
        let Placement::Cluster(cluster) = self.placement else {
            return Err(Error::InvalidArgument {
                field: "--dry-run".into(),
                message: "a dry run shows the objects of a cluster run: add --executor kube".into(),
            });
        };
        let c = self.check(&opts).await?;
        let dir = tempfile::tempdir().map_err(|e| Error::io(&std::env::temp_dir(), e))?;
        let ws = Workspace::new(dir.path());
        ws.create()?;
        let log = RunLog::open(&dir.path().join("legion.log"))?;
        let mut request = Self::request(&opts, &c.model);
        request.source = phases::fetch(&c.spec, &[], &ws, &log).await?;
        let (p, req, source) = (c.plugin.clone(), request.clone(), ws.source());
        let plan = blocking(move || p.plan_training(&req, &source))
            .await
            .map_err(Stop::into_error)?;
        c.policy.check(c.plugin.name(), &plan)?;
        let id = format!("{}-dryrun", crate::names::model_prefix(&c.model.name));
        cluster
            .prepare_training(
                self.home,
                &id,
                ToolchainRef {
                    name: c.row.name.clone(),
                    digest: c.row.digest.clone(),
                },
                &request,
                &plan,
                &ws,
                c.push.as_ref(),
                opts.timeout,
                &log,
            )
            .await
    }

    /// Trains. Returns `Err` only for input refused before the run was
    /// recorded; once recorded, the run comes back in whatever state it
    /// ended (succeeded, failed, cancelled).
    pub async fn train(
        &self,
        opts: TrainOptions,
        events: &dyn RunEvents,
        cancel: CancellationToken,
    ) -> Result<RunRecord, Error> {
        let Checked {
            spec,
            model,
            push,
            row,
            plugin,
            policy,
        } = self.check(&opts).await?;

        // --- the run exists from here on ---
        let id = opts
            .run_id
            .clone()
            .unwrap_or_else(|| crate::names::training_id(&model.name));
        let workspace = Workspace::new(self.home.run_dir(&id));
        let log_path = workspace.root.join("legion.log");
        let mut request = Self::request(&opts, &model);
        let mut run = RunRecord {
            id: id.clone(),
            toolchain: row.name.clone(),
            toolchain_digest: row.digest.clone(),
            kind: RunKind::Training,
            model: model.clone(),
            state: RunState::Queued,
            request: RunRequest::Training(request.clone()),
            plan: None,
            exit_code: None,
            reason: None,
            created_at: now_ms(),
            started_at: None,
            finished_at: None,
            model_digest: None,
            model_ref: None,
            pushed_ref: None,
            image_ref: None,
            image_digest: None,
            source_commit: None,
            workspace: workspace.root.display().to_string(),
            log_path: log_path.display().to_string(),
            pid: Some(std::process::id()),
            job: None,
            owner: None,
        };
        let store = self.toolchains.store();
        let log = RunLog::pending(&log_path);
        let training = format!(
            "run {id}: training {}:{} with toolchain {} ({})",
            model.name, model.version, row.name, row.digest
        );
        // A local folder is read in place: nothing to wait for, so it is
        // planned before the run is written, and accepting a run writes
        // one row, plan included. Other sources are fetched (a clone can
        // take minutes) after the run is written, so that it is there to
        // be seen and cancelled meanwhile.
        let planned = match &spec {
            SourceSpec::Local(path) => {
                log.note(&training);
                let planned = self
                    .plan_local(path, &mut run, &mut request, &plugin, &log, events)
                    .await;
                if let Ok(plan) = &planned {
                    run.plan = Some(RunPlan::Training(plan.clone()));
                }
                Some(planned)
            }
            _ => None,
        };
        let fresh = opts.run_id.is_none();
        let again = begin_attempt(store, &mut run, &workspace, opts.lease.as_ref(), fresh).await?;
        if again {
            log.note(&format!("run {id}: its host stopped; starting it again"));
        }
        if planned.is_none() {
            log.note(&training);
        }
        events.recorded(&run);

        let result = match planned {
            Some(Err(stop)) => Err(stop),
            planned => {
                self.drive(
                    &mut run,
                    request,
                    &spec,
                    planned.and_then(Result::ok),
                    &plugin,
                    &policy,
                    &workspace,
                    &log,
                    push.as_ref(),
                    &opts,
                    events,
                    &cancel,
                )
                .await
            }
        };
        close_run(store, &mut run, result, &log).await?;
        Ok(run)
    }

    /// Plans a training whose source is the local folder `path`, read
    /// where it is; the source is copied when the run starts.
    async fn plan_local(
        &self,
        path: &Path,
        run: &mut RunRecord,
        request: &mut TrainingRequest,
        plugin: &Plugin,
        log: &RunLog,
        events: &dyn RunEvents,
    ) -> Result<crate::plan::Plan, Stop> {
        events.phase("fetch");
        let source = fetch::source::local_source(path).await?;
        let dir = std::path::PathBuf::from(&source.uri);
        plan_source(source, dir, run, request, plugin, log, events).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn drive(
        &self,
        run: &mut RunRecord,
        mut request: TrainingRequest,
        spec: &SourceSpec,
        planned: Option<crate::plan::Plan>,
        plugin: &Plugin,
        policy: &Policy,
        ws: &Workspace,
        log: &RunLog,
        push: Option<&oci_client::Reference>,
        opts: &TrainOptions,
        events: &dyn RunEvents,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let store = self.toolchains.store();

        let plan = match planned {
            Some(plan) => plan,
            None => {
                // Fetched into the workspace: the plan reads it, at the
                // commit or digest the run will use.
                events.phase("fetch");
                log.create()?;
                let source =
                    cancellable(cancel, fetch::fetch_source(spec, &ws.source(), log)).await?;
                let plan = plan_source(source, ws.source(), run, &mut request, plugin, log, events)
                    .await?;
                run.plan = Some(RunPlan::Training(plan.clone()));
                store.update_run(run).await.map_err(Stop::from)?;
                plan
            }
        };
        policy.check(plugin.name(), &plan)?;
        events.planned(run);
        let _permit = start_when_allowed(opts.gate.as_ref(), run, store, events, cancel, || {
            ws.create()?;
            log.create()
        })
        .await?;
        if let SourceSpec::Local(_) = spec {
            let (source, dest, l) = (request.source.clone(), ws.source(), log.clone());
            blocking(move || fetch::source::copy_local(&source, &dest, &l)).await?;
        }
        // On a cluster the pod fetches the data.
        if let (Placement::Local(_), false) = (self.placement, request.data.is_empty()) {
            cancellable(cancel, fetch::fetch_data(&request.data, &ws.data(), log)).await?;
        }

        let executor = match self.placement {
            Placement::Local(executor) => executor,
            Placement::Cluster(cluster) => {
                return self
                    .drive_on_cluster(
                        cluster, run, &request, &plan, ws, log, push, opts, events, cancel,
                    )
                    .await
            }
        };

        let python_env = match &plan.python {
            Some(py) => {
                events.phase("python environment");
                let envs = PythonEnvs::new(self.home.python_envs());
                Some(cancellable(cancel, envs.ensure(py, log)).await?)
            }
            None => None,
        };

        let ctx = RunContext {
            run_id: run.id.clone(),
            model: run.model.clone(),
            workspace: ws.clone(),
            timeout: opts.timeout,
            python_env,
            log: log.clone(),
        };
        match executor
            .run(&plan, &ctx, events, cancel.clone())
            .await
            .map_err(Stop::from)?
        {
            Outcome::Succeeded => {}
            Outcome::Failed {
                step,
                exit_code,
                message,
            } => {
                let tail = log.failure_tail(12).join("\n  ");
                return Err(Stop::Failed {
                    reason: format!("step '{step}' {message}; last log lines:\n  {tail}"),
                    exit_code,
                });
            }
            Outcome::TimedOut { step, after } => {
                return Err(Stop::Failed {
                    reason: format!("timed out after {}s in step '{step}'", after.as_secs()),
                    exit_code: None,
                });
            }
            Outcome::Cancelled { step } => return Err(Stop::Cancelled(Some(step))),
        }

        events.phase("collect");
        let (p, req, w) = (plugin.clone(), request.clone(), ws.clone());
        let (manifest, model_dir) = blocking(move || phases::collect(&p, &req, &w)).await?;

        events.phase("store model");
        let layout = Layout::open(self.home.models()).map_err(Stop::from)?;
        let provenance = phases::Provenance {
            model: run.model.clone(),
            toolchain: ToolchainRef {
                name: run.toolchain.clone(),
                digest: run.toolchain_digest.clone(),
            },
            request: request.clone(),
        };
        let l = layout.clone();
        let stored = blocking(move || phases::store(&l, &model_dir, manifest, &provenance)).await?;
        log.note(&format!(
            "stored model {} as {} ({} files, {} bytes)",
            stored.reference, stored.digest, stored.files, stored.content_bytes
        ));
        run.model_digest = Some(stored.digest.clone());
        run.model_ref = Some(stored.reference.clone());

        if let Some(reference) = push {
            events.phase("push");
            let (_, pinned) =
                cancellable(cancel, phases::push(&layout, &stored, reference, log)).await?;
            run.pushed_ref = Some(pinned);
        }
        run.state = RunState::Succeeded;
        log.note(&format!(
            "run {} succeeded: {} {}",
            run.id, stored.reference, stored.digest
        ));
        // The model is stored; the copies of source and data are not needed.
        let _ = std::fs::remove_dir_all(ws.source());
        let _ = std::fs::remove_dir_all(ws.data());
        Ok(())
    }
}

impl Trainer<'_> {
    /// A planned, policy-checked training as one Job on `cluster`: the
    /// pod fetches, runs the steps, collects, stores and pushes; the host
    /// follows it, keeping every container's log in the run's log.
    #[allow(clippy::too_many_arguments)]
    async fn drive_on_cluster(
        &self,
        cluster: &ClusterExecutor,
        run: &mut RunRecord,
        request: &TrainingRequest,
        plan: &crate::plan::Plan,
        ws: &Workspace,
        log: &RunLog,
        push: Option<&oci_client::Reference>,
        opts: &TrainOptions,
        events: &dyn RunEvents,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        events.phase("prepare the Job (source, step images)");
        let toolchain = ToolchainRef {
            name: run.toolchain.clone(),
            digest: run.toolchain_digest.clone(),
        };
        let job = cancellable(
            cancel,
            cluster.prepare_training(
                self.home,
                &run.id,
                toolchain,
                request,
                plan,
                ws,
                push,
                opts.timeout,
                log,
            ),
        )
        .await?;
        let name = job.metadata.name.clone().unwrap_or_default();
        run.job = Some(JobRef {
            namespace: cluster.namespace().to_string(),
            name: name.clone(),
        });
        let store = self.toolchains.store();
        store.update_run(run).await.map_err(Stop::from)?;
        events.phase(&format!("Job {}/{name}", cluster.namespace()));
        events.job_created(cluster.namespace(), &name);
        let end = cluster
            .runner()?
            .run(&job, &run.id, log, cancel.clone())
            .await
            .map_err(Stop::from)?;
        let _ = std::fs::remove_dir_all(ws.source());
        let _ = std::fs::remove_dir_all(ws.data());
        job_ended(run, end, log)
    }
}

/// Writes how a run's Job ended into the run.
pub(crate) fn job_ended(run: &mut RunRecord, end: JobEnd, log: &RunLog) -> Result<(), Stop> {
    let job = run
        .job
        .as_ref()
        .map(|j| format!("{}/{}", j.namespace, j.name))
        .unwrap_or_default();
    match end {
        JobEnd::Succeeded(c) => {
            log.note(&format!(
                "run {} succeeded: {} {}",
                run.id, c.model_ref, c.model_digest
            ));
            run.model_digest = Some(c.model_digest);
            run.model_ref = Some(c.model_ref);
            run.pushed_ref = c.pushed_ref;
            run.state = RunState::Succeeded;
            Ok(())
        }
        JobEnd::Packaged(p) => {
            log.note(&format!("run {} succeeded: {}", run.id, p.image_ref));
            run.image_ref = Some(p.image_ref.clone());
            run.pushed_ref = Some(p.image_ref);
            run.image_digest = Some(p.image_digest);
            run.state = RunState::Succeeded;
            Ok(())
        }
        JobEnd::Failed {
            container,
            exit_code,
            message,
        } => {
            let tail = log.failure_tail(12).join("\n  ");
            let what = if container == "pod" {
                message
            } else {
                format!("container '{container}' {message}")
            };
            Err(Stop::Failed {
                reason: format!("{what}; last log lines:\n  {tail}"),
                exit_code,
            })
        }
        JobEnd::DeadlineExceeded => Err(Stop::Failed {
            reason: format!(
                "deadline exceeded: Job {job} ran past its activeDeadlineSeconds (the run's timeout)"
            ),
            exit_code: None,
        }),
        JobEnd::Deleted => Err(Stop::Failed {
            reason: format!("Job {job} was deleted before it finished"),
            exit_code: None,
        }),
        JobEnd::Cancelled => Err(Stop::Cancelled(None)),
    }
}

/// Follows a cluster run whose host process is gone (a restarted host, a
/// closed terminal) to its end: finds its Job again, keeps appending the
/// containers' logs, and writes the outcome. A run already over is
/// returned as it is.
pub async fn attach(
    store: &Store,
    cluster: &ClusterExecutor,
    id: &str,
    cancel: CancellationToken,
) -> Result<RunRecord, Error> {
    let mut run = store
        .get_run(id)
        .await?
        .ok_or_else(|| Error::InvalidArgument {
            field: "RUN".into(),
            message: format!("no run '{id}' (legion runs ls)"),
        })?;
    if run.state.is_final() {
        return Ok(run);
    }
    let Some(job) = run.job.clone() else {
        return Err(Error::InvalidArgument {
            field: "RUN".into(),
            message: format!("run '{id}' has no Kubernetes Job: it runs, or ran, on this machine"),
        });
    };
    if job.namespace != cluster.namespace() {
        return Err(Error::Kubernetes {
            namespace: cluster.namespace().to_string(),
            message: format!(
                "run '{id}' runs in namespace '{}': pass --namespace {}",
                job.namespace, job.namespace
            ),
        });
    }
    let log = RunLog::open(Path::new(&run.log_path))?;
    log.note(&format!(
        "following Job {}/{} again",
        job.namespace, job.name
    ));
    run.pid = Some(std::process::id());
    store.update_run(&run).await?;
    let ended = match cluster
        .runner()?
        .follow(&job.name, &run.id, &log, cancel)
        .await
    {
        Ok(end) => job_ended(&mut run, end, &log),
        Err(e) => Err(Stop::from(e)),
    };
    close_run(store, &mut run, ended, &log).await?;
    Ok(run)
}

/// Writes where the source came from into the run and its request, then
/// asks the toolchain for the plan of `dir` (the source as the plan reads
/// it) and notes the plan in the log.
async fn plan_source(
    source: crate::plan::Source,
    dir: std::path::PathBuf,
    run: &mut RunRecord,
    request: &mut TrainingRequest,
    plugin: &Plugin,
    log: &RunLog,
    events: &dyn RunEvents,
) -> Result<crate::plan::Plan, Stop> {
    run.source_commit = source.commit.clone();
    request.source = source;
    run.request = RunRequest::Training(request.clone());
    events.phase("plan");
    let (p, req) = (plugin.clone(), request.clone());
    let plan = blocking(move || p.plan_training(&req, &dir)).await?;
    log.note(&format!(
        "plan: {}",
        serde_json::to_string(&plan).unwrap_or_default()
    ));
    Ok(plan)
}

/// Ends a recorded run: how it stopped (if it did) written into it, a
/// closing note in its log unless it succeeded, the end time, the record.
async fn close_run(
    store: &Store,
    run: &mut RunRecord,
    ended: Result<(), Stop>,
    log: &RunLog,
) -> Result<(), Error> {
    if let Err(stop) = ended {
        stop.record(run);
    }
    // A run that ended before it started (refused, cancelled while
    // queued) has its log written now.
    if let Err(e) = log.create() {
        tracing::warn!(run = %run.id, error = %e, "cannot write the run's log");
    }
    if run.state != RunState::Succeeded {
        log.note(&format!(
            "run {} {}: {}",
            run.id,
            run.state.as_str(),
            run.reason.as_deref().unwrap_or("")
        ));
    }
    run.finished_at = Some(now_ms());
    store.update_run(run).await
}

/// Waits for a permit of `gate` (if any) with the run `queued`, makes
/// what the run needs on disk (`prepare`: its folders, its log), then
/// marks it `running`: from here its steps execute.
pub(crate) async fn start_when_allowed(
    gate: Option<&std::sync::Arc<tokio::sync::Semaphore>>,
    run: &mut RunRecord,
    store: &Store,
    events: &dyn RunEvents,
    cancel: &CancellationToken,
    prepare: impl FnOnce() -> Result<(), Error>,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Stop> {
    // A run cancelled before it started never starts, even with a slot
    // free (`biased`: the cancel is looked at first, not at random).
    if cancel.is_cancelled() {
        return Err(Stop::Cancelled(None));
    }
    let permit = match gate {
        Some(g) => {
            if g.available_permits() == 0 {
                events.phase("queued: waiting for a free slot");
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Stop::Cancelled(None)),
                p = g.clone().acquire_owned() => p.ok(),
            }
        }
        None => None,
    };
    prepare()?;
    run.state = RunState::Running;
    run.started_at = Some(now_ms());
    store.update_run(run).await.map_err(Stop::from)?;
    Ok(permit)
}

/// Writes a new run; or, when a run of that id exists and is not over
/// (its host died and this is another attempt), starts it over in place:
/// same id, creation time, owner and log, a fresh workspace. Returns
/// whether it is another attempt. A run that is over is never re-run.
///
/// A `fresh` id (made here, not chosen by a caller) cannot name an earlier
/// run: it is inserted without a read first. Should it collide all the
/// same (another replica, the same millisecond, the same 35 random bits),
/// the insert fails on the key rather than overwrite anything.
pub(crate) async fn begin_attempt(
    store: &Store,
    run: &mut RunRecord,
    ws: &Workspace,
    lease: Option<&Lease>,
    fresh: bool,
) -> Result<bool, Error> {
    let old = if fresh {
        None
    } else {
        store.get_run(&run.id).await?
    };
    let again = match old {
        None => {
            // Nothing on disk yet: the run's folder and log are made when
            // it starts (or ends without starting).
            store.insert_run(run, lease).await?;
            false
        }
        Some(old) if old.state.is_final() => {
            return Err(Error::InvalidArgument {
                field: "run id".into(),
                message: format!(
                    "run '{}' exists and is {}: a run is never started twice",
                    run.id,
                    old.state.as_str()
                ),
            })
        }
        Some(old) => {
            ws.restart()?;
            run.created_at = old.created_at;
            run.owner = old.owner;
            store.update_run(run).await?;
            if let Some(l) = lease {
                store.lease_run(&run.id, &l.owner, l.until, &l.spec).await?;
            }
            true
        }
    };
    if let Some(l) = lease {
        run.owner = Some(l.owner.clone());
    }
    Ok(again)
}

/// Marks runs whose host process is gone (killed, machine restarted) as
/// failed, so no run stays `running` forever. Local runs are not resumed;
/// a cluster run goes on in its Job, and `legion runs attach` follows it.
pub async fn reconcile_orphans(store: &crate::store::Store) -> Result<(), Error> {
    for mut run in store.list_runs(1000).await? {
        // An API replica's runs are its own: leases, not pids, say
        // whether their host is alive.
        if run.state.is_final() || run.job.is_some() || run.owner.is_some() {
            continue;
        }
        let Some(pid) = run.pid else { continue };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        run.state = RunState::Failed;
        run.reason = Some(format!(
            "interrupted: the legion process running it (pid {pid}) is gone"
        ));
        run.finished_at = Some(now_ms());
        store.update_run(&run).await?;
        if let Ok(log) = RunLog::open(Path::new(&run.log_path)) {
            log.note(&format!(
                "run {} failed: {}",
                run.id,
                run.reason.as_deref().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 sends nothing; it only asks whether the pid exists.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Why a recorded run stopped early.
pub(crate) enum Stop {
    /// Ctrl-C or a cancel, during the named step if any.
    Cancelled(Option<String>),
    /// A step failed or timed out, or the plugin's output was unusable.
    Failed {
        reason: String,
        exit_code: Option<i32>,
    },
    /// The host's own work failed: the error itself, until it is recorded.
    Error(Error),
}

impl Stop {
    /// Writes how the run ended into it: state, reason, exit code.
    pub(crate) fn record(self, run: &mut RunRecord) {
        match self {
            Stop::Cancelled(step) => {
                run.state = RunState::Cancelled;
                run.reason = Some(match step {
                    Some(s) => format!("cancelled during step '{s}'"),
                    None => "cancelled".to_string(),
                });
            }
            Stop::Failed { reason, exit_code } => {
                run.state = RunState::Failed;
                run.reason = Some(reason);
                run.exit_code = exit_code;
            }
            Stop::Error(e) => {
                tracing::debug!(run = %run.id, error = ?e, "run failed");
                run.state = RunState::Failed;
                run.reason = Some(e.to_string());
            }
        }
    }
}

impl Stop {
    /// The stop as an error, for paths that record no run (a dry run).
    pub(crate) fn into_error(self) -> Error {
        match self {
            Stop::Error(e) => e,
            Stop::Cancelled(_) => Error::InvalidArgument {
                field: "run".into(),
                message: "cancelled".into(),
            },
            Stop::Failed { reason, .. } => Error::InvalidArgument {
                field: "run".into(),
                message: reason,
            },
        }
    }
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Error(e)
    }
}

pub(crate) async fn cancellable<T>(
    cancel: &CancellationToken,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Stop> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Stop::Cancelled(None)),
        r = fut => r.map_err(Stop::from),
    }
}

/// Plugin calls and layer building are synchronous: they run on tokio's
/// blocking pool, off the async workers (and on any runtime flavour).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Stop> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Engine {
            context: "a blocking task of the run",
            source: e.into(),
        })?
        .map_err(Stop::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Quiet;

    fn queued(id: &str) -> RunRecord {
        RunRecord::sample(id, RunState::Queued)
    }

    /// The API calls off a create it could not answer in time by
    /// cancelling its token; if the run gets recorded after all, it must
    /// end without starting, however free the slots are.
    #[tokio::test]
    async fn a_run_cancelled_before_its_start_never_starts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
        for (i, gate) in [Some(&gate), None].into_iter().cycle().take(40).enumerate() {
            let mut run = queued(&format!("r{i}"));
            store.insert_run(&run, None).await.unwrap();
            let started =
                start_when_allowed(gate, &mut run, &store, &Quiet, &cancel, || Ok(())).await;
            assert!(matches!(started, Err(Stop::Cancelled(None))), "attempt {i}");
            assert_eq!(run.started_at, None);
            let stored = store.get_run(&run.id).await.unwrap().unwrap();
            assert_eq!(stored.state, RunState::Queued, "attempt {i}");
        }
        assert_eq!(gate.available_permits(), 4, "no slot taken");
        // A cancelled token wins over finished work too.
        let r = cancellable(&cancel, async { Ok::<_, Error>(()) }).await;
        assert!(matches!(r, Err(Stop::Cancelled(None))));
    }
}
