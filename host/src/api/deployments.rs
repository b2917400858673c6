//! `/api/v1/deployments`: packaged models served by the API's replicas on
//! the local executor. A deployment's body is a `ModelDeployment`'s name
//! and spec, as on a cluster; here the image's model is served by the
//! model server in the replica's process (the same `legion-serve` a
//! packaged image runs), on its own port, `minReplicas` being its Python
//! workers (no autoscaling on one machine).
//!
//! A deployment is held by the replica serving it, with a lease renewed
//! beside its runs' ([`super::runs::keep_leases`]): a replica that dies
//! loses its deployments to another one (or to itself, started again),
//! which serves them again on a port of its own and writes the new URL.
//! Deleting one asks its holder to stop it, from whichever replica.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use clap::Parser;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::auth::{Caller, Role};
use super::{body, require, Api, ApiError, Shared};
use crate::operator::crd::ModelDeploymentSpec;
use crate::store::{DeploymentRecord, DeploymentState};
use crate::train::now_ms;
use crate::Error;

/// Longest a create waits for the model to be served before answering
/// 202 (`deploying`) instead of 201 (`ready`).
pub const READY_WAIT: Duration = Duration::from_secs(25);

/// Server flags a deployment's `arguments` may set (camelCase keys, as a
/// custom resource spells them). File paths (`requestLog`, `feedbackLog`)
/// are not among them: they would name files on the replica.
const ARGUMENTS: &[&str] = &[
    "workers",
    "maxBatchSize",
    "maxBatchDelayMs",
    "maxQueue",
    "maxBodyBytes",
    "timeoutMs",
    "maxLoadAttempts",
];

/// A create's body: the `ModelDeployment`'s name and spec.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeploymentRequest {
    /// The deployment's name (a DNS label: 1-63 of a-z, 0-9, '-').
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// What to serve, and how.
    pub spec: ModelDeploymentSpec,
}

/// A list of deployments.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DeploymentList {
    /// Every deployment, by name.
    pub items: Vec<DeploymentRecord>,
}

/// The deployments this replica serves.
pub struct Deployer {
    /// Name -> the serving task's number and what stops it. An entry is
    /// removed by its task as it ends (after its server has stopped), so
    /// an entry means a server still running here.
    serving: Mutex<HashMap<String, (u64, CancellationToken)>>,
    /// Numbers the serving tasks.
    started: std::sync::atomic::AtomicU64,
    /// The address deployments listen on.
    host: IpAddr,
    /// The host their URLs name.
    advertise: String,
}

impl Deployer {
    /// Deployments listening on `host` (a wildcard address is advertised
    /// as this machine's name).
    pub fn new(host: IpAddr) -> Self {
        let advertise = if host.is_unspecified() {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into())
        } else if host.is_ipv6() {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Deployer {
            serving: Mutex::new(HashMap::new()),
            started: std::sync::atomic::AtomicU64::new(0),
            host,
            advertise,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, CancellationToken)>> {
        self.serving.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops serving `name` here; whether a server was running.
    pub fn stop(&self, name: &str) -> bool {
        match self.lock().get(name) {
            Some((_, t)) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// Stops every deployment served here whose name is not in `held`
    /// (another replica took it while this one was cut off), or all.
    pub fn keep_only(&self, held: Option<&BTreeSet<String>>) {
        for (name, (_, token)) in self.lock().iter() {
            if !held.is_some_and(|h| h.contains(name)) {
                token.cancel();
            }
        }
    }

    /// Forgets task `id`'s entry for `name` (not a newer task's).
    fn ended(&self, name: &str, id: u64) {
        let mut map = self.lock();
        if map.get(name).is_some_and(|(n, _)| *n == id) {
            map.remove(name);
        }
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "name",
            format!("'{name}' is not a DNS label: 1-63 of a-z, 0-9 and '-', starting and ending with a letter or digit"),
        ))
    }
}

/// The model server's flags for `spec`: `minReplicas` workers, the
/// `arguments` it allows; errors name the field.
fn serve_args(spec: &ModelDeploymentSpec) -> Result<legion_serve::ServeArgs, ApiError> {
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        serve: legion_serve::ServeArgs,
    }
    if spec.min_replicas == 0 || spec.min_replicas > spec.max_replicas {
        return Err(ApiError::bad(
            "spec.minReplicas",
            format!(
                "{} is not between 1 and maxReplicas ({})",
                spec.min_replicas, spec.max_replicas
            ),
        ));
    }
    let mut argv = vec![
        "legion-serve".to_string(),
        "--port".into(),
        "0".into(),
        "--workers".into(),
        spec.min_replicas.to_string(),
    ];
    for (key, value) in &spec.arguments {
        if !ARGUMENTS.contains(&key.as_str()) {
            return Err(ApiError::bad(
                &format!("spec.arguments.{key}"),
                format!(
                    "not a server argument here; these are: {}",
                    ARGUMENTS.join(", ")
                ),
            ));
        }
        let flag: String = key
            .chars()
            .flat_map(|c| {
                if c.is_ascii_uppercase() {
                    vec!['-', c.to_ascii_lowercase()]
                } else {
                    vec![c]
                }
            })
            .collect();
        argv.push(format!("--{flag}"));
        argv.push(value.clone());
    }
    Flags::try_parse_from(argv).map(|f| f.serve).map_err(|e| {
        let text = e.to_string();
        ApiError::bad(
            "spec.arguments",
            text.lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ")
                .to_string(),
        )
    })
}

/// The stored model `image` serves: an image `legion images ls` lists
/// (by reference or digest).
async fn model_of(api: &Api, image: &str) -> Result<String, ApiError> {
    let images = crate::oci::catalog::images(&api.home, api.toolchains.store()).await?;
    images
        .into_iter()
        .find(|i| i.reference == image || i.digest == image)
        .map(|i| i.model)
        .ok_or_else(|| {
            ApiError::bad(
                "spec.image",
                format!("no packaged image '{image}' here (GET /api/v1/images lists them)"),
            )
        })
}

/// How a deployment started here first went.
type FirstOutcome = oneshot::Sender<Result<String, String>>;

/// Serves `d` on this replica, which holds it; `first` hears whether it
/// became ready (its URL) or failed (why).
pub fn start(api: &Arc<Api>, d: DeploymentRecord, first: Option<FirstOutcome>) {
    let stop = CancellationToken::new();
    let id = api
        .deployer
        .started
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some((_, old)) = api
        .deployer
        .lock()
        .insert(d.name.clone(), (id, stop.clone()))
    {
        old.cancel();
    }
    let api = api.clone();
    tokio::spawn(async move {
        let name = d.name.clone();
        serve_one(api.clone(), d, stop, first).await;
        api.deployer.ended(&name, id);
    });
}

async fn serve_one(
    api: Arc<Api>,
    d: DeploymentRecord,
    stop: CancellationToken,
    mut first: Option<FirstOutcome>,
) {
    let store = api.toolchains.store();
    let me = api.runner.replica.clone();
    let outcome: Result<(), String> = async {
        let args = serve_args(&d.spec).map_err(|e| e.message().to_string())?;
        let listener = legion_serve::bind(SocketAddr::new(api.deployer.host, 0))
            .await
            .map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let url = format!("http://{}:{port}", api.deployer.advertise);
        let model = crate::serve::prepare(&api.home, &d.model)
            .await
            .map_err(|e| e.to_string())?;
        let shutdown = stop.clone().cancelled_owned();
        let mut server =
            tokio::spawn(
                async move { legion_serve::serve(listener, model, &args, shutdown).await },
            );
        // Ready once a worker has loaded the model (the server's own
        // readiness probe, asked on loopback).
        let probe = format!("http://127.0.0.1:{port}/v2/health/ready");
        let http = reqwest::Client::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                ended = &mut server => {
                    return Err(match ended {
                        Ok(Ok(())) => "the model server stopped".to_string(),
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                    });
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            let ready = http
                .get(&probe)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                let _ = store
                    .set_deployment_state(
                        &d.name,
                        &me,
                        DeploymentState::Ready,
                        Some(&url),
                        None,
                        now_ms(),
                    )
                    .await;
                tracing::info!(deployment = %d.name, %url, model = %d.model, "deployment ready");
                if let Some(tx) = first.take() {
                    let _ = tx.send(Ok(url.clone()));
                }
                break;
            }
        }
        match server.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
    .await;
    let cancelled = stop.is_cancelled();
    match outcome {
        Err(why) if !cancelled => {
            tracing::warn!(deployment = %d.name, "deployment failed: {why}");
            let _ = store
                .set_deployment_state(
                    &d.name,
                    &me,
                    DeploymentState::Failed,
                    None,
                    Some(&why),
                    now_ms(),
                )
                .await;
            if let Some(tx) = first.take() {
                let _ = tx.send(Err(why));
            }
        }
        _ => {
            // Stopped: removed if it was deleted; otherwise (this replica
            // is going away, or lost it) left for the next holder.
            if let Ok(Some(now)) = store.get_deployment(&d.name).await {
                if now.state == DeploymentState::Deleting
                    && now.owner.as_deref() == Some(me.as_str())
                {
                    let _ = store.delete_deployment(&d.name).await;
                    tracing::info!(deployment = %d.name, "deployment deleted");
                }
            }
        }
    }
}

/// Renews this replica's deployments, stops those asked to be deleted or
/// held elsewhere now, removes deleted ones whose holder is gone, and
/// takes over those of replicas that died. Called by the lease loop.
pub async fn keep(api: &Arc<Api>) {
    let store = api.toolchains.store();
    let me = &api.runner.replica;
    let r: Result<(), Error> = async {
        store
            .renew_deployment_leases(me, api.runner.lease_until())
            .await?;
        let mut held = BTreeSet::new();
        for (name, state) in store.deployments_held_by(me).await? {
            if state != DeploymentState::Deleting {
                held.insert(name);
            } else if !api.deployer.stop(&name) {
                // A server running here removes its row once it has
                // stopped; with none (failed, or never started), it goes now.
                store.delete_deployment(&name).await?;
            }
        }
        api.deployer.keep_only(Some(&held));
        store.reap_deleted_deployments(now_ms()).await?;
        while let Some(d) = store
            .claim_expired_deployment(me, now_ms(), api.runner.lease_until())
            .await?
        {
            tracing::info!(deployment = %d.name, "serving a deployment again: its replica stopped");
            start(api, d, None);
        }
        Ok(())
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "keeping deployments");
    }
}

/// Lets this replica's deployments go on the way out: stopped here, their
/// leases released so that another replica serves them at once.
pub async fn release(api: &Arc<Api>) {
    api.deployer.keep_only(None);
    if let Err(e) = api
        .toolchains
        .store()
        .renew_deployment_leases(&api.runner.replica, 0)
        .await
    {
        tracing::warn!(error = %e, "letting deployments go");
    }
}

/// `POST /api/v1/deployments`: 201 once serving, 202 while its model
/// still loads, 422 if it cannot be served (kept, `failed`, with why).
pub(super) async fn create(
    State(api): Shared,
    caller: Caller,
    b: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    require(&caller, Role::DataScientist)?;
    let req: DeploymentRequest = body(b)?;
    check_name(&req.name)?;
    serve_args(&req.spec)?;
    if let Some(c) = &api.cluster {
        return create_on_cluster(&api, c, req, &caller).await;
    }
    let model = model_of(&api, &req.spec.image).await?;
    let now = now_ms();
    let record = DeploymentRecord {
        name: req.name.clone(),
        spec: req.spec,
        model,
        state: DeploymentState::Deploying,
        url: None,
        reason: None,
        owner: Some(api.runner.replica.clone()),
        created_at: now,
        updated_at: now,
    };
    let store = api.toolchains.store();
    if !store
        .insert_deployment(&record, api.runner.lease_until())
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already-exists",
            format!("deployment '{}' exists: delete it first", req.name),
        ));
    }
    tracing::info!(deployment = %req.name, by = %caller.name, "deployment created");
    let (tx, rx) = oneshot::channel();
    start(&api, record, Some(tx));
    let outcome = tokio::time::timeout(READY_WAIT, rx).await;
    let now = get_record(&api, &req.name).await?;
    let status = match outcome {
        Ok(Ok(Ok(_))) => StatusCode::CREATED,
        Ok(Ok(Err(why))) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "failed",
                format!("deployment '{}' cannot be served: {why}", req.name),
            )
            .with_deployment(now));
        }
        _ => StatusCode::ACCEPTED,
    };
    let mut r = (status, Json(&now)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/deployments/{}", req.name)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// On a cluster: a `ModelDeployment` object, answered 202 (the operator
/// rolls it out; GET shows its phase and URL).
async fn create_on_cluster(
    api: &Api,
    c: &super::cluster::Cluster,
    req: DeploymentRequest,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let image = req.spec.image.clone();
    let model = match api.toolchains.store().packaging_of_image(&image).await? {
        Some(run) => format!("{}:{}", run.model.name, run.model.version),
        None => {
            return Err(ApiError::bad(
                "spec.image",
                format!("no packaging made '{image}' (GET /api/v1/packagings lists them; their imageRef is what a deployment serves)"),
            ))
        }
    };
    match c
        .create_deployment(&req.name, req.spec, model, &caller.name)
        .await?
    {
        Some(d) => {
            tracing::info!(deployment = %req.name, by = %caller.name, "ModelDeployment created");
            let mut r = (StatusCode::ACCEPTED, Json(&d)).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/deployments/{}", req.name)) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            Ok(r)
        }
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already-exists",
            format!("deployment '{}' exists: delete it first", req.name),
        )),
    }
}

async fn get_record(api: &Api, name: &str) -> Result<DeploymentRecord, ApiError> {
    let found = match &api.cluster {
        Some(c) => c.deployment(name).await?,
        None => api.toolchains.store().get_deployment(name).await?,
    };
    found.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no deployment '{name}'"),
        )
    })
}

/// `GET /api/v1/deployments`.
pub(super) async fn list(State(api): Shared, caller: Caller) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    let items = match &api.cluster {
        Some(c) => c.deployments().await?,
        None => api.toolchains.store().list_deployments().await?,
    };
    Ok(Json(DeploymentList { items }).into_response())
}

/// `GET /api/v1/deployments/{name}`.
pub(super) async fn get(
    State(api): Shared,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    Ok(Json(get_record(&api, &name).await?).into_response())
}

/// `DELETE /api/v1/deployments/{name}`: 202 with it, `deleting`; its
/// holder stops it and removes it (GET answers 404 then).
pub(super) async fn delete(
    State(api): Shared,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    require(&caller, Role::DataScientist)?;
    let mut d = get_record(&api, &name).await?;
    if let Some(c) = &api.cluster {
        // The operator removes what serves it, then the object goes.
        c.delete_deployment(&name).await?;
        tracing::info!(deployment = %name, by = %caller.name, "ModelDeployment deleted");
        d.state = DeploymentState::Deleting;
        return Ok((StatusCode::ACCEPTED, Json(d)).into_response());
    }
    api.toolchains
        .store()
        .request_delete_deployment(&name, now_ms())
        .await?;
    api.deployer.stop(&name);
    tracing::info!(deployment = %name, by = %caller.name, "deployment deletion asked");
    d.state = DeploymentState::Deleting;
    d.updated_at = now_ms();
    Ok((StatusCode::ACCEPTED, Json(d)).into_response())
}
