//! `legion train`: one training, with live progress on a terminal.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::cluster::ClusterArgs;
use super::output;
use super::Format;
use crate::exec::kube::executor::yaml_documents;
use crate::exec::local::LocalExecutor;
use crate::exec::{RunEvents, Stream};
use crate::home::Home;
use crate::names::{ModelName, ModelVersion, ToolchainName};
use crate::plan::{parse_key_value, DataBinding, Resources};
use crate::plugin::Toolchains;
use crate::store::{RunRecord, RunState};
use crate::train::{TrainOptions, Trainer};
use crate::Error;

/// `legion train` arguments.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The project: a local folder, or a git URL with an optional #REF
    /// (branch, tag or commit), e.g. https://host/org/repo.git#v1.
    pub source: String,
    /// Toolchain to train with (`legion toolchain ls`).
    #[arg(long, short = 't')]
    pub toolchain: ToolchainName,
    /// Entry point: a script, or an MLproject entry point.
    #[arg(long, short = 'e')]
    pub entrypoint: Option<String>,
    /// Hyper-parameter (repeatable).
    #[arg(short = 'P', long = "param", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub params: Vec<(String, String)>,
    /// Model name (default: the project folder's or repository's name).
    #[arg(long)]
    pub name: Option<ModelName>,
    /// Model version.
    #[arg(long, default_value = "1")]
    pub version: ModelVersion,
    /// Data to fetch into the run's data folder (repeatable); URI is
    /// file://, http(s)://, s3://, gs:// or az://.
    #[arg(long = "data", value_name = "URI=LOCAL_PATH", value_parser = parse_data)]
    pub data: Vec<DataBinding>,
    /// Environment variable for the training (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Image for the steps on a cluster (recorded locally).
    #[arg(long)]
    pub image: Option<String>,
    /// Working directory inside the project.
    #[arg(long)]
    pub work_dir: Option<String>,
    /// Push the model to a registry too: REGISTRY/REPOSITORY[:TAG] (tag defaults to the version).
    #[arg(long, value_name = "REGISTRY/REPO[:TAG]")]
    pub push: Option<String>,
    /// Time the training may run, e.g. 30m, 4h.
    #[arg(long, default_value = "4h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// CPU for the steps, in thousandths of a core.
    #[arg(long)]
    pub cpu_millis: Option<u32>,
    /// Memory for the steps, in bytes.
    #[arg(long)]
    pub memory_bytes: Option<u64>,
    /// GPUs for the steps (on a cluster: `nvidia.com/gpu`).
    #[arg(long)]
    pub gpus: Option<u32>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Arguments passed to the entry point (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

fn parse_data(s: &str) -> Result<DataBinding, String> {
    // The URI itself contains ':' and maybe '='; the local path is after the last '='.
    match s.rsplit_once('=') {
        Some((uri, path)) if !uri.is_empty() && !path.is_empty() => Ok(DataBinding {
            uri: uri.to_string(),
            local_path: path.to_string(),
        }),
        _ => Err(format!("expected URI=LOCAL_PATH, got '{s}'")),
    }
}

/// Runs `legion train`; returns the process exit code.
pub async fn run(
    args: TrainArgs,
    home: &Home,
    toolchains: &Toolchains,
    format: Format,
) -> Result<i32, Error> {
    let opts = TrainOptions {
        source: args.source,
        toolchain: args.toolchain.to_string(),
        entrypoint: args.entrypoint,
        args: args.args,
        params: args.params.into_iter().collect(),
        name: args.name,
        version: Some(args.version),
        data: args.data,
        env: args.env.into_iter().collect(),
        image: args.image,
        work_dir: args.work_dir,
        resources: Resources {
            cpu_millis: args.cpu_millis,
            memory_bytes: args.memory_bytes,
            gpus: args.gpus,
        },
        push: args.push,
        timeout: args.timeout,
        run_id: None,
        lease: None,
        gate: None,
    };
    let cluster = args.cluster.connect().await?;
    let executor = LocalExecutor;
    let trainer = match &cluster {
        Some(c) => Trainer::on_cluster(toolchains, home, c),
        None => Trainer::new(toolchains, home, &executor),
    };
    if args.cluster.dry_run {
        let job = trainer.dry_run(opts).await?;
        print!("{}", yaml_documents(&[&job])?);
        return Ok(0);
    }
    let (cancel, watcher) = cancel_on_ctrl_c();
    let progress = Progress::new();
    let run = trainer.train(opts, &progress, cancel).await;
    progress.finish();
    watcher.abort();
    let run = run?;
    report(&run, format);
    Ok(exit_code(run.state))
}

/// A run's end as the process's exit code: 0, 130 (cancelled, as after
/// Ctrl-C), else 1.
pub(super) fn exit_code(state: RunState) -> i32 {
    match state {
        RunState::Succeeded => 0,
        RunState::Cancelled => 130,
        _ => 1,
    }
}

/// A token cancelled by the first Ctrl-C (the second exits at once), and
/// the task watching for it.
pub(super) fn cancel_on_ctrl_c() -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ncancelling: stopping the run (Ctrl-C again to force)");
            on_signal.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    (cancel, watcher)
}

pub(super) fn report(run: &RunRecord, format: Format) {
    if format == Format::Json {
        return output::json(run);
    }
    let took = match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => format!(" in {:.1}s", (f - s) as f64 / 1000.0),
        _ => String::new(),
    };
    match run.state {
        RunState::Succeeded => {
            println!("run {} succeeded{took}", run.id);
            println!("model   {}", run.model_ref.as_deref().unwrap_or_default());
            println!(
                "digest  {}",
                run.model_digest.as_deref().unwrap_or_default()
            );
            if let Some(p) = &run.pushed_ref {
                println!("pushed  {p}");
            }
        }
        state => {
            eprintln!(
                "run {} {}{took}: {}",
                run.id,
                state.as_str(),
                run.reason.as_deref().unwrap_or("")
            );
            eprintln!("full log: {}  (legion runs logs {})", run.log_path, run.id);
        }
    }
}

/// Progress for a person: on a terminal, a spinner with the step, its
/// elapsed time and the last log line, the log scrolling above it;
/// elsewhere, plain lines on stderr.
pub(super) struct Progress {
    bar: Option<ProgressBar>,
    state: Mutex<(String, Instant)>,
}

impl Progress {
    pub(super) fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix:.bold} {elapsed:>4} {wide_msg:.dim}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        Progress {
            bar,
            state: Mutex::new((String::new(), Instant::now())),
        }
    }

    fn set(&self, prefix: String) {
        if let Some(pb) = &self.bar {
            pb.set_prefix(prefix.clone());
            pb.set_message("");
            pb.reset_elapsed();
        } else {
            eprintln!("==> {prefix}");
        }
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (prefix, Instant::now());
    }

    pub(super) fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}

impl RunEvents for Progress {
    fn phase(&self, name: &str) {
        self.set(name.to_string());
    }
    fn step_started(&self, step: &str, index: usize, total: usize) {
        self.set(format!("step {index}/{total} {step}"));
    }
    fn line(&self, _step: &str, _stream: Stream, line: &str) {
        match &self.bar {
            Some(pb) => {
                pb.println(format!("  {line}"));
                pb.set_message(line.to_string());
            }
            None => eprintln!("  {line}"),
        }
    }
    fn step_finished(&self, step: &str, exit_code: Option<i32>, elapsed: Duration) {
        let how = match exit_code {
            Some(0) => "done".to_string(),
            Some(c) => format!("failed (exit code {c})"),
            None => "stopped".to_string(),
        };
        let line = format!("step {step} {how} in {:.1}s", elapsed.as_secs_f64());
        match &self.bar {
            Some(pb) => pb.println(line),
            None => eprintln!("==> {line}"),
        }
    }
}
