//! OCI artifacts: trained models and packaged images.
//!
//! - [`layer`]: deterministic image layers (sorted entries, zero
//!   timestamps and owners, normalised modes), gzip'd and hashed in one pass;
//! - [`layout`]: an OCI image layout folder, the embedded default store;
//! - [`model`]: a trained model as an OCI artifact — Legion's model manifest
//!   as the config, the model's files as one standard image layer that
//!   packaging reuses unchanged;
//! - [`image`]: runnable images — a base resolved to a digest, layers on
//!   top, a deterministic config and manifest;
//! - [`source`]: a training's source folder as an artifact a pod fetches;
//! - [`registry`]: pushing and pulling through a registry (oci-client);
//! - [`wasm`]: toolchains as wasm OCI artifacts (the CNCF wasm layout);
//! - [`signature`]: their signatures, as OCI referrers.

pub mod catalog;
pub mod image;
pub mod layer;
pub mod layout;
pub mod model;
pub mod registry;
pub mod signature;
pub mod source;
pub mod wasm;

/// OCI image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Gzip'd image layer media type.
pub const LAYER_GZIP_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Annotation naming a manifest in an image layout's index.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Annotation with a layer's title.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The time reproducible artifacts carry, in seconds since the epoch:
/// `SOURCE_DATE_EPOCH` (the reproducible-builds convention) or 0.
pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// A one-layer artifact (a model, a source folder): its `artifactType`,
/// a config blob and one gzip'd layer.
pub struct Artifact<'a> {
    /// `artifactType` of the manifest.
    pub artifact_type: &'a str,
    /// Media type of the config.
    pub config_media_type: &'a str,
    /// The config's bytes.
    pub config: &'a [u8],
    /// The layer.
    pub layer: layer::LayerBlob,
    /// Annotations of the layer's descriptor.
    pub layer_annotations: Option<std::collections::BTreeMap<String, String>>,
    /// Annotations of the manifest.
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// Stores `artifact`'s blobs and manifest in `layout`, named `name`;
/// returns the manifest's descriptor.
pub fn store_artifact(
    layout: &layout::Layout,
    artifact: Artifact<'_>,
    name: &str,
) -> Result<oci_client::manifest::OciDescriptor, crate::Error> {
    use oci_client::manifest::{OciDescriptor, OciImageManifest};
    let config_digest = layout.put_blob(artifact.config)?;
    let layer = OciDescriptor {
        media_type: LAYER_GZIP_MEDIA_TYPE.to_string(),
        digest: artifact.layer.digest.clone(),
        size: artifact.layer.size as i64,
        annotations: artifact.layer_annotations,
        ..Default::default()
    };
    layout.put_blob_file(artifact.layer.file, &layer.digest)?;
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_string()),
        config: OciDescriptor {
            media_type: artifact.config_media_type.to_string(),
            digest: config_digest,
            size: artifact.config.len() as i64,
            ..Default::default()
        },
        layers: vec![layer],
        subject: None,
        artifact_type: Some(artifact.artifact_type.to_string()),
        annotations: artifact.annotations,
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| crate::Error::json(layout.root(), e))?;
    layout.put_manifest(&bytes, name, Default::default())
}
