//! Runnable images: a base image, resolved once to a digest, plus layers,
//! composed into an OCI image config and manifest.
//!
//! The config is written with Legion's own types ([`ImageConfig`]): the
//! image-spec types of `oci-spec` (and `oci-client`, which re-uses them)
//! keep labels and exposed ports in `HashMap`s, whose serialisation order
//! changes from process to process, so a config written with them would
//! not have a reproducible digest. Ours keeps every map in a `BTreeMap`,
//! and the creation time is `SOURCE_DATE_EPOCH` (or the epoch), never the
//! clock: identical inputs give identical bytes.
//!
//! Bases may use OCI or Docker v2 media types; a Docker gzip layer is the
//! same bytes as an OCI gzip layer, so base layers keep their digests and
//! the manifest is always OCI.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_client::manifest::{OciDescriptor, OciImageManifest};
use serde::{Deserialize, Serialize};

use super::layout::Layout;
use super::{LAYER_GZIP_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::Error;

/// Media type of an OCI image config.
pub const IMAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Docker v2 image manifest.
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (multi-platform).
pub const DOCKER_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image index (multi-platform).
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Annotation: the base image's name.
pub const BASE_NAME_ANNOTATION: &str = "org.opencontainers.image.base.name";
/// Annotation: the base image's manifest digest.
pub const BASE_DIGEST_ANNOTATION: &str = "org.opencontainers.image.base.digest";
/// Label naming the image (the packager's image name).
pub const REF_NAME_LABEL: &str = "org.opencontainers.image.ref.name";

/// `{}` in a JSON map (exposed ports, volumes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// What a container runs with (the config's `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// User (`uid[:gid]` or a name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `port/proto` keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    /// `NAME=value` lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Empty>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Signal that stops the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

/// The layers' uncompressed digests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// One per layer, in order.
    pub diff_ids: Vec<String>,
}

/// One history entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// What made the layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// A comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the entry made no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// An image config (OCI image-spec `config.json`); Docker v2 configs read
/// into it too (their extra fields are dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Creation time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// How a container runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    /// Layer diff ids.
    pub rootfs: RootFs,
    /// History.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

impl ImageConfig {
    /// The value of `name` in the config's environment.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.config
            .as_ref()?
            .env
            .as_ref()?
            .iter()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
    }
}

/// Where a base image's blobs are.
#[derive(Debug, Clone)]
pub enum BaseSource {
    /// In a registry.
    Registry(oci_client::Reference),
    /// In an OCI image layout folder (`oci:DIR:TAG`).
    Layout(Layout),
}

/// A base image resolved to a digest.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// The reference as given.
    pub name: String,
    /// Where its blobs are.
    pub source: BaseSource,
    /// Manifest digest (of the platform's manifest when the name was an index).
    pub digest: String,
    /// Its config.
    pub config: ImageConfig,
    /// Its layers, with OCI media types.
    pub layers: Vec<OciDescriptor>,
}

/// Parses `oci:DIR:NAME` (skopeo's spelling of a layout reference: the
/// folder ends at the first `:`, the name may hold more).
pub fn parse_layout_reference(text: &str) -> Option<(PathBuf, String)> {
    let rest = text.strip_prefix("oci:")?;
    let (dir, tag) = rest.split_once(':')?;
    (!dir.is_empty() && !tag.is_empty()).then(|| (PathBuf::from(dir), tag.to_string()))
}

/// Reads a manifest's bytes as an image manifest, turning Docker v2 media
/// types into their OCI equivalents (same bytes, same digests). Refuses
/// layer types no runtime can unpack from a registry the same way.
pub fn normalise_manifest(bytes: &[u8], what: &str) -> Result<OciImageManifest, String> {
    let mut m: OciImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| format!("{what} is not an image manifest: {e}"))?;
    match m.media_type.as_deref() {
        None | Some(MANIFEST_MEDIA_TYPE) | Some(DOCKER_MANIFEST_MEDIA_TYPE) => {}
        Some(other) => {
            return Err(format!(
                "{what} has media type {other}, not an image manifest"
            ))
        }
    }
    if m.config.media_type == DOCKER_CONFIG_MEDIA_TYPE {
        m.config.media_type = IMAGE_CONFIG_MEDIA_TYPE.to_string();
    }
    if m.config.media_type != IMAGE_CONFIG_MEDIA_TYPE {
        return Err(format!(
            "{what} is an artifact ({}), not a runnable image",
            m.config.media_type
        ));
    }
    for l in &mut m.layers {
        l.media_type = match l.media_type.as_str() {
            DOCKER_LAYER_GZIP | LAYER_GZIP_MEDIA_TYPE => LAYER_GZIP_MEDIA_TYPE.to_string(),
            DOCKER_LAYER_TAR | OCI_LAYER_TAR => OCI_LAYER_TAR.to_string(),
            OCI_LAYER_ZSTD => OCI_LAYER_ZSTD.to_string(),
            other => return Err(format!("{what} has a layer of unknown type {other}")),
        };
    }
    m.media_type = Some(MANIFEST_MEDIA_TYPE.to_string());
    Ok(m)
}

/// Picks the linux/amd64 manifest of an index (OCI or Docker list).
pub fn pick_platform(index_bytes: &[u8], what: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Platform {
        architecture: String,
        os: String,
    }
    #[derive(Deserialize)]
    struct Entry {
        digest: String,
        platform: Option<Platform>,
    }
    #[derive(Deserialize)]
    struct Index {
        manifests: Vec<Entry>,
    }
    let index: Index = serde_json::from_slice(index_bytes)
        .map_err(|e| format!("{what}: not an image index: {e}"))?;
    index
        .manifests
        .into_iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .map(|m| m.digest)
        .ok_or_else(|| format!("{what} has no linux/amd64 image"))
}

impl BaseImage {
    /// Resolves a base held in a local image layout (`oci:DIR:TAG`).
    pub fn from_layout(name: &str, dir: &Path, tag: &str) -> Result<Self, Error> {
        let bad = |message: String| Error::BaseImage {
            base: name.to_string(),
            message,
        };
        if !dir.join("oci-layout").is_file() {
            return Err(bad(format!("{} is not an OCI image layout", dir.display())));
        }
        let layout = Layout::open(dir)?;
        let desc = layout
            .resolve(tag)?
            .ok_or_else(|| bad(format!("no image tagged '{tag}' in {}", dir.display())))?;
        let mut bytes = layout.read_blob(&desc.digest)?;
        let mut digest = desc.digest.clone();
        if matches!(
            desc.media_type.as_str(),
            OCI_INDEX_MEDIA_TYPE | DOCKER_LIST_MEDIA_TYPE
        ) {
            digest = pick_platform(&bytes, name).map_err(bad)?;
            bytes = layout.read_blob(&digest)?;
        }
        let manifest = normalise_manifest(&bytes, name).map_err(bad)?;
        let config_bytes = layout.read_blob(&manifest.config.digest)?;
        Self::new(
            name,
            BaseSource::Layout(layout),
            digest,
            manifest,
            &config_bytes,
        )
    }

    /// A base from its manifest and config bytes.
    pub fn new(
        name: &str,
        source: BaseSource,
        digest: String,
        manifest: OciImageManifest,
        config_bytes: &[u8],
    ) -> Result<Self, Error> {
        let bad = |message: String| Error::BaseImage {
            base: name.to_string(),
            message,
        };
        let config: ImageConfig = serde_json::from_slice(config_bytes)
            .map_err(|e| bad(format!("its config is not an image config: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(bad(format!(
                "its config lists {} layers but its manifest {}",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        if config.os != "linux" {
            return Err(bad(format!("it is a {} image, not linux", config.os)));
        }
        Ok(BaseImage {
            name: name.to_string(),
            source,
            digest,
            layers: manifest.layers,
            config,
        })
    }

    /// The Python version the base names in its config (`PYTHON_VERSION`,
    /// as the official python images set it), as `major.minor`.
    pub fn python_from_config(&self) -> Option<String> {
        major_minor(self.config.env("PYTHON_VERSION")?)
    }

    /// The pip platform tags for the base's architecture: wheels for glibc
    /// 2.28 down to 2.17 (manylinux2014). Current numpy, scipy and
    /// scikit-learn publish `manylinux_2_28` wheels only, so a base needs
    /// glibc 2.28 or newer (Debian 10+, Ubuntu 20.04+, RHEL 8+: every
    /// maintained python image).
    pub fn pip_platforms(&self) -> Result<&'static [&'static str], Error> {
        match self.config.architecture.as_str() {
            "amd64" => Ok(&["manylinux_2_28_x86_64", "manylinux2014_x86_64"]),
            "arm64" => Ok(&["manylinux_2_28_aarch64", "manylinux2014_aarch64"]),
            other => Err(Error::BaseImage {
                base: self.name.clone(),
                message: format!("no Python wheels platform for architecture {other}"),
            }),
        }
    }
}

/// `3.11.2` -> `3.11`.
pub fn major_minor(version: &str) -> Option<String> {
    let mut parts = version.trim().split('.');
    let (major, minor) = (parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    (digits(major) && digits(minor)).then(|| format!("{major}.{minor}"))
}

/// Looks for a Python standard library (`usr/lib/python3.N/os.py` or
/// `usr/local/lib/python3.N/os.py`) in gzip'd layer blobs; returns `3.N`.
/// Used when the base's config does not name its Python version.
pub fn python_in_layers(blobs: &[PathBuf]) -> Result<Option<String>, Error> {
    let mut found = None;
    for blob in blobs {
        let file = std::fs::File::open(blob).map_err(|e| Error::io(blob, e))?;
        let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(
            std::io::BufReader::new(file),
        ));
        for entry in archive.entries().map_err(|e| Error::io(blob, e))? {
            let entry = entry.map_err(|e| Error::io(blob, e))?;
            let path = entry.path().map_err(|e| Error::io(blob, e))?;
            let text = path.to_string_lossy();
            let text = text.trim_start_matches("./").trim_start_matches('/');
            let lib = text
                .strip_prefix("usr/local/lib/")
                .or_else(|| text.strip_prefix("usr/lib/"));
            if let Some(version) = lib
                .and_then(|rest| rest.strip_suffix("/os.py"))
                .and_then(|v| v.strip_prefix("python"))
                .and_then(major_minor)
            {
                found = Some(version);
            }
        }
    }
    Ok(found)
}

/// A layer Legion adds on top of the base.
#[derive(Debug, Clone)]
pub struct NewLayer {
    /// Its descriptor (gzip'd tar).
    pub desc: OciDescriptor,
    /// Uncompressed digest.
    pub diff_id: String,
    /// What made it, for the history.
    pub created_by: String,
}

/// The runtime settings of the new image.
#[derive(Debug, Clone, Default)]
pub struct ImageSettings {
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Default arguments.
    pub cmd: Vec<String>,
    /// Environment, applied over the base's in order.
    pub env: Vec<(String, String)>,
    /// Ports (TCP).
    pub exposed_ports: Vec<u16>,
    /// Labels, over the base's.
    pub labels: BTreeMap<String, String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// User.
    pub user: Option<String>,
}

/// The creation time images carry: `SOURCE_DATE_EPOCH` (seconds), or the
/// epoch, as RFC 3339.
pub fn creation_time() -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(super::source_date_epoch());
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A composed image: config and manifest bytes.
#[derive(Debug, Clone)]
pub struct ComposedImage {
    /// The config.
    pub config: Vec<u8>,
    /// The manifest.
    pub manifest: Vec<u8>,
    /// The manifest's digest.
    pub digest: String,
    /// Every blob the manifest names (config first).
    pub blobs: Vec<OciDescriptor>,
}

/// Composes `base` + `layers` with `settings` into a config and manifest.
pub fn compose(
    base: &BaseImage,
    layers: &[NewLayer],
    settings: &ImageSettings,
) -> Result<ComposedImage, Error> {
    let created = creation_time();
    let mut config = base.config.clone();
    config.created = Some(created.clone());
    config.author = None;
    let mut run = config.config.take().unwrap_or_default();
    let mut env = run.env.take().unwrap_or_default();
    for (k, v) in &settings.env {
        let line = format!("{k}={v}");
        match env
            .iter_mut()
            .find(|l| l.split_once('=').map(|(n, _)| n) == Some(k.as_str()))
        {
            Some(existing) => *existing = line,
            None => env.push(line),
        }
    }
    run.env = (!env.is_empty()).then_some(env);
    if !settings.entrypoint.is_empty() {
        // A new entrypoint drops the base's default arguments, as a
        // Dockerfile's ENTRYPOINT does.
        run.entrypoint = Some(settings.entrypoint.clone());
        run.cmd = None;
    }
    if !settings.cmd.is_empty() {
        run.cmd = Some(settings.cmd.clone());
    }
    let mut ports = run.exposed_ports.take().unwrap_or_default();
    for p in &settings.exposed_ports {
        ports.insert(format!("{p}/tcp"), Empty {});
    }
    run.exposed_ports = (!ports.is_empty()).then_some(ports);
    let mut labels = run.labels.take().unwrap_or_default();
    labels.extend(settings.labels.clone());
    run.labels = (!labels.is_empty()).then_some(labels);
    if settings.working_dir.is_some() {
        run.working_dir = settings.working_dir.clone();
    }
    if settings.user.is_some() {
        run.user = settings.user.clone();
    }
    config.config = Some(run);
    config.rootfs.kind = "layers".to_string();
    for l in layers {
        config.rootfs.diff_ids.push(l.diff_id.clone());
        config.history.push(History {
            created: Some(created.clone()),
            created_by: Some(l.created_by.clone()),
            comment: Some("legion package".to_string()),
            empty_layer: false,
        });
    }
    let config_bytes = serde_json::to_vec(&config).map_err(|e| Error::BaseImage {
        base: base.name.clone(),
        message: format!("cannot write the image config: {e}"),
    })?;
    let config_desc = OciDescriptor {
        media_type: IMAGE_CONFIG_MEDIA_TYPE.to_string(),
        digest: super::sha256_digest(&config_bytes),
        size: config_bytes.len() as i64,
        urls: None,
        annotations: None,
        artifact_type: None,
    };
    let mut all_layers = base.layers.clone();
    all_layers.extend(layers.iter().map(|l| l.desc.clone()));
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_string()),
        config: config_desc.clone(),
        layers: all_layers.clone(),
        subject: None,
        artifact_type: None,
        annotations: Some(BTreeMap::from([
            (BASE_NAME_ANNOTATION.to_string(), base.name.clone()),
            (BASE_DIGEST_ANNOTATION.to_string(), base.digest.clone()),
        ])),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| Error::BaseImage {
        base: base.name.clone(),
        message: format!("cannot write the image manifest: {e}"),
    })?;
    let mut blobs = vec![config_desc];
    blobs.extend(all_layers);
    Ok(ComposedImage {
        digest: super::sha256_digest(&manifest_bytes),
        config: config_bytes,
        manifest: manifest_bytes,
        blobs,
    })
}

/// Reads an image (manifest and config) stored in a layout.
pub fn read_image(layout: &Layout, digest: &str) -> Result<(OciImageManifest, ImageConfig), Error> {
    let path = layout.blob_path(digest);
    let manifest: OciImageManifest =
        serde_json::from_slice(&layout.read_blob(digest)?).map_err(|source| Error::NotOci {
            path: path.clone(),
            what: "an image manifest",
            source,
        })?;
    let mut text = String::new();
    let cpath = layout.blob_path(&manifest.config.digest);
    std::fs::File::open(&cpath)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| Error::io(&cpath, e))?;
    let config: ImageConfig = serde_json::from_str(&text).map_err(|source| Error::NotOci {
        path: cpath,
        what: "an image config",
        source,
    })?;
    Ok((manifest, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(config: &str) -> BaseImage {
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(DOCKER_MANIFEST_MEDIA_TYPE.into()),
            config: OciDescriptor {
                media_type: DOCKER_CONFIG_MEDIA_TYPE.into(),
                digest: "sha256:c".into(),
                size: 1,
                ..Default::default()
            },
            layers: vec![OciDescriptor {
                media_type: DOCKER_LAYER_GZIP.into(),
                digest: "sha256:l".into(),
                size: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let manifest = normalise_manifest(&bytes, "base").unwrap();
        BaseImage::new(
            "base",
            BaseSource::Layout(Layout::open(tempfile::tempdir().unwrap().keep()).unwrap()),
            "sha256:b".into(),
            manifest,
            config.as_bytes(),
        )
        .unwrap()
    }

    const DOCKER_CONFIG: &str = r#"{"architecture":"amd64","os":"linux","container_config":{"Hostname":"x"},
        "config":{"Env":["PATH=/usr/bin","PYTHON_VERSION=3.11.9"],"Cmd":["python3"],"Labels":null,"ExposedPorts":null},
        "rootfs":{"type":"layers","diff_ids":["sha256:d"]}}"#;

    #[test]
    fn docker_bases_are_read_and_python_comes_from_the_config() {
        let b = base(DOCKER_CONFIG);
        assert_eq!(b.layers[0].media_type, LAYER_GZIP_MEDIA_TYPE);
        assert_eq!(b.python_from_config().as_deref(), Some("3.11"));
        assert_eq!(b.pip_platforms().unwrap()[1], "manylinux2014_x86_64");
    }

    #[test]
    fn composing_is_deterministic_and_merges_over_the_base() {
        let b = base(DOCKER_CONFIG);
        let layer = NewLayer {
            desc: OciDescriptor {
                media_type: LAYER_GZIP_MEDIA_TYPE.into(),
                digest: "sha256:n".into(),
                size: 2,
                ..Default::default()
            },
            diff_id: "sha256:nd".into(),
            created_by: "model".into(),
        };
        let mut settings = ImageSettings {
            entrypoint: vec!["/serve".into()],
            env: vec![("PATH".into(), "/opt/bin".into()), ("A".into(), "1".into())],
            exposed_ports: vec![8080],
            working_dir: Some("/w".into()),
            user: Some("1000:1000".into()),
            ..Default::default()
        };
        for i in 0..20 {
            settings.labels.insert(format!("l{i}"), i.to_string());
        }
        let one = compose(&b, std::slice::from_ref(&layer), &settings).unwrap();
        let two = compose(&b, &[layer], &settings).unwrap();
        assert_eq!(one.manifest, two.manifest);
        assert_eq!(one.digest, two.digest);
        let c: ImageConfig = serde_json::from_slice(&one.config).unwrap();
        let run = c.config.as_ref().unwrap();
        assert_eq!(
            run.env.as_deref().unwrap(),
            ["PATH=/opt/bin", "PYTHON_VERSION=3.11.9", "A=1"]
        );
        assert_eq!(run.cmd, None, "the base's Cmd goes with a new entrypoint");
        assert_eq!(c.rootfs.diff_ids, ["sha256:d", "sha256:nd"]);
        assert!(run.exposed_ports.as_ref().unwrap().contains_key("8080/tcp"));
        assert_eq!(one.blobs.len(), 3);
    }

    #[test]
    fn artifacts_and_indexes_are_told_apart() {
        let artifact = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.legion.model.config.v1+json","digest":"sha256:a","size":1},"layers":[]}"#;
        assert!(normalise_manifest(artifact, "m")
            .unwrap_err()
            .contains("artifact"));
        let index = br#"{"schemaVersion":2,"manifests":[
            {"mediaType":"x","digest":"sha256:arm","size":1,"platform":{"architecture":"arm64","os":"linux"}},
            {"mediaType":"x","digest":"sha256:amd","size":1,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
        assert_eq!(pick_platform(index, "i").unwrap(), "sha256:amd");
        assert_eq!(major_minor("3.12.1").as_deref(), Some("3.12"));
        assert_eq!(major_minor("3"), None);
        assert_eq!(
            parse_layout_reference("oci:/a/b:wine:1"),
            Some((PathBuf::from("/a/b"), "wine:1".to_string()))
        );
        assert!(parse_layout_reference("127.0.0.1:5000/x:y").is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Manifests, indexes and configs come from registries: any bytes
        /// give an answer or an error, never a panic.
        #[test]
        fn registry_documents_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
                                          json in "\\{(\"[a-zA-Z]{1,12}\":(\\[\\]|\\{\\}|\"[a-z0-9:.]{0,20}\"|[0-9]{1,3}|null),?){0,8}\\}") {
            for input in [bytes.as_slice(), json.as_bytes()] {
                let _ = normalise_manifest(input, "m");
                let _ = pick_platform(input, "i");
                let _ = serde_json::from_slice::<ImageConfig>(input);
            }
        }

        /// Base layers are untrusted tarballs: garbage is an error.
        #[test]
        fn layer_scans_of_garbage_are_errors_not_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let dir = tempfile::tempdir().unwrap();
            let blob = dir.path().join("blob");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, &bytes).unwrap();
            for contents in [bytes.clone(), gz.finish().unwrap()] {
                std::fs::write(&blob, &contents).unwrap();
                let _ = python_in_layers(std::slice::from_ref(&blob));
            }
        }
    }

    #[test]
    fn python_is_found_in_a_layer() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("usr/local/lib/python3.12")).unwrap();
        std::fs::write(tree.join("usr/local/lib/python3.12/os.py"), "").unwrap();
        let blob = super::super::layer::build_layer(&tree, "", &dir.path().join("tmp")).unwrap();
        assert_eq!(
            python_in_layers(&[blob.file.path().to_path_buf()])
                .unwrap()
                .as_deref(),
            Some("3.12")
        );
    }
}
