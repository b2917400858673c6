//! Built-in `mlflow` trainer.
//!
//! `plan-training` reads the project's `MLproject` inside the sandbox:
//! the entry point must exist, every `-P` parameter must be declared and
//! have the declared type (float, int, string, path, uri), required ones
//! must be given; then it plans `mlflow run` with the local env manager in
//! a venv built from the project's `python_env.yaml` (or `conda.yaml`'s pip
//! dependencies, or `requirements.txt`) plus `mlflow-skinny`, tracking to a
//! file store inside the run's output (or to the admin's `tracking_uri`).
//!
//! `collect-training` finds the `MLmodel` files in the output, requires
//! exactly one `python_function` model, and returns its flavor, signature,
//! input example and requirements.

mod mlmodel;
mod project;

use legion_sdk::*;

struct Mlflow;

const IMAGE: &str = "python:3.11-slim";

impl Trainer for Mlflow {
    fn describe() -> ToolchainInfo {
        ToolchainInfo::new(
            "mlflow",
            env!("CARGO_PKG_VERSION"),
            "trains an MLflow project (MLproject) with `mlflow run`",
        )
        .default_image(IMAGE)
    }

    fn plan_training(request: TrainingRequest) -> Result<Plan, ToolchainError> {
        let root = match &request.work_dir {
            Some(d) => source_dir().join(d),
            None => source_dir(),
        };
        let project = project::Project::read(&root)?;
        let entry = request
            .entrypoint
            .clone()
            .unwrap_or_else(|| "main".to_string());
        let params = project.check_parameters(&entry, &request.hyper_parameters, &root)?;
        let requirements = project.requirements(&root)?;

        let tracking = host::config("tracking_uri")
            .unwrap_or_else(|| "file://${LEGION_OUTPUT_DIR}/mlruns".to_string());
        let mut step = Step::new("train", request.image_or(IMAGE))
            .command(["mlflow", "run", "."])
            .args([
                "-e",
                entry.as_str(),
                "--env-manager",
                "local",
                "--experiment-name",
            ])
            .arg(request.model.name.clone())
            .args(["--run-name", "legion-${LEGION_RUN_ID}"])
            .env("MLFLOW_TRACKING_URI", tracking)
            // MLflow 3 refuses the file store unless told it is wanted.
            .env("MLFLOW_ALLOW_FILE_STORE", "true")
            .env("MLFLOW_EXPERIMENT_NAME", request.model.name.clone())
            .resources(request.resources);
        for (k, v) in &params {
            step = step.arg("-P").arg(format!("{k}={v}"));
        }
        for kv in &request.env {
            step = step.env(kv.key.clone(), kv.value.clone());
        }
        if let Some(dir) = &request.work_dir {
            step = step.working_dir(dir.clone());
        }
        let mut plan = Plan::new().step(step).python(requirements);
        if let Some(py) = plan.python.as_mut() {
            py.python_version = project.python_version(&root);
        }
        Ok(plan)
    }

    fn collect_training(_request: TrainingRequest) -> Result<ModelManifest, ToolchainError> {
        mlmodel::collect(&output_dir())
    }
}

export_toolchain!(Mlflow);
