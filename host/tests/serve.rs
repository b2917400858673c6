//! `legion serve` and the standalone `legion-serve` with real models
//! trained by the examples, real Python workers and real HTTP: every
//! protocol's numbers against the model's own `predict`, a standard v2
//! client reading names from the metadata, bad requests, overload, a
//! killed worker, timeouts, SIGTERM, a model that never loads.
//!
//! Nothing here races the clock: a test that needs a request to be in
//! flight, queued or slow holds it at a gate (a file the model's `predict`
//! waits for) and waits for the event it needs, never for a time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{example, free_port, train, train_iris, train_wine, Legion, IRIS_COLS, IRIS_ROWS};
use reqwest::blocking::Client;
use serde_json::{json, Value};

/// A guard against a hang: generous, so a busy machine never trips it.
const PATIENCE: Duration = Duration::from_secs(300);

/// Polls `done` until it holds; fails naming `what` if it never does.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A folder the gated model's `predict` (or `load`) waits on: it marks
/// each call it enters, and waits until the gate is opened.
struct Gate {
    dir: tempfile::TempDir,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn open(&self) {
        std::fs::write(self.dir.path().join("open"), "").unwrap();
    }
    fn entered(&self) -> usize {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("entered-"))
            })
            .count()
    }
    fn wait_entered(&self, n: usize) {
        wait_until(&format!("{n} predict calls"), || self.entered() >= n);
    }
}

/// A running server, stopped (SIGTERM, then SIGKILL) on drop.
struct Server {
    child: Option<Child>,
    base: String,
    http: Client,
}

impl Server {
    /// `legion serve MODEL --port P EXTRA…`, ready.
    fn start(l: &Legion, model: &str, extra: &[&str]) -> Server {
        Server::start_gated(l, model, extra, None)
    }

    /// The same, with the model's `predict` waiting at `gate`.
    fn start_gated(l: &Legion, model: &str, extra: &[&str], gate: Option<&Gate>) -> Server {
        let mut cmd = l.cmd();
        cmd.args(["serve", model]).args(extra);
        if let Some(g) = gate {
            cmd.env("LEGION_TEST_GATE", g.path());
        }
        let s = Server::spawn(cmd);
        s.wait_ready();
        s
    }

    /// The standalone static `legion-serve` on the model folder that
    /// `legion serve` prepared for `digest`, with the same interpreter.
    fn standalone(l: &Legion, digest: &str, extra: &[&str]) -> Server {
        let (files, python) = served_files(l, digest);
        let mut cmd = Command::new(common::serve_bin());
        cmd.arg(files.parent().unwrap())
            .arg("--python")
            .arg(python)
            .args(extra)
            .env(
                "LEGION_SERVE_FEEDBACK_LOG",
                l.home.path().join("feedback.jsonl"),
            );
        let s = Server::spawn(cmd);
        s.wait_ready();
        s
    }

    /// Starts `cmd` on a free port, without waiting.
    fn spawn(mut cmd: Command) -> Server {
        let port = free_port();
        let child = cmd
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Server {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            http: Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    fn status(&self, path: &str) -> Option<u16> {
        self.http
            .get(self.url(path))
            .send()
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Waits for `/v2/health/ready` (a first start may build the model's
    /// Python environment).
    fn wait_ready(&self) {
        wait_until("the server becoming ready", || {
            self.status("/v2/health/ready") == Some(200)
        });
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value, reqwest::header::HeaderMap) {
        let r = self.http.post(self.url(path)).json(body).send().unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The server's worker processes.
    fn workers(&self) -> Vec<i32> {
        let out = std::process::Command::new("pgrep")
            .args(["-P", &self.pid().to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until `n` requests wait in the queue.
    fn wait_queued(&self, n: f64) {
        wait_until(&format!("{n} queued requests"), || {
            self.metric("legion_queue_depth") == n
        });
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the server this test started.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The unpacked model folder and the serving venv's python, for running
/// the model's own `predict` as the reference.
fn served_files(l: &Legion, digest: &str) -> (PathBuf, PathBuf) {
    let root = l
        .home
        .path()
        .join("serving")
        .join(digest.trim_start_matches("sha256:"));
    let log = std::fs::read_to_string(root.with_extension("env.log")).unwrap();
    let env = log
        .lines()
        .filter_map(|l| l.split("python environment ").nth(1))
        .next()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    (root.join("model"), PathBuf::from(env).join("bin/python"))
}

fn python(py: &Path, code: &str) -> Value {
    let out = std::process::Command::new(py)
        .args(["-c", code])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Trains python-iris into `l` and serves it with `legion serve`; returns
/// the server, the model digest and the model's own predictions for
/// `IRIS_ROWS`, computed in Python in the serving environment.
fn iris(l: &Legion) -> (Server, String, Vec<i64>) {
    let digest = train_iris(l);
    // The environment is made when the model is first served.
    let server = Server::start(l, "iris:1", &[]);
    let (model_dir, py) = served_files(l, &digest);
    let expected = python(&py, &format!(
        "import pickle, json, pandas as pd\nm = pickle.load(open('{}/model.pkl', 'rb'))\nprint(json.dumps(m.predict(pd.DataFrame({:?}, columns={:?})).tolist()))",
        model_dir.display(), IRIS_ROWS, IRIS_COLS
    ));
    let expected: Vec<i64> = expected
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(expected.len(), 3);
    (server, digest, expected)
}

/// Every protocol, metadata and health route of an iris server.
fn check_iris(s: &Server, expected: &[i64]) {
    let cols: Vec<Value> = IRIS_COLS.iter().enumerate().map(|(i, c)| json!({"name": c, "shape": [3], "datatype": "FP64", "data": IRIS_ROWS.iter().map(|r| r[i]).collect::<Vec<_>>()})).collect();
    let (st, oip, headers) = s.post(
        "/v2/models/iris/infer",
        &json!({"id": "req-1", "inputs": cols}),
    );
    assert_eq!(st, 200, "{oip}");
    assert_eq!(oip["model_name"], "iris");
    assert_eq!(oip["model_version"], "1");
    assert_eq!(oip["id"], "req-1");
    assert_eq!(oip["outputs"][0]["datatype"], "INT64");
    assert_eq!(oip["outputs"][0]["shape"], json!([3]));
    assert_eq!(oip["outputs"][0]["data"], json!(expected));
    assert!(headers.contains_key("request-id"));

    let (st, oip2d, _) = s.post(
        "/v2/models/iris/versions/1/infer",
        &json!({"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32", "data": IRIS_ROWS}]}),
    );
    assert_eq!(st, 200, "{oip2d}");
    assert_eq!(oip2d["outputs"][0]["data"], json!(expected));

    let records: Vec<Value> = IRIS_ROWS
        .iter()
        .map(|r| {
            IRIS_COLS
                .iter()
                .zip(r)
                .map(|(c, v)| (c.to_string(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        })
        .collect();
    for body in [
        json!({"dataframe_split": {"columns": IRIS_COLS, "data": IRIS_ROWS}}),
        json!({"dataframe_records": records}),
        json!({"instances": IRIS_ROWS}),
        json!({"inputs": {"sepal_length": [5.1, 6.7, 5.9], "sepal_width": [3.5, 3.0, 3.0], "petal_length": [1.4, 5.2, 4.2], "petal_width": [0.2, 2.3, 1.5]}}),
    ] {
        let (st, r, _) = s.post("/invocations", &body);
        assert_eq!(st, 200, "{body}: {r}");
        assert_eq!(r["predictions"], json!(expected), "{body}");
    }
    let csv = format!(
        "{}\n{}\n",
        IRIS_COLS.join(","),
        IRIS_ROWS
            .iter()
            .map(|r| r
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(","))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let r: Value = s
        .http
        .post(s.url("/invocations"))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["predictions"], json!(expected));

    let (st, legion, headers) = s.post(
        "/api/model/invoke",
        &json!({"columns": IRIS_COLS, "data": IRIS_ROWS}),
    );
    assert_eq!(st, 200);
    assert_eq!(
        legion["prediction"],
        json!(expected.iter().map(|v| vec![*v]).collect::<Vec<_>>())
    );
    assert_eq!(legion["columns"], json!(["species"]));
    assert_eq!(headers["model-name"], "iris");
    assert_eq!(headers["model-version"], "1");

    // Metadata and health in every dialect.
    let meta: Value = s
        .http
        .get(s.url("/v2/models/iris"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(meta["inputs"].as_array().unwrap().len(), 4);
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "sepal_length", "datatype": "FP64", "shape": [-1]})
    );
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/v2/models/iris/ready",
        "/v2/models/iris/versions/1",
        "/ping",
        "/health",
        "/version",
        "/healthcheck",
    ] {
        assert_eq!(
            s.http.get(s.url(path)).send().unwrap().status(),
            200,
            "{path}"
        );
    }
    let hc: Value = s
        .http
        .get(s.url("/healthcheck"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(hc, json!({"status": true}));
    let info: Value = s
        .http
        .get(s.url("/api/model/info"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        info["paths"]["/api/model/invoke"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["properties"]["columns"]["example"],
        json!(IRIS_COLS)
    );
}

#[test]
fn iris_every_protocol_gives_the_models_own_predictions() {
    let l = Legion::new();
    let (server, _, expected) = iris(&l);
    check_iris(&server, &expected);
}

/// A venv with NVIDIA's Triton HTTP client, a standard Open Inference
/// Protocol v2 client, made once beside the other test environments.
fn triton_client_python() -> PathBuf {
    common::test_venv("test-tritonclient", &["tritonclient[http]", "numpy"]).join("bin/python")
}

/// Trains the wine example (an MLflow scikit-learn regressor whose
/// signature has one unnamed output) and serves it with `legion serve`;
/// returns the server, its digest, its input example, and MLflow's own
/// pyfunc predictions for it.
fn wine(l: &Legion) -> (Server, String, Value, Value) {
    let digest = train_wine(l);
    let server = Server::start(l, "wine:1", &[]);
    let (model_dir, py) = served_files(l, &digest);
    let example: Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir.join("input_example.json")).unwrap(),
    )
    .unwrap();
    let expected = python(&py, &format!(
        "import json, pandas as pd, mlflow.pyfunc\nm = mlflow.pyfunc.load_model('{}')\nex = json.load(open('{}/input_example.json'))\nprint(json.dumps([float(x) for x in m.predict(pd.DataFrame(ex['data'], columns=ex['columns']))]))",
        model_dir.display(), model_dir.display()
    ));
    (server, digest, example, expected)
}

/// The wine server gives MLflow's numbers over /invocations and OIP.
fn check_wine(s: &Server, example: &Value, expected: &Value) {
    let (st, r, _) = s.post("/invocations", &json!({"dataframe_split": example}));
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        r["predictions"], *expected,
        "the fast path must give MLflow's numbers"
    );
    let cols = example["columns"].as_array().unwrap();
    let data = example["data"].as_array().unwrap();
    let tensors: Vec<Value> = cols.iter().enumerate().map(|(i, c)| json!({"name": c, "shape": [data.len()], "datatype": "FP64", "data": data.iter().map(|row| row[i].clone()).collect::<Vec<_>>()})).collect();
    let (st, oip, _) = s.post("/v2/models/wine/infer", &json!({"inputs": tensors}));
    assert_eq!(st, 200, "{oip}");
    assert_eq!(oip["outputs"][0]["data"], *expected);
    assert_eq!(oip["outputs"][0]["datatype"], "FP64");
    let meta = s.get("/v2/models/wine");
    assert_eq!(
        oip["outputs"][0]["name"], meta["outputs"][0]["name"],
        "the response names the output the metadata promised"
    );
}

#[test]
fn the_standalone_static_server_serves_iris_and_wine_like_legion_serve() {
    let bin = common::serve_bin();
    let file = Command::new("file").arg(&bin).output().unwrap();
    let file = String::from_utf8_lossy(&file.stdout);
    // `static-pie linked` (musl's default) or `statically linked`: no
    // interpreter, no shared libraries.
    assert!(
        file.contains("static-pie linked") || file.contains("statically linked"),
        "{file}"
    );
    assert!(!file.contains("not stripped"), "{file}");
    let l = Legion::new();
    let (server, digest, expected) = iris(&l);
    drop(server);
    check_iris(&Server::standalone(&l, &digest, &[]), &expected);
    let (server, digest, example, expected) = wine(&l);
    drop(server);
    check_wine(&Server::standalone(&l, &digest, &[]), &example, &expected);

    // As an image carries it: the model folder alone, without the load
    // cache `legion serve` made beside it (the worker loads through skops).
    let (files, python) = served_files(&l, &digest);
    let image = tempfile::tempdir().unwrap();
    let root = image.path().join("opt-legion");
    std::fs::create_dir_all(&root).unwrap();
    let copied = Command::new("cp")
        .arg("-r")
        .arg(&files)
        .arg(files.parent().unwrap().join("legion-model.json"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(copied.success());
    assert!(!root.join("cache").exists());
    let mut cmd = Command::new(common::serve_bin());
    cmd.env("LEGION_MODEL_ROOT", &root)
        .env("LEGION_PYTHON", &python)
        .env(
            "LEGION_SERVE_FEEDBACK_LOG",
            image.path().join("feedback.jsonl"),
        );
    let s = Server::spawn(cmd);
    s.wait_ready();
    check_wine(&s, &example, &expected);
}

#[test]
fn mlflow_wine_model_matches_pyfunc_predict() {
    let l = Legion::new();
    let (server, _, example, expected) = wine(&l);
    check_wine(&server, &example, &expected);
}

#[test]
fn a_standard_v2_client_asks_for_the_outputs_the_metadata_names() {
    // The wine regressor's signature has one unnamed output: the name the
    // client asks for comes from the metadata, and must be the one the
    // response uses.
    let l = Legion::new();
    let (s, _, example, expected) = wine(&l);
    let client = triton_client_python();
    let script = format!(
        r#"
import json, numpy as np
import tritonclient.http as http
c = http.InferenceServerClient(url="{url}")
assert c.is_server_live() and c.is_server_ready()
meta = c.get_server_metadata()
name = {model:?}
assert c.is_model_ready(name)
meta = c.get_model_metadata(name)
example = json.loads({example:?})
rows = np.array(example["data"], dtype=np.float64)
inputs = []
for i, col in enumerate(meta["inputs"]):
    t = http.InferInput(col["name"], [rows.shape[0]], col["datatype"])
    t.set_data_from_numpy(np.ascontiguousarray(rows[:, example["columns"].index(col["name"])]))
    inputs.append(t)
outputs = [http.InferRequestedOutput(o["name"]) for o in meta["outputs"]]
result = c.infer(name, inputs, outputs=outputs)
got = result.as_numpy(meta["outputs"][0]["name"])
assert got is not None, "no output named " + meta["outputs"][0]["name"]
print(json.dumps(got.tolist()))
"#,
        url = s.base.trim_start_matches("http://"),
        model = "wine",
        example = example.to_string(),
    );
    let got = python(&client, &script);
    assert_eq!(got, expected, "tritonclient's answer");
}

/// A `legion.python` model named `gated` whose predict returns `x * 2`
/// (each row's answer says which row it was) and raises on a negative x.
/// With `LEGION_TEST_GATE` set, each `predict` marks that it entered and
/// waits for the gate to open; with `LEGION_TEST_LOAD_GATE`, `load` does.
fn gated_model(l: &Legion) {
    let predict = r#"import os, time


def wait(gate, mark):
    if mark:
        open(os.path.join(gate, "entered-%d-%d" % (os.getpid(), time.monotonic_ns())), "w").close()
    while not os.path.exists(os.path.join(gate, "open")):
        time.sleep(0.005)


def load(d):
    if os.environ.get("LEGION_TEST_LOAD_GATE"):
        wait(os.environ["LEGION_TEST_LOAD_GATE"], False)
    return None


def predict(state, frame):
    if os.environ.get("LEGION_TEST_GATE"):
        wait(os.environ["LEGION_TEST_GATE"], True)
    if (frame["x"] < 0).any():
        raise ValueError("x must not be negative")
    return (frame["x"] * 2).to_numpy()
"#;
    let script = format!(
        "import json, os\nd = os.environ['LEGION_OUTPUT_DIR'] + '/model'\nos.makedirs(d)\nopen(d + '/predict.py', 'w').write({predict:?})\njson.dump({{'inputs': [{{'name': 'x', 'datatype': 'double'}}], 'outputs': [{{'name': 'y', 'datatype': 'double'}}]}}, open(d + '/signature.json', 'w'))\n"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.py"), script).unwrap();
    train(
        l,
        &[
            dir.path().to_str().unwrap(),
            "--toolchain",
            "python",
            "--name",
            "gated",
        ],
    );
}

/// Sends `x` to `s` from another thread.
fn invoke_later(
    s: &Server,
    x: f64,
) -> std::thread::JoinHandle<(u16, Value, reqwest::header::HeaderMap)> {
    let (base, http) = (s.base.clone(), s.http.clone());
    std::thread::spawn(move || {
        let r = http
            .post(format!("{base}/api/model/invoke"))
            .json(&json!({"columns": ["x"], "data": [[x]]}))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, r.json().unwrap_or(Value::Null), headers)
    })
}

fn invoke_x(s: &Server, x: f64) -> (u16, Value, reqwest::header::HeaderMap) {
    s.post(
        "/api/model/invoke",
        &json!({"columns": ["x"], "data": [[x]]}),
    )
}

#[test]
fn malformed_requests_get_clear_4xx_errors() {
    let l = Legion::new();
    gated_model(&l);
    let s = Server::start(&l, "gated:1", &["--max-body-bytes", "2000"]);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/v2/models/gated/infer",
            json!({"inputs": [{"name": "x", "shape": [3], "datatype": "FP64", "data": [1, 2]}]}),
            400,
            "shape [3] needs 3 values, got 2",
        ),
        (
            "/v2/models/gated/infer",
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "BOOL", "data": [1.5]}]}),
            400,
            "datatype BOOL needs true/false values",
        ),
        (
            "/v2/models/gated/infer",
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP128", "data": [1]}]}),
            400,
            "unknown datatype 'FP128'",
        ),
        (
            "/v2/models/nope/infer",
            json!({"inputs": []}),
            404,
            "unknown model nope",
        ),
        (
            "/v2/models/gated/versions/9/infer",
            json!({"inputs": []}),
            404,
            "unknown model gated version 9",
        ),
        (
            "/v2/models/gated/infer",
            json!({"inputs": [{"name": "z", "shape": [1], "datatype": "FP64", "data": [1]}]}),
            400,
            "missing column 'x'",
        ),
        (
            "/api/model/invoke",
            json!({"columns": ["y"], "data": [[1]]}),
            400,
            "missing column 'x'",
        ),
        (
            "/api/model/invoke",
            json!({"columns": ["x"], "data": [["text"]]}),
            400,
            "column 'x' must be double values",
        ),
        (
            "/invocations",
            json!({"dataframe_split": {"columns": ["x"], "data": [[1, 2]]}}),
            400,
            "row 0 has 2 values, expected 1",
        ),
        (
            "/invocations",
            json!({"rows": []}),
            400,
            "needs one of dataframe_split",
        ),
    ];
    for (path, body, status, expected) in cases {
        let (st, r, _) = s.post(path, &body);
        assert_eq!(st, status, "{path} {body}: {r}");
        assert!(
            r.to_string().contains(expected),
            "{path} {body}: expected {expected:?} in {r}"
        );
    }
    let r = s
        .http
        .post(s.url("/invocations"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error_code"], "BAD_REQUEST");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON"),
        "{body}"
    );
    let r = s
        .http
        .post(s.url("/api/model/invoke"))
        .body(format!(
            "{{\"columns\": [\"x\"], \"data\": [{}]}}",
            vec!["[1]"; 1000].join(",")
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = s
        .http
        .post(s.url("/invocations"))
        .header("content-type", "application/xml")
        .body("<x/>")
        .send()
        .unwrap();
    assert_eq!(r.status(), 415);
    // After all that, it still answers.
    let (st, r, _) = invoke_x(&s, 21.0);
    assert_eq!((st, r["prediction"].clone()), (200, json!([[42.0]])));
}

#[test]
fn concurrent_requests_are_batched_and_each_gets_its_own_answer() {
    let l = Legion::new();
    gated_model(&l);
    let gate = Gate::new();
    let s = Server::start_gated(
        &l,
        "gated:1",
        &["--workers", "1", "--max-batch-size", "64"],
        Some(&gate),
    );
    // The first request holds the worker; eleven more queue behind it.
    let first = invoke_later(&s, 0.0);
    gate.wait_entered(1);
    let rest: Vec<_> = (1..12).map(|i| invoke_later(&s, i as f64)).collect();
    s.wait_queued(11.0);
    gate.open();
    for (i, h) in std::iter::once(first).chain(rest).enumerate() {
        let (st, r, _) = h.join().unwrap();
        assert_eq!(st, 200, "{r}");
        assert_eq!(
            r["prediction"],
            json!([[2.0 * i as f64]]),
            "request {i} got another's answer"
        );
    }
    assert_eq!(s.metric("legion_batch_rows_sum"), 12.0);
    assert_eq!(
        s.metric("legion_batch_rows_count"),
        2.0,
        "the eleven queued requests are one predict call"
    );
}

#[test]
fn a_malformed_request_batched_with_good_ones_fails_alone() {
    // Good and bad requests merged into one predict call: the bad ones get
    // the model's error, every good one its own answer.
    let l = Legion::new();
    gated_model(&l);
    let gate = Gate::new();
    let s = Server::start_gated(&l, "gated:1", &["--workers", "1"], Some(&gate));
    let first = invoke_later(&s, 100.0);
    gate.wait_entered(1);
    let xs = [1.0, -1.0, 2.0, 3.0, -7.0, 4.0, 5.0, -2.0];
    let handles: Vec<_> = xs.iter().map(|x| invoke_later(&s, *x)).collect();
    // Requests the front refuses itself, sent meanwhile: never batched.
    for body in [
        json!({"columns": ["x"], "data": [["text"]]}),
        json!({"columns": ["z"], "data": [[1]]}),
    ] {
        let (st, _, _) = s.post("/api/model/invoke", &body);
        assert_eq!(st, 400);
    }
    s.wait_queued(xs.len() as f64);
    gate.open();
    assert_eq!(first.join().unwrap().1["prediction"], json!([[200.0]]));
    for (x, h) in xs.iter().zip(handles) {
        let (st, r, _) = h.join().unwrap();
        if *x < 0.0 {
            assert_eq!(st, 500, "{x}: {r}");
            assert!(
                r["message"]
                    .as_str()
                    .unwrap()
                    .contains("x must not be negative"),
                "{r}"
            );
        } else {
            assert_eq!(
                (st, r["prediction"].clone()),
                (200, json!([[2.0 * x]])),
                "{x}: {r}"
            );
        }
    }
}

#[test]
fn several_workers_answer_lone_requests_at_once() {
    // With an idle worker waiting for the queue, the worker that took a
    // request must not wait for the next one before answering.
    let l = Legion::new();
    gated_model(&l);
    let s = Server::start(&l, "gated:1", &["--workers", "2"]);
    wait_until("the second worker loading", || {
        s.metric("legion_workers_ready") >= 2.0
    });
    for i in 0..4 {
        let (st, r, _) = invoke_x(&s, i as f64);
        assert_eq!(
            (st, r["prediction"].clone()),
            (200, json!([[2.0 * i as f64]])),
            "request {i}"
        );
    }
}

#[test]
fn overload_is_refused_with_503_and_retry_after() {
    let l = Legion::new();
    gated_model(&l);
    let gate = Gate::new();
    let s = Server::start_gated(
        &l,
        "gated:1",
        &[
            "--workers",
            "1",
            "--max-queue",
            "1",
            "--max-batch-size",
            "1",
        ],
        Some(&gate),
    );
    // One request at the worker, one in the queue: the queue is full.
    let busy = invoke_later(&s, 1.0);
    gate.wait_entered(1);
    let waiting = invoke_later(&s, 2.0);
    s.wait_queued(1.0);
    let (st, r, h) = invoke_x(&s, 3.0);
    assert_eq!(st, 503, "{r}");
    assert!(r["message"].as_str().unwrap().contains("overloaded"), "{r}");
    assert_eq!(h["retry-after"], "1");
    gate.open();
    assert_eq!(busy.join().unwrap().0, 200);
    assert_eq!(waiting.join().unwrap().0, 200);
}

#[test]
fn slow_prediction_times_out_with_504() {
    let l = Legion::new();
    gated_model(&l);
    let gate = Gate::new();
    let s = Server::start_gated(&l, "gated:1", &["--timeout-ms", "300"], Some(&gate));
    // The gate stays shut: the prediction cannot finish in any time.
    let (st, r, _) = invoke_x(&s, 1.0);
    assert_eq!(st, 504, "{r}");
    assert!(r["message"]
        .as_str()
        .unwrap()
        .contains("no prediction within 300 ms"));
    gate.open();
}

#[test]
fn killed_worker_fails_its_requests_with_503_and_is_replaced() {
    let l = Legion::new();
    gated_model(&l);
    let gate = Gate::new();
    let s = Server::start_gated(&l, "gated:1", &["--workers", "1"], Some(&gate));
    let workers = s.workers();
    assert_eq!(workers.len(), 1, "{workers:?}");
    let request = invoke_later(&s, 1.0);
    gate.wait_entered(1);
    // SAFETY: killing the worker of the server this test started.
    unsafe { libc::kill(workers[0], libc::SIGKILL) };
    let (st, r, _) = request.join().unwrap();
    assert_eq!(st, 503, "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("worker crashed"),
        "{r}"
    );
    gate.open();
    s.wait_ready();
    let (st, r, _) = invoke_x(&s, 4.0);
    assert_eq!((st, r["prediction"].clone()), (200, json!([[8.0]])), "{r}");
    assert_eq!(s.metric("legion_worker_restarts_total"), 1.0);
    assert_ne!(s.workers(), workers);
}

/// Whether `pid` runs (a zombie waiting to be reaped does not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

#[test]
fn sigterm_drains_requests_in_flight_then_exits() {
    let l = Legion::new();
    gated_model(&l);
    let gate = Gate::new();
    let mut s = Server::start_gated(&l, "gated:1", &[], Some(&gate));
    let workers = s.workers();
    let request = invoke_later(&s, 3.0);
    gate.wait_entered(1);
    // SAFETY: signalling the server this test started.
    unsafe { libc::kill(s.pid() as i32, libc::SIGTERM) };
    // Once it takes no new connections, let the request in flight finish.
    let addr = s.base.trim_start_matches("http://").to_string();
    wait_until("the listener closing", || {
        std::net::TcpStream::connect(&addr).is_err()
    });
    gate.open();
    let (st, r, _) = request.join().unwrap();
    assert_eq!(
        (st, r["prediction"].clone()),
        (200, json!([[6.0]])),
        "the request in flight is answered"
    );
    let mut child = s.child.take().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    for w in workers {
        wait_until(&format!("worker {w} exiting"), || !alive(w));
    }
}

#[test]
fn live_answers_at_once_and_ready_once_the_model_loads() {
    let l = Legion::new();
    gated_model(&l);
    let gate = Gate::new();
    let mut cmd = l.cmd();
    cmd.args(["serve", "gated:1"])
        .env("LEGION_TEST_LOAD_GATE", gate.path());
    let s = Server::spawn(cmd);
    wait_until("the listener answering", || {
        s.status("/v2/health/live") == Some(200)
    });
    // The model's load waits at the gate: live, not ready.
    assert_eq!(s.status("/v2/health/ready"), Some(503));
    assert_eq!(s.status("/v2/models/gated/ready"), Some(503));
    let (st, r, h) = invoke_x(&s, 1.0);
    assert_eq!(st, 503, "{r}");
    assert!(h.contains_key("retry-after"));
    gate.open();
    s.wait_ready();
    assert_eq!(invoke_x(&s, 1.0).1["prediction"], json!([[2.0]]));
}

#[test]
fn a_model_that_cannot_load_stops_the_server_with_the_loaders_error() {
    // A legion.python model whose predict.py imports a module its
    // environment lacks never loads: the server gives up after its
    // attempts, exits non-zero, and says why.
    let l = Legion::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.py"),
        "import os\nd = os.environ['LEGION_OUTPUT_DIR'] + '/model'\nos.makedirs(d)\nopen(d + '/predict.py', 'w').write('import legion_missing_dependency\\ndef load(d):\\n    return None\\ndef predict(m, f):\\n    return f\\n')\n",
    )
    .unwrap();
    train(
        &l,
        &[
            dir.path().to_str().unwrap(),
            "--toolchain",
            "python",
            "--name",
            "broken",
        ],
    );
    let out = l
        .cmd()
        .args([
            "serve",
            "broken:1",
            "--port",
            &free_port().to_string(),
            "--max-load-attempts",
            "2",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the model could not be loaded (2 attempts per worker)")
            && err.contains("No module named 'legion_missing_dependency'"),
        "{err}"
    );
}

#[test]
fn request_ids_metrics_request_log_and_feedback() {
    let l = Legion::new();
    gated_model(&l);
    let log = l.home.path().join("requests.jsonl");
    let feedback = l.home.path().join("feedback.jsonl");
    let s = Server::start(
        &l,
        "gated:1",
        &[
            "--request-log",
            log.to_str().unwrap(),
            "--feedback-log",
            feedback.to_str().unwrap(),
        ],
    );
    let r = s
        .http
        .post(s.url("/api/model/invoke"))
        .header("Request-ID", "abc-123")
        .json(&json!({"columns": ["x"], "data": [[5]]}))
        .send()
        .unwrap();
    assert_eq!(r.headers()["request-id"], "abc-123");
    let (_, _, h) = invoke_x(&s, 1.0);
    let generated = h["request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 32);
    assert_eq!(
        s.metric("legion_requests_total{protocol=\"legion\",code=\"200\"}"),
        2.0
    );

    let fb = s
        .http
        .post(s.url("/feedback"))
        .header("Request-ID", "abc-123")
        .header("Model-Name", "gated")
        .header("Model-Version", "1")
        .json(&json!({"truth": 10}))
        .send()
        .unwrap();
    assert_eq!(fb.status(), 200);
    assert_eq!(
        fb.json::<Value>().unwrap(),
        json!({"error": false, "registered": true})
    );
    let fb = s
        .http
        .post(s.url("/feedback"))
        .json(&json!({"truth": 10}))
        .send()
        .unwrap();
    assert_eq!(fb.status(), 400);

    let deadline = Instant::now() + Duration::from_secs(10);
    let (lines, fb_lines) = loop {
        let lines: Vec<Value> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let fb: Vec<Value> = std::fs::read_to_string(&feedback)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= 2 && !fb.is_empty() {
            break (lines, fb);
        }
        assert!(Instant::now() < deadline, "logs not written");
        std::thread::sleep(Duration::from_millis(50));
    };
    let first = lines.iter().find(|l| l["requestId"] == "abc-123").unwrap();
    assert_eq!(first["model"], "gated");
    assert_eq!(first["status"], 200);
    assert_eq!(first["input"], json!({"columns": ["x"], "data": [[5]]}));
    assert_eq!(first["output"]["data"], json!([10.0]));
    assert_eq!(fb_lines[0]["requestId"], "abc-123");
    assert_eq!(fb_lines[0]["payload"], json!({"truth": 10}));
}

#[test]
fn serves_a_model_pulled_from_a_registry() {
    let registry = common::registry::Registry::start();
    let trainer = Legion::new();
    let target = format!("{}/models/iris", registry.addr);
    train(
        &trainer,
        &[
            &example("python-iris"),
            "--toolchain",
            "python",
            "--name",
            "iris",
            "--push",
            &target,
        ],
    );
    // A fresh data dir that has never seen the model.
    let l = Legion::new();
    let s = Server::start(&l, &format!("{target}:1"), &[]);
    let (st, r, _) = s.post(
        "/api/model/invoke",
        &json!({"columns": IRIS_COLS, "data": [IRIS_ROWS[0]]}),
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["prediction"], json!([[0]]));
    let meta: Value = s
        .http
        .get(s.url("/v2/models/iris"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(meta["name"], "iris");
}

#[test]
fn unknown_model_reference_is_a_clear_error() {
    let l = Legion::new();
    let err = l.fails(&["serve", "nope:1", "--port", &free_port().to_string()]);
    assert!(err.contains("no stored model 'nope:1'"), "{err}");
    let err = l.fails(&[
        "serve",
        "127.0.0.1:9/models/nope:1",
        "--port",
        &free_port().to_string(),
    ]);
    assert!(err.contains("registry 127.0.0.1:9/models/nope:1"), "{err}");
}
