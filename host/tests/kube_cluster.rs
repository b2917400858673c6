//! The cluster end-to-end suite: both examples trained as Jobs on a real
//! cluster, the iris model packaged there, and the image read back from the
//! registry. It needs what no test machine here has:
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
