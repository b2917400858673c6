//! The `legion` command line: parsing, and the glue from a command to the
//! library. Commands print tables for people and, with `--output json`, JSON
//! for scripts.

mod batch;
mod cluster;
mod operator;
mod output;
mod package;
mod remote;
mod runs;
mod serve;
mod server;
mod step;
mod toolchain;
mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::home::Home;
use crate::plugin::{Limits, Runtime, Toolchains};
use crate::store::Store;
use crate::Error;

/// Legion: train, package and serve models through toolchain plugins.
#[derive(Debug, Parser)]
#[command(name = "legion", version, about, propagate_version = true)]
pub struct Cli {
    /// Data directory (state database, toolchains, compiled cache).
    #[arg(long, global = true, env = "LEGION_HOME", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// State database: `postgres://USER:PASSWORD@HOST/DB` to share it
    /// between API replicas; default SQLite in the data directory.
    #[arg(long, global = true, env = "LEGION_DATABASE", value_name = "URL")]
    pub database: Option<String>,

    /// A Legion API server to run the command on, instead of this
    /// machine's data directory (`legion server`).
    #[arg(long, global = true, env = "LEGION_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// Bearer token for --server (`legion server token`, or a JWT).
    #[arg(
        long,
        global = true,
        env = "LEGION_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Readable tables.
    Table,
    /// JSON, for scripts.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register, inspect and try toolchain plugins.
    #[command(subcommand)]
    Toolchain(toolchain::ToolchainCommand),
    /// Train a model with a toolchain.
    // `--version` is the model's version here, not legion's.
    #[command(disable_version_flag = true)]
    Train(Box<train::TrainArgs>),
    /// Package a stored model into a runnable OCI image.
    Package(Box<package::PackageArgs>),
    /// Score data with a stored model, as a job that ends (batch inference).
    Batch(Box<batch::BatchArgs>),
    /// List packaged images.
    #[command(subcommand)]
    Images(package::ImagesCommand),
    /// Inspect training and packaging runs and their logs.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Inspect stored models.
    #[command(subcommand)]
    Models(runs::ModelsCommand),
    /// Serve a stored model over REST (Open Inference Protocol v2, MLflow, Legion).
    Serve(serve::ServeArgs),
    /// The HTTP API (EDI) for pipelines, notebooks and remote use.
    Server(server::ServerArgs),
    /// The Kubernetes operator and its custom resources.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// A phase of a training run inside a Kubernetes pod (fetch, collect).
    #[command(subcommand, hide = true)]
    Step(step::StepCommand),
}

impl Cli {
    /// Whether the command serves until stopped (`server`, `serve`,
    /// `operator run`): its log lines are then written by a thread of
    /// their own ([`legion_serve::init_logging`]).
    pub fn serves(&self) -> bool {
        match &self.command {
            Command::Serve(_) | Command::Operator(operator::OperatorCommand::Run(_)) => true,
            Command::Server(s) => s.command.is_none(),
            _ => false,
        }
    }

    /// Runs the command; returns the process exit code.
    pub async fn run(self) -> Result<i32, Error> {
        // Writes files only: the same here and in remote mode, and no data
        // directory or database is opened for it.
        if let Command::Toolchain(toolchain::ToolchainCommand::New { name, kind, dir }) =
            &self.command
        {
            toolchain::new(name, *kind, dir.clone(), self.output)?;
            return Ok(0);
        }
        if let Some(server) = &self.server {
            let remote = remote::Remote::new(server, self.token.clone())?;
            return remote::run(self.command, &remote, self.output).await;
        }
        let home = Home::new(self.data_dir.clone().unwrap_or_else(Home::default_root));
        match self.command {
            Command::Models(cmd) => return runs::models(cmd, &home, self.output).await.map(|_| 0),
            Command::Serve(args) => return serve::run(args, &home).await.map(|_| 0),
            Command::Operator(cmd) => {
                return operator::run(cmd, &home, self.database.as_deref())
                    .await
                    .map(|_| 0)
            }
            _ => {}
        }
        let toolchains = open_toolchains(&home, self.database.as_deref()).await?;
        let result = match self.command {
            Command::Toolchain(cmd) => toolchain::run(cmd, &toolchains, self.output)
                .await
                .map(|_| 0),
            Command::Train(args) => train::run(*args, &home, &toolchains, self.output).await,
            Command::Package(args) => package::run(*args, &home, &toolchains, self.output).await,
            Command::Batch(args) => batch::run(*args, &home, &toolchains, self.output).await,
            Command::Images(cmd) => package::images(cmd, &home, &toolchains, self.output)
                .await
                .map(|_| 0),
            Command::Step(cmd) => step::run(cmd, &home, &toolchains).await.map(|_| 0),
            Command::Server(args) => return server::run(args, &home, toolchains).await.map(|_| 0),
            Command::Runs(cmd) => runs::runs(cmd, toolchains.store(), self.output)
                .await
                .map(|_| 0),
            Command::Models(_) | Command::Serve(_) | Command::Operator(_) => Ok(0),
        };
        toolchains.store().close().await;
        result
    }
}

/// Opens the registry of `home` with the default limits and built-ins.
pub async fn open_toolchains(home: &Home, database: Option<&str>) -> Result<Toolchains, Error> {
    let store = match database {
        Some(url) => Store::connect(url).await?,
        None => Store::open(&home.database()).await?,
    };
    let runtime = Runtime::new(Limits::default())?;
    Ok(Toolchains::new(
        runtime,
        store,
        home.clone(),
        Toolchains::default_builtin_dir(),
    ))
}
