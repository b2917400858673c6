//! A trainer built for `legion:toolchain@0.1.0`: one step echoing its
//! hyper-parameters, a `legion.python` model collected from the output.

wit_bindgen::generate!({ world: "trainer-plugin", path: "../../../../wit/0.1.0" });

use exports::legion::toolchain::trainer::Guest;
use legion::toolchain::types::*;

struct Old;

impl Guest for Old {
    fn describe() -> ToolchainInfo {
        ToolchainInfo {
            name: "old".into(),
            version: "0.1.0".into(),
            description: "built for contract 0.1.0".into(),
            default_image: "python:3.11-slim".into(),
            // 0.1.0's kind is a free word: documented, not checked.
            parameters: vec![ParameterInfo {
                name: "epochs".into(),
                kind: "int".into(),
                default: Some("1".into()),
                description: "passes".into(),
            }],
        }
    }

    fn plan_training(request: TrainingRequest) -> Result<Plan, ToolchainError> {
        let params: Vec<String> = request
            .hyper_parameters
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect();
        let script = format!(
            "mkdir -p \"$LEGION_OUTPUT_DIR/model\" && printf 'def load(d):\\n    return None\\ndef predict(s, f):\\n    return f\\n' > \"$LEGION_OUTPUT_DIR/model/predict.py\" && echo 'contract 0.1.0 plan: {}'",
            params.join(" ")
        );
        Ok(Plan {
            steps: vec![Step {
                name: "train".into(),
                image: "python:3.11-slim".into(),
                command: vec!["sh".into(), "-c".into(), script],
                args: vec![],
                env: vec![],
                working_dir: None,
                resources: Resources {
                    cpu_millis: None,
                    memory_bytes: None,
                    gpus: None,
                },
            }],
            python: None,
        })
    }

    fn collect_training(_request: TrainingRequest) -> Result<ModelManifest, ToolchainError> {
        Ok(ModelManifest {
            flavor: "legion.python".into(),
            model_path: "model".into(),
            signature: None,
            input_example: None,
            requirements: vec![],
            run_id: None,
            metadata: vec![],
        })
    }
}

export!(Old);
