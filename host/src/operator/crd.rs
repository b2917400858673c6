//! Legion's custom resources (`legion-platform.org/v1alpha1`), generated
//! from these types: `legion operator crds` prints them, and the copies in
//! `helms/legion/crds/` are checked against it by a test.
//!
//! Each kind has a status subresource with a `phase`, `conditions` (a
//! list keyed by `type`, as Kubernetes' own), the run id and the results.
//! What can be checked without the operator is checked by the API server:
//! patterns, ranges, "exactly one of", and (CEL) a training's or packaging's
//! spec never changing once created — a new spec is a new object, so a
//! finished run is never silently re-run.

// `printcolumn(type_ = "string", …)` repeats by design; clippy reads the
// derive's arguments as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The API group.
pub const GROUP: &str = "legion-platform.org";
/// The API version.
pub const VERSION: &str = "v1alpha1";

const IMMUTABLE: &str = "self == oldSelf";

/// A condition, as Kubernetes' own (`metav1.Condition`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// What the condition is about (`Ready`, `Succeeded`, `Accepted`, ...).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(regex(pattern = r"^(True|False|Unknown)$"))]
    pub status: String,
    /// Why, in one CamelCase word.
    pub reason: String,
    /// Why, for a person: what happened and what to do.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The `metadata.generation` this condition was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Compute for a pod, in Kubernetes quantities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpec {
    /// CPU (`2`, `500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?m?$"))]
    pub cpu: Option<String>,
    /// Memory (`512Mi`, `2Gi`, `1G`, bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub memory: Option<String>,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 64))]
    pub gpus: Option<u32>,
}

/// A model's name and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ModelSpec {
    /// Model name (a DNS label-like name).
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$"))]
    pub name: String,
    /// Model version.
    #[schemars(regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._+-]{0,62}[A-Za-z0-9])?$"))]
    pub version: String,
}

// ---------------------------------------------------------------- Toolchain

/// A registered toolchain: a built-in plugin of the `legion` image, or a
/// plugin pulled from a registry and pinned to a digest.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "legion-platform.org",
    version = "v1alpha1",
    kind = "Toolchain",
    namespaced,
    status = "ToolchainStatus",
    shortname = "ltc",
    category = "legion",
    doc = "A toolchain plugin registered for trainings and packagings in this namespace.",
    printcolumn(name = "Builtin", type_ = "string", json_path = ".spec.builtin"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Digest",
        type_ = "string",
        json_path = ".status.digest",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new("has(self.builtin) != has(self.image)").message("set exactly one of spec.builtin (a plugin of the legion image) and spec.image (REGISTRY/REPO@sha256:DIGEST)"))]
#[serde(rename_all = "camelCase")]
pub struct ToolchainSpec {
    /// A toolchain built into the `legion` image: `python`, `mlflow` or
    /// `docker-rest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"))]
    pub builtin: Option<String>,
    /// A component in a registry, pinned by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[^@\s]+@sha256:[0-9a-f]{64}$"))]
    pub image: Option<String>,
}

/// What the operator found of a toolchain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolchainStatus {
    /// `Ready` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Conditions, keyed by type.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The component's digest (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// What it implements: `trainer`, `packager`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// The generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// ------------------------------------------------------------ ModelTraining

/// Where a training's source comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// A git URL (`https://…`, `ssh://…`) or a source artifact
    /// (`oci://REGISTRY/REPO@sha256:…`).
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,
    /// Branch, tag or commit of a git source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// A data binding: what a training reads, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataSpec {
    /// Where the data comes from (`s3://`, `gs://`, `az://`, `https://`).
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,
    /// Where it goes, relative to the run's data folder.
    #[schemars(length(min = 1, max = 512))]
    pub path: String,
}

/// A training: a toolchain, a source, a model name and version.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "legion-platform.org",
    version = "v1alpha1",
    kind = "ModelTraining",
    namespaced,
    status = "RunStatus",
    shortname = "mt",
    category = "legion",
    doc = "A model training, run once as a Kubernetes Job by the Legion operator.",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model.name"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.model.version"),
    printcolumn(name = "Toolchain", type_ = "string", json_path = ".spec.toolchain"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Run",
        type_ = "string",
        json_path = ".status.runId",
        priority = 1
    ),
    printcolumn(
        name = "Digest",
        type_ = "string",
        json_path = ".status.modelDigest",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new(IMMUTABLE).message("a ModelTraining's spec cannot change once created: create a new ModelTraining (a new version) instead"))]
#[serde(rename_all = "camelCase")]
pub struct ModelTrainingSpec {
    /// The `Toolchain` (in this namespace) that plans the training.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"))]
    pub toolchain: String,
    /// The model trained.
    pub model: ModelSpec,
    /// The training code.
    pub source: SourceSpec,
    /// Entry point, as the toolchain understands it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    /// Extra arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Hyper-parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hyper_parameters: BTreeMap<String, String>,
    /// Environment for the steps.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Data bindings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<DataSpec>,
    /// Image for the steps, instead of the toolchain's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Working directory inside the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<String>,
    /// Compute for the steps.
    #[serde(default)]
    pub resources: ResourceSpec,
    /// Seconds the Job may run (default 4 hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub timeout_seconds: Option<u64>,
}

/// How a training or a packaging went: the one status shape of both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Conditions, keyed by type (`Accepted`, `Succeeded`).
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The Legion run (`legion runs show`, `legion runs logs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The Job running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// A trained model's reference in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_ref: Option<String>,
    /// A trained model's manifest digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_digest: Option<String>,
    /// A packaged image's reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<String>,
    /// A packaged image's manifest digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// When the run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// The generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// ----------------------------------------------------------- ModelPackaging

/// A packaging: a trained model into a runnable image.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "legion-platform.org",
    version = "v1alpha1",
    kind = "ModelPackaging",
    namespaced,
    status = "RunStatus",
    shortname = "mp",
    category = "legion",
    doc = "A model packaging into an OCI image, run once as a Kubernetes Job by the Legion operator.",
    printcolumn(name = "Toolchain", type_ = "string", json_path = ".spec.toolchain"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Image", type_ = "string", json_path = ".status.imageRef"),
    printcolumn(
        name = "Run",
        type_ = "string",
        json_path = ".status.runId",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new(IMMUTABLE).message("a ModelPackaging's spec cannot change once created: create a new ModelPackaging instead"))]
#[x_kube(validation = kube::core::Rule::new("has(self.trainingRef) != has(self.modelRef)").message("set exactly one of spec.trainingRef (a ModelTraining in this namespace) and spec.modelRef (REGISTRY/REPO@sha256:DIGEST)"))]
#[serde(rename_all = "camelCase")]
pub struct ModelPackagingSpec {
    /// The packager `Toolchain` (default `docker-rest`).
    #[serde(default = "default_packager")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"))]
    pub toolchain: String,
    /// A succeeded `ModelTraining` in this namespace whose model is packaged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"))]
    pub training_ref: Option<String>,
    /// A model in a registry, pinned by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[^@\s]+@sha256:[0-9a-f]{64}$"))]
    pub model_ref: Option<String>,
    /// Base image (default: the packager's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Packager arguments.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arguments: BTreeMap<String, String>,
    /// Seconds the Job may run (default 1 hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: Option<u64>,
}

fn default_packager() -> String {
    crate::package::DEFAULT_PACKAGER.to_string()
}

// ---------------------------------------------------------- ModelDeployment

/// A deployment: a packaged image served by a Deployment and a Service.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "legion-platform.org",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    status = "DeploymentStatus",
    shortname = "md",
    category = "legion",
    doc = "A packaged model served over REST by a Deployment, a Service and, when minReplicas < maxReplicas, an autoscaler.",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.availableReplicas"
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.url",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new("self.minReplicas <= self.maxReplicas").message("spec.minReplicas must not exceed spec.maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// The packaged image (`legion package` or a `ModelPackaging`'s
    /// `status.imageRef`).
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,
    /// The packager `Toolchain` whose service plan runs it (default
    /// `docker-rest`).
    #[serde(default = "default_packager")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"))]
    pub toolchain: String,
    /// Fewest replicas.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: u32,
    /// Most replicas; above `minReplicas` an autoscaler is made.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: u32,
    /// Compute for each replica.
    #[serde(default)]
    pub resources: ResourceSpec,
    /// Server arguments.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arguments: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// How a deployment is doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// `Deploying`, `Ready` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Conditions, keyed by type (`Ready`).
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The image's manifest digest, as resolved in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Replicas of the current image that are available.
    #[serde(default)]
    pub available_replicas: i32,
    /// The Service's URL inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Every CRD, in a stable order.
pub fn all(
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        Toolchain::crd(),
        ModelTraining::crd(),
        ModelPackaging::crd(),
        ModelDeployment::crd(),
    ]
}
