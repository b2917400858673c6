//! `legion-serve`: the model server on its own, the entrypoint of packaged
//! images. It serves a model folder (`legion-model.json` beside `model/`)
//! with the Python it is given; nothing else is needed on the machine.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Serve a Legion model folder over REST (Open Inference Protocol v2,
/// MLflow scoring, Legion's model API).
#[derive(Debug, Parser)]
#[command(name = "legion-serve", version, about)]
struct Cli {
    /// The model folder: `legion-model.json` beside `model/`.
    #[arg(env = "LEGION_MODEL_ROOT", default_value = "/opt/legion")]
    root: PathBuf,
    /// The Python interpreter the workers run in (it must have the
    /// model's requirements, numpy and pandas).
    #[arg(long, env = "LEGION_PYTHON", default_value = "python3")]
    python: PathBuf,
    #[command(flatten)]
    serve: legion_serve::ServeArgs,
}

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_env("LEGION_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .without_time()
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Listen first: /v2/health/live answers while the model loads.
        let listener = legion_serve::bind(cli.serve.addr()).await?;
        let model = legion_serve::ServedModel::open(&cli.root, cli.python)?;
        legion_serve::serve(listener, model, &cli.serve, legion_serve::shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
