//! Toolchains as OCI artifacts, in the wasm OCI layout of the CNCF TAG
//! Runtime (what `wkg oci push` writes and `wkg oci pull` reads): an OCI
//! image manifest whose config is `application/vnd.wasm.config.v0+json`
//! (architecture `wasm`, os `wasip2`, the layer digests, the component's
//! imports and exports) and whose one layer is the component itself,
//! `application/wasm`.
//!
//! Written here rather than with the `oci-wasm` crate: oci-wasm 0.6 is
//! built on oci-client 0.17 (this host speaks 0.18) and wit-component
//! 0.253 (a second wasm toolchain beside wasmtime 48's), and it stamps the
//! config with the clock, so pushing the same component twice would give
//! two digests. The layout is one config of six fields; the config here
//! carries [`source_date_epoch`] instead, so one component gives one
//! manifest digest wherever it is pushed from.

use std::collections::BTreeMap;

use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::Reference;
use serde::{Deserialize, Serialize};

use super::registry::{PushReport, Registry};
use super::{sha256_digest, source_date_epoch, MANIFEST_MEDIA_TYPE, TITLE_ANNOTATION};
use crate::Error;

/// Media type of a wasm artifact's config.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Media type of the component layer.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Manifest annotation: the contract the toolchain implements
/// (`legion:toolchain@0.1.0`).
pub const CONTRACT_ANNOTATION: &str = "org.legion-platform.toolchain.contract";

/// The wasm config (CNCF wasm OCI layout, v0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// RFC 3339 time; [`source_date_epoch`] here, for one digest per
    /// component.
    pub created: String,
    /// Who made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Always `wasm`.
    pub architecture: String,
    /// `wasip2` for a component.
    pub os: String,
    /// The manifest's layer digests, in order.
    pub layer_digests: Vec<String>,
    /// The component's world, flattened.
    pub component: Option<ComponentWorld>,
}

/// What a component imports and exports (interface names with versions,
/// e.g. `legion:toolchain/trainer@0.1.0`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentWorld {
    /// Exported names.
    pub exports: Vec<String>,
    /// Imported names.
    pub imports: Vec<String>,
    /// The world it targets, when known.
    pub target: Option<String>,
}

/// A component packed for a registry: manifest, config, and the wasm.
#[derive(Debug, Clone)]
pub struct Packed {
    /// The manifest's bytes (pushed as they are: its digest is theirs).
    pub manifest: Vec<u8>,
    /// The manifest's digest.
    pub digest: String,
    /// The config's bytes.
    pub config: Vec<u8>,
    /// The config's and the layer's descriptors, as in the manifest.
    pub blobs: [OciDescriptor; 2],
}

/// Packs `wasm` (a component whose world is `world`) with manifest
/// `annotations`.
pub fn pack(
    wasm: &[u8],
    world: ComponentWorld,
    annotations: BTreeMap<String, String>,
) -> Result<Packed, Error> {
    let layer_digest = sha256_digest(wasm);
    let created = chrono_like_rfc3339(source_date_epoch());
    let config = WasmConfig {
        created,
        author: None,
        architecture: "wasm".into(),
        os: "wasip2".into(),
        layer_digests: vec![layer_digest.clone()],
        component: Some(world),
    };
    let config = serde_json::to_vec(&config).map_err(|e| Error::Engine {
        context: "writing a wasm config",
        source: e.into(),
    })?;
    let blobs = [
        OciDescriptor {
            media_type: WASM_CONFIG_MEDIA_TYPE.into(),
            digest: sha256_digest(&config),
            size: config.len() as i64,
            ..Default::default()
        },
        OciDescriptor {
            media_type: WASM_LAYER_MEDIA_TYPE.into(),
            digest: layer_digest,
            size: wasm.len() as i64,
            ..Default::default()
        },
    ];
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        config: blobs[0].clone(),
        layers: vec![blobs[1].clone()],
        subject: None,
        artifact_type: None,
        annotations: (!annotations.is_empty()).then_some(annotations),
    };
    let manifest = serde_json::to_vec(&manifest).map_err(|e| Error::Engine {
        context: "writing a wasm manifest",
        source: e.into(),
    })?;
    Ok(Packed {
        digest: sha256_digest(&manifest),
        manifest,
        config,
        blobs,
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` of seconds since the epoch (civil-from-days,
/// H. Hinnant's algorithm: no date crate for one timestamp).
fn chrono_like_rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Pushes a packed component to `reference`: the blobs the registry
/// lacks, then the manifest.
pub async fn push(
    registry: &Registry,
    wasm: &[u8],
    packed: &Packed,
    reference: &Reference,
) -> Result<PushReport, Error> {
    registry
        .push_bytes(
            &[(&packed.blobs[0], &packed.config), (&packed.blobs[1], wasm)],
            &packed.manifest,
            reference,
        )
        .await
}

/// A component pulled from a registry.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The manifest's digest: what a tag resolved to.
    pub digest: String,
    /// `REGISTRY/REPO@sha256:…`: where it came from, pinned.
    pub pinned: String,
    /// The component's bytes (digest checked while they arrived).
    pub wasm: Vec<u8>,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Pulls the component `reference` names (a tag, resolved once here, or a
/// digest), refusing anything that is not one wasm layer of at most
/// `max_bytes`.
pub async fn pull(
    registry: &Registry,
    reference: &Reference,
    max_bytes: u64,
) -> Result<Pulled, Error> {
    let (bytes, digest) = registry
        .pull_manifest_pinned(reference, &[MANIFEST_MEDIA_TYPE])
        .await?;
    let refuse = |message: String| Error::Registry {
        reference: reference.whole(),
        message,
    };
    let manifest = read_manifest(reference, &bytes)?;
    let layer = match manifest.layers.as_slice() {
        [one] if one.media_type == WASM_LAYER_MEDIA_TYPE => one,
        layers => {
            return Err(refuse(format!(
                "a wasm artifact has one '{WASM_LAYER_MEDIA_TYPE}' layer; this one has {}: {}",
                layers.len(),
                layers
                    .iter()
                    .map(|l| l.media_type.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    if layer.size < 0 || layer.size as u64 > max_bytes {
        return Err(refuse(format!(
            "its component is {} bytes; a toolchain may be {} MiB",
            layer.size,
            max_bytes >> 20
        )));
    }
    let pinned = reference.clone_with_digest(digest.clone());
    let wasm = registry
        .pull_blob_checked(&pinned, layer, max_bytes)
        .await?;
    Ok(Pulled {
        pinned: format!(
            "{}/{}@{digest}",
            reference.registry(),
            reference.repository()
        ),
        digest,
        wasm,
        annotations: manifest.annotations.unwrap_or_default(),
    })
}

/// Reads `bytes` as the manifest of a wasm artifact (`reference` names it
/// in errors): an OCI image manifest whose config is the wasm config.
pub fn read_manifest(reference: &Reference, bytes: &[u8]) -> Result<OciImageManifest, Error> {
    let refuse = |message: String| Error::Registry {
        reference: reference.whole(),
        message,
    };
    let manifest: OciImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| refuse(format!("not an OCI image manifest: {e}")))?;
    if manifest.config.media_type != WASM_CONFIG_MEDIA_TYPE {
        return Err(refuse(format!(
            "not a wasm component: its config is '{}', not '{WASM_CONFIG_MEDIA_TYPE}' (push one with `legion toolchain push` or `wkg oci push`)",
            manifest.config.media_type
        )));
    }
    Ok(manifest)
}

/// The manifest annotations a toolchain is pushed with.
pub fn annotations(
    title: &str,
    version: &str,
    description: &str,
    contract: &str,
) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert(TITLE_ANNOTATION.to_string(), title.to_string());
    if !version.is_empty() {
        a.insert(
            "org.opencontainers.image.version".to_string(),
            version.to_string(),
        );
    }
    if !description.is_empty() {
        a.insert(
            "org.opencontainers.image.description".to_string(),
            description.to_string(),
        );
    }
    a.insert(CONTRACT_ANNOTATION.to_string(), contract.to_string());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(chrono_like_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(chrono_like_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(chrono_like_rfc3339(1_795_784_740), "2026-11-27T13:05:40Z");
    }

    #[test]
    fn one_component_packs_to_one_digest_in_the_wasm_layout() {
        let wasm = b"\0asm\x0d\0\x01\0".to_vec();
        let world = ComponentWorld {
            exports: vec!["legion:toolchain/trainer@0.1.0".into()],
            imports: vec!["legion:toolchain/host@0.1.0".into()],
            target: None,
        };
        let a = pack(&wasm, world.clone(), annotations("t", "1", "", "c")).unwrap();
        let b = pack(&wasm, world, annotations("t", "1", "", "c")).unwrap();
        assert_eq!(a.digest, b.digest);
        let m: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(m["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE);
        assert_eq!(m["layers"][0]["mediaType"], WASM_LAYER_MEDIA_TYPE);
        assert_eq!(m["layers"][0]["digest"], sha256_digest(&wasm));
        assert_eq!(m["annotations"][CONTRACT_ANNOTATION], "c");
        let c: serde_json::Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(c["architecture"], "wasm");
        assert_eq!(c["os"], "wasip2");
        assert_eq!(c["layerDigests"][0], sha256_digest(&wasm));
        assert_eq!(
            c["component"]["exports"][0],
            "legion:toolchain/trainer@0.1.0"
        );
        assert!(c["component"]["target"].is_null());
    }
}
