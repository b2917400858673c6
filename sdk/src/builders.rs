//! Typed builders over the generated records, so an author writes
//! `Step::new("train", image).command(["python", "train.py"])` instead of
//! filling every field by hand.

use crate::bindings::legion::toolchain::types::HealthCheck;
use crate::{
    ImagePlan, IntegerRange, KeyValue, Layer, ModelManifest, NumberRange, ParameterInfo,
    ParameterType, Plan, PythonEnvironment, Resources, ServicePlan, ServingRequest, Step,
    ToolchainError, ToolchainInfo, TrainingRequest,
};

fn strings<I, S>(items: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    items.into_iter().map(Into::into).collect()
}

impl KeyValue {
    /// A key and its value.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Finds `key` in a key-value list.
pub fn lookup<'a>(pairs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
}

impl Resources {
    /// No request: the executor's defaults.
    pub fn none() -> Self {
        Resources {
            cpu_millis: None,
            memory_bytes: None,
            gpus: None,
        }
    }
}

impl Step {
    /// A step named `name` running in `image`, with no command yet.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        Step {
            name: name.into(),
            image: image.into(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            resources: Resources::none(),
        }
    }
    /// Sets the program and its leading arguments.
    pub fn command<I: IntoIterator<Item = S>, S: Into<String>>(mut self, command: I) -> Self {
        self.command = strings(command);
        self
    }
    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(strings(args));
        self
    }
    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }
    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push(KeyValue::new(key, value));
        self
    }
    /// Sets the working directory, relative to the source folder.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }
    /// Sets the compute the step asks for.
    pub fn resources(mut self, resources: Resources) -> Self {
        self.resources = resources;
        self
    }
}

impl Plan {
    /// An empty plan.
    pub fn new() -> Self {
        Plan {
            steps: Vec::new(),
            python: None,
        }
    }
    /// Appends a step.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }
    /// Asks for a Python environment with these requirement lines.
    pub fn python<I: IntoIterator<Item = S>, S: Into<String>>(mut self, requirements: I) -> Self {
        self.python = Some(PythonEnvironment {
            python_version: None,
            requirements: strings(requirements),
        });
        self
    }
}

impl Default for Plan {
    fn default() -> Self {
        Self::new()
    }
}

impl ToolchainInfo {
    /// A description with no default image and no parameters.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        ToolchainInfo {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            default_image: String::new(),
            parameters: Vec::new(),
        }
    }
    /// Sets the image steps use by default.
    pub fn default_image(mut self, image: impl Into<String>) -> Self {
        self.default_image = image.into();
        self
    }
    /// Documents a parameter (built with [`ParameterInfo::text`],
    /// [`ParameterInfo::integer`], …). The host checks the values users
    /// give against it before calling the plugin.
    pub fn parameter(mut self, parameter: ParameterInfo) -> Self {
        self.parameters.push(parameter);
        self
    }
}

impl ParameterInfo {
    /// A parameter of type `kind`: optional, no default, no description.
    pub fn new(name: impl Into<String>, kind: ParameterType) -> Self {
        ParameterInfo {
            name: name.into(),
            kind,
            required: false,
            default: None,
            description: String::new(),
        }
    }
    /// Any text.
    pub fn text(name: impl Into<String>) -> Self {
        Self::new(name, ParameterType::Text)
    }
    /// A whole number, with inclusive bounds (`None`: unbounded).
    pub fn integer(name: impl Into<String>, min: Option<i64>, max: Option<i64>) -> Self {
        Self::new(name, ParameterType::Integer(IntegerRange { min, max }))
    }
    /// A finite number, with inclusive bounds (`None`: unbounded).
    pub fn number(name: impl Into<String>, min: Option<f64>, max: Option<f64>) -> Self {
        Self::new(name, ParameterType::Number(NumberRange { min, max }))
    }
    /// `true` or `false`.
    pub fn boolean(name: impl Into<String>) -> Self {
        Self::new(name, ParameterType::Boolean)
    }
    /// A path relative to the source folder.
    pub fn path(name: impl Into<String>) -> Self {
        Self::new(name, ParameterType::Path)
    }
    /// One of `options`.
    pub fn choice<I: IntoIterator<Item = S>, S: Into<String>>(
        name: impl Into<String>,
        options: I,
    ) -> Self {
        Self::new(
            name,
            ParameterType::Choice(options.into_iter().map(Into::into).collect()),
        )
    }
    /// The value used when the parameter is not given.
    pub fn default(mut self, value: impl Into<String>) -> Self {
        self.default = Some(value.into());
        self.required = false;
        self
    }
    /// Refuses calls without it.
    pub fn required(mut self) -> Self {
        self.required = true;
        self.default = None;
        self
    }
    /// What it does.
    pub fn describe(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }
}

impl TrainingRequest {
    /// The hyper-parameter `key`, if given.
    pub fn hyper_parameter(&self, key: &str) -> Option<&str> {
        lookup(&self.hyper_parameters, key)
    }
    /// The image to use: the request's override or `default`.
    pub fn image_or(&self, default: &str) -> String {
        self.image.clone().unwrap_or_else(|| default.to_string())
    }
}

impl ModelManifest {
    /// A manifest for a model of `flavor` stored at `model_path` inside the output.
    pub fn new(flavor: impl Into<String>, model_path: impl Into<String>) -> Self {
        ModelManifest {
            flavor: flavor.into(),
            model_path: model_path.into(),
            signature: None,
            input_example: None,
            requirements: Vec::new(),
            run_id: None,
            metadata: Vec::new(),
        }
    }
}

impl ImagePlan {
    /// A plan on `base` with no layers.
    pub fn new(base: impl Into<String>) -> Self {
        ImagePlan {
            base: base.into(),
            layers: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            exposed_ports: Vec::new(),
            labels: Vec::new(),
            working_dir: None,
            user: None,
        }
    }
    /// Appends a layer.
    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }
    /// Sets the entrypoint.
    pub fn entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, entrypoint: I) -> Self {
        self.entrypoint = strings(entrypoint);
        self
    }
    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push(KeyValue::new(key, value));
        self
    }
    /// Exposes a port.
    pub fn expose(mut self, port: u16) -> Self {
        self.exposed_ports.push(port);
        self
    }
}

impl ServicePlan {
    /// Runs `request.image` with its own entrypoint on the requested port
    /// (8080 if none), probing Legion's OIP health paths.
    pub fn for_image(request: &ServingRequest) -> Self {
        ServicePlan {
            image: request.image.clone(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            port: request.port.unwrap_or(8080),
            min_replicas: request.min_replicas,
            max_replicas: request.max_replicas,
            resources: request.resources,
            health: HealthCheck {
                liveness_path: "/v2/health/live".to_string(),
                readiness_path: "/v2/health/ready".to_string(),
                initial_delay_seconds: 1,
                period_seconds: 5,
            },
        }
    }
}

impl ToolchainError {
    /// The request is wrong; `message` names the field.
    pub fn invalid(message: impl Into<String>) -> Self {
        ToolchainError::InvalidRequest(message.into())
    }
    /// A needed file is missing.
    pub fn missing(message: impl Into<String>) -> Self {
        ToolchainError::MissingOutput(message.into())
    }
    /// Anything else.
    pub fn other(message: impl Into<String>) -> Self {
        ToolchainError::Other(message.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> TrainingRequest {
        let mut r = crate::testing::training_request();
        r.hyper_parameters = vec![KeyValue::new("alpha", "0.5")];
        r
    }

    #[test]
    fn step_builder_fills_every_field() {
        let step = Step::new("train", "img")
            .command(["python", "train.py"])
            .args(["--a", "1"])
            .arg("--b")
            .env("K", "V")
            .working_dir("sub")
            .resources(Resources {
                cpu_millis: Some(500),
                memory_bytes: None,
                gpus: Some(1),
            });
        assert_eq!(step.command, ["python", "train.py"]);
        assert_eq!(step.args, ["--a", "1", "--b"]);
        assert_eq!(step.env[0].key, "K");
        assert_eq!(step.working_dir.as_deref(), Some("sub"));
        assert_eq!(step.resources.gpus, Some(1));
    }

    #[test]
    fn plan_builder_keeps_step_order_and_requirements() {
        let plan = Plan::new()
            .step(Step::new("a", "i"))
            .step(Step::new("b", "i"))
            .python(["numpy==2.0"]);
        let names: Vec<_> = plan.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            plan.python.map(|p| p.requirements),
            Some(vec!["numpy==2.0".to_string()])
        );
    }

    #[test]
    fn request_helpers() {
        let r = request();
        assert_eq!(r.hyper_parameter("alpha"), Some("0.5"));
        assert_eq!(r.hyper_parameter("beta"), None);
        assert_eq!(r.image_or("default"), "default");
    }

    #[test]
    fn config_is_settable_in_native_tests() {
        assert_eq!(crate::host::config("k"), None);
        crate::host::set_test_config("k", "v");
        assert_eq!(crate::host::config("k").as_deref(), Some("v"));
    }

    #[test]
    fn default_collect_is_unsupported() {
        struct T;
        impl crate::Trainer for T {
            fn describe() -> ToolchainInfo {
                ToolchainInfo::new("t", "0", "")
            }
            fn plan_training(_: TrainingRequest) -> Result<Plan, ToolchainError> {
                Ok(Plan::new())
            }
        }
        let err = <T as crate::Trainer>::collect_training(request()).unwrap_err();
        assert!(matches!(err, ToolchainError::Unsupported(_)));
    }
}
