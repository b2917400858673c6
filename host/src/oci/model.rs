//! A trained model as an OCI artifact.
//!
//! ```text
//! manifest (artifactType application/vnd.legion.model.v1)
//!  ├─ config  application/vnd.legion.model.config.v1+json   ModelConfig (below)
//!  └─ layer   application/vnd.oci.image.layer.v1.tar+gzip    the model's files under model/
//! ```
//!
//! The layer is an ordinary, deterministic image layer: packaging puts the
//! very same blob into an image (its files land in `/model`), so no model
//! byte is re-uploaded. Nothing that changes from run to run (Legion's run
//! id, times) goes into the artifact, so a deterministic training gives the
//! same digest every time; those facts live in the run record.

use std::collections::BTreeMap;
use std::path::Path;

use oci_client::manifest::{OciDescriptor, OciImageManifest};
use serde::{Deserialize, Serialize};

use super::layer::build_layer;
use super::layout::Layout;
use super::{store_artifact, Artifact, TITLE_ANNOTATION};
use crate::plan::{ModelManifest, Pairs, Source};
use crate::Error;

/// `artifactType` of a Legion model.
pub const MODEL_ARTIFACT_TYPE: &str = "application/vnd.legion.model.v1";
/// Media type of the model config.
pub const MODEL_CONFIG_MEDIA_TYPE: &str = "application/vnd.legion.model.config.v1+json";
/// Folder the model's files sit under, in the layer and in images.
pub const MODEL_LAYER_PREFIX: &str = "model";

/// The toolchain that trained a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolchainRef {
    /// Registered name.
    pub name: String,
    /// Pinned digest.
    pub digest: String,
}

/// Legion's model manifest: the artifact's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelConfig {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Toolchain that trained it.
    pub toolchain: ToolchainRef,
    /// Source it was trained from, with the commit.
    pub source: Source,
    /// Entry point used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    /// Hyper-parameters.
    pub parameters: Pairs,
    /// What the toolchain found: flavor, signature, requirements, its own run id.
    pub manifest: ModelManifest,
    /// `diff_id` of the model layer (sha256 of the uncompressed tar).
    pub layer_diff_id: String,
}

/// A model stored in a layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredModel {
    /// `name:version` in the layout index.
    pub reference: String,
    /// Manifest digest: the model's identity.
    pub digest: String,
    /// Model layer digest.
    pub layer_digest: String,
    /// Size of the model layer (compressed).
    pub layer_size: u64,
    /// Bytes of model files.
    pub content_bytes: u64,
    /// Number of model files.
    pub files: u64,
}

/// Packs `model_dir` with `config` into the layout and names it
/// `name:version`. `config.layer_diff_id` is filled in here.
pub fn store_model(
    layout: &Layout,
    model_dir: &Path,
    mut config: ModelConfig,
) -> Result<StoredModel, Error> {
    let tmp = layout.root().join("tmp");
    let layer = build_layer(model_dir, MODEL_LAYER_PREFIX, &tmp)?;
    config.layer_diff_id = layer.diff_id.clone();
    let config_bytes = serde_json::to_vec(&config).map_err(|e| Error::json(model_dir, e))?;
    let (layer_digest, layer_size, content_bytes, files) = (
        layer.digest.clone(),
        layer.size,
        layer.content_bytes,
        layer.files,
    );
    let reference = format!("{}:{}", config.name, config.version);
    let desc = store_artifact(
        layout,
        Artifact {
            artifact_type: MODEL_ARTIFACT_TYPE,
            config_media_type: MODEL_CONFIG_MEDIA_TYPE,
            config: &config_bytes,
            layer,
            layer_annotations: Some(BTreeMap::from([(
                TITLE_ANNOTATION.to_string(),
                MODEL_LAYER_PREFIX.to_string(),
            )])),
            annotations: Some(BTreeMap::from([
                ("dev.legion.model.name".to_string(), config.name.clone()),
                (
                    "dev.legion.model.version".to_string(),
                    config.version.clone(),
                ),
            ])),
        },
        &reference,
    )?;
    Ok(StoredModel {
        reference,
        digest: desc.digest,
        layer_digest,
        layer_size,
        content_bytes,
        files,
    })
}

/// Reads a stored model's manifest and config.
pub fn read_model(
    layout: &Layout,
    reference: &str,
) -> Result<Option<(OciDescriptor, OciImageManifest, ModelConfig)>, Error> {
    let Some(desc) = layout.resolve(reference)? else {
        return Ok(None);
    };
    let bad = |what: &'static str, source: serde_json::Error| Error::NotOci {
        path: layout.blob_path(&desc.digest),
        what,
        source,
    };
    let manifest: OciImageManifest = serde_json::from_slice(&layout.read_blob(&desc.digest)?)
        .map_err(|e| bad("a Legion model manifest", e))?;
    let config: ModelConfig = serde_json::from_slice(&layout.read_blob(&manifest.config.digest)?)
        .map_err(|e| bad("a Legion model config", e))?;
    Ok(Some((desc, manifest, config)))
}
