//! `legion train --executor kube`, end to end on the host's side, as
//! API-contract tests: the real `legion` binary, a real registry, and the
//! Kubernetes API emulator (`tests/kube/emulator.py`) in place of a
//! cluster. The test plays the Job controller and the kubelet; the pod's
//! own phases are the real `legion step fetch` and `legion step collect`
//! run with the spec the Job carries, so the digest the run records is the
//! one collect really pushed. Only the step's container (already proven in
//! its step image under podman by `kube_step_images.rs`) is stood in for.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};

use common::emulator::{container, done, pod_step, status, step_spec, Emulator};
use common::registry::Registry;
use common::{write_model, Legion};
use serde_json::{json, Value};

const NS: &str = "ml";

/// A tiny project: the python toolchain plans one step with `wheel` as its
/// only requirement (a small step image).
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.py"), "print('training')\n").unwrap();
    std::fs::write(dir.path().join("requirements.txt"), "wheel\n").unwrap();
    dir
}

struct Cluster {
    registry: Registry,
    emu: Emulator,
    base: String,
}

impl Cluster {
    fn start() -> Self {
        let registry = Registry::start();
        let base = registry.python_base();
        Cluster {
            registry,
            emu: Emulator::start(&[NS]),
            base,
        }
    }

    /// `legion train SOURCE --executor kube …` plus `extra`.
    fn train_args(&self, source: &Path, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "train",
            source.to_str().unwrap(),
            "-t",
            "python",
            "--name",
            "tiny",
            "--executor",
            "kube",
            "--namespace",
            NS,
            "--kubeconfig",
            self.emu.kubeconfig.to_str().unwrap(),
            "--legion-image",
            "registry.example/legion:test",
            "--image",
            &self.base,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("--registry".into());
        args.push(format!("{}/legion", self.registry.addr));
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn jobs(&self) -> String {
        format!("/apis/batch/v1/namespaces/{NS}/jobs")
    }
}

fn spawn(l: &Legion, args: &[String]) -> Child {
    l.cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> (bool, Value, String) {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), json, stderr)
}

#[test]
fn a_training_runs_as_a_job_through_every_phase_and_keeps_its_logs() {
    let cluster = Cluster::start();
    let l = Legion::new();
    let src = project();
    let mut child = spawn(&l, &cluster.train_args(src.path(), &["-o", "json"]));
    let job = cluster.emu.wait_for_job(NS, &mut child);
    let rt = tokio::runtime::Runtime::new().unwrap();

    // The source reached the registry as an artifact, pinned by digest;
    // the step runs in a step image from the registry, pinned too.
    let spec = step_spec(container(&job, "fetch"));
    let source = spec["request"]["source"]["uri"].as_str().unwrap();
    let sources = format!("oci://{}/legion/sources@sha256:", cluster.registry.addr);
    assert!(source.starts_with(&sources), "{source}");
    let step = container(&job, "step-train");
    let steps = format!("{}/legion/steps@sha256:", cluster.registry.addr);
    assert!(
        step["image"].as_str().unwrap().starts_with(&steps),
        "{step}"
    );
    assert_eq!(step["command"], json!(["python", "train.py"]));
    assert_eq!(
        spec["push"],
        format!("{}/legion/models/tiny:1", cluster.registry.addr)
    );

    // The pod's phases, for real, with the spec the Job carries.
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path().to_str().unwrap();
    pod_step(&l, &spec, &["fetch", "--workspace", w]);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("source/train.py")).unwrap(),
        "print('training')\n",
        "the pod fetches the folder the host pushed"
    );
    // What the step would write.
    write_model(ws.path());
    let term = ws.path().join("termination-log");
    pod_step(
        &l,
        &spec,
        &[
            "collect",
            "--workspace",
            w,
            "--termination-log",
            term.to_str().unwrap(),
        ],
    );
    let report = std::fs::read_to_string(&term).unwrap();

    rt.block_on(async {
        let emu = &cluster.emu;
        let pod = emu
            .pod_for_job(
                &job,
                &[
                    ("fetch", "fetched\n"),
                    ("step-train", "training\n"),
                    ("collect", "stored\n"),
                ],
            )
            .await;
        emu.kubelet(NS, &pod, json!({"phase": "Pending", "initContainerStatuses": [
            status("fetch", done(0, "Completed", "")), status("step-train", json!({"running": {}}))]}))
            .await;
        emu.kubelet(
            NS,
            &pod,
            json!({"phase": "Succeeded",
                "initContainerStatuses": [status("fetch", done(0, "Completed", "")), status("step-train", done(0, "Completed", ""))],
                "containerStatuses": [status("collect", done(0, "Completed", &report))]}),
        )
        .await;
    });
    let (ok, run, stderr) = finish(child);
    assert!(ok, "{stderr}");
    let reported: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["modelDigest"], reported["modelDigest"]);
    assert_eq!(run["pushedRef"], reported["pushedRef"]);
    assert_eq!(run["job"]["namespace"], NS);
    assert_eq!(run["job"]["name"], job["metadata"]["name"]);

    // The containers' logs are the run's log, after the pod is gone too.
    let id = run["id"].as_str().unwrap();
    rt.block_on(cluster.emu.delete(&format!(
        "/api/v1/namespaces/{NS}/pods/{}-abcde",
        job["metadata"]["name"].as_str().unwrap()
    )));
    let logs = l.ok(&["runs", "logs", id]);
    for line in [
        "[fetch] fetched",
        "[step-train] training",
        "[collect] stored",
    ] {
        assert!(logs.contains(line), "{line} missing from\n{logs}");
    }
    let shown = l.ok(&["runs", "show", id]);
    assert!(shown.contains(&format!(
        "{NS}/{}",
        job["metadata"]["name"].as_str().unwrap()
    )));
}

#[test]
fn a_failed_step_fails_the_run_with_its_exit_code_and_a_host_that_left_can_attach() {
    let cluster = Cluster::start();
    let l = Legion::new();
    let src = project();
    // Data the pod fetches; the host does not (nothing listens there).
    let data = format!("http://127.0.0.1:{}/iris.csv", common::free_port());
    let binding = format!("{data}=iris.csv");
    let mut child = spawn(
        &l,
        &cluster.train_args(src.path(), &["-o", "json", "--data", &binding]),
    );
    let job = cluster.emu.wait_for_job(NS, &mut child);
    assert_eq!(
        step_spec(container(&job, "fetch"))["request"]["data"],
        json!([{"uri": data, "localPath": "iris.csv"}])
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pod = rt.block_on(
        cluster
            .emu
            .pod_for_job(&job, &[("step-train", "loading\nValueError: bad column\n")]),
    );
    // The host goes away mid-run; the Job goes on without it.
    child.kill().unwrap();
    child.wait().unwrap();
    let runs = l.json(&["runs", "ls"]);
    let id = runs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        runs[0]["state"], "running",
        "a cluster run outlives its host"
    );
    rt.block_on(cluster.emu.kubelet(
        NS,
        &pod,
        json!({"phase": "Failed", "initContainerStatuses": [
        status("fetch", done(0, "Completed", "")),
        status("step-train", done(3, "Error", "ValueError: bad column\n"))]}),
    ));
    let out = l
        .cmd()
        .args([
            "runs",
            "attach",
            &id,
            "--kubeconfig",
            cluster.emu.kubeconfig.to_str().unwrap(),
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let run: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        run["state"],
        "failed",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run["exitCode"], 3);
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("container 'step-train' exited with code 3: ValueError: bad column"),
        "{reason}"
    );
    assert!(reason.contains("[step-train] loading"), "{reason}");
    let logs = l.ok(&["runs", "logs", &id]);
    assert!(logs.contains("following Job"), "{logs}");
}

#[test]
fn a_dry_run_prints_a_job_kubernetes_accepts_and_creates_nothing() {
    let cluster = Cluster::start();
    let l = Legion::new();
    let src = project();
    let out = l.ok(&cluster
        .train_args(src.path(), &["--dry-run", "--gpus", "1"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let docs: Vec<&str> = out
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .collect();
    assert_eq!(docs.len(), 1, "{out}");
    let job: Value = serde_norway::from_str(docs[0]).unwrap();
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    assert_eq!(
        container(&job, "step-train")["resources"]["limits"]["nvidia.com/gpu"],
        "1"
    );
    let (valid, report) = common::kube_validate(&job);
    assert!(valid, "{report}");
    // Nothing created, nothing recorded.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let jobs = rt.block_on(cluster.emu.get(&cluster.jobs())).unwrap();
    assert_eq!(jobs["items"], json!([]));
    assert_eq!(l.json(&["runs", "ls"]), json!([]));
}

#[test]
fn bad_cluster_input_is_refused_before_any_job_exists() {
    let cluster = Cluster::start();
    let l = Legion::new();
    let src = project();
    let args = |extra: &[&str]| cluster.train_args(src.path(), extra);
    let fails = |args: Vec<String>| l.fails(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // A namespace that does not exist.
    let mut a = args(&[]);
    let ns = a.iter().position(|s| s == NS).unwrap();
    a[ns] = "nowhere".into();
    let err = fails(a);
    assert!(
        err.contains("the namespace 'nowhere' does not exist"),
        "{err}"
    );

    // No registry for the pod to reach.
    let mut a = args(&[]);
    let r = a.iter().position(|s| s == "--registry").unwrap();
    a.drain(r..r + 2);
    let err = fails(a);
    assert!(err.contains("--registry"), "{err}");

    // Data only this machine has.
    let err = fails(args(&["--data", "file:///etc/hosts=hosts"]));
    assert!(err.contains("a pod cannot read"), "{err}");

    // The admin's policy: a registry not allowed, resources over the cap.
    std::fs::write(
        l.home.path().join("policy.json"),
        r#"{"allowedImages": ["registry.example/*"], "maxCpuMillis": 1000}"#,
    )
    .unwrap();
    let err = fails(args(&["--cpu-millis", "4000"]));
    assert!(err.contains("is not in the allowed images"), "{err}");
    assert!(
        err.contains("cpuMillis 4000 exceeds the cap of 1000"),
        "{err}"
    );
    std::fs::remove_file(l.home.path().join("policy.json")).unwrap();

    // An API server that is not there.
    let dead = tempfile::tempdir().unwrap();
    let kubeconfig = dead.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
            common::free_port()
        ),
    )
    .unwrap();
    let mut a = args(&[]);
    let k = a.iter().position(|s| s == "--kubeconfig").unwrap();
    a[k + 1] = kubeconfig.display().to_string();
    let err = fails(a);
    assert!(err.contains("cannot reach the API server"), "{err}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let jobs = rt.block_on(cluster.emu.get(&cluster.jobs())).unwrap();
    assert_eq!(jobs["items"], json!([]), "no Job was created");
}
