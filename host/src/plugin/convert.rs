//! Conversions between the host's model (`crate::plan`) and the generated
//! WIT types of each contract version. Mechanical by design: the two
//! mirror each other field by field, with maps on the host side where the
//! WIT has key-value lists. The records every version shares are written
//! once ([`shared!`]) and expanded in each version's module; what differs
//! (0.2.0's typed parameters, its batch request) is written per version.

/// The conversions of the records every contract version has alike,
/// expanded in a module where `wit` is that version's `types`.
macro_rules! shared {
    () => {
        fn pairs_to_wit(pairs: &plan::Pairs) -> Vec<wit::KeyValue> {
            pairs
                .iter()
                .map(|(k, v)| wit::KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect()
        }

        fn data_to_wit(data: &[plan::DataBinding]) -> Vec<wit::DataBinding> {
            data.iter()
                .map(|d| wit::DataBinding {
                    uri: d.uri.clone(),
                    local_path: d.local_path.clone(),
                })
                .collect()
        }

        fn pairs_from_wit(pairs: Vec<wit::KeyValue>) -> plan::Pairs {
            pairs.into_iter().map(|kv| (kv.key, kv.value)).collect()
        }

        fn env_from_wit(pairs: Vec<wit::KeyValue>) -> Vec<plan::EnvVar> {
            pairs
                .into_iter()
                .map(|kv| plan::EnvVar {
                    name: kv.key,
                    value: kv.value,
                })
                .collect()
        }

        impl From<plan::Resources> for wit::Resources {
            fn from(r: plan::Resources) -> Self {
                wit::Resources {
                    cpu_millis: r.cpu_millis,
                    memory_bytes: r.memory_bytes,
                    gpus: r.gpus,
                }
            }
        }

        impl From<wit::Resources> for plan::Resources {
            fn from(r: wit::Resources) -> Self {
                plan::Resources {
                    cpu_millis: r.cpu_millis,
                    memory_bytes: r.memory_bytes,
                    gpus: r.gpus,
                }
            }
        }

        impl From<&plan::ModelId> for wit::ModelId {
            fn from(m: &plan::ModelId) -> Self {
                wit::ModelId {
                    name: m.name.clone(),
                    version: m.version.clone(),
                }
            }
        }

        impl From<&plan::TrainingRequest> for wit::TrainingRequest {
            fn from(r: &plan::TrainingRequest) -> Self {
                wit::TrainingRequest {
                    model: (&r.model).into(),
                    entrypoint: r.entrypoint.clone(),
                    args: r.args.clone(),
                    hyper_parameters: pairs_to_wit(&r.hyper_parameters),
                    env: pairs_to_wit(&r.env),
                    image: r.image.clone(),
                    resources: r.resources.into(),
                    source: wit::Source {
                        uri: r.source.uri.clone(),
                        reference: r.source.reference.clone(),
                        commit: r.source.commit.clone(),
                    },
                    data: data_to_wit(&r.data),
                    work_dir: r.work_dir.clone(),
                }
            }
        }

        impl From<wit::Plan> for plan::Plan {
            fn from(p: wit::Plan) -> Self {
                plan::Plan {
                    steps: p
                        .steps
                        .into_iter()
                        .map(|s| plan::Step {
                            name: s.name,
                            image: s.image,
                            command: s.command,
                            args: s.args,
                            env: env_from_wit(s.env),
                            working_dir: s.working_dir,
                            resources: s.resources.into(),
                        })
                        .collect(),
                    python: p.python.map(|py| plan::PythonEnvironment {
                        python_version: py.python_version,
                        requirements: py.requirements,
                    }),
                }
            }
        }

        fn tensor_to_wit(t: &plan::TensorSpec) -> wit::TensorSpec {
            wit::TensorSpec {
                name: t.name.clone(),
                datatype: t.datatype.clone(),
                shape: t.shape.clone(),
                optional: t.optional,
            }
        }

        fn tensor_from_wit(t: wit::TensorSpec) -> plan::TensorSpec {
            plan::TensorSpec {
                name: t.name,
                datatype: t.datatype,
                shape: t.shape,
                optional: t.optional,
            }
        }

        impl From<&plan::ModelManifest> for wit::ModelManifest {
            fn from(m: &plan::ModelManifest) -> Self {
                wit::ModelManifest {
                    flavor: m.flavor.clone(),
                    model_path: m.model_path.clone(),
                    signature: m.signature.as_ref().map(|s| wit::Signature {
                        inputs: s.inputs.iter().map(tensor_to_wit).collect(),
                        outputs: s.outputs.iter().map(tensor_to_wit).collect(),
                    }),
                    input_example: m.input_example.clone(),
                    requirements: m.requirements.clone(),
                    run_id: m.run_id.clone(),
                    metadata: pairs_to_wit(&m.metadata),
                }
            }
        }

        impl From<wit::ModelManifest> for plan::ModelManifest {
            fn from(m: wit::ModelManifest) -> Self {
                plan::ModelManifest {
                    flavor: m.flavor,
                    model_path: m.model_path,
                    signature: m.signature.map(|s| plan::Signature {
                        inputs: s.inputs.into_iter().map(tensor_from_wit).collect(),
                        outputs: s.outputs.into_iter().map(tensor_from_wit).collect(),
                    }),
                    input_example: m.input_example,
                    requirements: m.requirements,
                    run_id: m.run_id,
                    metadata: pairs_from_wit(m.metadata),
                }
            }
        }

        impl From<&plan::PackagingRequest> for wit::PackagingRequest {
            fn from(r: &plan::PackagingRequest) -> Self {
                wit::PackagingRequest {
                    model: (&r.model).into(),
                    model_digest: r.model_digest.clone(),
                    manifest: (&r.manifest).into(),
                    target: wit::ImageTarget {
                        registry: r.target.registry.clone(),
                        repository: r.target.repository.clone(),
                        tag: r.target.tag.clone(),
                    },
                    base_image: r.base_image.clone(),
                    arguments: pairs_to_wit(&r.arguments),
                }
            }
        }

        impl From<wit::ImagePlan> for plan::ImagePlan {
            fn from(p: wit::ImagePlan) -> Self {
                plan::ImagePlan {
                    base: p.base,
                    layers: p
                        .layers
                        .into_iter()
                        .map(|l| match l {
                            wit::Layer::Model => plan::Layer::Model,
                            wit::Layer::LegionServer(path) => plan::Layer::LegionServer(path),
                            wit::Layer::Files(files) => plan::Layer::Files(
                                files
                                    .into_iter()
                                    .map(|f| plan::FileEntry {
                                        path: f.path,
                                        contents: f.contents,
                                        mode: f.mode,
                                    })
                                    .collect(),
                            ),
                            wit::Layer::PythonPackages(p) => plan::Layer::PythonPackages {
                                target: p.target,
                                requirements: p.requirements,
                            },
                        })
                        .collect(),
                    entrypoint: p.entrypoint,
                    cmd: p.cmd,
                    env: env_from_wit(p.env),
                    exposed_ports: p.exposed_ports,
                    labels: pairs_from_wit(p.labels),
                    working_dir: p.working_dir,
                    user: p.user,
                }
            }
        }

        impl From<&plan::ServingRequest> for wit::ServingRequest {
            fn from(r: &plan::ServingRequest) -> Self {
                wit::ServingRequest {
                    model: (&r.model).into(),
                    image: r.image.clone(),
                    manifest: (&r.manifest).into(),
                    port: r.port,
                    min_replicas: r.min_replicas,
                    max_replicas: r.max_replicas,
                    resources: r.resources.into(),
                    arguments: pairs_to_wit(&r.arguments),
                }
            }
        }

        impl From<wit::ServicePlan> for plan::ServicePlan {
            fn from(p: wit::ServicePlan) -> Self {
                plan::ServicePlan {
                    image: p.image,
                    command: p.command,
                    args: p.args,
                    env: env_from_wit(p.env),
                    port: p.port,
                    min_replicas: p.min_replicas,
                    max_replicas: p.max_replicas,
                    resources: p.resources.into(),
                    health: plan::HealthCheck {
                        liveness_path: p.health.liveness_path,
                        readiness_path: p.health.readiness_path,
                        initial_delay_seconds: p.health.initial_delay_seconds,
                        period_seconds: p.health.period_seconds,
                    },
                }
            }
        }

        impl From<wit::ToolchainError> for plan::ToolchainError {
            fn from(e: wit::ToolchainError) -> Self {
                match e {
                    wit::ToolchainError::InvalidRequest(m) => {
                        plan::ToolchainError::InvalidRequest(m)
                    }
                    wit::ToolchainError::Unsupported(m) => plan::ToolchainError::Unsupported(m),
                    wit::ToolchainError::MissingOutput(m) => plan::ToolchainError::MissingOutput(m),
                    wit::ToolchainError::Other(m) => plan::ToolchainError::Other(m),
                }
            }
        }
    };
}

/// `legion:toolchain@0.1.0`.
pub(crate) mod v0_1 {
    use super::super::bindings::v0_1::types as wit;
    use crate::plan;

    shared!();

    /// 0.1.0 parameters are documentation: the kind is the plugin's own
    /// word, nothing is required or checked.
    impl From<wit::ToolchainInfo> for plan::ToolchainInfo {
        fn from(i: wit::ToolchainInfo) -> Self {
            plan::ToolchainInfo {
                name: i.name,
                version: i.version,
                description: i.description,
                default_image: i.default_image,
                parameters: i
                    .parameters
                    .into_iter()
                    .map(|p| plan::ParameterInfo {
                        name: p.name,
                        kind: p.kind,
                        default: p.default,
                        description: p.description,
                        ..Default::default()
                    })
                    .collect(),
            }
        }
    }
}

/// `legion:toolchain@0.2.0`.
pub(crate) mod v0_2 {
    use super::super::bindings::v0_2::types as wit;
    use crate::plan;

    shared!();

    impl From<wit::ToolchainInfo> for plan::ToolchainInfo {
        fn from(i: wit::ToolchainInfo) -> Self {
            plan::ToolchainInfo {
                name: i.name,
                version: i.version,
                description: i.description,
                default_image: i.default_image,
                parameters: i.parameters.into_iter().map(parameter).collect(),
            }
        }
    }

    fn parameter(p: wit::ParameterInfo) -> plan::ParameterInfo {
        let mut out = plan::ParameterInfo {
            name: p.name,
            required: p.required,
            default: p.default,
            description: p.description,
            typed: true,
            ..Default::default()
        };
        out.kind = match p.kind {
            wit::ParameterType::Text => "string",
            wit::ParameterType::Integer(r) => {
                out.minimum = r.min.map(Into::into);
                out.maximum = r.max.map(Into::into);
                "int"
            }
            wit::ParameterType::Number(r) => {
                out.minimum = r.min.and_then(serde_json::Number::from_f64);
                out.maximum = r.max.and_then(serde_json::Number::from_f64);
                "float"
            }
            wit::ParameterType::Boolean => "bool",
            wit::ParameterType::Path => "path",
            wit::ParameterType::Choice(words) => {
                out.choices = words;
                "choice"
            }
        }
        .to_string();
        out
    }

    impl From<&plan::BatchRequest> for wit::BatchRequest {
        fn from(r: &plan::BatchRequest) -> Self {
            wit::BatchRequest {
                model: (&r.model).into(),
                model_digest: r.model_digest.clone(),
                manifest: (&r.manifest).into(),
                data: data_to_wit(&r.data),
                image: r.image.clone(),
                resources: r.resources.into(),
                arguments: pairs_to_wit(&r.arguments),
            }
        }
    }
}
