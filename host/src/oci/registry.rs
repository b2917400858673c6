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
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

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
    /// Bytes uploaded.
    pub bytes_pushed: u64,
}

/// Parses `REGISTRY/REPO[:TAG]`, with `default_tag` when none is given.
pub fn parse_reference(text: &str, default_tag: &str) -> Result<Reference, Error> {
    let bad = |message: String| Error::InvalidArgument {
        field: "--push".into(),
        message,
    };
    let has_tag = text
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':') || last.contains('@'));
    let full = if has_tag {
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
        self.client
            .auth(reference, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| Self::err(reference, e))?;
        let (bytes, _) = self
            .client
            .pull_manifest_raw(reference, &self.auth, &[MANIFEST_MEDIA_TYPE])
            .await
            .map_err(|e| Self::err(reference, e))?;
        let manifest: OciImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::Registry {
                reference: reference.whole(),
                message: format!("not an OCI image manifest: {e}"),
            })?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if layout.has_blob(&blob.digest) {
                continue;
            }
            let tmp_dir = layout.root().join("tmp");
            std::fs::create_dir_all(&tmp_dir).map_err(|e| Error::io(&tmp_dir, e))?;
            let tmp =
                tempfile::NamedTempFile::new_in(&tmp_dir).map_err(|e| Error::io(&tmp_dir, e))?;
            let file =
                tokio::fs::File::from_std(tmp.reopen().map_err(|e| Error::io(tmp.path(), e))?);
            self.client
                .pull_blob(reference, blob, file)
                .await
                .map_err(|e| Self::err(reference, e))?;
            let got = {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                let mut f =
                    std::fs::File::open(tmp.path()).map_err(|e| Error::io(tmp.path(), e))?;
                std::io::copy(&mut f, &mut h).map_err(|e| Error::io(tmp.path(), e))?;
                format!("sha256:{}", hex::encode(h.finalize()))
            };
            if got != blob.digest {
                return Err(Error::Registry {
                    reference: reference.whole(),
                    message: format!("blob {} arrived with digest {got}", blob.digest),
                });
            }
            layout.put_blob_file(tmp, &blob.digest)?;
        }
        let desc = layout.put_manifest(&bytes, &reference.whole(), Default::default())?;
        Ok(desc.digest)
    }

    /// Pushes the manifest `digest` from `layout`, with its config and
    /// layers, to `reference`.
    pub async fn push(
        &self,
        layout: &Layout,
        digest: &str,
        reference: &Reference,
    ) -> Result<PushReport, Error> {
        self.client
            .auth(reference, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| Self::err(reference, e))?;
        let manifest_bytes = layout.read_blob(digest)?;
        let manifest: OciImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(|source| Error::NotOci {
                path: layout.blob_path(digest),
                what: "an OCI manifest",
                source,
            })?;
        let mut report = PushReport {
            reference: reference.whole(),
            digest: digest.to_string(),
            blobs_pushed: 0,
            blobs_skipped: 0,
            bytes_pushed: 0,
        };
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if self
                .client
                .blob_exists(reference, &blob.digest)
                .await
                .map_err(|e| Self::err(reference, e))?
            {
                report.blobs_skipped += 1;
                continue;
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
                .map_err(|e| Self::err(reference, e))?;
            report.blobs_pushed += 1;
            report.bytes_pushed += blob.size as u64;
        }
        let content_type = http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE);
        self.client
            .push_manifest_raw(reference, manifest_bytes, content_type)
            .await
            .map_err(|e| Self::err(reference, e))?;
        Ok(report)
    }
}
