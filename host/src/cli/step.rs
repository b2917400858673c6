//! `legion step fetch|collect`: the host's own phases of a training, run
//! inside a pod of the Kubernetes executor's Job (hidden from help: it is
//! not for people). Each calls the very functions the local path calls
//! (`train::phases`).

use std::path::PathBuf;

use clap::Subcommand;

use crate::exec::{RunLog, Workspace};
use crate::home::Home;
use crate::oci::layout::Layout;
use crate::oci::model::ToolchainRef;
use crate::oci::registry::parse_reference;
use crate::package::{PackageOptions, Packager};
use crate::plugin::Toolchains;
use crate::train::phases::{self, Collected, PackageSpec, PackagedImage, Provenance, StepSpec};
use crate::Error;

/// The phases a pod runs.
#[derive(Debug, Subcommand)]
pub enum StepCommand {
    /// Fetches the source and the data into the workspace.
    Fetch(StepArgs),
    /// Collects, stores and pushes the model; writes the termination message.
    Collect(CollectArgs),
    /// Packages a model from a registry and pushes the image; writes the
    /// termination message.
    Package(PackageStepArgs),
}

/// `package`'s arguments.
#[derive(Debug, clap::Args)]
pub struct PackageStepArgs {
    /// The package spec (JSON); without it, `LEGION_STEP_SPEC` holds the JSON.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Where the result is written for Kubernetes to keep.
    #[arg(long, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

/// Where the spec and the workspace are.
#[derive(Debug, clap::Args)]
pub struct StepArgs {
    /// The step spec (JSON); without it, `LEGION_STEP_SPEC` holds the JSON.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// The run's workspace (`source/`, `data/`, `output/`).
    #[arg(long, default_value = "/workspace")]
    pub workspace: PathBuf,
}

/// `collect`'s arguments.
#[derive(Debug, clap::Args)]
pub struct CollectArgs {
    #[command(flatten)]
    pub step: StepArgs,
    /// Where the result is written for Kubernetes to keep.
    #[arg(long, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

fn read_spec(args: &StepArgs) -> Result<StepSpec, Error> {
    read_spec_from(args.spec.as_ref())
}

fn read_spec_from<T: serde::de::DeserializeOwned>(spec: Option<&PathBuf>) -> Result<T, Error> {
    let (text, origin) = match spec {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?,
            path.display().to_string(),
        ),
        None => (
            std::env::var("LEGION_STEP_SPEC").map_err(|_| Error::InvalidArgument {
                field: "--spec".into(),
                message: "no step spec: pass --spec FILE or set LEGION_STEP_SPEC".into(),
            })?,
            "LEGION_STEP_SPEC".to_string(),
        ),
    };
    crate::plan::parse_json(&text, &origin)
}

/// Only the digest the run was planned with may run in the pod.
async fn pinned(toolchains: &Toolchains, toolchain: &ToolchainRef) -> Result<(), Error> {
    let row = toolchains.get(&toolchain.name).await?;
    if row.digest != toolchain.digest {
        return Err(Error::DigestMismatch {
            toolchain: toolchain.name.clone(),
            file: "the built-in toolchains of this legion".into(),
            actual: row.digest,
            expected: toolchain.digest.clone(),
        });
    }
    Ok(())
}

/// Writes a step's report where Kubernetes keeps it, and to stdout.
fn report<T: serde::Serialize>(path: &std::path::Path, value: &T) -> Result<(), Error> {
    let text = serde_json::to_string(value).map_err(|e| Error::json(path, e))?;
    std::fs::write(path, &text).map_err(|e| Error::io(path, e))?;
    println!("{text}");
    Ok(())
}

/// Runs a step; its log goes to stderr (the container's log).
pub async fn run(cmd: StepCommand, home: &Home, toolchains: &Toolchains) -> Result<(), Error> {
    match cmd {
        StepCommand::Package(args) => {
            let spec: PackageSpec = read_spec_from(args.spec.as_ref())?;
            pinned(toolchains, &spec.toolchain).await?;
            let opts = PackageOptions {
                model: spec.model.clone(),
                toolchain: spec.toolchain.name.clone(),
                base: spec.base.clone(),
                push: Some(spec.push.clone()),
                arguments: spec.arguments.clone(),
                run_id: Some(spec.run_id.clone()),
                ..PackageOptions::default()
            };
            let packaged = Packager::new(toolchains, home)
                .package(
                    opts,
                    &StderrEvents,
                    tokio_util::sync::CancellationToken::new(),
                )
                .await?;
            let run = packaged.run;
            // The packaging's own log, for the container's log.
            if let Ok(text) = std::fs::read_to_string(&run.log_path) {
                eprint!("{text}");
            }
            match (run.state, run.image_ref, run.image_digest) {
                (crate::store::RunState::Succeeded, Some(image_ref), Some(image_digest)) => report(
                    &args.termination_log,
                    &PackagedImage {
                        image_ref,
                        image_digest,
                    },
                ),
                (state, ..) => Err(Error::Package {
                    message: format!(
                        "run {} {}: {}",
                        run.id,
                        state.as_str(),
                        run.reason.unwrap_or_default()
                    ),
                }),
            }
        }
        StepCommand::Fetch(args) => {
            let spec = read_spec(&args)?;
            let ws = Workspace::new(&args.workspace);
            ws.create()?;
            let log = RunLog::open(std::path::Path::new("/dev/stderr"))?;
            let source = phases::fetch(&spec.source()?, &spec.request.data, &ws, &log).await?;
            log.note(&format!(
                "run {}: fetched {}{}",
                spec.run_id,
                source.uri,
                source
                    .commit
                    .map(|c| format!(" at {c}"))
                    .unwrap_or_default()
            ));
            Ok(())
        }
        StepCommand::Collect(args) => {
            let spec = read_spec(&args.step)?;
            let push = spec
                .push
                .as_deref()
                .map(|p| parse_reference(p, &spec.request.model.version))
                .transpose()?;
            let ws = Workspace::new(&args.step.workspace);
            let log = RunLog::open(std::path::Path::new("/dev/stderr"))?;
            pinned(toolchains, &spec.toolchain).await?;
            let plugin = toolchains.load(&spec.toolchain.name).await?;
            let (p, req, w) = (plugin.clone(), spec.request.clone(), ws.clone());
            let (manifest, model_dir) =
                tokio::task::spawn_blocking(move || phases::collect(&p, &req, &w))
                    .await
                    .map_err(|e| Error::Engine {
                        context: "collect",
                        source: e.into(),
                    })??;
            let layout = Layout::open(args.step.workspace.join("store"))?;
            let provenance = Provenance {
                model: spec.request.model.clone(),
                toolchain: spec.toolchain.clone(),
                request: spec.request.clone(),
            };
            let l = layout.clone();
            let stored = tokio::task::spawn_blocking(move || {
                phases::store(&l, &model_dir, manifest, &provenance)
            })
            .await
            .map_err(|e| Error::Engine {
                context: "store",
                source: e.into(),
            })??;
            log.note(&format!(
                "run {}: stored model {} as {}",
                spec.run_id, stored.reference, stored.digest
            ));
            let pushed_ref = match &push {
                Some(reference) => Some(phases::push(&layout, &stored, reference, &log).await?.1),
                None => None,
            };
            let collected = Collected {
                model_digest: stored.digest.clone(),
                model_ref: stored.reference.clone(),
                pushed_ref,
            };
            report(&args.termination_log, &collected)
        }
    }
}

/// A pod's progress: each phase as a line on stderr (the container's log).
struct StderrEvents;

impl crate::exec::RunEvents for StderrEvents {
    fn phase(&self, name: &str) {
        eprintln!("==> {name}");
    }
}
