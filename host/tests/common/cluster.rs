//! A cluster for the operator's and the API's cluster-mode tests: a real
//! registry, the Kubernetes API emulator (`tests/kube/emulator.py`), a git
//! repository as a training's source, and `legion operator run` as a child
//! process. The test plays the Job controller and the kubelet.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::emulator::{container, done, package_pod, pod_step, status, step_spec, Emulator};
use super::registry::Registry;
use super::{git, write_model, Legion};
use serde_json::{json, Value};

pub const NS: &str = "ml";
pub const GROUP: &str = "/apis/legion-platform.org/v1alpha1/namespaces/ml";

pub struct Cluster {
    pub registry: Registry,
    pub emu: Emulator,
    pub base: String,
    pub rt: tokio::runtime::Runtime,
    /// A git repository the training's source points at (`file://`).
    pub repo: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Self {
        let registry = Registry::start();
        let base = registry.python_base();
        let repo = tempfile::tempdir().unwrap();
        std::fs::write(repo.path().join("train.py"), "print('training')\n").unwrap();
        std::fs::write(repo.path().join("requirements.txt"), "wheel\n").unwrap();
        git(repo.path(), &["init", "-q"]);
        git(repo.path(), &["add", "."]);
        git(repo.path(), &["commit", "-qm", "tiny"]);
        Cluster {
            registry,
            emu: Emulator::start(&[NS]),
            base,
            rt: tokio::runtime::Runtime::new().unwrap(),
            repo,
        }
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.rt.block_on(self.emu.get(path))
    }

    pub fn create(&self, plural: &str, kind: &str, name: &str, spec: Value) -> Value {
        self.rt.block_on(self.emu.post(
            &format!("{GROUP}/{plural}"),
            &json!({"apiVersion": "legion-platform.org/v1alpha1", "kind": kind,
                    "metadata": {"name": name, "namespace": NS}, "spec": spec}),
        ))
    }

    pub fn toolchain(&self, name: &str, builtin: &str) {
        self.create("toolchains", "Toolchain", name, json!({"builtin": builtin}));
    }

    pub fn training(&self, name: &str, toolchain: &str) {
        self.create(
            "modeltrainings",
            "ModelTraining",
            name,
            json!({
                "toolchain": toolchain,
                "model": {"name": "tiny", "version": "1"},
                "source": {"uri": format!("file://{}", self.repo.path().display()), "reference": "main"},
                "image": self.base,
            }),
        );
    }

    pub fn jobs(&self) -> Vec<Value> {
        let jobs = self
            .get(&format!("/apis/batch/v1/namespaces/{NS}/jobs"))
            .unwrap();
        jobs["items"].as_array().unwrap().clone()
    }

    /// Waits (a hang guard, not a timing check: step images are built
    /// before a Job exists) until `what` holds of the object at `path`.
    pub fn wait(
        &self,
        op: &Operator,
        path: &str,
        what: &str,
        holds: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            if let Some(obj) = self.get(path) {
                if holds(&obj) {
                    return obj;
                }
                assert!(
                    Instant::now() < deadline,
                    "{path}: never {what}:\n{obj:#}\noperator log:\n{}",
                    op.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{path} never appeared:\n{}",
                op.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_phase(&self, op: &Operator, path: &str, phase: &str) -> Value {
        self.wait(op, path, &format!("in phase {phase}"), |o| {
            o["status"]["phase"] == phase
        })
    }

    /// Waits until the object `plural/name` has a run id, and returns it.
    pub fn started(&self, op: &Operator, plural: &str, name: &str) -> Value {
        self.wait(op, &path(plural, name), "given a run id", |o| {
            o["status"]["runId"].is_string()
        })
    }

    /// The Job labelled with `run_id`, once it exists.
    pub fn wait_job(&self, op: &Operator, run_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            if let Some(j) = self
                .jobs()
                .into_iter()
                .find(|j| j["metadata"]["labels"]["legion-platform.org/run-id"] == run_id)
            {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "no Job for run {run_id}:\n{}",
                op.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The events recorded about the object `name`.
    pub fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let events = self
            .get(&format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"))
            .unwrap();
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["regarding"]["name"] == name)
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_string(),
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["note"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Plays a training pod to success: the real `legion step fetch` and
    /// `collect` with the Job's spec, then the kubelet's statuses. Returns
    /// collect's report.
    pub fn succeed_training(&self, job: &Value) -> Value {
        let pod_home = Legion::new();
        let spec = step_spec(container(job, "fetch"));
        let ws = tempfile::tempdir().unwrap();
        let w = ws.path().to_str().unwrap();
        pod_step(&pod_home, &spec, &["fetch", "--workspace", w]);
        write_model(ws.path());
        let term = ws.path().join("termination-log");
        pod_step(
            &pod_home,
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
        self.rt.block_on(async {
            let pod = self
                .emu
                .pod_for_job(job, &[("fetch", "fetched\n"), ("step-train", "training\n"), ("collect", "stored\n")])
                .await;
            self.emu
                .kubelet(
                    NS,
                    &pod,
                    json!({"phase": "Succeeded",
                        "initContainerStatuses": [status("fetch", done(0, "Completed", "")), status("step-train", done(0, "Completed", ""))],
                        "containerStatuses": [status("collect", done(0, "Completed", &report))]}),
                )
                .await;
        });
        serde_json::from_str(&report).unwrap()
    }

    /// Plays a packaging pod to success: the real `legion step package`
    /// with the Job's spec on a fresh data dir, then the kubelet's
    /// statuses. Returns the pod's report (the image pushed).
    pub fn succeed_packaging(&self, job: &Value) -> Value {
        let spec = step_spec(container(job, "package"));
        let (_, report) = package_pod(&spec);
        let image: Value = serde_json::from_str(&report).unwrap();
        self.rt.block_on(async {
            let pod = self.emu.pod_for_job(job, &[("package", "pushed\n")]).await;
            self.emu
                .kubelet(
                    NS,
                    &pod,
                    json!({"phase": "Succeeded",
                        "containerStatuses": [status("package", done(0, "Completed", &image.to_string()))]}),
                )
                .await;
        });
        image
    }
}

/// A running `legion operator run`, killed on drop; its log in a file.
pub struct Operator {
    pub child: Child,
    pub log: tempfile::NamedTempFile,
}

impl Operator {
    pub fn start(l: &Legion, cluster: &Cluster, extra: &[&str]) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = l
            .cmd()
            .args([
                "operator",
                "run",
                "--namespace",
                NS,
                "--kubeconfig",
                cluster.emu.kubeconfig.to_str().unwrap(),
                "--legion-image",
                "registry.example/legion:test",
            ])
            .arg("--registry")
            .arg(format!("{}/legion", cluster.registry.addr))
            .args(extra)
            .env("RUST_LOG", "legion=debug,info")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Operator { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as Kubernetes stops a pod; waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: a signal to the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn path(plural: &str, name: &str) -> String {
    format!("{GROUP}/{plural}/{name}")
}

pub fn condition<'a>(obj: &'a Value, type_: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {obj:#}"))
}

pub fn run_id(obj: &Value) -> String {
    obj["status"]["runId"]
        .as_str()
        .expect("a run id")
        .to_string()
}
