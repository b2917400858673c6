//! A trainer that does (almost) nothing: one step that writes an empty
//! model folder. It measures what the host itself costs per run — the API's
//! create path in `scripts/bench-api.sh` — with no toolchain work in the way.

use legion_sdk::*;

struct Noop;

impl Trainer for Noop {
    fn describe() -> ToolchainInfo {
        ToolchainInfo::new(
            "noop",
            env!("CARGO_PKG_VERSION"),
            "plans one step that does nothing",
        )
    }

    fn plan_training(request: TrainingRequest) -> Result<Plan, ToolchainError> {
        Ok(
            Plan::new().step(Step::new("noop", request.image_or("busybox")).command([
                "sh",
                "-c",
                "mkdir -p \"$LEGION_OUTPUT_DIR/model\"",
            ])),
        )
    }

    fn collect_training(_request: TrainingRequest) -> Result<ModelManifest, ToolchainError> {
        Ok(ModelManifest::new("legion.python", "model"))
    }
}

export_toolchain!(Noop);
