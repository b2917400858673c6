//! Built-in `python` trainer: runs `python ENTRYPOINT ARGS` from the source
//! in a venv with the source's `requirements.txt`, and collects the model
//! the script wrote to `$LEGION_OUTPUT_DIR/model/`.
//!
//! The model contract (docs/training.md): `model/` holds either
//! - `model.pkl` or `model.joblib`: a fitted estimator with `.predict`
//!   (flavor `sklearn`), or
//! - `predict.py` with `load(model_dir)` and `predict(model, frame)`
//!   (flavor `legion.python`),
//!
//! and may hold `signature.json` (`{"inputs": [{"name", "datatype"}...],
//! "outputs": [...]}`), `input_example.json`, and `requirements.txt` (else
//! the source's `requirements.txt` is what serving installs).

use std::path::{Path, PathBuf};

use legion_sdk::*;

struct Python;

const IMAGE: &str = "python:3.11-slim";
/// Largest input example kept in the manifest.
const MAX_EXAMPLE: u64 = 64 << 10;

fn base_dir(root: &str, request: &TrainingRequest) -> PathBuf {
    let root = Path::new(root);
    match &request.work_dir {
        Some(dir) => root.join(dir),
        None => root.to_path_buf(),
    }
}

fn requirement_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Hyper-parameter names become `LEGION_PARAM_<NAME>`: upper case, with
/// anything but letters and digits as `_`.
fn param_env_name(key: &str) -> String {
    let cleaned: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("LEGION_PARAM_{cleaned}")
}

impl Trainer for Python {
    fn describe() -> ToolchainInfo {
        ToolchainInfo::new(
            "python",
            env!("CARGO_PKG_VERSION"),
            "runs a Python training script with its requirements.txt",
        )
        .default_image(IMAGE)
    }

    fn plan_training(request: TrainingRequest) -> Result<Plan, ToolchainError> {
        let entrypoint = request
            .entrypoint
            .clone()
            .unwrap_or_else(|| "train.py".to_string());
        let base = base_dir(SOURCE_DIR, &request);
        if !base.join(&entrypoint).is_file() {
            return Err(ToolchainError::invalid(format!(
                "entrypoint: {entrypoint} is not a file in the source"
            )));
        }
        let requirements = match std::fs::read_to_string(base.join("requirements.txt")) {
            Ok(text) => requirement_lines(&text),
            Err(_) => Vec::new(),
        };
        let mut step = Step::new("train", request.image_or(IMAGE))
            .command(["python", entrypoint.as_str()])
            .args(request.args.iter().cloned())
            .resources(request.resources);
        for kv in &request.env {
            step = step.env(kv.key.clone(), kv.value.clone());
        }
        let params: serde_json::Map<String, serde_json::Value> = request
            .hyper_parameters
            .iter()
            .map(|kv| (kv.key.clone(), serde_json::Value::String(kv.value.clone())))
            .collect();
        step = step.env(
            "LEGION_PARAMS",
            serde_json::Value::Object(params).to_string(),
        );
        for kv in &request.hyper_parameters {
            step = step.env(param_env_name(&kv.key), kv.value.clone());
        }
        if let Some(dir) = &request.work_dir {
            step = step.working_dir(dir.clone());
        }
        Ok(Plan::new().step(step).python(requirements))
    }

    fn collect_training(request: TrainingRequest) -> Result<ModelManifest, ToolchainError> {
        let model = Path::new(OUTPUT_DIR).join("model");
        if !model.is_dir() {
            return Err(ToolchainError::missing(
                "the script wrote no model: save it to $LEGION_OUTPUT_DIR/model/ (model.pkl, model.joblib, or predict.py)",
            ));
        }
        let flavor = if model.join("predict.py").is_file() {
            "legion.python"
        } else if model.join("model.pkl").is_file() || model.join("model.joblib").is_file() {
            "sklearn"
        } else {
            return Err(ToolchainError::missing(
                "$LEGION_OUTPUT_DIR/model/ has neither model.pkl, model.joblib nor predict.py",
            ));
        };
        let mut manifest = ModelManifest::new(flavor, "model");
        if let Ok(text) = std::fs::read_to_string(model.join("signature.json")) {
            manifest.signature = Some(parse_signature(&text)?);
        }
        if let Ok(meta) = std::fs::metadata(model.join("input_example.json")) {
            if meta.len() <= MAX_EXAMPLE {
                let text =
                    std::fs::read_to_string(model.join("input_example.json")).unwrap_or_default();
                if serde_json::from_str::<serde_json::Value>(&text).is_err() {
                    return Err(ToolchainError::invalid(
                        "model/input_example.json is not JSON",
                    ));
                }
                manifest.input_example = Some(text);
            }
        }
        let reqs = std::fs::read_to_string(model.join("requirements.txt"))
            .or_else(|_| {
                std::fs::read_to_string(base_dir(SOURCE_DIR, &request).join("requirements.txt"))
            })
            .unwrap_or_default();
        manifest.requirements = requirement_lines(&reqs);
        Ok(manifest)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    #[serde(default)]
    inputs: Vec<ColumnFile>,
    #[serde(default)]
    outputs: Vec<ColumnFile>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnFile {
    name: Option<String>,
    datatype: String,
    #[serde(default)]
    shape: Vec<i64>,
    #[serde(default)]
    optional: bool,
}

fn parse_signature(text: &str) -> Result<Signature, ToolchainError> {
    let file: SignatureFile = serde_json::from_str(text)
        .map_err(|e| ToolchainError::invalid(format!("model/signature.json: {e}")))?;
    let conv = |cols: Vec<ColumnFile>| {
        cols.into_iter()
            .map(|c| TensorSpec {
                name: c.name,
                datatype: c.datatype,
                shape: c.shape,
                optional: c.optional,
            })
            .collect()
    };
    Ok(Signature {
        inputs: conv(file.inputs),
        outputs: conv(file.outputs),
    })
}

export_toolchain!(Python);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_become_env_names() {
        assert_eq!(param_env_name("n_estimators"), "LEGION_PARAM_N_ESTIMATORS");
        assert_eq!(param_env_name("l1-ratio"), "LEGION_PARAM_L1_RATIO");
    }

    #[test]
    fn signature_file_is_strict() {
        let sig =
            parse_signature(r#"{"inputs": [{"name": "x", "datatype": "double"}], "outputs": []}"#)
                .unwrap();
        assert_eq!(sig.inputs[0].name.as_deref(), Some("x"));
        assert!(parse_signature(r#"{"inputs": [{"name": "x"}]}"#).is_err());
    }
}
