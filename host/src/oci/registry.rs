//! Pushing layout content to a registry and pulling it back (oci-client).
//!
//! Blobs the registry already has are skipped, so re-pushing a model (or an
//! image reusing its layer) moves only what is new. The manifest is pushed
//! as the exact bytes stored in the layout, so its digest is the same in
//! both places.

use std::str::FromStr;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::image::{
    normalise_manifest, pick_platform, BaseImage, BaseSource, DOCKER_LIST_MEDIA_TYPE,
    DOCKER_MANIFEST_MEDIA_TYPE, OCI_INDEX_MEDIA_TYPE,
};
use super::layout::Layout;
use super::MANIFEST_MEDIA_TYPE;
use crate::Error;

/// What a push moved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    /// Where it went, `registry/repository:tag`.
    pub reference: String,
    /// Manifest digest.
    pub digest: String,
    /// Blobs uploaded.
    pub blobs_pushed: usize,
    /// Blobs the registry already had.
    pub blobs_skipped: usize,
    /// Blobs mounted from another repository of the same registry.
    pub blobs_mounted: usize,
    /// Bytes uploaded.
    pub bytes_pushed: u64,
    /// Bytes not uploaded: skipped or mounted.
    pub bytes_skipped: u64,
}

/// Whether `REGISTRY/REPO[:TAG|@DIGEST]` text names a tag or digest itself.
pub fn names_tag(text: &str) -> bool {
    text.rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':') || last.contains('@'))
}

/// Parses `REGISTRY/REPO[:TAG]`, with `default_tag` when none is given.
pub fn parse_reference(text: &str, default_tag: &str) -> Result<Reference, Error> {
    let bad = |message: String| Error::InvalidArgument {
        field: "--push".into(),
        message,
    };
    let full = if names_tag(text) {
        text.to_string()
    } else {
        format!("{text}:{default_tag}")
    };
    let reference = Reference::from_str(&full)
        .map_err(|e| bad(format!("'{text}' is not REGISTRY/REPOSITORY[:TAG]: {e}")))?;
    if !text.contains('/') {
        return Err(bad(format!("'{text}' names no registry: use REGISTRY/REPOSITORY[:TAG], e.g. 127.0.0.1:5000/models/wine")));
    }
    Ok(reference)
}

/// A registry client. Registries on loopback, and those listed in
/// `LEGION_INSECURE_REGISTRIES` (comma-separated `host:port`), are spoken
/// to over plain HTTP; credentials come from `LEGION_REGISTRY_USERNAME` and
/// `LEGION_REGISTRY_PASSWORD` when set.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
}

impl Registry {
    /// A client for `reference`'s registry.
    pub fn for_reference(reference: &Reference) -> Self {
        let host = reference.resolve_registry().to_string();
        let mut insecure: Vec<String> = std::env::var("LEGION_INSECURE_REGISTRIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let loopback =
            host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
        if loopback {
            insecure.push(host);
        }
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure),
            // One streamed PUT per blob: chunked PATCHes cost a round trip per
            // MiB (2.3x slower for a 100 MB model on loopback).
            use_monolithic_push: true,
            // A registry that does not answer fails the call, not hangs it
            // (a name a caller gave may point anywhere).
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(120)),
            ..ClientConfig::default()
        };
        let auth = match (
            std::env::var("LEGION_REGISTRY_USERNAME"),
            std::env::var("LEGION_REGISTRY_PASSWORD"),
        ) {
            (Ok(u), Ok(p)) => RegistryAuth::Basic(u, p),
            _ => RegistryAuth::Anonymous,
        };
        Registry {
            client: Client::new(config),
            auth,
        }
    }

    fn err(reference: &Reference, e: OciDistributionError) -> Error {
        Error::Registry {
            reference: reference.whole(),
            message: e.to_string(),
        }
    }

    /// Pulls `reference` (manifest, config, layers) into `layout`, naming it
    /// `reference` there too; blobs already present are not fetched again.
    /// Every blob is checked against its digest before it is stored.
    pub async fn pull(&self, layout: &Layout, reference: &Reference) -> Result<String, Error> {
        let (bytes, _) = self
            .pull_manifest_pinned(reference, &[MANIFEST_MEDIA_TYPE])
            .await?;
        let manifest: OciImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::Registry {
                reference: reference.whole(),
                message: format!("not an OCI image manifest: {e}"),
            })?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            self.fetch_blob(layout, reference, blob).await?;
        }
        let desc = layout.put_manifest(&bytes, &reference.whole(), Default::default())?;
        Ok(desc.digest)
    }

    /// Fetches one blob of `reference` into `layout` unless it is there,
    /// checking its digest before it is stored.
    pub async fn fetch_blob(
        &self,
        layout: &Layout,
        reference: &Reference,
        blob: &OciDescriptor,
    ) -> Result<(), Error> {
        if layout.has_blob(&blob.digest) {
            return Ok(());
        }
        let tmp_dir = layout.root().join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(|e| Error::io(&tmp_dir, e))?;
        let tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(|e| Error::io(&tmp_dir, e))?;
        let file = tokio::fs::File::from_std(tmp.reopen().map_err(|e| Error::io(tmp.path(), e))?);
        self.client
            .pull_blob(reference, blob, file)
            .await
            .map_err(|e| Error::Registry {
                reference: reference.whole(),
                message: format!("blob {}: {e}", blob.digest),
            })?;
        let path = tmp.path().to_path_buf();
        let got = tokio::task::spawn_blocking(move || file_digest(&path))
            .await
            .map_err(|e| Error::Registry {
                reference: reference.whole(),
                message: format!("checking blob {}: {e}", blob.digest),
            })??;
        if got != blob.digest {
            return Err(Error::Registry {
                reference: reference.whole(),
                message: format!(
                    "blob {} arrived with digest {got}; nothing was stored",
                    blob.digest
                ),
            });
        }
        layout.put_blob_file(tmp, &blob.digest)
    }

    /// The manifest `reference` names (one of `accepted`) and its digest,
    /// computed from the bytes; a reference pinned by digest must get
    /// exactly that manifest.
    pub async fn pull_manifest_pinned(
        &self,
        reference: &Reference,
        accepted: &[&str],
    ) -> Result<(Vec<u8>, String), Error> {
        self.pull_manifest_if_any(reference, accepted)
            .await?
            .ok_or_else(|| Error::Registry {
                reference: reference.whole(),
                message: "the registry has no such manifest".into(),
            })
    }

    /// [`Self::pull_manifest_pinned`], with `None` when the registry says
    /// it has no such manifest or repository — and an error for anything
    /// else (unreachable, refused), never taken for "none".
    pub async fn pull_manifest_if_any(
        &self,
        reference: &Reference,
        accepted: &[&str],
    ) -> Result<Option<(Vec<u8>, String)>, Error> {
        self.client
            .auth(reference, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| Self::err(reference, e))?;
        let bytes = match self
            .client
            .pull_manifest_raw(reference, &self.auth, accepted)
            .await
        {
            Ok((bytes, _)) => bytes,
            Err(OciDistributionError::ImageManifestNotFoundError(_)) => return Ok(None),
            Err(OciDistributionError::RegistryError { envelope, .. })
                if envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        oci_client::errors::OciErrorCode::ManifestUnknown
                            | oci_client::errors::OciErrorCode::NameUnknown
                    )
                }) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(Self::err(reference, e)),
        };
        let digest = super::sha256_digest(&bytes);
        if let Some(pinned) = reference.digest() {
            if pinned != digest {
                return Err(Error::Registry {
                    reference: reference.whole(),
                    message: format!("the registry sent a manifest with digest {digest}"),
                });
            }
        }
        Ok(Some((bytes.to_vec(), digest)))
    }

    /// Fetches blob `blob` into memory, hashing it as it arrives: more than
    /// its descriptor's size (or `max` bytes), or bytes of another digest,
    /// and nothing is returned.
    pub async fn pull_blob_checked(
        &self,
        reference: &Reference,
        blob: &OciDescriptor,
        max: u64,
    ) -> Result<Vec<u8>, Error> {
        use sha2::Digest;
        let fail = |message: String| Error::Registry {
            reference: reference.whole(),
            message: format!("blob {}: {message}", blob.digest),
        };
        let expected = (blob.size.max(0) as u64).min(max);
        let mut stream = self
            .client
            .pull_blob_stream(reference, blob)
            .await
            .map_err(|e| fail(e.to_string()))?
            .stream;
        let mut hash = sha2::Sha256::new();
        let mut out = Vec::with_capacity(expected as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| fail(e.to_string()))?;
            if (out.len() + chunk.len()) as u64 > expected {
                return Err(fail(format!(
                    "more than the {expected} bytes its descriptor gives"
                )));
            }
            hash.update(&chunk);
            out.extend_from_slice(&chunk);
        }
        let got = format!("sha256:{}", hex::encode(hash.finalize()));
        if got != blob.digest || out.len() as u64 != expected {
            return Err(fail(format!(
                "arrived as {} bytes with digest {got}; nothing was kept",
                out.len()
            )));
        }
        Ok(out)
    }

    /// The referrers of the manifest `pinned` (a reference by digest) of
    /// `artifact_type`: the referrers API, else its tag schema.
    pub async fn referrers(
        &self,
        pinned: &Reference,
        artifact_type: &str,
    ) -> Result<oci_client::manifest::OciImageIndex, Error> {
        self.client
            .auth(pinned, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| Self::err(pinned, e))?;
        self.client
            .pull_referrers(pinned, Some(artifact_type))
            .await
            .map_err(|e| Self::err(pinned, e))
    }

    /// Pushes manifest bytes of `content_type` to `reference` as they are.
    pub async fn push_raw_manifest(
        &self,
        reference: &Reference,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<(), Error> {
        self.client
            .auth(reference, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| Self::err(reference, e))?;
        self.client
            .push_manifest_raw(
                reference,
                bytes,
                http::HeaderValue::from_static(content_type),
            )
            .await
            .map_err(|e| Self::err(reference, e))?;
        Ok(())
    }

    /// The digest of the manifest `reference` names, or `None` when the
    /// registry has no such tag (the manifest's bytes are hashed here).
    pub async fn manifest_digest(&self, reference: &Reference) -> Result<Option<String>, Error> {
        Ok(self
            .pull_manifest_if_any(reference, &[MANIFEST_MEDIA_TYPE])
            .await?
            .map(|(_, digest)| digest))
    }

    /// Resolves a base image in this registry to a digest: its manifest
    /// (the linux/amd64 one of an index) and config; no layer is fetched.
    pub async fn resolve_image(
        &self,
        name: &str,
        reference: &Reference,
    ) -> Result<BaseImage, Error> {
        let bad = |message: String| Error::BaseImage {
            base: name.to_string(),
            message,
        };
        self.client
            .auth(reference, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| bad(e.to_string()))?;
        let accepted = [
            MANIFEST_MEDIA_TYPE,
            DOCKER_MANIFEST_MEDIA_TYPE,
            OCI_INDEX_MEDIA_TYPE,
            DOCKER_LIST_MEDIA_TYPE,
        ];
        let (mut bytes, _) = self
            .client
            .pull_manifest_raw(reference, &self.auth, &accepted)
            .await
            .map_err(|e| bad(e.to_string()))?;
        let mut digest = super::sha256_digest(&bytes);
        if let Some(pinned) = reference.digest() {
            if pinned != digest {
                return Err(bad(format!(
                    "the registry sent a manifest with digest {digest}"
                )));
            }
        }
        let is_index = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .is_some_and(|v| v.get("manifests").is_some());
        let mut pinned = reference.clone();
        if is_index {
            digest = pick_platform(&bytes, name).map_err(bad)?;
            pinned = reference.clone_with_digest(digest.clone());
            let (b, _) = self
                .client
                .pull_manifest_raw(&pinned, &self.auth, &accepted)
                .await
                .map_err(|e| bad(e.to_string()))?;
            if super::sha256_digest(&b) != digest {
                return Err(bad(format!(
                    "the registry sent a manifest not matching {digest}"
                )));
            }
            bytes = b;
        }
        let manifest = normalise_manifest(&bytes, name).map_err(bad)?;
        let mut config = Vec::new();
        self.client
            .pull_blob(&pinned, &manifest.config, &mut config)
            .await
            .map_err(|e| bad(format!("its config: {e}")))?;
        if super::sha256_digest(&config) != manifest.config.digest {
            return Err(bad(format!(
                "its config arrived with a digest other than {}",
                manifest.config.digest
            )));
        }
        let pinned = reference.clone_with_digest(digest.clone());
        BaseImage::new(
            name,
            BaseSource::Registry(pinned),
            digest,
            manifest,
            &config,
        )
    }

    /// Pushes an artifact made in memory: `blobs` (each descriptor with its
    /// bytes) the registry lacks, then `manifest` to `reference`. The
    /// upload path reads blobs from a layout; a scratch one holds them.
    pub async fn push_bytes(
        &self,
        blobs: &[(&OciDescriptor, &[u8])],
        manifest: &[u8],
        reference: &Reference,
    ) -> Result<PushReport, Error> {
        let scratch = tempfile::tempdir().map_err(|e| Error::io(&std::env::temp_dir(), e))?;
        let layout = Layout::open(scratch.path())?;
        for (_, bytes) in blobs {
            layout.put_blob(bytes)?;
        }
        let descriptors: Vec<OciDescriptor> = blobs.iter().map(|(d, _)| (*d).clone()).collect();
        self.push_manifest(&layout, &descriptors, manifest, reference, None, &|_| {})
            .await
    }

    /// Pushes the manifest `digest` from `layout`, with its config and
    /// layers, to `reference`.
    pub async fn push(
        &self,
        layout: &Layout,
        digest: &str,
        reference: &Reference,
    ) -> Result<PushReport, Error> {
        let manifest_bytes = layout.read_blob(digest)?;
        let manifest: OciImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(|source| Error::NotOci {
                path: layout.blob_path(digest),
                what: "an OCI manifest",
                source,
            })?;
        let blobs: Vec<_> = std::iter::once(manifest.config.clone())
            .chain(manifest.layers.iter().cloned())
            .collect();
        self.push_manifest(layout, &blobs, &manifest_bytes, reference, None, &|_| {})
            .await
    }

    /// Pushes `blobs` and then the manifest `manifest_bytes` to `reference`.
    /// A blob the registry has is skipped; one that only `base` has is
    /// mounted from the base's repository when both are in the same
    /// registry, else fetched into `layout` (digest checked) and uploaded.
    /// Uploads run a few at a time. The manifest goes last, so a failure
    /// leaves no tag pointing at a half-pushed image.
    pub async fn push_manifest(
        &self,
        layout: &Layout,
        blobs: &[OciDescriptor],
        manifest_bytes: &[u8],
        reference: &Reference,
        base: Option<&BaseBlobs>,
        progress: &(dyn Fn(&BlobPushed) + Send + Sync),
    ) -> Result<PushReport, Error> {
        self.client
            .auth(reference, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| Self::err(reference, e))?;
        let digest = super::sha256_digest(manifest_bytes);
        let results: Vec<Result<BlobPushed, Error>> = futures_util::stream::iter(blobs)
            .map(|blob| async move {
                let outcome = self.push_blob(layout, blob, reference, base).await?;
                let done = BlobPushed {
                    digest: blob.digest.clone(),
                    size: blob.size.max(0) as u64,
                    outcome,
                };
                progress(&done);
                Ok(done)
            })
            .buffer_unordered(PARALLEL_UPLOADS)
            .collect()
            .await;
        let mut report = PushReport {
            reference: reference.whole(),
            digest: digest.clone(),
            blobs_pushed: 0,
            blobs_skipped: 0,
            blobs_mounted: 0,
            bytes_pushed: 0,
            bytes_skipped: 0,
        };
        for r in results {
            let b = r?;
            match b.outcome {
                BlobOutcome::Uploaded => {
                    report.blobs_pushed += 1;
                    report.bytes_pushed += b.size;
                }
                BlobOutcome::Present => {
                    report.blobs_skipped += 1;
                    report.bytes_skipped += b.size;
                }
                BlobOutcome::Mounted => {
                    report.blobs_mounted += 1;
                    report.bytes_skipped += b.size;
                }
            }
        }
        let content_type = http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE);
        self.client
            .push_manifest_raw(reference, manifest_bytes.to_vec(), content_type)
            .await
            .map_err(|e| Self::err(reference, e))?;
        Ok(report)
    }

    async fn push_blob(
        &self,
        layout: &Layout,
        blob: &OciDescriptor,
        reference: &Reference,
        base: Option<&BaseBlobs>,
    ) -> Result<BlobOutcome, Error> {
        let err = |e: OciDistributionError| Error::Registry {
            reference: reference.whole(),
            message: format!("blob {}: {e}", blob.digest),
        };
        if self
            .client
            .blob_exists(reference, &blob.digest)
            .await
            .map_err(err)?
        {
            return Ok(BlobOutcome::Present);
        }
        // A base layer in another repository of the same registry is
        // mounted, not sent, even when a copy is at hand locally.
        if let Some(base) = base.filter(|b| b.layers.contains(&blob.digest)) {
            let base = &base.reference;
            if base.resolve_registry() == reference.resolve_registry()
                && base.repository() != reference.repository()
                && self
                    .client
                    .mount_blob(reference, base, &blob.digest)
                    .await
                    .is_ok()
            {
                return Ok(BlobOutcome::Mounted);
            }
        }
        if !layout.has_blob(&blob.digest) {
            let Some(base) = base else {
                return Err(Error::Registry {
                    reference: reference.whole(),
                    message: format!("blob {} is in no local store", blob.digest),
                });
            };
            self.fetch_blob(layout, &base.reference, blob).await?;
        }
        let path = layout.blob_path(&blob.digest);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Error::io(&path, e))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).map(|chunk| {
            chunk.map_err(|e| OciDistributionError::GenericError(Some(e.to_string())))
        });
        self.client
            .push_blob_stream(reference, stream, &blob.digest, Some(blob.size as u64))
            .await
            .map_err(err)?;
        Ok(BlobOutcome::Uploaded)
    }
}

/// The layers of a base image in its registry: blobs a push may mount or
/// fetch from there.
#[derive(Debug, Clone)]
pub struct BaseBlobs {
    /// The base, pinned by digest.
    pub reference: Reference,
    /// Its layer digests.
    pub layers: std::collections::BTreeSet<String>,
}

/// Uploads in flight at once: enough to fill a link with several small
/// blobs beside a large one, few enough not to thrash a small registry.
const PARALLEL_UPLOADS: usize = 4;

/// What happened to one blob of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BlobOutcome {
    /// Uploaded.
    Uploaded,
    /// The registry had it.
    Present,
    /// Mounted from the base's repository in the same registry.
    Mounted,
}

/// One blob done.
#[derive(Debug, Clone)]
pub struct BlobPushed {
    /// Its digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// What happened.
    pub outcome: BlobOutcome,
}

/// `sha256:` of a file's bytes.
pub fn file_digest(path: &std::path::Path) -> Result<String, Error> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}
