//! A training's source folder as an OCI artifact, so a pod on a cluster can
//! fetch a folder that only exists on the machine that started the run:
//!
//! ```text
//! manifest (artifactType application/vnd.legion.source.v1)
//!  ├─ config  application/vnd.legion.source.config.v1+json   {"files": N, "bytes": N}
//!  └─ layer   application/vnd.oci.image.layer.v1.tar+gzip    the folder's files, deterministic
//! ```
//!
//! Pushed by the host, pulled by `legion step fetch` (`oci://REF` sources),
//! always by digest.

use std::path::Path;

use oci_client::manifest::OciImageManifest;
use oci_client::Reference;

use super::layer::{build_layer, unpack_layer};
use super::layout::Layout;
use super::registry::Registry;
use super::{store_artifact, Artifact};
use crate::Error;

/// `artifactType` of a source artifact.
pub const SOURCE_ARTIFACT_TYPE: &str = "application/vnd.legion.source.v1";
/// Media type of its config.
pub const SOURCE_CONFIG_MEDIA_TYPE: &str = "application/vnd.legion.source.config.v1+json";

/// Packs `dir` into `layout` as a source artifact named `name`; returns
/// its manifest digest. Deterministic: the same files give the same digest,
/// so a dry run can name the artifact a real run would push.
pub async fn pack_source(dir: &Path, layout: &Layout, name: &str) -> Result<String, Error> {
    let (d, tmp) = (dir.to_path_buf(), layout.root().join("tmp"));
    let layer = tokio::task::spawn_blocking(move || build_layer(&d, "", &tmp))
        .await
        .map_err(|e| Error::Engine {
            context: "packing the source",
            source: e.into(),
        })??;
    let config = serde_json::to_vec(
        &serde_json::json!({"files": layer.files, "bytes": layer.content_bytes}),
    )
    .map_err(|e| Error::json(dir, e))?;
    let desc = store_artifact(
        layout,
        Artifact {
            artifact_type: SOURCE_ARTIFACT_TYPE,
            config_media_type: SOURCE_CONFIG_MEDIA_TYPE,
            config: &config,
            layer,
            layer_annotations: None,
            annotations: None,
        },
        name,
    )?;
    Ok(desc.digest)
}

/// `REGISTRY/REPO@DIGEST` for `reference`'s repository.
pub fn pinned(reference: &Reference, digest: &str) -> String {
    format!(
        "{}/{}@{digest}",
        reference.resolve_registry(),
        reference.repository()
    )
}

/// Packs `dir` into `layout` and pushes it to `reference`; returns
/// `REGISTRY/REPO@sha256:…`.
pub async fn push_source(
    dir: &Path,
    layout: &Layout,
    reference: &Reference,
) -> Result<String, Error> {
    let digest = pack_source(dir, layout, &reference.whole()).await?;
    Registry::for_reference(reference)
        .push(layout, &digest, reference)
        .await?;
    Ok(pinned(reference, &digest))
}

/// Pulls the source artifact `reference` (digests checked) through
/// `layout` and unpacks it into `dest`; returns the manifest digest.
pub async fn pull_source(
    reference: &Reference,
    layout: &Layout,
    dest: &Path,
) -> Result<String, Error> {
    let digest = Registry::for_reference(reference)
        .pull(layout, reference)
        .await?;
    let bytes = layout.read_blob(&digest)?;
    let manifest: OciImageManifest =
        serde_json::from_slice(&bytes).map_err(|source| Error::NotOci {
            path: layout.blob_path(&digest),
            what: "a source artifact manifest",
            source,
        })?;
    if manifest.artifact_type.as_deref() != Some(SOURCE_ARTIFACT_TYPE) {
        return Err(Error::Registry {
            reference: reference.whole(),
            message: format!(
                "not a Legion source artifact (artifactType {:?})",
                manifest.artifact_type
            ),
        });
    }
    for l in &manifest.layers {
        unpack_layer(&layout.blob_path(&l.digest), dest)?;
    }
    Ok(digest)
}
