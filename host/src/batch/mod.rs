//! Batch inference: a stored model scores data as a job that ends
//! (`legion batch MODEL --data URI --output DIR`), on the same pieces as a
//! training — a toolchain's plan (contract 0.2.0's `batch` interface), the
//! admin's policy, the local executor, the run's log:
//!
//! find the model -> check the arguments against the toolchain's declared
//! parameters -> unpack the model, fetch the data -> plugin
//! `plan-batch-inference` (model preopened at `/model`) -> policy ->
//! Python environment -> steps (`$LEGION_MODEL_DIR`, `$LEGION_DATA_DIR`,
//! writing `$LEGION_OUTPUT_DIR`) -> the output copied to the folder asked
//! for.
//!
//! The job's workspace and log stay under the data directory's `runs/`
//! whatever the outcome; a failure names the log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::exec::pyenv::PythonEnvs;
use crate::exec::{Executor, Outcome, RunContext, RunEvents, RunLog, Workspace};
use crate::fetch::data::fetch_data;
use crate::home::Home;
use crate::plan::Policy;
use crate::plan::{parameters, BatchRequest, DataBinding, ModelId, Pairs, Resources};
use crate::plugin::{Interface, Toolchains};
use crate::serve::{find_model, unpack_model};
use crate::Error;

/// What to score, with what, and where the results go.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// The stored model: `name:version`, a digest, or a registry reference.
    pub model: String,
    /// The toolchain that plans the job.
    pub toolchain: String,
    /// Input data: `URI` or `URI=LOCAL_PATH` bindings.
    pub data: Vec<DataBinding>,
    /// A local folder the job's output is copied into.
    pub output: PathBuf,
    /// Toolchain arguments (`--arg`).
    pub arguments: Pairs,
    /// Image override for the steps (recorded locally).
    pub image: Option<String>,
    /// Compute asked for.
    pub resources: Resources,
    /// Time the steps may take together.
    pub timeout: Duration,
}

/// A finished batch job.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchReport {
    /// The job's id (its folder under `runs/`).
    pub id: String,
    /// The model that scored, `name:version`.
    pub model: String,
    /// Its digest.
    pub model_digest: String,
    /// The toolchain that planned it.
    pub toolchain: String,
    /// The files written to the output folder, relative to it.
    pub files: Vec<String>,
    /// The output folder.
    pub output: PathBuf,
    /// The job's log.
    pub log: PathBuf,
}

/// The output folder a `--output` value names: a path or a `file://` URL.
pub fn output_folder(uri: &str) -> Result<PathBuf, Error> {
    let path = uri.strip_prefix("file://").unwrap_or(uri);
    if path.is_empty() || path.contains("://") {
        return Err(Error::InvalidArgument {
            field: "--output".into(),
            message: format!(
                "'{uri}': a batch job delivers its results to a folder on this machine (a path or file:// URL)"
            ),
        });
    }
    Ok(PathBuf::from(path))
}

/// Runs one batch inference job on `executor`.
pub async fn run(
    toolchains: &Toolchains,
    home: &Home,
    executor: &dyn Executor,
    opts: BatchOptions,
    events: &dyn RunEvents,
    cancel: CancellationToken,
) -> Result<BatchReport, Error> {
    // --- everything checkable before the job exists ---
    let row = toolchains.get(&opts.toolchain).await?;
    let plugin = toolchains.load_record(&row).await?;
    if !plugin.interfaces().contains(&Interface::Batch) {
        return Err(Error::NotExported {
            toolchain: row.name.clone(),
            interface: "batch".into(),
            call: format!(
                "run batch inference jobs (the interface is new in legion:toolchain@0.2.0; it targets {})",
                row.contract
            ),
        });
    }
    parameters::check(&row.name, &row.info.parameters, &opts.arguments, "--arg")?;
    if opts.data.is_empty() {
        return Err(Error::InvalidArgument {
            field: "--data".into(),
            message: "a batch job needs data to score (--data URI, repeatable)".into(),
        });
    }
    let policy = Policy::load(&home.policy())?;
    let found = find_model(home, &opts.model, "MODEL").await?;
    let model = ModelId {
        name: found.config.name.clone(),
        version: found.config.version.clone(),
    };

    // --- the job exists from here on: its folder and log stay ---
    let id = crate::names::batch_id(&model.name);
    let ws = Workspace::new(home.run_dir(&id));
    ws.create()?;
    let log = RunLog::open(&ws.root.join("legion.log"))?;
    log.note(&format!(
        "batch job {id}: model {}:{} ({}) with toolchain {} ({})",
        model.name, model.version, found.desc.digest, row.name, row.digest
    ));
    let failed = |message: String| Error::Batch {
        id: id.clone(),
        message,
        log: log.path().to_path_buf(),
    };
    let noted = |e: Error| {
        log.note(&format!("failed: {e}"));
        failed(e.to_string())
    };

    events.phase("unpack model");
    let (h, f) = (home.clone(), found.clone());
    let root = crate::train::blocking(move || unpack_model(&h, &f))
        .await
        .map_err(|s| noted(s.into_error()))?;
    let files = root.join(legion_serve::model::FILES_DIR);
    std::os::unix::fs::symlink(&files, ws.model()).map_err(|e| noted(Error::io(&ws.model(), e)))?;

    events.phase("fetch data");
    let data_dir = ws.data();
    tokio::select! {
        r = fetch_data(&opts.data, &data_dir, &log) => r.map_err(noted)?,
        _ = cancel.cancelled() => return Err(failed("cancelled while fetching the data".into())),
    }

    events.phase("plan");
    let request = BatchRequest {
        model: model.clone(),
        model_digest: found.desc.digest.clone(),
        manifest: found.config.manifest.clone(),
        data: opts.data.clone(),
        image: opts.image.clone(),
        resources: opts.resources,
        arguments: opts.arguments.clone(),
    };
    let (p, req, dir) = (plugin.clone(), request.clone(), files.clone());
    let plan = crate::train::blocking(move || p.plan_batch_inference(&req, &dir))
        .await
        .map_err(|s| noted(s.into_error()))?;
    log.note(&format!(
        "plan: {}",
        serde_json::to_string(&plan).unwrap_or_default()
    ));
    policy.check(plugin.name(), &plan).map_err(noted)?;

    let python_env = match &plan.python {
        Some(py) => {
            events.phase("python environment");
            let envs = PythonEnvs::new(home.python_envs());
            Some(envs.ensure(py, &log).await.map_err(noted)?)
        }
        None => None,
    };
    let ctx = RunContext {
        run_id: id.clone(),
        model: model.clone(),
        workspace: ws.clone(),
        timeout: opts.timeout,
        python_env,
        log: log.clone(),
    };
    match executor
        .run(&plan, &ctx, events, cancel)
        .await
        .map_err(noted)?
    {
        Outcome::Succeeded => {}
        Outcome::Failed { step, message, .. } => {
            let tail = log.failure_tail(12).join("\n  ");
            return Err(failed(format!(
                "step '{step}' {message}; last log lines:\n  {tail}"
            )));
        }
        Outcome::TimedOut { step, after } => {
            return Err(failed(format!(
                "timed out after {}s in step '{step}'",
                after.as_secs()
            )))
        }
        Outcome::Cancelled { step } => {
            return Err(failed(format!("cancelled in step '{step}'")));
        }
    }

    events.phase("deliver");
    let written = copy_tree(&ws.output(), &opts.output).map_err(noted)?;
    if written.is_empty() {
        return Err(noted(Error::BadOutput {
            toolchain: row.name.clone(),
            message: "the batch job's steps wrote nothing to $LEGION_OUTPUT_DIR".into(),
        }));
    }
    log.note(&format!(
        "batch job {id} succeeded: {} files in {}",
        written.len(),
        opts.output.display()
    ));
    // The scored copy of the data is not needed any more.
    let _ = std::fs::remove_dir_all(ws.data());
    Ok(BatchReport {
        id,
        model: format!("{}:{}", model.name, model.version),
        model_digest: found.desc.digest.clone(),
        toolchain: row.name,
        files: written,
        output: opts.output,
        log: log.path().to_path_buf(),
    })
}

/// Copies every file under `from` into `to` (made if missing), keeping
/// the relative paths; returns them. Symbolic links are left out — not
/// followed, and not copied as links the way `fetch::source::copy_tree`
/// keeps a project's: a step cannot make the host deliver a path to files
/// elsewhere.
fn copy_tree(from: &Path, to: &Path) -> Result<Vec<String>, Error> {
    let mut written = Vec::new();
    let mut stack = vec![from.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
            let rel = path.strip_prefix(from).unwrap_or(&path).to_path_buf();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let dest = to.join(&rel);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                std::fs::copy(&path, &dest).map_err(|e| Error::io(&dest, e))?;
                written.push(rel.display().to_string());
            }
        }
    }
    written.sort();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_a_local_folder() {
        assert_eq!(output_folder("/tmp/x").unwrap(), PathBuf::from("/tmp/x"));
        assert_eq!(
            output_folder("file:///tmp/x").unwrap(),
            PathBuf::from("/tmp/x")
        );
        let e = output_folder("s3://bucket/x").unwrap_err().to_string();
        assert!(e.contains("--output") && e.contains("s3://bucket/x"), "{e}");
    }

    #[test]
    fn copy_tree_keeps_paths_and_skips_links() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(from.path().join("a/b")).unwrap();
        std::fs::write(from.path().join("a/b/p.csv"), "x").unwrap();
        std::fs::write(from.path().join("top.csv"), "y").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.path().join("link")).unwrap();
        let files = copy_tree(from.path(), &to.path().join("out")).unwrap();
        assert_eq!(files, ["a/b/p.csv", "top.csv"]);
        assert_eq!(
            std::fs::read_to_string(to.path().join("out/a/b/p.csv")).unwrap(),
            "x"
        );
        assert!(!to.path().join("out/link").exists());
    }
}
