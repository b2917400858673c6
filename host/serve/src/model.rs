//! The model a server serves: a folder holding `legion-model.json` (the
//! [`ModelSpec`]) beside `model/` (the model's files, as the model layer
//! unpacks them). `legion serve` prepares one from the local store; a
//! packaged image carries one at `/opt/legion`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::names::{ModelName, ModelVersion};
use crate::signature::Signature;
use crate::Error;

/// The spec's file name inside a model folder.
pub const SPEC_FILE: &str = "legion-model.json";
/// The folder of the model's files inside a model folder.
pub const FILES_DIR: &str = "model";

/// What the server needs to know about a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelSpec {
    /// Model name.
    pub name: ModelName,
    /// Model version.
    pub version: ModelVersion,
    /// The model artifact's manifest digest.
    pub digest: String,
    /// How the worker loads it (`python_function`, `sklearn`, `legion.python`).
    pub flavor: String,
    /// Inputs and outputs, if recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    /// Further facts (`mlflow_version`, …).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A model folder and the interpreter its workers run in.
#[derive(Debug, Clone)]
pub struct ServedModel {
    /// The spec.
    pub spec: ModelSpec,
    /// The model's files.
    pub files: PathBuf,
    /// The Python interpreter.
    pub python: PathBuf,
}

impl ServedModel {
    /// Reads the model folder `root`.
    pub fn open(root: &Path, python: PathBuf) -> Result<Self, Error> {
        let path = root.join(SPEC_FILE);
        let text = std::fs::read(&path).map_err(|source| Error::SpecFile {
            path: path.clone(),
            source,
        })?;
        let spec = serde_json::from_slice(&text).map_err(|source| Error::BadSpec {
            path: path.clone(),
            source,
        })?;
        Ok(ServedModel {
            spec,
            files: root.join(FILES_DIR),
            python,
        })
    }

    /// Writes `spec` into the model folder `root`.
    pub fn write_spec(root: &Path, spec: &ModelSpec) -> Result<(), Error> {
        let path = root.join(SPEC_FILE);
        let text = serde_json::to_vec_pretty(spec).map_err(|source| Error::BadSpec {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, text).map_err(|source| Error::SpecFile { path, source })
    }
}

/// The flavors the worker loads, and the files each needs in the model's
/// folder (one of them, for `sklearn`).
pub const FLAVORS: &[(&str, &[&str])] = &[
    ("legion.python", &["predict.py"]),
    ("python_function", &["MLmodel"]),
    ("sklearn", &["model.pkl", "model.joblib"]),
];

/// Whether the worker can load a model of `flavor` from `dir`: a flavor
/// it knows, and the file it reads there. `Err` says what is missing.
pub fn check_model_files(flavor: &str, dir: &Path) -> Result<(), String> {
    let Some((_, files)) = FLAVORS.iter().find(|(f, _)| *f == flavor) else {
        return Err(format!(
            "flavor '{flavor}' is not one the model server loads ({})",
            FLAVORS
                .iter()
                .map(|(f, _)| *f)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if files.iter().any(|f| dir.join(f).is_file()) {
        Ok(())
    } else {
        Err(format!(
            "a '{flavor}' model needs {} in its folder; {} has none",
            files.join(" or "),
            dir.display()
        ))
    }
}

/// Makes the load cache of a model folder once (see `worker.py`'s
/// `--cache`): an MLflow scikit-learn model stored with skops is loaded
/// through skops once and kept as a pickle the workers load in a fraction
/// of the time. Only for folders this host writes (`legion serve`); a
/// model the cache does not help is noted and left alone. A failure is
/// logged, never fatal: the workers then load the model the slow way.
pub async fn prepare_load_cache(root: &Path, python: &Path) -> Result<(), Error> {
    let done = root.join("cache").join(".done");
    if done.is_file() {
        return Ok(());
    }
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(crate::WORKER_PY)
        .arg("--cache")
        .arg(root.join(FILES_DIR))
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() || o.status.code() == Some(3) => {
            let dir = root.join("cache");
            std::fs::create_dir_all(&dir)
                .and_then(|_| std::fs::write(&done, ""))
                .map_err(|source| Error::Cache { path: dir, source })
        }
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let last = stderr.lines().last().unwrap_or_default();
            tracing::warn!(root = %root.display(), "cannot make the load cache ({}): {last}", o.status);
            Ok(())
        }
        Err(e) => {
            tracing::warn!(python = %python.display(), "cannot make the load cache: {e}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_flavor_needs_its_file_and_unknown_flavors_are_named() {
        let dir = tempfile_dir("flavors");
        assert!(check_model_files("legion.python", &dir)
            .unwrap_err()
            .contains("needs predict.py"));
        std::fs::write(dir.join("predict.py"), "").unwrap();
        check_model_files("legion.python", &dir).unwrap();
        assert!(check_model_files("sklearn", &dir)
            .unwrap_err()
            .contains("model.pkl or model.joblib"));
        std::fs::write(dir.join("model.joblib"), "").unwrap();
        check_model_files("sklearn", &dir).unwrap();
        let err = check_model_files("onnx", &dir).unwrap_err();
        assert!(
            err.contains("'onnx'") && err.contains("python_function"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("legion-serve-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn spec_round_trips_and_bad_specs_name_the_file() {
        let dir = std::env::temp_dir().join(format!("legion-serve-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = ModelSpec {
            name: "iris".parse().unwrap(),
            version: "1".parse().unwrap(),
            digest: "sha256:00".into(),
            flavor: "sklearn".into(),
            signature: None,
            metadata: BTreeMap::new(),
        };
        ServedModel::write_spec(&dir, &spec).unwrap();
        let m = ServedModel::open(&dir, "python3".into()).unwrap();
        assert_eq!(m.spec, spec);
        assert_eq!(m.files, dir.join("model"));
        std::fs::write(dir.join(SPEC_FILE), r#"{"name": "Iris"}"#).unwrap();
        let e = ServedModel::open(&dir, "python3".into()).unwrap_err();
        assert!(
            e.to_string().contains(SPEC_FILE) && e.to_string().contains("not a valid model name"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let e = ServedModel::open(&dir, "python3".into()).unwrap_err();
        assert!(matches!(e, Error::SpecFile { .. }), "{e}");
    }
}
