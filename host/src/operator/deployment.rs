//! `ModelDeployment`: a packaged image served by a Deployment, a Service
//! and, when `minReplicas < maxReplicas`, a HorizontalPodAutoscaler, made
//! from the packager's service plan (`server.plan-serving`).
//!
//! The image is resolved in its registry first: one that does not exist
//! fails the deployment with `ImageNotFound` and nothing is created. The
//! status is `Ready` only when the Deployment has rolled out: every
//! replica updated to the current spec and available, no old one left
//! (KServe reports Ready while a rollout is still progressing; Legion
//! does not). While it is not, the condition names why, from the pods:
//! an image that cannot be pulled, a container crash-looping (with its
//! last log line), a pod that cannot be scheduled.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, Pod,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::crd::ModelDeployment;
use super::status::{phase, set, Status};
use super::{Context, ReconcileError, FINALIZER, MANAGER};
use crate::oci::registry::{parse_reference, Registry};
use crate::plan::{ModelId, ServicePlan, ServingRequest};
use crate::Error;

/// Label on every object made for a deployment: its name.
pub const DEPLOYMENT_LABEL: &str = "legion-platform.org/deployment";
/// The selector of the Deployments the operator manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=legion";
/// How often a deployment that is not ready is looked at again (pods
/// change without an event the controller watches).
const NOT_READY_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Reconciles one deployment.
pub async fn reconcile(
    md: Arc<ModelDeployment>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let api = Api::<ModelDeployment>::namespaced(ctx.client.clone(), &ctx.namespace);
    finalizer(&api, FINALIZER, md, |event| async {
        match event {
            Event::Apply(md) => apply(&md, &ctx).await,
            Event::Cleanup(md) => cleanup(&md, &ctx).await,
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
}

/// Retries a failed reconcile after a pause.
pub fn error_policy(_: Arc<ModelDeployment>, e: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "deployment reconcile failed");
    Action::requeue(std::time::Duration::from_secs(10))
}

async fn apply(md: &ModelDeployment, ctx: &Context) -> Result<Action, ReconcileError> {
    let generation = md.metadata.generation;
    let before = md.status.clone().unwrap_or_default();
    let before_reason = super::status::get(&before.conditions, "Ready").map(|c| c.reason.clone());
    let mut status = before.clone();
    status.observed_generation = generation;
    let plan = match plan(md, ctx).await? {
        Ok((plan, digest)) => {
            status.image_digest = Some(digest);
            plan
        }
        Err((reason, message)) => {
            status.phase = Some(phase::FAILED.into());
            status.available_replicas = 0;
            set(
                &mut status.conditions,
                "Ready",
                Status::False,
                reason,
                &message,
                generation,
            );
            // Written and told once; each write is an event that would
            // bring the object straight back here.
            if status != before {
                super::write_status(ctx, md, &status).await?;
            }
            if before_reason.as_deref() != Some(reason) {
                ctx.event(md, EventType::Warning, reason, message).await;
            }
            // An image pushed later, a toolchain registered later: look again.
            return Ok(Action::requeue(super::RECHECK));
        }
    };
    let objects = objects(
        md,
        &ctx.namespace,
        &plan,
        &ctx.cluster.options().image_pull_secrets,
    );
    apply_objects(ctx, &objects).await?;
    let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), &ctx.namespace);
    let deployment = deployments.get_opt(&objects.deployment_name()).await?;
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ctx.namespace)
        .list(&ListParams::default().labels(&format!("{DEPLOYMENT_LABEL}={}", md.name_any())))
        .await?
        .items;
    let mut verdict = rollout(deployment.as_ref(), &pods);
    if let Rollout::CrashLoop { pod, container, .. } = &verdict {
        let last = last_log_line(ctx, pod, container).await;
        if let Rollout::CrashLoop { last_line, .. } = &mut verdict {
            *last_line = last;
        }
    }
    status.available_replicas = deployment
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    status.url = Some(format!(
        "http://{}.{}.svc.cluster.local",
        md.name_any(),
        ctx.namespace
    ));
    let (phase, s, reason, message) = verdict.condition();
    status.phase = Some(phase.into());
    set(
        &mut status.conditions,
        "Ready",
        s,
        reason,
        &message,
        generation,
    );
    if status != before {
        super::write_status(ctx, md, &status).await?;
    }
    let changed = before_reason.as_deref() != Some(reason);
    match verdict {
        Rollout::Ready { .. } => {
            if changed {
                ctx.event(md, EventType::Normal, "Ready", message).await;
            }
            Ok(Action::await_change())
        }
        Rollout::Progressing { .. } => Ok(Action::requeue(NOT_READY_RECHECK)),
        _ => {
            if changed {
                ctx.event(md, EventType::Warning, reason, message).await;
            }
            Ok(Action::requeue(NOT_READY_RECHECK))
        }
    }
}

/// The image resolved to its digest and the packager's service plan for
/// it, or why there is none (reason, message).
async fn plan(
    md: &ModelDeployment,
    ctx: &Context,
) -> Result<Result<(ServicePlan, String), (&'static str, String)>, ReconcileError> {
    let spec = &md.spec;
    let builtin = match super::toolchain::builtin_of(ctx, &spec.toolchain).await? {
        Ok(b) => b,
        Err((reason, message, _)) => return Ok(Err((reason, message))),
    };
    let reference = match parse_reference(&spec.image, "latest") {
        Ok(r) => r,
        Err(e) => return Ok(Err(("InvalidSpec", format!("spec.image: {e}")))),
    };
    let image = match Registry::for_reference(&reference)
        .resolve_image(&spec.image, &reference)
        .await
    {
        Ok(i) => i,
        Err(e) => {
            return Ok(Err((
                "ImageNotFound",
                format!(
                "image {} cannot be resolved in its registry (is it pushed? legion images ls): {e}",
                spec.image
            ),
            )))
        }
    };
    let labels = image
        .config
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let resources = match super::runs::resources(&spec.resources, "spec.") {
        Ok(r) => r,
        Err(e) => return Ok(Err(("InvalidSpec", e))),
    };
    let pinned = format!(
        "{}/{}@{}",
        reference.resolve_registry(),
        reference.repository(),
        image.digest
    );
    let request = ServingRequest {
        model: ModelId {
            name: label("org.legion-platform.model.name"),
            version: label("org.legion-platform.model.version"),
        },
        image: pinned,
        manifest: Default::default(),
        port: None,
        min_replicas: spec.min_replicas,
        max_replicas: spec.max_replicas,
        resources,
        arguments: spec.arguments.clone(),
    };
    let plugin = ctx.toolchains.load(&builtin).await?;
    let planned = tokio::task::spawn_blocking(move || plugin.plan_serving(&request))
        .await
        .map_err(|e| Error::Engine {
            context: "planning a service",
            source: e.into(),
        })?;
    Ok(match planned {
        Ok(plan) => Ok((plan, image.digest)),
        Err(e) => Err(("InvalidSpec", e.to_string())),
    })
}

/// What a deployment is made of.
#[derive(Debug, Clone)]
pub struct Objects {
    /// Runs the server.
    pub deployment: Deployment,
    /// Gives it a name in the cluster.
    pub service: Service,
    /// Scales it, when it may scale.
    pub autoscaler: Option<HorizontalPodAutoscaler>,
}

impl Objects {
    fn deployment_name(&self) -> String {
        self.deployment.metadata.name.clone().unwrap_or_default()
    }
}

/// The objects for `md` from its service `plan`: every one labelled with
/// the deployment and owned by it (garbage-collected with it).
pub fn objects(
    md: &ModelDeployment,
    namespace: &str,
    plan: &ServicePlan,
    pull_secrets: &[String],
) -> Objects {
    let name = md.name_any();
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), name.clone()),
        (
            "app.kubernetes.io/component".to_string(),
            "model-server".to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "legion".to_string(),
        ),
        (DEPLOYMENT_LABEL.to_string(), name.clone()),
    ]);
    let selector = BTreeMap::from([(DEPLOYMENT_LABEL.to_string(), name.clone())]);
    let owner = OwnerReference {
        api_version: ModelDeployment::api_version(&()).to_string(),
        kind: ModelDeployment::kind(&()).to_string(),
        name: name.clone(),
        uid: md.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        // Blocking the owner's deletion would need update on
        // modeldeployments/finalizers where that admission plugin runs; the
        // finalizer deletes these objects first anyway.
        block_owner_deletion: None,
    };
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels.clone()),
        owner_references: Some(vec![owner]),
        ..Default::default()
    };
    let probe = |path: &str, delay: u32, period: u32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(delay as i32),
        period_seconds: Some(period.max(1) as i32),
        ..Default::default()
    };
    let h = &plan.health;
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(cpu) = plan.resources.cpu_millis {
        requests.insert("cpu".to_string(), Quantity(format!("{cpu}m")));
    }
    if let Some(mem) = plan.resources.memory_bytes {
        requests.insert("memory".to_string(), Quantity(mem.to_string()));
        limits.insert("memory".to_string(), Quantity(mem.to_string()));
    }
    if let Some(gpus) = plan.resources.gpus.filter(|g| *g > 0) {
        limits.insert("nvidia.com/gpu".to_string(), Quantity(gpus.to_string()));
    }
    let container = Container {
        name: "model".into(),
        image: Some(plan.image.clone()),
        command: (!plan.command.is_empty()).then(|| plan.command.clone()),
        args: (!plan.args.is_empty()).then(|| plan.args.clone()),
        env: Some(
            plan.env
                .iter()
                .map(|e| EnvVar {
                    name: e.name.clone(),
                    value: Some(e.value.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(plan.port),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(probe(
            &h.readiness_path,
            h.initial_delay_seconds,
            h.period_seconds,
        )),
        liveness_probe: Some(Probe {
            // A server loading a big model answers liveness first; give it
            // time before a failed probe restarts it.
            failure_threshold: Some(6),
            ..probe(&h.liveness_path, h.initial_delay_seconds, h.period_seconds)
        }),
        resources: Some(ResourceRequirements {
            requests: (!requests.is_empty()).then_some(requests),
            limits: (!limits.is_empty()).then_some(limits),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let scales = plan.max_replicas > plan.min_replicas;
    let deployment = Deployment {
        metadata: meta.clone(),
        spec: DeploymentSpec {
            // With an autoscaler the replicas are its to set.
            replicas: (!scales).then_some(plan.min_replicas as i32),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    image_pull_secrets: crate::exec::kube::job::pull_secrets(pull_secrets),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(crate::exec::kube::job::RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    };
    let service = Service {
        metadata: meta.clone(),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    let autoscaler = scales.then(|| HorizontalPodAutoscaler {
        metadata: meta,
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name,
            },
            min_replicas: Some(plan.min_replicas.max(1) as i32),
            max_replicas: plan.max_replicas as i32,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(80),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
        status: None,
    });
    Objects {
        deployment,
        service,
        autoscaler,
    }
}

async fn apply_objects(ctx: &Context, o: &Objects) -> Result<(), ReconcileError> {
    let pp = PatchParams::apply(MANAGER).force();
    let name = o.deployment_name();
    let ns = &ctx.namespace;
    Api::<Deployment>::namespaced(ctx.client.clone(), ns)
        .patch(&name, &pp, &Patch::Apply(manifest(&o.deployment, ns)?))
        .await?;
    Api::<Service>::namespaced(ctx.client.clone(), ns)
        .patch(&name, &pp, &Patch::Apply(manifest(&o.service, ns)?))
        .await?;
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), ns);
    match &o.autoscaler {
        Some(hpa) => {
            hpas.patch(&name, &pp, &Patch::Apply(manifest(hpa, ns)?))
                .await?;
        }
        None => delete_absent(hpas.delete(&name, &DeleteParams::default()).await)?,
    }
    Ok(())
}

/// An object as server-side apply wants it: with its apiVersion and kind.
fn manifest<K: Resource<DynamicType = ()> + serde::Serialize>(
    obj: &K,
    namespace: &str,
) -> Result<serde_json::Value, Error> {
    let mut v = serde_json::to_value(obj).map_err(|e| Error::Kubernetes {
        namespace: namespace.to_string(),
        message: format!("cannot write a {}: {e}", K::kind(&())),
    })?;
    v["apiVersion"] = json!(K::api_version(&()));
    v["kind"] = json!(K::kind(&()));
    Ok(v)
}

fn delete_absent<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The deployment is going: its serving objects go first (a real cluster
/// would collect them by owner; the operator does not leave it to that).
async fn cleanup(md: &ModelDeployment, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = md.name_any();
    let ns = &ctx.namespace;
    let dp = DeleteParams::background();
    delete_absent(
        Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), ns)
            .delete(&name, &dp)
            .await,
    )?;
    delete_absent(
        Api::<Service>::namespaced(ctx.client.clone(), ns)
            .delete(&name, &dp)
            .await,
    )?;
    delete_absent(
        Api::<Deployment>::namespaced(ctx.client.clone(), ns)
            .delete(&name, &dp)
            .await,
    )?;
    Ok(Action::await_change())
}

/// How a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica is updated and available, no old one left.
    Ready {
        /// Available replicas.
        available: i32,
    },
    /// On its way.
    Progressing {
        /// Updated replicas available.
        available: i32,
        /// Replicas wanted.
        desired: i32,
    },
    /// A container image cannot be pulled.
    ImagePull {
        /// Why, as the kubelet says.
        message: String,
    },
    /// A container keeps crashing.
    CrashLoop {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
        /// Restarts so far.
        restarts: i32,
        /// Its last exit code.
        exit_code: Option<i32>,
        /// Its last log line, once read.
        last_line: Option<String>,
    },
    /// A pod cannot be placed on any node.
    Unschedulable {
        /// The scheduler's message.
        message: String,
    },
    /// The Deployment controller gave up (`ProgressDeadlineExceeded`).
    Stuck {
        /// Its message.
        message: String,
    },
}

impl Rollout {
    /// (phase, Ready status, reason, message)
    pub fn condition(&self) -> (&'static str, Status, &'static str, String) {
        match self {
            Rollout::Ready { available } => (
                phase::READY,
                Status::True,
                "Available",
                format!("{available} replica(s) of the current spec available"),
            ),
            Rollout::Progressing { available, desired } => (
                phase::DEPLOYING,
                Status::False,
                "RollingOut",
                format!("{available} of {desired} updated replica(s) available"),
            ),
            Rollout::ImagePull { message } => (
                phase::FAILED,
                Status::False,
                "ImagePullFailed",
                message.clone(),
            ),
            Rollout::CrashLoop {
                pod,
                container,
                restarts,
                exit_code,
                last_line,
            } => {
                (
                    phase::FAILED,
                    Status::False,
                    "CrashLoop",
                    format!(
                    "container '{container}' of pod {pod} keeps crashing ({restarts} restarts{}){}",
                    exit_code.map(|c| format!(", last exit code {c}")).unwrap_or_default(),
                    last_line
                        .as_deref()
                        .map(|l| format!("; its last log line: {l}"))
                        .unwrap_or_default()
                ),
                )
            }
            Rollout::Unschedulable { message } => (
                phase::FAILED,
                Status::False,
                "Unschedulable",
                format!("a pod cannot be scheduled: {message}"),
            ),
            Rollout::Stuck { message } => (
                phase::FAILED,
                Status::False,
                "ProgressDeadlineExceeded",
                message.clone(),
            ),
        }
    }
}

/// Reads a rollout from the Deployment and its pods.
pub fn rollout(deployment: Option<&Deployment>, pods: &[Pod]) -> Rollout {
    for pod in pods {
        let name = pod.name_any();
        let Some(status) = &pod.status else { continue };
        for c in status.container_statuses.iter().flatten() {
            let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            match waiting.reason.as_deref() {
                Some("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName") => {
                    return Rollout::ImagePull {
                        message: format!(
                            "pod {name} cannot pull {}: {}",
                            c.image,
                            waiting.message.as_deref().unwrap_or("no message")
                        ),
                    }
                }
                Some("CrashLoopBackOff") => {
                    return Rollout::CrashLoop {
                        pod: name,
                        container: c.name.clone(),
                        restarts: c.restart_count,
                        exit_code: c
                            .last_state
                            .as_ref()
                            .and_then(|s| s.terminated.as_ref())
                            .map(|t| t.exit_code),
                        last_line: None,
                    }
                }
                _ => {}
            }
        }
        if let Some(why) = crate::exec::kube::runner::unschedulable(pod) {
            return Rollout::Unschedulable { message: why };
        }
    }
    let Some(d) = deployment else {
        return Rollout::Progressing {
            available: 0,
            desired: 1,
        };
    };
    let desired = d.spec.replicas.unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    if let Some(c) =
        st.conditions.iter().flatten().find(|c| {
            c.type_.as_deref() == Some("Progressing") && c.status.as_deref() == Some("False")
        })
    {
        if c.reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Rollout::Stuck {
                message: c.message.clone().unwrap_or_default(),
            };
        }
    }
    let observed = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    let total = st.replicas.unwrap_or(0);
    if observed && updated >= desired && available >= desired && total == updated {
        Rollout::Ready { available }
    } else {
        Rollout::Progressing {
            available: available.min(updated),
            desired,
        }
    }
}

/// The last line a crashed container wrote (its previous instance's log).
async fn last_log_line(ctx: &Context, pod: &str, container: &str) -> Option<String> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ctx.namespace);
    let params = LogParams {
        container: Some(container.to_string()),
        previous: true,
        tail_lines: Some(20),
        ..Default::default()
    };
    let text = match pods.logs(pod, &params).await {
        Ok(t) => t,
        // No previous instance yet: the current one's.
        Err(_) => pods
            .logs(
                pod,
                &LogParams {
                    previous: false,
                    ..params
                },
            )
            .await
            .ok()?,
    };
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.chars().take(500).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{HealthCheck, Resources};

    fn plan(min: u32, max: u32) -> ServicePlan {
        ServicePlan {
            image: "r.example/images/iris@sha256:abc".into(),
            command: Vec::new(),
            args: Vec::new(),
            env: vec![crate::plan::EnvVar {
                name: "LEGION_SERVE_PORT".into(),
                value: "8080".into(),
            }],
            port: 8080,
            min_replicas: min,
            max_replicas: max,
            resources: Resources {
                cpu_millis: Some(500),
                memory_bytes: Some(512 << 20),
                gpus: None,
            },
            health: HealthCheck {
                liveness_path: "/v2/health/live".into(),
                readiness_path: "/v2/health/ready".into(),
                initial_delay_seconds: 1,
                period_seconds: 5,
            },
        }
    }

    fn md() -> ModelDeployment {
        let mut md = ModelDeployment::new(
            "iris",
            serde_json::from_value(json!({"image": "r.example/images/iris:1"})).unwrap(),
        );
        md.metadata.uid = Some("u-1".into());
        md
    }

    #[test]
    fn the_objects_follow_the_service_plan_and_are_locked_down() {
        let o = objects(&md(), "ml", &plan(2, 2), &["pull".to_string()]);
        assert!(o.autoscaler.is_none(), "min == max: no autoscaler");
        let spec = &o.deployment.spec;
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "pull");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("r.example/images/iris@sha256:abc"));
        let ready = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(ready.path.as_deref(), Some("/v2/health/ready"));
        let live = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(live.path.as_deref(), Some("/v2/health/live"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let r = c.resources.as_ref().unwrap();
        assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "500m");
        assert_eq!(
            r.limits.as_ref().unwrap()["memory"].0,
            (512u64 << 20).to_string()
        );
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
        let owner = &o.deployment.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ModelDeployment", "u-1")
        );
        let svc = o.service.spec.as_ref().unwrap();
        assert_eq!(svc.selector, spec.selector.match_labels);

        let o = objects(&md(), "ml", &plan(1, 4), &[]);
        let hpa = o.autoscaler.expect("min < max: an autoscaler");
        let h = hpa.spec;
        assert_eq!((h.min_replicas, h.max_replicas), (Some(1), 4));
        assert_eq!(
            o.deployment.spec.replicas, None,
            "the autoscaler sets replicas"
        );
    }

    fn deployment(
        generation: i64,
        observed: i64,
        desired: i32,
        updated: i32,
        available: i32,
        total: i32,
    ) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "iris", "generation": generation},
            "spec": {"replicas": desired, "selector": {}, "template": {}},
            "status": {"observedGeneration": observed, "updatedReplicas": updated,
                       "availableReplicas": available, "replicas": total}
        }))
        .unwrap()
    }

    fn pod(statuses: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "iris-1"}, "status": statuses})).unwrap()
    }

    #[test]
    fn ready_only_when_every_replica_is_updated_and_available() {
        let r = |d: Deployment| rollout(Some(&d), &[]);
        assert_eq!(
            r(deployment(2, 2, 2, 2, 2, 2)),
            Rollout::Ready { available: 2 }
        );
        // The controller has not seen the new spec yet.
        assert!(matches!(
            r(deployment(3, 2, 2, 2, 2, 2)),
            Rollout::Progressing { .. }
        ));
        // Old replicas still available (the KServe complaint): not ready.
        assert!(matches!(
            r(deployment(2, 2, 2, 1, 2, 3)),
            Rollout::Progressing { .. }
        ));
        assert!(matches!(
            r(deployment(2, 2, 2, 2, 1, 2)),
            Rollout::Progressing { .. }
        ));
        assert!(matches!(rollout(None, &[]), Rollout::Progressing { .. }));
    }

    #[test]
    fn a_failing_rollout_names_the_reason() {
        let d = deployment(1, 1, 1, 1, 0, 1);
        let pull = pod(
            json!({"containerStatuses": [{"name": "model", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]}),
        );
        let (_, _, reason, message) = rollout(Some(&d), &[pull]).condition();
        assert_eq!(reason, "ImagePullFailed");
        assert!(message.contains("not found"), "{message}");
        let crash = pod(
            json!({"containerStatuses": [{"name": "model", "image": "x", "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1}}}]}),
        );
        let mut r = rollout(Some(&d), &[crash]);
        if let Rollout::CrashLoop { last_line, .. } = &mut r {
            *last_line = Some("KeyError: 'model'".into());
        }
        let (phase, status, reason, message) = r.condition();
        assert_eq!(
            (phase, status, reason),
            ("Failed", Status::False, "CrashLoop")
        );
        assert!(
            message.contains("4 restarts, last exit code 1"),
            "{message}"
        );
        assert!(message.contains("KeyError: 'model'"), "{message}");
        let unschedulable = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes have enough memory"}]}),
        );
        let (_, _, reason, message) = rollout(Some(&d), &[unschedulable]).condition();
        assert_eq!(reason, "Unschedulable");
        assert!(message.contains("0/3 nodes"), "{message}");
        let stuck: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "iris", "generation": 1},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet iris-1 has timed out progressing."}]}
        }))
        .unwrap();
        assert_eq!(
            rollout(Some(&stuck), &[]).condition().2,
            "ProgressDeadlineExceeded"
        );
    }
}
