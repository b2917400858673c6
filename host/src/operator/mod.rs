//! The Legion operator: custom resources (`legion-platform.org/v1alpha1`)
//! and the controllers that reconcile them through the same pipelines as
//! the command line.
//!
//! - [`crd`]: the custom resource types, from which the CRDs are generated;
//! - [`status`]: conditions, phases and the reasons a run failed;
//! - [`toolchain`]: `Toolchain` → a built-in plugin, checked;
//! - [`runs`]: `ModelTraining` and `ModelPackaging` → one run each, a Job
//!   through the Kubernetes executor, followed to its end (and found again
//!   by its run-id label after a restart);
//! - [`deployment`]: `ModelDeployment` → Deployment, Service and autoscaler
//!   from the packager's service plan;
//! - [`leader`]: a `coordination.k8s.io` Lease, so only one replica works.
//!
//! A run's spec never changes once created (the CRD's CEL rule): the
//! operator runs each `ModelTraining` and `ModelPackaging` at most once,
//! and a finished one is never re-run. A new spec is a new object.

pub mod crd;
pub mod deployment;
pub mod leader;
pub mod runs;
pub mod status;
pub mod toolchain;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource};
use tokio_util::sync::CancellationToken;

use crate::exec::kube::executor::{ClusterExecutor, ClusterOptions};
use crate::home::Home;
use crate::plugin::Toolchains;
use crate::Error;

/// The field manager of everything the operator writes.
pub const MANAGER: &str = "legion-operator";
/// The finalizer on trainings, packagings and deployments: their Jobs and
/// serving objects are removed before they go.
pub const FINALIZER: &str = "legion-platform.org/cleanup";

/// What `legion operator run` is given.
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// The cluster, namespace, registry and Job settings (as
    /// `--executor kube` takes them).
    pub cluster: ClusterOptions,
    /// The admin's policy file (copied into the data directory at start).
    pub policy: Option<PathBuf>,
    /// Take a Lease before working, so one replica of several works.
    pub leader_election: Option<leader::LeaseOptions>,
    /// Where `/healthz` and `/readyz` are served.
    pub health_listen: Option<SocketAddr>,
}

/// What every reconciler shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The namespace worked in.
    pub namespace: String,
    /// The Kubernetes executor.
    pub cluster: ClusterExecutor,
    /// The operator's data directory (state, run logs).
    pub home: Home,
    /// The toolchain registry (built-ins).
    pub toolchains: Toolchains,
    /// Runs this process follows, by object uid.
    tasks: Mutex<HashMap<String, CancellationToken>>,
    /// The threads the runs' pipelines are driven on.
    threads: Arc<crate::exec::threads::RunThreads>,
    recorder: Recorder,
    /// Fires at shutdown or lost leadership: tasks stop following their
    /// runs (without cancelling them).
    shutdown: CancellationToken,
}

impl Context {
    /// Publishes an Event about `obj`; a failure to publish is logged, not
    /// fatal (events are best effort in Kubernetes too).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "cannot publish an event");
        }
    }

    /// Whether a task of this process follows the object `uid`.
    fn following(&self, uid: &str) -> bool {
        self.lock().contains_key(uid)
    }

    /// Registers a task for `uid` and returns the token that cancels its
    /// run (deleting the object does); `None` if one is registered.
    /// Shutdown does not fire it: the run's Job goes on without us.
    fn follow(&self, uid: &str) -> Option<CancellationToken> {
        let mut tasks = self.lock();
        if tasks.contains_key(uid) {
            return None;
        }
        let token = CancellationToken::new();
        tasks.insert(uid.to_string(), token.clone());
        Some(token)
    }

    /// The task of `uid` is over.
    fn unfollow(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// The token that cancels `uid`'s run, if a task follows it.
    fn cancel_task(&self, uid: &str) -> Option<CancellationToken> {
        self.lock().get(uid).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A reconciler's error: logged, and the object retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The host's own work failed.
    #[error(transparent)]
    Legion(#[from] Error),
    /// The API server refused or could not be reached.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<ReconcileError>>),
}

/// Runs the operator until `shutdown` fires (or, with leader election,
/// until the lease is lost: the process then exits so that a fresh one
/// queues for the lease again, as controller-runtime does).
pub async fn run(
    home: Home,
    toolchains: Toolchains,
    opts: OperatorOptions,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if let Some(policy) = &opts.policy {
        // The policy the chart's ConfigMap holds; checked now, so a bad one
        // stops the operator at start with the file named.
        crate::plan::Policy::load(policy)?;
        std::fs::create_dir_all(home.root()).map_err(|e| Error::io(home.root(), e))?;
        std::fs::copy(policy, home.policy()).map_err(|e| Error::io(policy, e))?;
    }
    toolchains.ensure_builtins().await?;
    let cluster = ClusterExecutor::connect(opts.cluster.clone()).await?;
    cluster.check_registry()?;
    let client = crate::exec::kube::client(opts.cluster.kubeconfig.as_deref()).await?;
    let namespace = cluster.namespace().to_string();
    if let Some(addr) = opts.health_listen {
        health_server(addr, shutdown.clone()).await?;
    }
    let work = shutdown.child_token();
    let mut keeper = None;
    if let Some(lease) = &opts.leader_election {
        let elector = leader::Elector::new(client.clone(), &namespace, lease.clone());
        tracing::info!(identity = %lease.identity, lease = %lease.name, "waiting for the lease");
        if !elector.acquire(&shutdown).await? {
            return Ok(());
        }
        tracing::info!(identity = %lease.identity, "leading: reconciling");
        let w = work.clone();
        keeper = Some(tokio::spawn(async move {
            elector.keep(&w).await;
            w.cancel();
        }));
    }
    // Runs left `running` by an earlier operator process before it created
    // their Job are over: nothing runs them.
    runs::interrupted(toolchains.store()).await?;
    let instance = opts
        .leader_election
        .as_ref()
        .map(|l| l.identity.clone())
        .unwrap_or_else(leader::default_identity);
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.to_string(),
                instance: Some(instance),
            },
        ),
        client: client.clone(),
        namespace: namespace.clone(),
        cluster,
        home,
        toolchains,
        tasks: Mutex::new(HashMap::new()),
        threads: crate::exec::threads::RunThreads::per_cpu()?,
        shutdown: work.clone(),
    });
    let config = watcher::Config::default();
    let stop = |w: CancellationToken| async move { w.cancelled().await };
    let toolchain_ctl = Controller::new(
        Api::<crd::Toolchain>::namespaced(client.clone(), &namespace),
        config.clone(),
    )
    .graceful_shutdown_on(stop(work.clone()))
    .run(toolchain::reconcile, toolchain::error_policy, ctx.clone())
    .for_each(log_result);
    let training_ctl = Controller::new(
        Api::<crd::ModelTraining>::namespaced(client.clone(), &namespace),
        config.clone(),
    )
    .graceful_shutdown_on(stop(work.clone()))
    .run(
        runs::reconcile::<crd::ModelTraining>,
        runs::error_policy,
        ctx.clone(),
    )
    .for_each(log_result);
    // A packaging waiting for its training is looked at again when that
    // training changes.
    let packagings = Controller::new(
        Api::<crd::ModelPackaging>::namespaced(client.clone(), &namespace),
        config.clone(),
    );
    let waiting = packagings.store();
    let packaging_ctl = packagings
        .watches(
            Api::<crd::ModelTraining>::namespaced(client.clone(), &namespace),
            config.clone(),
            move |training| {
                let name = training.metadata.name.clone();
                waiting
                    .state()
                    .into_iter()
                    .filter(|p| p.spec.training_ref.is_some() && p.spec.training_ref == name)
                    .map(|p| kube::runtime::reflector::ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(stop(work.clone()))
        .run(
            runs::reconcile::<crd::ModelPackaging>,
            runs::error_policy,
            ctx.clone(),
        )
        .for_each(log_result);
    let deployment_ctl = Controller::new(
        Api::<crd::ModelDeployment>::namespaced(client.clone(), &namespace),
        config.clone(),
    )
    .owns(
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &namespace),
        watcher::Config::default().labels(deployment::MANAGED_SELECTOR),
    )
    .graceful_shutdown_on(stop(work.clone()))
    .run(deployment::reconcile, deployment::error_policy, ctx.clone())
    .for_each(log_result);
    tokio::join!(toolchain_ctl, training_ctl, packaging_ctl, deployment_ctl);
    // Runs followed by this process stop being followed; their Jobs go on,
    // and the next leader finds them by label.
    work.cancel();
    ctx.threads.stop().await;
    // The lease is released before the process ends, so a standby takes
    // over now rather than when it expires.
    if let Some(k) = keeper {
        let _ = tokio::time::timeout(Duration::from_secs(5), k).await;
    }
    if shutdown.is_cancelled() {
        Ok(())
    } else {
        Err(Error::Kubernetes {
            namespace,
            message: "lost the leader lease: another replica leads now; exiting".into(),
        })
    }
}

async fn log_result<K: Resource, E: std::fmt::Display>(
    r: Result<
        (
            kube::runtime::reflector::ObjectRef<K>,
            kube::runtime::controller::Action,
        ),
        E,
    >,
) {
    match r {
        Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
        Err(e) => tracing::warn!(error = %e, "reconcile failed"),
    }
}

/// `/healthz` (the process answers) and `/readyz` (it is up; a standby
/// replica is ready too: it serves by waiting).
async fn health_server(addr: SocketAddr, shutdown: CancellationToken) -> Result<(), Error> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(std::path::Path::new(&addr.to_string()), e))?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(())
}

/// Writes `obj`'s whole status with server-side apply, as the operator's
/// own field manager.
pub async fn write_status<K, S>(ctx: &Context, obj: &K, status: &S) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: serde::Serialize,
{
    use kube::api::{Patch, PatchParams};
    use kube::ResourceExt;
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    Api::<K>::namespaced(ctx.client.clone(), &ctx.namespace)
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
}

/// Now, as Kubernetes writes times (RFC 3339, UTC).
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A time from milliseconds since the epoch, as Kubernetes writes times.
pub fn time_of(ms: i64) -> Option<String> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .ok()
        .and_then(|t| t.round(k8s_openapi::jiff::Unit::Second).ok())
        .map(|t| t.to_string())
}

/// How long a reconciler waits to look again at something that changes
/// without an event it watches (a training another object waits for).
pub const RECHECK: Duration = Duration::from_secs(15);
