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

fn base_dir(root: &Path, request: &TrainingRequest) -> PathBuf {
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
            "runs a Python training script with its requirements.txt; scores data in batch jobs",
        )
        .default_image(IMAGE)
        .parameter(
            ParameterInfo::text("prediction-column")
                .default("prediction")
                .describe("batch jobs: the column the predictions are written to"),
        )
        .parameter(
            ParameterInfo::choice("output-format", ["csv", "jsonl"])
                .default("csv")
                .describe("batch jobs: the format of the scored files"),
        )
    }

    fn plan_training(request: TrainingRequest) -> Result<Plan, ToolchainError> {
        let entrypoint = request
            .entrypoint
            .clone()
            .unwrap_or_else(|| "train.py".to_string());
        let base = base_dir(&source_dir(), &request);
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
        let model = output_dir().join("model");
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
                std::fs::read_to_string(base_dir(&source_dir(), &request).join("requirements.txt"))
            })
            .unwrap_or_default();
        manifest.requirements = requirement_lines(&reqs);
        Ok(manifest)
    }
}

/// The batch job's script (`python -c`): loads the model as the model
/// server does for its flavor and scores every data file.
const BATCH_PY: &str = include_str!("batch.py");

/// Runs `$LEGION_BATCH_SCRIPT` under its own file name in tracebacks.
const BATCH_LAUNCHER: &str =
    "import os; exec(compile(os.environ['LEGION_BATCH_SCRIPT'], 'legion-batch.py', 'exec'))";

/// Flavors the batch script loads.
const BATCH_FLAVORS: &[&str] = &["sklearn", "legion.python", "python_function"];

impl Batch for Python {
    fn plan_batch_inference(request: BatchRequest) -> Result<Plan, ToolchainError> {
        let manifest = &request.manifest;
        if !BATCH_FLAVORS.contains(&manifest.flavor.as_str()) {
            return Err(ToolchainError::Unsupported(format!(
                "model flavor '{}': the python toolchain scores {}",
                manifest.flavor,
                BATCH_FLAVORS.join(", ")
            )));
        }
        // The stored model is what `model-path` held at training time.
        let has_files = std::fs::read_dir(model_dir())
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if !has_files {
            return Err(ToolchainError::missing("the stored model has no files"));
        }
        let column = lookup(&request.arguments, "prediction-column").unwrap_or("prediction");
        let format = lookup(&request.arguments, "output-format").unwrap_or("csv");
        let step = Step::new(
            "score",
            request.image.clone().unwrap_or_else(|| IMAGE.to_string()),
        )
        // The script travels in the environment, so the step's command
        // line (in progress output and the log) stays one line.
        .command(["python", "-c", BATCH_LAUNCHER])
        .env("LEGION_BATCH_SCRIPT", BATCH_PY)
        .env("LEGION_BATCH_MODEL", "${LEGION_MODEL_DIR}")
        .env("LEGION_BATCH_FLAVOR", manifest.flavor.clone())
        .env("LEGION_BATCH_COLUMN", column)
        .env("LEGION_BATCH_FORMAT", format)
        .resources(request.resources);
        // What the model needs at serving time, and pandas to read the data.
        let mut requirements = manifest.requirements.clone();
        if !requirements.iter().any(|r| requirement_name(r) == "pandas") {
            requirements.push("pandas".to_string());
        }
        Ok(Plan::new().step(step).python(requirements))
    }
}

/// The distribution name a requirement line names (`pandas>=2` -> `pandas`).
fn requirement_name(line: &str) -> String {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
        .replace('_', "-")
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

    fn folders(source: &Path, output: &Path) -> testing::Folders {
        testing::Folders {
            source: Some(source.to_path_buf()),
            output: Some(output.to_path_buf()),
            model: Some(output.to_path_buf()),
        }
    }

    fn request() -> TrainingRequest {
        let mut r = testing::training_request();
        r.hyper_parameters = vec![KeyValue::new("alpha", "0.5")];
        r
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("legion-python-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn plans_and_collects_against_real_folders() {
        let (src, out) = (temp("src"), temp("out"));
        std::fs::write(src.join("train.py"), "").unwrap();
        std::fs::write(src.join("requirements.txt"), "scikit-learn==1.5.2\n# c\n").unwrap();
        testing::with_folders(folders(&src, &out), || {
            let plan = Python::plan_training(request()).unwrap();
            assert_eq!(plan.steps[0].command, ["python", "train.py"]);
            assert_eq!(plan.python.unwrap().requirements, ["scikit-learn==1.5.2"]);
            let err = Python::collect_training(request()).unwrap_err();
            assert!(matches!(err, ToolchainError::MissingOutput(_)));
            std::fs::create_dir_all(out.join("model")).unwrap();
            std::fs::write(out.join("model/model.pkl"), "").unwrap();
            let manifest = Python::collect_training(request()).unwrap();
            assert_eq!(manifest.flavor, "sklearn");
            assert_eq!(manifest.requirements, ["scikit-learn==1.5.2"]);
        });
        let _ = std::fs::remove_dir_all(&src);
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn batch_plans_score_with_the_models_requirements_and_pandas() {
        let model = temp("model");
        std::fs::write(model.join("model.pkl"), "").unwrap();
        let mut manifest = ModelManifest::new("sklearn", "model");
        manifest.requirements = vec!["scikit-learn==1.5.2".into()];
        let req = |manifest: ModelManifest| BatchRequest {
            model: request().model,
            model_digest: "sha256:x".into(),
            manifest,
            data: vec![],
            image: None,
            resources: Resources::none(),
            arguments: vec![KeyValue::new("prediction-column", "species")],
        };
        testing::with_folders(folders(&model, &model), || {
            let plan = Python::plan_batch_inference(req(manifest.clone())).unwrap();
            let env: Vec<_> = plan.steps[0]
                .env
                .iter()
                .map(|kv| (kv.key.as_str(), kv.value.as_str()))
                .collect();
            assert!(env.contains(&("LEGION_BATCH_MODEL", "${LEGION_MODEL_DIR}")));
            assert!(env.contains(&("LEGION_BATCH_COLUMN", "species")));
            assert_eq!(
                plan.python.unwrap().requirements,
                ["scikit-learn==1.5.2", "pandas"]
            );
            let mut onnx = manifest.clone();
            onnx.flavor = "onnx".into();
            assert!(matches!(
                Python::plan_batch_inference(req(onnx)),
                Err(ToolchainError::Unsupported(_))
            ));
        });
        let empty = temp("empty");
        testing::with_folders(folders(&empty, &empty), || {
            assert!(matches!(
                Python::plan_batch_inference(req(manifest.clone())),
                Err(ToolchainError::MissingOutput(_))
            ));
        });
        let _ = std::fs::remove_dir_all(&empty);
        assert_eq!(requirement_name("Pandas_x>=2"), "pandas-x");
        let _ = std::fs::remove_dir_all(&model);
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
