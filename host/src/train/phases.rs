//! The phases of a training that the host itself owns, one function each:
//! the local path ([`super::Trainer`]) calls them in process, and a pod
//! on a cluster calls the same functions through `legion step fetch` and
//! `legion step collect` (see `cli/step.rs`). There is no second copy.
//!
//! ```text
//! fetch   source at its commit -> <ws>/source, data bindings -> <ws>/data
//! (steps) the plan's steps, run by an executor, write <ws>/output
//! collect plugin.collect-training -> the model manifest and folder
//! store   the model folder as an OCI artifact in a layout
//! push    the artifact to a registry (optional)
//! ```

use std::path::{Path, PathBuf};

use oci_client::Reference;

use crate::exec::{RunLog, Workspace};
use crate::fetch::{fetch_data, fetch_source, SourceSpec};
use crate::oci::layout::Layout;
use crate::oci::model::{store_model, ModelConfig, StoredModel, ToolchainRef};
use crate::oci::registry::{PushReport, Registry};
use crate::plan::{DataBinding, ModelManifest, Source, TrainingRequest};
use crate::plugin::Plugin;
use crate::Error;

/// Fetches the source (a git commit or a folder) into the workspace's
/// source folder and the data bindings into its data folder; returns the
/// source as fetched (with the commit it resolved to).
pub async fn fetch(
    spec: &SourceSpec,
    data: &[DataBinding],
    ws: &Workspace,
    log: &RunLog,
) -> Result<Source, Error> {
    let source = fetch_source(spec, &ws.source(), log).await?;
    if !data.is_empty() {
        fetch_data(data, &ws.data(), log).await?;
    }
    Ok(source)
}

/// Asks the toolchain what the finished training's output holds; returns
/// the manifest and the model folder, checked to be inside the output.
/// Synchronous (a plugin call): run it off the async workers.
pub fn collect(
    plugin: &Plugin,
    request: &TrainingRequest,
    ws: &Workspace,
) -> Result<(ModelManifest, PathBuf), Error> {
    let manifest = plugin.collect_training(request, &ws.source(), &ws.output())?;
    let dir = model_dir(plugin.name(), &ws.output(), &manifest.model_path)?;
    servable(plugin.name(), &manifest, &dir)?;
    Ok((manifest, dir))
}

/// Refuses a model the server could not load — an unknown flavor, or its
/// file missing — when it is collected, not when a deployment's worker
/// fails to start over and over.
pub fn servable(toolchain: &str, manifest: &ModelManifest, dir: &Path) -> Result<(), Error> {
    legion_serve::model::check_model_files(&manifest.flavor, dir).map_err(|why| Error::BadOutput {
        toolchain: toolchain.to_string(),
        message: format!("collect-training returned a model the server cannot load: {why}"),
    })
}

/// The model folder `model_path` names, if it is a folder inside `output`
/// (after following links: a link out must not smuggle host files in).
pub fn model_dir(toolchain: &str, output: &Path, model_path: &str) -> Result<PathBuf, Error> {
    let bad = || {
        Error::BadOutput {
        toolchain: toolchain.to_string(),
        message: format!(
            "collect-training returned modelPath '{model_path}', which is not a folder inside the output"
        ),
    }
    };
    let rel = Path::new(model_path);
    if rel.components().any(|c| {
        !matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    }) {
        return Err(bad());
    }
    let canon = std::fs::canonicalize(output.join(rel)).map_err(|_| bad())?;
    let root = std::fs::canonicalize(output).map_err(|_| bad())?;
    if !canon.starts_with(&root) || !canon.is_dir() {
        return Err(bad());
    }
    Ok(canon)
}

/// What a stored model records about its training.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// Model name and version.
    pub model: crate::plan::ModelId,
    /// The toolchain, pinned.
    pub toolchain: ToolchainRef,
    /// The request as run (its source with the commit).
    pub request: TrainingRequest,
}

/// Stores the model folder as an OCI artifact in `layout`, named
/// `name:version`. Synchronous (hashing, compressing).
pub fn store(
    layout: &Layout,
    model_dir: &Path,
    manifest: ModelManifest,
    provenance: &Provenance,
) -> Result<StoredModel, Error> {
    let config = ModelConfig {
        name: provenance.model.name.clone(),
        version: provenance.model.version.clone(),
        toolchain: provenance.toolchain.clone(),
        source: provenance.request.source.clone(),
        entrypoint: provenance.request.entrypoint.clone(),
        parameters: provenance.request.hyper_parameters.clone(),
        manifest,
        layer_diff_id: String::new(),
    };
    store_model(layout, model_dir, config)
}

/// Pushes a stored model to `reference`; returns the report and the
/// pushed reference pinned by digest.
pub async fn push(
    layout: &Layout,
    stored: &StoredModel,
    reference: &Reference,
    log: &RunLog,
) -> Result<(PushReport, String), Error> {
    let report = Registry::for_reference(reference)
        .push(layout, &stored.digest, reference)
        .await?;
    log.note(&format!(
        "pushed {} ({} blobs, {} bytes; {} already there)",
        report.reference, report.blobs_pushed, report.bytes_pushed, report.blobs_skipped
    ));
    let name = reference.whole();
    let pinned = format!(
        "{}@{}",
        name.split('@').next().unwrap_or_default(),
        stored.digest
    );
    Ok((report, pinned))
}

/// What a phase run in a pod (`legion step …`) is told: the run, its
/// toolchain pinned by digest, the request as recorded, and where the
/// model goes. Passed as JSON in `LEGION_STEP_SPEC` (or `--spec FILE`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepSpec {
    /// The run's id.
    pub run_id: String,
    /// The toolchain, by name and pinned digest.
    pub toolchain: ToolchainRef,
    /// The training request as recorded (its source with the commit).
    pub request: TrainingRequest,
    /// Registry reference the model is pushed to by `collect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<String>,
}

impl StepSpec {
    /// The source to fetch: a git source at its recorded commit, else the
    /// source as given.
    pub fn source(&self) -> Result<SourceSpec, Error> {
        let src = &self.request.source;
        match SourceSpec::parse(&src.uri)? {
            SourceSpec::Git { url, .. } if src.commit.is_some() => Ok(SourceSpec::Git {
                url,
                reference: src.commit.clone(),
            }),
            other => Ok(other),
        }
    }
}

/// What `collect` reports, also as the container's termination message
/// (which Kubernetes keeps in the pod status, up to 4 KiB).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Collected {
    /// The stored model's digest.
    pub model_digest: String,
    /// `name:version`.
    pub model_ref: String,
    /// Where it was pushed, pinned by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_ref: Option<String>,
}

/// What `legion step package` is told: the run, the packager pinned by
/// digest, the model (a registry reference pinned by digest, which the pod
/// pulls), and where the image goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackageSpec {
    /// The run's id.
    pub run_id: String,
    /// The packager, by name and pinned digest.
    pub toolchain: ToolchainRef,
    /// `REGISTRY/REPO@sha256:…` of the model.
    pub model: String,
    /// Base image override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// `REGISTRY/REPO:TAG` the image is pushed to.
    pub push: String,
    /// Packager arguments.
    #[serde(default)]
    pub arguments: crate::plan::Pairs,
}

/// What `package` reports as its termination message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackagedImage {
    /// `REGISTRY/REPO:TAG@sha256:…`.
    pub image_ref: String,
    /// The image manifest's digest.
    pub image_digest: String,
}
