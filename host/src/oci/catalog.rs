//! What is stored: the models in the data directory's model layout, and
//! the packaged images — in the local image layout, and pushed ones as
//! their packagings recorded them. One listing for `legion models ls`,
//! `legion images ls` and the API's `/api/v1/models` and `/api/v1/images`.

use super::image::{read_image, REF_NAME_LABEL};
use super::layout::Layout;
use super::model::read_model;
use crate::home::Home;
use crate::store::{RunKind, RunState, Store};
use crate::Error;

/// A stored model.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelEntry {
    /// `name:version`.
    pub reference: String,
    /// Its manifest's digest.
    pub digest: String,
    /// The model's flavor (`legion.python`, `mlflow.pyfunc`, …).
    pub flavor: String,
    /// The toolchain that trained it.
    pub toolchain: String,
    /// Bytes of its layers.
    pub size: i64,
}

/// A packaged image.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageEntry {
    /// `oci:DIR:NAME` locally, `REGISTRY/REPO@sha256:…` when pushed.
    pub reference: String,
    /// Its manifest's digest.
    pub digest: String,
    /// The model it serves, `name:version`.
    pub model: String,
    /// Bytes of its layers (0 for a pushed image: not read back).
    pub size: u64,
    /// `local` or `registry`.
    pub location: String,
}

/// Every stored model, by reference.
pub fn models(home: &Home) -> Result<Vec<ModelEntry>, Error> {
    let layout = Layout::open(home.models())?;
    let mut rows = Vec::new();
    for (reference, desc) in layout.list()? {
        let Some((_, manifest, config)) = read_model(&layout, &reference)? else {
            continue;
        };
        rows.push(ModelEntry {
            reference,
            digest: desc.digest,
            flavor: config.manifest.flavor,
            toolchain: config.toolchain.name,
            size: manifest.layers.iter().map(|l| l.size).sum(),
        });
    }
    Ok(rows)
}

/// Every packaged image: the local ones, then the pushed ones.
pub async fn images(home: &Home, store: &Store) -> Result<Vec<ImageEntry>, Error> {
    let mut rows = Vec::new();
    let layout = Layout::open(home.images())?;
    for (name, desc) in layout.list()? {
        let (manifest, config) = read_image(&layout, &desc.digest)?;
        let labels = config.config.and_then(|c| c.labels).unwrap_or_default();
        rows.push(ImageEntry {
            reference: format!("oci:{}:{name}", layout.root().display()),
            digest: desc.digest,
            model: model_of(&labels),
            size: manifest.layers.iter().map(|l| l.size.max(0) as u64).sum(),
            location: "local".into(),
        });
    }
    for run in store.list_runs(10_000).await? {
        if run.kind != RunKind::Packaging || run.state != RunState::Succeeded {
            continue;
        }
        let Some(pushed) = run.pushed_ref else {
            continue;
        };
        rows.push(ImageEntry {
            reference: pushed,
            digest: run.image_digest.unwrap_or_default(),
            model: format!("{}:{}", run.model.name, run.model.version),
            size: 0,
            location: "registry".into(),
        });
    }
    Ok(rows)
}

fn model_of(labels: &std::collections::BTreeMap<String, String>) -> String {
    match (
        labels.get("org.legion-platform.model.name"),
        labels.get("org.legion-platform.model.version"),
    ) {
        (Some(n), Some(v)) => format!("{n}:{v}"),
        _ => labels.get(REF_NAME_LABEL).cloned().unwrap_or_default(),
    }
}
