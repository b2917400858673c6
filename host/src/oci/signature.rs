//! Signatures of toolchains, kept in the registry beside them as OCI
//! referrers (OCI 1.1): a small manifest whose `subject` is the signed
//! toolchain's manifest, `artifactType`
//! `application/vnd.legion.toolchain.signature.v1+json`, an empty config and
//! one layer holding the signature. Registries with the referrers API list
//! it there; for those without it, such as Debian's `docker-registry`, the
//! referrers tag schema: an image index tagged `sha256-<hex>` of the subject
//! lists every referrer, and each signing adds itself to it.
//!
//! What is signed is the subject's manifest digest (which pins its config
//! and its one wasm layer, so the component): the bytes
//! `legion-toolchain-signature-v1:sha256:<hex>`, with ed25519. Keys are
//! named by a key id, the first 16 hex digits of the SHA-256 of the raw
//! 32-byte public key.

use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use oci_client::Reference;
use serde::{Deserialize, Serialize};

use super::image::OCI_INDEX_MEDIA_TYPE;
use super::registry::Registry;
use super::{sha256_digest, MANIFEST_MEDIA_TYPE};
use crate::Error;

/// `artifactType` of a signature manifest, and its layer's media type.
pub const SIGNATURE_TYPE: &str = "application/vnd.legion.toolchain.signature.v1+json";
/// The empty config (OCI 1.1 guidance for artifacts).
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// Annotation of a signature manifest: the signing key's id.
pub const KEY_ID_ANNOTATION: &str = "org.legion-platform.signature.key-id";
/// What a signature signs, before the subject's digest.
const DOMAIN: &str = "legion-toolchain-signature-v1:";

/// The message a signature of `subject` (a manifest digest) signs.
pub fn message(subject: &str) -> Vec<u8> {
    format!("{DOMAIN}{subject}").into_bytes()
}

/// The signature layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignatureBlob {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signing key's id.
    pub key_id: String,
    /// The signed manifest's digest.
    pub subject: String,
    /// The 64-byte signature, hex.
    pub signature: String,
}

/// A signature found in a registry.
#[derive(Debug, Clone)]
pub struct Found {
    /// The signature manifest's digest.
    pub digest: String,
    /// What it holds (`None`: unreadable, with why).
    pub blob: Result<SignatureBlob, String>,
}

/// Pushes a signature of `subject` (the toolchain's manifest: its digest,
/// size) to the subject's repository and lists it as a referrer. Returns
/// the signature manifest's digest.
pub async fn push(
    registry: &Registry,
    repository: &Reference,
    subject: &OciDescriptor,
    blob: &SignatureBlob,
) -> Result<String, Error> {
    let layer = to_json(blob)?;
    let config = b"{}".to_vec();
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        artifact_type: Some(SIGNATURE_TYPE.into()),
        config: OciDescriptor {
            media_type: EMPTY_MEDIA_TYPE.into(),
            digest: sha256_digest(&config),
            size: config.len() as i64,
            ..Default::default()
        },
        layers: vec![OciDescriptor {
            media_type: SIGNATURE_TYPE.into(),
            digest: sha256_digest(&layer),
            size: layer.len() as i64,
            ..Default::default()
        }],
        subject: Some(subject.clone()),
        annotations: Some([(KEY_ID_ANNOTATION.to_string(), blob.key_id.clone())].into()),
    };
    let manifest_bytes = to_json(&manifest)?;
    let digest = sha256_digest(&manifest_bytes);
    registry
        .push_bytes(
            &[(&manifest.config, &config), (&manifest.layers[0], &layer)],
            &manifest_bytes,
            &repository.clone_with_digest(digest.clone()),
        )
        .await?;

    // The referrers tag schema: add this signature to the subject's index.
    let tag = Reference::with_tag(
        repository.registry().to_string(),
        repository.repository().to_string(),
        subject.digest.replace(':', "-"),
    );
    // A missing index is a first signature; any other failure to read it
    // stops here, so no signature already listed is written over.
    let mut index = match registry
        .pull_manifest_if_any(&tag, &[OCI_INDEX_MEDIA_TYPE])
        .await?
    {
        Some((bytes, _)) => {
            serde_json::from_slice::<OciImageIndex>(&bytes).map_err(|e| Error::Registry {
                reference: tag.whole(),
                message: format!("the referrers index is not an image index: {e}"),
            })?
        }
        None => OciImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX_MEDIA_TYPE.into()),
            manifests: vec![],
            artifact_type: None,
            annotations: None,
        },
    };
    if !index.manifests.iter().any(|m| m.digest == digest) {
        index.manifests.push(oci_client::manifest::ImageIndexEntry {
            media_type: MANIFEST_MEDIA_TYPE.into(),
            digest: digest.clone(),
            size: manifest_bytes.len() as i64,
            platform: None,
            annotations: manifest.annotations.clone(),
            artifact_type: Some(SIGNATURE_TYPE.into()),
        });
        registry
            .push_raw_manifest(&tag, to_json(&index)?, OCI_INDEX_MEDIA_TYPE)
            .await?;
    }
    Ok(digest)
}

/// The signatures the registry lists for `subject` (a manifest digest in
/// `repository`), through the referrers API or its tag schema.
pub async fn find(
    registry: &Registry,
    repository: &Reference,
    subject: &str,
) -> Result<Vec<Found>, Error> {
    let pinned = repository.clone_with_digest(subject.to_string());
    let index = registry.referrers(&pinned, SIGNATURE_TYPE).await?;
    let mut found = Vec::new();
    for entry in index.manifests {
        let at = repository.clone_with_digest(entry.digest.clone());
        let blob = read_one(registry, &at, subject).await;
        found.push(Found {
            digest: entry.digest,
            blob,
        });
    }
    Ok(found)
}

/// One signature manifest's blob, checked to be about `subject`.
async fn read_one(
    registry: &Registry,
    at: &Reference,
    subject: &str,
) -> Result<SignatureBlob, String> {
    let (bytes, _) = registry
        .pull_manifest_pinned(at, &[MANIFEST_MEDIA_TYPE])
        .await
        .map_err(|e| e.to_string())?;
    let manifest: OciImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a manifest: {e}"))?;
    if manifest.subject.as_ref().map(|s| s.digest.as_str()) != Some(subject) {
        return Err("its subject is another manifest".into());
    }
    let layer = match manifest.layers.as_slice() {
        [l] if l.media_type == SIGNATURE_TYPE && (0..=4096).contains(&l.size) => l,
        _ => return Err("not one signature layer".into()),
    };
    let bytes = registry
        .pull_blob_checked(at, layer, 4096)
        .await
        .map_err(|e| e.to_string())?;
    let blob: SignatureBlob =
        serde_json::from_slice(&bytes).map_err(|e| format!("unreadable signature: {e}"))?;
    if blob.subject != subject {
        return Err(format!("it signs {}, not this manifest", blob.subject));
    }
    Ok(blob)
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|e| Error::Engine {
        context: "writing a signature artifact",
        source: e.into(),
    })
}
