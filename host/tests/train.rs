//! `legion train` end to end with real Python, real MLflow and real
//! processes: both examples, the stored artifacts, the run records, and
//! every failure path the training issue names.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{example, git, repo_root, Legion};
use serde_json::Value;

/// Runs `legion -o json train ARGS`, returning (exit code, run record).
fn train(l: &Legion, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["-o", "json", "train"];
    all.extend_from_slice(args);
    let out = l.run(&all);
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no run record ({e}); exit {code}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, run)
}

fn log_of(l: &Legion, run: &Value) -> String {
    l.ok(&["runs", "logs", run["id"].as_str().unwrap()])
}

fn model_config(l: &Legion, reference: &str) -> Value {
    serde_json::from_str(&l.ok(&["models", "show", reference])).unwrap()
}

/// A throwaway project folder with the given files.
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    dir
}

/// A script that writes a minimal `legion.python` model.
const WRITE_MODEL: &str = "import os\nd = os.environ['LEGION_OUTPUT_DIR'] + '/model'\nos.makedirs(d)\nopen(d + '/predict.py', 'w').write('def load(p): return None\\ndef predict(m, f): return f\\n')\nprint('ran')\n";

// ---------- the examples ----------

#[test]
fn python_iris_trains_with_a_stable_digest_and_a_full_record() {
    let l = Legion::new();
    let (code, first) = train(
        &l,
        &[
            &example("python-iris"),
            "--toolchain",
            "python",
            "--name",
            "iris",
            "--version",
            "2",
            "-P",
            "C=0.5",
        ],
    );
    assert_eq!(code, 0, "{first:#}");
    assert_eq!(first["state"], "succeeded");
    let digest = first["modelDigest"].as_str().unwrap().to_string();
    assert!(digest.starts_with("sha256:"));
    assert_eq!(first["modelRef"], "iris:2");

    // Identical inputs, deterministic training: identical digest, in this
    // data dir and in a fresh one.
    let (_, second) = train(
        &l,
        &[
            &example("python-iris"),
            "--toolchain",
            "python",
            "--name",
            "iris",
            "--version",
            "2",
            "-P",
            "C=0.5",
        ],
    );
    assert_eq!(second["modelDigest"].as_str(), Some(digest.as_str()));
    let other = Legion::new();
    let (_, third) = train(
        &other,
        &[
            &example("python-iris"),
            "--toolchain",
            "python",
            "--name",
            "iris",
            "--version",
            "2",
            "-P",
            "C=0.5",
        ],
    );
    assert_eq!(third["modelDigest"].as_str(), Some(digest.as_str()));
    // A different hyper-parameter is a different model.
    let (_, changed) = train(
        &l,
        &[
            &example("python-iris"),
            "--toolchain",
            "python",
            "--name",
            "iris",
            "--version",
            "3",
            "-P",
            "C=2",
        ],
    );
    assert_ne!(changed["modelDigest"].as_str(), Some(digest.as_str()));

    let shown = model_config(&l, "iris:2");
    assert_eq!(shown["digest"].as_str(), Some(digest.as_str()));
    let config = &shown["config"];
    assert_eq!(config["name"], "iris");
    assert_eq!(config["version"], "2");
    assert_eq!(config["toolchain"]["name"], "python");
    assert_eq!(config["toolchain"]["digest"], first["toolchainDigest"]);
    assert_eq!(config["parameters"]["C"], "0.5");
    assert_eq!(config["manifest"]["flavor"], "sklearn");
    assert_eq!(
        config["manifest"]["requirements"],
        serde_json::json!(["scikit-learn", "pandas"])
    );
    let inputs: Vec<&str> = config["manifest"]["signature"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        inputs,
        ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    );
    assert!(config["source"]["uri"]
        .as_str()
        .unwrap()
        .ends_with("examples/python-iris"));
    let manifest = &shown["manifest"];
    assert_eq!(manifest["artifactType"], "application/vnd.legion.model.v1");
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    // The run record and its full log.
    let runs = l.json(&["runs", "ls"]);
    assert_eq!(runs.as_array().unwrap().len(), 3);
    let shown = l.json(&["runs", "show", first["id"].as_str().unwrap()]);
    assert_eq!(shown["state"], "succeeded");
    assert_eq!(
        shown["plan"]["steps"][0]["command"],
        serde_json::json!(["python", "train.py"])
    );
    assert!(shown["startedAt"].as_i64().unwrap() <= shown["finishedAt"].as_i64().unwrap());
    let log = log_of(&l, &first);
    assert!(log.contains("training accuracy: 0.9"), "{log}");
    assert!(log.contains("step 'train' succeeded"), "{log}");
    let listed = l.json(&["models", "ls"]);
    assert_eq!(listed[0]["reference"], "iris:2");

    // The model layer unpacks (with a standard tar reader) to the files the script wrote.
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blob = l.home.path().join("models/blobs/sha256").join(layer);
    let out = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&blob)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&out.stdout);
    for f in [
        "model/model.pkl",
        "model/signature.json",
        "model/input_example.json",
    ] {
        assert!(
            names.lines().any(|n| n == f),
            "{f} missing from the layer: {names}"
        );
    }
}

#[test]
fn mlflow_wine_trains_and_the_manifest_says_what_mlflow_logged() {
    let l = Legion::new();
    let (code, run) = train(
        &l,
        &[
            &example("mlflow-wine"),
            "--toolchain",
            "mlflow",
            "--name",
            "wine",
            "-P",
            "n_estimators=10",
            "-P",
            "rows=500",
        ],
    );
    assert_eq!(code, 0, "{run:#}\n{}", log_of(&l, &run));
    assert_eq!(run["state"], "succeeded");
    let step = &run["plan"]["steps"][0];
    assert_eq!(step["command"], serde_json::json!(["mlflow", "run", "."]));
    let args: Vec<&str> = step["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["-P", "n_estimators=10"]),
        "{args:?}"
    );
    assert!(
        args.windows(2).any(|w| w == ["-P", "max_depth=8"]),
        "defaults are passed too: {args:?}"
    );

    let config = &model_config(&l, "wine:1")["config"];
    let m = &config["manifest"];
    assert_eq!(m["flavor"], "python_function");
    assert_eq!(m["metadata"]["loader_module"], "mlflow.sklearn");
    assert!(m["runId"].as_str().is_some_and(|r| r.len() == 32), "{m:#}");
    assert!(
        m["modelPath"].as_str().unwrap().contains("/models/m-"),
        "{m:#}"
    );
    let inputs = m["signature"]["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 11);
    assert_eq!(inputs[0]["name"], "fixed_acidity");
    assert_eq!(inputs[0]["datatype"], "double");
    let example: Value = serde_json::from_str(m["inputExample"].as_str().unwrap()).unwrap();
    assert_eq!(example["data"].as_array().unwrap().len(), 3);
    let reqs: Vec<&str> = m["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        reqs.iter().any(|r| r.starts_with("scikit-learn==")),
        "{reqs:?}"
    );
    assert!(log_of(&l, &run).contains("trained 10 trees"));
}

#[test]
fn push_sends_the_same_artifact_to_a_real_registry() {
    let registry = common::registry::Registry::start();
    let l = Legion::new();
    let target = format!("{}/models/iris", registry.addr);
    let (code, run) = train(
        &l,
        &[
            &example("python-iris"),
            "--toolchain",
            "python",
            "--name",
            "iris",
            "--version",
            "7",
            "--push",
            &target,
        ],
    );
    assert_eq!(code, 0, "{run:#}\n{}", log_of(&l, &run));
    let digest = run["modelDigest"].as_str().unwrap();
    assert_eq!(
        run["pushedRef"].as_str(),
        Some(format!("{target}:7@{digest}").as_str())
    );
    // An independent client sees the very manifest stored locally.
    let raw = registry.raw_manifest("models/iris:7");
    assert_eq!(legion::oci::sha256_digest(&raw), digest);
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["artifactType"], "application/vnd.legion.model.v1");
    // Pushing again moves no blob: the registry has them all.
    let (code, again) = train(
        &l,
        &[
            &example("python-iris"),
            "--toolchain",
            "python",
            "--name",
            "iris",
            "--version",
            "7",
            "--push",
            &format!("{target}:again"),
        ],
    );
    assert_eq!(code, 0);
    assert!(
        log_of(&l, &again).contains("(0 blobs, 0 bytes; 2 already there)"),
        "{}",
        log_of(&l, &again)
    );
}

#[test]
fn unreachable_registry_fails_the_run_and_keeps_the_local_model() {
    let l = Legion::new();
    let (code, run) = train(
        &l,
        &[
            &example("python-iris"),
            "--toolchain",
            "python",
            "--name",
            "iris",
            "--push",
            "127.0.0.1:9/models/iris",
        ],
    );
    assert_eq!(code, 1);
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("registry 127.0.0.1:9/models/iris:1:"),
        "{reason}"
    );
    // The model was stored before the push; nothing is lost.
    assert_eq!(l.json(&["models", "ls"])[0]["reference"], "iris:1");
}

// ---------- failure paths: clear message, log kept ----------

#[test]
fn failing_script_reports_exit_code_and_last_lines() {
    let l = Legion::new();
    let p = project(&[("train.py", "import sys\nfor i in range(30):\n    print(f'line {i}')\nprint('the data is broken', file=sys.stderr)\nsys.exit(3)\n")]);
    let (code, run) = train(
        &l,
        &[
            p.path().to_str().unwrap(),
            "--toolchain",
            "python",
            "--name",
            "broken",
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(run["state"], "failed");
    assert_eq!(run["exitCode"], 3);
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.contains("step 'train' exited with code 3"),
        "{reason}"
    );
    assert!(
        reason.contains("the data is broken") && reason.contains("line 29"),
        "{reason}"
    );
    let log = log_of(&l, &run);
    assert!(
        log.contains("line 0") && log.contains("line 29"),
        "the full log is kept: {log}"
    );
    assert!(
        l.json(&["models", "ls"]).as_array().unwrap().is_empty(),
        "no model from a failed run"
    );
    // The human output says the same, on stderr, with a non-zero exit.
    let err = l.fails(&[
        "train",
        p.path().to_str().unwrap(),
        "--toolchain",
        "python",
        "--name",
        "broken",
    ]);
    assert!(
        err.contains("failed")
            && err.contains("exited with code 3")
            && err.contains("legion runs logs"),
        "{err}"
    );
}

fn mlflow_project(script: &str) -> tempfile::TempDir {
    // The same environment as examples/mlflow-wine, so the venv is shared.
    let env =
        std::fs::read_to_string(repo_root().join("examples/mlflow-wine/python_env.yaml")).unwrap();
    project(&[
        ("MLproject", "name: t\npython_env: python_env.yaml\nentry_points:\n  main:\n    parameters:\n      alpha: {type: float, default: 0.5}\n    command: \"python train.py\"\n"),
        ("python_env.yaml", &env),
        ("train.py", script),
    ])
}

#[test]
fn mlflow_run_that_logs_no_model_fails_clearly() {
    let l = Legion::new();
    let p = mlflow_project(
        "import mlflow\nwith mlflow.start_run():\n    mlflow.log_metric('m', 1.0)\n",
    );
    let (code, run) = train(
        &l,
        &[
            p.path().to_str().unwrap(),
            "--toolchain",
            "mlflow",
            "--name",
            "nomodel",
        ],
    );
    assert_eq!(code, 1, "{run:#}");
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.contains("collect-training failed")
            && reason.contains("logged no python_function model"),
        "{reason}"
    );
}

#[test]
fn mlflow_run_that_logs_two_models_fails_clearly() {
    let l = Legion::new();
    let p = mlflow_project(
        "import mlflow, mlflow.pyfunc\nclass C(mlflow.pyfunc.PythonModel):\n    def predict(self, context, model_input, params=None):\n        return model_input\nwith mlflow.start_run():\n    mlflow.pyfunc.log_model(name='a', python_model=C())\n    mlflow.pyfunc.log_model(name='b', python_model=C())\n",
    );
    let (code, run) = train(
        &l,
        &[
            p.path().to_str().unwrap(),
            "--toolchain",
            "mlflow",
            "--name",
            "twomodels",
        ],
    );
    assert_eq!(code, 1, "{run:#}");
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.contains("logged 2 python_function models") && reason.contains("log exactly one"),
        "{reason}"
    );
}

/// A plan refused by the toolchain: the run is recorded as failed with the
/// reason, and no step ever ran.
fn refused_before_running(l: &Legion, args: &[&str], expected: &str) {
    let (code, run) = train(l, args);
    assert_eq!(code, 1, "{run:#}");
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.contains(expected),
        "expected {expected:?} in {reason}"
    );
    assert!(
        run.get("plan").is_none(),
        "no plan may be recorded: {run:#}"
    );
    let log = log_of(l, &run);
    assert!(!log.contains("step 1/"), "nothing may run: {log}");
}

#[test]
fn unknown_mlflow_entry_point_is_refused_before_anything_runs() {
    let l = Legion::new();
    refused_before_running(
        &l,
        &[
            &example("mlflow-wine"),
            "--toolchain",
            "mlflow",
            "--entrypoint",
            "evaluate",
        ],
        "'evaluate' is not an entry point of MLproject (it has: main, noop)",
    );
}

#[test]
fn ill_typed_or_unknown_parameters_are_refused_before_anything_runs() {
    let l = Legion::new();
    refused_before_running(
        &l,
        &[
            &example("mlflow-wine"),
            "--toolchain",
            "mlflow",
            "-P",
            "n_estimators=many",
        ],
        "parameter 'n_estimators': 'many' is not an int",
    );
    refused_before_running(
        &l,
        &[
            &example("mlflow-wine"),
            "--toolchain",
            "mlflow",
            "-P",
            "learning_rate=0.1",
        ],
        "parameter 'learning_rate' is not declared",
    );
}

#[test]
fn unreachable_data_uri_fails_with_the_uri() {
    let l = Legion::new();
    let p = project(&[("train.py", "print('never')\n")]);
    let (code, run) = train(
        &l,
        &[
            p.path().to_str().unwrap(),
            "--toolchain",
            "python",
            "--name",
            "nodata",
            "--data",
            "http://127.0.0.1:9/data/wine.csv=wine.csv",
        ],
    );
    assert_eq!(code, 1);
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("data http://127.0.0.1:9/data/wine.csv:"),
        "{reason}"
    );
    assert!(!log_of(&l, &run).contains("never"));
}

#[test]
fn data_bindings_are_fetched_into_the_data_folder() {
    let l = Legion::new();
    let data = project(&[("table.csv", "a,b\n1,2\n"), ("more/notes.txt", "hello\n")]);
    // A real HTTP server on loopback, stopped when the guard drops.
    let server = HttpServer::start(data.path());
    let script = "import os, pathlib\nd = pathlib.Path(os.environ['LEGION_DATA_DIR'])\nprint('file:', (d / 'in/table.csv').read_text().strip().replace(chr(10), '|'))\nprint('dir:', (d / 'folder/more/notes.txt').read_text().strip())\nprint('http:', (d / 'web.csv').read_text().strip().replace(chr(10), '|'))\nos.makedirs(os.environ['LEGION_OUTPUT_DIR'] + '/model')\nopen(os.environ['LEGION_OUTPUT_DIR'] + '/model/predict.py', 'w').write('def load(p): return None\\ndef predict(m, f): return f\\n')\n";
    let p = project(&[("train.py", script)]);
    let file_uri = format!("file://{}", data.path().join("table.csv").display());
    let dir_uri = format!("file://{}", data.path().display());
    let http_uri = format!("http://127.0.0.1:{}/table.csv", server.port);
    let (code, run) = train(
        &l,
        &[
            p.path().to_str().unwrap(),
            "--toolchain",
            "python",
            "--name",
            "data",
            "--data",
            &format!("{file_uri}=in/table.csv"),
            "--data",
            &format!("{dir_uri}=folder"),
            "--data",
            &format!("{http_uri}=web.csv"),
        ],
    );
    assert_eq!(code, 0, "{run:#}\n{}", log_of(&l, &run));
    let log = log_of(&l, &run);
    assert!(
        log.contains("file: a,b|1,2")
            && log.contains("dir: hello")
            && log.contains("http: a,b|1,2"),
        "{log}"
    );
    let config = &model_config(&l, "data:1")["config"];
    assert_eq!(config["manifest"]["flavor"], "legion.python");
}

#[test]
fn data_local_path_may_not_escape() {
    let l = Legion::new();
    let p = project(&[("train.py", "")]);
    let (code, run) = train(
        &l,
        &[
            p.path().to_str().unwrap(),
            "--toolchain",
            "python",
            "--name",
            "esc",
            "--data",
            "file:///etc/hostname=../../x",
        ],
    );
    assert_eq!(code, 1);
    assert!(run["reason"]
        .as_str()
        .unwrap()
        .contains("must be relative and stay inside the data folder"));
}

fn git_repo() -> (tempfile::TempDir, String, String) {
    let repo = project(&[("train.py", "import os\nos.makedirs(os.environ['LEGION_OUTPUT_DIR'] + '/model')\nopen(os.environ['LEGION_OUTPUT_DIR'] + '/model/model.pkl', 'wb').write(b'v1')\nprint('version one')\n")]);
    git(repo.path(), &["init", "-q"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-qm", "v1"]);
    git(repo.path(), &["tag", "v1"]);
    let v1 = git(repo.path(), &["rev-parse", "HEAD"]);
    std::fs::write(
        repo.path().join("train.py"),
        "print('version two')\nraise SystemExit(5)\n",
    )
    .unwrap();
    git(repo.path(), &["commit", "-qam", "v2"]);
    let v2 = git(repo.path(), &["rev-parse", "HEAD"]);
    (repo, v1, v2)
}

#[test]
fn git_source_at_a_tag_records_the_commit() {
    let l = Legion::new();
    let (repo, v1, _v2) = git_repo();
    let url = format!("file://{}#v1", repo.path().display());
    let (code, run) = train(&l, &[&url, "--toolchain", "python", "--name", "fromgit"]);
    assert_eq!(code, 0, "{run:#}\n{}", log_of(&l, &run));
    assert_eq!(run["sourceCommit"].as_str(), Some(v1.as_str()));
    assert!(log_of(&l, &run).contains("version one"));
    let config = &model_config(&l, "fromgit:1")["config"];
    assert_eq!(config["source"]["commit"].as_str(), Some(v1.as_str()));
    assert_eq!(config["source"]["reference"], "v1");
    // A short commit works as a reference too.
    let url = format!("file://{}#{}", repo.path().display(), &v1[..8]);
    let (code, run) = train(
        &l,
        &[
            &url,
            "--toolchain",
            "python",
            "--name",
            "fromgit",
            "--version",
            "short",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(run["sourceCommit"].as_str(), Some(v1.as_str()));
    // The default branch is the newest commit, which fails on purpose.
    let url = format!("file://{}", repo.path().display());
    let (code, run) = train(
        &l,
        &[
            &url,
            "--toolchain",
            "python",
            "--name",
            "fromgit",
            "--version",
            "head",
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(run["exitCode"], 5);
}

#[test]
fn git_ref_that_does_not_exist_fails_clearly() {
    let l = Legion::new();
    let (repo, _, _) = git_repo();
    let url = format!("file://{}#no-such-branch", repo.path().display());
    let (code, run) = train(&l, &[&url, "--toolchain", "python", "--name", "nogit"]);
    assert_eq!(code, 1);
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.contains("git ref 'no-such-branch' does not exist"),
        "{reason}"
    );
}

#[test]
fn ctrl_c_cancels_the_run_kills_the_step_and_keeps_the_log() {
    let l = Legion::new();
    let pidfile = tempfile::tempdir().unwrap();
    let pid_path = pidfile.path().join("child.pid");
    let script = format!(
        "import subprocess, time\nchild = subprocess.Popen(['sleep', '300'])\nopen('{}', 'w').write(str(child.pid))\nprint('started', flush=True)\ntime.sleep(300)\n",
        pid_path.display()
    );
    let p = project(&[("train.py", &script)]);
    let proc = l
        .cmd()
        .args([
            "-o",
            "json",
            "train",
            p.path().to_str().unwrap(),
            "--toolchain",
            "python",
            "--name",
            "cancelme",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !pid_path.is_file()
        || std::fs::read_to_string(&pid_path)
            .unwrap_or_default()
            .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the step never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let child_pid: i32 = std::fs::read_to_string(&pid_path)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: sending SIGINT to the legion process this test started.
    unsafe { libc::kill(proc.id() as i32, libc::SIGINT) };
    let out = proc.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["state"], "cancelled");
    assert!(run["reason"]
        .as_str()
        .unwrap()
        .contains("cancelled during step 'train'"));
    // The step's own child is gone too (its whole process group was stopped).
    let deadline = Instant::now() + Duration::from_secs(60);
    // SAFETY: signal 0 only checks that the process exists.
    while unsafe { libc::kill(child_pid, 0) } == 0 {
        assert!(
            Instant::now() < deadline,
            "the step's child {child_pid} survived the cancel"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let shown = l.json(&["runs", "show", run["id"].as_str().unwrap()]);
    assert_eq!(shown["state"], "cancelled");
    let log = log_of(&l, &run);
    assert!(
        log.contains("started") && log.contains("run cancelled during step 'train'"),
        "{log}"
    );
}

#[test]
fn a_run_whose_host_died_is_marked_failed() {
    let l = Legion::new();
    let pidfile = tempfile::tempdir().unwrap();
    let pid_path = pidfile.path().join("step.pid");
    let script = format!("import os, time\nopen('{}', 'w').write(str(os.getpid()))\nprint('up', flush=True)\ntime.sleep(300)\n", pid_path.display());
    let p = project(&[("train.py", &script)]);
    let mut proc = l
        .cmd()
        .args([
            "train",
            p.path().to_str().unwrap(),
            "--toolchain",
            "python",
            "--name",
            "orphan",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(pidfile.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let id = loop {
        // A host that ended on its own cannot be killed mid-run: say why.
        if let Some(status) = proc.try_wait().unwrap() {
            panic!(
                "legion train ended before its step ran ({status}): {}",
                std::fs::read_to_string(pidfile.path().join("stderr")).unwrap_or_default()
            );
        }
        let runs = l.json(&["runs", "ls"]);
        if runs[0]["state"] == "running"
            && std::fs::read_to_string(&pid_path).is_ok_and(|p| !p.is_empty())
        {
            break runs[0]["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    proc.kill().unwrap(); // SIGKILL: no chance to record anything
    proc.wait().unwrap();
    let shown = l.json(&["runs", "show", &id]);
    assert_eq!(shown["state"], "failed");
    assert!(
        shown["reason"]
            .as_str()
            .unwrap()
            .contains("interrupted: the legion process running it"),
        "{shown:#}"
    );
    // The step outlives a SIGKILLed host (nothing can stop it then); end it here.
    let step_pid: i32 = std::fs::read_to_string(&pid_path)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: killing the step this test's training started.
    unsafe { libc::kill(step_pid, libc::SIGKILL) };
}

#[test]
fn timeout_stops_the_run() {
    let l = Legion::new();
    let p = project(&[(
        "train.py",
        "import time\nprint('working', flush=True)\ntime.sleep(300)\n",
    )]);
    let (code, run) = train(
        &l,
        &[
            p.path().to_str().unwrap(),
            "--toolchain",
            "python",
            "--name",
            "slow",
            "--timeout",
            "2s",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .contains("timed out after 2s in step 'train'"),
        "{run:#}"
    );
    assert!(log_of(&l, &run).contains("working"));
}

#[test]
fn bad_input_is_refused_before_a_run_exists() {
    let l = Legion::new();
    let p = project(&[("train.py", "")]);
    let src = p.path().to_str().unwrap();
    for (args, expected) in [
        (vec![src, "--toolchain", "nope"], "unknown toolchain 'nope'"),
        (
            vec!["/no/such/project", "--toolchain", "python"],
            "/no/such/project is not a folder",
        ),
        (
            vec![src, "--toolchain", "python", "--name", "Bad Name"],
            "'Bad Name' is not a valid model name",
        ),
        (
            vec![src, "--toolchain", "python", "--push", "nohost"],
            "names no registry",
        ),
        (
            vec![src, "--toolchain", "python", "--data", "nodelimiter"],
            "expected URI=LOCAL_PATH",
        ),
    ] {
        let mut all = vec!["train"];
        all.extend(args.iter().copied());
        let err = l.fails(&all);
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in {err}"
        );
    }
    assert!(
        l.json(&["runs", "ls"]).as_array().unwrap().is_empty(),
        "no run may be recorded"
    );
}

#[test]
fn policy_refuses_a_plan_and_nothing_runs() {
    let l = Legion::new();
    std::fs::write(
        l.home.path().join("policy.json"),
        r#"{"allowedImages": ["registry.local/ml/*"]}"#,
    )
    .unwrap();
    let p = project(&[("train.py", WRITE_MODEL)]);
    let (code, run) = train(
        &l,
        &[
            p.path().to_str().unwrap(),
            "--toolchain",
            "python",
            "--name",
            "pol",
        ],
    );
    assert_eq!(code, 1);
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.contains("plan refused by policy")
            && reason.contains("image 'python:3.11-slim' is not in the allowed images"),
        "{reason}"
    );
    assert!(!log_of(&l, &run).contains("step 1/"));
    // An image override that the policy allows goes through.
    let (code, run) = train(
        &l,
        &[
            p.path().to_str().unwrap(),
            "--toolchain",
            "python",
            "--name",
            "pol",
            "--image",
            "registry.local/ml/python:3.11",
        ],
    );
    assert_eq!(code, 0, "{run:#}");
}

#[test]
fn follow_prints_the_log_until_the_run_ends() {
    let l = Legion::new();
    let p = project(&[("train.py", "import time\nfor i in range(3):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.3)\nraise SystemExit(1)\n")]);
    let trainer = l
        .cmd()
        .args([
            "train",
            p.path().to_str().unwrap(),
            "--toolchain",
            "python",
            "--name",
            "follow",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let id = loop {
        let runs = l.json(&["runs", "ls"]);
        if let Some(id) = runs[0]["id"].as_str() {
            break id.to_string();
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    };
    let followed = l.ok(&["runs", "logs", &id, "--follow"]);
    let mut trainer = trainer;
    trainer.wait().unwrap();
    assert!(
        followed.contains("tick 0")
            && followed.contains("tick 2")
            && followed.contains("run ")
            && followed.contains(" failed"),
        "{followed}"
    );
}

/// `python3 -m http.server` on a free loopback port, killed on drop.
struct HttpServer {
    child: std::process::Child,
    port: u16,
}

impl HttpServer {
    fn start(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
