//! Built-in `docker-rest` packager: packages a stored model as an OCI image
//! whose entrypoint is the static `legion-serve` binary, serving the model
//! over REST (Open Inference Protocol v2, MLflow's `/invocations`, Legion's
//! `/api/model/invoke`).
//!
//! The image, layer by layer on top of the base (docs/packaging.md):
//! the model's own layer (`/model`, reused byte for byte from training),
//! the server (`/opt/legion/bin/legion-serve`), and the model's Python
//! requirements installed for the base's Python (`/opt/legion/python`, on
//! `PYTHONPATH`). The server's settings are environment variables, so a
//! repackage that changes only an argument rebuilds no layer.
//!
//! Arguments (`--arg key=value`) are typed and checked here; an unknown or
//! malformed one is an `invalid-request` naming it.

use legion_sdk::*;

struct DockerRest;

/// Base image for real use: the official Python slim image (Debian
/// bookworm), whose config names its Python version in `PYTHON_VERSION`.
const DEFAULT_BASE: &str = "docker.io/library/python:3.11-slim-bookworm";
/// Where the server binary goes.
const SERVER_PATH: &str = "/opt/legion/bin/legion-serve";
/// Where the Python requirements go (on `PYTHONPATH`).
const PYTHON_TARGET: &str = "/opt/legion/python";
/// The user the server runs as: numeric, so the base needs no passwd entry.
const USER: &str = "1000:1000";
/// Flavors the Legion model server loads.
const FLAVORS: &[&str] = &["python_function", "sklearn", "legion.python"];

/// One documented argument: name, whole-number bounds (none: text),
/// default, description. `describe` declares them typed, so the host
/// refuses a value out of bounds before the plugin is called; `parse`
/// checks again for hosts that do not.
/// Inclusive bounds of a whole-number argument.
type Bounds = Option<(u32, u32)>;

const ARGUMENTS: &[(&str, Bounds, &str, &str)] = &[
    (
        "port",
        Some((1, 65535)),
        "8080",
        "port the server listens on",
    ),
    ("workers", Some((1, 64)), "1", "Python worker processes"),
    (
        "max-batch-size",
        Some((1, 100_000)),
        "256",
        "most rows merged into one predict call",
    ),
    (
        "max-batch-delay-ms",
        Some((0, 10_000)),
        "2",
        "longest wait for more requests to batch, in ms",
    ),
    (
        "timeout-ms",
        Some((1, 3_600_000)),
        "30000",
        "time a request may take before a 504, in ms",
    ),
    (
        "image-name",
        None,
        "{name}:{version}",
        "name of the image: `{name}` and `{version}` are the model's",
    ),
    (
        "base-image",
        None,
        DEFAULT_BASE,
        "base image with Python 3 (`--base` wins over it)",
    ),
];

/// The checked arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Arguments {
    port: u16,
    workers: u32,
    max_batch_size: u32,
    max_batch_delay_ms: u32,
    timeout_ms: u32,
    image_name: String,
    base_image: String,
}

fn default_of(name: &str) -> &'static str {
    ARGUMENTS
        .iter()
        .find(|a| a.0 == name)
        .map(|a| a.2)
        .unwrap_or_default()
}

fn int_arg(args: &[KeyValue], name: &str) -> Result<u32, ToolchainError> {
    let (min, max) = ARGUMENTS
        .iter()
        .find(|a| a.0 == name)
        .and_then(|a| a.1)
        .unwrap_or((0, u32::MAX));
    let text = lookup(args, name).unwrap_or(default_of(name));
    match text.trim().parse::<u32>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(ToolchainError::invalid(format!(
            "argument '{name}': '{text}' is not a whole number from {min} to {max}"
        ))),
    }
}

impl Arguments {
    fn parse(args: &[KeyValue]) -> Result<Self, ToolchainError> {
        let mut seen = std::collections::BTreeSet::new();
        for kv in args {
            if !ARGUMENTS.iter().any(|a| a.0 == kv.key) {
                let known: Vec<&str> = ARGUMENTS.iter().map(|a| a.0).collect();
                return Err(ToolchainError::invalid(format!(
                    "unknown argument '{}': docker-rest takes {}",
                    kv.key,
                    known.join(", ")
                )));
            }
            if !seen.insert(kv.key.as_str()) {
                return Err(ToolchainError::invalid(format!(
                    "argument '{}' is given twice",
                    kv.key
                )));
            }
        }
        let image_name = lookup(args, "image-name")
            .unwrap_or(default_of("image-name"))
            .to_string();
        check_template(&image_name)?;
        let base_image = lookup(args, "base-image")
            .unwrap_or(DEFAULT_BASE)
            .trim()
            .to_string();
        if base_image.is_empty() || base_image.contains(char::is_whitespace) {
            return Err(ToolchainError::invalid(format!(
                "argument 'base-image': '{base_image}' is not an image reference"
            )));
        }
        Ok(Arguments {
            port: int_arg(args, "port")? as u16,
            workers: int_arg(args, "workers")?,
            max_batch_size: int_arg(args, "max-batch-size")?,
            max_batch_delay_ms: int_arg(args, "max-batch-delay-ms")?,
            timeout_ms: int_arg(args, "timeout-ms")?,
            image_name,
            base_image,
        })
    }

    /// The server's settings as its environment variables.
    fn server_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LEGION_SERVE_PORT", self.port.to_string()),
            ("LEGION_SERVE_WORKERS", self.workers.to_string()),
            (
                "LEGION_SERVE_MAX_BATCH_SIZE",
                self.max_batch_size.to_string(),
            ),
            (
                "LEGION_SERVE_MAX_BATCH_DELAY_MS",
                self.max_batch_delay_ms.to_string(),
            ),
            ("LEGION_SERVE_TIMEOUT_MS", self.timeout_ms.to_string()),
        ]
    }
}

/// An image name template may use `{name}` and `{version}` and otherwise
/// only what a repository path and tag allow.
fn check_template(template: &str) -> Result<(), ToolchainError> {
    let stripped = template.replace("{name}", "n").replace("{version}", "v");
    let ok = !stripped.is_empty()
        && stripped
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c))
        && stripped.matches(':').count() <= 1
        && !stripped.starts_with(['/', ':', '.', '-']);
    if ok {
        Ok(())
    } else {
        Err(ToolchainError::invalid(format!(
            "argument 'image-name': '{template}' is not REPOSITORY[:TAG] in lower case (placeholders {{name}}, {{version}})"
        )))
    }
}

fn render(template: &str, model: &ModelId) -> String {
    // Model names and versions are checked by the host; a version may carry
    // a `+`, which a tag may not.
    template
        .replace("{name}", &model.name.to_ascii_lowercase())
        .replace("{version}", &model.version.replace('+', "_"))
}

impl Packager for DockerRest {
    fn describe() -> ToolchainInfo {
        let mut info = ToolchainInfo::new(
            "docker-rest",
            env!("CARGO_PKG_VERSION"),
            "packages a model as an OCI image serving it over REST with legion-serve",
        )
        .default_image(DEFAULT_BASE);
        for (name, bounds, default, description) in ARGUMENTS {
            let p = match bounds {
                Some((lo, hi)) => ParameterInfo::integer(*name, Some(*lo as i64), Some(*hi as i64)),
                None => ParameterInfo::text(*name),
            };
            info = info.parameter(p.default(*default).describe(*description));
        }
        info
    }

    fn plan_packaging(request: PackagingRequest) -> Result<ImagePlan, ToolchainError> {
        let args = Arguments::parse(&request.arguments)?;
        let flavor = request.manifest.flavor.as_str();
        if !FLAVORS.contains(&flavor) {
            return Err(ToolchainError::Unsupported(format!(
                "model flavor '{flavor}': docker-rest serves {}",
                FLAVORS.join(", ")
            )));
        }
        let base = request
            .base_image
            .clone()
            .unwrap_or(args.base_image.clone());
        let model = &request.model;
        let mut plan = ImagePlan::new(base.clone())
            .layer(Layer::Model)
            .layer(Layer::LegionServer(SERVER_PATH.to_string()))
            .layer(Layer::PythonPackages(PythonLayer {
                target: PYTHON_TARGET.to_string(),
                requirements: request.manifest.requirements.clone(),
            }))
            .entrypoint([SERVER_PATH])
            .env("LEGION_MODEL_ROOT", "/")
            .env("LEGION_MODEL_NAME", &model.name)
            .env("LEGION_MODEL_VERSION", &model.version)
            .env("LEGION_PYTHON", "python3")
            .env("LEGION_SERVE_HOST", "0.0.0.0")
            .env("PYTHONPATH", PYTHON_TARGET)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .expose(args.port);
        for (key, value) in args.server_env() {
            plan = plan.env(key, value);
        }
        plan.working_dir = Some("/opt/legion".to_string());
        plan.user = Some(USER.to_string());
        let label = |k: &str, v: &str| KeyValue::new(k, v);
        plan.labels = vec![
            label("org.opencontainers.image.title", &model.name),
            label("org.opencontainers.image.version", &model.version),
            label(
                "org.opencontainers.image.description",
                &format!(
                    "{} {} served over REST by legion-serve",
                    model.name, model.version
                ),
            ),
            label("org.opencontainers.image.base.name", &base),
            label(
                "org.opencontainers.image.ref.name",
                &render(&args.image_name, model),
            ),
            label("org.legion-platform.model.name", &model.name),
            label("org.legion-platform.model.version", &model.version),
            label("org.legion-platform.model.digest", &request.model_digest),
            label("org.legion-platform.model.flavor", flavor),
        ];
        Ok(plan)
    }
}

impl Server for DockerRest {
    fn plan_serving(request: ServingRequest) -> Result<ServicePlan, ToolchainError> {
        let args = Arguments::parse(&request.arguments)?;
        if request.max_replicas < request.min_replicas.max(1) {
            return Err(ToolchainError::invalid(format!(
                "max-replicas {} is below min-replicas {} (or zero)",
                request.max_replicas, request.min_replicas
            )));
        }
        let mut plan = ServicePlan::for_image(&request);
        // The port the image listens on follows the port asked for.
        plan.port = request.port.unwrap_or(args.port);
        let mut env = vec![KeyValue::new("LEGION_SERVE_PORT", plan.port.to_string())];
        for (key, value) in args.server_env().into_iter().skip(1) {
            env.push(KeyValue::new(key, value));
        }
        plan.env = env;
        // Loading a model takes seconds: probe readiness often, liveness
        // is answered while the model loads.
        plan.health.initial_delay_seconds = 1;
        plan.health.period_seconds = 5;
        Ok(plan)
    }
}

export_toolchain!(DockerRest);

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue::new(k, v)
    }

    #[test]
    fn defaults_parse_and_match_describe() {
        let args = Arguments::parse(&[]).unwrap();
        assert_eq!(args.port, 8080);
        assert_eq!(args.workers, 1);
        assert_eq!(args.base_image, DEFAULT_BASE);
        let info = DockerRest::describe();
        assert_eq!(info.parameters.len(), ARGUMENTS.len());
    }

    #[test]
    fn bad_arguments_name_themselves() {
        for (args, needle) in [
            (vec![kv("prot", "1")], "unknown argument 'prot'"),
            (vec![kv("port", "0")], "argument 'port'"),
            (vec![kv("port", "70000")], "argument 'port'"),
            (vec![kv("workers", "two")], "argument 'workers'"),
            (vec![kv("image-name", "Models/X")], "argument 'image-name'"),
            (vec![kv("port", "1"), kv("port", "2")], "given twice"),
        ] {
            let err = Arguments::parse(&args).unwrap_err();
            let ToolchainError::InvalidRequest(m) = err else {
                panic!("{args:?}: not invalid-request")
            };
            assert!(m.contains(needle), "{m}");
        }
    }

    #[test]
    fn serving_plans_probe_the_oip_health_paths_on_the_packaged_port() {
        let request = |port, args: Vec<KeyValue>, min, max| ServingRequest {
            model: ModelId {
                name: "wine".into(),
                version: "1".into(),
            },
            image: "r/wine@sha256:0".into(),
            manifest: ModelManifest::new("python_function", "model"),
            port,
            min_replicas: min,
            max_replicas: max,
            resources: Resources::none(),
            arguments: args,
        };
        let plan = DockerRest::plan_serving(request(None, vec![kv("port", "9000")], 1, 3)).unwrap();
        assert_eq!(plan.port, 9000);
        assert_eq!(plan.health.readiness_path, "/v2/health/ready");
        assert_eq!(plan.health.liveness_path, "/v2/health/live");
        assert_eq!((plan.min_replicas, plan.max_replicas), (1, 3));
        assert!(plan
            .env
            .iter()
            .any(|e| e.key == "LEGION_SERVE_PORT" && e.value == "9000"));
        let asked = DockerRest::plan_serving(request(Some(7000), vec![], 0, 1)).unwrap();
        assert_eq!(asked.port, 7000);
        assert!(DockerRest::plan_serving(request(None, vec![], 2, 1)).is_err());
        assert!(DockerRest::plan_serving(request(None, vec![kv("nope", "1")], 1, 1)).is_err());
    }

    #[test]
    fn template_renders_model_names() {
        let model = ModelId {
            name: "Wine".into(),
            version: "1.0+b".into(),
        };
        assert_eq!(
            render("models/{name}:{version}", &model),
            "models/wine:1.0_b"
        );
    }
}
