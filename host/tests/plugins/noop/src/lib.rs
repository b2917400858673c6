//! A trainer that does (almost) nothing: one step that writes a model
//! folder with a pass-through `predict.py`. It measures what the host itself costs per run — the API's
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
        // `HOLD` (the training's env): a file the step waits for, so a
        // test can keep runs queued behind it for as long as it needs.
        let mut step = Step::new("noop", request.image_or("busybox")).command([
            "sh",
            "-c",
            "mkdir -p \"$LEGION_OUTPUT_DIR/model\"; printf 'def load(d):\\n    return None\\ndef predict(s, f):\\n    return f\\n' > \"$LEGION_OUTPUT_DIR/model/predict.py\"; while [ -n \"${HOLD:-}\" ] && [ ! -e \"$HOLD\" ]; do sleep 0.1; done",
        ]);
        for kv in &request.env {
            step = step.env(kv.key.clone(), kv.value.clone());
        }
        Ok(Plan::new().step(step))
    }

    fn collect_training(_request: TrainingRequest) -> Result<ModelManifest, ToolchainError> {
        Ok(ModelManifest::new("legion.python", "model"))
    }
}

export_toolchain!(Noop);
