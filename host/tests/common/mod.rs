//! Helpers shared by the integration tests: where the plugins built by
//! `scripts/build-plugins.sh` are, and a `legion` command on a fresh data dir.
#![allow(dead_code)]

pub mod api;
pub mod cluster;
pub mod emulator;
pub mod podman;
pub mod postgres;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `legion` binary under test.
pub fn legion_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_legion"))
}

/// The standalone static `legion-serve`, built by `scripts/setup.sh`
/// (`--profile static --target x86_64-unknown-linux-musl`).
pub fn serve_bin() -> PathBuf {
    let bin = legion_bin()
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("x86_64-unknown-linux-musl/static/legion-serve"))
        .expect("target dir");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/setup.sh first",
        bin.display()
    );
    bin
}

/// `$CARGO_TARGET_DIR/plugins`, filled by `scripts/build-plugins.sh`.
pub fn plugin_dir() -> PathBuf {
    let dir = legion_bin()
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("plugins"))
        .expect("target dir");
    assert!(
        dir.join("hostile.wasm").is_file(),
        "plugins missing in {}: run scripts/build-plugins.sh first",
        dir.display()
    );
    dir
}

/// Python environments shared by all tests (and CI runs on this machine):
/// beside the cargo target folder, so each set of requirements is installed once.
pub fn env_dir() -> PathBuf {
    std::env::var_os("LEGION_TEST_ENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            plugin_dir()
                .parent()
                .and_then(Path::parent)
                .expect("cache dir")
                .join("envs")
        })
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// An example project under `examples/`, as a path string.
pub fn example(name: &str) -> String {
    repo_root()
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

/// Path of a built plugin, e.g. `plugin("hostile")`.
pub fn plugin(name: &str) -> PathBuf {
    plugin_dir().join(format!("{name}.wasm"))
}

/// A fresh data dir and a way to run `legion` on it.
pub struct Legion {
    pub home: tempfile::TempDir,
    /// The state database's URL when it is not the data dir's SQLite.
    pub database: Option<String>,
}

impl Legion {
    pub fn new() -> Self {
        Legion {
            home: tempfile::tempdir().expect("tempdir"),
            database: None,
        }
    }

    /// A fresh data dir whose state lives in the database `url`.
    pub fn with_database(url: String) -> Self {
        Legion {
            database: Some(url),
            ..Legion::new()
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(legion_bin());
        // Python environments are shared by every test (built once per
        // set of requirements, under a lock): only the data dir is fresh.
        c.env("LEGION_HOME", self.home.path())
            .env("LEGION_ENV_DIR", env_dir())
            .env("LEGION_PLUGIN_DIR", plugin_dir())
            .env("NO_COLOR", "1");
        if let Some(url) = &self.database {
            c.env("LEGION_DATABASE", url);
        }
        c
    }

    /// Runs `legion ARGS` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run legion")
    }

    /// Runs `legion ARGS`, asserting success, and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "legion {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `legion ARGS`, asserting failure, and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "legion {args:?} should have failed:\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs `legion -o json ARGS` and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("json output")
    }

    /// Every file under the data dir, relative, sorted, except SQLite's
    /// journal files: to prove a failed command wrote nothing.
    pub fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(self.home.path(), self.home.path(), &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.is_dir() {
            walk(root, &p, out);
        } else if name.ends_with("-wal") || name.ends_with("-shm") {
            // SQLite's own journal files come and go with each connection.
        } else {
            out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
        }
    }
}

/// Writes `text` to a file in a new temp dir and returns both.
pub fn temp_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write");
    (dir, path)
}

/// Runs `legion -o json train ARGS` on `l`, asserting the run succeeded.
pub fn train(l: &Legion, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-o", "json", "train"];
    all.extend_from_slice(args);
    let run: serde_json::Value = serde_json::from_str(&l.ok(&all)).unwrap();
    assert_eq!(run["state"], "succeeded", "{run:#}");
    run
}

/// Trains python-iris as `iris:1`; returns the model digest.
pub fn train_iris(l: &Legion) -> String {
    let run = train(
        l,
        &[
            &example("python-iris"),
            "--toolchain",
            "python",
            "--name",
            "iris",
        ],
    );
    run["modelDigest"].as_str().unwrap().to_string()
}

/// Trains mlflow-wine (a small forest) as `wine:1`; returns the model digest.
pub fn train_wine(l: &Legion) -> String {
    let run = train(
        l,
        &[
            &example("mlflow-wine"),
            "--toolchain",
            "mlflow",
            "--name",
            "wine",
            "-P",
            "n_estimators=10",
            "-P",
            "rows=400",
        ],
    );
    run["modelDigest"].as_str().unwrap().to_string()
}

/// Iris's feature columns, in training order.
pub const IRIS_COLS: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
/// Three iris flowers, one of each species.
pub const IRIS_ROWS: [[f64; 4]; 3] = [
    [5.1, 3.5, 1.4, 0.2],
    [6.7, 3.0, 5.2, 2.3],
    [5.9, 3.0, 4.2, 1.5],
];

/// Runs `git ARGS` in `dir` with a fixed identity and default branch;
/// returns stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A free loopback port (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Python venv for a test tool, `<env dir>/<name>` with `packages`,
/// made once under a lock (tests run in parallel processes); returns its
/// folder.
pub fn test_venv(name: &str, packages: &[&str]) -> PathBuf {
    let dir = env_dir().join(name);
    std::fs::create_dir_all(env_dir()).unwrap();
    let lock = std::fs::File::create(env_dir().join(format!("{name}.lock"))).unwrap();
    lock.lock().unwrap();
    if !dir.join(".ready").is_file() {
        let _ = std::fs::remove_dir_all(&dir);
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .unwrap()
            .success()
            && Command::new(dir.join("bin/pip"))
                .args(["install", "-q"])
                .args(packages)
                .status()
                .unwrap()
                .success();
        assert!(ok, "cannot install {packages:?} for {name}");
        std::fs::write(dir.join(".ready"), "").unwrap();
    }
    dir
}

/// The Kubernetes version objects are validated against.
pub const KUBERNETES: &str = "1.37.0";

/// Validates a Kubernetes object with `kubernetes-validate --strict`
/// (PyPI, in a venv beside the other test environments) against
/// [`KUBERNETES`]'s schemas; returns (passed, output).
pub fn kube_validate(object: &serde_json::Value) -> (bool, String) {
    kube_validate_all(std::slice::from_ref(object))
}

/// Validates several objects in one run of `kubernetes-validate --strict`
/// (one multi-document file); passes only if every object does.
pub fn kube_validate_all(objects: &[serde_json::Value]) -> (bool, String) {
    let validator = test_venv("test-kubernetes-validate", &["kubernetes-validate==1.37.0"])
        .join("bin/kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    let docs: Vec<String> = objects
        .iter()
        .map(|o| serde_json::to_string_pretty(o).unwrap())
        .collect();
    std::fs::write(&file, docs.join("\n---\n")).unwrap();
    let out = Command::new(validator)
        .args(["--strict", "-k", KUBERNETES])
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A `legion.python` model's `predict.py` that loads nothing and echoes
/// the first column.
pub const ECHO_PREDICT: &str =
    "def load(d):\n    return None\ndef predict(m, frame):\n    return frame.iloc[:, 0]\n";

/// A one-file project `root/name` whose `train.py` runs `body`, then
/// writes a `legion.python` model whose `predict.py` is `predict`; its path.
pub fn project(root: &Path, name: &str, body: &str, predict: &str) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("train.py"),
        format!(
            "import os, sys, time\n{body}\n\
             d = os.path.join(os.environ['LEGION_OUTPUT_DIR'], 'model')\nos.makedirs(d)\n\
             open(os.path.join(d, 'predict.py'), 'w').write({predict:?})\n"
        ),
    )
    .unwrap();
    dir.display().to_string()
}

/// Trains a `legion.python` model `name:version` on this machine from a
/// one-file project with no requirements; returns the run as JSON.
pub fn train_tiny(l: &Legion, name: &str, version: &str) -> serde_json::Value {
    train_with(l, name, version, ECHO_PREDICT)
}

/// [`train_tiny`] with `predict` as the model's `predict.py`.
pub fn train_with(l: &Legion, name: &str, version: &str, predict: &str) -> serde_json::Value {
    let root = tempfile::tempdir().unwrap();
    let src = project(root.path(), name, "", predict);
    l.json(&[
        "train",
        &src,
        "-t",
        "python",
        "--name",
        name,
        "--version",
        version,
    ])
}

/// A `legion.python` model as a training step would have written it, in
/// the workspace `ws` (`output/model/predict.py`).
pub fn write_model(ws: &Path) {
    let model = ws.join("output/model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("predict.py"),
        "def load(d):\n    return None\ndef predict(m, frame):\n    return frame.iloc[:, 0]\n",
    )
    .unwrap();
}
