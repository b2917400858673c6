//! The Python dependency layer: a model's requirements installed for the
//! base image's Python and platform without running the base image, by
//! pip's cross-install (`pip install --target … --platform … --only-binary
//! :all: --python-version …`), on the host.
//!
//! Layers are cached by (target folder, requirements, Python version,
//! platform, `SOURCE_DATE_EPOCH`): an unchanged dependency set is never rebuilt, and since its
//! blob is the same, never re-uploaded either. pip installs without byte
//! code (its `.pyc` files would embed the temporary folder it unpacks in);
//! when the host has the base's Python minor version, `compileall` then
//! compiles hash-checked `.pyc` files that name the image path (`-d`), so
//! the layer is the same bytes on every rebuild and a read-only image
//! starts without compiling. With another host Python the layer carries
//! sources only.

use std::path::Path;
use std::process::Stdio;

use oci_client::manifest::OciDescriptor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::exec::pyenv;
use crate::exec::RunLog;
use crate::oci::image::NewLayer;
use crate::oci::layer::{build_layer, image_path};
use crate::oci::layout::Layout;
use crate::oci::LAYER_GZIP_MEDIA_TYPE;
use crate::Error;

/// Bump when the way layers are made changes, so old cache entries are
/// not reused.
const LAYER_FORMAT: u32 = 2;

/// A cached layer's facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cached {
    digest: String,
    diff_id: String,
    size: u64,
}

/// What to install.
#[derive(Debug, Clone)]
pub struct DepsRequest<'a> {
    /// Folder in the image.
    pub target: &'a str,
    /// pip requirement lines.
    pub requirements: &'a [String],
    /// The base's Python, `major.minor`.
    pub python_version: &'a str,
    /// pip platform tags (any of them).
    pub platforms: &'a [&'a str],
}

impl DepsRequest<'_> {
    /// The cache key.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        // File times come from SOURCE_DATE_EPOCH: part of the layer's bytes.
        h.update(format!(
            "v{LAYER_FORMAT}\n{}\n{}\n{}\n{}",
            self.target,
            self.python_version,
            self.platforms.join(","),
            crate::oci::source_date_epoch()
        ));
        for r in self.requirements {
            h.update(b"\n");
            h.update(r.trim());
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// Builds (or finds in `cache_dir`) the dependency layer; its blob is put
/// in `images`. Returns the layer and whether it came from the cache.
pub async fn python_layer(
    req: &DepsRequest<'_>,
    cache_dir: &Path,
    images: &Layout,
    log: &RunLog,
) -> Result<(NewLayer, bool), Error> {
    let rel = image_path(req.target)?;
    let key = req.key();
    let record = cache_dir.join(format!("{key}.json"));
    let created_by = format!(
        "pip install --target {} for Python {} ({}): {}",
        req.target,
        req.python_version,
        req.platforms.join(", "),
        req.requirements.join(" ")
    );
    if let Ok(text) = std::fs::read(&record) {
        if let Ok(c) = serde_json::from_slice::<Cached>(&text) {
            if images.has_blob(&c.digest) {
                log.note(&format!(
                    "python dependency layer {} (cached as {key})",
                    c.digest
                ));
                return Ok((layer(c, created_by), true));
            }
        }
    }
    let work = tempfile::Builder::new()
        .prefix("deps-")
        .tempdir_in(images.root().join("tmp"))
        .or_else(|_| {
            std::fs::create_dir_all(images.root().join("tmp"))?;
            tempfile::Builder::new()
                .prefix("deps-")
                .tempdir_in(images.root().join("tmp"))
        })
        .map_err(|e| Error::io(images.root(), e))?;
    let install = work.path().join("root");
    let reqs = work.path().join("requirements.txt");
    std::fs::write(&reqs, req.requirements.join("\n") + "\n").map_err(|e| Error::io(&reqs, e))?;
    // An interpreter of the base's version compiles byte code the base can
    // use; any other only downloads and unpacks wheels.
    let (python, compile) = match pyenv::interpreter(Some(req.python_version)) {
        Ok(p) => (p, true),
        Err(_) => (pyenv::interpreter(None)?, false),
    };
    log.note(&format!(
        "pip install for Python {} ({}) into {}: {}",
        req.python_version,
        req.platforms.join(", "),
        req.target,
        req.requirements.join(" ")
    ));
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        req.python_version,
        "--target",
    ])
    .arg(&install);
    for p in req.platforms {
        cmd.arg("--platform").arg(p);
    }
    cmd.arg("--no-compile")
        .arg("-r")
        .arg(&reqs)
        .stdin(Stdio::null());
    pyenv::run(&mut cmd, "pip install (dependency layer)", log)
        .await
        .map_err(|e| Error::Package {
            message: format!(
                "the model's requirements cannot be installed for Python {} on {}: {e}",
                req.python_version,
                req.platforms.join(", ")
            ),
        })?;
    fix_shebangs(&install.join("bin"))?;
    if compile {
        let mut cc = Command::new(&python);
        cc.args([
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "checked-hash",
            "-d",
            req.target,
        ])
        .arg(&install)
        .stdin(Stdio::null());
        pyenv::run(&mut cc, "compileall (dependency layer)", log).await?;
    }
    let prefix = rel.display().to_string();
    let tmp = images.root().join("tmp");
    let blob = tokio::task::spawn_blocking(move || build_layer(&install, &prefix, &tmp))
        .await
        .map_err(|e| Error::Package {
            message: format!("building the dependency layer: {e}"),
        })??;
    let cached = Cached {
        digest: blob.digest.clone(),
        diff_id: blob.diff_id.clone(),
        size: blob.size,
    };
    log.note(&format!(
        "python dependency layer {}: {} files, {} bytes, {} compressed",
        blob.digest, blob.files, blob.content_bytes, blob.size
    ));
    images.put_blob_file(blob.file, &cached.digest)?;
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    let text = serde_json::to_vec(&cached).map_err(|e| Error::json(&record, e))?;
    crate::fsutil::write_atomic(&record, &text)?;
    Ok((layer(cached, created_by), false))
}

/// pip writes console scripts (`bin/mlflow`, …) with the host's own
/// interpreter in their `#!` line; in the image that path does not exist.
/// They get `#!/usr/bin/env python3` instead.
fn fix_shebangs(bin: &Path) -> Result<(), Error> {
    let Ok(entries) = std::fs::read_dir(bin) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry.map_err(|e| Error::io(bin, e))?.path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let Some(rest) = bytes.strip_prefix(b"#!") else {
            continue;
        };
        let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        if !String::from_utf8_lossy(&rest[..end]).contains("python") {
            continue;
        }
        let mut fixed = b"#!/usr/bin/env python3".to_vec();
        fixed.extend_from_slice(&rest[end..]);
        std::fs::write(&path, fixed).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

fn layer(c: Cached, created_by: String) -> NewLayer {
    NewLayer {
        desc: OciDescriptor {
            media_type: LAYER_GZIP_MEDIA_TYPE.to_string(),
            digest: c.digest,
            size: c.size as i64,
            urls: None,
            annotations: None,
            artifact_type: None,
        },
        diff_id: c.diff_id,
        created_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_scripts_run_with_the_images_python() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        std::fs::write(
            bin.join("mlflow"),
            "#!/root/.pyenv/versions/3.11.7/bin/python3.11\nimport sys\n",
        )
        .unwrap();
        std::fs::write(bin.join("tool.sh"), "#!/bin/sh\necho\n").unwrap();
        fix_shebangs(bin).unwrap();
        assert_eq!(
            std::fs::read_to_string(bin.join("mlflow")).unwrap(),
            "#!/usr/bin/env python3\nimport sys\n"
        );
        assert_eq!(
            std::fs::read_to_string(bin.join("tool.sh")).unwrap(),
            "#!/bin/sh\necho\n"
        );
        assert!(fix_shebangs(&bin.join("missing")).is_ok());
    }

    #[test]
    fn the_key_changes_with_every_input() {
        let reqs = vec!["scikit-learn==1.5.2".to_string()];
        let base = DepsRequest {
            target: "/opt/legion/python",
            requirements: &reqs,
            python_version: "3.11",
            platforms: &["manylinux2014_x86_64"],
        };
        let other_reqs = vec!["scikit-learn==1.5.1".to_string()];
        let mut seen = std::collections::BTreeSet::new();
        for r in [
            base.clone(),
            DepsRequest {
                requirements: &other_reqs,
                ..base.clone()
            },
            DepsRequest {
                python_version: "3.12",
                ..base.clone()
            },
            DepsRequest {
                platforms: &["manylinux2014_aarch64"],
                ..base.clone()
            },
            DepsRequest {
                target: "/deps",
                ..base.clone()
            },
        ] {
            assert!(seen.insert(r.key()));
        }
        assert_eq!(base.key(), base.clone().key());
    }
}
