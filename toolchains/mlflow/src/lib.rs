//! Built-in `mlflow` trainer: plans `mlflow run` of an MLproject. Training
//! through MLflow is filled in by the training issue; until then this plugin
//! describes itself and refuses to plan with an `unsupported` error.

use legion_sdk::*;

struct Mlflow;

impl Trainer for Mlflow {
    fn describe() -> ToolchainInfo {
        ToolchainInfo::new(
            "mlflow",
            env!("CARGO_PKG_VERSION"),
            "trains an MLflow project (MLproject) with `mlflow run`",
        )
        .default_image("python:3.11-slim")
    }

    fn plan_training(_request: TrainingRequest) -> Result<Plan, ToolchainError> {
        Err(ToolchainError::Unsupported(
            "mlflow training is not available in this Legion version".into(),
        ))
    }
}

export_toolchain!(Mlflow);
