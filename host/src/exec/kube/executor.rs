//! The Kubernetes executor: turns a planned, policy-checked training into
//! the one Job that runs it (its source reachable from the pod, its Python
//! environment baked into step images), creates it, and follows it to its
//! end. On one machine the steps run as processes; here the pod runs the
//! steps *and* the host's own collect/store/push phases (`legion step`).
//!
//! Everything a pod needs that only exists on this machine goes through
//! the configured registry: a local source folder (or a git repository
//! only this machine can reach) as a source artifact, step images, and
//! the model the Job pushes back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};

use super::job::{packaging_job, training_job, ClusterSettings, TrainingJob};
use super::runner::JobRunner;
use super::step_image::step_image;
use crate::exec::{RunLog, Workspace};
use crate::home::Home;
use crate::oci::layout::Layout;
use crate::oci::model::ToolchainRef;
use crate::oci::registry::parse_reference;
use crate::oci::source::{pack_source, pinned};
use crate::plan::{DataBinding, Plan, Source, TrainingRequest};
use crate::serve::FoundModel;
use crate::train::phases::{PackageSpec, StepSpec};
use crate::Error;

/// The `legion` image that runs a pod's own phases, unless configured.
pub fn default_legion_image() -> String {
    format!(
        "ghcr.io/legion-platform/legion:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// How runs reach a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// A kubeconfig file; `None` is the usual places (`KUBECONFIG`,
    /// `~/.kube/config`, the in-cluster service account).
    pub kubeconfig: Option<PathBuf>,
    /// The namespace; `None` is the kubeconfig context's (else `default`).
    pub namespace: Option<String>,
    /// `REGISTRY/PREFIX` the cluster pulls from and the Job pushes to:
    /// sources go to `PREFIX/sources`, step images to `PREFIX/steps`,
    /// models to `PREFIX/models/NAME` (unless `--push` names a place).
    pub registry: String,
    /// Image of the fetch and collect containers.
    pub legion_image: String,
    /// Seconds a finished Job is kept before Kubernetes deletes it.
    pub ttl_seconds_after_finished: i32,
    /// Retries of a failed pod.
    pub backoff_limit: i32,
    /// How long a pod may stay unschedulable before the run fails.
    pub unschedulable_timeout: Duration,
    /// Print the objects instead of creating them.
    pub dry_run: bool,
    /// A Secret (keys `username`, `password`) with the registry's
    /// credentials, for the pods; the host uses `LEGION_REGISTRY_USERNAME`
    /// and `LEGION_REGISTRY_PASSWORD`.
    pub registry_secret: Option<String>,
    /// Secrets the kubelet pulls images with, for every pod.
    pub image_pull_secrets: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            kubeconfig: None,
            namespace: None,
            registry: String::new(),
            legion_image: default_legion_image(),
            ttl_seconds_after_finished: 24 * 3600,
            backoff_limit: 0,
            unschedulable_timeout: super::runner::DEFAULT_UNSCHEDULABLE,
            dry_run: false,
            registry_secret: None,
            image_pull_secrets: Vec::new(),
        }
    }
}

/// Runs trainings as Jobs in one namespace of one cluster.
pub struct ClusterExecutor {
    opts: ClusterOptions,
    client: Option<Client>,
    namespace: String,
}

impl ClusterExecutor {
    /// Connects to the cluster (checking the namespace exists), or, for a
    /// dry run, to nothing at all.
    pub async fn connect(opts: ClusterOptions) -> Result<Self, Error> {
        if opts.dry_run {
            let namespace = opts.namespace.clone().unwrap_or_else(|| "default".into());
            return Ok(ClusterExecutor {
                opts,
                client: None,
                namespace,
            });
        }
        let client = super::client(opts.kubeconfig.as_deref()).await?;
        let namespace = opts
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        match namespaces.get(&namespace).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(Error::Kubernetes {
                    namespace: namespace.clone(),
                    message: format!("the namespace '{namespace}' does not exist"),
                })
            }
            // Allowed to create Jobs but not to read namespaces: the
            // create will say if it is missing.
            Err(kube::Error::Api(s)) if s.code == 403 => {}
            Err(e) => {
                return Err(Error::Kubernetes {
                    namespace: namespace.clone(),
                    message: format!("cannot reach the API server: {e}"),
                })
            }
        }
        Ok(ClusterExecutor {
            opts,
            client: Some(client),
            namespace,
        })
    }

    /// The options it was made with.
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// The namespace Jobs go in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Checks the registry is set and well-formed (trainings and
    /// packagings need it; following a Job does not).
    pub fn check_registry(&self) -> Result<(), Error> {
        let opts = &self.opts;
        if opts.registry.trim().is_empty() {
            return Err(Error::InvalidArgument {
                field: "--registry".into(),
                message: "a cluster run needs a registry the cluster can pull from and push to (REGISTRY/PREFIX)".into(),
            });
        }
        parse_reference(&format!("{}/sources", opts.registry), "x").map_err(|e| {
            Error::InvalidArgument {
                field: "--registry".into(),
                message: format!("'{}' is not REGISTRY/PREFIX: {e}", opts.registry),
            }
        })?;
        Ok(())
    }

    fn repository(&self, what: &str) -> String {
        format!("{}/{what}", self.opts.registry.trim_end_matches('/'))
    }

    /// Where a model goes when `--push` names no place.
    pub fn model_repository(&self, model_name: &str) -> String {
        self.repository(&format!(
            "models/{}",
            super::job::dns_label(model_name, 100)
        ))
    }

    /// Makes the Job for a planned training: the source reachable from the
    /// pod, a step image per step (built and pushed unless this is a dry
    /// run), the model's push target.
    #[allow(clippy::too_many_arguments)]
    pub async fn prepare_training(
        &self,
        home: &Home,
        run_id: &str,
        toolchain: ToolchainRef,
        request: &TrainingRequest,
        plan: &Plan,
        ws: &Workspace,
        push: Option<&oci_client::Reference>,
        timeout: Duration,
        log: &RunLog,
    ) -> Result<Job, Error> {
        self.check_registry()?;
        check_data(&request.data)?;
        let mut request = request.clone();
        request.source = self
            .reachable_source(&request.source, run_id, ws, log)
            .await?;

        // One step image per distinct step base (steps share the plan's
        // environment), each found or built once.
        let mut made: BTreeMap<&str, String> = BTreeMap::new();
        let mut images = Vec::with_capacity(plan.steps.len());
        for step in &plan.steps {
            let image = match &plan.python {
                // Nothing to install: the step's own image as it is.
                Some(env) if !env.requirements.is_empty() => {
                    if let Some(image) = made.get(step.image.as_str()) {
                        image.clone()
                    } else {
                        let repo = self.repository("steps");
                        let build = !self.opts.dry_run;
                        let image = step_image(home, &step.image, env, &repo, build, log)
                            .await?
                            .reference;
                        made.insert(&step.image, image.clone());
                        image
                    }
                }
                _ => step.image.clone(),
            };
            images.push(image);
        }
        let model_target = match push {
            Some(r) => r.whole(),
            None => format!(
                "{}:{}",
                self.model_repository(&request.model.name),
                tag_of(&request.model.version)
            ),
        };
        let spec = StepSpec {
            run_id: run_id.to_string(),
            toolchain,
            request,
            push: Some(model_target),
        };
        let job = training_job(
            &TrainingJob {
                spec: &spec,
                plan,
                step_images: &images,
                deadline_seconds: timeout.as_secs().min(i64::MAX as u64) as i64,
            },
            &self.settings(),
        )?;
        super::job::check_pod(&job)?;
        Ok(job)
    }

    /// Makes the Job for a planned, policy-checked packaging: the model
    /// pushed where the pod pulls it (unless this is a dry run: its pinned
    /// reference is named all the same), the image's push target.
    #[allow(clippy::too_many_arguments)]
    pub async fn prepare_packaging(
        &self,
        run_id: &str,
        toolchain: ToolchainRef,
        found: &FoundModel,
        base: Option<String>,
        push: Option<&oci_client::Reference>,
        arguments: crate::plan::Pairs,
        timeout: Duration,
        log: &RunLog,
    ) -> Result<Job, Error> {
        self.check_registry()?;
        let model = &found.config;
        let repo = self.model_repository(&model.name);
        let target = parse_reference(&format!("{repo}:{}", tag_of(&model.version)), "x")?;
        if !self.opts.dry_run {
            crate::oci::registry::Registry::for_reference(&target)
                .push(&found.layout, &found.desc.digest, &target)
                .await?;
            log.note(&format!(
                "pushed the model to {}",
                pinned(&target, &found.desc.digest)
            ));
        }
        let image_target = match push {
            Some(r) => r.whole(),
            None => format!(
                "{}:{}",
                self.repository(&format!(
                    "images/{}",
                    super::job::dns_label(&model.name, 100)
                )),
                tag_of(&model.version)
            ),
        };
        let spec = PackageSpec {
            run_id: run_id.to_string(),
            toolchain,
            model: pinned(&target, &found.desc.digest),
            base,
            push: image_target,
            arguments,
        };
        let job = packaging_job(
            &spec,
            timeout.as_secs().min(i64::MAX as u64) as i64,
            &self.settings(),
        )?;
        super::job::check_pod(&job)?;
        Ok(job)
    }

    fn settings(&self) -> ClusterSettings {
        ClusterSettings {
            namespace: self.namespace.clone(),
            legion_image: self.opts.legion_image.clone(),
            backoff_limit: self.opts.backoff_limit,
            ttl_seconds_after_finished: self.opts.ttl_seconds_after_finished,
            registry_secret: self.opts.registry_secret.clone(),
            insecure_registries: std::env::var("LEGION_INSECURE_REGISTRIES").ok(),
            image_pull_secrets: self.opts.image_pull_secrets.clone(),
            ..Default::default()
        }
    }

    /// The source as a pod can fetch it: a remote git repository at its
    /// recorded commit stays as it is; a folder (or a repository only this
    /// machine reaches) goes to the registry as a source artifact, pinned
    /// by digest (packed but not pushed on a dry run).
    async fn reachable_source(
        &self,
        source: &Source,
        run_id: &str,
        ws: &Workspace,
        log: &RunLog,
    ) -> Result<Source, Error> {
        let remote = ["https://", "http://", "ssh://", "git@", "git://"]
            .iter()
            .any(|p| source.uri.starts_with(p));
        if remote || source.uri.starts_with("oci://") {
            return Ok(source.clone());
        }
        let target = parse_reference(&format!("{}:{run_id}", self.repository("sources")), "x")?;
        let layout_dir = ws.root.join("source-artifact");
        let layout = Layout::open(&layout_dir)?;
        let digest = pack_source(&ws.source(), &layout, &target.whole()).await?;
        if !self.opts.dry_run {
            crate::oci::registry::Registry::for_reference(&target)
                .push(&layout, &digest, &target)
                .await?;
            log.note(&format!(
                "pushed the source {} as {}",
                source.uri,
                pinned(&target, &digest)
            ));
        }
        let _ = std::fs::remove_dir_all(&layout_dir);
        Ok(Source {
            uri: format!("oci://{}", pinned(&target, &digest)),
            reference: source.reference.clone(),
            commit: source.commit.clone(),
        })
    }

    /// The runner that creates and follows Jobs (none on a dry run).
    pub fn runner(&self) -> Result<JobRunner, Error> {
        let client = self.client.clone().ok_or_else(|| Error::Kubernetes {
            namespace: self.namespace.clone(),
            message: "a dry run creates nothing".into(),
        })?;
        Ok(JobRunner::new(client, self.namespace.clone())
            .unschedulable_after(self.opts.unschedulable_timeout))
    }
}

/// A model version as an image tag (a tag has no `+`).
pub fn tag_of(version: &str) -> String {
    version.replace('+', "_")
}

/// Refuses data bindings a pod cannot reach: files on this machine.
pub fn check_data(data: &[DataBinding]) -> Result<(), Error> {
    for d in data {
        if d.uri.starts_with("file://") || !d.uri.contains("://") {
            return Err(Error::InvalidArgument {
                field: "--data".into(),
                message: format!(
                    "'{}' is on this machine, which a pod cannot read: use s3://, gs://, az:// or http(s):// data on a cluster",
                    d.uri
                ),
            });
        }
    }
    Ok(())
}

/// Objects as YAML documents (`---` between them), as `kubectl apply -f`
/// takes them.
pub fn yaml_documents<T: serde::Serialize>(objects: &[T]) -> Result<String, Error> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(
            &serde_norway::to_string(o).map_err(|e| Error::InvalidArgument {
                field: "--dry-run".into(),
                message: format!("cannot write YAML: {e}"),
            })?,
        );
    }
    Ok(out)
}
