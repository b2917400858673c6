//! `legion server`: the HTTP API (EDI), and its tokens.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::api::auth::{new_token, Role, Tokens};
use crate::api::jwt::{Jwt, JwtSettings};
use crate::api::runs::Runner;
use crate::api::{Api, ServerOptions};
use crate::cli::cluster::ExecutorKind;
use crate::home::Home;
use crate::plugin::Toolchains;
use crate::Error;

/// `legion server …`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    /// A token to make instead of serving.
    #[command(subcommand)]
    pub command: Option<ServerCommand>,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080", env = "LEGION_LISTEN")]
    pub listen: SocketAddr,
    /// The tokens file (names, roles, SHA-256 hashes); without it there is
    /// no authentication and only a loopback address is served.
    #[arg(long, env = "LEGION_TOKENS", value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// A folder on this machine whose contents API callers may name as a
    /// training source, data or base image (repeatable); without one,
    /// only git URLs, registries and object stores are read.
    #[arg(long = "allow-path", value_name = "DIR")]
    pub allow_paths: Vec<PathBuf>,
    /// How long this replica's hold on its runs lasts without renewal: if
    /// it dies, another replica (or this one, restarted) starts its runs
    /// again after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: std::time::Duration,
    /// Runs this replica executes at once (default: one per CPU); planned
    /// runs beyond it wait, `queued`, in order.
    #[arg(long, value_name = "N")]
    pub max_runs: Option<usize>,
    /// Where trainings, packagings and deployments run: on this machine
    /// (the API runs them), or on a cluster as the operator's custom
    /// resources (the API creates them and reads the store the operator
    /// writes: give both the same --database postgres://…).
    #[arg(long, value_enum, default_value_t = ExecutorKind::Local)]
    pub executor: ExecutorKind,
    /// The namespace of the custom resources (default: the kubeconfig
    /// context's, else `default`).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The address deployments' model servers listen on (each on a port
    /// of its own); their URLs name it, or this machine's name for 0.0.0.0.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub deploy_host: std::net::IpAddr,
    /// The identity provider's JSON Web Key Set, a file or an http(s) URL
    /// (Keycloak: …/realms/REALM/protocol/openid-connect/certs): bearer
    /// JWTs signed by its keys (RS256, ES256) are accepted.
    #[arg(long, value_name = "FILE|URL", requires_all = ["jwt_issuer", "jwt_audience"])]
    pub jwks: Option<String>,
    /// How often a JWKS URL is fetched again.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub jwks_refresh: std::time::Duration,
    /// A token signed by a key the set lacks makes the URL be fetched at
    /// once (the provider rotated its keys), but not more often than this.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub jwks_min_refresh: std::time::Duration,
    /// The issuer (`iss`) JWTs must name.
    #[arg(long, value_name = "URL", requires = "jwks")]
    pub jwt_issuer: Option<String>,
    /// The audience (`aud`) JWTs must include.
    #[arg(long, value_name = "AUD", requires = "jwks")]
    pub jwt_audience: Option<String>,
    /// Where a JWT holds the caller's roles: a dotted claim path
    /// (Keycloak: `realm_access.roles`).
    #[arg(long, default_value = "roles", value_name = "PATH")]
    pub jwt_roles_claim: String,
}

/// `legion server token …`
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Make a token: prints it once, and the entry for the tokens file
    /// (which keeps only its hash).
    Token {
        /// Who it is for.
        name: String,
        /// What it may do.
        #[arg(long, value_enum)]
        role: RoleArg,
    },
}

/// A role, on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    /// Reads only.
    Viewer,
    /// Runs trainings, packagings, deployments.
    DataScientist,
    /// Everything.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Viewer => Role::Viewer,
            RoleArg::DataScientist => Role::DataScientist,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// Runs `legion server`.
pub async fn run(args: ServerArgs, home: &Home, toolchains: Toolchains) -> Result<(), Error> {
    if let Some(ServerCommand::Token { name, role }) = args.command {
        let (token, entry) = new_token(&name, role.into());
        super::output::json(&serde_json::json!({"token": token, "entry": entry}));
        return Ok(());
    }
    let tokens = match &args.tokens {
        Some(path) => Tokens::load(path)?,
        None => Tokens::none(),
    };
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        legion_serve::shutdown_signal().await;
        s.cancel();
    });
    if args.lease < std::time::Duration::from_secs(1) {
        return Err(Error::InvalidArgument {
            field: "--lease".into(),
            message: "must be at least 1s".into(),
        });
    }
    let max_runs = args.max_runs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let runner = Runner::new(args.lease, &args.allow_paths, max_runs)?;
    let cluster = match args.executor {
        ExecutorKind::Local => {
            if args.namespace.is_some() || args.kubeconfig.is_some() {
                return Err(Error::InvalidArgument {
                    field: "--namespace".into(),
                    message: "--namespace and --kubeconfig are for --executor kube".into(),
                });
            }
            None
        }
        ExecutorKind::Kube => {
            if !toolchains.store().shared() {
                return Err(Error::InvalidArgument {
                    field: "--database".into(),
                    message: "--executor kube reads the runs the operator records: give the operator's database (--database postgres://…)".into(),
                });
            }
            let c = crate::api::cluster::Cluster::connect(
                args.kubeconfig.as_deref(),
                args.namespace.clone(),
            )
            .await?;
            tracing::info!(namespace = %c.namespace(), "on a cluster: runs and deployments are the operator's custom resources");
            Some(c)
        }
    };
    let mut api = Api::new(toolchains, home.clone(), tokens, runner);
    api.cluster = cluster;
    api.deployer = crate::api::deployments::Deployer::new(args.deploy_host);
    if let Some(source) = &args.jwks {
        let settings = JwtSettings {
            issuer: args.jwt_issuer.clone().unwrap_or_default(),
            audience: args.jwt_audience.clone().unwrap_or_default(),
            roles_claim: args.jwt_roles_claim.clone(),
        };
        api.jwt = Some(
            if source.starts_with("http://") || source.starts_with("https://") {
                Jwt::fetch(source, settings, args.jwks_min_refresh).await?
            } else {
                Jwt::load(std::path::Path::new(source), settings)?
            },
        );
    }
    crate::api::serve(
        api,
        ServerOptions {
            listen: args.listen,
            jwks_refresh: args.jwks_refresh,
        },
        shutdown,
    )
    .await
}
