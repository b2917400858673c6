//! An OCI image layout folder (`oci-layout`, `index.json`, `blobs/sha256/`):
//! the embedded default artifact store, readable by skopeo, umoci and
//! podman (`oci:DIR:name`).
//!
//! Written by hand: the layout is three small files and content-addressed
//! blobs. oci-client speaks only to registries; `ocidir` (containers/
//! ocidir-rs, used by bootc) writes layouts, but brings OpenSSL and its own
//! `oci-spec` image types, whose `HashMap` labels serialise in a different
//! order in each process (see `image.rs`), and would be a second way to
//! write the same few files. The index update here is also locked, which
//! two trainings finishing together need.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use oci_client::manifest::OciDescriptor;
use serde::{Deserialize, Serialize};

use super::{sha256_digest, MANIFEST_MEDIA_TYPE, REF_NAME_ANNOTATION};
use crate::fsutil::write_atomic;
use crate::Error;

/// An image layout folder.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<OciDescriptor>,
}

impl Layout {
    /// Opens the layout at `root`, creating it if needed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        let blobs = root.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
        let marker = root.join("oci-layout");
        if !marker.is_file() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.is_file() {
            write_atomic(&index, br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#)?;
        }
        Ok(Layout { root })
    }

    /// The layout's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("blobs")
            .join("sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Stores `bytes`; returns their digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String, Error> {
        let digest = sha256_digest(bytes);
        if !self.has_blob(&digest) {
            write_atomic(&self.blob_path(&digest), bytes)?;
        }
        Ok(digest)
    }

    /// Moves a finished temporary file in as blob `digest` (already hashed
    /// by its writer).
    pub fn put_blob_file(&self, file: tempfile::NamedTempFile, digest: &str) -> Result<(), Error> {
        let path = self.blob_path(digest);
        if path.is_file() {
            return Ok(());
        }
        file.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        Ok(())
    }

    /// Makes blob `digest` of `other` present here too: a hard link when
    /// both are on one file system, else a copy (checked against its digest).
    pub fn link_blob_from(&self, other: &Layout, digest: &str) -> Result<(), Error> {
        let to = self.blob_path(digest);
        if to.is_file() {
            return Ok(());
        }
        let from = other.blob_path(digest);
        if std::fs::hard_link(&from, &to).is_ok() {
            return Ok(());
        }
        let tmp_dir = self.root.join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(|e| Error::io(&tmp_dir, e))?;
        let tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(|e| Error::io(&tmp_dir, e))?;
        std::fs::copy(&from, tmp.path()).map_err(|e| Error::io(&from, e))?;
        let got = super::registry::file_digest(tmp.path())?;
        if got != digest {
            return Err(Error::io(
                &from,
                std::io::Error::other(format!("blob has digest {got}, not {digest}")),
            ));
        }
        self.put_blob_file(tmp, digest)
    }

    /// Reads a blob.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, Error> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(|e| Error::io(&path, e))
    }

    /// Stores a manifest and names it `reference` in the index (replacing
    /// what that name pointed to). Returns its descriptor.
    pub fn put_manifest(
        &self,
        manifest: &[u8],
        reference: &str,
        annotations: BTreeMap<String, String>,
    ) -> Result<OciDescriptor, Error> {
        let digest = self.put_blob(manifest)?;
        let mut ann = annotations;
        ann.insert(REF_NAME_ANNOTATION.to_string(), reference.to_string());
        let desc = OciDescriptor {
            media_type: MANIFEST_MEDIA_TYPE.to_string(),
            digest,
            size: manifest.len() as i64,
            urls: None,
            annotations: Some(ann),
            artifact_type: None,
        };
        self.update_index(|index| {
            index.manifests.retain(|m| ref_name(m) != Some(reference));
            index.manifests.push(desc.clone());
        })?;
        Ok(desc)
    }

    /// The manifests named in the index, by name.
    pub fn list(&self) -> Result<Vec<(String, OciDescriptor)>, Error> {
        let index = self.read_index()?;
        let mut out: Vec<_> = index
            .manifests
            .into_iter()
            .filter_map(|m| ref_name(&m).map(|r| (r.to_string(), m.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Finds a manifest by name (`name:version`) or by digest (`sha256:…`
    /// or a unique prefix of at least 12 hex digits).
    pub fn resolve(&self, reference: &str) -> Result<Option<OciDescriptor>, Error> {
        let index = self.read_index()?;
        if let Some(m) = index
            .manifests
            .iter()
            .find(|m| ref_name(m) == Some(reference))
        {
            return Ok(Some(m.clone()));
        }
        let hex = reference.trim_start_matches("sha256:");
        if hex.len() >= 12 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let found: Vec<_> = index
                .manifests
                .iter()
                .filter(|m| m.digest.trim_start_matches("sha256:").starts_with(hex))
                .collect();
            if let [one] = found.as_slice() {
                return Ok(Some((*one).clone()));
            }
        }
        Ok(None)
    }

    fn read_index(&self) -> Result<Index, Error> {
        let path = self.root.join("index.json");
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&text).map_err(|source| Error::NotOci {
            path,
            what: "an OCI index",
            source,
        })
    }

    /// Read-modify-write of `index.json` under an exclusive lock, so two
    /// trainings finishing together both land.
    fn update_index(&self, change: impl FnOnce(&mut Index)) -> Result<(), Error> {
        let lock_path = self.root.join("index.json.lock");
        let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        let mut index = self.read_index()?;
        change(&mut index);
        index.schema_version = 2;
        let bytes = serde_json::to_vec_pretty(&index).map_err(|e| Error::json(&lock_path, e))?;
        let written = write_atomic(&self.root.join("index.json"), &bytes);
        let _ = lock.unlock();
        written
    }
}

fn ref_name(m: &OciDescriptor) -> Option<&str> {
    m.annotations
        .as_ref()?
        .get(REF_NAME_ANNOTATION)
        .map(String::as_str)
}
