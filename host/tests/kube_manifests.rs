//! Every Job the Kubernetes executor would create, for real plans from the
//! built-in toolchains, validated by `kubernetes-validate --strict` against
//! Kubernetes 1.37's schemas (PyPI, in a venv beside the other test
//! environments). No cluster is involved: these check the manifests only.

mod common;

use common::{example, Legion};
use legion::exec::kube::job::{training_job, ClusterSettings, TrainingJob};
use legion::oci::model::ToolchainRef;
use legion::plan::{Plan, TrainingRequest};
use legion::train::phases::StepSpec;
use serde_json::{json, Value};

use common::kube_validate as validate;

/// The plan a built-in toolchain makes for `request` over `source`.
fn plan_of(l: &Legion, toolchain: &str, request: &Value, source: &str) -> Plan {
    let (_dir, path) = common::temp_file("request.json", request.to_string().as_bytes());
    let out = l.json(&[
        "toolchain",
        "plan",
        toolchain,
        "--request",
        path.to_str().unwrap(),
        "--source",
        source,
    ]);
    serde_json::from_value(out).expect("a plan")
}

fn job_for(l: &Legion, toolchain: &str, request: Value, source: &str, images: &[&str]) -> Value {
    let plan = plan_of(l, toolchain, &request, source);
    let digest = l.json(&["toolchain", "show", toolchain])["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let request: TrainingRequest = serde_json::from_value(request).unwrap();
    let spec = StepSpec {
        run_id: format!("{}-0a1b2c3d", request.model.name),
        toolchain: ToolchainRef {
            name: toolchain.into(),
            digest,
        },
        request,
        push: Some("registry.example.com/models/m".into()),
    };
    let images: Vec<String> = if images.len() == plan.steps.len() {
        images.iter().map(|s| s.to_string()).collect()
    } else {
        plan.steps.iter().map(|s| s.image.clone()).collect()
    };
    let job = training_job(
        &TrainingJob {
            spec: &spec,
            plan: &plan,
            step_images: &images,
            deadline_seconds: 4 * 3600,
        },
        &ClusterSettings {
            namespace: "legion".into(),
            legion_image: "registry.example.com/legion/legion:0.1.0".into(),
            backoff_limit: 0,
            ttl_seconds_after_finished: 86_400,
            node_selector: [(
                "legion-platform.org/pool".to_string(),
                "training".to_string(),
            )]
            .into(),
            tolerations: vec![k8s_openapi::api::core::v1::Toleration {
                key: Some("nvidia.com/gpu".into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }],
            registry_secret: Some("registry-creds".into()),
            insecure_registries: Some("registry.internal:5000".into()),
            image_pull_secrets: vec!["pull".into()],
        },
    )
    .unwrap();
    serde_json::to_value(&job).unwrap()
}

#[test]
fn training_jobs_for_the_builtin_toolchains_pass_strict_validation() {
    let l = Legion::new();
    let iris = example("python-iris");
    let wine = example("mlflow-wine");
    let cases = [
        // python, with data bindings.
        job_for(
            &l,
            "python",
            json!({
                "model": {"name": "iris", "version": "1"},
                "source": {"uri": iris},
                "data": [{"uri": "s3://bucket/iris.csv", "localPath": "iris.csv"}],
                "hyperParameters": {"C": "0.5"},
                "resources": {"cpuMillis": 1500, "memoryBytes": 2147483648u64},
            }),
            &iris,
            &[],
        ),
        // MLflow, with a GPU and a step image.
        job_for(
            &l,
            "mlflow",
            json!({
                "model": {"name": "wine", "version": "2.0"},
                "source": {"uri": wine, "commit": "0123456789abcdef0123456789abcdef01234567"},
                "hyperParameters": {"n_estimators": "50"},
                "resources": {"gpus": 1},
            }),
            &wine,
            &["registry.example.com/legion/steps/mlflow@sha256:aaaa"],
        ),
    ];
    for job in &cases {
        assert_eq!(job["apiVersion"], "batch/v1");
        assert_eq!(job["kind"], "Job");
        let (ok, out) = validate(job);
        assert!(ok, "{out}\n{job:#}");
        let pod = &job["spec"]["template"]["spec"];
        for c in pod["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(pod["containers"].as_array().unwrap())
        {
            let sc = &c["securityContext"];
            assert_eq!(sc["privileged"], false, "{c:#}");
            assert_eq!(sc["allowPrivilegeEscalation"], false);
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        }
        assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none());
        assert!(pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.get("hostPath").is_none()));
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    }
    let gpu_step = &cases[1]["spec"]["template"]["spec"]["initContainers"][1];
    assert_eq!(
        gpu_step["resources"]["limits"]["nvidia.com/gpu"], "1",
        "{gpu_step:#}"
    );
    assert_eq!(
        gpu_step["image"],
        "registry.example.com/legion/steps/mlflow@sha256:aaaa"
    );
    // The legion containers reach the registry as the host does: its
    // transport and, from a Secret, its credentials.
    let fetch = &cases[0]["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(fetch["name"], "fetch");
    let env = fetch["env"].as_array().unwrap();
    let var = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        var("LEGION_INSECURE_REGISTRIES")["value"],
        "registry.internal:5000"
    );
    assert_eq!(
        var("LEGION_REGISTRY_PASSWORD")["valueFrom"]["secretKeyRef"],
        json!({"name": "registry-creds", "key": "password", "optional": false})
    );
    assert_eq!(
        cases[0]["spec"]["template"]["spec"]["imagePullSecrets"],
        json!([{"name": "pull"}])
    );
    let labels = &cases[0]["metadata"]["labels"];
    assert_eq!(labels["legion-platform.org/run-id"], "iris-0a1b2c3d");
    assert_eq!(labels["legion-platform.org/toolchain"], "python");
    assert_eq!(labels["legion-platform.org/kind"], "training");
}

#[test]
fn the_validator_rejects_what_a_cluster_would() {
    // The check above can fail: an unknown field and a wrong type are caught.
    let l = Legion::new();
    let iris = example("python-iris");
    let mut job = job_for(
        &l,
        "python",
        json!({"model": {"name": "iris", "version": "1"}, "source": {"uri": iris}}),
        &iris,
        &[],
    );
    job["spec"]["template"]["spec"]["privilegedd"] = json!(true);
    let (ok, out) = validate(&job);
    assert!(!ok, "an unknown field passed: {out}");
    job["spec"]["template"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("privilegedd");
    job["spec"]["backoffLimit"] = json!("zero");
    assert!(!validate(&job).0, "a string backoffLimit passed");
}
