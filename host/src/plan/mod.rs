//! The host's own model of what crosses the toolchain contract: requests,
//! plans, manifests. These are what the CLI reads, the store keeps, the
//! executors run and the API serves; `plugin::convert` maps them to and from
//! the generated WIT bindings.
//!
//! JSON spelling is camelCase, like the ODAHU resources users know. Every
//! optional field has a default, and unknown fields are refused so a typo is
//! an error that names the field rather than a silently ignored setting.
//! Every `list<key-value>` of the contract is one JSON shape, in requests
//! and plans alike: an object, `{"NAME": "value", …}` (a plan's `env` keeps
//! the plugin's order; see [`env_map`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub mod parameters;
mod policy;

pub use legion_serve::signature::{Signature, TensorSpec};
pub use policy::Policy;

/// Name/value pairs, in a stable order.
pub type Pairs = BTreeMap<String, String>;

/// `KEY=VALUE`, split at the first `=` (the key not empty): how the
/// command line and the API's forms spell one pair.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

/// `items` as [`Pairs`], refusing a key given twice; `field` names the
/// flag or field they came from.
pub fn unique_pairs(
    field: &str,
    items: impl IntoIterator<Item = (String, String)>,
) -> Result<Pairs, crate::Error> {
    let mut pairs = Pairs::new();
    for (k, v) in items {
        if pairs.contains_key(&k) {
            return Err(crate::Error::InvalidArgument {
                field: field.to_string(),
                message: format!("'{k}' is given twice"),
            });
        }
        pairs.insert(k, v);
    }
    Ok(pairs)
}

/// Compute a step or service asks for; `None` is the executor's default.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Resources {
    /// CPU in thousandths of a core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u32>,
    /// Memory in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// GPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
}

/// A plan's environment as a JSON object in the plugin's order — the
/// shape of every other name/value list (`hyperParameters`, `labels`, …).
/// Reads the list of `{"name", "value"}` objects too: runs stored before
/// the object shape still load.
pub mod env_map {
    use super::EnvVar;
    use serde::de::{MapAccess, SeqAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};

    /// `{"NAME": "value", …}`, in order.
    pub fn serialize<S: Serializer>(env: &[EnvVar], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(env.len()))?;
        for e in env {
            map.serialize_entry(&e.name, &e.value)?;
        }
        map.end()
    }

    /// An object (in document order) or a list of `{"name", "value"}`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EnvVar>, D::Error> {
        struct Env;
        impl<'de> Visitor<'de> for Env {
            type Value = Vec<EnvVar>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of NAME: value strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((name, value)) = a.next_entry::<String, String>()? {
                    out.push(EnvVar { name, value });
                }
                Ok(out)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(e) = a.next_element::<EnvVar>()? {
                    out.push(e);
                }
                Ok(out)
            }
        }
        d.deserialize_any(Env)
    }

    #[cfg(test)]
    mod tests {
        use crate::plan::Step;

        #[test]
        fn env_is_an_ordered_object_and_the_old_list_still_reads() {
            let step: Step =
                serde_json::from_str(r#"{"name": "s", "env": {"Z": "1", "A": "2"}}"#).unwrap();
            let names: Vec<&str> = step.env.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names, ["Z", "A"], "the plugin's order is kept");
            let text = serde_json::to_string(&step).unwrap();
            assert!(text.contains(r#""env":{"Z":"1","A":"2"}"#), "{text}");
            let old: Step = serde_json::from_str(
                r#"{"name": "s", "env": [{"name": "Z", "value": "1"}, {"name": "A", "value": "2"}]}"#,
            )
            .unwrap();
            assert_eq!(old, step);
            let err =
                serde_json::from_str::<Step>(r#"{"name": "s", "env": {"Z": 1}}"#).unwrap_err();
            assert!(err.to_string().contains("string"), "{err}");
        }
    }
}

/// One environment variable, kept in the order the plugin gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A model's name and version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelId {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
}

/// Where training code came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Source {
    /// Local folder or git URL.
    pub uri: String,
    /// Git reference asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Commit the reference resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// One input data set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataBinding {
    /// Where the data comes from.
    pub uri: String,
    /// Where it goes, relative to the run's data folder.
    pub local_path: String,
}

/// A training request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TrainingRequest {
    /// Model being trained.
    pub model: ModelId,
    /// Entry point; `None` is the toolchain's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    /// Extra arguments.
    pub args: Vec<String>,
    /// Hyper-parameters.
    pub hyper_parameters: Pairs,
    /// Environment variables.
    pub env: Pairs,
    /// Image override.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Compute asked for.
    pub resources: Resources,
    /// Where the code came from.
    pub source: Source,
    /// Input data.
    pub data: Vec<DataBinding>,
    /// Working directory inside the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<String>,
}

/// A Python environment a plan needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PythonEnvironment {
    /// Python version wanted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python_version: Option<String>,
    /// pip requirement lines.
    pub requirements: Vec<String>,
}

/// One process of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Step {
    /// Step name.
    pub name: String,
    /// Image on a cluster.
    pub image: String,
    /// Program and leading arguments.
    pub command: Vec<String>,
    /// Further arguments.
    pub args: Vec<String>,
    /// Environment, in the order the plugin gave it.
    #[serde(with = "env_map")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub env: Vec<EnvVar>,
    /// Working directory relative to the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Compute asked for.
    pub resources: Resources,
}

/// What a training toolchain wants run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Plan {
    /// Steps, in order.
    pub steps: Vec<Step>,
    /// Python environment, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonEnvironment>,
}

/// What a training produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ModelManifest {
    /// How to load the model.
    pub flavor: String,
    /// Model folder or file, relative to the output folder.
    pub model_path: String,
    /// Signature, if recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub signature: Option<Signature>,
    /// Input example as JSON text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_example: Option<String>,
    /// Serving requirements.
    pub requirements: Vec<String>,
    /// Toolchain's run id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Further facts.
    pub metadata: Pairs,
}

/// An image registry location.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ImageTarget {
    /// Registry host and port.
    pub registry: String,
    /// Repository path.
    pub repository: String,
    /// Tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// A packaging request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PackagingRequest {
    /// Model packaged.
    pub model: ModelId,
    /// Stored model digest.
    pub model_digest: String,
    /// Stored model manifest.
    pub manifest: ModelManifest,
    /// Where the image goes.
    pub target: ImageTarget,
    /// Base image override.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    /// Packager arguments.
    pub arguments: Pairs,
}

/// A batch inference request (contract 0.2.0's `batch` interface).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BatchRequest {
    /// Model scoring.
    pub model: ModelId,
    /// Stored model digest.
    pub model_digest: String,
    /// Stored model manifest.
    pub manifest: ModelManifest,
    /// Input data, fetched into the job's data folder.
    pub data: Vec<DataBinding>,
    /// Image override for the steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Compute asked for.
    pub resources: Resources,
    /// Toolchain arguments.
    pub arguments: Pairs,
}

/// A file placed in an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileEntry {
    /// Absolute path in the image.
    pub path: String,
    /// Contents.
    pub contents: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// One layer of an image plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Layer {
    /// The model's own layer; its files land under `/model`.
    Model,
    /// The `legion` server binary at this path.
    LegionServer(String),
    /// Files the plugin supplies.
    Files(Vec<FileEntry>),
    /// pip requirements installed into a folder.
    PythonPackages {
        /// Folder in the image.
        target: String,
        /// Requirement lines.
        requirements: Vec<String>,
    },
}

/// How to build a model image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ImagePlan {
    /// Base image.
    pub base: String,
    /// Layers on top of the base.
    pub layers: Vec<Layer>,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Default arguments.
    pub cmd: Vec<String>,
    /// Environment.
    #[serde(with = "env_map")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub env: Vec<EnvVar>,
    /// Exposed ports.
    pub exposed_ports: Vec<u16>,
    /// Labels.
    pub labels: Pairs,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// User.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A serving request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServingRequest {
    /// Model served.
    pub model: ModelId,
    /// Image, pinned by digest.
    pub image: String,
    /// Model manifest.
    pub manifest: ModelManifest,
    /// Port asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Fewest replicas.
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// Compute per replica.
    pub resources: Resources,
    /// Server arguments.
    pub arguments: Pairs,
}

/// Probes for a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HealthCheck {
    /// Liveness path.
    pub liveness_path: String,
    /// Readiness path.
    pub readiness_path: String,
    /// Delay before the first probe.
    pub initial_delay_seconds: u32,
    /// Seconds between probes.
    pub period_seconds: u32,
}

/// How to run a model service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServicePlan {
    /// Image.
    pub image: String,
    /// Command.
    pub command: Vec<String>,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment.
    #[serde(with = "env_map")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub env: Vec<EnvVar>,
    /// Port.
    pub port: u16,
    /// Fewest replicas.
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// Compute per replica.
    pub resources: Resources,
    /// Probes.
    pub health: HealthCheck,
}

/// One documented toolchain parameter. From a contract 0.2.0 plugin it is
/// typed, and [`parameters::check`] holds the values users give to it;
/// from a 0.1.0 plugin `kind` is the plugin's own word and nothing is
/// checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParameterInfo {
    /// Name.
    pub name: String,
    /// `string`, `int`, `float`, `bool`, `path` or `choice` (contract
    /// 0.2.0); from a 0.1.0 plugin, its own word.
    pub kind: String,
    /// Whether a call without it is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Default value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// What it does.
    pub description: String,
    /// Smallest value of an `int` or `float`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<serde_json::Number>,
    /// Largest value of an `int` or `float`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<serde_json::Number>,
    /// The words a `choice` takes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// Whether the type was declared by the plugin (contract 0.2.0) and is
    /// checked by the host.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub typed: bool,
}

/// What a toolchain says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolchainInfo {
    /// Suggested name.
    pub name: String,
    /// Toolchain version.
    pub version: String,
    /// One line.
    pub description: String,
    /// Default image.
    pub default_image: String,
    /// Documented parameters.
    pub parameters: Vec<ParameterInfo>,
}

/// Parses JSON `text` read from `file`, naming the file and the path of the
/// offending field in the error (`field `model.version`: invalid type …`).
pub fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, crate::Error> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let message = if field == "." {
            inner.to_string()
        } else {
            format!("field `{field}`: {inner}")
        };
        crate::Error::InvalidRequest {
            file: file.to_string(),
            message,
        }
    })
}

/// Size in bytes of the strings and byte lists in a value, used to cap what
/// a plugin may return. Counting the serialised JSON keeps this exact for
/// every result type without a hand-written walk per type.
pub fn result_size<T: Serialize>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serialising plain data structures to a counting writer cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Why a plugin refused or failed a call, as it said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind", content = "message")]
pub enum ToolchainError {
    /// The request is wrong.
    InvalidRequest(String),
    /// The toolchain does not do that.
    Unsupported(String),
    /// A needed file is missing.
    MissingOutput(String),
    /// Anything else.
    Other(String),
}

impl std::fmt::Display for ToolchainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolchainError::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            ToolchainError::Unsupported(m) => write!(f, "unsupported: {m}"),
            ToolchainError::MissingOutput(m) => write!(f, "missing output: {m}"),
            ToolchainError::Other(m) => write!(f, "{m}"),
        }
    }
}
