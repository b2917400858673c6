//! `legion operator`: the custom resources and the controllers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::exec::kube::executor::{default_legion_image, ClusterOptions};
use crate::home::Home;
use crate::operator::leader::{default_identity, LeaseOptions};
use crate::operator::OperatorOptions;
use crate::Error;

/// `legion operator …`
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Print the CustomResourceDefinitions as YAML (what the Helm chart's
    /// `crds/` holds).
    Crds,
    /// Run the controllers for Toolchain, ModelTraining, ModelPackaging
    /// and ModelDeployment objects in one namespace, until SIGTERM.
    Run(Box<RunArgs>),
}

/// `legion operator run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The namespace watched, where Jobs and deployments go (default: the
    /// kubeconfig context's, else `default`).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Registry the cluster pulls from and Jobs push to: REGISTRY/PREFIX.
    #[arg(long, env = "LEGION_REGISTRY", value_name = "REGISTRY/PREFIX")]
    pub registry: String,
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
    /// The legion image that runs the pods' own phases.
    #[arg(long, env = "LEGION_IMAGE", default_value_t = default_legion_image())]
    pub legion_image: String,
    /// The admin's policy (JSON, as `<data>/policy.json`).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Seconds a finished Job is kept.
    #[arg(long, default_value_t = 86_400)]
    pub ttl_seconds_after_finished: i32,
    /// How long a pod may stay unschedulable before its run fails.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub unschedulable_timeout: Duration,
    /// Take the `legion-operator` Lease before reconciling, so that one
    /// replica of several works.
    #[arg(long)]
    pub leader_election: bool,
    /// This replica's name in the Lease (default: POD_NAME, else host-pid).
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
    /// A lease not renewed for this long is taken over.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// How often the leader renews (and a standby retries).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub lease_renew: Duration,
    /// Serve /healthz and /readyz here.
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
}

/// Runs an operator command.
pub async fn run(cmd: OperatorCommand, home: &Home, database: Option<&str>) -> Result<(), Error> {
    match cmd {
        OperatorCommand::Crds => {
            print!(
                "{}",
                crate::exec::kube::executor::yaml_documents(&crate::operator::crd::all())?
            );
            Ok(())
        }
        OperatorCommand::Run(args) => {
            let args = *args;
            if args.lease_renew >= args.lease_duration {
                return Err(Error::InvalidArgument {
                    field: "--lease-renew".into(),
                    message: "must be shorter than --lease-duration".into(),
                });
            }
            let opts = OperatorOptions {
                cluster: ClusterOptions {
                    kubeconfig: args.kubeconfig,
                    namespace: args.namespace,
                    registry: args.registry,
                    legion_image: args.legion_image,
                    ttl_seconds_after_finished: args.ttl_seconds_after_finished,
                    unschedulable_timeout: args.unschedulable_timeout,
                    registry_secret: args.registry_secret,
                    image_pull_secrets: args.image_pull_secrets,
                    ..ClusterOptions::default()
                },
                policy: args.policy,
                leader_election: args.leader_election.then(|| LeaseOptions {
                    duration: args.lease_duration,
                    renew: args.lease_renew,
                    ..LeaseOptions::new(args.identity.unwrap_or_else(default_identity))
                }),
                health_listen: args.health_listen,
            };
            let toolchains = super::open_toolchains(home, database).await?;
            let shutdown = CancellationToken::new();
            let s = shutdown.clone();
            tokio::spawn(async move {
                legion_serve::shutdown_signal().await;
                tracing::info!("shutting down: runs go on in their Jobs");
                s.cancel();
            });
            crate::operator::run(home.clone(), toolchains, opts, shutdown).await
        }
    }
}
