//! The options that send a run to a Kubernetes cluster, shared by
//! `legion train`, `legion package` and `legion runs attach`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::exec::kube::executor::{default_legion_image, ClusterExecutor, ClusterOptions};
use crate::Error;

/// Where a run's steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    /// Processes on this machine.
    Local,
    /// A Kubernetes Job.
    Kube,
}

// Cluster options (no doc comment: on a flattened struct it would become the command's about).
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Where the run's steps run: processes here, or a Kubernetes Job.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Local)]
    pub executor: ExecutorKind,
    /// Kubernetes namespace (default: the kubeconfig context's, else `default`).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Registry the cluster pulls from and the Job pushes to: REGISTRY/PREFIX
    /// (sources, step images and models go under it).
    #[arg(long, env = "LEGION_REGISTRY", value_name = "REGISTRY/PREFIX")]
    pub registry: Option<String>,
    /// kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// A Secret (keys `username`, `password`) with the registry's
    /// credentials for the pods.
    #[arg(long, env = "LEGION_REGISTRY_SECRET", value_name = "NAME")]
    pub registry_secret: Option<String>,
    /// A Secret the kubelet pulls images with (repeatable): step images
    /// and the legion image in a private registry.
    #[arg(long = "image-pull-secret", value_name = "NAME")]
    pub image_pull_secrets: Vec<String>,
    /// The legion image that runs the pod's own phases (fetch, collect, package).
    #[arg(long, env = "LEGION_IMAGE", default_value_t = default_legion_image())]
    pub legion_image: String,
    /// How long a pod may stay unschedulable before the run fails, e.g. 10m.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub unschedulable_timeout: Duration,
    /// Print the Kubernetes objects the run would create, as YAML, and
    /// create nothing (needs --executor kube).
    #[arg(long)]
    pub dry_run: bool,
}

impl ClusterArgs {
    /// The cluster to run on, or `None` for the local executor.
    pub async fn connect(&self) -> Result<Option<ClusterExecutor>, Error> {
        if self.executor == ExecutorKind::Local {
            if self.dry_run {
                return Err(Error::InvalidArgument {
                    field: "--dry-run".into(),
                    message: "a dry run shows the objects of a cluster run: add --executor kube"
                        .into(),
                });
            }
            return Ok(None);
        }
        let opts = ClusterOptions {
            kubeconfig: self.kubeconfig.clone(),
            namespace: self.namespace.clone(),
            registry: self.registry.clone().unwrap_or_default(),
            legion_image: self.legion_image.clone(),
            unschedulable_timeout: self.unschedulable_timeout,
            dry_run: self.dry_run,
            registry_secret: self.registry_secret.clone(),
            image_pull_secrets: self.image_pull_secrets.clone(),
            ..ClusterOptions::default()
        };
        ClusterExecutor::connect(opts).await.map(Some)
    }
}
