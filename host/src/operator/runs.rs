//! `ModelTraining` and `ModelPackaging`: one run each, through the same
//! pipelines as `legion train|package --executor kube` (plan and policy on
//! the operator, one Job on the cluster, followed by watches).
//!
//! ```text
//! new ──admit──> Pending (runId written first) ──Job created──> Running
//!                  │                                               │
//!     refused: Failed, no Job              Job over: Succeeded | Failed
//! ```
//!
//! The run id is written into the status before the run starts, so an
//! operator that restarts finds the run again: by its record if the run
//! ended, by the Job labelled with its id if it runs (followed again with
//! `train::attach`), and if neither — the earlier process stopped before
//! the Job existed — a new attempt starts under a new id. Deleting the
//! object cancels the run and deletes its Job before the finalizer goes.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::LocalBoxFuture;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::crd::{ModelPackaging, ModelPackagingSpec, ModelTraining, ModelTrainingSpec, RunStatus};
use super::status::{self, phase, set, Status};
use super::{Context, ReconcileError, FINALIZER, RECHECK};
use crate::exec::kube::job::{dns_label, label_value, RUN_ID_LABEL};
use crate::exec::RunEvents;
use crate::names::{ModelName, ModelVersion};
use crate::package::{PackageOptions, Packager};
use crate::plan::{DataBinding, ModelId, Resources};
use crate::store::{JobRef, RunKind, RunRecord, RunRequest, RunState, Store};
use crate::train::{now_ms, TrainOptions, Trainer};
use crate::Error;

/// What the checks that need the cluster decided about a new run.
pub enum Admission<O> {
    /// Start it with these options.
    Start(O),
    /// Not yet: what it waits for (reason, message).
    Wait(&'static str, String),
    /// Never: why (reason, message). The run fails; nothing is created.
    Refuse(&'static str, String),
}

/// A custom resource that is one run.
#[async_trait]
pub trait RunResource:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The pipeline's options.
    type Options: Send + 'static;
    /// Training or packaging.
    const RUN_KIND: RunKind;
    /// Its status.
    fn run_status(&self) -> Option<&RunStatus>;
    /// The `Toolchain` object it names.
    fn toolchain(&self) -> &str;
    /// The checks that need the cluster, and the pipeline's options.
    async fn admit(&self, ctx: &Context, toolchain: String) -> Admission<Self::Options>;
    /// Runs the pipeline under `run_id`. `Err` is input refused before the
    /// run was recorded; a recorded run comes back in its final state. (Not
    /// `Send`: see [`spawn`].)
    fn start<'a>(
        ctx: &'a Context,
        opts: Self::Options,
        run_id: String,
        events: &'a dyn RunEvents,
        cancel: tokio_util::sync::CancellationToken,
    ) -> LocalBoxFuture<'a, Result<RunRecord, Error>>;
    /// The model, for a run record made from the object.
    fn model(&self) -> ModelId;
}

/// Reconciles one training or packaging.
pub async fn reconcile<K: RunResource>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let api = Api::<K>::namespaced(ctx.client.clone(), &ctx.namespace);
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Event::Apply(o) => apply(o, ctx.clone()).await,
            Event::Cleanup(o) => cleanup(o, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
}

/// Retries a failed reconcile after a pause.
pub fn error_policy<K: RunResource>(_: Arc<K>, e: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "run reconcile failed");
    Action::requeue(std::time::Duration::from_secs(10))
}

async fn apply<K: RunResource>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let status = obj.run_status().cloned().unwrap_or_default();
    if status::is_final(status.phase.as_deref()) || ctx.following(&uid(&*obj)) {
        return Ok(Action::await_change());
    }
    match status.run_id.clone() {
        Some(id) => resume(obj, ctx, id).await,
        None => start(obj, ctx).await,
    }
}

/// A new run: admitted, its id written, then started in a task.
async fn start<K: RunResource>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let generation = obj.meta().generation;
    let mut status = obj.run_status().cloned().unwrap_or_default();
    let admission = match super::toolchain::builtin_of(&ctx, obj.toolchain()).await? {
        Ok(builtin) => obj.admit(&ctx, builtin).await,
        Err((reason, message, wait)) if wait => Admission::Wait(reason, message),
        Err((reason, message, _)) => Admission::Refuse(reason, message),
    };
    let opts = match admission {
        Admission::Start(opts) => opts,
        Admission::Wait(reason, message) => {
            status.phase = Some(phase::PENDING.into());
            set(
                &mut status.conditions,
                "Accepted",
                Status::False,
                reason,
                &message,
                generation,
            );
            set(
                &mut status.conditions,
                "Succeeded",
                Status::Unknown,
                reason,
                &message,
                generation,
            );
            status.observed_generation = generation;
            // Unchanged, it is not written again: each write is an event
            // that would bring the object straight back here.
            if obj.run_status() != Some(&status) {
                super::write_status(&ctx, &*obj, &status).await?;
            }
            return Ok(Action::requeue(RECHECK));
        }
        Admission::Refuse(reason, message) => {
            status.phase = Some(phase::FAILED.into());
            set(
                &mut status.conditions,
                "Accepted",
                Status::False,
                reason,
                &message,
                generation,
            );
            set(
                &mut status.conditions,
                "Succeeded",
                Status::False,
                reason,
                &message,
                generation,
            );
            status.completion_time = Some(super::now());
            status.observed_generation = generation;
            super::write_status(&ctx, &*obj, &status).await?;
            ctx.event(&*obj, EventType::Warning, reason, message).await;
            return Ok(Action::await_change());
        }
    };
    let run_id =
        crate::names::new_run_id(&dns_label(&obj.name_any(), crate::names::RUN_PREFIX_CHARS));
    status.phase = Some(phase::PENDING.into());
    status.run_id = Some(run_id.clone());
    status.job_name = None;
    status.start_time = Some(super::now());
    let planning = format!("planning run {run_id}");
    set(
        &mut status.conditions,
        "Accepted",
        Status::True,
        "Accepted",
        &planning,
        generation,
    );
    set(
        &mut status.conditions,
        "Succeeded",
        Status::Unknown,
        "Pending",
        &planning,
        generation,
    );
    status.observed_generation = generation;
    super::write_status(&ctx, &*obj, &status).await?;
    ctx.event(&*obj, EventType::Normal, "Started", format!("run {run_id}"))
        .await;
    spawn(obj, ctx, Work::Start(opts, run_id));
    Ok(Action::await_change())
}

/// A run this process does not follow (it restarted, or another replica
/// led before): its record if it ended, else its Job by label.
async fn resume<K: RunResource>(
    obj: Arc<K>,
    ctx: Arc<Context>,
    id: String,
) -> Result<Action, ReconcileError> {
    let store = ctx.toolchains.store();
    let record = store.get_run(&id).await?;
    if let Some(run) = record.as_ref().filter(|r| r.state.is_final()) {
        finish(&ctx, &*obj, run).await?;
        return Ok(Action::await_change());
    }
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &ctx.namespace)
        .list(&ListParams::default().labels(&format!("{RUN_ID_LABEL}={}", label_value(&id))))
        .await?;
    if let Some(job) = jobs.items.first() {
        let job = JobRef {
            namespace: ctx.namespace.clone(),
            name: job.name_any(),
        };
        adopt(store, &ctx, &*obj, &id, record, &job).await?;
        ctx.event(
            &*obj,
            EventType::Normal,
            "Resumed",
            format!("following Job {} of run {id} again", job.name),
        )
        .await;
        spawn(obj, ctx, Work::Attach(id));
        return Ok(Action::await_change());
    }
    // No Job, and the run is not over: the process that started it stopped
    // before it created the Job (`interrupted` marked its record failed).
    // Nothing else will ever run it: a new attempt does.
    ctx.event(
        &*obj,
        EventType::Warning,
        "Restarted",
        format!("run {id} stopped before its Job was created; starting a new run"),
    )
    .await;
    start(obj, ctx).await
}

/// What a run task does.
enum Work<O> {
    /// Run the pipeline under this id.
    Start(O, String),
    /// Follow the Job of this recorded run to its end.
    Attach(String),
}

/// Runs `work` in a task of its own, writing `Running` when the Job exists
/// and the final status at the end. Shutdown stops following the run
/// without cancelling it: its Job goes on, and the next leader resumes it.
fn spawn<K: RunResource>(obj: Arc<K>, ctx: Arc<Context>, work: Work<K::Options>) {
    let key = uid(&*obj);
    let Some(cancel) = ctx.follow(&key) else {
        return;
    };
    // The pipelines' futures are not `Send` (rustc cannot prove it through
    // their higher-ranked borrows): each run is a local task of one of the
    // operator's run threads, its I/O and timers on the runtime's drivers.
    let threads = ctx.threads.clone();
    threads.spawn(Box::new(move || {
        Box::pin(async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let events = JobEvents(tx);
            let run = async {
                match work {
                    Work::Start(opts, id) => {
                        K::start(&ctx, opts, id, &events, cancel.clone()).await
                    }
                    Work::Attach(id) => {
                        crate::train::attach(
                            ctx.toolchains.store(),
                            &ctx.cluster,
                            &id,
                            cancel.clone(),
                        )
                        .await
                    }
                }
            };
            tokio::pin!(run);
            let ended = loop {
                tokio::select! {
                    r = &mut run => break Some(r),
                    Some(job) = rx.recv() => {
                        if let Err(e) = running(&ctx, &*obj, &job).await {
                            tracing::warn!(error = %e, "cannot write the Running status");
                        }
                    }
                    _ = ctx.shutdown.cancelled() => break None,
                }
            };
            let written = match ended {
                Some(Ok(run)) => finish(&ctx, &*obj, &run).await,
                Some(Err(e)) => refused(&ctx, &*obj, &e).await,
                None => Ok(()),
            };
            if let Err(e) = written {
                tracing::warn!(error = %e, "cannot write a run's final status");
            }
            ctx.unfollow(&key);
        })
    }));
}

/// Sends the Job's name from the pipeline's events to the task.
struct JobEvents(mpsc::UnboundedSender<String>);

impl RunEvents for JobEvents {
    fn job_created(&self, _namespace: &str, name: &str) {
        let _ = self.0.send(name.to_string());
    }
}

async fn running<K: RunResource>(ctx: &Context, obj: &K, job: &str) -> Result<(), kube::Error> {
    let mut status = current::<K>(ctx, obj).await?;
    let generation = obj.meta().generation;
    status.phase = Some(phase::RUNNING.into());
    status.job_name = Some(job.to_string());
    let id = status.run_id.clone().unwrap_or_default();
    set(
        &mut status.conditions,
        "Succeeded",
        Status::Unknown,
        "JobRunning",
        &format!("Job {job} runs run {id} (legion runs logs {id})"),
        generation,
    );
    super::write_status(ctx, obj, &status).await
}

/// Writes a run's end into the object's status and an Event.
async fn finish<K: RunResource>(
    ctx: &Context,
    obj: &K,
    run: &RunRecord,
) -> Result<(), kube::Error> {
    let mut status = current::<K>(ctx, obj).await?;
    let generation = obj.meta().generation;
    let reason = status::run_reason(run);
    let message = match run.state {
        RunState::Succeeded => match run.kind {
            RunKind::Training => format!(
                "model {} {}",
                run.pushed_ref
                    .as_deref()
                    .or(run.model_ref.as_deref())
                    .unwrap_or_default(),
                run.model_digest.as_deref().unwrap_or_default()
            ),
            RunKind::Packaging => format!("image {}", run.image_ref.as_deref().unwrap_or_default()),
        },
        _ => run
            .reason
            .clone()
            .unwrap_or_else(|| run.state.as_str().to_string()),
    };
    let succeeded = run.state == RunState::Succeeded;
    status.phase = Some(
        if succeeded {
            phase::SUCCEEDED
        } else {
            phase::FAILED
        }
        .into(),
    );
    let s = if succeeded {
        Status::True
    } else {
        Status::False
    };
    set(
        &mut status.conditions,
        "Succeeded",
        s,
        reason,
        &message,
        generation,
    );
    status.run_id = Some(run.id.clone());
    if let Some(job) = &run.job {
        status.job_name = Some(job.name.clone());
    }
    if run.kind == RunKind::Training {
        status.model_ref = run.pushed_ref.clone().or_else(|| run.model_ref.clone());
        status.model_digest = run.model_digest.clone();
    } else {
        status.image_ref = run.image_ref.clone();
        status.image_digest = run.image_digest.clone();
    }
    status.start_time = run
        .started_at
        .and_then(super::time_of)
        .or(status.start_time);
    status.completion_time = run
        .finished_at
        .and_then(super::time_of)
        .or_else(|| Some(super::now()));
    status.observed_generation = generation;
    super::write_status(ctx, obj, &status).await?;
    let type_ = if succeeded {
        EventType::Normal
    } else {
        EventType::Warning
    };
    ctx.event(obj, type_, reason, message).await;
    Ok(())
}

/// The pipeline refused the input before recording a run (a bad source,
/// a toolchain that cannot plan it): the object fails with the error.
async fn refused<K: RunResource>(ctx: &Context, obj: &K, e: &Error) -> Result<(), kube::Error> {
    let mut status = current::<K>(ctx, obj).await?;
    let generation = obj.meta().generation;
    let reason = match e {
        Error::Policy { .. } => "PolicyViolation",
        Error::BadPlan { .. } => "InvalidPlan",
        _ => "InvalidSpec",
    };
    let message = e.to_string();
    status.phase = Some(phase::FAILED.into());
    set(
        &mut status.conditions,
        "Accepted",
        Status::False,
        reason,
        &message,
        generation,
    );
    set(
        &mut status.conditions,
        "Succeeded",
        Status::False,
        reason,
        &message,
        generation,
    );
    status.completion_time = Some(super::now());
    status.observed_generation = generation;
    super::write_status(ctx, obj, &status).await?;
    ctx.event(obj, EventType::Warning, reason, message).await;
    Ok(())
}

/// The object is going: its run is cancelled and its Job deleted.
async fn cleanup<K: RunResource>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let mut cancelled = false;
    if let Some(token) = ctx.cancel_task(&uid(&*obj)) {
        token.cancel();
        cancelled = true;
    }
    if let Some(id) = obj.run_status().and_then(|s| s.run_id.clone()) {
        let jobs = Api::<Job>::namespaced(ctx.client.clone(), &ctx.namespace);
        let selector = format!("{RUN_ID_LABEL}={}", label_value(&id));
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        for job in jobs
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
        {
            match jobs.delete(&job.name_any(), &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        // A run no task of this process follows is recorded as cancelled
        // here; a followed one records it itself.
        let store = ctx.toolchains.store();
        if !cancelled {
            if let Some(mut run) = store.get_run(&id).await? {
                if !run.state.is_final() {
                    run.state = RunState::Cancelled;
                    run.reason = Some(format!("cancelled: {} was deleted", obj.name_any()));
                    run.finished_at = Some(now_ms());
                    store.update_run(&run).await?;
                }
            }
        }
    }
    Ok(Action::await_change())
}

/// Records a run found by its Job but unknown to this operator's store (a
/// restart with a fresh data directory), so `train::attach` can follow it;
/// a known one gets its Job.
async fn adopt<K: RunResource>(
    store: &Store,
    ctx: &Context,
    obj: &K,
    id: &str,
    record: Option<RunRecord>,
    job: &JobRef,
) -> Result<(), Error> {
    if let Some(mut run) = record {
        if run.job.is_none() {
            run.job = Some(job.clone());
            store.update_run(&run).await?;
        }
        return Ok(());
    }
    let toolchain = obj.toolchain().to_string();
    let digest = match super::toolchain::builtin_of(ctx, &toolchain).await {
        Ok(Ok(builtin)) => ctx
            .toolchains
            .get(&builtin)
            .await
            .map(|r| r.digest)
            .unwrap_or_default(),
        _ => String::new(),
    };
    let workspace = ctx.home.run_dir(id);
    std::fs::create_dir_all(&workspace).map_err(|e| Error::io(&workspace, e))?;
    let run = RunRecord {
        id: id.to_string(),
        toolchain,
        toolchain_digest: digest,
        kind: K::RUN_KIND,
        model: obj.model(),
        state: RunState::Running,
        request: match K::RUN_KIND {
            RunKind::Training => RunRequest::Training(Default::default()),
            RunKind::Packaging => RunRequest::Packaging(Default::default()),
        },
        plan: None,
        exit_code: None,
        reason: None,
        created_at: now_ms(),
        started_at: Some(now_ms()),
        finished_at: None,
        model_digest: None,
        model_ref: None,
        pushed_ref: None,
        image_ref: None,
        image_digest: None,
        source_commit: None,
        workspace: workspace.display().to_string(),
        log_path: workspace.join("legion.log").display().to_string(),
        pid: None,
        job: Some(job.clone()),
        owner: None,
    };
    store.insert_run(&run, None).await
}

/// Marks runs an earlier operator process left `running` before their Job
/// existed as failed: nothing runs them any more. (The pid check of
/// `train::reconcile_orphans` does not hold in a container, where every
/// operator is pid 1.)
pub async fn interrupted(store: &Store) -> Result<(), Error> {
    for mut run in store.list_runs(10_000).await? {
        if run.state.is_final() || run.job.is_some() {
            continue;
        }
        run.state = RunState::Failed;
        run.reason =
            Some("interrupted: the operator stopped before the run's Job was created".into());
        run.finished_at = Some(now_ms());
        store.update_run(&run).await?;
    }
    Ok(())
}

/// The object's status as stored now (a task's copy of the object is old).
async fn current<K: RunResource>(ctx: &Context, obj: &K) -> Result<RunStatus, kube::Error> {
    let api = Api::<K>::namespaced(ctx.client.clone(), &ctx.namespace);
    Ok(api
        .get_opt(&obj.name_any())
        .await?
        .and_then(|o| o.run_status().cloned())
        .unwrap_or_default())
}

fn uid<K: Resource>(obj: &K) -> String {
    obj.meta()
        .uid
        .clone()
        .unwrap_or_else(|| obj.meta().name.clone().unwrap_or_default())
}

fn invalid(message: String) -> Admission<TrainOptions> {
    Admission::Refuse("InvalidSpec", message)
}

#[async_trait]
impl RunResource for ModelTraining {
    type Options = TrainOptions;
    const RUN_KIND: RunKind = RunKind::Training;

    fn run_status(&self) -> Option<&RunStatus> {
        self.status.as_ref()
    }

    fn toolchain(&self) -> &str {
        &self.spec.toolchain
    }

    fn model(&self) -> ModelId {
        ModelId {
            name: self.spec.model.name.clone(),
            version: self.spec.model.version.clone(),
        }
    }

    async fn admit(&self, _ctx: &Context, toolchain: String) -> Admission<TrainOptions> {
        let s = &self.spec;
        if !(s.source.uri.contains("://") || s.source.uri.starts_with("git@")) {
            return invalid(format!(
                "spec.source.uri '{}': a pod cannot read a local folder; give a git URL or an oci:// source artifact",
                s.source.uri
            ));
        }
        match training_options(s, "spec.") {
            Ok(opts) => Admission::Start(TrainOptions { toolchain, ..opts }),
            Err(e) => invalid(e),
        }
    }

    fn start<'a>(
        ctx: &'a Context,
        mut opts: TrainOptions,
        run_id: String,
        events: &'a dyn RunEvents,
        cancel: tokio_util::sync::CancellationToken,
    ) -> LocalBoxFuture<'a, Result<RunRecord, Error>> {
        opts.run_id = Some(run_id);
        Box::pin(async move {
            Trainer::on_cluster(&ctx.toolchains, &ctx.home, &ctx.cluster)
                .train(opts, events, cancel)
                .await
        })
    }
}

#[async_trait]
impl RunResource for ModelPackaging {
    type Options = PackageOptions;
    const RUN_KIND: RunKind = RunKind::Packaging;

    fn run_status(&self) -> Option<&RunStatus> {
        self.status.as_ref()
    }

    fn toolchain(&self) -> &str {
        &self.spec.toolchain
    }

    fn model(&self) -> ModelId {
        let name = self
            .spec
            .training_ref
            .clone()
            .or_else(|| {
                let r = self.spec.model_ref.as_deref()?;
                let repo = r.split('@').next()?;
                repo.rsplit('/').next().map(str::to_string)
            })
            .unwrap_or_else(|| self.name_any());
        ModelId {
            name,
            version: String::new(),
        }
    }

    async fn admit(&self, ctx: &Context, toolchain: String) -> Admission<PackageOptions> {
        let s = &self.spec;
        let model = match (&s.training_ref, &s.model_ref) {
            (_, Some(model)) => model.clone(),
            (Some(training), None) => {
                let api = Api::<ModelTraining>::namespaced(ctx.client.clone(), &ctx.namespace);
                let t = match api.get_opt(training).await {
                    Ok(Some(t)) => t,
                    // Created with its training in one apply, it may come
                    // first: it waits, and says what for.
                    Ok(None) => {
                        return Admission::Wait(
                            "TrainingNotFound",
                            format!(
                                "waiting for ModelTraining '{training}' in namespace '{}': there is none yet",
                                ctx.namespace
                            ),
                        )
                    }
                    Err(e) => return Admission::Wait("TrainingUnreadable", format!("reading ModelTraining '{training}': {e}")),
                };
                let st = t.status.unwrap_or_default();
                match st.phase.as_deref() {
                    Some(phase::SUCCEEDED) => match st.model_ref {
                        Some(m) => m,
                        None => {
                            return Admission::Refuse(
                                "TrainingHasNoModel",
                                format!("ModelTraining '{training}' succeeded without a model reference in its status"),
                            )
                        }
                    },
                    Some(phase::FAILED) => {
                        return Admission::Refuse(
                            "TrainingFailed",
                            format!("ModelTraining '{training}' failed: nothing to package"),
                        )
                    }
                    _ => {
                        return Admission::Wait(
                            "TrainingNotFinished",
                            format!("waiting for ModelTraining '{training}' to succeed"),
                        )
                    }
                }
            }
            (None, None) => {
                return Admission::Refuse(
                    "InvalidSpec",
                    "set spec.trainingRef or spec.modelRef".into(),
                )
            }
        };
        Admission::Start(PackageOptions {
            toolchain,
            ..packaging_options(s, model)
        })
    }

    fn start<'a>(
        ctx: &'a Context,
        mut opts: PackageOptions,
        run_id: String,
        events: &'a dyn RunEvents,
        cancel: tokio_util::sync::CancellationToken,
    ) -> LocalBoxFuture<'a, Result<RunRecord, Error>> {
        opts.run_id = Some(run_id);
        Box::pin(async move {
            Packager::on_cluster(&ctx.toolchains, &ctx.home, &ctx.cluster)
                .package(opts, events, cancel)
                .await
                .map(|p| p.run)
        })
    }
}

/// A training's spec (a `ModelTraining`'s, or the API's request body)
/// as the trainer's options; errors name the field under `at`.
pub fn training_options(s: &ModelTrainingSpec, at: &str) -> Result<TrainOptions, String> {
    let name = ModelName::new(&s.model.name).map_err(|e| format!("{at}model.name: {e}"))?;
    let version =
        ModelVersion::new(&s.model.version).map_err(|e| format!("{at}model.version: {e}"))?;
    let resources = resources(&s.resources, at)?;
    let source = match &s.source.reference {
        Some(r) => format!("{}#{r}", s.source.uri),
        None => s.source.uri.clone(),
    };
    Ok(TrainOptions {
        source,
        toolchain: s.toolchain.clone(),
        entrypoint: s.entrypoint.clone(),
        args: s.args.clone(),
        params: s.hyper_parameters.clone(),
        name: Some(name),
        version: Some(version),
        data: s
            .data
            .iter()
            .map(|d| DataBinding {
                uri: d.uri.clone(),
                local_path: d.path.clone(),
            })
            .collect(),
        env: s.env.clone(),
        image: s.image.clone(),
        work_dir: s.work_dir.clone(),
        resources,
        push: None,
        timeout: s
            .timeout_seconds
            .map(std::time::Duration::from_secs)
            .unwrap_or(crate::train::DEFAULT_TIMEOUT),
        ..TrainOptions::default()
    })
}

/// A packaging's spec as the packager's options, for `model` (what the
/// spec's reference resolved to).
pub fn packaging_options(s: &ModelPackagingSpec, model: String) -> PackageOptions {
    PackageOptions {
        model,
        toolchain: s.toolchain.clone(),
        base: s.base.clone(),
        push: None,
        arguments: s.arguments.clone(),
        timeout: s
            .timeout_seconds
            .map(std::time::Duration::from_secs)
            .unwrap_or(crate::package::DEFAULT_TIMEOUT),
        ..PackageOptions::default()
    }
}

/// Kubernetes quantities to the host's units; errors name the field under `at`.
pub fn resources(spec: &super::crd::ResourceSpec, at: &str) -> Result<Resources, String> {
    Ok(Resources {
        cpu_millis: spec
            .cpu
            .as_deref()
            .map(|q| {
                cpu_millis(q).ok_or_else(|| {
                    format!("{at}resources.cpu '{q}' is not a CPU quantity (2, 500m)")
                })
            })
            .transpose()?,
        memory_bytes: spec
            .memory
            .as_deref()
            .map(|q| {
                memory_bytes(q).ok_or_else(|| {
                    format!("{at}resources.memory '{q}' is not a memory quantity (512Mi, 2Gi)")
                })
            })
            .transpose()?,
        gpus: spec.gpus,
    })
}

/// `2`, `0.5`, `500m` → thousandths of a core.
pub fn cpu_millis(q: &str) -> Option<u32> {
    let v = match q.strip_suffix('m') {
        Some(m) => m.parse::<f64>().ok()?,
        None => q.parse::<f64>().ok()? * 1000.0,
    };
    (v.is_finite() && v > 0.0 && v <= u32::MAX as f64).then(|| v.ceil() as u32)
}

/// `512Mi`, `2Gi`, `1G`, `1000` → bytes.
pub fn memory_bytes(q: &str) -> Option<u64> {
    const UNITS: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (number, scale) = UNITS
        .iter()
        .find_map(|(u, s)| q.strip_suffix(u).map(|n| (n, *s)))
        .unwrap_or((q, 1.0));
    let v = number.parse::<f64>().ok()? * scale;
    (v.is_finite() && v > 0.0 && v <= u64::MAX as f64).then(|| v.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_quantities_become_the_hosts_units() {
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("0.5"), Some(500));
        assert_eq!(cpu_millis("250m"), Some(250));
        assert_eq!(cpu_millis("-1"), None);
        assert_eq!(cpu_millis("lots"), None);
        assert_eq!(memory_bytes("512Mi"), Some(512 << 20));
        assert_eq!(memory_bytes("2Gi"), Some(2 << 30));
        assert_eq!(memory_bytes("1G"), Some(1_000_000_000));
        assert_eq!(memory_bytes("1000"), Some(1000));
        assert_eq!(memory_bytes("1.5Ki"), Some(1536));
        assert_eq!(memory_bytes("Gi"), None);
        let spec = super::super::crd::ResourceSpec {
            cpu: Some("x".into()),
            ..Default::default()
        };
        assert!(resources(&spec, "spec.")
            .unwrap_err()
            .contains("spec.resources.cpu 'x'"));
    }
}
