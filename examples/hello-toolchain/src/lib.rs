//! A minimal third-party Legion toolchain: runs a Python script from the
//! source with each hyper-parameter as `--key value`, and collects whatever
//! the script wrote to `$LEGION_OUTPUT_DIR/model`.

use legion_sdk::*;

struct Hello;

const IMAGE: &str = "python:3.11-slim";

impl Trainer for Hello {
    fn describe() -> ToolchainInfo {
        ToolchainInfo::new(
            "hello",
            env!("CARGO_PKG_VERSION"),
            "runs a Python script with --key value hyper-parameters",
        )
        .default_image(IMAGE)
        .parameter(
            ParameterInfo::text("greeting")
                .default("hello")
                .describe("passed to the script as --greeting"),
        )
    }

    fn plan_training(request: TrainingRequest) -> Result<Plan, ToolchainError> {
        let script = request
            .entrypoint
            .clone()
            .unwrap_or_else(|| "train.py".to_string());
        // The source is preopened read-only: refuse a plan for a script that is not there.
        let path = source_dir().join(&script);
        if !path.is_file() {
            return Err(ToolchainError::invalid(format!(
                "entrypoint: {script} is not a file in the source"
            )));
        }
        host::info(&format!(
            "planning {} {}",
            request.model.name, request.model.version
        ));
        let mut step = Step::new("train", request.image_or(IMAGE))
            .command(["python", script.as_str()])
            .args(request.args.iter().cloned())
            .resources(request.resources);
        if request.hyper_parameter("greeting").is_none() {
            step = step.args(["--greeting", "hello"]);
        }
        for kv in &request.hyper_parameters {
            step = step.arg(format!("--{}", kv.key)).arg(kv.value.clone());
        }
        for kv in &request.env {
            step = step.env(kv.key.clone(), kv.value.clone());
        }
        if let Some(dir) = &request.work_dir {
            step = step.working_dir(dir.clone());
        }
        let requirements = host::config("requirements").unwrap_or_default();
        Ok(Plan::new().step(step).python(
            requirements
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_string),
        ))
    }

    fn collect_training(_request: TrainingRequest) -> Result<ModelManifest, ToolchainError> {
        let model = output_dir().join("model");
        if !model.exists() {
            return Err(ToolchainError::missing(
                "the script wrote nothing to $LEGION_OUTPUT_DIR/model",
            ));
        }
        Ok(ModelManifest::new("legion.python", "model"))
    }
}

export_toolchain!(Hello);
