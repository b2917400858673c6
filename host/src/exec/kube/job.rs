//! A training run as one `batch/v1` Job (k8s-openapi types).
//!
//! ```text
//! pod (restartPolicy Never, emptyDir /workspace and /tmp, non-root, no privilege, read-only root)
//!   init  fetch        legion image: `legion step fetch` (git at the recorded commit; data)
//!   init  step-<name>  one per plan step, in order, in its step image, LEGION_* set
//!   main  collect      legion image: `legion step collect` (toolchain by digest; push;
//!                      the model digest as the termination message)
//! ```
//!
//! Every object is labelled `legion-platform.org/run-id`, `…/toolchain`
//! and `…/kind`, so a restarted host finds its Jobs again.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::exec::{substitute, Workspace};
use crate::plan::{Plan, Resources};
use crate::train::phases::{PackageSpec, StepSpec};
use crate::Error;

/// Label: the run's id.
pub const RUN_ID_LABEL: &str = "legion-platform.org/run-id";
/// Label: the toolchain's name.
pub const TOOLCHAIN_LABEL: &str = "legion-platform.org/toolchain";
/// Label: `training` or `packaging`.
pub const KIND_LABEL: &str = "legion-platform.org/kind";
/// Where the workspace is mounted in every container.
pub const WORKSPACE: &str = "/workspace";
/// The user every container runs as.
pub const RUN_AS: i64 = 1000;

/// Settings of the Kubernetes executor that are not in a plan.
#[derive(Debug, Clone, Default)]
pub struct ClusterSettings {
    /// Namespace the Job goes in.
    pub namespace: String,
    /// The `legion` image that runs fetch and collect.
    pub legion_image: String,
    /// Retries of a failed pod (policy; 0 by default: a training is not idempotent).
    pub backoff_limit: i32,
    /// Seconds a finished Job (and its pods) is kept; logs are stored apart.
    pub ttl_seconds_after_finished: i32,
    /// Node selector for the pod.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations for the pod.
    pub tolerations: Vec<Toleration>,
    /// A Secret with `username` and `password` for the registry, given to
    /// the legion containers (they pull and push models and images).
    pub registry_secret: Option<String>,
    /// Registries reached over plain HTTP (`LEGION_INSECURE_REGISTRIES`),
    /// passed on to the legion containers.
    pub insecure_registries: Option<String>,
    /// Secrets the kubelet pulls the pod's images with (step images and
    /// the legion image in a private registry).
    pub image_pull_secrets: Vec<String>,
}

/// What one training Job is made from.
#[derive(Debug, Clone)]
pub struct TrainingJob<'a> {
    /// The spec the fetch and collect containers get (run, toolchain, request, push).
    pub spec: &'a StepSpec,
    /// The plan.
    pub plan: &'a Plan,
    /// The image each step runs in, in plan order: the plan's own, or the
    /// step image made for its Python environment.
    pub step_images: &'a [String],
    /// The run's time limit, in seconds (`activeDeadlineSeconds`).
    pub deadline_seconds: i64,
}

/// A name Kubernetes accepts as a DNS label (lower case, digits, `-`,
/// at most `max` characters, starting and ending alphanumeric).
pub fn dns_label(text: &str, max: usize) -> String {
    let mut s: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.truncate(max);
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "x".into()
    } else {
        s
    }
}

/// A label value: at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
pub fn label_value(text: &str) -> String {
    let mut s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.truncate(63);
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The Job's name for a run.
pub fn job_name(run_id: &str) -> String {
    dns_label(&format!("legion-{run_id}"), 63)
}

fn quantity(r: &Resources) -> Option<ResourceRequirements> {
    let mut map = BTreeMap::new();
    if let Some(c) = r.cpu_millis {
        map.insert("cpu".to_string(), Quantity(format!("{c}m")));
    }
    if let Some(m) = r.memory_bytes {
        map.insert("memory".to_string(), Quantity(m.to_string()));
    }
    let mut limits = map.clone();
    if let Some(g) = r.gpus.filter(|g| *g > 0) {
        // Extended resources are set as limits (requests default to them).
        limits.insert("nvidia.com/gpu".to_string(), Quantity(g.to_string()));
    }
    (!limits.is_empty()).then(|| ResourceRequirements {
        requests: (!map.is_empty()).then_some(map),
        limits: Some(limits),
        ..Default::default()
    })
}

fn hardened() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            add: None,
        }),
        ..Default::default()
    }
}

fn mounts() -> Vec<VolumeMount> {
    vec![
        VolumeMount {
            name: "workspace".into(),
            mount_path: WORKSPACE.into(),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    ]
}

fn env(pairs: impl IntoIterator<Item = (String, String)>) -> Vec<EnvVar> {
    pairs
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            value_from: None,
        })
        .collect()
}

/// The Job that runs a training's plan on a cluster.
pub fn training_job(job: &TrainingJob<'_>, settings: &ClusterSettings) -> Result<Job, Error> {
    let spec = job.spec;
    if job.step_images.len() != job.plan.steps.len() {
        return Err(Error::InvalidArgument {
            field: "step images".into(),
            message: format!(
                "{} images for {} steps",
                job.step_images.len(),
                job.plan.steps.len()
            ),
        });
    }
    let spec_json = spec_json(spec)?;
    let labels = labels(&spec.run_id, &spec.toolchain.name, "training");
    let annotations = annotations(
        &spec.toolchain.digest,
        format!("{}:{}", spec.request.model.name, spec.request.model.version),
    );
    let legion_container =
        |name: &str, args: Vec<&str>| legion_container(name, args, &spec_json, settings);

    let ws = Workspace::new(WORKSPACE);
    let vars = ws.variables(&spec.run_id, &spec.request.model);
    let mut init = vec![legion_container(
        "fetch",
        vec!["step", "fetch", "--workspace", WORKSPACE],
    )];
    let mut used = std::collections::BTreeSet::from(["fetch".to_string(), "collect".to_string()]);
    for (i, (step, image)) in job.plan.steps.iter().zip(job.step_images).enumerate() {
        let mut name = dns_label(&format!("step-{}", step.name), 63);
        if !used.insert(name.clone()) {
            name = dns_label(&format!("step-{i}-{}", step.name), 63);
            used.insert(name.clone());
        }
        let mut step_env = vars.clone();
        step_env.push(("HOME".into(), "/tmp".into()));
        step_env.extend(
            step.env
                .iter()
                .map(|e| (e.name.clone(), substitute(&e.value, &vars))),
        );
        let working_dir = match &step.working_dir {
            Some(d) => ws.source().join(d),
            None => ws.source(),
        };
        init.push(Container {
            name,
            image: Some(image.clone()),
            command: Some(step.command.iter().map(|c| substitute(c, &vars)).collect()),
            args: Some(step.args.iter().map(|a| substitute(a, &vars)).collect()),
            env: Some(env(step_env)),
            working_dir: Some(working_dir.display().to_string()),
            resources: quantity(&step.resources),
            volume_mounts: Some(mounts()),
            security_context: Some(hardened()),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            ..Default::default()
        });
    }
    let collect = legion_container("collect", vec!["step", "collect", "--workspace", WORKSPACE]);

    Ok(job_of(
        &spec.run_id,
        labels,
        annotations,
        init,
        collect,
        job.deadline_seconds,
        settings,
    ))
}

/// The Job that packages a model on a cluster: one container in the
/// legion image running `legion step package` (the same packaging code as
/// `legion package`), which pushes the image and reports its digest.
pub fn packaging_job(
    spec: &PackageSpec,
    deadline_seconds: i64,
    settings: &ClusterSettings,
) -> Result<Job, Error> {
    let spec_json = spec_json(spec)?;
    let labels = labels(&spec.run_id, &spec.toolchain.name, "packaging");
    let annotations = annotations(&spec.toolchain.digest, spec.model.clone());
    let package = legion_container("package", vec!["step", "package"], &spec_json, settings);
    Ok(job_of(
        &spec.run_id,
        labels,
        annotations,
        Vec::new(),
        package,
        deadline_seconds,
        settings,
    ))
}

fn spec_json<T: serde::Serialize>(spec: &T) -> Result<String, Error> {
    serde_json::to_string(spec).map_err(|e| Error::InvalidArgument {
        field: "step spec".into(),
        message: e.to_string(),
    })
}

fn labels(run_id: &str, toolchain: &str, kind: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RUN_ID_LABEL.to_string(), label_value(run_id)),
        (TOOLCHAIN_LABEL.to_string(), label_value(toolchain)),
        (KIND_LABEL.to_string(), kind.to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "legion".to_string(),
        ),
    ])
}

fn annotations(toolchain_digest: &str, model: String) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "legion-platform.org/toolchain-digest".to_string(),
            toolchain_digest.to_string(),
        ),
        ("legion-platform.org/model".to_string(), model),
    ])
}

/// A container of the legion image running `legion ARGS` with the spec.
fn legion_container(
    name: &str,
    args: Vec<&str>,
    spec_json: &str,
    settings: &ClusterSettings,
) -> Container {
    Container {
        name: name.to_string(),
        image: Some(settings.legion_image.clone()),
        command: Some(vec!["legion".to_string()]),
        args: Some(args.into_iter().map(str::to_string).collect()),
        env: Some(legion_env(spec_json, settings)),
        volume_mounts: Some(mounts()),
        security_context: Some(hardened()),
        termination_message_policy: Some("File".into()),
        ..Default::default()
    }
}

/// `imagePullSecrets` naming `names`, or none.
pub fn pull_secrets(
    names: &[String],
) -> Option<Vec<k8s_openapi::api::core::v1::LocalObjectReference>> {
    (!names.is_empty()).then(|| {
        names
            .iter()
            .map(|n| k8s_openapi::api::core::v1::LocalObjectReference { name: n.clone() })
            .collect()
    })
}

/// The legion containers' environment: the spec, a writable home, and the
/// registry's transport and credentials as the host has them.
fn legion_env(spec_json: &str, settings: &ClusterSettings) -> Vec<EnvVar> {
    let mut vars = vec![
        ("LEGION_STEP_SPEC".to_string(), spec_json.to_string()),
        ("LEGION_HOME".to_string(), "/tmp/legion".to_string()),
        ("HOME".to_string(), "/tmp".to_string()),
    ];
    if let Some(insecure) = settings
        .insecure_registries
        .as_ref()
        .filter(|s| !s.is_empty())
    {
        vars.push(("LEGION_INSECURE_REGISTRIES".to_string(), insecure.clone()));
    }
    let mut out = env(vars);
    if let Some(secret) = &settings.registry_secret {
        for (var, key) in [
            ("LEGION_REGISTRY_USERNAME", "username"),
            ("LEGION_REGISTRY_PASSWORD", "password"),
        ] {
            out.push(EnvVar {
                name: var.to_string(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.clone(),
                        key: key.to_string(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    out
}

/// The Job around a pod of `init` containers then `main`.
fn job_of(
    run_id: &str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    init: Vec<Container>,
    main: Container,
    deadline_seconds: i64,
    settings: &ClusterSettings,
) -> Job {
    let empty = |name: &str| Volume {
        name: name.to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(run_id)),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(settings.backoff_limit),
            active_deadline_seconds: Some(deadline_seconds.max(1)),
            ttl_seconds_after_finished: Some(settings.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    init_containers: (!init.is_empty()).then_some(init),
                    containers: vec![main],
                    volumes: Some(vec![empty("workspace"), empty("tmp")]),
                    node_selector: (!settings.node_selector.is_empty())
                        .then(|| settings.node_selector.clone()),
                    tolerations: (!settings.tolerations.is_empty())
                        .then(|| settings.tolerations.clone()),
                    image_pull_secrets: pull_secrets(&settings.image_pull_secrets),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Checks a Job's pod against what Legion promises every cluster run,
/// before it is created: no privileged or escalating container, no added
/// capabilities, a non-root user, no host paths, host network, PID or IPC.
/// Legion's own manifests always pass; this guards every later change to
/// them (and anything that edits a Job on its way out) from loosening it.
pub fn check_pod(job: &Job) -> Result<(), Error> {
    let mut v = Vec::new();
    let Some(pod) = job.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        v.push("the Job has no pod template".to_string());
        return pod_verdict(job, v);
    };
    if pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true) {
        v.push("the pod shares the host's network, PIDs or IPC".into());
    }
    for vol in pod.volumes.iter().flatten() {
        if vol.host_path.is_some() {
            v.push(format!("volume '{}' is a host path", vol.name));
        }
    }
    if pod
        .security_context
        .as_ref()
        .and_then(|c| c.run_as_non_root)
        != Some(true)
    {
        v.push("the pod does not require a non-root user".into());
    }
    let containers = pod.init_containers.iter().flatten().chain(&pod.containers);
    for c in containers {
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.privileged == Some(true) {
            v.push(format!("container '{}' is privileged", c.name));
        }
        if sc.allow_privilege_escalation != Some(false) {
            v.push(format!("container '{}' may escalate privileges", c.name));
        }
        if sc
            .capabilities
            .as_ref()
            .and_then(|k| k.add.as_ref())
            .is_some_and(|a| !a.is_empty())
        {
            v.push(format!("container '{}' adds capabilities", c.name));
        }
        if sc.run_as_user == Some(0) {
            v.push(format!("container '{}' runs as root", c.name));
        }
    }
    pod_verdict(job, v)
}

fn pod_verdict(job: &Job, violations: Vec<String>) -> Result<(), Error> {
    if violations.is_empty() {
        return Ok(());
    }
    let toolchain = job
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(TOOLCHAIN_LABEL))
        .cloned()
        .unwrap_or_default();
    Err(Error::Policy {
        toolchain,
        violations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::model::ToolchainRef;
    use crate::plan::{ModelId, Step, TrainingRequest};

    fn spec() -> StepSpec {
        StepSpec {
            run_id: "Wine_Quality-0a1b2c3d".into(),
            toolchain: ToolchainRef {
                name: "mlflow".into(),
                digest: "sha256:ab".into(),
            },
            request: TrainingRequest {
                model: ModelId {
                    name: "wine".into(),
                    version: "1".into(),
                },
                ..Default::default()
            },
            push: Some("registry.local/models/wine".into()),
        }
    }

    #[test]
    fn a_job_keeps_the_whole_id_of_a_run_of_the_longest_model_name() {
        use crate::names::{packaging_id, training_id};
        // A model name is a label of up to 63 characters.
        let model = "m".repeat(63);
        for id in [training_id(&model), packaging_id(&model)] {
            assert_eq!(job_name(&id), format!("legion-{id}"));
            assert_eq!(labels(&id, "t", "training")[RUN_ID_LABEL], id);
        }
    }

    #[test]
    fn names_are_dns_labels_and_steps_keep_their_order() {
        assert_eq!(dns_label("Step_One!!", 63), "step-one");
        assert_eq!(dns_label(&"a".repeat(100), 63).len(), 63);
        assert_eq!(label_value("-x y-"), "x_y");
        let plan = Plan {
            steps: vec![
                Step {
                    name: "Prep".into(),
                    command: vec!["python".into(), "${LEGION_SOURCE_DIR}/prep.py".into()],
                    ..Default::default()
                },
                Step {
                    name: "prep".into(),
                    command: vec!["python".into()],
                    resources: Resources {
                        gpus: Some(1),
                        cpu_millis: Some(500),
                        memory_bytes: None,
                    },
                    ..Default::default()
                },
            ],
            python: None,
        };
        let s = spec();
        let images = vec!["img:a".to_string(), "img:b".to_string()];
        let job = training_job(
            &TrainingJob {
                spec: &s,
                plan: &plan,
                step_images: &images,
                deadline_seconds: 3600,
            },
            &ClusterSettings {
                namespace: "ml".into(),
                legion_image: "legion:1".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("legion-wine-quality-0a1b2c3d")
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        let names: Vec<_> = pod
            .init_containers
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.image.unwrap(), c.command.unwrap()))
            .collect();
        assert_eq!(names[0].0, "fetch");
        assert_eq!(names[1].0, "step-prep");
        assert_eq!(
            names[1].2[1], "/workspace/source/prep.py",
            "variables are substituted"
        );
        assert_eq!(names[2].0, "step-1-prep", "a clashing name is made unique");
        assert_eq!(names[2].1, "img:b");
        assert_eq!(pod.containers[0].name, "collect");
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    }

    #[test]
    fn a_loosened_pod_is_refused_before_it_exists() {
        let plan = Plan {
            steps: vec![Step {
                name: "train".into(),
                command: vec!["python".into()],
                ..Default::default()
            }],
            python: None,
        };
        let s = spec();
        let images = vec!["img:a".to_string()];
        let job = training_job(
            &TrainingJob {
                spec: &s,
                plan: &plan,
                step_images: &images,
                deadline_seconds: 60,
            },
            &ClusterSettings::default(),
        )
        .unwrap();
        check_pod(&job).expect("Legion's own Job passes");
        let loosen = |f: &dyn Fn(&mut PodSpec)| {
            let mut j = job.clone();
            f(j.spec.as_mut().unwrap().template.spec.as_mut().unwrap());
            match check_pod(&j) {
                Err(Error::Policy { violations, .. }) => violations.join("; "),
                other => panic!("not refused: {other:?}"),
            }
        };
        assert!(loosen(&|p| p.host_network = Some(true)).contains("host's network"));
        assert!(loosen(&|p| p.volumes.as_mut().unwrap().push(Volume {
            name: "root".into(),
            host_path: Some(Default::default()),
            ..Default::default()
        }))
        .contains("volume 'root' is a host path"));
        assert!(loosen(&|p| p.init_containers.as_mut().unwrap()[1]
            .security_context
            .as_mut()
            .unwrap()
            .privileged = Some(true))
        .contains("container 'step-train' is privileged"));
        assert!(loosen(&|p| p.containers[0]
            .security_context
            .as_mut()
            .unwrap()
            .capabilities = Some(Capabilities {
            add: Some(vec!["SYS_ADMIN".into()]),
            drop: None
        }))
        .contains("container 'collect' adds capabilities"));
        assert!(loosen(&|p| p.security_context = None).contains("non-root"));
    }
}
