//! `legion-serve`: the model server on its own, the entrypoint of packaged
//! images. It serves a model folder (`legion-model.json` beside `model/`)
//! with the Python it is given; nothing else is needed on the machine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

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
    let cli = Cli::parse();
    let _log = legion_serve::init_logging(true);
    let runtime = match legion_serve::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
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
