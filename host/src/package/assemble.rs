//! Files onto a base image, as one deterministic layer: the image builder
//! of packaging without a model, for images such as Legion's own platform
//! image (`scripts/platform-image.sh`, `legion images build`). Like a
//! Containerfile of `FROM` + `COPY` + settings, with no build container:
//! the same inputs give the same digest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{fetch_base_layers, files_layer, push_sources, resolve_base};
use crate::oci::image::{compose, ImageSettings};
use crate::oci::layer::{Contents, ImageFile};
use crate::oci::layout::Layout;
use crate::oci::registry::{parse_reference, Registry};
use crate::Error;

/// What goes into the image.
#[derive(Debug, Clone, Default)]
pub struct Assembly {
    /// The base (`REGISTRY/REPO[:TAG|@DIGEST]` or `oci:DIR:NAME`).
    pub base: String,
    /// (host path, image path): a file, or a folder copied whole.
    pub add: Vec<(PathBuf, String)>,
    /// Entrypoint, env, labels, user, working directory.
    pub settings: ImageSettings,
}

/// Where the image goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// Pushed to this reference.
    Push(String),
    /// Stored in the layout under this name.
    Layout(Layout, String),
}

/// The image made.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Assembled {
    /// Where it is (`REGISTRY/REPO@DIGEST` or `oci:DIR:NAME`).
    pub reference: String,
    /// Its manifest's digest.
    pub digest: String,
    /// Files in the added layer.
    pub files: usize,
}

/// Builds the image, working in `images` (a layout for blobs).
pub async fn assemble(images: &Layout, a: &Assembly, target: &Target) -> Result<Assembled, Error> {
    // A bad reference is refused before anything is built.
    let push = match target {
        Target::Push(r) => Some(parse_reference(r, "latest")?),
        Target::Layout(..) => None,
    };
    let mut files = Vec::new();
    for (host, at) in &a.add {
        add(host, at, &mut files)?;
    }
    if files.is_empty() {
        return Err(Error::InvalidArgument {
            field: "--add".into(),
            message: "nothing to add: give at least one HOST_PATH=IMAGE_PATH".into(),
        });
    }
    let base = resolve_base(&a.base).await?;
    let base_blobs = push_sources(&base, images)?;
    let tmp = images.root().join("tmp");
    let (fs, layout) = (files.clone(), images.clone());
    let layer =
        tokio::task::spawn_blocking(move || files_layer(&fs, "legion images build", &tmp, &layout))
            .await
            .map_err(|e| Error::Engine {
                context: "building a layer",
                source: e.into(),
            })??;
    let image = compose(&base, &[layer], &a.settings)?;
    images.put_blob(&image.config)?;
    let reference = match (push, target) {
        (Some(reference), _) => {
            Registry::for_reference(&reference)
                .push_manifest(
                    images,
                    &image.blobs,
                    &image.manifest,
                    &reference,
                    base_blobs.as_ref(),
                    &|_| {},
                )
                .await?;
            format!(
                "{}/{}@{}",
                reference.resolve_registry(),
                reference.repository(),
                image.digest
            )
        }
        (None, Target::Layout(layout, name)) => {
            fetch_base_layers(&base, images).await?;
            for blob in &image.blobs {
                layout.link_blob_from(images, &blob.digest)?;
            }
            layout.put_manifest(&image.manifest, name, BTreeMap::new())?;
            format!("oci:{}:{name}", layout.root().display())
        }
        // `push` is `None` only for a layout target.
        (None, Target::Push(r)) => r.clone(),
    };
    Ok(Assembled {
        reference,
        digest: image.digest,
        files: files.len(),
    })
}

/// The files of `host` (a file, or every file under a folder) at `at`.
fn add(host: &Path, at: &str, out: &mut Vec<ImageFile>) -> Result<(), Error> {
    let meta = std::fs::metadata(host).map_err(|e| Error::io(host, e))?;
    if meta.is_file() {
        use std::os::unix::fs::PermissionsExt;
        out.push(ImageFile {
            path: at.to_string(),
            contents: Contents::File(host.to_path_buf()),
            mode: meta.permissions().mode(),
        });
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(host)
        .map_err(|e| Error::io(host, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::io(host, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        add(
            &e.path(),
            &format!("{}/{name}", at.trim_end_matches('/')),
            out,
        )?;
    }
    Ok(())
}
