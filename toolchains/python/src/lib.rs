//! Built-in `python` trainer: runs `python ENTRYPOINT ARGS` from the source
//! with its `requirements.txt`. Collecting the model is filled in by the
//! training issue.

use legion_sdk::*;

struct Python;

const IMAGE: &str = "python:3.11-slim";

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
        let root = std::path::Path::new(SOURCE_DIR);
        let base = match &request.work_dir {
            Some(dir) => root.join(dir),
            None => root.to_path_buf(),
        };
        if !base.join(&entrypoint).is_file() {
            return Err(ToolchainError::invalid(format!(
                "entrypoint: {entrypoint} is not a file in the source"
            )));
        }
        let requirements =
            std::fs::read_to_string(base.join("requirements.txt")).unwrap_or_default();
        let mut step = Step::new("train", request.image_or(IMAGE))
            .command(["python", entrypoint.as_str()])
            .args(request.args.iter().cloned())
            .resources(request.resources);
        for kv in request.env.iter().chain(&request.hyper_parameters) {
            step = step.env(kv.key.clone(), kv.value.clone());
        }
        if let Some(dir) = &request.work_dir {
            step = step.working_dir(dir.clone());
        }
        let lines = requirements
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        Ok(Plan::new().step(step).python(lines.map(str::to_string)))
    }
}

export_toolchain!(Python);
