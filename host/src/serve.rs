//! `legion serve`: the model server is the `legion-serve` crate; this
//! module prepares what it serves from the data directory. A model is
//! found in the local store (or pulled from a registry), unpacked once into
//! `<data>/serving/<digest>/` as a model folder (`legion-model.json` beside
//! `model/`, exactly what a packaged image carries), and given a Python
//! environment from its requirements.

use std::path::{Path, PathBuf};

use legion_serve::{ModelSpec, ServedModel};

use crate::exec::pyenv::PythonEnvs;
use crate::exec::RunLog;
use crate::home::Home;
use crate::oci::layer::unpack_layer;
use crate::oci::layout::Layout;
use crate::oci::model::{read_model, ModelConfig};
use crate::plan::PythonEnvironment;
use crate::Error;

/// Requirements for serving a model: its own, with the full `mlflow`
/// package swapped for `mlflow-skinny` at the same version (the server needs
/// only MLflow's model loading, not its tracking server), plus numpy and
/// pandas, which the worker itself imports.
pub fn serving_requirements(reqs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = reqs
        .iter()
        .map(|r| {
            let t = r.trim();
            match t.strip_prefix("mlflow") {
                Some(rest)
                    if rest.is_empty()
                        || rest.starts_with(['=', '<', '>', '~', '!', ' ', '[', ';']) =>
                {
                    format!("mlflow-skinny{rest}")
                }
                _ => t.to_string(),
            }
        })
        .filter(|r| !r.is_empty() && !r.starts_with('-') && !r.starts_with('#'))
        .collect();
    for needed in ["numpy", "pandas"] {
        let has = out.iter().any(|r| {
            let name: String = r
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
                .collect();
            name.eq_ignore_ascii_case(needed)
        });
        if !has {
            out.push(needed.to_string());
        }
    }
    out
}

/// Serves `reference` until Ctrl-C or SIGTERM.
pub async fn serve(
    home: &Home,
    reference: &str,
    args: &legion_serve::ServeArgs,
) -> Result<(), Error> {
    let model = prepare(home, reference).await?;
    let mut args = args.clone();
    args.feedback_log
        .get_or_insert_with(|| home.root().join("serving").join("feedback.jsonl"));
    let listener = legion_serve::bind(args.addr()).await?;
    legion_serve::serve(listener, model, &args, legion_serve::shutdown_signal()).await?;
    Ok(())
}

/// The spec the server reads, from a stored model's config.
pub fn model_spec(config: &ModelConfig, digest: &str) -> Result<ModelSpec, Error> {
    let invalid = |e: legion_serve::InvalidName| Error::InvalidArgument {
        field: "MODEL".into(),
        message: format!("the stored model {digest} has an invalid name: {e}"),
    };
    Ok(ModelSpec {
        name: config.name.parse().map_err(invalid)?,
        version: config.version.parse().map_err(invalid)?,
        digest: digest.to_string(),
        flavor: config.manifest.flavor.clone(),
        signature: config.manifest.signature.clone(),
        metadata: config.manifest.metadata.clone(),
    })
}

/// A stored model found by [`find_model`].
#[derive(Debug, Clone)]
pub struct FoundModel {
    /// The models layout.
    pub layout: Layout,
    /// Its manifest's descriptor (digest).
    pub desc: oci_client::manifest::OciDescriptor,
    /// Its manifest.
    pub manifest: oci_client::manifest::OciImageManifest,
    /// Its config.
    pub config: ModelConfig,
}

/// Finds `reference` (`name:version`, a digest, or a registry reference,
/// which is pulled first) in the store. `field` names the argument in
/// errors.
pub async fn find_model(home: &Home, reference: &str, field: &str) -> Result<FoundModel, Error> {
    let layout = Layout::open(home.models())?;
    // A registry reference (`host[:port]/repo[:tag|@digest]`) is pulled into
    // the local store first; a local name never contains '/'.
    let reference = if reference.contains('/') && layout.resolve(reference)?.is_none() {
        let r =
            crate::oci::registry::parse_reference(reference, "latest").map_err(|e| match e {
                Error::InvalidArgument { message, .. } => Error::InvalidArgument {
                    field: field.into(),
                    message,
                },
                other => other,
            })?;
        crate::oci::registry::Registry::for_reference(&r)
            .pull(&layout, &r)
            .await?;
        r.whole()
    } else {
        reference.to_string()
    };
    let reference = reference.as_str();
    let Some((desc, manifest, config)) = read_model(&layout, reference)? else {
        return Err(Error::InvalidArgument {
            field: field.into(),
            message: format!("no stored model '{reference}' (legion models ls lists them)"),
        });
    };
    Ok(FoundModel {
        layout,
        desc,
        manifest,
        config,
    })
}

/// Unpacks a found model once into `<data>/serving/<hex>/` as a model
/// folder (`model/` and `legion-model.json`); returns the folder.
pub fn unpack_model(home: &Home, found: &FoundModel) -> Result<PathBuf, Error> {
    let hex = found.desc.digest.trim_start_matches("sha256:").to_string();
    let root = home.root().join("serving").join(&hex);
    let ready = root.join(".unpacked");
    if !ready.is_file() {
        let _ = std::fs::remove_dir_all(&root);
        for layer in &found.manifest.layers {
            unpack_layer(&found.layout.blob_path(&layer.digest), &root)?;
        }
        std::fs::write(&ready, "").map_err(|e| Error::io(&ready, e))?;
    }
    ServedModel::write_spec(&root, &model_spec(&found.config, &found.desc.digest)?)?;
    Ok(root)
}

/// Finds `reference` in the store (see [`find_model`]), unpacks it into a
/// model folder and prepares its environment.
pub async fn prepare(home: &Home, reference: &str) -> Result<ServedModel, Error> {
    let found = find_model(home, reference, "MODEL").await?;
    let root = unpack_model(home, &found)?;
    let log = RunLog::open(&root.with_extension("env.log"))?;
    let env = PythonEnvironment {
        python_version: None,
        requirements: serving_requirements(&found.config.manifest.requirements),
    };
    let env = PythonEnvs::new(home.python_envs())
        .ensure(&env, &log)
        .await?;
    let python = python_of(&env);
    legion_serve::model::prepare_load_cache(&root, &python).await?;
    Ok(ServedModel::open(&root, python)?)
}

/// The interpreter of a venv.
pub fn python_of(env: &Path) -> PathBuf {
    env.join("bin").join("python")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlflow_becomes_skinny_and_numpy_pandas_are_added() {
        let reqs = vec![
            "mlflow==3.17.2".to_string(),
            "scikit-learn==1.9.1".into(),
            "mlflow-skinny".into(),
            "pandas".into(),
        ];
        assert_eq!(
            serving_requirements(&reqs),
            [
                "mlflow-skinny==3.17.2",
                "scikit-learn==1.9.1",
                "mlflow-skinny",
                "pandas",
                "numpy"
            ]
        );
    }
}
