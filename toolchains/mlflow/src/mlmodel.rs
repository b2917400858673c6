//! Finding the logged model in a finished run's output.
//!
//! MLflow 3 keeps a logged model under
//! `mlruns/<experiment>/models/m-<id>/artifacts/` (older versions under the
//! run's `artifacts/`); either way the model folder is the one holding an
//! `MLmodel` file.

use std::path::{Path, PathBuf};

use legion_sdk::{KeyValue, ModelManifest, Signature, TensorSpec, ToolchainError};
use serde::Deserialize;

/// Largest input example kept in the manifest.
const MAX_EXAMPLE: u64 = 64 << 10;
/// How deep to look for MLmodel files.
const MAX_DEPTH: usize = 12;

#[derive(Debug, Deserialize)]
struct MlModel {
    #[serde(default)]
    flavors: serde_norway::Mapping,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    model_id: Option<String>,
    #[serde(default)]
    mlflow_version: Option<String>,
    #[serde(default)]
    signature: Option<RawSignature>,
    #[serde(default)]
    saved_input_example_info: Option<ExampleInfo>,
}

#[derive(Debug, Deserialize)]
struct RawSignature {
    /// A JSON string, as MLflow writes it.
    #[serde(default)]
    inputs: Option<String>,
    #[serde(default)]
    outputs: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ExampleInfo {
    #[serde(default)]
    artifact_path: Option<String>,
}

fn find(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            find(&e.path(), depth + 1, out);
        } else if ft.is_file() && e.file_name() == "MLmodel" {
            out.push(e.path());
        }
    }
}

pub fn collect(output: &Path) -> Result<ModelManifest, ToolchainError> {
    let mut files = Vec::new();
    find(output, 0, &mut files);
    let mut models = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| ToolchainError::other(format!("{}: {e}", f.display())))?;
        let m: MlModel = serde_norway::from_str(&text)
            .map_err(|e| ToolchainError::invalid(format!("{}: {e}", f.display())))?;
        if m.flavors.contains_key("python_function") {
            models.push((f, m));
        }
    }
    let rel = |p: &Path| {
        p.parent()
            .unwrap_or(p)
            .strip_prefix(output)
            .unwrap_or(p)
            .display()
            .to_string()
    };
    let (file, model) = match models.len() {
        0 => return Err(ToolchainError::missing("the MLflow run logged no python_function model (no MLmodel file with a python_function flavor in the output)")),
        1 => models.remove(0),
        n => {
            let where_: Vec<String> = models.iter().map(|(f, _)| rel(f)).collect();
            return Err(ToolchainError::invalid(format!("the MLflow run logged {n} python_function models ({}); log exactly one", where_.join(", "))));
        }
    };
    let dir = file.parent().unwrap_or(output).to_path_buf();
    let mut manifest = ModelManifest::new("python_function", rel(&file));
    manifest.run_id = model.run_id.clone();
    if let Some(sig) = &model.signature {
        manifest.signature = Some(Signature {
            inputs: columns(sig.inputs.as_deref())?,
            outputs: columns(sig.outputs.as_deref())?,
        });
    }
    if let Some(path) = model
        .saved_input_example_info
        .as_ref()
        .and_then(|i| i.artifact_path.as_ref())
    {
        let p = dir.join(path);
        if std::fs::metadata(&p)
            .map(|m| m.len() <= MAX_EXAMPLE)
            .unwrap_or(false)
        {
            manifest.input_example = std::fs::read_to_string(&p).ok();
        }
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("requirements.txt")) {
        manifest.requirements = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
    }
    let mut meta = vec![];
    if let Some(pf) = model.flavors.get("python_function") {
        for key in ["loader_module", "python_version", "model_path"] {
            if let Some(v) = pf.get(key).and_then(|v| v.as_str()) {
                meta.push(KeyValue::new(key, v));
            }
        }
    }
    let flavors: Vec<String> = model
        .flavors
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    meta.push(KeyValue::new("flavors", flavors.join(",")));
    if let Some(v) = model.mlflow_version {
        meta.push(KeyValue::new("mlflow_version", v));
    }
    if let Some(v) = model.model_id {
        meta.push(KeyValue::new("mlflow_model_id", v));
    }
    manifest.metadata = meta;
    Ok(manifest)
}

/// MLflow's column or tensor specs, a JSON list in a string.
fn columns(json: Option<&str>) -> Result<Vec<TensorSpec>, ToolchainError> {
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    let specs: Vec<serde_json::Value> = serde_json::from_str(json)
        .map_err(|e| ToolchainError::invalid(format!("MLmodel signature: {e}")))?;
    Ok(specs
        .into_iter()
        .map(|s| {
            let name = s.get("name").and_then(|v| v.as_str()).map(str::to_string);
            let optional = s
                .get("required")
                .and_then(|v| v.as_bool())
                .map(|r| !r)
                .unwrap_or(false);
            match s.get("type").and_then(|v| v.as_str()) {
                Some("tensor") => {
                    let spec = s.get("tensor-spec");
                    let dtype = spec
                        .and_then(|t| t.get("dtype"))
                        .and_then(|v| v.as_str())
                        .unwrap_or("float64")
                        .to_string();
                    let shape = spec
                        .and_then(|t| t.get("shape"))
                        .and_then(|v| v.as_array())
                        .map(|a| a.iter().filter_map(|d| d.as_i64()).collect())
                        .unwrap_or_default();
                    TensorSpec {
                        name,
                        datatype: dtype,
                        shape,
                        optional,
                    }
                }
                Some(t) => TensorSpec {
                    name,
                    datatype: t.to_string(),
                    shape: Vec::new(),
                    optional,
                },
                None => TensorSpec {
                    name,
                    datatype: "string".into(),
                    shape: Vec::new(),
                    optional,
                },
            }
        })
        .collect())
}
