//! The Kubernetes API emulator (`tests/kube/emulator.py`, on kmock) on a
//! free loopback port, with a kubeconfig pointing at it; stopped on drop.
//! Tests play the Job controller and the kubelet through its HTTP API.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// kmock in a venv beside the other test environments.
fn python() -> PathBuf {
    super::test_venv("test-kmock", &["kmock==0.8"]).join("bin/python")
}

pub struct Emulator {
    child: Child,
    pub url: String,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Emulator {
    /// Starts an emulator in which only `namespaces` exist.
    pub fn start(namespaces: &[&str]) -> Self {
        let port = super::free_port();
        let script = super::repo_root().join("host/tests/kube/emulator.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(port.to_string())
            .args(namespaces)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // It prints `ready` once it listens (or exits, closing stdout).
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the emulator did not start");
        let url = format!("http://127.0.0.1:{port}");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: emu\n  cluster:\n    server: {url}\nusers:\n- name: emu\n  user: {{}}\ncontexts:\n- name: emu\n  context:\n    cluster: emu\n    user: emu\n    namespace: {}\ncurrent-context: emu\n",
                namespaces.first().unwrap_or(&"default")
            ),
        )
        .unwrap();
        Emulator {
            child,
            url,
            kubeconfig,
            _dir: dir,
        }
    }

    /// A kube client for the emulator, through its kubeconfig.
    pub async fn client(&self) -> kube::Client {
        legion::exec::kube::client(Some(&self.kubeconfig))
            .await
            .unwrap()
    }

    fn http() -> reqwest::Client {
        reqwest::Client::new()
    }

    /// GET `path`; `None` on 404.
    pub async fn get(&self, path: &str) -> Option<Value> {
        let r = Self::http()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            return None;
        }
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        Some(r.json().await.unwrap())
    }

    /// POST `body` to `path`.
    pub async fn post(&self, path: &str, body: &Value) -> Value {
        let r = Self::http()
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "POST {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Merge-patches `path` with `body`.
    pub async fn patch(&self, path: &str, body: &Value) -> Value {
        let r = Self::http()
            .patch(format!("{}{path}", self.url))
            .header("Content-Type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "PATCH {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) {
        let r = Self::http()
            .delete(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "DELETE {path}: {}", r.status());
    }

    /// Waits (a hang guard, not a timing check) until `path` exists.
    pub async fn wait_for(&self, path: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            if let Some(v) = self.get(path).await {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path} never appeared"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Emulator {
    /// Plays the Job controller: creates the pod of `job` (with the Job's
    /// labels, and the containers' logs as annotations the emulator serves).
    pub async fn pod_for_job(&self, job: &Value, logs: &[(&str, &str)]) -> String {
        let ns = job["metadata"]["namespace"].as_str().unwrap();
        let labels = job["spec"]["template"]["metadata"]["labels"].clone();
        let pod = format!("{}-abcde", job["metadata"]["name"].as_str().unwrap());
        let notes: serde_json::Map<String, Value> = logs
            .iter()
            .map(|(c, text)| (format!("legion.test/log.{c}"), serde_json::json!(text)))
            .collect();
        self.post(
            &format!("/api/v1/namespaces/{ns}/pods"),
            &serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod, "namespace": ns, "labels": labels, "annotations": notes},
                    "spec": job["spec"]["template"]["spec"].clone(),
                    "status": {"phase": "Pending"}}),
        )
        .await;
        pod
    }

    /// Plays the kubelet: merge-patches the pod's status.
    pub async fn kubelet(&self, ns: &str, pod: &str, status: Value) {
        self.patch(
            &format!("/api/v1/namespaces/{ns}/pods/{pod}/status"),
            &serde_json::json!({ "status": status }),
        )
        .await;
    }
}

impl Emulator {
    /// Waits for the first Job in `ns`, which `legion` (`child`, its stderr
    /// piped) creates; if legion ends first, fails with its stderr. A hang
    /// guard, not a timing check: step images are built first.
    pub fn wait_for_job(&self, ns: &str, child: &mut std::process::Child) -> Value {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
        loop {
            assert!(std::time::Instant::now() < deadline, "no Job was created");
            let jobs = rt
                .block_on(self.get(&format!("/apis/batch/v1/namespaces/{ns}/jobs")))
                .unwrap();
            if let Some(job) = jobs["items"].as_array().and_then(|a| a.first()) {
                return job.clone();
            }
            if child.try_wait().unwrap().is_some() {
                let mut err = String::new();
                use std::io::Read as _;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("legion ended before creating a Job:\n{err}");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Runs `legion step ARGS` as a pod's legion container would, with `spec`
/// in `LEGION_STEP_SPEC`; returns its stderr (the container's log).
pub fn pod_step(l: &super::Legion, spec: &Value, args: &[&str]) -> String {
    let out = l
        .cmd()
        .arg("step")
        .args(args)
        .env("LEGION_STEP_SPEC", spec.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "legion step {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a packaging pod's one container, the real `legion step package`,
/// in a fresh data dir as a new pod has; returns (its log, its report).
pub fn package_pod(spec: &Value) -> (String, String) {
    let pod_home = super::Legion::new();
    let term = pod_home.home.path().join("termination-log");
    let log = pod_step(
        &pod_home,
        spec,
        &["package", "--termination-log", term.to_str().unwrap()],
    );
    (log, std::fs::read_to_string(&term).unwrap())
}

/// The container `name` of a Job's pod (init containers, then the others).
pub fn container<'a>(job: &'a Value, name: &str) -> &'a Value {
    let pod = &job["spec"]["template"]["spec"];
    pod["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(pod["containers"].as_array().unwrap())
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {pod}"))
}

/// The spec a Legion container gets in `LEGION_STEP_SPEC`, parsed.
pub fn step_spec(container: &Value) -> Value {
    let env = container["env"].as_array().unwrap();
    let spec = env
        .iter()
        .find(|e| e["name"] == "LEGION_STEP_SPEC")
        .unwrap();
    serde_json::from_str(spec["value"].as_str().unwrap()).unwrap()
}

/// A container status as the kubelet reports it.
pub fn status(name: &str, state: Value) -> Value {
    serde_json::json!({"name": name, "image": format!("{name}-image"), "imageID": "", "ready": false, "restartCount": 0, "state": state})
}

/// A terminated container state.
pub fn done(code: i32, reason: &str, message: &str) -> Value {
    serde_json::json!({"terminated": {"exitCode": code, "reason": reason, "message": message}})
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
