//! `legion package --executor kube` as API-contract tests: the real
//! binary, a real registry, the Kubernetes API emulator in place of a
//! cluster. The test plays the Job controller and the kubelet, and runs the
//! pod's one container — the real `legion step package`, in a data dir of
//! its own as a fresh pod would have — with the spec the Job carries, so
//! the image the run records is the one that pod really pushed.

mod common;

use std::process::Stdio;

use common::emulator::{container, done, package_pod, status, step_spec, Emulator};
use common::registry::Registry;
use common::Legion;
use serde_json::{json, Value};

const NS: &str = "ml";

fn cluster_args(registry: &Registry, emu: &Emulator, base: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "package",
        "tiny:1",
        "--executor",
        "kube",
        "--namespace",
        NS,
        "--kubeconfig",
        emu.kubeconfig.to_str().unwrap(),
        "--legion-image",
        "registry.example/legion:test",
        "--base",
        base,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("--registry".into());
    args.push(format!("{}/legion", registry.addr));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The spec of the Job's one container, `package`.
fn package_spec(job: &Value) -> Value {
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["name"],
        "package"
    );
    step_spec(container(job, "package"))
}

#[test]
fn a_packaging_runs_as_a_job_whose_pod_pushes_the_image() {
    let registry = Registry::start();
    let base = registry.python_base();
    let emu = Emulator::start(&[NS]);
    let l = Legion::new();
    common::train_tiny(&l, "tiny", "1");
    let mut child = l
        .cmd()
        .args(cluster_args(&registry, &emu, &base, &["-o", "json"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let job = emu.wait_for_job(NS, &mut child);
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(
        job["metadata"]["labels"]["legion-platform.org/kind"],
        "packaging"
    );
    let spec = package_spec(&job);
    // The host pushed the model where the pod pulls it, pinned by digest.
    let model = spec["model"].as_str().unwrap();
    let models = format!("{}/legion/models/tiny@sha256:", registry.addr);
    assert!(model.starts_with(&models), "{model}");
    assert_eq!(
        spec["push"],
        format!("{}/legion/images/tiny:1", registry.addr)
    );

    // The pod: a fresh data dir, the real packaging, the spec from the Job.
    let (pod_log, report) = package_pod(&spec);

    rt.block_on(async {
        let pod = emu
            .pod_for_job(&job, &[("package", pod_log.as_str())])
            .await;
        emu.kubelet(
            NS,
            &pod,
            json!({"phase": "Succeeded",
                "containerStatuses": [status("package", done(0, "Completed", &report))]}),
        )
        .await;
    });
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packaged: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &packaged["run"];
    let reported: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["kind"], "packaging");
    assert_eq!(run["imageDigest"], reported["imageDigest"]);
    assert_eq!(run["imageRef"], reported["imageRef"]);
    // The registry serves exactly that image under the model's version.
    use sha2::Digest as _;
    let raw = registry.raw_manifest("legion/images/tiny:1");
    assert_eq!(
        reported["imageDigest"],
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw)))
    );
    // The pod's log is the run's log.
    let logs = l.ok(&["runs", "logs", run["id"].as_str().unwrap()]);
    assert!(logs.contains("[package] "), "{logs}");
    assert!(logs.contains("pushed"), "{logs}");
}

#[test]
fn a_packaging_dry_run_prints_a_valid_job_and_pushes_nothing() {
    let registry = Registry::start();
    let base = registry.python_base();
    let emu = Emulator::start(&[NS]);
    let l = Legion::new();
    common::train_tiny(&l, "tiny", "1");
    let args = cluster_args(&registry, &emu, &base, &["--dry-run"]);
    let out = l.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let docs: Vec<&str> = out
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .collect();
    assert_eq!(docs.len(), 1, "{out}");
    let job: Value = serde_norway::from_str(docs[0]).unwrap();
    let (valid, report) = common::kube_validate(&job);
    assert!(valid, "{report}");
    assert!(
        package_spec(&job)["model"]
            .as_str()
            .unwrap()
            .contains("/legion/models/tiny@sha256:"),
        "the Job names the model by digest"
    );
    // Nothing pushed, nothing created, nothing recorded.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let jobs = rt
        .block_on(emu.get(&format!("/apis/batch/v1/namespaces/{NS}/jobs")))
        .unwrap();
    assert_eq!(jobs["items"], json!([]));
    let tags = reqwest::blocking::get(format!(
        "http://{}/v2/legion/models/tiny/tags/list",
        registry.addr
    ))
    .unwrap();
    assert_eq!(tags.status(), 404, "the model was not pushed");
    let runs = l.json(&["runs", "ls"]);
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "only the training: {runs}"
    );
}
